#pragma once

#include <memory>
#include <string>

#include "marty/messaging/saga_store.hpp"

/// The durable saga store on SQLite (Debian's libsqlite3): link `marty::messaging_sqlite`.
namespace marty::messaging::saga {

struct SqliteSagaStoreOptions {
  SqliteSagaStoreOptions() {}  // NOLINT(modernize-use-equals-default): not an aggregate (GCC 12)
  /// true: every transition is on disk before it is acted on, even across a power loss
  /// (synchronous=FULL). false: it survives a crash of the process, and the last transitions
  /// may be lost with the machine (synchronous=NORMAL), several times faster.
  bool sync_to_disk = false;
  /// How long a write waits for another process holding the database's write lock.
  std::chrono::milliseconds busy_timeout{5'000};
};

/// Saga records and leases in one SQLite database file (WAL mode), shareable by several
/// processes on one machine: each write is a transaction, and leases keep two orchestrators
/// from driving one saga. Thread-safety: every member may be called from any thread.
class SqliteSagaStore final : public SagaStore {
 public:
  /// Opens or creates the database at `path` (":memory:" for a private in-memory one).
  /// An error names the file and SQLite's reason.
  static Result<std::shared_ptr<SqliteSagaStore>> open(const std::string& path,
                                                       SqliteSagaStoreOptions options);
  static Result<std::shared_ptr<SqliteSagaStore>> open(const std::string& path);
  ~SqliteSagaStore() override;

  Result<void> save(const SagaRecord& record) override;
  Result<SagaRecord> load(const std::string& id) override;
  Result<std::vector<SagaRecord>> list(const SagaFilter& filter) override;
  Result<bool> acquire_lease(const std::string& id, const std::string& owner,
                             Clock::time_point until) override;
  Result<void> release_lease(const std::string& id, const std::string& owner) override;

  struct Database;  // sqlite3 handles; public only so that the implementation can name it

 private:
  explicit SqliteSagaStore(std::unique_ptr<Database> database);
  std::unique_ptr<Database> database_;
};

}  // namespace marty::messaging::saga
