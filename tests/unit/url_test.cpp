// Broker URLs taken apart, and shown without their secrets.
#include <gtest/gtest.h>

#include "marty/messaging/detail/url.hpp"

namespace marty::messaging::detail {
namespace {

TEST(UrlTest, PartsAreDecoded) {
  auto parts = parse_url("amqp://us%40er:p%3Ass@rabbit.local:5672/vhost", "RabbitMqConfig.url");
  ASSERT_TRUE(parts) << parts.error().describe();
  EXPECT_EQ(parts->scheme, "amqp");
  EXPECT_EQ(parts->user, "us@er");
  EXPECT_EQ(parts->password, "p:ss");
  EXPECT_EQ(parts->host, "rabbit.local");
  EXPECT_EQ(parts->port, 5672);
  EXPECT_EQ(parts->path, "vhost");
  auto bad = parse_url("redis://:s3cret@host:port", "RedisConfig.url");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("RedisConfig.url"), std::string::npos);
  EXPECT_EQ(bad.error().describe().find("s3cret"), std::string::npos);
}

TEST(UrlTest, RedactedUrlsKeepServerAndUserButNoSecret) {
  EXPECT_EQ(redact_url("nats://alice:pa55@nats.local:4222"), "nats://alice:***@nats.local:4222");
  EXPECT_EQ(redact_url("nats://t0ken@nats.local:4222"), "nats://***@nats.local:4222");
  EXPECT_EQ(redact_url("redis://:pa55@redis.local:6379/2"), "redis://:***@redis.local:6379/2");
  EXPECT_EQ(redact_url("amqp://guest:g@st@rabbit/vh"), "amqp://guest:***@rabbit/vh");
  EXPECT_EQ(redact_url("nats://nats.local:4222"), "nats://nats.local:4222");
  EXPECT_EQ(redact_url("http://host/path@not-userinfo"), "http://host/path@not-userinfo");
  EXPECT_EQ(redact_url("not a url"), "not a url");
}

}  // namespace
}  // namespace marty::messaging::detail
