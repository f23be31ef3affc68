#include <exception>

#include <spdlog/spdlog.h>

#include "marty/messaging/detail/log.hpp"
#include "marty/messaging/idempotency.hpp"

namespace marty::messaging {
namespace {

using marty::messaging::detail::logger;

struct Deduplicator {
  MessageHandler handler;
  std::shared_ptr<IdempotencyStore> store;
  IdempotencyOptions options;

  // Claim, handle, remember; see idempotent(). Runs once per delivery.
  asio::awaitable<Result<void>> handle(Message message) {
    const std::string within = options.key_of ? options.key_of(message) : std::string(message.id());
    if (within.empty()) co_return co_await handler(std::move(message));
    const std::string key = options.scope + "/" + within;
    auto claimed = co_await store->claim(key, options.lease);
    if (!claimed) {
      // Not knowing whether it was handled, the message is neither handled nor dropped: a
      // retryable error sends it back for later.
      Error error = claimed.error();
      co_return Error(errc::unavailable,
                      "idempotency store: cannot claim '" + key + "': " + error.describe());
    }
    if (claimed->status == IdempotencyClaim::Status::done) {
      logger().debug("message {} on {} was handled already ({}); acknowledged without handling",
                     message.id(), message.subject(), key);
      co_return ok();
    }
    if (claimed->status == IdempotencyClaim::Status::in_progress) {
      co_return Error(errc::aborted, "message " + std::string(message.id()) + " on " +
                                         std::string(message.subject()) +
                                         " is being handled by another delivery ('" + key +
                                         "' is claimed); it is tried again later");
    }
    const std::string token = claimed->token;
    Result<void> outcome;
    std::exception_ptr thrown;
    try {
      outcome = co_await handler(std::move(message));
    } catch (...) {
      thrown = std::current_exception();
    }
    if (thrown || !outcome) {
      // Failed: the redelivery must run the handler again.
      auto released = co_await store->release(key, token);
      if (!released) {
        logger().warn(
            "idempotency store: releasing '{}' failed ({}); the retry waits for its "
            "lease to end",
            key, released.error().describe());
      }
      if (thrown) std::rethrow_exception(thrown);
      co_return outcome;
    }
    auto completed = co_await store->complete(key, token, std::string(), options.keep_for);
    if (!completed) {
      // The work is done and is acknowledged; only the memory of it is missing, so a duplicate
      // arriving after the lease would run it again. Said loudly.
      logger().error(
          "idempotency store: recording '{}' as handled failed ({}); a duplicate "
          "after {} ms would be handled again",
          key, completed.error().describe(), options.lease.count());
    }
    co_return ok();
  }
};

}  // namespace

Result<MessageHandler> idempotent(MessageHandler handler, std::shared_ptr<IdempotencyStore> store,
                                  IdempotencyOptions options) {
  if (!handler) return Error(errc::invalid_argument, "idempotent: the handler is empty");
  if (!store) return Error(errc::invalid_argument, "idempotent: the store is null");
  if (options.scope.empty()) {
    return Error(errc::invalid_argument,
                 "idempotent: IdempotencyOptions.scope is empty (name who deduplicates, e.g. the "
                 "service)");
  }
  if (options.keep_for.count() <= 0 || options.lease.count() <= 0) {
    return Error(errc::invalid_argument,
                 "idempotent: IdempotencyOptions.keep_for and lease must be positive");
  }
  auto state = std::make_shared<Deduplicator>();
  state->handler = std::move(handler);
  state->store = std::move(store);
  state->options = std::move(options);
  return MessageHandler([state](Message message) -> asio::awaitable<Result<void>> {
    co_return co_await state->handle(std::move(message));
  });
}

}  // namespace marty::messaging
