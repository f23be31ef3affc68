#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "marty/messaging/detail/envelope.hpp"
#include "marty/messaging/result.hpp"
#include "marty/messaging/subject.hpp"

namespace marty::messaging {

using Json = nlohmann::json;
using Clock = std::chrono::system_clock;

/// The envelope header of every message (the Python original's MessageMetadata, plus the
/// CloudEvents `source`). Plain data; copy freely.
///
/// It has a user-provided constructor on purpose: GCC 12 miscompiles aggregate temporaries
/// (`MessageMetadata{}`, or a `= {}` default argument) passed to a coroutine inside a co_await
/// expression (it copies them bitwise); a non-aggregate is passed correctly.
struct MessageMetadata {
  MessageMetadata() {}  // NOLINT(modernize-use-equals-default): see above

  /// Unique id; a UUIDv7 is generated when empty at publish time.
  std::string message_id;
  /// The logical type ("order_placed"); the bus always sets it from the call's type argument.
  std::string message_type;
  /// Who produced the message (a URI reference, CloudEvents `source`); defaults to the bus's
  /// service name.
  std::string source;
  /// When the message was produced (UTC); set at publish time when left empty.
  std::optional<Clock::time_point> time;
  /// Ties together every message of one conversation (a query and its reply, a saga).
  std::string correlation_id;
  /// The id of the message that caused this one.
  std::string causation_id;
  /// Where a reply should go (set by the bus for queries).
  std::string reply_to;
  /// The payload's media type.
  std::string content_type = "application/json";
  /// How long the message stays meaningful; expired messages are not delivered. Unset: forever.
  std::optional<std::chrono::milliseconds> ttl;
  /// Higher first, where the backend supports priorities. 0 is normal.
  int priority = 0;
  /// Messages with the same key keep their order (Kafka key, SNS group, stream partition).
  std::string partition_key;
  /// Free-form string headers (`traceparent` and `tracestate` travel here).
  std::map<std::string, std::string> headers;
};

/// Immutable payload bytes shared by every copy of a message, so fan-out to many subscribers
/// does not copy the body. The parsed JSON is computed once, on first use, thread-safely.
class Payload {
 public:
  explicit Payload(std::string bytes) : bytes_(std::move(bytes)) {}
  /// Keeps `value` as the parsed form so that in-process delivery never re-parses it.
  Payload(std::string bytes, Json value)
      : bytes_(std::move(bytes)), value_(std::move(value)), state_(kValid) {}
  Payload(const Payload&) = delete;
  Payload& operator=(const Payload&) = delete;

  std::string_view bytes() const noexcept { return bytes_; }
  /// True when the bytes are known to be valid JSON without parsing them: they came with their
  /// parsed value, or json() has parsed them already. (False says nothing either way.)
  bool known_json() const noexcept { return state_.load(std::memory_order_acquire) == kValid; }
  /// The bytes parsed as JSON; a parse failure is `invalid_argument` naming the position.
  /// Thread-safe; the returned reference lives as long as this payload.
  Result<std::reference_wrapper<const Json>> json() const;

 private:
  // The parse state. Not std::call_once: glibc's once wakes a futex (a system call) every time
  // it runs, which a message made from a JSON value would pay on the hot path.
  static constexpr std::uint8_t kUnparsed = 0, kParsing = 1, kValid = 2, kInvalid = 3;

  std::string bytes_;
  mutable Json value_;         // written once, by whoever moves state_ from kUnparsed
  mutable std::string error_;  // non-empty when the bytes are not JSON
  mutable std::atomic<std::uint8_t> state_{kUnparsed};
};

/// A message: metadata, the subject it travels on, and a shared immutable payload.
///
/// Copies are cheap: the payload is shared, and so are metadata and subject until a copy is
/// changed (copy-on-write), so fan-out and redelivery never copy what they do not change.
/// A message the bus has published (`stamp()`) keeps its metadata sealed in one allocation; the
/// field accessors (`id()`, `type()`, `subject()`, `header()`, ...) read it without copying, and
/// `metadata()` makes the seed's MessageMetadata view of it once, on first use.
/// Thread-safety: like a std::string; distinct Message objects (even copies of one another) may
/// be used from different threads; one object must not be changed while another thread uses it.
/// References: a reference or view from metadata() or an accessor is valid until this Message
/// is next changed; one from mutable_metadata() until this Message is next copied or changed (a
/// copy taken meanwhile would share the changes). A moved-from Message is empty.
class Message {
 public:
  Message();
  Message(MessageMetadata metadata, std::shared_ptr<const Payload> payload,
          std::string subject = {});

  /// A JSON message: the value is serialized once; content_type is application/json.
  static Message from_json(Json data, MessageMetadata metadata = {});
  /// A message with raw bytes; set `content_type` to describe them.
  static Message from_bytes(std::string bytes, MessageMetadata metadata = {});

  /// All the metadata, as the seed's struct. Throws std::bad_alloc (a sealed message makes it
  /// on first use); prefer the accessors below on hot paths.
  const MessageMetadata& metadata() const {
    return envelope_ ? envelope_->view() : editable().metadata;
  }
  /// For changing the metadata; unshares it first if another copy still uses it. (A separate
  /// name, so that reading through a non-const Message never unshares.)
  MessageMetadata& mutable_metadata() { return own_editable().metadata; }

