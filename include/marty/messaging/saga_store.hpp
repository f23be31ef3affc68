#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "marty/messaging/saga.hpp"

namespace marty::messaging::saga {

/// Which sagas list_sagas() returns.
struct SagaFilter {
  SagaFilter() {}  // NOLINT(modernize-use-equals-default): not an aggregate (GCC 12)
  std::optional<SagaState> state;
  std::string definition;  ///< empty: any
  bool unfinished_only = false;
  std::size_t limit = 1'000;
};

/// Where saga records live. The orchestrator writes each transition before it acts on it, so a
/// process that restarts on the same store resumes every unfinished saga.
/// Thread-safety: every member may be called from any thread.
class SagaStore {
 public:
  virtual ~SagaStore() = default;
  /// Inserts or replaces the record with its id. A record whose `version` is not above the
  /// stored one is refused with `aborted`: another writer got there first.
  virtual Result<void> save(const SagaRecord& record) = 0;
  /// `not_found` for an unknown id.
  virtual Result<SagaRecord> load(const std::string& id) = 0;
  /// Newest first.
  virtual Result<std::vector<SagaRecord>> list(const SagaFilter& filter) = 0;

  /// Takes, or renews, the right of `owner` to drive saga `id` until `until`. False when
  /// another owner holds a lease that has not expired: two orchestrators on one store never
  /// drive the same saga at once.
  virtual Result<bool> acquire_lease(const std::string& id, const std::string& owner,
                                     Clock::time_point until) = 0;
  /// Gives the lease up (nothing happens when `owner` does not hold it).
  virtual Result<void> release_lease(const std::string& id, const std::string& owner) = 0;
};

/// Records in this process's memory: for tests and for sagas that need not survive a restart.
class InMemorySagaStore final : public SagaStore {
 public:
  Result<void> save(const SagaRecord& record) override;
  Result<SagaRecord> load(const std::string& id) override;
  Result<std::vector<SagaRecord>> list(const SagaFilter& filter) override;
  Result<bool> acquire_lease(const std::string& id, const std::string& owner,
                             Clock::time_point until) override;
  Result<void> release_lease(const std::string& id, const std::string& owner) override;

 private:
  struct Lease {
    std::string owner;
    Clock::time_point until;
  };
  std::mutex mutex_;
  // Hashed: ids are UUIDv7s, whose shared time prefix makes ordered comparisons long.
  std::unordered_map<std::string, SagaRecord> records_;
  std::unordered_map<std::string, Lease> leases_;
};

/// True when `record` passes `filter` (stores share it).
bool matches(const SagaFilter& filter, const SagaRecord& record);

}  // namespace marty::messaging::saga
