#pragma once

#include <string>
#include <string_view>
#include <system_error>

namespace marty::messaging {

/// Portable error codes, shared by every backend (the canonical list of gRPC and Abseil).
/// Each backend maps its client library's codes onto these, so retry and dead-letter logic can
/// ask "is this transient?" without knowing the broker.
enum class errc {
  /// The operation was cancelled (by the caller, or because the bus or subscription closed).
  cancelled = 1,
  /// The caller passed something malformed: a bad type name, subject, payload or config value.
  /// Retrying the same input fails the same way.
  invalid_argument = 3,
  /// A deadline passed before the operation finished (a query got no reply in time).
  /// Retrying may help.
  deadline_exceeded = 4,
  /// A named thing does not exist (backend, subscription, stream). Not retryable as is.
  not_found = 5,
  /// The thing to create exists already.
  already_exists = 6,
  /// The broker refused the operation for these credentials.
  permission_denied = 7,
  /// A bound was hit (a full buffer behind a slow consumer, a quota). Retry after backing off.
  resource_exhausted = 8,
  /// The system is not in a state the operation needs (bus not started, route that no backend
  /// can serve). Do not retry until the state is fixed.
  failed_precondition = 9,
  /// A concurrency conflict; retry at a higher level.
  aborted = 10,
  /// The operation is not implemented or not supported by this backend.
  unimplemented = 12,
  /// An invariant broke, or a handler failed in a way it did not classify.
  internal = 13,
  /// The broker cannot be reached right now. Transient: retry with backoff.
  unavailable = 14,
  /// Data was lost or corrupted (undecodable message, dropped by retention).
  data_loss = 15,
  /// Credentials are missing or wrong.
  unauthenticated = 16,
};

/// The error category of `errc`; its name is "marty.messaging".
const std::error_category& messaging_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), messaging_category()};
}

/// The lower-case name of a code ("deadline_exceeded"), as used on the wire and in logs.
std::string_view to_string(errc e) noexcept;

/// Parses a name written by `to_string`; unknown names give `errc::internal`.
errc errc_from_string(std::string_view name) noexcept;

/// An error as the library reports it: a code, a message for people, and where it came from.
/// A value type: cheap to move, safe to copy across threads.
class Error {
 public:
  Error() = default;
  Error(std::error_code code, std::string message, std::string backend = {})
      : code_(code), message_(std::move(message)), backend_(std::move(backend)) {}
  Error(errc code, std::string message, std::string backend = {})
      : Error(make_error_code(code), std::move(message), std::move(backend)) {}

  const std::error_code& code() const noexcept { return code_; }
  /// The message, without the code name or the backend.
  const std::string& message() const noexcept { return message_; }
  /// The backend the error came from ("memory", "nats"); empty when it came from the bus itself.
  const std::string& backend() const noexcept { return backend_; }

  /// True when the same operation may succeed if tried again later (unavailable,
  /// deadline_exceeded, resource_exhausted, aborted).
  bool retryable() const noexcept;

  /// True when the code equals `e` (compares with our portable conditions).
  bool is(errc e) const noexcept { return code_ == make_error_code(e); }

  /// "deadline_exceeded: no reply to queries.inventory.check_stock within 2000 ms [nats]".
  std::string describe() const;

  /// Returns a copy whose message is prefixed with `context` ("publish events.x: ...").
  Error with_context(std::string_view context) const;

 private:
  std::error_code code_;
  std::string message_;
  std::string backend_;
};

}  // namespace marty::messaging

template <>
struct std::is_error_code_enum<marty::messaging::errc> : std::true_type {};
