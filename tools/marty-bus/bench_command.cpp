// bench: throughput and latency of one pattern on a configured backend, end to end through the
// bus (send, broker, handler), with a progress bar.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <iostream>
#include <mutex>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>

#include "cli.hpp"

namespace marty::bus_cli {

namespace {

using Steady = std::chrono::steady_clock;
constexpr std::string_view kSentHeader = "marty-bench-sent";

struct BenchSettings {
  std::string pattern = "events";
  std::size_t messages = 10'000;
  std::size_t size = 128;
  std::size_t in_flight = 64;
  std::string timeout = "2m";
};

// What the senders and the handlers share. Handlers run on two bus threads.
struct BenchState {
  std::atomic<std::size_t> next{0};  // the next message to send
  std::atomic<std::size_t> sent{0};
  std::atomic<std::size_t> completed{0};  // received (events, commands) or answered (queries)
  std::mutex mutex;
  std::vector<double> latencies_us;
  std::optional<Error> error;
  bool closed = false;  // results are taken: what the stopping bus reports after is not the run's

  void record(double micros) {
    std::lock_guard lock(mutex);
    latencies_us.push_back(micros);
  }
  void failed(Error e) {
    std::lock_guard lock(mutex);
    if (!error && !closed) error = std::move(e);
  }
  // Ends the run: later failures (sends cancelled by the stop) are not reported; the first
  // failure during the run is returned.
  std::optional<Error> close() {
    std::lock_guard lock(mutex);
    closed = true;
    return error;
  }
};

double micros_since(std::int64_t sent_ns) {
  const auto now = Steady::now().time_since_epoch();
  return static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(now).count() -
                             sent_ns) /
         1'000.0;
}

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Steady::now().time_since_epoch())
      .count();
}

// One sender: takes message numbers until all are taken, sending each and awaiting the broker.
asio::awaitable<void> send_loop(std::shared_ptr<UnifiedEventBus> bus,
                                std::shared_ptr<BenchState> state, std::string pattern,
                                std::string type, std::string service, Json data,
                                std::size_t total) {
  while (true) {
    const std::size_t i = state->next.fetch_add(1);
    if (i >= total) co_return;
    {
      std::lock_guard lock(state->mutex);
      if (state->error || state->closed) co_return;
    }
    MessageMetadata metadata;
    const std::int64_t sent_at = now_ns();
    metadata.headers[std::string(kSentHeader)] = std::to_string(sent_at);
    Result<void> outcome;
    if (pattern == "events") {
      outcome = co_await bus->publish_event(type, data, metadata);
    } else if (pattern == "commands") {
      outcome = co_await bus->send_command(type, data, service, metadata);
    } else {
      auto reply = co_await bus->query(type, data, service, std::nullopt, metadata);
      if (reply) {
        state->record(micros_since(sent_at));
        state->completed.fetch_add(1);
      } else {
        outcome = reply.error();
      }
    }
    if (!outcome) {
      state->failed(outcome.error());
      co_return;
    }
    state->sent.fetch_add(1);
  }
}

void draw_progress(std::size_t done, std::size_t total, double seconds) {
  constexpr int kWidth = 30;
  done = std::min(done, total);  // redeliveries may count past the total
  const int filled = static_cast<int>(kWidth * done / std::max<std::size_t>(total, 1));
  std::fprintf(stderr, "\r[%s%s] %3zu%% %zu/%zu  %.0f msg/s ", std::string(filled, '#').c_str(),
               std::string(kWidth - filled, ' ').c_str(),
               100 * done / std::max<std::size_t>(total, 1), done, total,
               seconds > 0 ? static_cast<double>(done) / seconds : 0.0);
}

double percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  return sorted[std::min(sorted.size() - 1,
                         static_cast<std::size_t>(q * static_cast<double>(sorted.size())))];
}

std::string micros_text(double us) {
  char text[32];
  if (us >= 1'000) {
    std::snprintf(text, sizeof text, "%.2f ms", us / 1'000);
  } else {
    std::snprintf(text, sizeof text, "%.0f us", us);
  }
  return text;
}

}  // namespace

