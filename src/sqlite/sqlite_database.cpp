#include "sqlite_database.hpp"

namespace marty::messaging::sqlite {

Error sqlite_error(std::string_view label, sqlite3* db, int code, const std::string& what) {
  errc ours = errc::internal;
  switch (code & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
      ours = errc::unavailable;
      break;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      ours = errc::data_loss;
      break;
    case SQLITE_FULL:
      ours = errc::resource_exhausted;
      break;
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_READONLY:
      ours = errc::permission_denied;
      break;
    default:
      break;
  }
  const char* detail = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(code);
  return Error(ours, std::string(label) + ": " + what + ": " + detail);
}

std::string Statement::text(int column) const {
  const auto* data = sqlite3_column_text(stmt_, column);
  return data != nullptr
             ? std::string(reinterpret_cast<const char*>(data),
                           static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column)))
             : std::string();
}

Result<void> Database::open(std::string label, const std::string& path, const OpenOptions& options,
                            const char* schema) {
  label_ = std::move(label);
  path_ = path;
  const int rc =
      sqlite3_open_v2(path.c_str(), &db_,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) return error(rc, "opening " + path);
  sqlite3_busy_timeout(db_, static_cast<int>(options.busy_timeout.count()));
  const std::string pragmas = std::string("PRAGMA journal_mode=WAL; PRAGMA synchronous=") +
                              (options.sync_to_disk ? "FULL" : "NORMAL") + ";";
  if (auto set = exec(pragmas.c_str(), "configuring " + path); !set) return set;
  return exec(schema, "creating the tables in " + path);
}

Database::~Database() {
  for (sqlite3_stmt* stmt : statements_) sqlite3_finalize(stmt);
  sqlite3_close_v2(db_);
}

Result<sqlite3_stmt*> Database::prepare(const char* sql) {
  sqlite3_stmt* stmt = nullptr;
  const int rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
  if (rc != SQLITE_OK) return error(rc, "preparing a statement").with_context(path_);
  statements_.push_back(stmt);
  return stmt;
}

Result<sqlite3_stmt*> Database::prepare_once(const char* sql) {
  sqlite3_stmt* stmt = nullptr;
  const int rc = sqlite3_prepare_v2(db_, sql, -1, &stmt, nullptr);
  if (rc != SQLITE_OK) return error(rc, "preparing a statement").with_context(path_);
  return stmt;
}

Result<void> Database::exec(const char* sql, const std::string& what) {
  char* message = nullptr;
  const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &message);
  if (rc == SQLITE_OK) return ok();
  std::string detail = message != nullptr ? message : sqlite3_errstr(rc);
  sqlite3_free(message);
  return Error(rc == SQLITE_BUSY ? errc::unavailable : errc::internal,
               label_ + " " + path_ + ": " + what + ": " + detail);
}

}  // namespace marty::messaging::sqlite
