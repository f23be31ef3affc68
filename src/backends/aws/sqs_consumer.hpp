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
#include <optional>
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
  bool extending = false;  ///< the keeper's ChangeMessageVisibility for it is under way
  /// Let go of while the keeper extended it: the visibility to set once that call is done
  /// (sent after it, so the keeper's older call never undoes a nack or a release).
  std::optional<std::int64_t> after;
};

/// One subscription's reader of one queue. Thread-safety: the members under `mutex` are shared
/// between the receive loop, the keeper, the subscription, its deliveries and a closing backend.
struct SqsConsumer {
  SqsQueuesPtr queues;
  SubscriptionSpec spec;
  std::string url;
  /// A subscriber's own queue (replies, a lone event subscriber): deleted once it is closed and
  /// holds nothing, after `before_delete` (an SNS subscription is ended first, so nothing is
  /// sent to a deleted queue).
  bool private_queue = false;
  std::function<asio::awaitable<void>()> before_delete;
  bool fifo = false;  ///< a FIFO queue: a group's messages are handed out in order, retries too
  asio::any_io_executor executor;

  enum class Deletion { none, deferred, running, done };

  std::mutex mutex;
  std::deque<SqsReceived> inbox;
  /// Every message received and not settled, in the inbox or handed out: the keeper extends
  /// their visibility while they are held, and a closing backend releases them.
  std::map<std::uint64_t, SqsHeld> unsettled;
  std::uint64_t next_key = 0;
  bool closed = false;
  bool keeper_stopped = false;
  bool keeper_busy = false;
  int calls_in_flight = 0;  // detached visibility changes
  Deletion deletion = Deletion::none;
  std::shared_ptr<detail::AsyncSignal> arrived = detail::AsyncSignal::create();
  std::shared_ptr<detail::AsyncSignal> room = detail::AsyncSignal::create();
  /// Wakes the visibility keeper when the consumer closes or lets go of what it held.
  std::shared_ptr<detail::AsyncSignal> keeper = detail::AsyncSignal::create();
  /// Wakes a closing backend: the keeper is idle, a detached call or the deletion finished.
  std::shared_ptr<detail::AsyncSignal> quiet = detail::AsyncSignal::create();

  /// Closed and nothing of it left to do: the backend may forget it.
  bool finished();
};
using SqsConsumerPtr = std::shared_ptr<SqsConsumer>;

/// Starts receiving on the consumer's executor and returns its subscription.
std::shared_ptr<Subscription> start_sqs_subscription(SqsConsumerPtr consumer);

/// A closing backend's part, each step while `deadline` allows: the keeper stopped, what the
/// consumer holds (received and not handed out, or handed out and not settled) visible again at
/// once, and a private queue deleted (or its deletion under way waited for).
asio::awaitable<void> close_sqs_consumer(SqsConsumerPtr consumer, SteadyClock::time_point deadline);

/// A backend going without close(): intake and the keeper stop at once (what the consumer holds
/// comes back after its visibility timeout).
void stop_sqs_consumer(const SqsConsumerPtr& consumer);

}  // namespace marty::messaging::aws
