#pragma once
// The `aws_sqs` backend, and the SQS half of `aws_sns` (which derives from it and adds events).
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "marty/messaging/aws_backend.hpp"
#include "marty/messaging/backend.hpp"
#include "sqs_consumer.hpp"
#include "sqs_queues.hpp"

namespace marty::messaging::aws {

/// Commands and queries over a queue per subject. Thread-safety: as every Backend.
class SqsBackend : public Backend {
 public:
  /// `name` is the backend's ("aws_sqs", or "aws_sns" for the derived backend).
  SqsBackend(AwsSqsConfig config, std::string name);
  ~SqsBackend() override;

  std::string_view name() const noexcept override { return name_; }
  const Capabilities& capabilities() const noexcept override { return caps_; }
  asio::awaitable<Result<void>> connect() override;
  asio::awaitable<Result<void>> publish(Message message, PublishOptions options) override;
  asio::awaitable<Result<std::shared_ptr<Subscription>>> subscribe(SubscriptionSpec spec) override;
  asio::awaitable<Result<void>> close(SteadyClock::time_point deadline) override;
  /// Dead letters in the queue of `dead_letter_subject` (sqs_dead_letters.cpp).
  asio::awaitable<Result<std::vector<Message>>> read_dead_letters(
      std::string dead_letter_subject, std::size_t limit,
      SteadyClock::time_point deadline) override;
  asio::awaitable<Result<std::size_t>> remove_dead_letters(
      std::string dead_letter_subject, std::set<std::string> ids,
      SteadyClock::time_point deadline) override;
  /// The depth of the group's queue (the service's queue of a command subject).
  asio::awaitable<Result<std::uint64_t>> consumer_lag(SubscriptionSpec spec,
                                                      SteadyClock::time_point deadline) override;

 protected:
  /// Run by connect() once SQS answered (a derived backend reaches its own service here).
  virtual asio::awaitable<Result<void>> connect_more() { co_return ok(); }
  /// `failed_precondition` unless connected and not closed.
  Result<void> check_usable();
  /// Reads the queue at `url` as a subscription to `spec`; `before_delete` runs before a
  /// private queue is deleted. `fifo`: a FIFO queue (its groups' order is kept).
  asio::awaitable<Result<std::shared_ptr<Subscription>>> subscribe_queue(
      SubscriptionSpec spec, std::string url, bool private_queue,
      std::function<asio::awaitable<void>()> before_delete, bool fifo);
  /// The time left for a call bounded by both request_timeout and `deadline`.
  std::chrono::milliseconds time_left(SteadyClock::time_point deadline) const;
  Error error(errc code, std::string message) const;
  /// consumer_lag of the queue `request` names (never made here: `not_found` when missing).
  asio::awaitable<Result<std::uint64_t>> queue_lag(QueueRequest request, std::string group,
                                                   std::string subject,
                                                   SteadyClock::time_point deadline);

  SqsQueuesPtr queues_;
  Capabilities caps_;

 private:
  void shutdown();

  std::string name_;
  std::mutex mutex_;
  bool connecting_ = false;
  bool connected_ = false;
  bool closed_ = false;
  std::vector<SqsConsumerPtr> consumers_;
};

}  // namespace marty::messaging::aws
