#pragma once
// What the Kafka backend's files share: librdkafka's error codes as ours, subjects as topic and
// group names, and our messages as Kafka records (CloudEvents binary mode with the Kafka
// binding's `ce_` headers) and back.
#include <librdkafka/rdkafka.h>

#include <memory>
#include <string>
#include <string_view>

#include "marty/messaging/codec.hpp"
#include "marty/messaging/error.hpp"
#include "marty/messaging/message.hpp"
#include "marty/messaging/result.hpp"

namespace marty::messaging::kafka {

inline constexpr std::string_view kBackendName = "kafka";

/// An error of this backend.
inline Error kafka_error(errc code, std::string message) {
  return Error(code, std::move(message), std::string(kBackendName));
}
/// Our code for librdkafka's `err` (transport and broker trouble is `unavailable`, a missing
/// topic or group `not_found`, authorisation `permission_denied`...), with librdkafka's text.
Error kafka_error(rd_kafka_resp_err_t err, std::string_view what);
/// For a call that returned an rd_kafka_error_t (destroyed here).
Error kafka_error(rd_kafka_error_t* error, std::string_view what);

/// The topic of `subject`: `prefix` + subject. Kafka allows [A-Za-z0-9._-] and 249 characters;
/// anything else is `invalid_argument` naming the subject.
Result<std::string> topic_for(std::string_view prefix, std::string_view subject);
/// The consumer group of a subscriber group reading `subject`: one group per subject, so that a
/// rebalance of one subscription never stalls another.
std::string group_for(std::string_view prefix, std::string_view group, std::string_view subject);
/// The service a command or query subject is addressed to ("commands.billing.charge" →
/// "billing"); empty for other subjects.
std::string service_of(std::string_view subject);

/// A message as a Kafka record: its partition key as the key, CloudEvents attributes as headers,
/// the payload (shared, not copied) as the value.
struct Record {
  std::string key;
  codec::Headers headers;
  std::shared_ptr<const Payload> value;
};
Record to_record(const Message& message);

/// A consumed record as ours, on `subject`. Records with CloudEvents headers are decoded from
/// them (a malformed attribute is `invalid_argument` naming it); records from plain Kafka
/// producers are taken as they are, typed by their subject, their key as the partition key.
Result<Message> from_record(const rd_kafka_message_t& record, std::string_view subject);

/// A record's headers as name/value pairs, in order.
codec::Headers headers_of(const rd_kafka_message_t& record);

}  // namespace marty::messaging::kafka
