#include "rabbitmq_wire.hpp"

#include <charconv>
#include <chrono>

#include "marty/messaging/codec.hpp"

namespace marty::messaging::rabbitmq {
namespace {

const codec::BinaryModeOptions& amqp_binding() {
  static const codec::BinaryModeOptions options{"cloudEvents:", "content-type"};
  return options;
}

std::string field_text(const amqp_field_value_t& value) {
  switch (value.kind) {
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
      return text_of(value.value.bytes);
    case AMQP_FIELD_KIND_BOOLEAN:
      return value.value.boolean ? "true" : "false";
    case AMQP_FIELD_KIND_I8:
      return std::to_string(value.value.i8);
    case AMQP_FIELD_KIND_U8:
      return std::to_string(value.value.u8);
    case AMQP_FIELD_KIND_I16:
      return std::to_string(value.value.i16);
    case AMQP_FIELD_KIND_U16:
      return std::to_string(value.value.u16);
    case AMQP_FIELD_KIND_I32:
      return std::to_string(value.value.i32);
    case AMQP_FIELD_KIND_U32:
      return std::to_string(value.value.u32);
    case AMQP_FIELD_KIND_I64:
      return std::to_string(value.value.i64);
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_TIMESTAMP:
      return std::to_string(value.value.u64);
    default:
      return {};  // tables, arrays, floats: not ours
  }
}

std::uint64_t number_of(const std::string& text) {
  std::uint64_t value = 0;
  std::from_chars(text.data(), text.data() + text.size(), value);
  return value;
}

}  // namespace

OutgoingMessage::OutgoingMessage(const Message& message, const Extra& extra)
    : payload_(message.payload()) {
  codec::BinaryMessage binary = codec::encode_binary(message, amqp_binding());
  for (auto& [name, value] : binary.headers) {
    if (name == "content-type") {
      content_type_ = std::move(value);
    } else {
      headers_.emplace_back(std::move(name), std::move(value));
    }
  }
  headers_.emplace_back(std::string(kSubjectHeader), message.subject());
  if (extra.attempt > 0)
    headers_.emplace_back(std::string(kAttemptHeader), std::to_string(extra.attempt));
  if (extra.publish_tag > 0) {
    headers_.emplace_back(std::string(kPublishTagHeader), std::to_string(extra.publish_tag));
  }
  entries_.reserve(headers_.size());
  for (const auto& [name, value] : headers_) {
    amqp_table_entry_t entry{};
    entry.key = bytes_of(name);
    entry.value.kind = AMQP_FIELD_KIND_UTF8;
    entry.value.value.bytes = bytes_of(value);
    entries_.push_back(entry);
  }
  message_id_ = message.id();
  correlation_id_ =
      extra.correlation_id.empty() ? std::string(message.correlation_id()) : extra.correlation_id;
  reply_to_ = extra.reply_to.empty() ? std::string(message.reply_to()) : extra.reply_to;
  const auto ttl = message.ttl();
  expiration_ = !extra.expiration_ms.empty()
                    ? extra.expiration_ms
                    : (ttl ? std::to_string(std::max<long long>(ttl->count(), 0)) : std::string());
  if (!extra.keep_expiration) expiration_.clear();
  type_ = message.type();

  properties_._flags = AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
  properties_.headers.num_entries = static_cast<int>(entries_.size());
  properties_.headers.entries = entries_.data();
  properties_.delivery_mode = extra.persistent ? 2 : 1;
  auto set = [&](const std::string& value, amqp_flags_t flag, amqp_bytes_t& field) {
    if (value.empty()) return;
    properties_._flags |= flag;
    field = bytes_of(value);
  };
  set(content_type_, AMQP_BASIC_CONTENT_TYPE_FLAG, properties_.content_type);
  set(message_id_, AMQP_BASIC_MESSAGE_ID_FLAG, properties_.message_id);
  set(correlation_id_, AMQP_BASIC_CORRELATION_ID_FLAG, properties_.correlation_id);
  set(reply_to_, AMQP_BASIC_REPLY_TO_FLAG, properties_.reply_to);
  set(expiration_, AMQP_BASIC_EXPIRATION_FLAG, properties_.expiration);
  set(type_, AMQP_BASIC_TYPE_FLAG, properties_.type);
  if (message.priority() > 0) {
    properties_._flags |= AMQP_BASIC_PRIORITY_FLAG;
    properties_.priority = static_cast<std::uint8_t>(std::min(message.priority(), 255));
  }
  if (const auto time = message.time()) {
    properties_._flags |= AMQP_BASIC_TIMESTAMP_FLAG;
    properties_.timestamp = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::seconds>(time->time_since_epoch()).count());
  }
}