  std::string_view id() const noexcept { return field(Field::id, &MessageMetadata::message_id); }
  std::string_view type() const noexcept {
    return field(Field::type, &MessageMetadata::message_type);
  }
  std::string_view source() const noexcept {
    return field(Field::source, &MessageMetadata::source);
  }
  std::string_view correlation_id() const noexcept {
    return field(Field::correlation_id, &MessageMetadata::correlation_id);
  }
  std::string_view causation_id() const noexcept {
    return field(Field::causation_id, &MessageMetadata::causation_id);
  }
  std::string_view reply_to() const noexcept {
    return field(Field::reply_to, &MessageMetadata::reply_to);
  }
  std::string_view content_type() const noexcept {
    return field(Field::content_type, &MessageMetadata::content_type);
  }
  std::string_view partition_key() const noexcept {
    return field(Field::partition_key, &MessageMetadata::partition_key);
  }
  std::optional<Clock::time_point> time() const noexcept {
    return envelope_ ? envelope_->time() : editable().metadata.time;
  }
  std::optional<std::chrono::milliseconds> ttl() const noexcept {
    return envelope_ ? envelope_->ttl() : editable().metadata.ttl;
  }
  int priority() const noexcept {
    return envelope_ ? envelope_->priority() : editable().metadata.priority;
  }
  /// The value of header `name`, if the message carries it.
  std::optional<std::string_view> header(std::string_view name) const noexcept;
  std::size_t header_count() const noexcept {
    return envelope_ ? envelope_->header_count() : editable().metadata.headers.size();
  }
  /// Calls fn(name, value) (two std::string_views) for each header, in name order.
  template <class Fn>
  void for_each_header(Fn&& fn) const {
    if (envelope_) {
      for (std::size_t i = 0; i < envelope_->header_count(); ++i) {
        const auto [name, value] = envelope_->header_at(i);
        fn(name, value);
      }
      return;
    }
    for (const auto& [name, value] : editable().metadata.headers) {
      fn(std::string_view(name), std::string_view(value));
    }
  }

  /// The transport subject ("events.order_placed"), set by the bus.
  std::string_view subject() const noexcept {
    return envelope_ ? envelope_->get(Field::subject) : std::string_view(editable().subject);
  }
  void set_subject(std::string_view subject);
  /// Sets where a reply goes; like set_subject(), a sealed message stays sealed (cheaper than
  /// mutable_metadata().reply_to, which unseals it).
  void set_reply_to(std::string_view reply_to);

  /// What the bus does to every message it publishes: sets the type and the subject, and the
  /// id (a new UUIDv7), time (now) and source where the message has none; leaves the metadata
  /// sealed in one allocation. Cheaper than the same changes through mutable_metadata().
  /// With `correlate`, a message without a correlation id is correlated by its own id (a
  /// query: its reply carries it back).
  void stamp(std::string_view type, std::string_view source, std::string_view subject,
             bool correlate = false);
  /// The same with the subject in pieces (subject::query_pieces(...)), joined as it is written.
  void stamp(std::string_view type, std::string_view source, const subject::Pieces& subject,
             bool correlate = false);

  std::string_view bytes() const noexcept {
    return payload_ ? payload_->bytes() : std::string_view();
  }
  const std::shared_ptr<const Payload>& payload() const noexcept { return payload_; }

  /// The payload as JSON. Throws `MessagingException` (invalid_argument) when the payload is
  /// not JSON, so a handler that assumes JSON fails (and the message is nacked) rather than
  /// reading garbage. Use `try_json()` to branch instead.
  const Json& json() const;
  Result<std::reference_wrapper<const Json>> try_json() const;

  /// True when the message's ttl has passed at `now`.
  bool expired(Clock::time_point now = Clock::now()) const noexcept;

 private:
  using Field = detail::Envelope::Field;
  // The form a message has until the bus stamps it, and again once mutable_metadata() is
  // called: the seed's struct and the subject, changed in place.
  struct Editable {
    MessageMetadata metadata;
    std::string subject;
    // The sealed form this was made from, kept so that views taken from it before the change
    // (`m.mutable_metadata().correlation_id = m.id()`) stay valid until this form goes.
    detail::EnvelopeRef sealed_from;
  };
  Editable& own_editable();
  // Changes one field of a sealed message into a new envelope (copies keep the old one).
  void set_sealed_field(Field field, std::string_view value);
  const Editable& editable() const noexcept { return editable_ ? *editable_ : empty_editable(); }
  static const Editable& empty_editable() noexcept;
  std::string_view field(Field sealed, std::string MessageMetadata::*edited) const noexcept {
    return envelope_ ? envelope_->get(sealed) : std::string_view(editable().metadata.*edited);
  }

  // At most one of the two forms is set; neither in an empty (default or moved-from) message.
  std::shared_ptr<Editable> editable_;      // shared between copies until one changes
  detail::EnvelopeRef envelope_;            // sealed; shared between copies
  std::shared_ptr<const Payload> payload_;  // null only if moved from
};

/// Thrown only where a value cannot carry an error: `Message::json()` and the blocking facade.
class MessagingException : public std::runtime_error {
 public:
  explicit MessagingException(Error error)
      : std::runtime_error(error.describe()), error_(std::move(error)) {}
  const Error& error() const noexcept { return error_; }

 private:
  Error error_;
};

/// A new UUIDv7 (time-ordered, RFC 9562) in canonical text form.
std::string make_uuid_v7();

/// RFC 3339 UTC with microseconds: "2026-11-26T21:23:31.123456Z".
std::string format_rfc3339(Clock::time_point time);
/// Parses RFC 3339 (any offset, optional fraction); an error names what was wrong.
Result<Clock::time_point> parse_rfc3339(std::string_view text);

}  // namespace marty::messaging
