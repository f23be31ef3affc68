#pragma once
// What every benchmark program needs: failing loudly, timing, percentiles and medians.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace marty::messaging::bench {

using Steady = std::chrono::steady_clock;

/// Every benchmark moves messages of this size, so figures compare across programs.
inline constexpr std::size_t kPayloadBytes = 128;

/// Ends the program when `ok` is false: a benchmark that went wrong must not print figures.
inline void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "benchmark failed: %s\n", what);
    std::exit(1);
  }
}

inline double seconds_since(Steady::time_point start) {
  return std::chrono::duration<double>(Steady::now() - start).count();
}

struct Latency {
  double p50 = 0, p99 = 0, p999 = 0;
};

/// Percentiles of round-trip times in microseconds.
inline Latency percentiles(std::vector<double> micros) {
  std::sort(micros.begin(), micros.end());
  auto at = [&](double q) {
    return micros[std::min(micros.size() - 1, static_cast<std::size_t>(q * micros.size()))];
  };
  return {at(0.50), at(0.99), at(0.999)};
}

inline double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

/// The run whose `by` is the median.
template <class By>
Latency median_latency(std::vector<Latency> values, By by) {
  std::sort(values.begin(), values.end(),
            [&](const Latency& a, const Latency& b) { return by(a) < by(b); });
  return values[values.size() / 2];
}

/// Reads "--name value" pairs (non-negative whole numbers) into `flags`; on an unknown flag or
/// a missing value, says so with `usage` and returns false.
inline bool parse_flags(int argc, char** argv,
                        const std::map<std::string, std::function<void(std::uint64_t)>>& flags,
                        const char* usage) {
  for (int i = 1; i < argc; i += 2) {
    auto flag = flags.find(argv[i]);
    if (flag == flags.end() || i + 1 == argc) {
      std::fprintf(stderr, "%s %s\nusage: %s\n",
                   flag == flags.end() ? "unknown flag" : "no value for", argv[i], usage);
      return false;
    }
    flag->second(std::strtoull(argv[i + 1], nullptr, 10));
  }
  return true;
}

}  // namespace marty::messaging::bench