amqp_bytes_t OutgoingMessage::body() const noexcept {
  const std::string_view bytes = payload_ ? payload_->bytes() : std::string_view();
  return amqp_bytes_t{bytes.size(), const_cast<char*>(bytes.data())};
}

Result<Incoming> decode_amqp(const amqp_message_t& amqp, const std::string& routing_key,
                             bool redelivered) {
  const amqp_basic_properties_t& props = amqp.properties;
  codec::Headers headers;
  std::string subject = routing_key;
  Incoming incoming;
  incoming.attempt = redelivered ? 2 : 1;
  bool cloud_event = false;
  if (props._flags & AMQP_BASIC_HEADERS_FLAG) {
    for (int i = 0; i < props.headers.num_entries; ++i) {
      const amqp_table_entry_t& entry = props.headers.entries[i];
      std::string name = text_of(entry.key);
      std::string value = field_text(entry.value);
      if (name == kSubjectHeader) {
        subject = std::move(value);
      } else if (name == kAttemptHeader) {
        incoming.attempt =
            std::max<int>(static_cast<int>(number_of(value)), 1) + (redelivered ? 1 : 0);
      } else if (name == kPublishTagHeader) {
        // Ours, for matching returns: not the message's.
      } else {
        if (name == "cloudEvents:specversion") cloud_event = true;
        headers.emplace_back(std::move(name), std::move(value));
      }
    }
  }
  if (props._flags & AMQP_BASIC_CONTENT_TYPE_FLAG) {
    headers.emplace_back("content-type", text_of(props.content_type));
  }
  auto body = std::make_shared<const Payload>(text_of(amqp.body));
  Result<Message> decoded = Error(errc::internal, "unset");
  if (cloud_event) {
    decoded = codec::decode_binary(headers, std::move(body), amqp_binding());
    if (!decoded) {
      return decoded.error().with_context("message on '" + subject + "' from RabbitMQ");
    }
    decoded->set_subject(subject);
    // AMQP's own correlation field counts where the CloudEvents attribute is missing: an RPC
    // client (RabbitMQ's tutorials) sets and copies only the property.
    if (decoded->metadata().correlation_id.empty() &&
        (props._flags & AMQP_BASIC_CORRELATION_ID_FLAG) && props.correlation_id.len != 0) {
      decoded->mutable_metadata().correlation_id = text_of(props.correlation_id);
    }
  } else {
    decoded = codec::foreign_message(subject, std::move(body), headers);
    // An empty message id is none: the fresh one stays.
    if ((props._flags & AMQP_BASIC_MESSAGE_ID_FLAG) && props.message_id.len != 0) {
      decoded->mutable_metadata().message_id = text_of(props.message_id);
    }
    if (props._flags & AMQP_BASIC_CORRELATION_ID_FLAG) {
      decoded->mutable_metadata().correlation_id = text_of(props.correlation_id);
    }
  }
  if (props._flags & AMQP_BASIC_REPLY_TO_FLAG) {
    decoded->mutable_metadata().reply_to = text_of(props.reply_to);
  }
  incoming.message = std::move(*decoded);
  return incoming;
}

}  // namespace marty::messaging::rabbitmq
