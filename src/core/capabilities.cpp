#include "marty/messaging/capabilities.hpp"

namespace marty::messaging {

std::string_view to_string(Ordering ordering) noexcept {
  switch (ordering) {
    case Ordering::none:
      return "none";
    case Ordering::per_key:
      return "per_key";
    case Ordering::per_topic:
      return "per_topic";
  }
  return "none";
}

nlohmann::json to_json(const Capabilities& c) {
  nlohmann::json patterns = nlohmann::json::array();
  for (MessagingPattern pattern : kAllPatterns) {
    if (c.supports(pattern)) patterns.push_back(to_string(pattern));
  }
  return {{"patterns", patterns},
          {"delivery", to_string(c.delivery)},
          {"ordering", to_string(c.ordering)},
          {"persistent_replay", c.persistent_replay},
          {"durable_groups", c.durable_groups},
          {"consumer_groups", c.consumer_groups},
          {"native_request_reply", c.native_request_reply},
          {"delayed_redelivery", c.delayed_redelivery},
          {"native_dead_letter", c.native_dead_letter},
          {"inspectable_dead_letters", c.inspectable_dead_letters},
          {"headers", c.headers},
          {"wildcard_subscriptions", c.wildcard_subscriptions},
          {"deduplicates_by_id", c.deduplicates_by_id},
          {"consumer_lag", c.consumer_lag},
          {"max_payload_bytes", c.max_payload_bytes}};
}

}  // namespace marty::messaging
