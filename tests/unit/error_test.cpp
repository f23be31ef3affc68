#include <gtest/gtest.h>

#include "marty/messaging/result.hpp"
#include "marty/messaging/types.hpp"

namespace marty::messaging {
namespace {

TEST(ErrorTest, CodesHaveNamesAndRoundTrip) {
  for (errc code : {errc::cancelled, errc::invalid_argument, errc::deadline_exceeded,
                    errc::unavailable, errc::unauthenticated, errc::data_loss}) {
    EXPECT_EQ(errc_from_string(to_string(code)), code);
  }
  EXPECT_EQ(errc_from_string("no_such_code"), errc::internal);
  std::error_code ec = errc::unavailable;
  EXPECT_EQ(ec.category().name(), std::string("marty.messaging"));
  EXPECT_EQ(ec.message(), "unavailable");
}

TEST(ErrorTest, RetryableOnlyForTransientCodes) {
  EXPECT_TRUE(Error(errc::unavailable, "x").retryable());
  EXPECT_TRUE(Error(errc::deadline_exceeded, "x").retryable());
  EXPECT_TRUE(Error(errc::resource_exhausted, "x").retryable());
  EXPECT_FALSE(Error(errc::invalid_argument, "x").retryable());
  EXPECT_FALSE(Error(errc::permission_denied, "x").retryable());
}

TEST(ErrorTest, DescribeNamesCodeMessageAndBackend) {
  Error e(errc::deadline_exceeded, "no reply within 5 ms", "nats");
  EXPECT_EQ(e.describe(), "deadline_exceeded: no reply within 5 ms [nats]");
  EXPECT_EQ(e.with_context("query x").describe(),
            "deadline_exceeded: query x: no reply within 5 ms [nats]");
}

TEST(ResultTest, HoldsValueOrError) {
  Result<int> good = 7;
  ASSERT_TRUE(good);
  EXPECT_EQ(*good, 7);
  Result<int> bad = Error(errc::not_found, "nope");
  ASSERT_FALSE(bad);
  EXPECT_TRUE(bad.error().is(errc::not_found));
  EXPECT_EQ(bad.value_or(3), 3);
  Result<void> done = ok();
  EXPECT_TRUE(done);
  Result<void> failed = Error(errc::internal, "x");
  EXPECT_FALSE(failed);
  Result<std::string> converted = "text";
  EXPECT_EQ(*converted, "text");
}

TEST(TypesTest, NamesMatchThePythonOriginal) {
  EXPECT_EQ(to_string(MessagingPattern::pub_sub), "pub_sub");
  EXPECT_EQ(to_string(MessagingPattern::request_response), "req_resp");
  EXPECT_EQ(to_string(MessagingPattern::point_to_point), "p2p");
  EXPECT_EQ(to_string(MessageBackendType::aws_sns), "aws_sns");
  EXPECT_EQ(*parse_pattern("streaming"), MessagingPattern::streaming);
  EXPECT_EQ(*parse_backend_type("kafka"), MessageBackendType::kafka);
  auto bad = parse_backend_type("kafak");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("kafak"), std::string::npos);
  EXPECT_NE(bad.error().message().find("kafka"), std::string::npos);  // lists the valid names
  EXPECT_TRUE(satisfies(DeliveryGuarantee::exactly_once, DeliveryGuarantee::at_least_once));
  EXPECT_FALSE(satisfies(DeliveryGuarantee::at_most_once, DeliveryGuarantee::at_least_once));
}

}  // namespace
}  // namespace marty::messaging
