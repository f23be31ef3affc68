#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>

#include <asio/awaitable.hpp>

namespace marty::messaging::detail {

/// A wake-up point for one waiting coroutine at a time, notified from any thread.
///
/// notify() before wait() is remembered, so the usual pattern is race-free:
///   lock state; if (ready) take it; else register this signal as a waiter; unlock;
///   co_await signal->wait(deadline); loop.
/// Spurious wake-ups are possible (a stale notification); callers re-check their condition.
/// The notifier must make its change visible before notify(): under a lock the waiter also
/// takes to check it, or through a sequentially consistent atomic.
/// Completion is posted to the waiting coroutine's executor, never run on the notifier's thread.
class AsyncSignal : public std::enable_shared_from_this<AsyncSignal> {
 public:
  static std::shared_ptr<AsyncSignal> create() { return std::make_shared<AsyncSignal>(); }

  /// Wakes the waiter, or makes the next wait() return at once.
  void notify();

  /// Returns true when notified, false when `deadline` passed first.
  asio::awaitable<bool> wait(
      std::optional<std::chrono::steady_clock::time_point> deadline = std::nullopt);

  /// The parked coroutine's completion handler, type-erased (it is move-only).
  class Waiter {
   public:
    virtual ~Waiter() = default;
    /// Posts the completion to the handler's own executor.
    virtual void post(bool notified) = 0;
  };

 private:
  void complete(std::uint64_t generation, bool notified);

  std::mutex mutex_;
  // Written under mutex_; read without it by notify()'s fast path: a notification already
  // pending makes another one redundant (the waiter re-checks its condition after waking).
  std::atomic<bool> pending_{false};
  // Counts completed waits, so a timer of an earlier wait cannot end a later one.
  std::uint64_t generation_ = 0;
  std::unique_ptr<Waiter> waiter_;
};

}  // namespace marty::messaging::detail
