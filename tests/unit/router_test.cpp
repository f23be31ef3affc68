#include <gtest/gtest.h>

#include "marty/messaging/router.hpp"

namespace marty::messaging {
namespace {

using B = MessageBackendType;
using P = MessagingPattern;

Capabilities caps(std::set<P> patterns, DeliveryGuarantee delivery) {
  Capabilities c;
  c.patterns = std::move(patterns);
  c.delivery = delivery;
  return c;
}

class RouterTest : public ::testing::Test {
 protected:
  Capabilities all_ =
      caps({P::pub_sub, P::point_to_point, P::request_response, P::streaming, P::broadcast},
           DeliveryGuarantee::at_least_once);
  Capabilities pubsub_only_ = caps({P::pub_sub, P::broadcast}, DeliveryGuarantee::at_least_once);
  Capabilities fire_and_forget_ =
      caps({P::pub_sub, P::request_response}, DeliveryGuarantee::at_most_once);
  MessagingPatternConfig pubsub_ = default_pattern_config(P::pub_sub);
  MessagingPatternConfig stream_ = default_pattern_config(P::streaming);
};

TEST_F(RouterTest, RoutesWinThenDefaultThenTableThenFirstCapable) {
  Router router;
  router.add({"orders.*", B::kafka, {}});
  BackendTable table{{B::memory, &all_}, {B::kafka, &all_}, {B::nats, &all_}};
  EXPECT_EQ(*router.select("orders.created", pubsub_, table, std::nullopt), B::kafka);
  // no route: the table recommends nats for pub_sub at medium scale
  EXPECT_EQ(*router.select("users.created", pubsub_, table, std::nullopt), B::nats);
  // an explicit default beats the table
  EXPECT_EQ(*router.select("users.created", pubsub_, table, B::memory), B::memory);
  // the table's kafka for streaming
  EXPECT_EQ(*router.select("clicks", stream_, table, std::nullopt), B::kafka);
  // nothing recommended registered: first capable in registration order
  BackendTable only_memory{{B::memory, &all_}};
  EXPECT_EQ(*router.select("x", stream_, only_memory, std::nullopt), B::memory);
}

TEST_F(RouterTest, GuaranteeAndPatternAreChecked) {
  Router router;
  BackendTable table{{B::nats, &fire_and_forget_}, {B::memory, &all_}};
  // nats gives only at-most-once; pub_sub wants at-least-once: skip to memory
  EXPECT_EQ(*router.select("e", pubsub_, table, B::nats), B::memory);
  BackendTable weak{{B::nats, &fire_and_forget_}};
  auto none = router.select("e", pubsub_, weak, std::nullopt);
  ASSERT_FALSE(none);
  EXPECT_TRUE(none.error().is(errc::failed_precondition));
  EXPECT_NE(none.error().message().find("pub_sub"), std::string::npos);
  EXPECT_NE(none.error().message().find("nats"), std::string::npos);
}

TEST_F(RouterTest, RouteWithoutPatternsFallsThroughForUnsupportedPatterns) {
  Router router;
  router.add({"orders.*", B::aws_sns, {}});
  BackendTable table{{B::aws_sns, &pubsub_only_}, {B::memory, &all_}};
  EXPECT_EQ(*router.select("orders.created", pubsub_, table, std::nullopt), B::aws_sns);
  EXPECT_EQ(*router.select("orders.created", stream_, table, std::nullopt), B::memory);
}

TEST_F(RouterTest, ExplicitRoutePatternTheBackendCannotServeIsAnError) {
  Router router;
  router.add({"orders.*", B::aws_sns, {P::streaming}});
  BackendTable table{{B::aws_sns, &pubsub_only_}, {B::memory, &all_}};
  auto selected = router.select("orders.created", stream_, table, std::nullopt);
  ASSERT_FALSE(selected);
  EXPECT_NE(selected.error().message().find("orders.*"), std::string::npos);
  auto valid = router.validate(table, {});
  ASSERT_FALSE(valid);
  EXPECT_NE(valid.error().message().find("does not support pattern streaming"), std::string::npos);
}

TEST_F(RouterTest, ValidateFindsUnregisteredBackendsAndUnservablePatterns) {
  Router router;
  router.add({"billing.*", B::rabbitmq, {}});
  BackendTable table{{B::memory, &all_}};
  auto valid = router.validate(table, {});
  ASSERT_FALSE(valid);
  EXPECT_NE(valid.error().message().find("rabbitmq"), std::string::npos);
  EXPECT_NE(valid.error().message().find("not registered"), std::string::npos);

  Router empty;
  BackendTable weak{{B::nats, &fire_and_forget_}};
  EXPECT_FALSE(empty.validate(weak, {pubsub_}));
  EXPECT_TRUE(empty.validate(table, {pubsub_, stream_}));
}

}  // namespace
}  // namespace marty::messaging
