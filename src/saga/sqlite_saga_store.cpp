#include "marty/messaging/sqlite_saga_store.hpp"

#include <mutex>

#include "../sqlite/sqlite_database.hpp"
#include "marty/messaging/detail/json_writer.hpp"

namespace marty::messaging::saga {
namespace {

using sqlite::Statement;

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS marty_sagas (
  id TEXT PRIMARY KEY,
  definition TEXT NOT NULL,
  state TEXT NOT NULL,
  finished INTEGER NOT NULL,
  version INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS marty_sagas_by_finished ON marty_sagas (finished, created_at);
CREATE TABLE IF NOT EXISTS marty_saga_leases (
  id TEXT PRIMARY KEY,
  owner TEXT NOT NULL,
  until INTEGER NOT NULL
);
)sql";

std::int64_t to_ms(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

}  // namespace

struct SqliteSagaStore::Database : sqlite::Database {
  sqlite3_stmt* read_version = nullptr;
  sqlite3_stmt* upsert = nullptr;
  sqlite3_stmt* load = nullptr;
  sqlite3_stmt* read_lease = nullptr;
  sqlite3_stmt* write_lease = nullptr;
  sqlite3_stmt* delete_lease = nullptr;
};

SqliteSagaStore::SqliteSagaStore(std::unique_ptr<Database> database)
    : database_(std::move(database)) {}

SqliteSagaStore::~SqliteSagaStore() = default;

Result<std::shared_ptr<SqliteSagaStore>> SqliteSagaStore::open(const std::string& path) {
  return open(path, SqliteSagaStoreOptions());
}

Result<std::shared_ptr<SqliteSagaStore>> SqliteSagaStore::open(const std::string& path,
                                                               SqliteSagaStoreOptions options) {
  auto database = std::make_unique<Database>();
  sqlite::OpenOptions open_options;
  open_options.sync_to_disk = options.sync_to_disk;
  open_options.busy_timeout = options.busy_timeout;
  if (auto opened = database->open("saga store", path, open_options, kSchema); !opened) {
    return opened.error();
  }
  struct Prepared {
    sqlite3_stmt** into;
    const char* sql;
  };
  for (const Prepared& p : {
           Prepared{&database->read_version, "SELECT version FROM marty_sagas WHERE id = ?1"},
           Prepared{&database->upsert,
                    "INSERT INTO marty_sagas (id, definition, state, finished, version, "
                    "created_at, record) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(id) DO "
                    "UPDATE SET state = ?3, finished = ?4, version = ?5, record = ?7"},
           Prepared{&database->load, "SELECT record FROM marty_sagas WHERE id = ?1"},
           Prepared{&database->read_lease,
                    "SELECT owner, until FROM marty_saga_leases WHERE id = ?1"},
           Prepared{&database->write_lease,
                    "INSERT OR REPLACE INTO marty_saga_leases (id, owner, until) VALUES "
                    "(?1, ?2, ?3)"},
           Prepared{&database->delete_lease,
                    "DELETE FROM marty_saga_leases WHERE id = ?1 AND owner = ?2"},
       }) {
    auto stmt = database->prepare(p.sql);
    if (!stmt) return stmt.error();
    *p.into = *stmt;
  }
  return std::shared_ptr<SqliteSagaStore>(new SqliteSagaStore(std::move(database)));
}

Result<void> SqliteSagaStore::save(const SagaRecord& record) {
  if (record.id.empty()) return Error(errc::invalid_argument, "saga record has no id");
  const std::string text = marty::messaging::detail::write_json(to_json(record));
  Database& d = *database_;
  std::lock_guard lock(d.mutex);
  return d.write_transaction<void>("saving saga " + record.id, [&]() -> Result<void> {
    {
      Statement read(d.read_version);
      read.bind(1, record.id);
      const int rc = read.step();
      // Versions only go up: two writers starting from the same record cannot both succeed.
      if (rc == SQLITE_ROW && static_cast<std::uint64_t>(read.integer(0)) >= record.version) {
        return Error(errc::aborted, "saga " + record.id + " is stored at version " +
                                        std::to_string(read.integer(0)) + ", not older than " +
                                        std::to_string(record.version));
      }
      if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        return d.error(rc, "reading saga " + record.id);
      }
    }
    Statement upsert(d.upsert);
    upsert.bind(1, record.id);
    upsert.bind(2, record.definition);
    upsert.bind(3, std::string(to_string(record.state)));
    upsert.bind(4, std::int64_t{is_final(record.state) ? 1 : 0});
    upsert.bind(5, static_cast<std::int64_t>(record.version));
    upsert.bind(6, to_ms(record.created_at));
    upsert.bind(7, text);
    const int rc = upsert.step();
    if (rc != SQLITE_DONE) return d.error(rc, "writing saga " + record.id);
    return ok();
  });
}

Result<SagaRecord> SqliteSagaStore::load(const std::string& id) {
  Database& d = *database_;
  std::string text;
  {
    std::lock_guard lock(d.mutex);
    Statement load(d.load);
    load.bind(1, id);
    const int rc = load.step();
    if (rc == SQLITE_DONE) return Error(errc::not_found, "no saga with id '" + id + "'");
    if (rc != SQLITE_ROW) return d.error(rc, "reading saga " + id);
    text = load.text(0);
  }
  try {
    return record_from_json(Json::parse(text));
  } catch (const Json::exception& e) {
    return Error(errc::data_loss, "saga store: saga " + id + " is not valid JSON: " + e.what());
  }
}

Result<std::vector<SagaRecord>> SqliteSagaStore::list(const SagaFilter& filter) {
  std::string sql = "SELECT record FROM marty_sagas WHERE 1 = 1";
  if (filter.unfinished_only) sql += " AND finished = 0";
  if (filter.state) sql += " AND state = ?1";
  if (!filter.definition.empty()) sql += " AND definition = ?2";
  sql += " ORDER BY created_at DESC LIMIT ?3";
  Database& d = *database_;
  std::vector<std::string> texts;
  {
    std::lock_guard lock(d.mutex);
    auto prepared = d.prepare_once(sql.c_str());
    if (!prepared) return prepared.error();
    std::unique_ptr<sqlite3_stmt, int (*)(sqlite3_stmt*)> owner(*prepared, sqlite3_finalize);
    Statement query(*prepared);
    if (filter.state) query.bind(1, std::string(to_string(*filter.state)));
    if (!filter.definition.empty()) query.bind(2, filter.definition);
    query.bind(3, static_cast<std::int64_t>(
                      std::min<std::size_t>(filter.limit, static_cast<std::size_t>(INT64_MAX))));
    int rc = SQLITE_ROW;
    while ((rc = query.step()) == SQLITE_ROW) texts.push_back(query.text(0));
    if (rc != SQLITE_DONE) return d.error(rc, "listing sagas");
  }
  std::vector<SagaRecord> out;
  out.reserve(texts.size());
  for (const std::string& text : texts) {
    try {
      auto record = record_from_json(Json::parse(text));
      if (!record) return record.error();
      out.push_back(std::move(*record));
    } catch (const Json::exception& e) {
      return Error(errc::data_loss,
                   std::string("saga store: a record is not valid JSON: ") + e.what());
    }
  }
  return out;
}

Result<bool> SqliteSagaStore::acquire_lease(const std::string& id, const std::string& owner,
                                            Clock::time_point until) {
  Database& d = *database_;
  std::lock_guard lock(d.mutex);
  return d.write_transaction<bool>("leasing saga " + id, [&]() -> Result<bool> {
    {
      Statement read(d.read_lease);
      read.bind(1, id);
      const int rc = read.step();
      if (rc == SQLITE_ROW && read.text(0) != owner && read.integer(1) > to_ms(Clock::now())) {
        return false;
      }
      if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        return d.error(rc, "reading the lease of saga " + id);
      }
    }
    Statement write(d.write_lease);
    write.bind(1, id);
    write.bind(2, owner);
    write.bind(3, to_ms(until));
    const int rc = write.step();
    if (rc != SQLITE_DONE) return d.error(rc, "writing the lease of saga " + id);
    return true;
  });
}

Result<void> SqliteSagaStore::release_lease(const std::string& id, const std::string& owner) {
  Database& d = *database_;
  std::lock_guard lock(d.mutex);
  Statement remove(d.delete_lease);
  remove.bind(1, id);
  remove.bind(2, owner);
  const int rc = remove.step();
  if (rc != SQLITE_DONE) return d.error(rc, "releasing the lease of saga " + id);
  return ok();
}

}  // namespace marty::messaging::saga
