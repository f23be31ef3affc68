#pragma once
// Checks the broker backends' integration tests share.
#include <gtest/gtest.h>

#include <memory>
#include <mutex>
#include <set>
#include <string_view>

#include "marty/messaging.hpp"
#include "test_loop.hpp"

namespace marty::messaging::testing {

/// Connects `backend` on a loop of its own, closes it, and returns how connect() went.
inline Result<void> connect_result(std::shared_ptr<Backend> backend) {
  TestLoop loop;
  auto connected = loop.run(backend->connect());
  (void)loop.run(backend->close(SteadyClock::now() + std::chrono::seconds(2)));
  return connected;
}

/// connect() must refuse `backend`'s configuration with `invalid_argument` naming `field`.
inline void expect_invalid_config(std::shared_ptr<Backend> backend, std::string_view field) {
  const auto result = connect_result(std::move(backend));
  ASSERT_FALSE(result) << "accepted a config with a bad " << field;
  EXPECT_TRUE(result.error().is(errc::invalid_argument)) << result.error().describe();
  EXPECT_NE(result.error().message().find(field), std::string::npos) << result.error().describe();
}

/// Thread-safe record of the numbers (the JSON member "n") a handler saw.
class NumbersSeen {
 public:
  void add(int n) {
    std::lock_guard lock(mutex_);
    numbers_.insert(n);
  }
  std::size_t distinct() const {
    std::lock_guard lock(mutex_);
    return numbers_.size();
  }
  std::set<int> numbers() const {
    std::lock_guard lock(mutex_);
    return numbers_;
  }
  MessageHandler handler() {
    return sync_handler([this](const Message& m) -> Result<void> {
      add(m.json()["n"].get<int>());
      return ok();
    });
  }

 private:
  mutable std::mutex mutex_;
  std::set<int> numbers_;
};

}  // namespace marty::messaging::testing
