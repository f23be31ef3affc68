#pragma once

#include <atomic>
#include <cstdint>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace marty::messaging::detail {

/// A mutex that spins briefly before it sleeps: for locks held for well under a microsecond
/// and taken from two threads at a high rate (an in-process broker's hand-off). There a plain
/// mutex puts the loser to sleep in the kernel, and the sleep and wake-up cost both threads far
/// more than the wait would have. Meets the Lockable requirements.
///
/// While spinning it only reads the lock word (test and test-and-set), so that the waiter does
/// not pull the cache line away from the holder with a write on every look; after kSpins looks
/// it marks the lock contended and sleeps on it (a futex through std::atomic::wait), and an
/// unlock wakes a sleeper only when one may be there.
class SpinMutex {
 public:
  void lock() {
    if (try_lock()) return;
    for (int look = 0; look < kSpins; ++look) {
      relax();
      if (state_.load(std::memory_order_relaxed) == kFree && try_lock()) return;
    }
    while (state_.exchange(kContended, std::memory_order_acquire) != kFree) {
      state_.wait(kContended, std::memory_order_relaxed);
    }
  }
  bool try_lock() {
    std::uint32_t expected = kFree;
    return state_.compare_exchange_strong(expected, kLocked, std::memory_order_acquire,
                                          std::memory_order_relaxed);
  }
  void unlock() {
    if (state_.exchange(kFree, std::memory_order_release) == kContended) state_.notify_one();
  }

 private:
  static constexpr int kSpins = 200;
  static constexpr std::uint32_t kFree = 0, kLocked = 1, kContended = 2;  // contended: may sleep
  static void relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#endif
  }
  std::atomic<std::uint32_t> state_{kFree};
};

}  // namespace marty::messaging::detail
