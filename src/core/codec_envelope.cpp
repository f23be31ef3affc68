// The Python original's JSON envelope, `{"data": ..., "metadata": {...}}`. Field names, value
// types and the naive-UTC timestamp follow what the Python services write and read; see
// docs/wire-format.md.

#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <utility>

#include "marty/messaging/codec.hpp"
#include "marty/messaging/detail/json_text.hpp"

namespace marty::messaging::codec {
namespace {

using OrderedJson = nlohmann::ordered_json;

Error invalid(std::string what) {
  return Error(errc::invalid_argument, "envelope: " + what);
}

// Never throws: strings the caller put in metadata are not guaranteed to be UTF-8.
std::string dump(const auto& json) {
  return json.dump(-1, ' ', false, Json::error_handler_t::replace);
}

OrderedJson string_or_null(const std::string& value) {
  return value.empty() ? OrderedJson(nullptr) : OrderedJson(value);
}

// Python's `datetime.isoformat()` of a naive UTC datetime: no offset, and no fraction at all
// when the microseconds are zero.
std::string python_isoformat(Clock::time_point time) {
  std::string text = format_rfc3339(time);  // "YYYY-MM-DDTHH:MM:SS.ffffffZ"
  text.pop_back();
  if (text.ends_with(".000000")) text.resize(text.size() - 7);
  return text;
}

// Reads `metadata` fields. Absent and null fields read as "not given"; any other type than
// the expected one is an error naming the field.
class FieldReader {
 public:
  explicit FieldReader(const Json& metadata) : metadata_(metadata) {}

