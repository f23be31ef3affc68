#include "marty/messaging/metrics.hpp"

#include <charconv>
#include <mutex>

namespace marty::messaging {

namespace {

std::atomic<std::uint64_t> next_generation{1};

// A label value as the exposition format writes it: backslash, double quote and line feed
// escaped.
std::string escaped(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// The shortest text that reads back as `value` ("0.0005", not "0.00050000000000000001").
std::string number(double value) {
  char buffer[400];  // fixed notation of any double fits
  const auto written =
      std::to_chars(buffer, buffer + sizeof(buffer), value, std::chars_format::fixed);
  return std::string(buffer, written.ptr);
}

void family(std::string& out, const char* name, const char* type, const char* help) {
  out.append("# HELP ").append(name).append(" ").append(help);
  out.append("\n# TYPE ").append(name).append(" ").append(type).append("\n");
}

void sample(std::string& out, std::string_view name, const std::string& labels,
            std::string_view value) {
  out.append(name).append("{").append(labels).append("} ").append(value).append("\n");
}

}  // namespace

MessagingMetrics::MessagingMetrics() : generation_(next_generation.fetch_add(1)) {}

void MessagingMetrics::SubscriptionCounters::observe_handler(std::chrono::nanoseconds duration) {
  const double seconds = std::chrono::duration<double>(duration).count();
  std::size_t bucket = 0;
  while (bucket < kDurationBuckets.size() && seconds > kDurationBuckets[bucket]) ++bucket;
  buckets[bucket].fetch_add(1, std::memory_order_relaxed);
  handler_nanoseconds.fetch_add(static_cast<std::uint64_t>(duration.count()),
                                std::memory_order_relaxed);
}

MessagingMetrics::PublishCounters& MessagingMetrics::publisher(std::string_view backend,
                                                               std::string_view subject) {
  // A publisher usually repeats its last (backend, subject): remembered per thread, so the
  // common case takes no lock. Counters are never removed, so a remembered one stays valid
  // while its MessagingMetrics lives (`generation` tells a new object at the same address).
  struct Last {
    std::uint64_t generation = 0;
    std::string backend, subject;
    PublishCounters* counters = nullptr;
  };
  thread_local Last last;
  if (last.generation == generation_ && last.subject == subject && last.backend == backend) {
    return *last.counters;
  }
  PublishCounters* found = nullptr;
  {
    const auto key = std::make_tuple(backend, subject);
    std::shared_lock lock(mutex_);
    if (auto it = publishers_.find(key); it != publishers_.end()) found = it->second.get();
  }
  if (found == nullptr) {
    std::unique_lock lock(mutex_);
    auto& slot = publishers_[std::make_tuple(std::string(backend), std::string(subject))];
    if (!slot) slot = std::make_unique<PublishCounters>();
    found = slot.get();
  }
  last.generation = generation_;
  last.backend = backend;
  last.subject = subject;
  last.counters = found;
  return *found;
}

MessagingMetrics::SubscriptionCounters& MessagingMetrics::subscription(std::string_view backend,
                                                                       std::string_view subject,
                                                                       std::string_view group) {
  const auto key = std::make_tuple(backend, subject, group);
  {
    std::shared_lock lock(mutex_);
    if (auto it = subscriptions_.find(key); it != subscriptions_.end()) return *it->second;
  }
  std::unique_lock lock(mutex_);
  auto& slot = subscriptions_[std::make_tuple(std::string(backend), std::string(subject),
                                              std::string(group))];
  if (!slot) slot = std::make_unique<SubscriptionCounters>();
  return *slot;
}

std::string MessagingMetrics::prometheus_text() const {
  std::shared_lock lock(mutex_);
  std::string out;
  auto publish_labels = [](const auto& key) {
    return "backend=\"" + escaped(std::get<0>(key)) + "\",subject=\"" + escaped(std::get<1>(key)) +
           "\"";
  };
  auto subscription_labels = [](const auto& key) {
    return "backend=\"" + escaped(std::get<0>(key)) + "\",subject=\"" + escaped(std::get<1>(key)) +
           "\",group=\"" + escaped(std::get<2>(key)) + "\"";
  };
  struct PublishFamily {
    const char* name;
    const char* help;
    std::atomic<std::uint64_t> PublishCounters::*counter;
  };
  for (const PublishFamily& f :
       {PublishFamily{"marty_messages_published_total", "Messages the bus published.",
                      &PublishCounters::published},
        PublishFamily{"marty_publish_failures_total", "Publishes the backend refused or lost.",
                      &PublishCounters::failed}}) {
    family(out, f.name, "counter", f.help);
    for (const auto& [key, counters] : publishers_) {
      sample(out, f.name, publish_labels(key), std::to_string((*counters.*f.counter).load()));
    }
  }
  struct SubscriptionFamily {
    const char* name;
    const char* help;
    std::atomic<std::uint64_t> SubscriptionCounters::*counter;
  };
  for (const SubscriptionFamily& f : {
           SubscriptionFamily{"marty_messages_delivered_total",
                              "Messages handed to a subscription's handler.",
                              &SubscriptionCounters::delivered},
           SubscriptionFamily{"marty_messages_redelivered_total",
                              "Deliveries of a message after its first.",
                              &SubscriptionCounters::redelivered},
           SubscriptionFamily{"marty_messages_acked_total", "Messages handled and acknowledged.",
                              &SubscriptionCounters::acked},
           SubscriptionFamily{"marty_messages_nacked_total",
                              "Messages whose handler failed, nacked for a retry.",
                              &SubscriptionCounters::nacked},
           SubscriptionFamily{"marty_messages_dead_lettered_total",
                              "Messages moved to the dead letters.",
                              &SubscriptionCounters::dead_lettered},
       }) {
    family(out, f.name, "counter", f.help);
    for (const auto& [key, counters] : subscriptions_) {
      sample(out, f.name, subscription_labels(key), std::to_string((*counters.*f.counter).load()));
    }
  }
  const char* histogram = "marty_handler_duration_seconds";
  family(out, histogram, "histogram", "How long handlers ran.");
  for (const auto& [key, counters] : subscriptions_) {
    const std::string labels = subscription_labels(key);
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i <= kDurationBuckets.size(); ++i) {
      cumulative += counters->buckets[i].load();
      const std::string le = i < kDurationBuckets.size() ? number(kDurationBuckets[i]) : "+Inf";
      sample(out, "marty_handler_duration_seconds_bucket", labels + ",le=\"" + le + "\"",
             std::to_string(cumulative));
    }
    sample(out, "marty_handler_duration_seconds_sum", labels,
           number(static_cast<double>(counters->handler_nanoseconds.load()) / 1e9));
    // The +Inf bucket's count, so a scrape during a run never sees the two disagree.
    sample(out, "marty_handler_duration_seconds_count", labels, std::to_string(cumulative));
  }
  const char* lag = "marty_consumer_lag_messages";
  family(out, lag, "gauge",
         "Messages stored for the consumer group and not yet acknowledged by it, at the last "
         "sample.");
  for (const auto& [key, counters] : subscriptions_) {
    const std::int64_t value = counters->lag.load();
    if (value >= 0) sample(out, lag, subscription_labels(key), std::to_string(value));
  }
  return out;
}

}  // namespace marty::messaging
