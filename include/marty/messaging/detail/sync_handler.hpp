#pragma once

#include <functional>
#include <utility>

#include <asio/awaitable.hpp>

#include "marty/messaging/message.hpp"
#include "marty/messaging/result.hpp"

namespace marty::messaging::detail {

/// What sync_handler() makes: a MessageHandler the bus recognises (std::function::target), so
/// that it calls `fn` directly, in a loop over a batch of deliveries, with no coroutine frame
/// per message. Called as a MessageHandler (by anyone else), it behaves as one.
struct SyncMessageCall {
  std::function<Result<void>(const Message&)> fn;

  asio::awaitable<Result<void>> operator()(Message message) const { co_return fn(message); }
};

}  // namespace marty::messaging::detail
