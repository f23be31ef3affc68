#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "marty/messaging/message.hpp"
#include "marty/messaging/result.hpp"

/// Wire formats. Every function is stateless and thread-safe. Decoders never throw: malformed input
/// gives `errc::invalid_argument` with a message naming the field that was wrong.
namespace marty::messaging::codec {

/// Transport headers in order (NATS and Kafka allow repeats; we write each name once).
using Headers = std::vector<std::pair<std::string, std::string>>;
/// The value of the first header named `name`, compared without regard to ASCII case (as
/// binary mode matches them), or null.
const std::string* find_header(const Headers& headers, std::string_view name);

/// CloudEvents 1.0 binary content mode: attributes travel as transport headers, the payload is
/// the body unchanged. Each protocol binding names headers its own way, hence the options.
struct BinaryModeOptions {
  /// Prefix of attribute headers: "ce-" (HTTP, NATS), "ce_" (Kafka), "cloudEvents:" (AMQP).
  std::string attribute_prefix = "ce-";
  /// The header carrying `datacontenttype` ("content-type" in every binding we use).
  std::string content_type_header = "content-type";
};

struct BinaryMessage {
  Headers headers;
  std::shared_ptr<const Payload> body;  // shared, not copied
};

/// Encodes metadata as CloudEvents attributes and extensions (see docs/wire-format.md).
/// `id` is required by CloudEvents, so an empty message_id is replaced by a fresh UUIDv7; an
/// empty message_type is written as is and will be refused by decoders.
BinaryMessage encode_binary(const Message& message, const BinaryModeOptions& options = {});

/// Decodes binary mode. Header names are matched case-insensitively. Unknown extension
/// attributes become metadata headers, so nothing a peer sent is lost.
Result<Message> decode_binary(const Headers& headers, std::shared_ptr<const Payload> body,
                              const BinaryModeOptions& options = {});

/// The type of a plain publisher's message whose subject names none (an empty AMQP routing
/// key, say): a message must have a type to be published again (a dead letter, a requeue).
inline constexpr std::string_view kUntypedMessageType = "untyped";

/// A message from a plain publisher of the broker (no CloudEvents attributes): a fresh id and
/// the current time, typed by its subject (subject::type_of; kUntypedMessageType when that is
/// empty), its headers kept as metadata headers and its `content-type` header, if any, as the
/// content type.
Message foreign_message(std::string_view subject, std::shared_ptr<const Payload> body,
                        const Headers& headers = {});

/// CloudEvents 1.0 structured mode (JSON event format, `application/cloudevents+json`).
/// JSON payloads (JSON content type and valid JSON bytes) go in `data`, any other payload in
/// `data_base64`; an empty payload gives an event without data. Never throws: strings that are
/// not UTF-8 are written with U+FFFD replacements.
std::string encode_structured(const Message& message);
Result<Message> decode_structured(std::string_view text);

/// The Python original's envelope, `{"data": ..., "metadata": {...}}`, for interoperating with
/// existing Python services. The payload must be JSON (`invalid_argument` otherwise).
/// Decoding fills absent metadata fields with defaults (a fresh UUIDv7 for message_id) and
/// leaves message_type empty when absent; the bus sets it from the subject.
Result<std::string> encode_envelope(const Message& message);
Result<Message> decode_envelope(std::string_view text);

/// A received message whose payload is the Python original's envelope, decoded: nullopt when it
/// is not one (the payload is not a JSON object whose members are exactly `data` and `metadata`,
/// with a non-empty `metadata.message_type` or `metadata.message_id`, or its content type is
/// not JSON); an error when it is one with a malformed field. The envelope's id, type,
/// correlation and causation ids, timestamp, ttl, priority, reply_to and headers win; the
/// received subject stays, and what the envelope leaves out (type, source, reply address,
/// transport headers such as trace context) is kept from `received`. Cheap for anything else:
/// a payload is parsed only when it starts with `{` and mentions "metadata".
std::optional<Result<Message>> unwrap_envelope(const Message& received);
/// `message` with the envelope as its payload (content type application/json), for a consumer
/// that is a Python service; `invalid_argument` when its payload is not JSON.
Result<Message> wrap_in_envelope(const Message& message);

/// application/json, text/json and any structured-syntax `+json` type, parameters ignored.
bool is_json_media_type(std::string_view content_type);

/// The media type of structured CloudEvents.
inline constexpr std::string_view kStructuredContentType = "application/cloudevents+json";

}  // namespace marty::messaging::codec
