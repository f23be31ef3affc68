#include <gtest/gtest.h>

#include "marty/messaging/pattern_config.hpp"
#include "marty/messaging/pattern_selector.hpp"

namespace marty::messaging {
namespace {

using B = MessageBackendType;
using P = MessagingPattern;

TEST(PatternSelectorTest, RecommendPatternKeepsTheOriginalsOrder) {
  EXPECT_EQ(PatternSelector::recommend_pattern("anything", false, false, true),
            P::request_response);
  EXPECT_EQ(PatternSelector::recommend_pattern("x", false, true, false, true), P::streaming);
  EXPECT_EQ(PatternSelector::recommend_pattern("User Notification"), P::pub_sub);
  EXPECT_EQ(PatternSelector::recommend_pattern("process TASK"), P::point_to_point);
  EXPECT_EQ(PatternSelector::recommend_pattern("send command"), P::point_to_point);
  EXPECT_EQ(PatternSelector::recommend_pattern("broadcast"), P::broadcast);
  EXPECT_EQ(PatternSelector::recommend_pattern("broadcast event"), P::pub_sub);
  EXPECT_EQ(PatternSelector::recommend_pattern("misc"), P::pub_sub);
  // durability alone changes nothing, as in the original.
  EXPECT_EQ(PatternSelector::recommend_pattern("misc", true), P::pub_sub);
}

TEST(PatternSelectorTest, RecommendBackendTable) {
  struct Row {
    P pattern;
    B low, medium, high;
  };
  const Row rows[] = {
      {P::pub_sub, B::redis, B::nats, B::kafka},
      {P::request_response, B::nats, B::rabbitmq, B::nats},
      {P::streaming, B::redis, B::kafka, B::kafka},
      {P::point_to_point, B::rabbitmq, B::aws_sqs, B::rabbitmq},
      {P::broadcast, B::redis, B::aws_sns, B::nats},
  };
  for (const Row& row : rows) {
    EXPECT_EQ(PatternSelector::recommend_backend(row.pattern, "low"), row.low);
    EXPECT_EQ(PatternSelector::recommend_backend(row.pattern, "medium"), row.medium);
    EXPECT_EQ(PatternSelector::recommend_backend(row.pattern, "high"), row.high);
    EXPECT_EQ(PatternSelector::recommend_backend(row.pattern, "enormous"), B::nats);
  }
  EXPECT_EQ(PatternSelector::recommend_backend(P::pub_sub, "low", "aws"), B::aws_sns);
  EXPECT_EQ(PatternSelector::recommend_backend(P::broadcast, "high", "aws"), B::aws_sns);
  EXPECT_EQ(PatternSelector::recommend_backend(P::point_to_point, "low", "aws"), B::aws_sqs);
  EXPECT_EQ(PatternSelector::recommend_backend(P::streaming, "low", "aws"), B::redis);
}

TEST(PatternConfigTest, DefaultsAreTheOriginals) {
  using std::chrono::milliseconds;
  auto streaming = default_pattern_config(P::streaming);
  EXPECT_EQ(streaming.timeout, milliseconds(300'000));
  EXPECT_EQ(streaming.retry_count, 5);
  EXPECT_TRUE(streaming.ordering_enabled);
  auto p2p = default_pattern_config(P::point_to_point);
  EXPECT_EQ(p2p.timeout, milliseconds(60'000));
  auto broadcast = default_pattern_config(P::broadcast);
  EXPECT_EQ(broadcast.delivery_guarantee, DeliveryGuarantee::at_most_once);
  EXPECT_EQ(broadcast.retry_count, 1);
  EXPECT_FALSE(broadcast.dead_letter_enabled);
  EXPECT_FALSE(default_pattern_config(P::request_response).dead_letter_enabled);
}

TEST(PatternConfigTest, BackoffGrowsAndIsCapped) {
  MessagingPatternConfig config;
  config.initial_backoff = std::chrono::milliseconds(100);
  config.max_backoff = std::chrono::milliseconds(1000);
  config.backoff_multiplier = 2.0;
  EXPECT_EQ(config.backoff_for(1).count(), 100);
  EXPECT_EQ(config.backoff_for(2).count(), 200);
  EXPECT_EQ(config.backoff_for(3).count(), 400);
  EXPECT_EQ(config.backoff_for(5).count(), 1000);
  EXPECT_EQ(config.backoff_for(500).count(), 1000);
}

}  // namespace
}  // namespace marty::messaging
