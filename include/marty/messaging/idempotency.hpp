#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <asio/awaitable.hpp>

#include "marty/messaging/event_bus.hpp"
#include "marty/messaging/message.hpp"
#include "marty/messaging/result.hpp"

/// Idempotent consumers: at-least-once delivery plus a memory of what was handled, so that a
/// message delivered twice (a redelivery after a lost ack, a publisher's retry) takes effect
/// once. The memory is an IdempotencyStore: in this process (make_memory_idempotency_store),
/// on disk (SqliteIdempotencyStore, `marty::messaging_sqlite`) or shared by every instance of
/// a service (RedisIdempotencyStore, `marty::messaging_redis`).
namespace marty::messaging {

/// What claim() found.
struct IdempotencyClaim {
  IdempotencyClaim() {}  // NOLINT(modernize-use-equals-default): not an aggregate (GCC 12)
  enum class Status {
    claimed,      ///< nobody had the key: the caller does the work, then complete() or release()
    in_progress,  ///< another claim holds it and its lease has not run out
    done,         ///< completed within its keep_for: `result` is what complete() stored
  };
  Status status = Status::claimed;
  /// claimed: proves the claim to complete() and release().
  std::string token;
  /// done: the stored result (empty when none was given).
  std::string result;
};

/// Remembers keys of work done. Keys are opaque text (the middleware makes them
/// "<scope>/<message id>").
///
/// Contract: claim() is atomic (of two concurrent claims of a free key, one gets `claimed`);
/// a claim lasts `lease`, after which the key is free again (its holder crashed or hung);
/// complete() turns the key into `done` for `keep_for`, whoever holds it (the work was done);
/// release() frees the key only if `token` still holds it. Errors: `unavailable` when the
/// store cannot be reached (retryable), `invalid_argument` for an empty key or a non-positive
/// duration. Threading: every member may be called from any thread.
class IdempotencyStore {
 public:
  virtual ~IdempotencyStore() = default;
  virtual asio::awaitable<Result<IdempotencyClaim>> claim(std::string key,
                                                          std::chrono::milliseconds lease) = 0;
  virtual asio::awaitable<Result<void>> complete(std::string key, std::string token,
                                                 std::string result,
                                                 std::chrono::milliseconds keep_for) = 0;
  virtual asio::awaitable<Result<void>> release(std::string key, std::string token) = 0;
  /// The stored result of a done key; nullopt when the key is free or claimed.
  virtual asio::awaitable<Result<std::optional<std::string>>> find(std::string key) = 0;
};

/// A store in this process's memory, bounded: beyond `max_keys` keys, the done keys closest
/// to expiring are forgotten first (claims are never dropped). Lost with the process.
std::shared_ptr<IdempotencyStore> make_memory_idempotency_store(std::size_t max_keys = 1'000'000);

/// Checks the arguments every store takes alike; `operation` names the call in the error.
Result<void> check_idempotency_arguments(std::string_view operation, const std::string& key,
                                         std::chrono::milliseconds duration);

/// Not an aggregate on purpose (GCC 12 coroutine bug; see MessageMetadata).
struct IdempotencyOptions {
  IdempotencyOptions() {}  // NOLINT(modernize-use-equals-default)
  explicit IdempotencyOptions(std::string who) : scope(std::move(who)) {}
  /// Who deduplicates: two services that both handle an event must not share a scope (each
  /// must handle it once). Required; typically the service name, or "<service>/<handler>".
  std::string scope;
  /// How long a handled message is remembered: a duplicate arriving later is handled again.
  /// Make it longer than the longest redelivery or republish you expect.
  std::chrono::milliseconds keep_for{std::chrono::hours(24)};
  /// How long a handler may run holding its claim. A duplicate arriving meanwhile is retried
  /// later (the `aborted` error, so the pattern's backoff applies); after the lease, a claim
  /// whose holder crashed lets the message be handled again. Keep it above the handler's
  /// longest run.
  std::chrono::milliseconds lease{std::chrono::seconds(60)};
  /// The key within the scope; default: the message id. Return "" to handle a message without
  /// deduplication.
  std::function<std::string(const Message&)> key_of;
};

/// Wraps `handler` so that each message (by key, within the scope) is handled successfully at
/// most once while remembered: a repeat is acked without calling `handler`. A failed handling
/// releases its claim, so the redelivery runs it again. The store's own failures make the
/// message fail with a retryable error (it is redelivered; never lost, never handled twice on
/// that account). Fails with `invalid_argument` at once for an empty scope or a null store.
Result<MessageHandler> idempotent(MessageHandler handler, std::shared_ptr<IdempotencyStore> store,
                                  IdempotencyOptions options);

}  // namespace marty::messaging
