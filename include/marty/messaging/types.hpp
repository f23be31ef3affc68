#pragma once

#include <array>
#include <chrono>
#include <string>
#include <string_view>

#include "marty/messaging/result.hpp"

namespace marty::messaging {

/// The kinds of backend the bus can route to (the Python original's names, lower snake case).
enum class MessageBackendType { memory, nats, kafka, rabbitmq, redis, aws_sns, aws_sqs };

/// How a message travels. The string forms are the Python original's: "pub_sub", "req_resp",
/// "streaming", "p2p", "broadcast".
enum class MessagingPattern { pub_sub, point_to_point, request_response, streaming, broadcast };

/// What a backend promises about delivery. exactly_once is only ever claimed as
/// "effectively once": at-least-once delivery plus an idempotent consumer.
enum class DeliveryGuarantee { at_most_once, at_least_once, exactly_once };

/// How the bus writes a message's payload on the wire.
enum class WireFormat {
  /// The payload as it is, its metadata in the broker's CloudEvents binding (the default).
  cloudevents,
  /// The payload wrapped in the Python original's `{"data", "metadata"}` envelope (the
  /// CloudEvents attributes still travel beside it), for consumers that are Python services.
  python_envelope,
};

inline constexpr std::array kAllBackendTypes{
    MessageBackendType::memory,   MessageBackendType::nats,  MessageBackendType::kafka,
    MessageBackendType::rabbitmq, MessageBackendType::redis, MessageBackendType::aws_sns,
    MessageBackendType::aws_sqs};
inline constexpr std::array kAllPatterns{
    MessagingPattern::pub_sub, MessagingPattern::point_to_point, MessagingPattern::request_response,
    MessagingPattern::streaming, MessagingPattern::broadcast};

std::string_view to_string(MessageBackendType type) noexcept;
std::string_view to_string(MessagingPattern pattern) noexcept;
std::string_view to_string(DeliveryGuarantee guarantee) noexcept;
std::string_view to_string(WireFormat format) noexcept;

/// Parse the string forms above; an unknown name is `invalid_argument` listing the valid ones.
Result<MessageBackendType> parse_backend_type(std::string_view name);
Result<MessagingPattern> parse_pattern(std::string_view name);
Result<DeliveryGuarantee> parse_delivery_guarantee(std::string_view name);
Result<WireFormat> parse_wire_format(std::string_view name);

/// True when `offered` satisfies `required` (exactly_once > at_least_once > at_most_once).
constexpr bool satisfies(DeliveryGuarantee offered, DeliveryGuarantee required) noexcept {
  return static_cast<int>(offered) >= static_cast<int>(required);
}

}  // namespace marty::messaging
