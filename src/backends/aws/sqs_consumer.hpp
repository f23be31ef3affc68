#pragma once
// Reading an SQS queue as a bus subscription, for both AWS backends: long polling into a bounded
// inbox, delete on ack, ChangeMessageVisibility on nack and release, ApproximateReceiveCount as
// the attempt, undecodable messages to the subject's dead-letter queue, expired queries skipped.
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>

#include "marty/messaging/backend.hpp"
#include "marty/messaging/detail/async_signal.hpp"
#include "sqs_queues.hpp"

namespace marty::messaging::aws {

/// A message received and not yet handed out.
struct SqsReceived {
  Result<Message> message = Error(errc::internal, "unset");
  std::string raw_body;
  std::string receipt;
  int attempt = 1;
  std::string group;      ///< MessageGroupId (FIFO queues)
  std::uint64_t key = 0;  ///< its entry in SqsConsumer::unsettled
};

/// A received message not yet settled: SQS keeps it from others until `visible_at`.
struct SqsHeld {
  std::string receipt;
  SteadyClock::time_point visible_at;
};

/// One subscription's reader of one queue. Thread-safety: the members under `mutex` are shared
/// between the receive loop, the subscription and its deliveries.
struct SqsConsumer {
  SqsQueuesPtr queues;
  SubscriptionSpec spec;
  std::string url;
  /// A subscriber's own queue (replies, a lone event subscriber): deleted when it closes, after
  /// `before_delete` (an SNS subscription is ended first, so nothing is sent to a deleted queue).
  bool private_queue = false;
  std::function<asio::awaitable<void>()> before_delete;
  bool fifo = false;  ///< a FIFO queue: a group's messages are handed out in order, retries too
  asio::any_io_executor executor;

  std::mutex mutex;
  std::deque<SqsReceived> inbox;
  // Every message received and not settled, in the inbox or handed out: the keeper extends
  // their visibility while they are held, and a closing backend releases them.
  std::map<std::uint64_t, SqsHeld> unsettled;
  std::uint64_t next_key = 0;
  bool closed = false;
  bool queue_deletion_taken = false;
  bool queue_deletion_running = false;  // a backend closing waits for it (its client goes)
  std::shared_ptr<detail::AsyncSignal> arrived = detail::AsyncSignal::create();
  std::shared_ptr<detail::AsyncSignal> room = detail::AsyncSignal::create();
  std::shared_ptr<detail::AsyncSignal> queue_deleted = detail::AsyncSignal::create();
  // Wakes the visibility keeper when the consumer closes or lets go of what it held.
  std::shared_ptr<detail::AsyncSignal> keeper = detail::AsyncSignal::create();

  /// The message of `key` is settled (or released): no longer held.
  void settled(std::uint64_t key);
  /// A closing backend's part: the receipts of every message still held (handed out and not
  /// settled), forgotten here; the caller makes them visible again.
  std::vector<std::string> take_unsettled();
  /// Closes intake; returns what was received and not handed out (to be released).
  std::deque<SqsReceived> close_intake();
  /// Whether its queue is to be deleted now (a private queue whose deletion nobody has taken
  /// yet); the taker must run delete_private_queue().
  bool take_queue_deletion();
  /// Closed, and nothing of it left to delete: the backend may forget it.
  bool finished();
  /// FIFO: a message of `group` was nacked or released, so it comes back after the group's
  /// later messages this consumer holds: those go back to the queue too (SQS then hands them
  /// out again after it), keeping the group's order. Returns their receipts.
  std::vector<std::string> take_group(const std::string& group);
};
using SqsConsumerPtr = std::shared_ptr<SqsConsumer>;

/// Starts receiving on the consumer's executor and returns its subscription.
std::shared_ptr<Subscription> start_sqs_subscription(SqsConsumerPtr consumer);

/// A closing backend's part: what was received and not handed out is visible again at once, a
/// private queue is deleted, or its deletion already under way is waited for (each while
/// `deadline` allows).
asio::awaitable<void> close_sqs_consumer(SqsConsumerPtr consumer, SteadyClock::time_point deadline);

/// The queue's deletion, for a private queue: `before_delete` first, then DeleteQueue.
asio::awaitable<void> delete_private_queue(SqsConsumerPtr consumer);

}  // namespace marty::messaging::aws
