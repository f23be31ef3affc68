#pragma once
// Pure bookkeeping of the Kafka consumer, kept apart so that it can be tested on its own:
// which offsets of a partition are unfinished (and so how far a commit may go), and which
// messages wait behind another message with the same key.
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>

namespace marty::messaging::kafka {

/// The offsets of one partition fetched and not yet finished. A commit names the next offset to
/// consume, so it may go up to the oldest unfinished offset and never past it: a consumer that
/// dies loses no message that was fetched but not finished.
class PartitionProgress {
 public:
  void fetched(std::int64_t offset) {
    unfinished_.insert(offset);
    if (offset + 1 > next_) next_ = offset + 1;
  }
  void finished(std::int64_t offset) { unfinished_.erase(offset); }
  /// The offset a commit may name now; nullopt before anything was fetched.
  std::optional<std::int64_t> committable() const {
    if (!unfinished_.empty()) return *unfinished_.begin();
    if (next_ < 0) return std::nullopt;
    return next_;
  }
  std::size_t unfinished() const noexcept { return unfinished_.size(); }

 private:
  std::set<std::int64_t> unfinished_;
  std::int64_t next_ = -1;
};

/// Admits items so that items with the same non-empty key are out one at a time, in the order
/// they were offered: an item whose key is out waits until that one is done. Items without a
/// key are never held. Not thread-safe (the consumer's lock guards it).
template <class Item>
class KeyGate {
 public:
  /// True when `item` may go out now (its key is taken until done(key)); otherwise the gate
  /// keeps it, behind the other items of its key.
  bool offer(const std::string& key, Item& item) {
    if (key.empty()) return true;
    if (out_.insert(key).second) return true;
    auto& queue = waiting_[key];  // before `item` (which may hold `key`) is moved
    queue.push_back(std::move(item));
    ++waiting_count_;
    return false;
  }
  /// The item out with `key` is done: the next one of that key, which now goes out, if any.
  std::optional<Item> done(const std::string& key) {
    if (key.empty()) return std::nullopt;
    auto it = waiting_.find(key);
    if (it == waiting_.end()) {
      out_.erase(key);
      return std::nullopt;
    }
    Item next = std::move(it->second.front());
    it->second.pop_front();
    --waiting_count_;
    if (it->second.empty()) waiting_.erase(it);
    return next;
  }
  /// Removes the waiting items `drop` selects (calling `dropped` on each); returns how many.
  template <class Drop, class Dropped>
  std::size_t remove_waiting_if(Drop drop, Dropped dropped) {
    std::size_t removed = 0;
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      auto& items = it->second;
      for (auto item = items.begin(); item != items.end();) {
        if (drop(*item)) {
          dropped(*item);
          item = items.erase(item);
          ++removed;
        } else {
          ++item;
        }
      }
      it = items.empty() ? waiting_.erase(it) : std::next(it);
    }
    waiting_count_ -= removed;
    return removed;
  }
  std::size_t waiting() const noexcept { return waiting_count_; }
  bool is_out(const std::string& key) const { return out_.count(key) != 0; }

 private:
  std::set<std::string> out_;
  std::map<std::string, std::deque<Item>> waiting_;
  std::size_t waiting_count_ = 0;
};

}  // namespace marty::messaging::kafka
