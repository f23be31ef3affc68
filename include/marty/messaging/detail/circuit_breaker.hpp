#pragma once

#include <chrono>
#include <cstddef>
#include <mutex>

/// The circuit breaker of one handler registration (HandlerOptions::circuit_breaker), shared
/// by its workers. Closed: deliveries flow. After `threshold` handler failures in a row it
/// opens: the workers take no deliveries for `open_for` (the messages wait at the broker, their
/// retry budget untouched). Then it is half-open: one delivery is let through as a probe; its
/// success closes the circuit, its failure opens it again. Thread-safe.
namespace marty::messaging::detail {

class CircuitBreaker {
 public:
  using Clock = std::chrono::steady_clock;
  enum class State { closed, open, half_open };

  CircuitBreaker(std::size_t threshold, std::chrono::milliseconds open_for)
      : threshold_(threshold), open_for_(open_for) {}

  /// Asked before a worker takes a delivery: zero when it may; otherwise how long to wait
  /// before asking again. An open circuit whose time is up becomes half-open and admits the
  /// one asker that gets there first (the probe); others wait until the probe is settled.
  Clock::duration admit(Clock::time_point now) {
    std::lock_guard lock(mutex_);
    switch (state_) {
      case State::closed:
        return Clock::duration::zero();
      case State::open:
        if (now < reopens_at_) return reopens_at_ - now;
        state_ = State::half_open;
        probing_ = true;
        return Clock::duration::zero();
      case State::half_open:
        if (!probing_) {
          probing_ = true;
          return Clock::duration::zero();
        }
        return kProbeWait;
    }
    return Clock::duration::zero();
  }

  /// The outcome of a handler call. Returns true when this failure opened the circuit.
  bool record(bool success, Clock::time_point now) {
    std::lock_guard lock(mutex_);
    if (success) {
      failures_ = 0;
      state_ = State::closed;
      probing_ = false;
      return false;
    }
    ++failures_;
    if (state_ == State::half_open || (state_ == State::closed && failures_ >= threshold_)) {
      state_ = State::open;
      probing_ = false;
      reopens_at_ = now + open_for_;
      return true;
    }
    return false;
  }

  /// A call that says nothing about what the handler depends on (a bad message): a probe
  /// that ends so lets the next delivery probe instead.
  void record_neutral() {
    std::lock_guard lock(mutex_);
    if (state_ == State::half_open) probing_ = false;
  }

  State state() const {
    std::lock_guard lock(mutex_);
    return state_;
  }
  std::chrono::milliseconds open_for() const { return open_for_; }

 private:
  static constexpr Clock::duration kProbeWait = std::chrono::milliseconds(20);

  const std::size_t threshold_;
  const std::chrono::milliseconds open_for_;
  mutable std::mutex mutex_;
  State state_ = State::closed;
  std::size_t failures_ = 0;  // in a row
  bool probing_ = false;      // half-open: the probe is out
  Clock::time_point reopens_at_{};
};

}  // namespace marty::messaging::detail
