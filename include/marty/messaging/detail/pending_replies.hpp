#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <utility>

#include "marty/messaging/detail/string_map.hpp"
#include "marty/messaging/message.hpp"

namespace marty::messaging::detail {

/// The queries waiting for replies on one reply address, and which of them a reply answers.
/// The bus's own responders copy the query's reply token (header `marty-reply-token`); a
/// responder that is not this library copies the query's correlation id (the query's id unless
/// the asker chose one) or names the query's id as the reply's correlation or causation id
/// (docs/wire-format.md, "Talking to the bus from another client"). A correlation id that
/// several waiting queries share matches none of them rather than the wrong one.
///
/// Not thread-safe: the owner guards it with its own lock.
template <class Waiter>
class PendingReplies {
 public:
  static constexpr std::string_view kTokenHeader = "marty-reply-token";

  void add(std::string token, const Message& query, std::shared_ptr<Waiter> waiter) {
    entries_.insert_or_assign(
        std::move(token),
        Entry{std::string(query.id()), std::string(query.correlation_id()), std::move(waiter)});
  }
  void erase(const std::string& token) { entries_.erase(token); }

  /// The waiter `reply` answers, or null (a late reply, or one that names no waiting query).
  std::shared_ptr<Waiter> find(const Message& reply) const {
    auto it = locate(reply);
    return it != entries_.end() ? it->second.waiter : nullptr;
  }
  /// The same, and it waits no more: a second reply to the query finds nothing.
  std::shared_ptr<Waiter> take(const Message& reply) {
    auto it = locate(reply);
    if (it == entries_.end()) return nullptr;
    auto waiter = std::move(it->second.waiter);
    entries_.erase(it);
    return waiter;
  }

  template <class Visit>
  void for_each(Visit visit) const {
    for (const auto& [token, entry] : entries_) visit(*entry.waiter);
  }

 private:
  struct Entry;
  using Entries = StringMap<Entry>;

  typename Entries::const_iterator locate(const Message& reply) const {
    if (auto token = reply.header(kTokenHeader)) return entries_.find(*token);
    const std::string_view correlation = reply.correlation_id();
    const std::string_view causation = reply.causation_id();
    auto by_correlation = entries_.end();
    int sharing = 0;
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      const Entry& entry = it->second;
      if (!correlation.empty() && entry.query_id == correlation) return it;
      if (!causation.empty() && entry.query_id == causation) return it;
      if (!correlation.empty() && entry.correlation_id == correlation) {
        by_correlation = it;
        ++sharing;
      }
    }
    return sharing == 1 ? by_correlation : entries_.end();
  }

  struct Entry {
    std::string query_id;
    std::string correlation_id;
    std::shared_ptr<Waiter> waiter;
  };
  Entries entries_;
};

}  // namespace marty::messaging::detail
