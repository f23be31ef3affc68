#include <map>
#include <mutex>
#include <unordered_map>

#include "marty/messaging/idempotency.hpp"

namespace marty::messaging {

Result<void> check_idempotency_arguments(std::string_view operation, const std::string& key,
                                         std::chrono::milliseconds duration) {
  if (key.empty()) {
    return Error(errc::invalid_argument,
                 "idempotency store: " + std::string(operation) + ": the key is empty");
  }
  if (duration.count() <= 0) {
    return Error(errc::invalid_argument, "idempotency store: " + std::string(operation) + " of '" +
                                             key + "': the duration must be positive, not " +
                                             std::to_string(duration.count()) + " ms");
  }
  return ok();
}

namespace {

using SteadyClock = std::chrono::steady_clock;

class MemoryIdempotencyStore final : public IdempotencyStore {
 public:
  explicit MemoryIdempotencyStore(std::size_t max_keys)
      : max_keys_(std::max<std::size_t>(1, max_keys)) {}

  asio::awaitable<Result<IdempotencyClaim>> claim(std::string key,
                                                  std::chrono::milliseconds lease) override {
    co_return claim_now(std::move(key), lease);
  }

  asio::awaitable<Result<void>> complete(std::string key, std::string token, std::string result,
                                         std::chrono::milliseconds keep_for) override {
    if (auto valid = check_idempotency_arguments("complete", key, keep_for); !valid) {
      co_return valid;
    }
    (void)token;  // the work was done, whoever holds the key now
    std::lock_guard lock(mutex_);
    const auto now = SteadyClock::now();
    purge(now);
    auto it = entries_.find(key);
    if (it != entries_.end() && it->second.done) co_return ok();  // the first result stays
    if (it == entries_.end()) it = entries_.emplace(key, Entry{}).first;
    it->second.done = true;
    it->second.value = std::move(result);
    expire_at(it, now + keep_for);
    evict();
    co_return ok();
  }

  asio::awaitable<Result<void>> release(std::string key, std::string token) override {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(key);
    if (it != entries_.end() && !it->second.done && it->second.value == token) erase(it);
    co_return ok();
  }

  asio::awaitable<Result<std::optional<std::string>>> find(std::string key) override {
    std::lock_guard lock(mutex_);
    purge(SteadyClock::now());
    auto it = entries_.find(key);
    if (it == entries_.end() || !it->second.done) co_return std::optional<std::string>();
    co_return std::optional<std::string>(it->second.value);
  }

 private:
  struct Entry {
    bool done = false;
    std::string value;  // the claim's token, or the result once done
    std::multimap<SteadyClock::time_point, const std::string*>::iterator expiry;
    bool has_expiry = false;
  };
  using Entries = std::unordered_map<std::string, Entry>;

  Result<IdempotencyClaim> claim_now(std::string key, std::chrono::milliseconds lease) {
    if (auto valid = check_idempotency_arguments("claim", key, lease); !valid) {
      return std::move(valid).error();
    }
    std::lock_guard lock(mutex_);
    const auto now = SteadyClock::now();
    purge(now);
    IdempotencyClaim found;
    auto it = entries_.find(key);
    if (it != entries_.end()) {
      found.status =
          it->second.done ? IdempotencyClaim::Status::done : IdempotencyClaim::Status::in_progress;
      if (it->second.done) found.result = it->second.value;
      return found;
    }
    it = entries_.emplace(std::move(key), Entry{}).first;
    it->second.value = make_uuid_v7();
    expire_at(it, now + lease);
    found.token = it->second.value;
    evict();
    return found;
  }

  // With mutex_ held.
  void expire_at(Entries::iterator it, SteadyClock::time_point when) {
    if (it->second.has_expiry) {  // moved, reusing its node
      auto node = expiries_.extract(it->second.expiry);
      node.key() = when;
      it->second.expiry = expiries_.insert(std::move(node));
      return;
    }
    it->second.expiry = expiries_.emplace(when, &it->first);
    it->second.has_expiry = true;
  }
  void erase(Entries::iterator it) {
    if (it->second.has_expiry) expiries_.erase(it->second.expiry);
    entries_.erase(it);
  }
  void purge(SteadyClock::time_point now) {
    while (!expiries_.empty() && expiries_.begin()->first <= now) {
      erase(entries_.find(*expiries_.begin()->second));
    }
  }
  // Beyond the bound, done keys closest to expiring go first; claims are never dropped (that
  // would let a duplicate run beside its original).
  void evict() {
    auto next = expiries_.begin();
    while (entries_.size() > max_keys_ && next != expiries_.end()) {
      auto entry = entries_.find(*next->second);
      ++next;
      if (entry->second.done) erase(entry);
    }
  }

  const std::size_t max_keys_;
  std::mutex mutex_;
  Entries entries_;
  // Each points at its entry's key: the entries are nodes, which rehashing does not move.
  std::multimap<SteadyClock::time_point, const std::string*> expiries_;
};

}  // namespace

std::shared_ptr<IdempotencyStore> make_memory_idempotency_store(std::size_t max_keys) {
  return std::make_shared<MemoryIdempotencyStore>(max_keys);
}

}  // namespace marty::messaging
