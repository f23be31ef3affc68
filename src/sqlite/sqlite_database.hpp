#pragma once
// What the SQLite stores (sagas, idempotency) share: opening a database file in WAL mode with
// its schema, prepared statements, errors mapped to ours, and write transactions.
#include <sqlite3.h>

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "marty/messaging/result.hpp"

namespace marty::messaging::sqlite {

/// SQLite's result code as our error, prefixed with `label` ("saga store"): a busy or locked
/// database is transient, a corrupt one is lost data, a full disk is exhaustion.
Error sqlite_error(std::string_view label, sqlite3* db, int code, const std::string& what);

/// A prepared statement in use, reset for reuse when the scope ends.
class Statement {
 public:
  explicit Statement(sqlite3_stmt* stmt) : stmt_(stmt) {}
  ~Statement() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  void bind(int index, const std::string& text) {
    sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
  }
  void bind(int index, std::int64_t value) { sqlite3_bind_int64(stmt_, index, value); }
  int step() { return sqlite3_step(stmt_); }
  std::string text(int column) const;
  std::int64_t integer(int column) const { return sqlite3_column_int64(stmt_, column); }

 private:
  sqlite3_stmt* stmt_;
};

struct OpenOptions {
  bool sync_to_disk = false;  // synchronous=FULL rather than NORMAL
  std::chrono::milliseconds busy_timeout{5'000};
};

/// One connection to a database file. Threading: callers hold `mutex` around every use.
class Database {
 public:
  /// Opens or creates `path` in WAL mode and runs `schema` (CREATE ... IF NOT EXISTS).
  /// Errors name `label` and the file.
  Result<void> open(std::string label, const std::string& path, const OpenOptions& options,
                    const char* schema);
  ~Database();

  /// A statement prepared once, finalized with the database.
  Result<sqlite3_stmt*> prepare(const char* sql);
  /// A statement for one use: the caller finalizes it.
  Result<sqlite3_stmt*> prepare_once(const char* sql);
  Result<void> exec(const char* sql, const std::string& what);
  Error error(int code, const std::string& what) const {
    return sqlite_error(label_, db_, code, what);
  }

  /// Runs `body` in a write transaction (BEGIN IMMEDIATE: other processes wait for the lock
  /// up to the busy timeout); commits when it succeeds, rolls back otherwise.
  template <class T, class Body>
  Result<T> write_transaction(const std::string& what, Body body) {
    if (auto begun = exec("BEGIN IMMEDIATE", what); !begun) return begun.error();
    Result<T> result = body();
    if (!result) {
      (void)exec("ROLLBACK", what);
      return result;
    }
    if (auto committed = exec("COMMIT", what); !committed) {
      (void)exec("ROLLBACK", what);
      return committed.error();
    }
    return result;
  }

  const std::string& path() const noexcept { return path_; }
  std::mutex mutex;

 private:
  std::string label_;
  std::string path_;
  sqlite3* db_ = nullptr;
  std::vector<sqlite3_stmt*> statements_;
};

}  // namespace marty::messaging::sqlite
