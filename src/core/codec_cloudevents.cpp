// CloudEvents 1.0 codecs (binary and structured content modes). The mapping between
// MessageMetadata and CloudEvents attributes is documented in docs/wire-format.md; keep the two
// in sync.

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "marty/messaging/codec.hpp"
#include "marty/messaging/detail/json_text.hpp"
#include "marty/messaging/subject.hpp"

namespace marty::messaging::codec {
namespace {

constexpr std::string_view kSpecVersion = "1.0";
constexpr std::string_view kDefaultSource = "urn:marty-messaging";
constexpr std::string_view kMartyHeaders = "martyheaders";

// Names that a metadata header may not take as its own extension attribute: the CloudEvents
// core attributes, the structured-mode data members, and the extensions we map ourselves.
// Headers with these names travel inside `martyheaders` instead.
constexpr std::array<std::string_view, 17> kReservedNames{
    "specversion", "id",      "source",   "type",         "time",          "datacontenttype",
    "dataschema",  "subject", "data",     "data_base64",  "correlationid", "causationid",
    "replyto",     "ttl",     "priority", "partitionkey", kMartyHeaders,
};

// Integer-typed extensions keep their type so that structured mode writes JSON numbers.
using AttributeValue = std::variant<std::string, std::int64_t>;
using EncodedAttributes = std::vector<std::pair<std::string, AttributeValue>>;

// Attributes of a received event keyed by lower-case name. Binary mode yields strings only;
// structured mode yields whatever JSON the peer wrote, so readers must check types.
using ReceivedAttributes = std::map<std::string, Json>;

char ascii_lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

std::string to_lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), ascii_lower);
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return ascii_lower(x) == ascii_lower(y);
         });
}

bool istarts_with(std::string_view text, std::string_view prefix) {
  return text.size() >= prefix.size() && iequals(text.substr(0, prefix.size()), prefix);
}

// CloudEvents 1.0: attribute names are lower-case ASCII letters and digits, at most 20 chars.
bool is_attribute_name(std::string_view name) {
  if (name.empty() || name.size() > 20) return false;
  return std::all_of(name.begin(), name.end(),
                     [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); });
}

bool is_reserved(std::string_view name) {
  return std::find(kReservedNames.begin(), kReservedNames.end(), name) != kReservedNames.end();
}

// Never throws: strings the caller put in metadata are not guaranteed to be UTF-8.
std::string dump(const auto& json) {
  return json.dump(-1, ' ', false, Json::error_handler_t::replace);
}

// Appends `text` as a JSON string. Printable ASCII (ids, types, times) is copied as it is;
// anything else goes through the serializer, which escapes it and replaces bytes that are not
// UTF-8 with U+FFFD.
void append_json_string(std::string& out, std::string_view text) {
  const bool plain = std::all_of(text.begin(), text.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u >= 0x20 && u < 0x7f && c != '"' && c != '\\';
  });
  if (!plain) {
    out += dump(Json(std::string(text)));
    return;
  }
  out += '"';
  out += text;
  out += '"';
}

constexpr std::string_view kBase64Alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64_encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  auto byte = [&](std::size_t i) {
    return static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i]));
  };
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const std::uint32_t n = byte(i) << 16 | byte(i + 1) << 8 | byte(i + 2);
    out += kBase64Alphabet[n >> 18 & 63];
    out += kBase64Alphabet[n >> 12 & 63];
    out += kBase64Alphabet[n >> 6 & 63];
    out += kBase64Alphabet[n & 63];
  }
  if (const std::size_t rest = bytes.size() - i; rest > 0) {
    const std::uint32_t n = byte(i) << 16 | (rest == 2 ? byte(i + 1) << 8 : 0);
    out += kBase64Alphabet[n >> 18 & 63];
    out += kBase64Alphabet[n >> 12 & 63];
    out += rest == 2 ? kBase64Alphabet[n >> 6 & 63] : '=';
    out += '=';
  }
  return out;
}

int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

// RFC 4648 standard alphabet. Padding may be omitted (some producers strip it), but padding
// that is present must complete the last quantum. Whitespace is not allowed.
std::optional<std::string> base64_decode(std::string_view text) {
  const std::size_t full_size = text.size();
  std::size_t padding = 0;
  while (padding < 2 && !text.empty() && text.back() == '=') {
    text.remove_suffix(1);
    ++padding;
  }
  if (padding > 0 && full_size % 4 != 0) return std::nullopt;
  if (text.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(text.size() * 3 / 4);
  std::uint32_t buffer = 0;
  int bits = 0;
  for (const char c : text) {
    const int value = base64_value(c);
    if (value < 0) return std::nullopt;
    buffer = (buffer << 6 | static_cast<std::uint32_t>(value)) & 0xFFFFFF;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>(buffer >> bits & 0xFF));
    }
  }
  return out;
}

