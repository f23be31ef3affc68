#include "marty/messaging/types.hpp"

#include <string>
#include <utility>

namespace marty::messaging {
namespace {

template <class Enum, std::size_t N>
Result<Enum> parse_named(std::string_view name, std::string_view what,
                         const std::array<std::pair<Enum, std::string_view>, N>& table) {
  std::string valid;
  for (const auto& [value, text] : table) {
    if (text == name) return value;
    if (!valid.empty()) valid += ", ";
    valid += text;
  }
  return Error(errc::invalid_argument, "unknown " + std::string(what) + " '" + std::string(name) +
                                           "' (valid: " + valid + ")");
}

template <class Enum, std::size_t N>
std::string_view name_of(Enum value,
                         const std::array<std::pair<Enum, std::string_view>, N>& table) {
  for (const auto& [known, text] : table) {
    if (known == value) return text;
  }
  return "unknown";
}

constexpr std::array<std::pair<MessageBackendType, std::string_view>, 7> kBackendNames{{
    {MessageBackendType::memory, "memory"},
    {MessageBackendType::nats, "nats"},
    {MessageBackendType::kafka, "kafka"},
    {MessageBackendType::rabbitmq, "rabbitmq"},
    {MessageBackendType::redis, "redis"},
    {MessageBackendType::aws_sns, "aws_sns"},
    {MessageBackendType::aws_sqs, "aws_sqs"},
}};

constexpr std::array<std::pair<MessagingPattern, std::string_view>, 5> kPatternNames{{
    {MessagingPattern::pub_sub, "pub_sub"},
    {MessagingPattern::point_to_point, "p2p"},
    {MessagingPattern::request_response, "req_resp"},
    {MessagingPattern::streaming, "streaming"},
    {MessagingPattern::broadcast, "broadcast"},
}};

constexpr std::array<std::pair<DeliveryGuarantee, std::string_view>, 3> kGuaranteeNames{{
    {DeliveryGuarantee::at_most_once, "at_most_once"},
    {DeliveryGuarantee::at_least_once, "at_least_once"},
    {DeliveryGuarantee::exactly_once, "exactly_once"},
}};

constexpr std::array<std::pair<WireFormat, std::string_view>, 2> kWireFormatNames{{
    {WireFormat::cloudevents, "cloudevents"},
    {WireFormat::python_envelope, "python_envelope"},
}};

}  // namespace

std::string_view to_string(WireFormat format) noexcept {
  return name_of(format, kWireFormatNames);
}
Result<WireFormat> parse_wire_format(std::string_view name) {
  return parse_named(name, "wire format", kWireFormatNames);
}

std::string_view to_string(MessageBackendType type) noexcept {
  return name_of(type, kBackendNames);
}
std::string_view to_string(MessagingPattern pattern) noexcept {
  return name_of(pattern, kPatternNames);
}
std::string_view to_string(DeliveryGuarantee guarantee) noexcept {
  return name_of(guarantee, kGuaranteeNames);
}

Result<MessageBackendType> parse_backend_type(std::string_view name) {
  return parse_named(name, "backend type", kBackendNames);
}
Result<MessagingPattern> parse_pattern(std::string_view name) {
  return parse_named(name, "messaging pattern", kPatternNames);
}
Result<DeliveryGuarantee> parse_delivery_guarantee(std::string_view name) {
  return parse_named(name, "delivery guarantee", kGuaranteeNames);
}

}  // namespace marty::messaging
