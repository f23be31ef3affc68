#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "marty/messaging/message.hpp"
#include "marty/messaging/types.hpp"

/// Dead letters read back: what UnifiedEventBus::list_dead_letters returns and what its
/// requeue and purge select by. The headers the bus writes on a dead letter are in
/// event_bus.hpp (headers::kDeadLetter*); this is their parsed form.
namespace marty::messaging {

struct DeadLetter {
  /// Names this dead letter (the `marty-dead-letter-id` header; the message id for a dead
  /// letter written without one). Unique per dead-lettering: a message that fails again after
  /// a requeue is a new dead letter with a new id.
  std::string id;
  /// The dead letter as stored: subject `deadletter.<subject>`, payload and metadata of the
  /// message that failed, provenance headers included.
  Message message;
  /// Where it failed, and why, after how many handler calls, in which consumer group.
  std::string subject;
  std::string reason;
  int attempts = 0;
  std::string group;
  /// The pattern it was delivered under: a requeue publishes it the same way.
  std::optional<MessagingPattern> pattern;
  std::optional<Clock::time_point> first_failure;
  std::optional<Clock::time_point> last_failure;
  /// The backend that keeps it ("redis").
  std::string backend;

  /// Reads the provenance headers of a stored dead letter. Headers that are missing or
  /// malformed leave their field empty; it never fails (a dead letter must stay readable).
  static DeadLetter from_message(Message stored, std::string backend);
  /// The message to publish again: the original subject, payload and metadata (message id and
  /// trace context kept, so idempotent consumers recognise a copy they already handled),
  /// without the dead-letter headers.
  Message original() const;
};

/// The id of a stored dead letter (DeadLetter::id), for backends removing dead letters by id.
std::string dead_letter_id(const Message& stored);

/// Which dead letters of one subject to list, requeue or purge. Every condition set must hold.
struct DeadLetterFilter {
  DeadLetterFilter() {}  // NOLINT(modernize-use-equals-default): not an aggregate (GCC 12, 0001)
  explicit DeadLetterFilter(std::string failed_subject) : subject(std::move(failed_subject)) {}

  /// Required: the subject the messages failed on ("events.order_placed",
  /// "commands.billing.charge"), as in their `marty-dead-letter-subject` header.
  std::string subject;
  /// Only these dead letters (DeadLetter::id). Empty: any.
  std::set<std::string> ids;
  /// Only dead letters of this message id.
  std::string message_id;
  /// Only those whose reason contains this text ("unavailable", "timeout").
  std::string reason_contains;
  /// Only those a handler of this consumer group or service gave up on.
  std::string group;
  /// Only those whose last failure is at or after / before these times.
  std::optional<Clock::time_point> failed_since;
  std::optional<Clock::time_point> failed_before;
  /// At most this many (the oldest first); 0: no limit.
  std::size_t limit = 0;
  /// How long the whole operation may take (reading, publishing, deleting).
  std::chrono::milliseconds timeout{30'000};

  bool matches(const DeadLetter& dead_letter) const;
};

namespace detail {

/// For backends whose dead letters sit in a log that cannot delete one record (Kafka topics,
/// RabbitMQ streams): a dead letter is removed by appending a settlement record, which names
/// the ids it settles (this header, and their JSON array as payload), to the same log.
inline constexpr std::string_view kDeadLetterSettledHeader = "marty-dead-letter-settled";

/// A settlement record of `ids` for the log of `dead_letter_subject` (ids may be empty: a
/// record that settles nothing, which marks how far the log went).
Message dead_letter_settlement(const std::string& dead_letter_subject,
                               const std::vector<std::string>& ids);
bool is_dead_letter_settlement(const Message& record);
/// The dead letters among `records` that no settlement record among them names, in order.
std::vector<Message> unsettled_dead_letters(std::vector<Message> records);

}  // namespace detail
}  // namespace marty::messaging
