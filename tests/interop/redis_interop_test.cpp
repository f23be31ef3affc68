// The Redis backend with ioredis on the other side (tests/interop/redis_peer.mjs): a foreign
// subscriber reads our events, we read a foreign publisher's, a foreign responder answers our
// queries and our responders answer a foreign asker.
#include <gtest/gtest.h>

#include <thread>

#include "interop_support.hpp"
#include "marty/messaging/redis_backend.hpp"

namespace marty::messaging {
namespace {

using namespace std::chrono_literals;

// Readers block 100 ms at a time: the liveness window of queries is 3 x 100 ms + 1 s.
testing::InteropTarget redis_target() {
  testing::InteropTarget target;
  target.script = "redis_peer.mjs";
  target.address = testing::env_or_empty("MARTY_REDIS_URL");
  target.type = MessageBackendType::redis;
  target.make_backend = [url = target.address] {
    redis::RedisConfig config;
    config.url = url;
    config.block_timeout = 100ms;
    return redis::make_backend(config);
  };
  return target;
}

TEST(RedisInterop, IoredisReadsOurEventsAsCloudEvents) {
  REQUIRE_INTEROP("MARTY_REDIS_URL");
  testing::check_they_read_our_events(redis_target());
}

TEST(RedisInterop, WeReadIoredisEvents) {
  REQUIRE_INTEROP("MARTY_REDIS_URL");
  testing::check_we_read_their_events(redis_target());
}

// The responder loops on XREADGROUP ... BLOCK ... > as Redis documents and has been blocked
// longer than the liveness window before the first query: on Redis 7.0 it then shows no
// consumer at all (the queries were refused as not_found). Its replies copy the query's
// correlation id and nothing of the bus's own headers (they timed out without the token).
TEST(RedisInterop, IoredisAnswersOurQueries) {
  REQUIRE_INTEROP("MARTY_REDIS_URL");
  testing::check_they_answer_our_queries(redis_target(), 2,
                                         [] { std::this_thread::sleep_for(1600ms); });
}

TEST(RedisInterop, OurRespondersAnswerIoredis) {
  REQUIRE_INTEROP("MARTY_REDIS_URL");
  testing::check_we_answer_their_queries(redis_target());
}

TEST(RedisInterop, WeReadThePythonOriginalsEnvelope) {
  REQUIRE_INTEROP("MARTY_REDIS_URL");
  testing::check_we_read_python_envelopes(redis_target());
}

TEST(RedisInterop, IoredisReadsOurPythonEnvelopeRoute) {
  REQUIRE_INTEROP("MARTY_REDIS_URL");
  testing::check_they_read_our_python_envelopes(redis_target());
}

}  // namespace
}  // namespace marty::messaging
