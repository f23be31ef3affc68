#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <string_view>

#include "marty/messaging/result.hpp"

/// Subject names. Subjects are dot-separated tokens ("events.order_placed"); subscriptions may
/// use NATS-style wildcards: `*` matches exactly one token, `>` (last token only) one or more.
namespace marty::messaging::subject {

/// A subject as the pieces it is joined from, so that the bus can write it straight into a
/// message it publishes instead of making a string first. The views are the caller's.
struct Pieces {
  std::array<std::string_view, 4> pieces{};
  std::size_t count = 0;

  std::size_t size() const noexcept;
  std::string joined() const;
};

/// The pieces of for_event(), for_command() and for_query(): the one definition of each.
Pieces event_pieces(std::string_view event_type) noexcept;
Pieces command_pieces(std::string_view service, std::string_view command_type) noexcept;
Pieces query_pieces(std::string_view service, std::string_view query_type) noexcept;

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
