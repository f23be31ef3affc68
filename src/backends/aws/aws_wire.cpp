#include "aws_wire.hpp"

#include <openssl/evp.h>

#include <cctype>
#include <functional>

#include "marty/messaging/codec.hpp"
#include "marty/messaging/detail/backoff.hpp"
#include "marty/messaging/detail/json_text.hpp"

namespace marty::messaging::aws {
namespace {

constexpr std::string_view kExtensions = "ce_extensions";
constexpr std::string_view kAttributePrefix = "ce_";  // of the binary-mode attribute names
constexpr std::string_view kBodyEncoding = "marty-body-encoding";

const codec::BinaryModeOptions& aws_binding() {
  static const codec::BinaryModeOptions options{"ce_", "content-type"};
  return options;
}

bool own_attribute(std::string_view name) {
  return name == "ce_id" || name == "ce_type" || name == "ce_source" || name == "ce_specversion" ||
         name == "ce_time" || name == "content-type";
}

using detail::fnv1a;

// Text AWS carries as a body: valid UTF-8 of the XML character range (no NUL or other control
// characters but tab, line feed and carriage return).
bool carriable_text(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    std::uint32_t point = 0;
    std::size_t length = 0;
    if (c < 0x80) {
      if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') return false;
      ++i;
      continue;
    }
    if ((c & 0xE0) == 0xC0) {
      point = c & 0x1F;
      length = 2;
    } else if ((c & 0xF0) == 0xE0) {
      point = c & 0x0F;
      length = 3;
    } else if ((c & 0xF8) == 0xF0) {
      point = c & 0x07;
      length = 4;
    } else {
      return false;
    }
    if (i + length > text.size()) return false;
    for (std::size_t k = 1; k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xC0) != 0x80) return false;
      point = (point << 6) | (next & 0x3F);
    }
    const bool overlong = (length == 2 && point < 0x80) || (length == 3 && point < 0x800) ||
                          (length == 4 && point < 0x10000);
    if (overlong || point > 0x10FFFF || (point >= 0xD800 && point <= 0xDFFF) || point == 0xFFFE ||
        point == 0xFFFF) {
      return false;
    }
    i += length;
  }
  return true;
}

std::string base64(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3), '\0');
  const int written = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                      reinterpret_cast<const unsigned char*>(bytes.data()),
                                      static_cast<int>(bytes.size()));
  out.resize(static_cast<std::size_t>(written));
  return out;
}

Result<std::string> unbase64(std::string_view text) {
  std::string out(3 * (text.size() / 4), '\0');
  const int written = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                      reinterpret_cast<const unsigned char*>(text.data()),
                                      static_cast<int>(text.size()));
  if (written < 0 || text.size() % 4 != 0) {
    return Error(errc::invalid_argument, "the body is not valid base64");
  }
  std::size_t size = static_cast<std::size_t>(written);
  // EVP_DecodeBlock counts the padding as data.
  if (!text.empty() && text.back() == '=') --size;
  if (text.size() > 1 && text[text.size() - 2] == '=') --size;
  out.resize(size);
  return out;
}

}  // namespace

std::string aws_name_for(std::string_view prefix, std::string_view subject, std::size_t max_length,
                         bool fifo) {
  std::string name(prefix);
  bool readable = true;
  for (char c : subject) {
    const bool plain =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    if (plain) {
      name.push_back(c);
    } else if (c == '.') {
      name.push_back('-');
    } else {
      name.push_back('_');
      readable = false;
    }
  }
  const std::size_t suffix = fifo ? 5 : 0;
  if (readable && name.size() + suffix <= max_length) return fifo ? name + ".fifo" : name;
  char hash[17];
  std::snprintf(hash, sizeof hash, "%016llx", static_cast<unsigned long long>(fnv1a(subject)));
  const std::size_t keep = max_length - suffix - 2 - 16;
  if (name.size() > keep) name.resize(keep);
  name.append("--").append(hash);
  return fifo ? name + ".fifo" : name;
}

AwsMessage to_aws(const Message& message) {
  codec::BinaryMessage binary = codec::encode_binary(message, aws_binding());
  AwsMessage out;
  Json extensions = Json::object();
  for (auto& [name, value] : binary.headers) {
    if (own_attribute(name)) {
      out.attributes.emplace_back(std::move(name), std::move(value));
    } else if (name.starts_with(kAttributePrefix)) {
      // Under its CloudEvents name (`correlationid`), as docs/aws-backends.md says.
      extensions[name.substr(kAttributePrefix.size())] = std::move(value);
    } else {
      extensions[name] = std::move(value);
    }
  }
  if (!extensions.empty()) {
    // A header that is not UTF-8 travels with U+FFFD in place of its bad bytes (never a throw).
    out.attributes.emplace_back(std::string(kExtensions),
                                extensions.dump(-1, ' ', false, Json::error_handler_t::replace));
  }
  const std::string_view bytes = binary.body ? binary.body->bytes() : std::string_view();
  if (carriable_text(bytes)) {
    out.body = std::string(bytes);
  } else {
    out.body = base64(bytes);
    out.attributes.emplace_back(std::string(kBodyEncoding), "base64");
  }
  return out;
}

Result<Message> from_aws(std::string_view subject, std::string body, const Attributes& attributes) {
  codec::Headers headers;
  bool cloud_event = false;
  bool encoded = false;
  for (const auto& [name, value] : attributes) {
    if (name == kBodyEncoding) {
      encoded = value == "base64";
    } else if (name == kExtensions) {
      Json extensions = detail::parse_json_text(value);
      if (!extensions.is_object()) {
        return Error(errc::invalid_argument,
                     "message attribute 'ce_extensions' is not a JSON object");
      }
      for (const auto& [key, item] : extensions.items()) {
        if (!item.is_string()) {
          return Error(errc::invalid_argument,
                       "message attribute 'ce_extensions': '" + key + "' is not a string");
        }
        // Both forms are read: the CloudEvents name (`correlationid`, written since) and the
        // binary-mode header name (`ce_correlationid`, written before).
        headers.emplace_back(key.starts_with(kAttributePrefix) || key == "content-type"
                                 ? key
                                 : std::string(kAttributePrefix) + key,
                             item.get<std::string>());
      }
    } else {
      if (name == "ce_specversion") cloud_event = true;
      headers.emplace_back(name, value);
    }
  }
  if (encoded) {
    auto decoded = unbase64(body);
    if (!decoded) return std::move(decoded).error();
    body = std::move(*decoded);
  }
  auto payload = std::make_shared<const Payload>(std::move(body));
  Result<Message> message = cloud_event
                                ? codec::decode_binary(headers, std::move(payload), aws_binding())
                                : codec::foreign_message(subject, std::move(payload), headers);
  if (!message) return std::move(message).error();
  message->set_subject(std::string(subject));
  return message;
}

std::string fifo_id(std::string_view text) {
  constexpr std::size_t kLength = 128;
  bool usable = !text.empty() && text.size() <= kLength;
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (!(std::isalnum(u) || std::ispunct(u))) usable = false;
  }
  if (usable) return std::string(text);
  // aws_name_for hashes what it cannot keep readably: the same text always gives the same id.
  return aws_name_for("", text, kLength, false);
}

std::string message_group_of(const Message& message) {
  const std::string_view key = message.partition_key();
  return fifo_id(key.empty() ? message.subject() : key);
}

}  // namespace marty::messaging::aws
