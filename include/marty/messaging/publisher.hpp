#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <asio/awaitable.hpp>

#include "marty/messaging/message.hpp"
#include "marty/messaging/result.hpp"

namespace marty::messaging {

namespace detail {
class PublisherState;
}  // namespace detail

/// How a Publisher bounds what it has sent and the broker has not yet confirmed.
struct PublisherOptions {
  PublisherOptions() {}  // NOLINT(modernize-use-equals-default): not an aggregate (GCC 12)

  /// Sends awaiting confirmation at most; send() refuses more with `resource_exhausted`.
  std::size_t max_in_flight = 1'024;
  /// Payload bytes awaiting confirmation at most (a single larger message is still taken when
  /// nothing else is in flight).
  std::size_t max_in_flight_bytes = 16 * 1024 * 1024;
  /// How long the backend may take to confirm a send (waiting for buffer space, the broker's
  /// ack) before it fails with `deadline_exceeded` or `resource_exhausted`. Zero: the timeout
  /// of the pattern's config (MessagingPatternConfig::timeout).
  std::chrono::milliseconds timeout{0};
};

/// A handle for sending many messages of one type to one destination fast: the route, the
/// subject and the names are resolved once, and send() does not wait for the broker. Each send
/// gets a sequence number (1, 2, ...); its confirmation (the broker's acknowledgement with the
/// pattern's guarantee, the same success as publish_event's) comes later and is observed with
/// confirmed(), flush() or an on_confirm() callback: librdkafka's produce + delivery report,
/// nats.c's asynchronous JetStream publish.
///
/// Made by UnifiedEventBus::publisher() (events), command_publisher() and stream_publisher().
/// Messages get the same metadata as publish_event gives them (id, time, source, type) and are
/// traced and counted the same way. Sends of one Publisher reach the broker in send order where
/// the backend submits natively (the memory backend); over the others (until each is made
/// native), in order within one send_batch().
///
/// A failed confirmation is final: the Publisher does not resend (publish_event does, through
/// a broker restart); send the message again to retry it.
/// Thread-safety: every member may be called from any thread; sequence numbers follow the
/// order in which concurrent sends took them.
class Publisher {
 public:
  /// Told of confirmations: the sends numbered first..last all ended with `result`.
  using ConfirmCallback =
      std::function<void(std::uint64_t first, std::uint64_t last, const Result<void>& result)>;

  explicit Publisher(std::shared_ptr<detail::PublisherState> state);
  ~Publisher();
  Publisher(const Publisher&) = delete;
  Publisher& operator=(const Publisher&) = delete;

  /// Hands `message` to the backend and returns its sequence number, without waiting for the
  /// broker. `resource_exhausted` (nothing sent) when the window is full: confirm or flush, or
  /// use send_when_room(). Other errors: the message is invalid (nothing sent).
  Result<std::uint64_t> send(Message message);
  /// A JSON message.
  Result<std::uint64_t> send(Json data);
  /// Sends `messages` in order, all or none (`resource_exhausted` when they do not fit in the
  /// window together); returns the last one's sequence number (the first is last - size + 1).
  /// An empty batch is `invalid_argument`.
  Result<std::uint64_t> send_batch(std::vector<Message> messages);
  /// send(), waiting for room in the window for at most the confirmation timeout.
  asio::awaitable<Result<std::uint64_t>> send_when_room(Message message);

  /// Waits for the confirmation of send number `sequence` and returns how it ended.
  /// `invalid_argument` for a number not yet given out. The outcome of a failed send is kept
  /// for the last 10,000 failures; an older one reads as the failure it was, if still kept,
  /// else as success.
  asio::awaitable<Result<void>> confirmed(std::uint64_t sequence);
  /// Waits until every send so far is confirmed. An error when any send since the previous
  /// flush() failed: how many, and the first one's error.
  asio::awaitable<Result<void>> flush();
  /// Calls `callback` for every confirmation from now on, on the thread that learned of it
  /// (inside send() for a backend that confirms at once, else a backend's or the bus's
  /// thread). Keep it short; it may send. Replaces an earlier callback.
  void on_confirm(ConfirmCallback callback);

  /// Sends not yet confirmed.
  std::size_t in_flight() const;
  /// Where this publisher sends ("events.order_placed").
  const std::string& subject() const;

 private:
  std::shared_ptr<detail::PublisherState> state_;
};

}  // namespace marty::messaging
