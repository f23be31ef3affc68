#pragma once
// The bus's wire conventions that backends need too: the headers the bus writes and how a
// message becomes a dead letter. Apart from the bus's facade (event_bus.hpp, which includes
// this), so that a backend writing them does not depend on the whole bus.
#include <string>
#include <string_view>

#include "marty/messaging/message.hpp"

namespace marty::messaging {

/// Message headers the bus itself writes (lower case, so every transport keeps them).
namespace headers {
/// On query replies: "ok" or "error".
inline constexpr std::string_view kReplyStatus = "marty-reply-status";
/// On error replies: the errc name.
inline constexpr std::string_view kErrorCode = "marty-error-code";
/// On dead letters: why, from where, after how many attempts.
inline constexpr std::string_view kDeadLetterReason = "marty-dead-letter-reason";
inline constexpr std::string_view kDeadLetterSubject = "marty-dead-letter-subject";
inline constexpr std::string_view kDeadLetterAttempts = "marty-dead-letter-attempts";
/// On dead letters: when the last attempt failed (RFC 3339, UTC), and the consumer group or
/// service whose handler gave up on it (absent for a subscription without a group).
inline constexpr std::string_view kDeadLetterTime = "marty-dead-letter-time";
inline constexpr std::string_view kDeadLetterGroup = "marty-dead-letter-group";
/// On dead letters: when it first failed (RFC 3339, UTC; as seen by the instance that gave up),
/// the pattern it was delivered under ("pub_sub"), and a UUID naming this dead letter.
inline constexpr std::string_view kDeadLetterFirstFailure = "marty-dead-letter-first-failure";
inline constexpr std::string_view kDeadLetterPattern = "marty-dead-letter-pattern";
inline constexpr std::string_view kDeadLetterId = "marty-dead-letter-id";
/// On a requeued dead letter: the id of the dead letter it was requeued from.
inline constexpr std::string_view kRequeuedFrom = "marty-requeued-from";
/// Every header the bus writes on a dead letter starts with this.
inline constexpr std::string_view kDeadLetterPrefix = "marty-dead-letter-";
/// On queries and their replies: the token that matches a reply to its query where replies to
/// many queries share one address (the bus's reply subject, RabbitMQ's direct reply-to). Query
/// handlers' replies carry the query's token.
inline constexpr std::string_view kReplyToken = "marty-reply-token";
}  // namespace headers

/// Dead letters of `subject` are published on "deadletter.<subject>".
std::string dead_letter_subject(std::string_view subject);

/// Makes `message`, delivered on `subject`, its own dead letter: subject
/// dead_letter_subject(subject), a new dead-letter id, the reason, the attempts, and now as
/// both first and last failure time. For backends that dead-letter by themselves.
void mark_dead_letter(Message& message, std::string_view subject, std::string reason, int attempts);

/// The dead letter of a message that arrived on `subject` and could not even be decoded: the
/// raw bytes as an opaque payload, with the reason and provenance headers (one attempt), on
/// dead_letter_subject(subject). Backends send these themselves, so the subscription goes on.
Message undecodable_dead_letter(std::string_view subject, std::string raw, std::string reason);

}  // namespace marty::messaging
