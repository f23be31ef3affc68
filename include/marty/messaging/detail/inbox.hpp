#pragma once

#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include <asio/awaitable.hpp>

#include "marty/messaging/detail/async_signal.hpp"
#include "marty/messaging/result.hpp"

namespace marty::messaging::detail {

/// The next item of a pull subscription's queue, as every broker backend's receive() takes it:
/// under `*mutex`, `cancelled` once `*closed` is set, else the front of `*queue`; with nothing
/// there, a wait on `*arrived` until `deadline` (`deadline_exceeded` then). Whoever queues an
/// item or sets `closed` does so under `*mutex` and notifies `*arrived`. Errors name `backend`.
/// The pointed-to objects must outlive the call (they belong to the subscription's consumer).
template <class Queue>
asio::awaitable<Result<typename Queue::value_type>> take_next(
    std::mutex* mutex, Queue* queue, const bool* closed, AsyncSignal* arrived,
    std::optional<std::chrono::steady_clock::time_point> deadline, std::string_view backend) {
  while (true) {
    {
      std::lock_guard lock(*mutex);
      if (*closed) co_return Error(errc::cancelled, "subscription closed", std::string(backend));
      if (!queue->empty()) {
        typename Queue::value_type item = std::move(queue->front());
        queue->pop_front();
        co_return item;
      }
    }
    if (!co_await arrived->wait(deadline)) {
      co_return Error(errc::deadline_exceeded, "no message before the deadline",
                      std::string(backend));
    }
  }
}

}  // namespace marty::messaging::detail
