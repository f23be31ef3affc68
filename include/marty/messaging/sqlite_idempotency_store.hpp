#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "marty/messaging/idempotency.hpp"

/// The idempotency store on SQLite (Debian's libsqlite3): link `marty::messaging_sqlite`.
namespace marty::messaging {

struct SqliteIdempotencyStoreOptions {
  SqliteIdempotencyStoreOptions() {}  // NOLINT(modernize-use-equals-default): GCC 12
  /// true: every claim and completion is on disk before it returns, even across a power loss
  /// (synchronous=FULL); false: it survives a crash of the process (synchronous=NORMAL).
  bool sync_to_disk = false;
  /// How long a write waits for another process holding the database's write lock.
  std::chrono::milliseconds busy_timeout{5'000};
};

/// Keys in one SQLite database file (WAL mode), shareable by the processes of one machine:
/// each claim is a transaction. Expiry uses the wall clock (shared by those processes).
/// Expired keys are deleted every 1000 writes, or by purge_expired(). Calls run on a small
/// process-wide thread pool, never on the caller's executor. Thread-safe.
class SqliteIdempotencyStore final : public IdempotencyStore,
                                     public std::enable_shared_from_this<SqliteIdempotencyStore> {
 public:
  /// Opens or creates the database at `path` (":memory:" for a private one). An error names
  /// the file and SQLite's reason.
  static Result<std::shared_ptr<SqliteIdempotencyStore>> open(
      const std::string& path, SqliteIdempotencyStoreOptions options);
  static Result<std::shared_ptr<SqliteIdempotencyStore>> open(const std::string& path);
  ~SqliteIdempotencyStore() override;

  asio::awaitable<Result<IdempotencyClaim>> claim(std::string key,
                                                  std::chrono::milliseconds lease) override;
  asio::awaitable<Result<void>> complete(std::string key, std::string token, std::string result,
                                         std::chrono::milliseconds keep_for) override;
  asio::awaitable<Result<void>> release(std::string key, std::string token) override;
  asio::awaitable<Result<std::optional<std::string>>> find(std::string key) override;

  /// Deletes the keys that have expired; returns how many. Blocking.
  Result<std::size_t> purge_expired();

  struct Database;  // public only so that the implementation can name it

 private:
  explicit SqliteIdempotencyStore(std::unique_ptr<Database> database);
  std::unique_ptr<Database> database_;
};

}  // namespace marty::messaging
