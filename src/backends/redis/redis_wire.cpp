#include "redis_wire.hpp"

#include <charconv>

#include "marty/messaging/codec.hpp"
#include "marty/messaging/redis_backend.hpp"

namespace marty::messaging::redis {
namespace {

constexpr int kSequenceBits = 22;
constexpr std::uint64_t kSequenceMask = (std::uint64_t{1} << kSequenceBits) - 1;

}  // namespace

std::vector<std::string> entry_fields(const Message& message) {
  codec::BinaryMessage binary = codec::encode_binary(message);
  std::vector<std::string> fields;
  fields.reserve(binary.headers.size() * 2 + 2);
  for (auto& [name, value] : binary.headers) {
    fields.push_back(std::move(name));
    fields.push_back(std::move(value));
  }
  fields.emplace_back(kDataField);
  fields.emplace_back(message.bytes());
  return fields;
}

Result<Message> decode_entry(const std::vector<std::string>& fields, const std::string& subject) {
  if (fields.size() % 2 != 0) {
    return Error(errc::invalid_argument, "entry has an odd number of field names and values");
  }
  codec::Headers headers;
  headers.reserve(fields.size() / 2);
  const std::string* data = nullptr;
  for (std::size_t i = 0; i < fields.size(); i += 2) {
    if (fields[i] == kDataField) {
      data = &fields[i + 1];
    } else {
      headers.emplace_back(fields[i], fields[i + 1]);
    }
  }
  if (data == nullptr) return Error(errc::invalid_argument, "entry has no 'data' field");
  const bool cloud_event = codec::find_header(headers, "ce-specversion") != nullptr;
  if (!cloud_event) {
    // A plain entry (another program's, a Python service's envelope): taken as it is, its
    // other fields as headers, typed by its Stream, as plain messages are on every backend.
    return codec::foreign_message(subject, std::make_shared<const Payload>(*data), headers);
  }
  auto decoded = codec::decode_binary(headers, std::make_shared<const Payload>(*data));
  if (!decoded) return decoded;
  decoded->set_subject(subject);
  return decoded;
}

std::string channel_payload(const Message& message) {
  return codec::encode_structured(message);
}

Result<Message> decode_channel_payload(std::string payload, const std::string& subject) {
  const bool cloud_event = payload.size() > 1 && payload.front() == '{' &&
                           payload.find("\"specversion\"") != std::string::npos;
  if (!cloud_event) {
    return codec::foreign_message(subject, std::make_shared<const Payload>(std::move(payload)));
  }
  auto decoded = codec::decode_structured(payload);
  if (!decoded) return decoded;
  decoded->set_subject(subject);
  return decoded;
}

std::string glob_for(std::string_view prefix, std::string_view pattern) {
  std::string glob;
  // Literal parts are escaped where globs treat characters specially.
  auto literal = [&glob](std::string_view text) {
    for (char c : text) {
      if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') glob.push_back('\\');
      glob.push_back(c);
    }
  };
  literal(prefix);
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = pattern.find('.', start);
    const std::string_view token = pattern.substr(start, dot - start);
    if (token == "*" || token == ">") {
      glob.push_back('*');
    } else {
      literal(token);
    }
    if (dot == std::string_view::npos) break;
    glob.push_back('.');
    start = dot + 1;
  }
  return glob;
}

std::uint64_t sequence_from_entry_id(std::string_view id) {
  const std::size_t dash = id.find('-');
  std::uint64_t ms = 0, seq = 0;
  const std::string_view ms_text = id.substr(0, dash);
  std::from_chars(ms_text.data(), ms_text.data() + ms_text.size(), ms);
  if (dash != std::string_view::npos) {
    const std::string_view seq_text = id.substr(dash + 1);
    std::from_chars(seq_text.data(), seq_text.data() + seq_text.size(), seq);
  }
  return (ms << kSequenceBits) | std::min(seq, kSequenceMask);
}

std::string entry_id_from_sequence(std::uint64_t sequence) {
  return std::to_string(sequence >> kSequenceBits) + "-" + std::to_string(sequence & kSequenceMask);
}

}  // namespace marty::messaging::redis
