#pragma once

#include <mutex>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace marty::messaging::detail {

/// A std::mutex that spins briefly before it sleeps: for locks held for well under a
/// microsecond and taken from two threads at a high rate (an in-process broker's hand-off).
/// There a plain mutex puts the loser to sleep in the kernel, and the sleep and wake-up cost
/// both threads far more than the wait would have. Meets the Lockable requirements.
class SpinMutex {
 public:
  void lock() {
    for (int attempt = 0; attempt < kSpins; ++attempt) {
      if (mutex_.try_lock()) return;
      relax();
    }
    mutex_.lock();
  }
  bool try_lock() { return mutex_.try_lock(); }
  void unlock() { mutex_.unlock(); }

 private:
  static constexpr int kSpins = 200;
  static void relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#endif
  }
  std::mutex mutex_;
};

}  // namespace marty::messaging::detail
