// The RabbitMQ backend with amqplib on the other side (tests/interop/rabbitmq_peer.mjs): a
// foreign consumer reads our events, we read a foreign publisher's, a foreign RPC responder
// (copying the AMQP correlation_id property only, as RabbitMQ's tutorial does) answers our
// queries and our responders answer a foreign direct reply-to request.
#include <gtest/gtest.h>

#include "interop_support.hpp"
#include "marty/messaging/rabbitmq_backend.hpp"

namespace marty::messaging {
namespace {

testing::InteropTarget rabbitmq_target() {
  testing::InteropTarget target;
  target.script = "rabbitmq_peer.mjs";
  target.address = testing::env_or_empty("MARTY_RABBITMQ_URL");
  target.make_bus = [url = target.address] {
    rabbitmq::RabbitMqConfig config;
    config.url = url;
    return testing::started_bus(MessageBackendType::rabbitmq, rabbitmq::make_backend(config));
  };
  return target;
}

TEST(RabbitMqInterop, AmqplibReadsOurEventsAsCloudEvents) {
  REQUIRE_INTEROP("MARTY_RABBITMQ_URL");
  auto got = testing::check_they_read_our_events(rabbitmq_target());
  EXPECT_EQ(got["properties"]["correlationId"], "order-7");
}

TEST(RabbitMqInterop, WeReadAmqplibEvents) {
  REQUIRE_INTEROP("MARTY_RABBITMQ_URL");
  testing::check_we_read_their_events(rabbitmq_target());
}

TEST(RabbitMqInterop, AmqplibAnswersOurQueries) {
  REQUIRE_INTEROP("MARTY_RABBITMQ_URL");
  testing::check_they_answer_our_queries(rabbitmq_target());
}

TEST(RabbitMqInterop, OurRespondersAnswerAmqplib) {
  REQUIRE_INTEROP("MARTY_RABBITMQ_URL");
  auto reply = testing::check_we_answer_their_queries(rabbitmq_target());
  EXPECT_EQ(reply["properties"]["correlationId"], reply["correlation"]);
}

}  // namespace
}  // namespace marty::messaging
