#pragma once

#include <cstddef>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "marty/messaging/types.hpp"

namespace marty::messaging {

/// Ordering a backend keeps between messages of one subject.
enum class Ordering {
  none,       ///< no promise
  per_key,    ///< messages with the same partition_key arrive in publish order
  per_topic,  ///< every message of a subject arrives in publish order
};

/// What a backend can do, declared once and honestly. The bus routes by it, refuses routes it
/// cannot serve at start(), and the conformance suite skips exactly what it excludes.
struct Capabilities {
  std::set<MessagingPattern> patterns;
  /// The strongest guarantee the backend gives when configured for it.
  DeliveryGuarantee delivery = DeliveryGuarantee::at_most_once;
  Ordering ordering = Ordering::none;
  /// Stream subscribers can start from earliest, a sequence number or a time.
  bool persistent_replay = false;
  /// A named group's unacknowledged and new messages survive its members' restarts.
  bool durable_groups = false;
  /// Subscribers sharing a group name compete for messages (one delivery per group).
  bool consumer_groups = false;
  /// request() is implemented by the backend itself; otherwise the bus uses reply subjects.
  bool native_request_reply = false;
  /// nack(delay) redelivers after the delay without blocking the subscription.
  bool delayed_redelivery = false;
  bool native_dead_letter = false;
  /// Dead letters can be listed, requeued and purged (Backend::read_dead_letters and
  /// remove_dead_letters; UnifiedEventBus::list_dead_letters and the rest).
  bool inspectable_dead_letters = false;
  bool headers = false;
  /// Subscriptions may use `*` and `>` wildcards.
  bool wildcard_subscriptions = false;
  /// The broker drops a message published again with the same id within a window of its own
  /// (JetStream's duplicate window, SNS FIFO de-duplication): a publisher's retry is not
  /// delivered twice. Redeliveries still are, so consumers stay idempotent.
  bool deduplicates_by_id = false;
  /// Backend::consumer_lag tells how many messages wait for a durable group
  /// (UnifiedEventBus::consumer_lag, the `marty_consumer_lag_messages` gauge).
  bool consumer_lag = false;
  /// Largest payload accepted, in bytes; 0 means no limit of its own.
  std::size_t max_payload_bytes = 0;

  bool supports(MessagingPattern pattern) const { return patterns.count(pattern) != 0; }
};

/// "none", "per_key", "per_topic".
std::string_view to_string(Ordering ordering) noexcept;

/// The capabilities as one JSON object, every field under its member's name (patterns, delivery
/// and ordering by their string forms): what conformance reports and `marty-bus backends` show.
nlohmann::json to_json(const Capabilities& capabilities);

}  // namespace marty::messaging
