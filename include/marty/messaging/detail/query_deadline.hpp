#pragma once

#include <algorithm>
#include <chrono>

#include "marty/messaging/backend.hpp"

namespace marty::messaging::detail {

/// For backends whose responders read queries from a log or queue that outlives the asker's
/// wait: a query carries its deadline as `ttl` from its `time`, so that a responder skips a
/// query nobody waits for any more. Other messages, and queries without a deadline or with a
/// ttl of their own, are left as they are.
inline void carry_query_deadline(Message& message, const PublishOptions& options) {
  if (options.pattern != MessagingPattern::request_response || message.ttl() ||
      options.deadline == SteadyClock::time_point::max()) {
    return;
  }
  auto& metadata = message.mutable_metadata();
  if (!metadata.time) metadata.time = Clock::now();
  metadata.ttl = std::max(
      std::chrono::milliseconds(1),
      std::chrono::duration_cast<std::chrono::milliseconds>(options.deadline - SteadyClock::now()));
}

}  // namespace marty::messaging::detail
