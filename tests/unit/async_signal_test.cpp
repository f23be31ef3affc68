#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include <asio/detached.hpp>

#include "../support/test_loop.hpp"
#include "marty/messaging/detail/async_signal.hpp"

namespace marty::messaging::detail {
namespace {

using namespace std::chrono_literals;
using Steady = std::chrono::steady_clock;

TEST(AsyncSignalTest, NotifyBeforeWaitIsRemembered) {
  testing::TestLoop loop;
  auto signal = AsyncSignal::create();
  signal->notify();
  EXPECT_TRUE(loop.run(signal->wait(Steady::now() + 1s)));
  EXPECT_FALSE(loop.run(signal->wait(Steady::now() + 10ms)));  // consumed
}

TEST(AsyncSignalTest, NotifyFromAnotherThreadWakesTheWaiter) {
  testing::TestLoop loop;
  auto signal = AsyncSignal::create();
  std::thread notifier([&] {
    std::this_thread::sleep_for(20ms);
    signal->notify();
  });
  EXPECT_TRUE(loop.run(signal->wait()));
  notifier.join();
}

// Stress: deadlines that expire while the waiting coroutine is still suspending, on an
// io_context run by two threads; every wait must end (a lost deadline would hang it). An
// earlier design lost about one wait in 20,000 here, so this catches such races only sometimes.
TEST(AsyncSignalTest, ShortDeadlinesOnAMultiThreadedContextAlwaysFire) {
  asio::io_context io;
  auto work = asio::make_work_guard(io);
  std::thread a([&] { io.run(); });
  std::thread b([&] { io.run(); });
  constexpr int kWaits = 20000;
  std::atomic<int> finished{0};
  for (int i = 0; i < kWaits; ++i) {
    asio::co_spawn(
        io,
        [&finished, i]() -> asio::awaitable<void> {
          auto signal = AsyncSignal::create();
          (void)co_await signal->wait(Steady::now() + std::chrono::microseconds(1 + i % 20));
          ++finished;
        },
        asio::detached);
  }
  const bool all = testing::eventually([&] { return finished.load() == kWaits; }, 20s);
  work.reset();
  io.stop();
  a.join();
  b.join();
  EXPECT_TRUE(all) << finished.load() << " of " << kWaits << " waits ended";
}

}  // namespace
}  // namespace marty::messaging::detail
