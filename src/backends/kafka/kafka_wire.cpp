#include "kafka_wire.hpp"

#include "marty/messaging/subject.hpp"

namespace marty::messaging::kafka {
namespace {

const codec::BinaryModeOptions& kafka_binding() {
  static const codec::BinaryModeOptions options{"ce_", "content-type"};
  return options;
}

errc code_for(rd_kafka_resp_err_t err) {
  switch (err) {
    case RD_KAFKA_RESP_ERR_NO_ERROR:
      return errc::internal;
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
      return errc::deadline_exceeded;
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
    case RD_KAFKA_RESP_ERR_GROUP_ID_NOT_FOUND:
      return errc::not_found;
    case RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS:
      return errc::already_exists;
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
      return errc::permission_denied;
    case RD_KAFKA_RESP_ERR__AUTHENTICATION:
    case RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED:
      return errc::unauthenticated;
    case RD_KAFKA_RESP_ERR__QUEUE_FULL:
    case RD_KAFKA_RESP_ERR_THROTTLING_QUOTA_EXCEEDED:
      return errc::resource_exhausted;
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR_INVALID_PARTITIONS:
    case RD_KAFKA_RESP_ERR_INVALID_REPLICATION_FACTOR:
    case RD_KAFKA_RESP_ERR_INVALID_CONFIG:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
      return errc::invalid_argument;
    case RD_KAFKA_RESP_ERR__DESTROY:
      return errc::cancelled;
    case RD_KAFKA_RESP_ERR__FATAL:
    case RD_KAFKA_RESP_ERR__INCONSISTENT:
      return errc::internal;
    case RD_KAFKA_RESP_ERR__NOT_IMPLEMENTED:
    case RD_KAFKA_RESP_ERR_UNSUPPORTED_VERSION:
      return errc::unimplemented;
    default:
      return errc::unavailable;
  }
}

bool topic_character(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

}  // namespace

Error kafka_error(rd_kafka_resp_err_t err, std::string_view what) {
  return kafka_error(code_for(err), std::string(what) + ": " + rd_kafka_err2str(err));
}

Error kafka_error(rd_kafka_error_t* error, std::string_view what) {
  Error out = kafka_error(rd_kafka_error_code(error),
                          std::string(what) + ": " + rd_kafka_error_string(error));
  rd_kafka_error_destroy(error);
  return out;
}

Result<std::string> topic_for(std::string_view prefix, std::string_view subject) {
  std::string topic;
  topic.reserve(prefix.size() + subject.size());
  topic.append(prefix).append(subject);
  if (topic.size() > 249) {
    return kafka_error(errc::invalid_argument, "subject '" + std::string(subject) +
                                                   "' makes a topic name longer than Kafka's 249 "
                                                   "characters");
  }
  for (char c : topic) {
    if (!topic_character(c)) {
      return kafka_error(errc::invalid_argument,
                         "subject '" + std::string(subject) + "' (topic '" + topic +
                             "') has a character Kafka topics cannot carry: '" + c + "'");
    }
  }
  if (topic == "." || topic == "..") {
    return kafka_error(errc::invalid_argument, "'" + topic + "' is not a Kafka topic name");
  }
  return topic;
}

std::string group_for(std::string_view prefix, std::string_view group, std::string_view subject) {
  std::string id;
  id.append(prefix).append(group).append("@").append(subject);
  return id;
}

std::string service_of(std::string_view subject) {
  for (std::string_view kind : {std::string_view("commands."), std::string_view("queries.")}) {
    if (subject.starts_with(kind)) {
      std::string_view rest = subject.substr(kind.size());
      return std::string(rest.substr(0, rest.find('.')));
    }
  }
  return {};
}

Record to_record(const Message& message) {
  codec::BinaryMessage binary = codec::encode_binary(message, kafka_binding());
  Record record;
  record.key = message.partition_key();
  record.headers = std::move(binary.headers);
  record.value = std::move(binary.body);
  return record;
}

codec::Headers headers_of(const rd_kafka_message_t& record) {
  codec::Headers out;
  rd_kafka_headers_t* headers = nullptr;
  if (rd_kafka_message_headers(&record, &headers) != RD_KAFKA_RESP_ERR_NO_ERROR) return out;
  const char* name = nullptr;
  const void* value = nullptr;
  std::size_t size = 0;
  for (std::size_t i = 0;
       rd_kafka_header_get_all(headers, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR;
       ++i) {
    out.emplace_back(name, value != nullptr ? std::string(static_cast<const char*>(value), size)
                                            : std::string());
  }
  return out;
}

Result<Message> from_record(const rd_kafka_message_t& record, std::string_view subject) {
  auto body = std::make_shared<const Payload>(
      record.payload != nullptr ? std::string(static_cast<const char*>(record.payload), record.len)
                                : std::string());
  const codec::Headers headers = headers_of(record);
  bool cloud_event = false;
  for (const auto& header : headers) {
    if (header.first == "ce_specversion") cloud_event = true;
  }
  Result<Message> decoded = Error(errc::internal, "unset");
  if (cloud_event) {
    decoded = codec::decode_binary(headers, std::move(body), kafka_binding());
    if (!decoded) {
      return decoded.error().with_context("record on '" + std::string(subject) + "' from Kafka");
    }
  } else {
    decoded = codec::foreign_message(subject, std::move(body), headers);
    if (record.key != nullptr && record.key_len > 0) {
      decoded->mutable_metadata().partition_key =
          std::string(static_cast<const char*>(record.key), record.key_len);
    }
  }
  decoded->set_subject(std::string(subject));
  return decoded;
}

}  // namespace marty::messaging::kafka
