#pragma once
// SQS as both AWS backends use it: one signed client, the URLs of queues by subject (made on
// demand with their dead-letter queues and redrive policy), sending our messages, and calls
// whose failure is only worth a log line.
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include <asio/awaitable.hpp>

#include "aws_query.hpp"
#include "marty/messaging/aws_backend.hpp"
#include "marty/messaging/detail/log.hpp"
#include "marty/messaging/message.hpp"

namespace marty::messaging::aws {

/// Names of queues: the subject's, shortened so that "--dlq.fifo" still fits SQS's 80 characters.
/// (Readable names never contain "--", so a subject never gets a dead-letter queue's name.)
inline constexpr std::size_t kQueueNameRoom = 70;

/// Credentials from one source: the given fields when any is set (both keys then required),
/// else all three of AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN;
/// `invalid_argument` (named by `backend`) saying what to set when there are none.
Result<Credentials> resolve_credentials(const std::string& access_key_id,
                                        const std::string& secret_access_key,
                                        const std::string& session_token, std::string_view backend);

/// One Query call bounded by `timeout` (`deadline_exceeded` at once when none is left), its
/// error named by `backend`; throttling retried by the client. `client` must outlive the call.
asio::awaitable<Result<XmlElement>> call_named(QueryClient* client, std::string backend,
                                               std::string action, QueryParameters parameters,
                                               std::chrono::milliseconds timeout);

/// A queue to look up or make. `key` is what the URL is cached under.
struct QueueRequest {
  std::string key;
  std::string name;
  bool create = false;   ///< made when missing (else `not_found`)
  bool redrive = false;  ///< made with a dead-letter queue ("<name>--dlq") and redrive policy
  bool fifo = false;     ///< a FIFO queue (its name ends with ".fifo")
};

/// Thread-safety: every member may be called from any thread once `open()` has returned.
struct SqsQueues {
  AwsSqsConfig config;
  std::string backend;  ///< names errors ("aws_sqs", "aws_sns")
  std::shared_ptr<HttpClient> http;
  std::unique_ptr<QueryClient> sqs;

  /// Makes the client (credentials from the config or the environment); `invalid_argument`
  /// without credentials. Calls nothing.
  Result<void> open(std::shared_ptr<HttpClient> client);

  Error error(errc code, std::string message) const;

  asio::awaitable<Result<XmlElement>> call(std::string action, QueryParameters parameters);
  /// The same, bounded by `timeout` (a publish's deadline) rather than request_timeout.
  asio::awaitable<Result<XmlElement>> call_within(std::string action, QueryParameters parameters,
                                                  std::chrono::milliseconds timeout);

  /// The URL of the queue of a bus subject (commands, queries, replies, dead letters).
  asio::awaitable<Result<std::string>> queue_url(std::string subject, bool create, bool redrive);
  asio::awaitable<Result<std::string>> queue_url(QueueRequest request);
  /// The ARN of the queue at `url` (GetQueueAttributes).
  asio::awaitable<Result<std::string>> queue_arn(std::string url);
  /// The messages the queue at `url` holds: ready, in flight (received, not deleted) and
  /// delayed (GetQueueAttributes; SQS's counts are approximate by its own account).
  asio::awaitable<Result<std::uint64_t>> queue_depth(std::string url,
                                                     std::chrono::milliseconds timeout);

  /// Sends `message` (CloudEvents binary mode in message attributes).
  asio::awaitable<Result<void>> send(std::string url, Message message,
                                     std::chrono::milliseconds timeout);

  /// A call whose failure the caller cannot act on (a release, a delete after the work is
  /// done): said in the log, with what it means for the message, never dropped silently.
  asio::awaitable<void> call_logged(std::string action, QueryParameters parameters,
                                    std::string consequence);

 private:
  std::optional<std::string> known_url(const std::string& key);
  asio::awaitable<Result<std::string>> dead_letter_arn(std::string name, bool fifo);

  std::mutex mutex_;
  std::map<std::string, std::string> urls_;  // key -> URL of a queue known to exist
};
using SqsQueuesPtr = std::shared_ptr<SqsQueues>;

/// Checks the SQS settings; `invalid_argument` naming the field.
Result<void> validate_sqs_config(const AwsSqsConfig& config, std::string_view backend);

using marty::messaging::detail::logger;

}  // namespace marty::messaging::aws
