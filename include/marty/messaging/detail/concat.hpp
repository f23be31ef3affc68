#pragma once

#include <cstddef>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>

namespace marty::messaging::detail {

/// The parts joined, in one allocation (for keys and subjects made on hot paths).
inline std::string concat(std::span<const std::string_view> parts) {
  std::size_t size = 0;
  for (const std::string_view part : parts) size += part.size();
  std::string text;
  text.reserve(size);
  for (const std::string_view part : parts) text.append(part);
  return text;
}

inline std::string concat(std::initializer_list<std::string_view> parts) {
  return concat(std::span<const std::string_view>(parts.begin(), parts.size()));
}

}  // namespace marty::messaging::detail
