#pragma once
// The AWS Query protocol (form-encoded requests, XML replies) that SNS and SQS both serve: signed
// calls, replies as a small element tree, AWS errors as ours (the AWS code and message kept),
// throttling and server errors retried with backoff.
#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <asio/awaitable.hpp>

#include "http_client.hpp"
#include "marty/messaging/result.hpp"
#include "sigv4.hpp"

namespace marty::messaging::aws {

/// An XML element with its text and child elements (namespaces dropped from names).
struct XmlElement {
  std::string name;
  std::string text;
  std::vector<XmlElement> children;

  /// The first element named `name`, this one or below (depth first); null when none.
  const XmlElement* find(std::string_view name) const;
  /// Every element named `name` below this one, in document order.
  std::vector<const XmlElement*> find_all(std::string_view name) const;
  /// The text of the first element named `name` below this one; empty when none.
  std::string text_of(std::string_view name) const;
};

/// Parses an XML document; `invalid_argument` naming what is wrong.
Result<XmlElement> parse_xml(std::string_view text);

/// An AWS error reply as our error: `code` is AWS's (Throttling, AccessDenied, NonExistentQueue,
/// InvalidParameter, ...); the message keeps AWS's code and message.
Error aws_error(long http_status, std::string_view code, std::string_view message,
                std::string_view action);

struct QueryEndpoint {
  std::string url;      ///< "https://sqs.eu-west-1.amazonaws.com" or an emulator's address
  std::string region;   ///< signs the request
  std::string service;  ///< "sqs" or "sns"
  std::string version;  ///< the API version: "2012-11-05" (SQS), "2010-03-31" (SNS)
};

using QueryParameters = std::vector<std::pair<std::string, std::string>>;

/// Thread-safety: every member may be called from any thread.
class QueryClient {
 public:
  QueryClient(std::shared_ptr<HttpClient> http, QueryEndpoint endpoint, Credentials credentials);

  /// Calls `action` with `parameters`. Throttling and 5xx replies are retried (up to
  /// `attempts` calls, backing off from 50 ms) while `timeout` allows; other AWS errors come
  /// back at once as ours.
  asio::awaitable<Result<XmlElement>> call(std::string action, QueryParameters parameters,
                                           std::chrono::milliseconds timeout, int attempts);

  const QueryEndpoint& endpoint() const noexcept { return endpoint_; }

 private:
  std::shared_ptr<HttpClient> http_;
  QueryEndpoint endpoint_;
  Credentials credentials_;
  std::string host_;  // the Host header
  std::string path_;  // the URL's path ("/" when none)
};

/// The current time as SigV4 writes it ("20150830T123600Z").
std::string amz_date_now();

}  // namespace marty::messaging::aws
