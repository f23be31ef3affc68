#pragma once

#include <memory>

#include "marty/messaging/idempotency.hpp"
#include "marty/messaging/redis_backend.hpp"

/// The idempotency store on Redis: link `marty::messaging_redis`.
namespace marty::messaging::redis {

/// Keys shared by every instance of a service: a claim is one atomic script (a key is taken only
/// when absent, with an expiry of the lease: `SET NX PX` semantics), completion rewrites it with
/// the keep_for expiry, and Redis expires what is forgotten. Keys are
/// `<key_prefix>idempotency:<key>`. Uses the connection fields and `key_prefix` of RedisConfig.
/// Thread-safe; a lost connection is re-established (calls meanwhile wait up to
/// `outage_wait`, then fail with `unavailable`).
class RedisIdempotencyStore final : public IdempotencyStore {
 public:
  /// Connects and waits until the connection is ready: `unauthenticated` for refused
  /// credentials, `unavailable` when Redis cannot be reached, `invalid_argument` for a bad
  /// config field (named).
  static asio::awaitable<Result<std::shared_ptr<RedisIdempotencyStore>>> connect(
      RedisConfig config);
  ~RedisIdempotencyStore() override;

  asio::awaitable<Result<IdempotencyClaim>> claim(std::string key,
                                                  std::chrono::milliseconds lease) override;
  asio::awaitable<Result<void>> complete(std::string key, std::string token, std::string result,
                                         std::chrono::milliseconds keep_for) override;
  asio::awaitable<Result<void>> release(std::string key, std::string token) override;
  asio::awaitable<Result<std::optional<std::string>>> find(std::string key) override;

  struct State;  // public only so that the implementation can name it

 private:
  explicit RedisIdempotencyStore(std::shared_ptr<State> state);
  std::shared_ptr<State> state_;
};

}  // namespace marty::messaging::redis
