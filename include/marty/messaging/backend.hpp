#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>

#include "marty/messaging/capabilities.hpp"
#include "marty/messaging/message.hpp"
#include "marty/messaging/result.hpp"

/// The backend SPI: what every broker adapter implements. Small on purpose (like Watermill's
/// Publisher/Subscriber); request/reply, dead letters and retries live once, in the bus.
namespace marty::messaging {

using SteadyClock = std::chrono::steady_clock;

/// Whether a subject is a plain topic (delivered to current subscribers and their durable
/// groups) or a stream (an append-only, replayable log).
enum class DestinationKind { topic, stream };

/// Where a new stream subscription starts. Ignored when its durable group exists already: the
/// group resumes where it left off.
struct StartPosition {
  enum class Kind { new_messages, earliest, sequence, time };
  Kind kind = Kind::new_messages;
  std::uint64_t sequence = 0;  // Kind::sequence: the first sequence number to deliver
  Clock::time_point time{};    // Kind::time: the first message at or after this time

  static StartPosition new_messages() { return {}; }
  static StartPosition earliest() { return {Kind::earliest}; }
  static StartPosition from_sequence(std::uint64_t first) { return {Kind::sequence, first}; }
  static StartPosition from_time(Clock::time_point t) { return {Kind::time, 0, t}; }
};

struct PublishOptions {
  PublishOptions() {}  // NOLINT(modernize-use-equals-default): not an aggregate, see above
  DestinationKind kind = DestinationKind::topic;
  MessagingPattern pattern = MessagingPattern::pub_sub;
  DeliveryGuarantee guarantee = DeliveryGuarantee::at_least_once;
  /// Fail with `not_found` rather than drop the message when nobody can receive it: for
  /// commands, no consumer group (a durable group keeps commands for the service's next
  /// instance); for queries (pattern request_response), no subscriber running now. Events to a
  /// subject nobody listens on are not an error.
  bool require_receiver = false;
  /// How long publish may wait (for buffer space, a broker ack) before `deadline_exceeded`
  /// or `resource_exhausted`.
  SteadyClock::time_point deadline = SteadyClock::time_point::max();
  /// What a broker that de-duplicates (capabilities().deduplicates_by_id) compares instead of
  /// the message id. Empty: the message id. A deliberate resend of a message (a dead letter
  /// requeued) sets it, so the broker does not drop the copy as a duplicate.
  std::string deduplication_id;
};

struct SubscriptionSpec {
  SubscriptionSpec() {}  // NOLINT(modernize-use-equals-default): not an aggregate, see above
  /// Concrete subject, or a pattern with `*`/`>` when the backend supports wildcards.
  std::string subject;
  /// Empty: this subscriber gets every message on its own. Non-empty: subscribers sharing the
  /// name compete (one delivery per group); a durable group keeps its place across restarts.
  std::string group;
  DestinationKind kind = DestinationKind::topic;
  MessagingPattern pattern = MessagingPattern::pub_sub;
  /// What the subscriber's pattern config asks for. A backend that carries each guarantee on a
  /// different transport (Redis: pub/sub or Streams) reads from the one it names.
  DeliveryGuarantee guarantee = DeliveryGuarantee::at_least_once;
  StartPosition start;
};

/// One received message. Settle it exactly once with ack, nack or term. A delivery destroyed
/// unsettled is released for redelivery at once; so are the unsettled deliveries of a backend
/// that closes (as a broker does when a consumer's connection drops).
/// Thread-safety: a Delivery is used by one coroutine at a time.
class Delivery {
 public:
  virtual ~Delivery() = default;
  Delivery(const Delivery&) = delete;
  Delivery& operator=(const Delivery&) = delete;

  const Message& message() const noexcept { return message_; }
  /// 1 on the first delivery, then 2, 3... across redeliveries.
  int attempt() const noexcept { return attempt_; }
  /// The stream sequence number (streams only; 0 for topics).
  std::uint64_t sequence() const noexcept { return sequence_; }

