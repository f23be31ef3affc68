#pragma once

#include <chrono>
#include <system_error>

#include <asio/awaitable.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

namespace marty::messaging::detail {

/// Suspends the calling coroutine for `duration` on its own executor. A cancelled timer (the
/// executor shutting down) ends the wait early rather than throwing.
inline asio::awaitable<void> sleep_for(std::chrono::milliseconds duration) {
  asio::steady_timer timer(co_await asio::this_coro::executor, duration);
  std::error_code ignored;
  co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
}

}  // namespace marty::messaging::detail
