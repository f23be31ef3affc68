// The NATS backend with nats.js on the other side (tests/interop/nats_peer.mjs): a foreign
// subscriber reads our events, we read a foreign JetStream publisher's, a foreign responder
// answers our queries and our responders answer a foreign request.
#include <gtest/gtest.h>

#include "interop_support.hpp"
#include "marty/messaging/nats_backend.hpp"

namespace marty::messaging {
namespace {

testing::InteropTarget nats_target() {
  testing::InteropTarget target;
  target.script = "nats_peer.mjs";
  target.address = testing::env_or_empty("MARTY_NATS_URL");
  target.type = MessageBackendType::nats;
  target.make_backend = [url = target.address] {
    nats::NatsConfig config;
    config.servers = {url};
    return nats::make_backend(config);
  };
  return target;
}

TEST(NatsInterop, NatsJsReadsOurEventsAsCloudEvents) {
  REQUIRE_INTEROP("MARTY_NATS_URL");
  testing::check_they_read_our_events(nats_target());
}

TEST(NatsInterop, WeReadNatsJsEvents) {
  REQUIRE_INTEROP("MARTY_NATS_URL");
  testing::check_we_read_their_events(nats_target());
}

TEST(NatsInterop, NatsJsAnswersOurQueries) {
  REQUIRE_INTEROP("MARTY_NATS_URL");
  testing::check_they_answer_our_queries(nats_target());
}

TEST(NatsInterop, OurRespondersAnswerNatsJs) {
  REQUIRE_INTEROP("MARTY_NATS_URL");
  auto reply = testing::check_we_answer_their_queries(nats_target());
  EXPECT_EQ(testing::marty_headers_of(reply["cloudevent"])["marty-reply-status"], "ok");
}

TEST(NatsInterop, WeReadThePythonOriginalsEnvelope) {
  REQUIRE_INTEROP("MARTY_NATS_URL");
  testing::check_we_read_python_envelopes(nats_target());
}

TEST(NatsInterop, NatsJsReadsOurPythonEnvelopeRoute) {
  REQUIRE_INTEROP("MARTY_NATS_URL");
  testing::check_they_read_our_python_envelopes(nats_target());
}

}  // namespace
}  // namespace marty::messaging
