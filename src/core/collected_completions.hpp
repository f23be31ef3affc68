#pragma once
// A CompletionSink that gathers the completions of a known number of submitted records for one
// waiting coroutine (internal: the bus's batched publishes).
#include <algorithm>
#include <cstddef>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>

#include "marty/messaging/backend.hpp"
#include "marty/messaging/detail/async_signal.hpp"

namespace marty::messaging::detail {

class CollectedCompletions final : public CompletionSink {
 public:
  CollectedCompletions(asio::any_io_executor executor, std::size_t expected)
      : executor_(std::move(executor)), remaining_(expected) {
    completions_.reserve(expected);
  }

  void on_complete(std::span<Completion> completions) override {
    bool all_in = false;
    {
      std::lock_guard lock(mutex_);
      for (Completion& completion : completions) completions_.push_back(std::move(completion));
      remaining_ -= std::min(remaining_, completions.size());
      all_in = remaining_ == 0;
    }
    if (all_in) all_in_->notify();
  }
  asio::any_io_executor executor() const override { return executor_; }

  /// Waits until every expected record has completed; returns their completions (in the order
  /// they came). One waiter, once.
  asio::awaitable<std::vector<Completion>> all() {
    while (true) {
      {
        std::lock_guard lock(mutex_);
        if (remaining_ == 0) co_return std::move(completions_);
      }
      co_await all_in_->wait();
    }
  }

 private:
  const asio::any_io_executor executor_;
  std::mutex mutex_;
  std::size_t remaining_;
  std::vector<Completion> completions_;
  std::shared_ptr<AsyncSignal> all_in_ = AsyncSignal::create();
};

}  // namespace marty::messaging::detail
