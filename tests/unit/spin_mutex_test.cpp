#include <gtest/gtest.h>

#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "marty/messaging/detail/spin_mutex.hpp"

namespace marty::messaging::detail {
namespace {

// Mutual exclusion under contention: a plain counter guarded by the lock ends exact. Some
// holders keep the lock long enough (a millisecond) for waiters to give up spinning and
// sleep, so that the sleeping path and its wake-up run too.
TEST(SpinMutexTest, ExcludesAndWakesSleepers) {
  SpinMutex mutex;
  long counter = 0;
  constexpr int kThreads = 4;
  constexpr int kRounds = 20'000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < kRounds; ++round) {
        std::lock_guard lock(mutex);
        ++counter;
        if (t == 0 && round % 2'000 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(counter, long{kThreads} * kRounds);
}

TEST(SpinMutexTest, TryLockFailsWhileHeld) {
  SpinMutex mutex;
  ASSERT_TRUE(mutex.try_lock());
  std::thread other([&] { EXPECT_FALSE(mutex.try_lock()); });
  other.join();
  mutex.unlock();
  EXPECT_TRUE(mutex.try_lock());
  mutex.unlock();
}

}  // namespace
}  // namespace marty::messaging::detail