Error invalid(std::string what) {
  return Error(errc::invalid_argument, "CloudEvent: " + what);
}

// The attributes of `metadata` in wire order (core attributes first). Empty optional fields
// are left out, as CloudEvents requires of absent attributes.
EncodedAttributes encode_attributes(const Message& message) {
  EncodedAttributes out;
  out.reserve(12 + message.header_count());
  out.emplace_back("specversion", std::string(kSpecVersion));
  // `id` is required; an event without one would be rejected by every consumer (ours too).
  out.emplace_back("id", message.id().empty() ? make_uuid_v7() : std::string(message.id()));
  out.emplace_back("source", std::string(message.source().empty() ? std::string_view(kDefaultSource)
                                                                  : message.source()));
  out.emplace_back("type", std::string(message.type()));
  if (const auto time = message.time()) out.emplace_back("time", format_rfc3339(*time));
  auto add_string = [&](std::string_view name, std::string_view value) {
    if (!value.empty()) out.emplace_back(std::string(name), std::string(value));
  };
  add_string("datacontenttype", message.content_type());
  add_string("correlationid", message.correlation_id());
  add_string("causationid", message.causation_id());
  add_string("replyto", message.reply_to());
  if (const auto ttl = message.ttl())
    out.emplace_back("ttl", static_cast<std::int64_t>(ttl->count()));
  if (message.priority() != 0) out.emplace_back("priority", std::int64_t{message.priority()});
  add_string("partitionkey", message.partition_key());
  Json fallback = Json::object();
  message.for_each_header([&](std::string_view name, std::string_view value) {
    if (is_attribute_name(name) && !is_reserved(name)) {
      out.emplace_back(std::string(name), std::string(value));
    } else {
      fallback[std::string(name)] = value;
    }
  });
  if (!fallback.empty()) out.emplace_back(std::string(kMartyHeaders), dump(fallback));
  return out;
}

// Names the place an attribute came from in error messages: a header in binary mode, a JSON
// member in structured mode.
struct AttributeSource {
  const BinaryModeOptions* binary = nullptr;  // null in structured mode

  std::string operator()(std::string_view name) const {
    if (binary == nullptr) return "attribute '" + std::string(name) + "'";
    if (name == "datacontenttype") return "header '" + binary->content_type_header + "'";
    return "header '" + binary->attribute_prefix + std::string(name) + "'";
  }
};

// Reads and removes attributes, so that whatever is left afterwards is an unknown extension.
class AttributeReader {
 public:
  AttributeReader(ReceivedAttributes& attributes, AttributeSource where)
      : attributes_(attributes), where_(where) {}

  // Absent and JSON null are the same thing in CloudEvents.
  std::optional<Json> take(const std::string& name) {
    const auto it = attributes_.find(name);
    if (it == attributes_.end()) return std::nullopt;
    Json value = std::move(it->second);
    attributes_.erase(it);
    if (value.is_null()) return std::nullopt;
    return value;
  }

  Result<std::string> required_string(const std::string& name) {
    auto value = take(name);
    if (!value) return invalid(where_(name) + " is missing");
    if (!value->is_string()) return invalid(where_(name) + " must be a string");
    if (value->get_ref<const std::string&>().empty()) {
      return invalid(where_(name) + " must not be empty");
    }
    return value->get<std::string>();
  }

  Result<std::string> optional_string(const std::string& name) {
    auto value = take(name);
    if (!value) return std::string();
    if (!value->is_string()) return invalid(where_(name) + " must be a string");
    return value->get<std::string>();
  }

  // Extension values may be any JSON scalar in structured mode; metadata keeps them as text.
  Result<std::string> scalar_as_string(const std::string& name, const Json& value) const {
    if (value.is_string()) return value.get<std::string>();
    if (value.is_boolean()) return std::string(value.get<bool>() ? "true" : "false");
    if (value.is_number()) return dump(value);
    return invalid(where_(name) + " must be a string, number or boolean");
  }

