#include "marty/messaging/error.hpp"

#include <array>
#include <utility>

namespace marty::messaging {
namespace {

constexpr std::array<std::pair<errc, std::string_view>, 14> kNames{{
    {errc::cancelled, "cancelled"},
    {errc::invalid_argument, "invalid_argument"},
    {errc::deadline_exceeded, "deadline_exceeded"},
    {errc::not_found, "not_found"},
    {errc::already_exists, "already_exists"},
    {errc::permission_denied, "permission_denied"},
    {errc::resource_exhausted, "resource_exhausted"},
    {errc::failed_precondition, "failed_precondition"},
    {errc::aborted, "aborted"},
    {errc::unimplemented, "unimplemented"},
    {errc::internal, "internal"},
    {errc::unavailable, "unavailable"},
    {errc::data_loss, "data_loss"},
    {errc::unauthenticated, "unauthenticated"},
}};

class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "marty.messaging"; }
  std::string message(int value) const override {
    return std::string(to_string(static_cast<errc>(value)));
  }
};

}  // namespace

const std::error_category& messaging_category() noexcept {
  static const Category category;
  return category;
}

std::string_view to_string(errc e) noexcept {
  for (const auto& [code, name] : kNames) {
    if (code == e) return name;
  }
  return "unknown";
}

errc errc_from_string(std::string_view name) noexcept {
  for (const auto& [code, known] : kNames) {
    if (known == name) return code;
  }
  return errc::internal;
}

bool Error::retryable() const noexcept {
  return is(errc::unavailable) || is(errc::deadline_exceeded) || is(errc::resource_exhausted) ||
         is(errc::aborted);
}

std::string Error::describe() const {
  std::string text = code_.category() == messaging_category()
                         ? std::string(to_string(static_cast<errc>(code_.value())))
                         : code_.message();
  if (!message_.empty()) text.append(": ").append(message_);
  if (!backend_.empty()) text.append(" [").append(backend_).append("]");
  return text;
}

Error Error::with_context(std::string_view context) const {
  return Error(code_, std::string(context) + ": " + message_, backend_);
}

}  // namespace marty::messaging
