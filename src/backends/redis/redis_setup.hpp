#pragma once
// What the Redis backend and the Redis idempotency store share: the io threads, the
// configuration's checks, and error replies as errors.
#include <atomic>
#include <cstdlib>
#include <memory>
#include <string_view>
#include <thread>
#include <vector>

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>

#include "marty/messaging/redis_backend.hpp"
#include "redis_connection.hpp"

namespace marty::messaging::redis {

/// The io threads every Redis connection of the process runs on, started on first use and
/// stopped at exit. Each connection stays on one thread (hiredis contexts are single-threaded);
/// connections are spread over the threads in turn.
class IoPool {
 public:
  static IoPool& instance() {
    static IoPool* pool = [] {
      auto* p = new IoPool(2);
      std::atexit([] { instance().stop(); });
      return p;
    }();
    return *pool;
  }
  asio::io_context& next() {
    return *contexts_[next_.fetch_add(1, std::memory_order_relaxed) % contexts_.size()];
  }

 private:
  explicit IoPool(std::size_t threads) {
    for (std::size_t i = 0; i < threads; ++i) {
      contexts_.push_back(std::make_unique<asio::io_context>(1));
      guards_.emplace_back(asio::make_work_guard(*contexts_.back()));
    }
    for (auto& context : contexts_) threads_.emplace_back([&context] { context->run(); });
  }
  void stop() {
    guards_.clear();
    for (auto& context : contexts_) context->stop();
    for (auto& thread : threads_) {
      if (thread.joinable()) thread.join();
    }
  }

  std::vector<std::unique_ptr<asio::io_context>> contexts_;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards_;
  std::vector<std::thread> threads_;
  std::atomic<std::size_t> next_{0};
};

/// Applies `config.url` to the other fields (`invalid_argument` naming the field when bad).
Result<void> apply_url(RedisConfig& config);
/// Checks every field; `invalid_argument` naming the first bad one.
Result<void> validate(const RedisConfig& config);
/// The connection settings of a (url-applied, validated) config.
ConnectionOptions connection_options_for(const RedisConfig& config);

/// The error of a Redis error reply's code ("NOPERM", "OOM", "LOADING").
errc code_for_error_reply(std::string_view code);
/// A reply as a result: error replies become errors naming `what`.
Result<Reply> checked(ReplyResult result, std::string_view what);

}  // namespace marty::messaging::redis