  Result<std::string> optional_extension(const std::string& name) {
    auto value = take(name);
    if (!value) return std::string();
    return scalar_as_string(name, *value);
  }

  // Accepts JSON integers, integral JSON numbers and strings holding a decimal integer.
  Result<std::optional<std::int64_t>> optional_integer(const std::string& name) {
    auto value = take(name);
    if (!value) return std::optional<std::int64_t>();
    if (auto number = as_integer(*value)) return std::optional<std::int64_t>(*number);
    return invalid(where_(name) + " must be an integer, got " + dump(*value));
  }

 private:
  static std::optional<std::int64_t> as_integer(const Json& value) {
    if (value.is_number_unsigned()) {
      const auto number = value.get<std::uint64_t>();
      if (number > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        return std::nullopt;
      }
      return static_cast<std::int64_t>(number);
    }
    if (value.is_number_integer()) return value.get<std::int64_t>();
    if (value.is_number_float()) {
      const double number = value.get<double>();
      // 2^63 is exactly representable; anything at or beyond it does not fit.
      if (!std::isfinite(number) || number != std::trunc(number) || number >= 0x1p63 ||
          number < -0x1p63) {
        return std::nullopt;
      }
      return static_cast<std::int64_t>(number);
    }
    if (value.is_string()) {
      const auto& text = value.get_ref<const std::string&>();
      std::int64_t number = 0;
      const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
      if (ec != std::errc{} || end != text.data() + text.size() || text.empty()) {
        return std::nullopt;
      }
      return number;
    }
    return std::nullopt;
  }

  ReceivedAttributes& attributes_;
  AttributeSource where_;
};

// Builds metadata from received attributes, common to both modes. A missing datacontenttype
// leaves content_type empty; structured mode applies its JSON default afterwards.
Result<MessageMetadata> decode_attributes(ReceivedAttributes attributes, AttributeSource where) {
  AttributeReader reader(attributes, where);
  MessageMetadata metadata;
  // An empty time is malformed, not absent, so remember whether one was sent.
  const auto time_it = attributes.find("time");
  const bool attributes_had_time = time_it != attributes.end() && !time_it->second.is_null();

  auto spec_version = reader.take("specversion");
  if (!spec_version) return invalid(where("specversion") + " is missing");
  if (!spec_version->is_string() || spec_version->get_ref<const std::string&>() != kSpecVersion) {
    return invalid("specversion " + dump(*spec_version) + " is not supported (only \"1.0\")");
  }

  auto id = reader.required_string("id");
  if (!id) return std::move(id).error();
  metadata.message_id = std::move(*id);
  auto source = reader.required_string("source");
  if (!source) return std::move(source).error();
  metadata.source = std::move(*source);
  auto type = reader.required_string("type");
  if (!type) return std::move(type).error();
  metadata.message_type = std::move(*type);

  auto time = reader.optional_string("time");
  if (!time) return std::move(time).error();
  if (attributes_had_time) {
    auto parsed = parse_rfc3339(*time);
    if (!parsed) return parsed.error().with_context("CloudEvent: " + where("time"));
    metadata.time = *parsed;
  }
  auto content_type = reader.optional_string("datacontenttype");
  if (!content_type) return std::move(content_type).error();
  metadata.content_type = std::move(*content_type);

  for (auto [name, field] :
       {std::pair{"correlationid", &metadata.correlation_id},
        std::pair{"causationid", &metadata.causation_id}, std::pair{"replyto", &metadata.reply_to},
        std::pair{"partitionkey", &metadata.partition_key}}) {
    auto value = reader.optional_extension(name);
    if (!value) return std::move(value).error();
    *field = std::move(*value);
  }

  auto ttl = reader.optional_integer("ttl");
  if (!ttl) return std::move(ttl).error();
  if (*ttl) metadata.ttl = std::chrono::milliseconds(**ttl);
  auto priority = reader.optional_integer("priority");
  if (!priority) return std::move(priority).error();
  if (*priority) {
    if (**priority < std::numeric_limits<int>::min() ||
        **priority > std::numeric_limits<int>::max()) {
      return invalid(where("priority") + " is out of range");
    }
    metadata.priority = static_cast<int>(**priority);
  }

  // Unknown extensions (traceparent, or anything another producer added) become headers.
  auto packed = reader.take(std::string(kMartyHeaders));
  for (const auto& [name, value] : attributes) {
    if (value.is_null()) continue;
    auto text = reader.scalar_as_string(name, value);
    if (!text) return std::move(text).error();
    metadata.headers.insert_or_assign(name, std::move(*text));
  }
  if (packed) {
    const std::string bad = where(kMartyHeaders) + " must be a JSON object of strings";
    if (!packed->is_string()) return invalid(bad);
    Json object = detail::parse_json_text(packed->get_ref<const std::string&>());
    if (!object.is_object()) return invalid(bad);
    for (auto& [name, value] : object.items()) {
      if (!value.is_string()) return invalid(bad);
      metadata.headers.insert_or_assign(name, value.get<std::string>());
    }
  }
  return metadata;
}

}  // namespace

