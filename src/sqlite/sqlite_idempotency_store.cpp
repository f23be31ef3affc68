#include "marty/messaging/sqlite_idempotency_store.hpp"

#include <asio/thread_pool.hpp>

#include "../sqlite/sqlite_database.hpp"
#include "marty/messaging/detail/offload.hpp"

namespace marty::messaging {
namespace {

using sqlite::Statement;

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS marty_idempotency (
  key TEXT PRIMARY KEY,
  done INTEGER NOT NULL,
  value TEXT NOT NULL,
  expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS marty_idempotency_by_expiry ON marty_idempotency (expires_at);
)sql";

// Writes between two deletions of expired keys.
constexpr int kPurgeEvery = 1000;

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch())
      .count();
}

// SQLite calls block; they run here. Process-wide and never destroyed: the last reference to
// a store may be dropped on one of these threads, and a pool cannot join itself.
asio::thread_pool& blocking_pool() {
  static auto* pool = new asio::thread_pool(2);
  return *pool;
}

struct Row {
  bool done = false;
  std::string value;
};

}  // namespace

struct SqliteIdempotencyStore::Database : sqlite::Database {
  sqlite3_stmt* read = nullptr;
  sqlite3_stmt* write = nullptr;
  sqlite3_stmt* remove = nullptr;
  sqlite3_stmt* purge = nullptr;
  int writes = 0;

  // With `mutex` held: the live row of `key`, if any.
  Result<std::optional<Row>> live_row(const std::string& key) {
    Statement select(read);
    select.bind(1, key);
    select.bind(2, now_ms());
    const int rc = select.step();
    if (rc == SQLITE_DONE) return std::optional<Row>();
    if (rc != SQLITE_ROW) return error(rc, "reading '" + key + "'");
    Row row;
    row.done = select.integer(0) != 0;
    row.value = select.text(1);
    return std::optional<Row>(std::move(row));
  }

  Result<void> put(const std::string& key, bool done, const std::string& value,
                   std::chrono::milliseconds ttl) {
    Statement insert(write);
    insert.bind(1, key);
    insert.bind(2, std::int64_t{done ? 1 : 0});
    insert.bind(3, value);
    insert.bind(4, now_ms() + ttl.count());
    if (const int rc = insert.step(); rc != SQLITE_DONE) {
      return error(rc, "writing '" + key + "'");
    }
    if (++writes >= kPurgeEvery) {
      writes = 0;
      (void)delete_expired();
    }
    return ok();
  }

  Result<std::size_t> delete_expired() {
    Statement drop(purge);
    drop.bind(1, now_ms());
    if (const int rc = drop.step(); rc != SQLITE_DONE) return error(rc, "deleting expired keys");
    return static_cast<std::size_t>(sqlite3_changes(sqlite3_db_handle(purge)));
  }
};

SqliteIdempotencyStore::SqliteIdempotencyStore(std::unique_ptr<Database> database)
    : database_(std::move(database)) {}

SqliteIdempotencyStore::~SqliteIdempotencyStore() = default;

Result<std::shared_ptr<SqliteIdempotencyStore>> SqliteIdempotencyStore::open(
    const std::string& path) {
  return open(path, SqliteIdempotencyStoreOptions());
}

Result<std::shared_ptr<SqliteIdempotencyStore>> SqliteIdempotencyStore::open(
    const std::string& path, SqliteIdempotencyStoreOptions options) {
  auto database = std::make_unique<Database>();
  sqlite::OpenOptions open_options;
  open_options.sync_to_disk = options.sync_to_disk;
  open_options.busy_timeout = options.busy_timeout;
  if (auto opened = database->open("idempotency store", path, open_options, kSchema); !opened) {
    return opened.error();
  }
  struct Prepared {
    sqlite3_stmt** into;
    const char* sql;
  };
  for (const Prepared& p : {
           Prepared{&database->read,
                    "SELECT done, value FROM marty_idempotency WHERE key = ?1 AND expires_at > ?2"},
           Prepared{&database->write,
                    "INSERT OR REPLACE INTO marty_idempotency (key, done, value, expires_at) "
                    "VALUES (?1, ?2, ?3, ?4)"},
           Prepared{&database->remove,
                    "DELETE FROM marty_idempotency WHERE key = ?1 AND done = 0 AND value = ?2"},
           Prepared{&database->purge, "DELETE FROM marty_idempotency WHERE expires_at <= ?1"},
       }) {
    auto stmt = database->prepare(p.sql);
    if (!stmt) return stmt.error();
    *p.into = *stmt;
  }
  return std::shared_ptr<SqliteIdempotencyStore>(new SqliteIdempotencyStore(std::move(database)));
}

