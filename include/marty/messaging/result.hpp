#pragma once

#include <cassert>
#include <memory>
#include <type_traits>
#include <utility>
#include <variant>

#include "marty/messaging/error.hpp"

namespace marty::messaging {

/// The outcome of an operation: a value or an `Error`. Shaped like C++23 `std::expected`
/// (has_value, value, error, operator*, operator->) so it can be swapped for it later.
/// Accessing the value of a failed result, or the error of a successful one, is a programming
/// error caught by an assertion in debug builds.
template <class T>
class [[nodiscard]] Result {
  static_assert(!std::is_same_v<std::remove_cv_t<T>, Error>, "Result<Error> is ambiguous");

 public:
  Result() requires std::is_default_constructible_v<T> : state_(std::in_place_index<0>) {}
  Result(T value) : state_(std::in_place_index<0>, std::move(value)) {}      // NOLINT: implicit
  Result(Error error) : state_(std::in_place_index<1>, std::move(error)) {}  // NOLINT: implicit
  // Converts anything T can be built from. Constrained to exclude Result itself, so it cannot
  // hide the copy and move constructors (the check below does not read constraints).
  template <class U>
  requires(std::is_constructible_v<T, U&&> && !std::is_same_v<std::decay_t<U>, T> &&
           !std::is_same_v<std::decay_t<U>, Error> && !std::is_same_v<std::decay_t<U>, Result<T>>)
      // NOLINTNEXTLINE(bugprone-forwarding-reference-overload)
      Result(U&& value)
      : state_(std::in_place_index<0>, T(std::forward<U>(value))) {}

  bool has_value() const noexcept { return state_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  T& value() & { return assert(has_value()), std::get<0>(state_); }
  const T& value() const& { return assert(has_value()), std::get<0>(state_); }
  T&& value() && { return assert(has_value()), std::get<0>(std::move(state_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const& { return assert(!has_value()), std::get<1>(state_); }
  Error&& error() && { return assert(!has_value()), std::get<1>(std::move(state_)); }

  template <class U>
  T value_or(U&& fallback) const& {
    return has_value() ? value() : static_cast<T>(std::forward<U>(fallback));
  }

 private:
  std::variant<T, Error> state_;
};

/// A success or an `Error`. A success holds nothing but a null pointer: made, moved, returned
/// and destroyed at the cost of a pointer, on the hot path of every send and ack. A failure
/// keeps its Error on the heap (failures are rare).
template <>
class [[nodiscard]] Result<void> {
 public:
  Result() noexcept = default;
  Result(Error error) : error_(std::make_unique<Error>(std::move(error))) {}  // NOLINT: implicit
  Result(const Result& other)
      : error_(other.error_ ? std::make_unique<Error>(*other.error_) : nullptr) {}
  Result& operator=(const Result& other) {
    if (this != &other) error_ = other.error_ ? std::make_unique<Error>(*other.error_) : nullptr;
    return *this;
  }
  Result(Result&&) noexcept = default;
  Result& operator=(Result&&) noexcept = default;
  ~Result() = default;

  bool has_value() const noexcept { return !error_; }
  explicit operator bool() const noexcept { return has_value(); }
  void value() const { assert(has_value()); }
  const Error& error() const& { return assert(error_), *error_; }
  Error&& error() && { return assert(error_), std::move(*error_); }

 private:
  std::unique_ptr<Error> error_;  // null: success
};

/// Success for `Result<void>`: `co_return ok();`.
inline Result<void> ok() {
  return {};
}

}  // namespace marty::messaging