bool is_json_media_type(std::string_view content_type) {
  content_type = content_type.substr(0, content_type.find(';'));
  while (!content_type.empty() && (content_type.back() == ' ' || content_type.back() == '\t')) {
    content_type.remove_suffix(1);
  }
  while (!content_type.empty() && (content_type.front() == ' ' || content_type.front() == '\t')) {
    content_type.remove_prefix(1);
  }
  const std::string type = to_lower(content_type);
  return type == "application/json" || type == "text/json" ||
         (type.size() > 5 && type.ends_with("+json"));
}

BinaryMessage encode_binary(const Message& message, const BinaryModeOptions& options) {
  BinaryMessage out;
  EncodedAttributes attributes = encode_attributes(message);
  out.headers.reserve(attributes.size());
  for (auto& [name, value] : attributes) {
    std::string text = std::holds_alternative<std::string>(value)
                           ? std::move(std::get<std::string>(value))
                           : std::to_string(std::get<std::int64_t>(value));
    if (name == "datacontenttype") {
      out.headers.emplace_back(options.content_type_header, std::move(text));
    } else {
      out.headers.emplace_back(options.attribute_prefix + name, std::move(text));
    }
  }
  out.body = message.payload();
  return out;
}

Result<Message> decode_binary(const Headers& headers, std::shared_ptr<const Payload> body,
                              const BinaryModeOptions& options) {
  ReceivedAttributes attributes;
  for (const auto& [name, value] : headers) {
    // Checked first: the content type header could share the prefix in some binding.
    if (iequals(name, options.content_type_header)) {
      attributes.insert_or_assign("datacontenttype", Json(value));
    } else if (istarts_with(name, options.attribute_prefix) &&
               name.size() > options.attribute_prefix.size()) {
      // Transports may change header case (HTTP/2 lower-cases, some proxies title-case);
      // attribute names are lower case by definition.
      attributes.insert_or_assign(
          to_lower(std::string_view(name).substr(options.attribute_prefix.size())), Json(value));
    }
  }
  auto metadata = decode_attributes(std::move(attributes), AttributeSource{&options});
  if (!metadata) return std::move(metadata).error();
  if (!body) body = std::make_shared<const Payload>(std::string());
  return Message(std::move(*metadata), std::move(body));
}

std::string encode_structured(const Message& message) {
  // Written directly rather than through a JSON document: this runs for every message a
  // structured-mode transport (Redis pub/sub) carries.
  const std::string_view bytes = message.bytes();
  std::string text;
  text.reserve(320 + bytes.size() + bytes.size() / 2);
  text += '{';
  for (auto& [name, value] : encode_attributes(message)) {
    if (text.size() > 1) text += ',';
    append_json_string(text, name);
    text += ':';
    if (const auto* string = std::get_if<std::string>(&value)) {
      append_json_string(text, *string);
    } else {
      text += std::to_string(std::get<std::int64_t>(value));
    }
  }
  if (!bytes.empty()) {
    // JSON bytes go in `data` as they are (validated unless already known to be JSON); any
    // other payload in `data_base64`.
    const bool as_json = is_json_media_type(message.content_type()) &&
                         (message.payload()->known_json() || detail::is_json_text(bytes));
    if (as_json) {
      text += ",\"data\":";
      text += bytes;
    } else {
      text += ",\"data_base64\":\"";
      text += base64_encode(bytes);
      text += '"';
    }
  }
  text += '}';
  return text;
}

namespace {

// A reader for the shape our encoder writes: one flat object whose members are strings
// without escapes, integers, and `data` (any JSON value, kept as its text). Anything else
// makes it give up (nullopt), and the general parser takes over.
class FlatEventReader {
 public:
  explicit FlatEventReader(std::string_view text) : text_(text) {}

