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
  target.type = MessageBackendType::rabbitmq;
  target.make_backend = [url = target.address] {
    rabbitmq::RabbitMqConfig config;
    config.url = url;
    return rabbitmq::make_backend(config);
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

// A plain AMQP message: its properties are its metadata, and its content type is only that
// (it once also came as a header named content-type, sent again beside the property).
TEST(RabbitMqInterop, WeReadPlainAmqplibMessagesByTheirProperties) {
  REQUIRE_INTEROP("MARTY_RABBITMQ_URL");
  const std::string type = testing::unique_name("note_taken");
  testing::Received received;
  auto bus = rabbitmq_target().make_bus();
  ASSERT_TRUE(bus->subscribe_to_events({type}, received.handler(), "notes"));
  testing::NodePeer peer("rabbitmq_peer.mjs",
                         {"publish-plain", testing::env_or_empty("MARTY_RABBITMQ_URL"),
                          "events." + type, type, "remember the milk"});
  auto published = peer.wait_for("published");
  ASSERT_TRUE(published) << peer.transcript();
  ASSERT_TRUE(received.wait_for(1));
  const Message got = received.messages().front();
  EXPECT_EQ(got.id(), (*published)["id"]);
  EXPECT_EQ(got.type(), type);
  EXPECT_EQ(got.metadata().correlation_id, "corr-" + type);
  EXPECT_EQ(got.metadata().content_type, "text/plain");
  EXPECT_EQ(got.payload()->bytes(), "remember the milk");
  EXPECT_EQ(got.metadata().headers.at("x-tenant"), "acme");
  for (const auto& [name, value] : got.metadata().headers) {
    EXPECT_NE(name, "content-type") << "the content type came as a header too: " << value;
  }
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

TEST(RabbitMqInterop, WeReadThePythonOriginalsEnvelope) {
  REQUIRE_INTEROP("MARTY_RABBITMQ_URL");
  testing::check_we_read_python_envelopes(rabbitmq_target());
}

TEST(RabbitMqInterop, AmqplibReadsOurPythonEnvelopeRoute) {
  REQUIRE_INTEROP("MARTY_RABBITMQ_URL");
  testing::check_they_read_our_python_envelopes(rabbitmq_target());
}

}  // namespace
}  // namespace marty::messaging
