#pragma once
// Helpers the fuzz targets share: splitting the fuzzer's bytes into the pieces a decoder takes,
// and the property every decoder must keep (what it accepts, it encodes and decodes again to
// the same message).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "marty/messaging/message.hpp"

namespace marty::messaging::fuzz {

inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

/// Splits at `separator` (the fuzzer learns it from the seeds).
inline std::vector<std::string> split(std::string_view text, char separator) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (true) {
    const std::size_t end = text.find(separator, start);
    parts.emplace_back(text.substr(start, end - start));
    if (end == std::string_view::npos) return parts;
    start = end + 1;
  }
}

/// Aborts (the fuzzer's finding) when what a decoder accepted does not decode after encoding.
template <class T>
void require_decoded(const Result<T>& again) {
  if (again) return;
  std::fprintf(stderr, "what decoded once does not decode again: %s\n",
               again.error().describe().c_str());
  std::abort();
}

/// Aborts (the fuzzer's finding), naming the field, when two decodings of one message differ
/// in what the wire must keep.
inline void require_same(const Message& a, const Message& b) {
  auto check = [](const char* field, std::string_view x, std::string_view y) {
    if (x == y) return;
    std::fprintf(stderr, "round trip changed %s: '%.*s' became '%.*s'\n", field,
                 static_cast<int>(x.size()), x.data(), static_cast<int>(y.size()), y.data());
    std::abort();
  };
  check("id", a.id(), b.id());
  check("type", a.type(), b.type());
  // CloudEvents requires a source: a message without one (from a plain publisher) is written
  // with the default, which is no loss.
  if (!a.metadata().source.empty()) check("source", a.metadata().source, b.metadata().source);
  check("correlation_id", a.metadata().correlation_id, b.metadata().correlation_id);
  check("partition_key", a.metadata().partition_key, b.metadata().partition_key);
  check("content_type", a.metadata().content_type, b.metadata().content_type);
  // JSON payloads may be written again with their keys in another order.
  auto json_a = a.try_json();
  auto json_b = b.try_json();
  if (json_a && json_b) {
    if (json_a->get() != json_b->get()) check("payload", a.bytes(), b.bytes());
  } else {
    check("payload", a.bytes(), b.bytes());
  }
}

}  // namespace marty::messaging::fuzz