  struct Event {
    ReceivedAttributes attributes;
    std::optional<std::string_view> data;         // the JSON text of `data`
    std::optional<std::string_view> data_base64;  // the string's contents
  };

  std::optional<Event> read() {
    Event event;
    skip_space();
    if (!take('{')) return std::nullopt;
    skip_space();
    if (take('}')) return finish(std::move(event));
    while (true) {
      skip_space();
      auto name = plain_string();
      if (!name) return std::nullopt;
      skip_space();
      if (!take(':')) return std::nullopt;
      skip_space();
      if (*name == "data") {
        if (event.data) return std::nullopt;  // repeated: the general parser decides
        const std::size_t start = at_;
        if (!skip_value(0)) return std::nullopt;
        event.data = text_.substr(start, at_ - start);
      } else if (*name == "data_base64") {
        if (event.data_base64) return std::nullopt;
        auto value = plain_string();
        if (!value) return std::nullopt;
        event.data_base64 = *value;
      } else if (peek() == '"') {
        auto value = plain_string();
        if (!value) return std::nullopt;
        if (!event.attributes.emplace(std::string(*name), Json(std::string(*value))).second) {
          return std::nullopt;
        }
      } else {
        // JSON allows no leading zeros, which from_chars would accept.
        const std::size_t digits = at_ + (peek() == '-' ? 1 : 0);
        if (digits + 1 < text_.size() && text_[digits] == '0' && text_[digits + 1] >= '0' &&
            text_[digits + 1] <= '9') {
          return std::nullopt;
        }
        std::int64_t number = 0;
        const char* first = text_.data() + at_;
        auto [end, ec] = std::from_chars(first, text_.data() + text_.size(), number);
        if (ec != std::errc() || end == first) return std::nullopt;
        at_ += static_cast<std::size_t>(end - first);
        if (peek() == '.' || peek() == 'e' || peek() == 'E') return std::nullopt;
        if (!event.attributes.emplace(std::string(*name), Json(number)).second) return std::nullopt;
      }
      skip_space();
      if (take(',')) continue;
      if (take('}')) return finish(std::move(event));
      return std::nullopt;
    }
  }

 private:
  std::optional<Event> finish(Event event) {
    skip_space();
    if (at_ != text_.size()) return std::nullopt;
    return event;
  }
  char peek() const { return at_ < text_.size() ? text_[at_] : '\0'; }
  bool take(char c) {
    if (peek() != c) return false;
    ++at_;
    return true;
  }
  void skip_space() {
    while (at_ < text_.size() &&
           (text_[at_] == ' ' || text_[at_] == '\n' || text_[at_] == '\r' || text_[at_] == '\t')) {
      ++at_;
    }
  }
  // A string of printable ASCII without escapes (ids, types, times, base64).
  std::optional<std::string_view> plain_string() {
    if (!take('"')) return std::nullopt;
    const std::size_t start = at_;
    while (at_ < text_.size()) {
      const auto c = static_cast<unsigned char>(text_[at_]);
      if (c == '"') return text_.substr(start, at_++ - start);
      if (c == '\\' || c < 0x20 || c >= 0x7f) return std::nullopt;
      ++at_;
    }
    return std::nullopt;
  }
  // Steps over one JSON value by its structure (strings and nesting); its validity is checked
  // by the caller.
  bool skip_value(int depth) {
    if (depth > 512) return false;
    const char c = peek();
    if (c == '"') {
      ++at_;
      while (at_ < text_.size()) {
        const char d = text_[at_++];
        if (d == '\\') {
          ++at_;
        } else if (d == '"') {
          return true;
        }
      }
      return false;
    }
    if (c == '{' || c == '[') {
      const char close = c == '{' ? '}' : ']';
      ++at_;
      while (at_ < text_.size()) {
        skip_space();
        const char d = peek();
        if (d == close) {
          ++at_;
          return true;
        }
        if (d == ',' || d == ':') {
          ++at_;
          continue;
        }
        if (!skip_value(depth + 1)) return false;
      }
      return false;
    }
    // A number or a literal: up to the next delimiter.
    const std::size_t start = at_;
    while (at_ < text_.size() && text_[at_] != ',' && text_[at_] != '}' && text_[at_] != ']' &&
           text_[at_] != ' ' && text_[at_] != '\n' && text_[at_] != '\r' && text_[at_] != '\t') {
      ++at_;
    }
    return at_ > start;
  }

