#pragma once

#include <memory>
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

/// The media type of structured CloudEvents.
inline constexpr std::string_view kStructuredContentType = "application/cloudevents+json";

}  // namespace marty::messaging::codec
