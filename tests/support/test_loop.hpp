#pragma once

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <future>
#include <thread>

#include <asio/co_spawn.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>

namespace marty::messaging::testing {

/// An io_context run by one background thread; tests drive coroutines on it and wait.
class TestLoop {
 public:
  TestLoop() : work_(asio::make_work_guard(io_)), thread_([this] { io_.run(); }) {}
  ~TestLoop() {
    work_.reset();
    io_.stop();
    thread_.join();
  }

  asio::io_context& context() { return io_; }
  asio::any_io_executor executor() { return io_.get_executor(); }

  /// Runs `operation` on the loop and returns its value. A hang is a test failure that cannot
  /// be recovered (the coroutine still references the test's objects), so it aborts loudly.
  template <class T>
  T run(asio::awaitable<T> operation, std::chrono::seconds limit = std::chrono::seconds(60)) {
    auto future = asio::co_spawn(io_, std::move(operation), asio::use_future);
    if (future.wait_for(limit) != std::future_status::ready) {
      std::fprintf(stderr, "TestLoop::run: operation did not finish within %llds\n",
                   static_cast<long long>(limit.count()));
      std::abort();
    }
    return future.get();
  }

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::thread thread_;
};

/// Polls `done` until it holds or `limit` passes; returns its last value.
inline bool eventually(const std::function<bool()>& done,
                       std::chrono::milliseconds limit = std::chrono::milliseconds(10'000)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return done();
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

/// Suspends the calling coroutine for `duration`.
inline asio::awaitable<void> async_sleep(std::chrono::milliseconds duration) {
  asio::steady_timer timer(co_await asio::this_coro::executor, duration);
  co_await timer.async_wait(asio::use_awaitable);
}

}  // namespace marty::messaging::testing