  /// Done: the message will not be delivered to this group again.
  virtual asio::awaitable<Result<void>> ack() = 0;
  /// Failed: deliver again after `delay` (to any member of the group).
  virtual asio::awaitable<Result<void>> nack(std::chrono::milliseconds delay) = 0;
  /// Give up: never deliver again (the bus dead-letters before it terms).
  virtual asio::awaitable<Result<void>> term() = 0;

  /// True when ack_now() can settle this delivery at once, without waiting for the broker (it
  /// settles in memory, or buffers the ack for one write per batch). The bus then acks the
  /// messages of a batch in a plain loop, with no coroutine per ack.
  virtual bool acks_synchronously() const noexcept { return false; }
  /// ack(), done synchronously. Called only where acks_synchronously(); the default fails with
  /// `unimplemented`.
  virtual Result<void> ack_now();

  /// Set on a poison delivery: bytes the backend received and cannot decode. message() then
  /// holds them as an opaque payload on the subject they arrived on (undecodable_message()),
  /// and the bus, not the backend, dead-letters it with this reason and terms it, the same way
  /// for every backend; no handler sees it. A backend hands such deliveries up rather than
  /// dropping or terminating them itself, so that a poison message is never lost silently.
  const Error* decode_error() const noexcept { return decode_error_ ? &*decode_error_ : nullptr; }
  /// The form the message arrived in: the bus unwraps the Python original's envelope on receipt
  /// (EventBusOptions::python_envelope_on_receipt), and answers a query in the form it came in.
  WireFormat wire_format() const noexcept { return wire_format_; }

 protected:
  Delivery(Message message, int attempt, std::uint64_t sequence)
      : message_(std::move(message)), attempt_(attempt), sequence_(sequence) {}
  /// Makes this a poison delivery (see decode_error()); its message is then the raw bytes.
  void set_decode_error(Error why) { decode_error_ = std::move(why); }
  void set_wire_format(WireFormat format) noexcept { wire_format_ = format; }

 private:
  Message message_;
  int attempt_;
  std::uint64_t sequence_;
  std::optional<Error> decode_error_;
  WireFormat wire_format_ = WireFormat::cloudevents;
};

/// What a poison delivery carries (Delivery::decode_error()): the raw bytes received on
/// `subject` as an opaque payload, with a new id, the subject's type and the time of receipt.
Message undecodable_message(std::string_view subject, std::string raw);

/// A pull subscription. Thread-safety: receive() is called by one coroutine at a time; close()
/// may be called from any thread, at any time, more than once.
class Subscription {
 public:
  virtual ~Subscription() = default;
  /// The next delivery. `cancelled` once closed; `deadline_exceeded` when `deadline` passes
  /// with nothing to deliver; other errors are the backend's (usually transient).
  virtual asio::awaitable<Result<std::unique_ptr<Delivery>>> receive(
      std::optional<SteadyClock::time_point> deadline = std::nullopt) = 0;
  /// Up to `max` (at least 1) deliveries, in delivery order: waits for the first as receive()
  /// does, then adds those ready at once, without waiting for more. Errors as receive()'s; an
  /// error ends the batch only when it has no delivery yet. The default calls receive() once; a
  /// backend that can take many messages under one lock or from one read overrides it.
  virtual asio::awaitable<Result<std::vector<std::unique_ptr<Delivery>>>> receive_batch(
      std::size_t max, std::optional<SteadyClock::time_point> deadline = std::nullopt);
  /// Stops intake at once and wakes a pending receive(). Deliveries already received stay
  /// valid and may still be settled: that is how the bus drains in-flight handlers.
  virtual void close() = 0;
};

/// One message handed to Backend::submit().
struct OutboundRecord {
  Message message;  // on message.subject()
  /// The caller's number for it, reported with its completion.
  std::uint64_t sequence = 0;
  /// Set by submit() when the record ended at once (accepted with the guarantee asked for, or
  /// refused); left empty when its outcome will reach the sink.
  std::optional<Result<void>> outcome;
};

/// How a submitted record ended.
struct Completion {
  std::uint64_t sequence = 0;
  Result<void> result;
};

/// Where a backend reports the records of submit() that did not end at once. Its owner keeps
/// the backend alive until every record submitted with it has completed.
/// Thread-safety: on_complete() may be called from any thread, several at once.
class CompletionSink {
 public:
  virtual ~CompletionSink() = default;
  /// Records that ended: one call for as many as the backend has at hand.
  virtual void on_complete(std::span<Completion> completions) = 0;
  /// Where a backend that completes by waiting may run its waits.
  virtual asio::any_io_executor executor() const = 0;
};

/// A broker adapter. Thread-safety: every member may be called from any thread.
class Backend {
 public:
  virtual ~Backend() = default;
  /// Short lower-case name used in errors and reports ("memory", "nats").
  virtual std::string_view name() const noexcept = 0;
  virtual const Capabilities& capabilities() const noexcept = 0;

