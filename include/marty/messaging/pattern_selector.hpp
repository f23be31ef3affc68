#pragma once

#include <string_view>

#include "marty/messaging/types.hpp"

namespace marty::messaging {

/// The Python original's static advice tables, kept as the bus's last-resort policy (explicit
/// routes and the default backend come first). Deterministic and stateless.
class PatternSelector {
 public:
  /// In order: a response is needed → request_response; high throughput with ordering →
  /// streaming; the use case mentions "notification" or "event" → pub_sub; "command" or
  /// "task" → point_to_point; "broadcast" → broadcast; otherwise pub_sub. Case-insensitive.
  /// (Like the original, "broadcast event" gives pub_sub: "event" is tested first, and
  /// durability does not change the pattern.)
  static MessagingPattern recommend_pattern(std::string_view use_case,
                                            bool durability_required = false,
                                            bool ordering_required = false,
                                            bool response_needed = false,
                                            bool high_throughput = false);

  /// | pattern   | low      | medium   | high     | cloud "aws" |
  /// | pub_sub   | redis    | nats     | kafka    | aws_sns     |
  /// | req_resp  | nats     | rabbitmq | nats     | (table)     |
  /// | streaming | redis    | kafka    | kafka    | (table)     |
  /// | p2p       | rabbitmq | aws_sqs  | rabbitmq | aws_sqs     |
  /// | broadcast | redis    | aws_sns  | nats     | aws_sns     |
  /// An unknown scale gives nats, as in the original.
  static MessageBackendType recommend_backend(MessagingPattern pattern,
                                              std::string_view scale_requirements = "medium",
                                              std::string_view cloud_preference = "agnostic");
};

}  // namespace marty::messaging
