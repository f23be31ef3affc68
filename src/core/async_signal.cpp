#include "marty/messaging/detail/async_signal.hpp"

#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

namespace marty::messaging::detail {

namespace {

template <class Handler>
class WaiterImpl final : public AsyncSignal::Waiter {
 public:
  explicit WaiterImpl(Handler handler) : handler_(std::move(handler)) {}
  void post(bool notified) override {
    auto executor = asio::get_associated_executor(handler_);
    asio::post(executor, [handler = std::move(handler_), notified]() mutable {
      std::move(handler)(notified);
    });
  }

 private:
  Handler handler_;
};

}  // namespace

void AsyncSignal::notify() {
  // Lock-free when a notification is pending already, as it stays while a busy receiver keeps
  // finding work without waiting: then a publisher pays no lock per message for the wake-up.
  // Sequentially consistent, like the waiter's clearing of the flag before it re-checks its
  // condition: either the waiter sees the condition or this call sees the flag cleared.
  if (pending_.load()) return;
  std::unique_ptr<Waiter> waiter;
  {
    std::lock_guard lock(mutex_);
    if (waiter_) {
      waiter = std::move(waiter_);
      ++generation_;
    } else {
      pending_.store(true, std::memory_order_release);
    }
  }
  if (waiter) waiter->post(true);
}

void AsyncSignal::complete(std::uint64_t generation, bool notified) {
  std::unique_ptr<Waiter> waiter;
  {
    std::lock_guard lock(mutex_);
    if (generation != generation_ || !waiter_) return;  // that wait already ended
    waiter = std::move(waiter_);
    ++generation_;
  }
  waiter->post(notified);
}

asio::awaitable<bool> AsyncSignal::wait(
    std::optional<std::chrono::steady_clock::time_point> deadline) {
  auto self = shared_from_this();
  {
    std::lock_guard lock(mutex_);
    if (pending_.load(std::memory_order_relaxed)) {
      pending_.store(false);
      co_return true;
    }
  }
  if (deadline && *deadline <= std::chrono::steady_clock::now()) co_return false;

  auto executor = co_await asio::this_coro::executor;
  std::optional<asio::steady_timer> timer;
  if (deadline) timer.emplace(executor, *deadline);
  // Registers the waiter and only then arms the timer, both under the mutex: the timer cannot
  // fire before there is a waiter to complete, and notify() cannot complete the waiter (and so
  // resume this coroutine, which destroys the timer) before the timer is armed.
  auto initiate = [self, timer = timer ? &*timer : nullptr](auto handler) {
    using Handler = decltype(handler);
    std::unique_lock lock(self->mutex_);
    if (self->pending_.load(std::memory_order_relaxed)) {
      self->pending_.store(false);
      lock.unlock();
      WaiterImpl<Handler>(std::move(handler)).post(true);
      return;
    }
    self->waiter_ = std::make_unique<WaiterImpl<Handler>>(std::move(handler));
    if (timer) {
      timer->async_wait([self, generation = self->generation_](std::error_code ec) {
        if (!ec) self->complete(generation, false);
      });
    }
  };
  const bool notified = co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(bool)>(
      std::move(initiate), asio::use_awaitable);
  if (timer) timer->cancel();
  co_return notified;
}

}  // namespace marty::messaging::detail
