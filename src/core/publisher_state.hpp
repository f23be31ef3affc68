#pragma once
// The state behind a Publisher (internal): its resolved route and its window of sends awaiting
// confirmation. The bus resolves the route (event_bus.cpp); everything after is here.
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <asio/any_io_executor.hpp>

#include "marty/messaging/backend.hpp"
#include "marty/messaging/detail/async_signal.hpp"
#include "marty/messaging/metrics.hpp"
#include "marty/messaging/publisher.hpp"
#include "marty/messaging/tracing.hpp"
#include "marty/messaging/types.hpp"

namespace marty::messaging::detail {

/// `message` as a route in `format` writes it: wrapped in the Python envelope, or as it is.
Result<Message> for_the_wire(Message message, WireFormat format);

/// Everything a Publisher needs to know about where it sends, resolved once by the bus.
struct PublisherRoute {
  std::shared_ptr<Backend> backend;
  asio::any_io_executor executor;  // the bus's: where waits for the backend run
  std::string subject;
  std::string message_type;
  /// Streams keep a message's own type when it has one (stream_events); others always carry
  /// `message_type`, as publish_event's messages do.
  bool keep_own_type = false;
  std::string source;      // the bus's service name, for messages without a source
  PublishOptions options;  // everything but the deadline, which each send sets
  std::chrono::milliseconds timeout{0};
  WireFormat format = WireFormat::cloudevents;
  std::shared_ptr<Tracer> tracer;
  std::shared_ptr<MessagingMetrics> metrics;  // keeps `counters` alive
  MessagingMetrics::PublishCounters* counters = nullptr;
};

/// The window and the confirmations. Thread-safety: every member may be called from any thread.
class PublisherState final : public CompletionSink,
                             public std::enable_shared_from_this<PublisherState> {
 public:
  PublisherState(PublisherRoute route, PublisherOptions options);

  /// Sends `messages` (taking them), all or none; returns the first one's sequence.
  /// `resource_exhausted` when they do not fit in the window: then they are left as given.
  Result<std::uint64_t> send(std::span<Message> messages);
  asio::awaitable<Result<std::uint64_t>> send_when_room(Message message);
  asio::awaitable<Result<void>> confirmed(std::uint64_t sequence);
  asio::awaitable<Result<void>> flush();
  void set_callback(Publisher::ConfirmCallback callback);
  std::size_t in_flight() const;
  const std::string& subject() const noexcept { return route_.subject; }

  void on_complete(std::span<Completion> completions) override;
  asio::any_io_executor executor() const override { return route_.executor; }

 private:
  struct Slot {
    std::size_t bytes = 0;
    bool done = false;
  };
  static constexpr std::size_t kKeptFailures = 10'000;

  // The message as it goes out: metadata filled like publish_event's, on the subject, traced,
  // in the route's wire format. An error only where the wire format cannot carry it.
  Result<void> prepare(Message& message, std::optional<Span>& span) const;
  // Under mutex_: whether `count` more sends of `bytes` fit in the window.
  bool fits(std::size_t count, std::size_t bytes) const;
  Error window_full(std::size_t count) const;
  // Under mutex_: the outcome of a send that is no longer in flight.
  Result<void> outcome_of(std::uint64_t sequence) const;
  void wake_waiters(std::unique_lock<std::mutex>& lock);

  const PublisherRoute route_;
  const PublisherOptions options_;

  mutable std::mutex mutex_;
  std::uint64_t next_sequence_ = 1;
  std::uint64_t base_ = 1;  // the sequence of slots_.front()
  std::deque<Slot> slots_;  // base_ .. next_sequence_ - 1, confirmed ones at the front retired
  std::size_t in_flight_ = 0;
  std::size_t in_flight_bytes_ = 0;
  std::map<std::uint64_t, Error> failures_;  // the last kKeptFailures failed sends
  std::size_t failed_since_flush_ = 0;
  std::optional<Error> first_failure_since_flush_;
  std::map<std::uint64_t, Span> spans_;  // of sends in flight, when tracing
  std::vector<std::shared_ptr<AsyncSignal>> waiters_;
  std::shared_ptr<Publisher::ConfirmCallback> callback_;
};

}  // namespace marty::messaging::detail