  const Json* find(const char* field) const {
    if (!metadata_.is_object()) return nullptr;
    const auto it = metadata_.find(field);
    if (it == metadata_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  // Leaves `out` unchanged when the field is absent or null.
  Result<void> read_string(const char* field, std::string& out) const {
    const Json* value = find(field);
    if (value == nullptr) return ok();
    if (!value->is_string()) return invalid(name(field) + " must be a string");
    out = value->get<std::string>();
    return ok();
  }

  static std::string name(const char* field) { return std::string("metadata.") + field; }

 private:
  const Json& metadata_;
};

Result<void> read_metadata(const Json& object, MessageMetadata& metadata) {
  FieldReader reader(object);
  for (auto [field, out] :
       {std::pair{"message_id", &metadata.message_id},
        std::pair{"message_type", &metadata.message_type}, std::pair{"source", &metadata.source},
        std::pair{"correlation_id", &metadata.correlation_id},
        std::pair{"causation_id", &metadata.causation_id},
        std::pair{"reply_to", &metadata.reply_to},
        std::pair{"routing_key", &metadata.partition_key},
        std::pair{"content_type", &metadata.content_type}}) {
    if (auto read = reader.read_string(field, *out); !read) return read;
  }

  if (const Json* timestamp = reader.find("timestamp")) {
    if (!timestamp->is_string()) return invalid("metadata.timestamp must be a string");
    auto time = parse_rfc3339(timestamp->get_ref<const std::string&>());
    if (!time) return time.error().with_context("envelope: metadata.timestamp");
    metadata.time = *time;
  }

  if (const Json* ttl = reader.find("ttl")) {
    if (!ttl->is_number()) return invalid("metadata.ttl must be a number of seconds");
    const double millis = std::round(ttl->get<double>() * 1000.0);
    // 2^63 is exactly representable; anything at or beyond it does not fit.
    if (!std::isfinite(millis) || millis >= 0x1p63 || millis < -0x1p63) {
      return invalid("metadata.ttl is out of range");
    }
    metadata.ttl = std::chrono::milliseconds(static_cast<std::int64_t>(millis));
  }

  if (const Json* priority = reader.find("priority")) {
    if (!priority->is_number_integer()) return invalid("metadata.priority must be an integer");
    const bool fits = priority->is_number_unsigned()
                          ? priority->get<std::uint64_t>() <=
                                static_cast<std::uint64_t>(std::numeric_limits<int>::max())
                          : priority->get<std::int64_t>() >= std::numeric_limits<int>::min() &&
                                priority->get<std::int64_t>() <= std::numeric_limits<int>::max();
    if (!fits) return invalid("metadata.priority is out of range");
    metadata.priority = priority->get<int>();
  }

  if (const Json* headers = reader.find("headers")) {
    if (!headers->is_object()) return invalid("metadata.headers must be an object");
    for (const auto& [name, value] : headers->items()) {
      if (value.is_null()) continue;
      // Python headers are Dict[str, Any]; non-strings keep their JSON text.
      metadata.headers.insert_or_assign(name,
                                        value.is_string() ? value.get<std::string>() : dump(value));
    }
  }
  return ok();
}

}  // namespace

Result<std::string> encode_envelope(const Message& message) {
  auto data = message.try_json();
  if (!data) {
    return Error(errc::invalid_argument,
                 "envelope needs a JSON payload: " + data.error().message());
  }
  const MessageMetadata& metadata = message.metadata();
  OrderedJson out = OrderedJson::object();
  out["message_id"] = metadata.message_id;
  out["correlation_id"] = string_or_null(metadata.correlation_id);
  out["causation_id"] = string_or_null(metadata.causation_id);
  out["timestamp"] = metadata.time ? OrderedJson(python_isoformat(*metadata.time)) : nullptr;
  out["ttl"] =
      metadata.ttl ? OrderedJson(static_cast<double>(metadata.ttl->count()) / 1000.0) : nullptr;
  out["priority"] = metadata.priority;
  out["content_type"] = metadata.content_type;
  OrderedJson headers = OrderedJson::object();
  for (const auto& [name, value] : metadata.headers) headers[name] = value;
  out["headers"] = std::move(headers);
  out["routing_key"] = string_or_null(metadata.partition_key);
  out["reply_to"] = string_or_null(metadata.reply_to);
  out["message_type"] = metadata.message_type;
  out["source"] = metadata.source;

  // Spliced as text so the payload's JSON is not copied into another document.
  std::string text = "{\"data\":";
  text += dump(data->get());
  text += ",\"metadata\":";
  text += dump(out);
  text += '}';
  return text;
}

Result<Message> decode_envelope(std::string_view text) {
  Json envelope = detail::parse_json_text(text);
  if (envelope.is_discarded()) return invalid("not valid JSON");
  if (!envelope.is_object()) return invalid("must be a JSON object");
  const auto data = envelope.find("data");
  if (data == envelope.end()) return invalid("data is missing");

  MessageMetadata metadata;
  if (const auto found = envelope.find("metadata"); found != envelope.end()) {
    if (!found->is_object()) return invalid("metadata must be an object");
    if (auto read = read_metadata(*found, metadata); !read) return std::move(read).error();
  }
  // The Python original gave every message an id; so do we when a peer did not.
  if (metadata.message_id.empty()) metadata.message_id = make_uuid_v7();
  if (metadata.content_type.empty()) metadata.content_type = "application/json";

  std::string bytes = dump(*data);
  auto payload = std::make_shared<const Payload>(std::move(bytes), std::move(*data));
  return Message(std::move(metadata), std::move(payload));
}

std::optional<Result<Message>> unwrap_envelope(const Message& received) {
  const std::string_view bytes = received.bytes();
  const std::size_t first = bytes.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos || bytes[first] != '{' ||
      bytes.find("\"metadata\"") == std::string_view::npos) {
    return std::nullopt;
  }
  const std::string& content_type = received.metadata().content_type;
  if (!content_type.empty() && !is_json_media_type(content_type)) return std::nullopt;
  auto parsed = received.try_json();
  if (!parsed) return std::nullopt;
  const Json& value = parsed->get();
  if (!value.is_object() || value.size() != 2 || !value.contains("data") ||
      !value.contains("metadata")) {
    return std::nullopt;
  }
  const Json& metadata = value["metadata"];
  auto names = [&metadata](const char* field) {
    auto it = metadata.find(field);
    return it != metadata.end() && it->is_string() && !it->get_ref<const std::string&>().empty();
  };
  if (!metadata.is_object() || (!names("message_type") && !names("message_id"))) {
    return std::nullopt;
  }
  auto decoded = decode_envelope(bytes);
  if (!decoded) {
    return decoded.error().with_context("Python envelope on '" + std::string(received.subject()) +
                                        "'");
  }
  Message message = std::move(*decoded);
  MessageMetadata& out = message.mutable_metadata();
  const MessageMetadata& in = received.metadata();
  if (out.message_type.empty()) out.message_type = in.message_type;
  if (out.source.empty()) out.source = in.source;
  if (out.reply_to.empty()) out.reply_to = in.reply_to;
  for (const auto& [name, header] : in.headers) out.headers.emplace(name, header);
  message.set_subject(received.subject());
  return message;
}

Result<Message> wrap_in_envelope(const Message& message) {
  auto text = encode_envelope(message);
  if (!text) return std::move(text).error();
  MessageMetadata metadata = message.metadata();
  metadata.content_type = "application/json";
  Message wrapped(std::move(metadata), std::make_shared<const Payload>(std::move(*text)),
                  std::string(message.subject()));
  return wrapped;
}

}  // namespace marty::messaging::codec
