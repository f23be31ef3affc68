// Retry timing: exponential backoff with its cap, and the jitter that spreads retries.
#include <gtest/gtest.h>

#include <set>

#include <asio/io_context.hpp>

#include "marty/messaging/detail/backoff.hpp"
#include "marty/messaging/event_bus.hpp"
#include "marty/messaging/pattern_config.hpp"

namespace marty::messaging {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;

TEST(Backoff, DoublesFromTheInitialWaitUpToTheCap) {
  MessagingPatternConfig config;
  config.initial_backoff = 100ms;
  config.backoff_multiplier = 2.0;
  config.max_backoff = 1s;
  EXPECT_EQ(config.backoff_for(1), 100ms);
  EXPECT_EQ(config.backoff_for(2), 200ms);
  EXPECT_EQ(config.backoff_for(4), 800ms);
  EXPECT_EQ(config.backoff_for(5), 1s);
  EXPECT_EQ(config.backoff_for(5000), 1s);  // no overflow far out
}

TEST(Backoff, JitterShortensWithinItsFractionAndSpreadsDistinctKeys) {
  std::set<milliseconds::rep> seen;
  for (int i = 0; i < 200; ++i) {
    const milliseconds wait = detail::jittered(1000ms, 0.2, "message-" + std::to_string(i) + "/1");
    EXPECT_LE(wait, 1000ms);
    EXPECT_GT(wait, 800ms - 1ms);
    seen.insert(wait.count());
  }
  EXPECT_GT(seen.size(), 50u) << "retries of distinct messages should not come back together";
  EXPECT_EQ(detail::jittered(1000ms, 0.2, "same/1"), detail::jittered(1000ms, 0.2, "same/1"));
  EXPECT_EQ(detail::jittered(1000ms, 0.0, "any"), 1000ms);
}

TEST(Backoff, BadRetrySettingsAreRefusedNamingTheField) {
  asio::io_context io;
  auto created = create_unified_event_bus(io.get_executor(), EventBusOptions());
  UnifiedEventBus& bus = *created;
  MessagingPatternConfig config = default_pattern_config(MessagingPattern::pub_sub);
  config.backoff_jitter = 1.5;
  auto refused = bus.update_pattern_config(MessagingPattern::pub_sub, config);
  ASSERT_FALSE(refused);
  EXPECT_TRUE(refused.error().is(errc::invalid_argument));
  EXPECT_NE(refused.error().message().find("backoff_jitter"), std::string::npos);
  config = default_pattern_config(MessagingPattern::pub_sub);
  config.initial_backoff = 2s;
  config.max_backoff = 1s;
  refused = bus.update_pattern_config(MessagingPattern::pub_sub, config);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("initial_backoff"), std::string::npos);
}

}  // namespace
}  // namespace marty::messaging
