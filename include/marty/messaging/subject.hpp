#pragma once

#include <string>
#include <string_view>

#include "marty/messaging/result.hpp"

/// Subject names. Subjects are dot-separated tokens ("events.order_placed"); subscriptions may
/// use NATS-style wildcards: `*` matches exactly one token, `>` (last token only) one or more.
namespace marty::messaging::subject {

/// "events.<type>"
std::string for_event(std::string_view event_type);
/// "commands.<service>.<type>"
std::string for_command(std::string_view service, std::string_view command_type);
/// "queries.<service>.<type>"
std::string for_query(std::string_view service, std::string_view query_type);

/// The message type a subject carries: "events.<type>", "commands.<service>.<type>" and
/// "queries.<service>.<type>" give <type>; any other subject is its own type (streams, and
/// messages from foreign publishers).
std::string type_of(std::string_view subject);

/// Checks a name used as one or more subject tokens (a type, a service, a stream): non-empty,
/// no whitespace or control characters, no empty token, no wildcard characters.
/// `what` names the argument in the error ("event type").
Result<void> validate_name(std::string_view name, std::string_view what);

/// Checks a subscription pattern: like validate_name, but `*` may stand as a whole token and `>`
/// as the whole last token.
Result<void> validate_pattern(std::string_view pattern, std::string_view what);

/// True when the pattern contains a wildcard token.
bool has_wildcard(std::string_view pattern) noexcept;

/// True when the concrete `subject` matches `pattern`.
bool matches(std::string_view pattern, std::string_view subject) noexcept;

/// Shell-style glob on whole names (`*` any run of characters, `?` one character); used by
/// routes on message types ("orders.*" matches "orders.created" and "orders.eu.created").
bool glob_matches(std::string_view glob, std::string_view text) noexcept;

}  // namespace marty::messaging::subject
