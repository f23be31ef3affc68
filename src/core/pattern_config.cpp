#include "marty/messaging/pattern_config.hpp"

#include "marty/messaging/detail/backoff.hpp"

namespace marty::messaging {

std::chrono::milliseconds MessagingPatternConfig::backoff_for(int attempt) const {
  return detail::exponential_backoff(initial_backoff, backoff_multiplier, max_backoff, attempt);
}

MessagingPatternConfig default_pattern_config(MessagingPattern pattern) {
  using std::chrono::milliseconds;
  MessagingPatternConfig config;
  config.pattern = pattern;
  switch (pattern) {
    case MessagingPattern::pub_sub:
      break;
    case MessagingPattern::request_response:
      config.dead_letter_enabled = false;
      break;
    case MessagingPattern::streaming:
      config.timeout = milliseconds(300'000);
      config.retry_count = 5;
      config.ordering_enabled = true;
      break;
    case MessagingPattern::point_to_point:
      config.timeout = milliseconds(60'000);
      break;
    case MessagingPattern::broadcast:
      config.delivery_guarantee = DeliveryGuarantee::at_most_once;
      config.timeout = milliseconds(10'000);
      config.retry_count = 1;
      config.dead_letter_enabled = false;
      break;
  }
  return config;
}

}  // namespace marty::messaging
