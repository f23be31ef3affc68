#include "nats_wire.hpp"

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "marty/messaging/codec.hpp"
#include "marty/messaging/subject.hpp"

namespace marty::messaging::nats {
namespace {

errc code_for(natsStatus status) {
  switch (status) {
    case NATS_TIMEOUT:
      return errc::deadline_exceeded;
    case NATS_NO_RESPONDERS:
    case NATS_NOT_FOUND:
      return errc::not_found;
    case NATS_CONNECTION_AUTH_FAILED:
      return errc::unauthenticated;
    case NATS_NOT_PERMITTED:
      return errc::permission_denied;
    case NATS_INVALID_ARG:
    case NATS_INVALID_SUBJECT:
    case NATS_INVALID_TIMEOUT:
    case NATS_INVALID_QUEUE_NAME:
    case NATS_MAX_PAYLOAD:
    case NATS_ADDRESS_MISSING:
      return errc::invalid_argument;
    case NATS_SLOW_CONSUMER:
    case NATS_NO_MEMORY:
      return errc::resource_exhausted;
    case NATS_IO_ERROR:
    case NATS_CONNECTION_CLOSED:
    case NATS_NO_SERVER:
    case NATS_STALE_CONNECTION:
    case NATS_CONNECTION_DISCONNECTED:
    case NATS_NOT_YET_CONNECTED:
    case NATS_INSUFFICIENT_BUFFER:  // the reconnect buffer is full
    case NATS_DRAINING:
    case NATS_SSL_ERROR:
    case NATS_SECURE_CONNECTION_WANTED:
    case NATS_SECURE_CONNECTION_REQUIRED:
    case NATS_NO_SERVER_SUPPORT:
      return errc::unavailable;
    case NATS_ILLEGAL_STATE:
    case NATS_MISMATCH:
      return errc::failed_precondition;
    default:
      return errc::internal;
  }
}

// nats.c 3.4 (Debian 12's) finds a header by comparing only as many characters as the name
// asked for has, so where two names' hashes agree, "ce-id" can read the value of "ce-iddd".
// Returns the first pair of names so confused in `msg` ("ce-id" and the name whose value it
// reads), if any. The check is exact: distinct entries hold distinct values, so a shorter
// name reads the same value as a longer one only when it was taken for it.
std::optional<std::pair<std::string, std::string>> confused_header(natsMsg* msg,
                                                                   const char* const* keys,
                                                                   int count) {
  for (int i = 0; i < count; ++i) {
    const std::string_view name(keys[i]);
    for (int j = 0; j < count; ++j) {
      const std::string_view longer(keys[j]);
      if (longer.size() <= name.size() || !longer.starts_with(name)) continue;
      const char* value = nullptr;
      const char* longer_value = nullptr;
      if (natsMsgHeader_Get(msg, keys[i], &value) == NATS_OK &&
          natsMsgHeader_Get(msg, keys[j], &longer_value) == NATS_OK && value == longer_value) {
        return std::pair{std::string(name), std::string(longer)};
      }
    }
  }
  return std::nullopt;
}

// The refusal of a message whose headers nats.c would confuse, naming them.
Error confused_header_error(const std::pair<std::string, std::string>& names) {
  return Error(errc::invalid_argument,
               "header '" + names.first + "' reads as header '" + names.second +
                   "' in nats.c 3.4 (their hashes agree and one name begins the other)",
               std::string(kBackendName));
}

// A message's headers; refused when nats.c would read one as another (above).
Result<codec::Headers> headers_of(natsMsg* msg) {
  codec::Headers headers;
  const char** keys = nullptr;
  int count = 0;
  if (natsMsgHeader_Keys(msg, &keys, &count) != NATS_OK) return headers;
  const std::unique_ptr<const char*, decltype(&std::free)> owned_keys(keys, &std::free);
  if (auto confused = confused_header(msg, keys, count)) return confused_header_error(*confused);
  headers.reserve(static_cast<std::size_t>(count));
  for (int i = 0; i < count; ++i) {
    const char* value = nullptr;
    if (natsMsgHeader_Get(msg, keys[i], &value) == NATS_OK && value != nullptr) {
      headers.emplace_back(keys[i], value);
    }
  }
  return headers;
}

errc code_for_jetstream(int code) {
  switch (code) {
    case JSStreamNotFoundErr:
    case JSConsumerNotFoundErr:
      return errc::not_found;
    case JSStreamNameExistErr:
    case JSConsumerNameExistErr:
      return errc::already_exists;
    case JSStreamSubjectOverlapErr:
    case JSConsumerExistingActiveErr:
      return errc::failed_precondition;
    default:
      return errc::internal;
  }
}

}  // namespace

Error status_error(natsStatus status, std::string_view what, int jetstream_code) {
  std::string text = std::string(what) + ": " + natsStatus_GetText(status);
  natsStatus last = NATS_OK;
  if (const char* detail = nats_GetLastError(&last); detail != nullptr && *detail != '\0') {
    text += std::string(" (") + detail + ")";
  }
  errc code = code_for(status);
  if (jetstream_code != 0) {
    text += " [JetStream error " + std::to_string(jetstream_code) + "]";
    if (code == errc::internal) code = code_for_jetstream(jetstream_code);
  }
  return Error(code, std::move(text), std::string(kBackendName));
}

Result<NatsMsgPtr> to_nats(const Message& message, const std::string& subject,
                           const std::string& reply) {
  const codec::BinaryMessage wire = codec::encode_binary(message);
  const std::string_view body = wire.body ? wire.body->bytes() : std::string_view();
  if (body.size() > static_cast<std::size_t>(INT32_MAX)) {
    return Error(errc::invalid_argument, "payload too large for NATS", std::string(kBackendName));
  }
  natsMsg* raw = nullptr;
  natsStatus status = natsMsg_Create(&raw, subject.c_str(), reply.empty() ? nullptr : reply.c_str(),
                                     body.data(), static_cast<int>(body.size()));
  if (status != NATS_OK) return status_error(status, "creating a message on '" + subject + "'");
  NatsMsgPtr msg(raw);
  for (const auto& [name, value] : wire.headers) {
    // NATS headers are lines of text: a line break inside a value would end the header early.
    if (value.find_first_of("\r\n") != std::string::npos) {
      return Error(errc::invalid_argument, "header '" + name + "' contains a line break",
                   std::string(kBackendName));
    }
    status = natsMsgHeader_Set(msg.get(), name.c_str(), value.c_str());
    if (status != NATS_OK) return status_error(status, "setting header '" + name + "'");
  }
  return msg;
}

Result<Message> from_nats(natsMsg* msg, bool jetstream) {
  const std::string subject = natsMsg_GetSubject(msg);
  const char* data = natsMsg_GetData(msg);
  auto body = std::make_shared<const Payload>(std::string(
      data != nullptr ? data : "", static_cast<std::size_t>(natsMsg_GetDataLength(msg))));
  auto read_headers = headers_of(msg);
  if (!read_headers) {
    return read_headers.error().with_context("message on '" + subject + "' from NATS");
  }
  const codec::Headers& headers = *read_headers;
  Result<Message> decoded = Error(errc::internal, "unset");
  if (codec::find_header(headers, "ce-specversion") != nullptr) {
    decoded = codec::decode_binary(headers, std::move(body));
    if (!decoded) {
      return decoded.error().with_context("message on '" + subject + "' from NATS");
    }
  } else {
    // A plain NATS publisher: keep its headers, type the message by its subject.
    decoded = codec::foreign_message(subject, std::move(body), headers);
    if (const auto* id = codec::find_header(headers, "Nats-Msg-Id");
        id != nullptr && !id->empty()) {
      decoded->mutable_metadata().message_id = *id;
    }
  }
  Message message = std::move(*decoded);
  message.set_subject(subject);
  if (!jetstream) {
    if (const char* reply = natsMsg_GetReply(msg); reply != nullptr && *reply != '\0') {
      message.mutable_metadata().reply_to = reply;
    }
  }
  return message;
}

std::optional<JetStreamInfo> parse_ack_subject(std::string_view reply) {
  if (!reply.starts_with("$JS.ACK.")) return std::nullopt;
  std::vector<std::string_view> tokens;
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = reply.find('.', start);
    tokens.push_back(reply.substr(start, dot - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  // v1: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<time>.<pending> (9 tokens);
  // v2 adds <domain>.<account hash> after ACK and a random token at the end (12 tokens).
  std::size_t first = 0;
  if (tokens.size() == 9) {
    first = 4;
  } else if (tokens.size() >= 11) {
    first = 6;
  } else {
    return std::nullopt;
  }
  JetStreamInfo info;
  auto number = [](std::string_view text, auto& out) {
    return std::from_chars(text.data(), text.data() + text.size(), out).ec == std::errc();
  };
  if (!number(tokens[first], info.delivered) || !number(tokens[first + 1], info.stream_sequence) ||
      !number(tokens[first + 3], info.timestamp_ns)) {
    return std::nullopt;
  }
  return info;
}

}  // namespace marty::messaging::nats