  std::string_view text_;
  std::size_t at_ = 0;
};

// decode_structured for what FlatEventReader read; nullopt where the general path must decide.
std::optional<Result<Message>> decode_flat(FlatEventReader::Event event) {
  if (event.data && event.data_base64) {
    return invalid("data and data_base64 must not both be present");
  }
  const bool string_data = event.data && !event.data->empty() && event.data->front() == '"';
  if (string_data) return std::nullopt;  // a string under a non-JSON type: unescaping needed
  auto metadata = decode_attributes(std::move(event.attributes), AttributeSource{});
  if (!metadata) return Result<Message>(std::move(metadata).error());
  std::shared_ptr<const Payload> payload;
  if (event.data_base64) {
    auto bytes = base64_decode(*event.data_base64);
    if (!bytes) return invalid("attribute 'data_base64' is not valid base64");
    payload = std::make_shared<const Payload>(std::move(*bytes));
  } else if (event.data) {
    if (!detail::is_json_text(*event.data)) return invalid("data is not valid JSON");
    // The JSON event format: data without datacontenttype is JSON.
    if (metadata->content_type.empty()) metadata->content_type = "application/json";
    payload = std::make_shared<const Payload>(std::string(*event.data));
  } else {
    payload = std::make_shared<const Payload>(std::string());
  }
  return Message(std::move(*metadata), std::move(payload));
}

}  // namespace

Result<Message> decode_structured(std::string_view text) {
  if (auto event = FlatEventReader(text).read()) {
    if (auto decoded = decode_flat(std::move(*event))) return std::move(*decoded);
  }
  Json event = detail::parse_json_text(text);
  if (event.is_discarded()) return invalid("structured event is not valid JSON");
  if (!event.is_object()) return invalid("structured event must be a JSON object");

  std::optional<Json> data;
  std::optional<Json> data_base64;
  ReceivedAttributes attributes;
  for (auto& [name, value] : event.items()) {
    if (name == "data") {
      data = std::move(value);
    } else if (name == "data_base64") {
      if (!value.is_null()) data_base64 = std::move(value);
    } else {
      attributes.emplace(name, std::move(value));
    }
  }
  auto metadata = decode_attributes(std::move(attributes), AttributeSource{});
  if (!metadata) return std::move(metadata).error();

  if (data && data_base64) return invalid("data and data_base64 must not both be present");
  std::shared_ptr<const Payload> payload;
  if (data_base64) {
    if (!data_base64->is_string()) return invalid("attribute 'data_base64' must be a string");
    auto bytes = base64_decode(data_base64->get_ref<const std::string&>());
    if (!bytes) return invalid("attribute 'data_base64' is not valid base64");
    payload = std::make_shared<const Payload>(std::move(*bytes));
  } else if (data) {
    // The JSON event format: data without datacontenttype is JSON.
    if (metadata->content_type.empty()) metadata->content_type = "application/json";
    if (data->is_string() && !is_json_media_type(metadata->content_type)) {
      payload = std::make_shared<const Payload>(data->get<std::string>());
    } else {
      // JSON content, or (leniently) a non-string value under a non-JSON type: the JSON text
      // is the payload, and the parsed value is kept so nobody parses it again.
      std::string bytes = dump(*data);
      payload = std::make_shared<const Payload>(std::move(bytes), std::move(*data));
    }
  } else {
    payload = std::make_shared<const Payload>(std::string());
  }
  return Message(std::move(*metadata), std::move(payload));
}

const std::string* find_header(const Headers& headers, std::string_view name) {
  for (const auto& [key, value] : headers) {
    if (iequals(key, name)) return &value;
  }
  return nullptr;
}

Message foreign_message(std::string_view subject, std::shared_ptr<const Payload> body,
                        const Headers& headers) {
  MessageMetadata metadata;
  metadata.message_id = make_uuid_v7();
  metadata.message_type = subject::type_of(subject);
  if (metadata.message_type.empty()) metadata.message_type = kUntypedMessageType;
  metadata.time = Clock::now();
  for (const auto& [name, value] : headers) {
    // The content type is the message's own, not a header beside it (which would travel twice
    // when the message is sent again, and differ when a handler changes the content type).
    if (iequals(name, "content-type")) {
      metadata.content_type = value;
      continue;
    }
    metadata.headers.emplace(name, value);
  }
  Message message(std::move(metadata), std::move(body));
  message.set_subject(std::string(subject));
  return message;
}

}  // namespace marty::messaging::codec
