#include "marty/messaging/saga_store.hpp"

#include <algorithm>

namespace marty::messaging::saga {

bool matches(const SagaFilter& filter, const SagaRecord& record) {
  if (filter.state && record.state != *filter.state) return false;
  if (!filter.definition.empty() && record.definition != filter.definition) return false;
  if (filter.unfinished_only && is_final(record.state)) return false;
  return true;
}

Result<void> InMemorySagaStore::save(const SagaRecord& record) {
  if (record.id.empty()) return Error(errc::invalid_argument, "saga record has no id");
  std::lock_guard lock(mutex_);
  auto it = records_.find(record.id);
  // Versions only go up: two writers starting from the same record cannot both succeed.
  if (it != records_.end() && it->second.version >= record.version) {
    return Error(errc::aborted, "saga " + record.id + " is stored at version " +
                                    std::to_string(it->second.version) + ", not older than " +
                                    std::to_string(record.version));
  }
  if (it == records_.end()) {
    records_.emplace(record.id, record);
  } else {
    assign_record(it->second, record);
  }
  return ok();
}

Result<SagaRecord> InMemorySagaStore::load(const std::string& id) {
  std::lock_guard lock(mutex_);
  auto it = records_.find(id);
  if (it == records_.end()) return Error(errc::not_found, "no saga with id '" + id + "'");
  return it->second;
}

Result<std::vector<SagaRecord>> InMemorySagaStore::list(const SagaFilter& filter) {
  std::vector<SagaRecord> out;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [id, record] : records_) {
      if (matches(filter, record)) out.push_back(record);
    }
  }
  // Newest first; among sagas created in the same instant, the later id (UUIDv7s grow with
  // time) first, so that the order does not depend on the hash table's.
  std::sort(out.begin(), out.end(), [](const SagaRecord& a, const SagaRecord& b) {
    if (a.created_at != b.created_at) return a.created_at > b.created_at;
    return a.id > b.id;
  });
  if (out.size() > filter.limit) out.resize(filter.limit);
  return out;
}

Result<bool> InMemorySagaStore::acquire_lease(const std::string& id, const std::string& owner,
                                              Clock::time_point until) {
  std::lock_guard lock(mutex_);
  auto it = leases_.find(id);
  if (it != leases_.end() && it->second.owner != owner && it->second.until > Clock::now()) {
    return false;
  }
  leases_.insert_or_assign(id, Lease{owner, until});
  return true;
}

Result<void> InMemorySagaStore::release_lease(const std::string& id, const std::string& owner) {
  std::lock_guard lock(mutex_);
  auto it = leases_.find(id);
  if (it != leases_.end() && it->second.owner == owner) leases_.erase(it);
  return ok();
}

}  // namespace marty::messaging::saga
