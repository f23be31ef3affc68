#pragma once
// What every benchmark program needs: failing loudly, timing, CPU time, percentiles, medians and
// the RESULT lines that scripts/bench-report.sh collects.
#include <time.h>

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

/// CPU seconds this process has used so far, on every thread (client library threads included):
/// the difference over a run, divided by its messages, is the client CPU per message.
inline double process_cpu_seconds() {
  timespec now{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) * 1e-9;
}

/// A run's rate and its CPU cost: messages per second and CPU microseconds per message.
struct Rate {
  double per_second = 0;
  double cpu_us = 0;
};

/// Times `count` messages from the moment it is made until stop(): wall clock and process CPU.
class RateMeter {
 public:
  explicit RateMeter(std::size_t count)
      : count_(count), wall_(Steady::now()), cpu_(process_cpu_seconds()) {}
  /// `end`: when the last message arrived (a consumer's time stamp), or now.
  Rate stop(Steady::time_point end = Steady::now()) const {
    const double cpu = process_cpu_seconds() - cpu_;
    const double wall = std::chrono::duration<double>(end - wall_).count();
    return {static_cast<double>(count_) / wall, cpu * 1e6 / static_cast<double>(count_)};
  }

 private:
  std::size_t count_;
  Steady::time_point wall_;
  double cpu_;
};

/// The headline line of a measure, collected into docs/benchmarks.md: the bus's value, the
/// baseline's, and their ratio (for rates, above 1 is the bus faster; for times, below 1).
inline void print_result(const char* id, double bus, double baseline) {
  std::printf("RESULT %s bus=%.6g baseline=%.6g ratio=%.3f\n", id, bus, baseline,
              baseline != 0 ? bus / baseline : 0.0);
}

inline double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

/// The median rate (by messages per second) with its own CPU figure.
inline Rate median_rate(std::vector<Rate> values) {
  std::sort(values.begin(), values.end(),
            [](const Rate& a, const Rate& b) { return a.per_second < b.per_second; });
  return values[values.size() / 2];
}

/// A throughput measure of the raw client and the bus, a Rate per run of each.
struct RateRow {
  const char* name;
  std::vector<Rate> raw, bus;
};

/// Prints each row as a markdown table line: median msg/s and CPU us/msg of each side, and the
/// ratio; `name_width` is the first column's width.
inline void print_rate_rows(const std::vector<RateRow*>& rows, int name_width) {
  for (const RateRow* row : rows) {
    const Rate raw = median_rate(row->raw), bus = median_rate(row->bus);
    std::printf("| %-*s | %11.0f | %7.2f | %9.0f | %7.2f | %7.2f |\n", name_width, row->name,
                raw.per_second, raw.cpu_us, bus.per_second, bus.cpu_us,
                bus.per_second / raw.per_second);
  }
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
