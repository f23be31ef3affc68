// The circuit breaker's states: closed, open for its time, half-open with a single probe.
#include <gtest/gtest.h>

#include "marty/messaging/detail/circuit_breaker.hpp"

namespace marty::messaging::detail {
namespace {

using namespace std::chrono_literals;
using State = CircuitBreaker::State;

TEST(CircuitBreaker, OpensAfterTheThresholdOfFailuresInARow) {
  CircuitBreaker breaker(3, 1s);
  const auto t0 = CircuitBreaker::Clock::now();
  EXPECT_FALSE(breaker.record(false, t0));
  EXPECT_FALSE(breaker.record(false, t0));
  EXPECT_FALSE(breaker.record(true, t0));  // a success resets the count
  EXPECT_FALSE(breaker.record(false, t0));
  EXPECT_FALSE(breaker.record(false, t0));
  EXPECT_EQ(breaker.admit(t0), CircuitBreaker::Clock::duration::zero());
  EXPECT_TRUE(breaker.record(false, t0));
  EXPECT_EQ(breaker.state(), State::open);
  EXPECT_EQ(breaker.admit(t0 + 400ms), 600ms);
}

TEST(CircuitBreaker, HalfOpenLetsOneProbeThrough) {
  CircuitBreaker breaker(1, 1s);
  const auto t0 = CircuitBreaker::Clock::now();
  ASSERT_TRUE(breaker.record(false, t0));
  EXPECT_EQ(breaker.admit(t0 + 1s), CircuitBreaker::Clock::duration::zero());  // the probe
  EXPECT_EQ(breaker.state(), State::half_open);
  EXPECT_GT(breaker.admit(t0 + 1s), CircuitBreaker::Clock::duration::zero());  // others wait
  // The probe fails: open again, for the whole time.
  EXPECT_TRUE(breaker.record(false, t0 + 2s));
  EXPECT_EQ(breaker.admit(t0 + 2s), 1s);
  // The next probe succeeds: closed, everyone through.
  EXPECT_EQ(breaker.admit(t0 + 3s), CircuitBreaker::Clock::duration::zero());
  EXPECT_FALSE(breaker.record(true, t0 + 3s));
  EXPECT_EQ(breaker.state(), State::closed);
  EXPECT_EQ(breaker.admit(t0 + 3s), CircuitBreaker::Clock::duration::zero());
}

TEST(CircuitBreaker, ABadMessageAsProbeLetsTheNextOneProbe) {
  CircuitBreaker breaker(1, 1s);
  const auto t0 = CircuitBreaker::Clock::now();
  ASSERT_TRUE(breaker.record(false, t0));
  EXPECT_EQ(breaker.admit(t0 + 1s), CircuitBreaker::Clock::duration::zero());
  breaker.record_neutral();
  EXPECT_EQ(breaker.state(), State::half_open);
  EXPECT_EQ(breaker.admit(t0 + 1s), CircuitBreaker::Clock::duration::zero());
}

}  // namespace
}  // namespace marty::messaging::detail
