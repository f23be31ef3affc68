#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <system_error>
#include <utility>

#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

namespace marty::messaging::detail {

/// Hands a coroutine its result from any thread, once: calls after the first are ignored.
template <class T>
using Complete = std::function<void(T)>;

namespace completion_detail {

template <class T, class Handler>
struct State {
  explicit State(Handler h) : handler(std::move(h)) {}
  Handler handler;
  std::optional<asio::steady_timer> timer;
  std::atomic<bool> done{false};

  static void complete(const std::shared_ptr<State>& self, T value) {
    if (self->done.exchange(true)) return;
    auto executor = asio::get_associated_executor(self->handler);
    asio::post(executor, [self, value = std::move(value)]() mutable {
      if (self->timer) self->timer->cancel();  // on the waiter's executor, like the wait
      std::move(self->handler)(std::move(value));
    });
  }
};

}  // namespace completion_detail

/// Suspends the calling coroutine and calls `start(complete)` at once, on the calling thread;
/// the coroutine resumes on its own executor with the first value passed to `complete`, which
/// may be called from any thread (a client library's callback), before or after `start`
/// returns. When `deadline` passes first, it resumes with `on_deadline` instead (a later
/// completion is dropped). This is how the broker backends await their client libraries'
/// callbacks.
///
/// Lifetime: once `start` has handed `complete` to anything that may call it, the awaiting
/// coroutine may already have resumed on another thread and its frame may be gone. `start` is
/// called as a copy on the calling thread's stack, so its own captures stay valid until it
/// returns, but it must own what it touches after that point: a pointer or reference into the
/// awaiting frame is a use after free (a captured `&local` written after the hand-off was one).
///
/// Not a coroutine itself. With GCC 12, name `start` before the `co_await` (docs/decisions/0001).
template <class T, class Start>
asio::awaitable<T> await_completion(Start start, std::chrono::steady_clock::time_point deadline,
                                    T on_deadline) {
  auto initiate = [start = std::move(start), deadline,
                   on_deadline = std::move(on_deadline)](auto handler) mutable {
    using State = completion_detail::State<T, decltype(handler)>;
    auto state = std::make_shared<State>(std::move(handler));
    if (deadline != std::chrono::steady_clock::time_point::max()) {
      state->timer.emplace(asio::get_associated_executor(state->handler), deadline);
      state->timer->async_wait(
          [state, late = std::move(on_deadline)](const std::error_code& ec) mutable {
            if (!ec) State::complete(state, std::move(late));
          });
    }
    Complete<T> complete = [state](T value) { State::complete(state, std::move(value)); };
    Start on_this_stack = std::move(start);  // the initiation may be freed with the frame
    on_this_stack(std::move(complete));
  };
  return asio::async_initiate<const asio::use_awaitable_t<>&, void(T)>(std::move(initiate),
                                                                       asio::use_awaitable);
}

/// The same without a deadline.
template <class T, class Start>
asio::awaitable<T> await_completion(Start start) {
  auto initiate = [start = std::move(start)](auto handler) mutable {
    using State = completion_detail::State<T, decltype(handler)>;
    auto state = std::make_shared<State>(std::move(handler));
    Complete<T> complete = [state](T value) { State::complete(state, std::move(value)); };
    Start on_this_stack = std::move(start);  // the initiation may be freed with the frame
    on_this_stack(std::move(complete));
  };
  return asio::async_initiate<const asio::use_awaitable_t<>&, void(T)>(std::move(initiate),
                                                                       asio::use_awaitable);
}

}  // namespace marty::messaging::detail
