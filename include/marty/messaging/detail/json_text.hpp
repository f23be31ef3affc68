#pragma once

#include <string_view>

#include "marty/messaging/message.hpp"

namespace marty::messaging::detail {

// nlohmann's parser takes a NUL byte for the end of the text, so "{\"a\":1}\0junk" would pass as
// {"a":1} and the rest be lost. Text from the wire goes through these, which refuse a NUL.

/// The JSON value of `text`; a discarded value when it is not JSON.
inline Json parse_json_text(std::string_view text) {
  if (text.find('\0') != std::string_view::npos) return Json(Json::value_t::discarded);
  return Json::parse(text, nullptr, /*allow_exceptions=*/false);
}

/// True when `text` is one JSON value and nothing else.
inline bool is_json_text(std::string_view text) {
  return text.find('\0') == std::string_view::npos && Json::accept(text);
}

}  // namespace marty::messaging::detail
