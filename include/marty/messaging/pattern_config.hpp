#pragma once

#include <chrono>
#include <map>
#include <string>

#include "marty/messaging/types.hpp"

namespace marty::messaging {

/// How the bus treats messages of one pattern (the Python original's MessagingPatternConfig,
/// with its retry fields enforced rather than decorative).
struct MessagingPatternConfig {
  MessagingPattern pattern = MessagingPattern::pub_sub;
  DeliveryGuarantee delivery_guarantee = DeliveryGuarantee::at_least_once;
  /// Publish deadline for events/commands/streams; the default query deadline.
  std::chrono::milliseconds timeout{30'000};
  /// How many times a failed message is delivered again before it is dead-lettered
  /// (so at most retry_count + 1 handler calls). 0: never redelivered.
  int retry_count = 3;
  /// Delay before the first redelivery; doubled (times `backoff_multiplier`) each time, capped
  /// at `max_backoff`.
  std::chrono::milliseconds initial_backoff{100};
  std::chrono::milliseconds max_backoff{10'000};
  double backoff_multiplier = 2.0;
  /// Each redelivery delay is shortened by up to this fraction of itself (0..1), differently
  /// per message and attempt, so that messages failing together do not come back together.
  double backoff_jitter = 0.2;
  /// After the last retry, republish to `deadletter.<subject>` with the failure's provenance
  /// instead of dropping it.
  bool dead_letter_enabled = true;
  /// Deliver one message at a time per subscription, so per-key order holds end to end.
  bool ordering_enabled = false;
  bool content_based_routing = false;
  std::map<std::string, std::string> options;

  /// Delay before redelivery number `attempt` (1 = the first redelivery).
  std::chrono::milliseconds backoff_for(int attempt) const;
};

/// The Python original's defaults per pattern:
/// | pattern   | guarantee     | timeout | retries | DLQ | ordering |
/// | pub_sub   | at_least_once | 30 s    | 3       | yes | no       |
/// | req_resp  | at_least_once | 30 s    | 3       | no  | no       |
/// | streaming | at_least_once | 5 min   | 5       | yes | yes      |
/// | p2p       | at_least_once | 60 s    | 3       | yes | no       |
/// | broadcast | at_most_once  | 10 s    | 1       | no  | no       |
MessagingPatternConfig default_pattern_config(MessagingPattern pattern);

}  // namespace marty::messaging
