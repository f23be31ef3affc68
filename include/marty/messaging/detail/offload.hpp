#pragma once

#include <type_traits>
#include <utility>

#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/awaitable.hpp>
#include <asio/post.hpp>
#include <asio/thread_pool.hpp>
#include <asio/use_awaitable.hpp>

namespace marty::messaging::detail {

/// Runs `work` (a blocking call into a client library) on `pool` and resumes the awaiting
/// coroutine on its own executor with the result, so a blocking client never stalls the bus's
/// executor. `work` must not throw. The pool must outlive the call.
///
/// With GCC 12, name the lambda before the `co_await` and move it in: a capturing lambda written
/// as a temporary inside the `co_await` expression is destroyed once too often
/// (docs/decisions/0001).
template <class Work>
auto offload(asio::thread_pool& pool, Work work) -> asio::awaitable<std::invoke_result_t<Work&>> {
  using Value = std::invoke_result_t<Work&>;
  auto initiate = [&pool, work = std::move(work)](auto handler) mutable {
    asio::post(pool, [work = std::move(work), handler = std::move(handler)]() mutable {
      Value value = work();
      auto executor = asio::get_associated_executor(handler);
      asio::post(executor, [handler = std::move(handler), value = std::move(value)]() mutable {
        std::move(handler)(std::move(value));
      });
    });
  };
  return asio::async_initiate<const asio::use_awaitable_t<>&, void(Value)>(std::move(initiate),
                                                                           asio::use_awaitable);
}

}  // namespace marty::messaging::detail
