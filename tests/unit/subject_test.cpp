#include <gtest/gtest.h>

#include "marty/messaging/subject.hpp"

namespace marty::messaging {
namespace {

TEST(SubjectTest, BuildsTheOriginalsSubjects) {
  EXPECT_EQ(subject::for_event("user_registered"), "events.user_registered");
  EXPECT_EQ(subject::for_command("payment", "charge"), "commands.payment.charge");
  EXPECT_EQ(subject::for_query("inventory", "check_stock"), "queries.inventory.check_stock");
}

TEST(SubjectTest, ValidatesNames) {
  EXPECT_TRUE(subject::validate_name("orders.created", "event type"));
  for (const char* bad : {"", "a..b", ".a", "a.", "a b", "a\tb", "a.*", "a.>", "x*y"}) {
    auto result = subject::validate_name(bad, "event type");
    EXPECT_FALSE(result) << bad;
    if (!result) {
      EXPECT_TRUE(result.error().is(errc::invalid_argument));
      EXPECT_NE(result.error().message().find("event type"), std::string::npos);
    }
  }
  EXPECT_TRUE(subject::validate_pattern("a.*.c", "pattern"));
  EXPECT_TRUE(subject::validate_pattern("a.>", "pattern"));
  EXPECT_FALSE(subject::validate_pattern("a.>.c", "pattern"));
  EXPECT_FALSE(subject::validate_pattern("a.b*", "pattern"));
}

TEST(SubjectTest, WildcardMatching) {
  EXPECT_TRUE(subject::matches("events.a", "events.a"));
  EXPECT_FALSE(subject::matches("events.a", "events.ab"));
  EXPECT_TRUE(subject::matches("events.*", "events.a"));
  EXPECT_FALSE(subject::matches("events.*", "events.a.b"));
  EXPECT_FALSE(subject::matches("events.*", "events"));
  EXPECT_TRUE(subject::matches("events.>", "events.a"));
  EXPECT_TRUE(subject::matches("events.>", "events.a.b.c"));
  EXPECT_FALSE(subject::matches("events.>", "events"));
  EXPECT_TRUE(subject::matches("*.a.>", "x.a.y"));
  EXPECT_FALSE(subject::matches("*.a.>", "x.b.y"));
  EXPECT_TRUE(subject::has_wildcard("a.*"));
  EXPECT_FALSE(subject::has_wildcard("a.b"));
}

TEST(SubjectTest, GlobMatching) {
  EXPECT_TRUE(subject::glob_matches("orders.*", "orders.created"));
  EXPECT_TRUE(subject::glob_matches("orders.*", "orders.eu.created"));
  EXPECT_FALSE(subject::glob_matches("orders.*", "order.created"));
  EXPECT_TRUE(subject::glob_matches("*", "anything"));
  EXPECT_TRUE(subject::glob_matches("a?c", "abc"));
  EXPECT_FALSE(subject::glob_matches("a?c", "ac"));
  EXPECT_TRUE(subject::glob_matches("*_done", "task_done"));
}

}  // namespace
}  // namespace marty::messaging