asio::awaitable<Result<IdempotencyClaim>> SqliteIdempotencyStore::claim(
    std::string key, std::chrono::milliseconds lease) {
  if (auto valid = check_idempotency_arguments("claim", key, lease); !valid) {
    co_return std::move(valid).error();
  }
  auto self = shared_from_this();
  auto work = [self, key, lease]() -> Result<IdempotencyClaim> {
    Database& d = *self->database_;
    std::lock_guard lock(d.mutex);
    return d.write_transaction<IdempotencyClaim>(
        "claiming '" + key + "'", [&]() -> Result<IdempotencyClaim> {
          IdempotencyClaim found;
          auto row = d.live_row(key);
          if (!row) return std::move(row).error();
          if (*row) {
            found.status = (*row)->done ? IdempotencyClaim::Status::done
                                        : IdempotencyClaim::Status::in_progress;
            if ((*row)->done) found.result = (*row)->value;
            return found;
          }
          found.token = make_uuid_v7();
          if (auto put = d.put(key, false, found.token, lease); !put) {
            return std::move(put).error();
          }
          return found;
        });
  };
  co_return co_await detail::offload(blocking_pool(), std::move(work));
}

asio::awaitable<Result<void>> SqliteIdempotencyStore::complete(std::string key, std::string token,
                                                               std::string result,
                                                               std::chrono::milliseconds keep_for) {
  if (auto valid = check_idempotency_arguments("complete", key, keep_for); !valid) co_return valid;
  (void)token;  // the work was done, whoever holds the key now
  auto self = shared_from_this();
  auto work = [self, key, result = std::move(result), keep_for]() -> Result<void> {
    Database& d = *self->database_;
    std::lock_guard lock(d.mutex);
    return d.write_transaction<void>("completing '" + key + "'", [&]() -> Result<void> {
      auto row = d.live_row(key);
      if (!row) return std::move(row).error();
      if (*row && (*row)->done) return ok();  // the first result stays
      return d.put(key, true, result, keep_for);
    });
  };
  co_return co_await detail::offload(blocking_pool(), std::move(work));
}

asio::awaitable<Result<void>> SqliteIdempotencyStore::release(std::string key, std::string token) {
  auto self = shared_from_this();
  auto work = [self, key, token]() -> Result<void> {
    Database& d = *self->database_;
    std::lock_guard lock(d.mutex);
    Statement drop(d.remove);
    drop.bind(1, key);
    drop.bind(2, token);
    if (const int rc = drop.step(); rc != SQLITE_DONE) {
      return d.error(rc, "releasing '" + key + "'");
    }
    return ok();
  };
  co_return co_await detail::offload(blocking_pool(), std::move(work));
}

asio::awaitable<Result<std::optional<std::string>>> SqliteIdempotencyStore::find(std::string key) {
  auto self = shared_from_this();
  auto work = [self, key]() -> Result<std::optional<std::string>> {
    Database& d = *self->database_;
    std::lock_guard lock(d.mutex);
    auto row = d.live_row(key);
    if (!row) return std::move(row).error();
    if (!*row || !(*row)->done) return std::optional<std::string>();
    return std::optional<std::string>((*row)->value);
  };
  co_return co_await detail::offload(blocking_pool(), std::move(work));
}

Result<std::size_t> SqliteIdempotencyStore::purge_expired() {
  Database& d = *database_;
  std::lock_guard lock(d.mutex);
  return d.delete_expired();
}

}  // namespace marty::messaging
