#pragma once
// HTTP for the AWS backends, on libcurl's multi interface: one thread per client drives every
// transfer (keep-alive connections reused), coroutines await their responses on their own
// executors.
#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <asio/awaitable.hpp>

#include "marty/messaging/result.hpp"

namespace marty::messaging::aws {

struct HttpResponse {
  long status = 0;
  std::string body;
};

/// Thread-safety: every member may be called from any thread.
class HttpClient {
 public:
  /// `connect_timeout` bounds connecting; each request has its own overall timeout.
  explicit HttpClient(std::chrono::milliseconds connect_timeout);
  ~HttpClient();  // close()
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  /// POSTs `body` to `url` with `headers` ("Name: value"). Any HTTP status is a response;
  /// a transfer that fails is `unavailable` (or `deadline_exceeded` after `timeout`), with
  /// libcurl's reason and the URL, never the headers (they carry credentials).
  asio::awaitable<Result<HttpResponse>> post(std::string url, std::vector<std::string> headers,
                                             std::string body, std::chrono::milliseconds timeout);

  /// Ends the client's thread: transfers still running (a long poll) complete at once with
  /// `cancelled`, and so does every later post(). Idempotent.
  void close();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace marty::messaging::aws
