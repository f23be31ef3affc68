#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace marty::messaging::detail {

/// Hashes std::string and std::string_view alike, so a map keyed by std::string is searched
/// with a view (a message's subject or id) without making a string.
struct TransparentHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view text) const noexcept {
    return std::hash<std::string_view>{}(text);
  }
};

/// An unordered map by string that find() takes a std::string_view for.
template <class Value>
using StringMap = std::unordered_map<std::string, Value, TransparentHash, std::equal_to<>>;

}  // namespace marty::messaging::detail
