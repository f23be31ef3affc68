#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <string_view>

namespace marty::messaging::detail {

inline constexpr std::uint64_t kFnv1aOffsetBasis = 14695981039346656037ull;

/// FNV-1a: a stable 64-bit hash (the same on every machine and run, which std::hash is not),
/// for names derived from text and for jitter. A different `basis` gives another stable hash.
constexpr std::uint64_t fnv1a(std::string_view text,
                              std::uint64_t basis = kFnv1aOffsetBasis) noexcept {
  std::uint64_t hash = basis;
  for (char c : text) hash = (hash ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return hash;
}

/// The wait before retry number `retry` (1 = the first): `initial` times `multiplier` (at
/// least 1) to the power retry - 1, capped at `max`.
inline std::chrono::milliseconds exponential_backoff(std::chrono::milliseconds initial,
                                                     double multiplier,
                                                     std::chrono::milliseconds max, int retry) {
  const double factor = std::pow(std::max(multiplier, 1.0), std::max(retry - 1, 0));
  const double ms = static_cast<double>(initial.count()) * factor;
  if (!std::isfinite(ms) || ms >= static_cast<double>(max.count())) return max;
  return std::chrono::milliseconds(static_cast<std::int64_t>(ms));
}

/// `base` shortened by up to `jitter` (0..1) of itself, so that many retries started together
/// do not come back together. The fraction derives from `key` (the message and attempt): no
/// random source, so the same failure waits the same time, and distinct ones spread.
inline std::chrono::milliseconds jittered(std::chrono::milliseconds base, double jitter,
                                          std::string_view key) {
  const double fraction = static_cast<double>(fnv1a(key) % 1000) / 1000.0;
  const auto cut = static_cast<std::int64_t>(static_cast<double>(base.count()) *
                                             std::clamp(jitter, 0.0, 1.0) * fraction);
  return base - std::chrono::milliseconds(cut);
}

}  // namespace marty::messaging::detail
