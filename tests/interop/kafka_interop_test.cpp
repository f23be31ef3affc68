// The Kafka backend with kafkajs on the other side (tests/interop/kafka_peer.mjs), against the
// shared mock cluster of scripts/brokers: a foreign consumer reads our events, we read a
// foreign producer's, a foreign responder answers our queries (copying ce_correlationid, and
// none of the bus's headers: the reply token was once required) and our responders answer a
// foreign asker.
#include <gtest/gtest.h>

#include "interop_support.hpp"
#include "marty/messaging/kafka_backend.hpp"

namespace marty::messaging {
namespace {

using namespace std::chrono_literals;

testing::InteropTarget kafka_target() {
  testing::InteropTarget target;
  target.script = "kafka_peer.mjs";
  target.address = testing::env_or_empty("MARTY_KAFKA_BOOTSTRAP");
  target.listener_reads_from_start = true;
  target.patience = 40s;  // kafkajs takes seconds to join a group
  target.type = MessageBackendType::kafka;
  target.make_backend = [bootstrap = target.address] {
    kafka::KafkaConfig config;
    config.bootstrap_servers = bootstrap;
    config.topic_creation = kafka::KafkaConfig::TopicCreation::broker_auto_create;
    config.session_timeout = 4s;
    config.consumer_properties["fetch.wait.max.ms"] = "10";
    return kafka::make_backend(config);
  };
  return target;
}

TEST(KafkaInterop, KafkajsReadsOurEventsAsCloudEvents) {
  REQUIRE_INTEROP("MARTY_KAFKA_BOOTSTRAP");
  testing::check_they_read_our_events(kafka_target());
}

TEST(KafkaInterop, WeReadKafkajsEvents) {
  REQUIRE_INTEROP("MARTY_KAFKA_BOOTSTRAP");
  testing::check_we_read_their_events(kafka_target());
}

TEST(KafkaInterop, KafkajsAnswersOurQueries) {
  REQUIRE_INTEROP("MARTY_KAFKA_BOOTSTRAP");
  testing::check_they_answer_our_queries(kafka_target());
}

TEST(KafkaInterop, OurRespondersAnswerKafkajs) {
  REQUIRE_INTEROP("MARTY_KAFKA_BOOTSTRAP");
  auto reply = testing::check_we_answer_their_queries(kafka_target());
  EXPECT_EQ(testing::marty_headers_of(reply["cloudevent"])["marty-reply-status"], "ok");
}

TEST(KafkaInterop, WeReadThePythonOriginalsEnvelope) {
  REQUIRE_INTEROP("MARTY_KAFKA_BOOTSTRAP");
  testing::check_we_read_python_envelopes(kafka_target());
}

TEST(KafkaInterop, KafkajsReadsOurPythonEnvelopeRoute) {
  REQUIRE_INTEROP("MARTY_KAFKA_BOOTSTRAP");
  testing::check_they_read_our_python_envelopes(kafka_target());
}

}  // namespace
}  // namespace marty::messaging
