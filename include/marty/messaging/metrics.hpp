#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <tuple>

namespace marty::messaging {

/// What one bus counts: messages published per backend and subject, and per subscription
/// (backend, subject, subscriber group) what was delivered, redelivered, acknowledged, nacked
/// for a retry and dead-lettered, with a histogram of handler durations. Exposed in the
/// Prometheus text format (prometheus_text()).
///
/// Thread-safety: every member may be called from any thread. The counters a hot path uses are
/// looked up once (publisher(), subscription()) and stay valid as long as this object.
class MessagingMetrics {
 public:
  /// Upper bounds of the handler duration buckets, in seconds (then +Inf).
  static constexpr std::array<double, 14> kDurationBuckets{
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

  struct PublishCounters {
    std::atomic<std::uint64_t> published{0};
    std::atomic<std::uint64_t> failed{0};
  };

  struct SubscriptionCounters {
    std::atomic<std::uint64_t> delivered{0};
    /// Deliveries after the first of the same message (attempt > 1).
    std::atomic<std::uint64_t> redelivered{0};
    std::atomic<std::uint64_t> acked{0};
    /// Nacked for a retry after a failure.
    std::atomic<std::uint64_t> nacked{0};
    std::atomic<std::uint64_t> dead_lettered{0};
    /// Messages waiting for the group at the last sample (Backend::consumer_lag); -1: never
    /// sampled (a private subscription, a backend that cannot tell, sampling off).
    std::atomic<std::int64_t> lag{-1};

    /// Records one handler run (of a message, or of a batch).
    void observe_handler(std::chrono::nanoseconds duration);

    std::array<std::atomic<std::uint64_t>, kDurationBuckets.size() + 1> buckets{};  // last: +Inf
    std::atomic<std::uint64_t> handler_nanoseconds{0};
  };

  MessagingMetrics();
  MessagingMetrics(const MessagingMetrics&) = delete;
  MessagingMetrics& operator=(const MessagingMetrics&) = delete;

  PublishCounters& publisher(std::string_view backend, std::string_view subject);
  SubscriptionCounters& subscription(std::string_view backend, std::string_view subject,
                                     std::string_view group);

  /// The Prometheus text exposition format (version 0.0.4): `marty_messages_published_total`,
  /// `marty_publish_failures_total`, `marty_messages_delivered_total`,
  /// `marty_messages_redelivered_total`, `marty_messages_acked_total`,
  /// `marty_messages_nacked_total`, `marty_messages_dead_lettered_total`, the histogram
  /// `marty_handler_duration_seconds` and the gauge `marty_consumer_lag_messages` (only for
  /// subscriptions whose lag was sampled), labelled by `backend`, `subject` and (for
  /// subscriptions) `group`.
  std::string prometheus_text() const;

 private:
  std::uint64_t generation_;  // tells this object from an earlier one at the same address
  mutable std::shared_mutex mutex_;
  std::map<std::tuple<std::string, std::string>, std::unique_ptr<PublishCounters>, std::less<>>
      publishers_;
  std::map<std::tuple<std::string, std::string, std::string>, std::unique_ptr<SubscriptionCounters>,
           std::less<>>
      subscriptions_;
};

}  // namespace marty::messaging