void add_bench_command(CLI::App& app, GlobalOptions& options) {
  auto* command = app.add_subcommand(
      "bench", "throughput and latency (p50/p99/p999) of a pattern on a backend");
  auto s = std::make_shared<BenchSettings>();
  command
      ->add_option("-p,--pattern", s->pattern,
                   "events (pub/sub, one consumer group), commands or queries")
      ->check(CLI::IsMember({"events", "commands", "queries"}));
  command->add_option("-n,--messages", s->messages, "how many (default 10000)")
      ->check(CLI::PositiveNumber);
  command->add_option("--size", s->size, "payload bytes (default 128)");
  command->add_option("--in-flight", s->in_flight, "sends awaiting the broker at once (default 64)")
      ->check(CLI::PositiveNumber);
  command->add_option("--timeout", s->timeout, "give up after this long (default 2m)");
  command->callback([&options, s] {
    const auto limit = duration_argument(s->timeout, "--timeout");
    Session session(options);
    session.start();
    auto bus = session.shared_bus();
    auto state = std::make_shared<BenchState>();
    state->latencies_us.reserve(s->messages);
    const std::string run = std::to_string(::getpid()) + "_" + std::to_string(now_ns() % 1'000'000);
    const std::string type = "marty_bench_" + run;
    const std::string service = "marty-bench-" + run;
    Json data = {{"padding", std::string(s->size > 16 ? s->size - 16 : 0, 'x')}};

    auto on_message = sync_handler([state](const Message& message) -> Result<void> {
      auto sent = message.metadata().headers.find(std::string(kSentHeader));
      if (sent != message.metadata().headers.end())
        state->record(micros_since(std::stoll(sent->second)));
      state->completed.fetch_add(1);
      return ok();
    });
    if (s->pattern == "events") {
      need(session.bus().subscribe_to_events({type}, on_message, service));
    } else if (s->pattern == "commands") {
      need(session.bus().handle_commands({type}, on_message, service));
    } else {
      need(session.bus().handle_queries(
          {type}, sync_query_handler([](const Message&) -> Result<Json> { return Json::object(); }),
          service));
    }
    const auto backend = need(
        bus->backend_for(type, s->pattern == "events"     ? MessagingPattern::pub_sub
                               : s->pattern == "commands" ? MessagingPattern::point_to_point
                                                          : MessagingPattern::request_response));
    const auto started = Steady::now();
    for (std::size_t i = 0; i < std::min(s->in_flight, s->messages); ++i) {
      asio::co_spawn(bus->get_executor(),
                     send_loop(bus, state, s->pattern, type, service, data, s->messages),
                     asio::detached);
    }
    const bool tty = ::isatty(STDERR_FILENO) != 0;
    auto last_draw = Steady::now();
    const bool done = wait_until(
        [&] {
          if (tty && Steady::now() - last_draw > std::chrono::milliseconds(100)) {
            draw_progress(state->completed.load(), s->messages,
                          std::chrono::duration<double>(Steady::now() - started).count());
            last_draw = Steady::now();
          }
          // Done when every message arrived and every send was acknowledged: stopping the bus
          // while acknowledgements are on their way would fail those sends.
          const bool all_sent = s->pattern == "queries" || state->sent.load() >= s->messages;
          std::lock_guard lock(state->mutex);
          return (state->completed.load() >= s->messages && all_sent) || state->error.has_value();
        },
        limit);
    const double seconds = std::chrono::duration<double>(Steady::now() - started).count();
    if (tty) {
      draw_progress(state->completed.load(), s->messages, seconds);
      std::fprintf(stderr, "\n");
    }
    const auto failure = state->close();
    session.stop();
    if (failure) throw CommandFailed{*failure};
    if (!done && stop_requested()) {
      fail(errc::cancelled, "bench: interrupted after " + std::to_string(state->completed.load()) +
                                " of " + std::to_string(s->messages));
    }
    if (!done) {
      fail(errc::deadline_exceeded, "bench: " + std::to_string(state->completed.load()) + " of " +
                                        std::to_string(s->messages) + " done when stopped");
    }
    std::vector<double> sorted;
    {
      std::lock_guard lock(state->mutex);
      sorted = state->latencies_us;
    }
    std::sort(sorted.begin(), sorted.end());
    const double throughput = static_cast<double>(s->messages) / seconds;
    const double p50 = percentile(sorted, 0.50), p99 = percentile(sorted, 0.99),
                 p999 = percentile(sorted, 0.999);
    if (options.json) {
      std::cout << Json{{"backend", std::string(to_string(backend))},
                        {"pattern", s->pattern},
                        {"messages", s->messages},
                        {"payload_bytes", s->size},
                        {"in_flight", s->in_flight},
                        {"seconds", seconds},
                        {"throughput_per_second", throughput},
                        {"latency_us", {{"p50", p50}, {"p99", p99}, {"p999", p999}}}}
                       .dump()
                << "\n";
      return;
    }
    std::printf("backend %s, %s, %zu messages of %zu bytes, %zu in flight\n",
                std::string(to_string(backend)).c_str(), s->pattern.c_str(), s->messages, s->size,
                s->in_flight);
    std::printf("  throughput  %.0f msg/s (%.2f s)\n", throughput, seconds);
    std::printf("  latency     p50 %s  p99 %s  p999 %s\n", micros_text(p50).c_str(),
                micros_text(p99).c_str(), micros_text(p999).c_str());
  });
}

}  // namespace marty::bus_cli