  /// Connects (and provisions what the config declares). An error says what failed and why.
  virtual asio::awaitable<Result<void>> connect() = 0;
  /// Publishes `message` on `message.subject()`. Success means the backend accepted it with
  /// the requested guarantee (for at-least-once: the broker acknowledged it).
  virtual asio::awaitable<Result<void>> publish(Message message, PublishOptions options) = 0;
  /// Hands `records` (all with `options`) to the broker without waiting for it: the batched,
  /// synchronous form of publish(), with the same meaning of success. A record that ends at
  /// once (the memory backend's usually do; a full buffer or a closed backend refuses at once)
  /// gets its `outcome` here; the others complete later, through `sink`, on any thread.
  /// With a null `sink` the caller cannot wait: a record that cannot end at once is left
  /// without an outcome and not taken (the caller then uses publish()).
  /// The default runs publish() for each record on sink->executor(), one completion each; a
  /// backend whose client library batches overrides it.
  virtual void submit(std::span<OutboundRecord> records, const PublishOptions& options,
                      const std::shared_ptr<CompletionSink>& sink);
  virtual asio::awaitable<Result<std::shared_ptr<Subscription>>> subscribe(
      SubscriptionSpec spec) = 0;
  /// Native request/reply (only when capabilities().native_request_reply): publishes with a
  /// reply address and waits for one reply. `deadline_exceeded` when none comes in time.
  virtual asio::awaitable<Result<Message>> request(Message message,
                                                   std::chrono::milliseconds timeout);
  /// Flushes pending publishes and disconnects; waits at most until `deadline`.
  virtual asio::awaitable<Result<void>> close(SteadyClock::time_point deadline) = 0;

  // Dead letters kept for inspection (only when capabilities().inspectable_dead_letters; the
  // defaults fail with `unimplemented`). The bus publishes dead letters on
  // dead_letter_subject(subject) (a stream where the backend has streams); these read them
  // back and delete them, leaving the rest untouched and available to readers.

  /// Up to `limit` messages stored on `dead_letter_subject`, oldest first, without consuming
  /// them. Empty when there are none (or the destination was never made).
  virtual asio::awaitable<Result<std::vector<Message>>> read_dead_letters(
      std::string dead_letter_subject, std::size_t limit, SteadyClock::time_point deadline);
  /// Deletes the messages stored on `dead_letter_subject` whose dead_letter_id() is in `ids`;
  /// returns how many it deleted (ids not found are not an error: another admin may have
  /// requeued them meanwhile).
  virtual asio::awaitable<Result<std::size_t>> remove_dead_letters(
      std::string dead_letter_subject, std::set<std::string> ids, SteadyClock::time_point deadline);

  /// How many messages wait for the durable group `spec.group` on `spec.subject` (only when
  /// capabilities().consumer_lag; the default fails with `unimplemented`): stored for the group
  /// and not yet acknowledged by it, or, where the broker cannot tell what its consumers hold
  /// (RabbitMQ), not yet delivered. Works whether or not a member of the group is running.
  /// `not_found` when the group does not exist there. A read-only query: it never moves the
  /// group, and may be called while the group consumes.
  virtual asio::awaitable<Result<std::uint64_t>> consumer_lag(SubscriptionSpec spec,
                                                              SteadyClock::time_point deadline);
};

}  // namespace marty::messaging
