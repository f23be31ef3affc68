// The bus's metrics on the embedded backend, and their Prometheus text. (Every broker backend
// counts through the same bus code; the conformance suite checks the counts on each.)
#include <gtest/gtest.h>

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "../support/prometheus_text.hpp"
#include "../support/test_loop.hpp"
#include "marty/messaging.hpp"
#include "marty/messaging/metrics_endpoint.hpp"

namespace marty::messaging {
namespace {

using namespace std::chrono_literals;
using testing::eventually;
using testing::parse_prometheus_text;

std::unique_ptr<BlockingEventBus> fast_retrying_bus() {
  auto bus = std::make_unique<BlockingEventBus>();
  auto config = default_pattern_config(MessagingPattern::pub_sub);
  config.initial_backoff = 5ms;
  config.max_backoff = 20ms;
  EXPECT_TRUE(bus->bus().update_pattern_config(MessagingPattern::pub_sub, config));
  EXPECT_TRUE(bus->start());
  return bus;
}

TEST(MetricsTest, CountsWhatHappenedToEveryMessage) {
  auto bus = fast_retrying_bus();
  std::mutex mutex;
  std::map<int, int> attempts;
  auto handler = sync_handler([&](const Message& m) -> Result<void> {
    const int n = m.json()["n"];
    std::lock_guard lock(mutex);
    if (n == 1 && ++attempts[n] == 1) return Error(errc::unavailable, "first attempt fails");
    if (n == 2) return Error(errc::invalid_argument, "bad order");
    return ok();
  });
  ASSERT_TRUE(bus->subscribe_to_events({"order_placed"}, handler, "billing"));
  for (int n = 0; n < 3; ++n) ASSERT_TRUE(bus->publish_event("order_placed", {{"n", n}}));
  const std::string subject = "events.order_placed";
  const std::map<std::string, std::string> labels{
      {"backend", "memory"}, {"subject", subject}, {"group", "billing"}};
  testing::PromExposition text;
  ASSERT_TRUE(eventually([&] {
    text = parse_prometheus_text(bus->bus().metrics().prometheus_text());
    return text.value("marty_messages_acked_total", labels) == 2.0 &&
           text.value("marty_messages_dead_lettered_total", labels) == 1.0;
  })) << bus->bus().metrics().prometheus_text();
  ASSERT_TRUE(text.error.empty()) << text.error;
  EXPECT_EQ(
      text.value("marty_messages_published_total", {{"backend", "memory"}, {"subject", subject}}),
      3.0);
  EXPECT_EQ(text.value("marty_publish_failures_total", {{"subject", subject}}), 0.0);
  EXPECT_EQ(text.value("marty_messages_delivered_total", labels), 4.0);
  EXPECT_EQ(text.value("marty_messages_redelivered_total", labels), 1.0);
  EXPECT_EQ(text.value("marty_messages_nacked_total", labels), 1.0);
  EXPECT_EQ(text.value("marty_handler_duration_seconds_count", labels), 4.0);
  auto inf = labels;
  inf["le"] = "+Inf";
  EXPECT_EQ(text.value("marty_handler_duration_seconds_bucket", inf), 4.0);
  EXPECT_EQ(text.types["marty_handler_duration_seconds"], "histogram");
  EXPECT_EQ(text.types["marty_messages_acked_total"], "counter");
}

TEST(MetricsTest, HandlerDurationsFallInTheirBuckets) {
  MessagingMetrics metrics;
  auto& counters = metrics.subscription("memory", "events.x", "g");
  counters.observe_handler(std::chrono::microseconds(300));  // <= 0.0005
  counters.observe_handler(std::chrono::milliseconds(30));   // <= 0.05
  counters.observe_handler(std::chrono::seconds(60));        // +Inf only
  const auto text = parse_prometheus_text(metrics.prometheus_text());
  ASSERT_TRUE(text.error.empty()) << text.error;
  auto at = [&](const char* le) {
    return text.value("marty_handler_duration_seconds_bucket", {{"le", le}});
  };
  EXPECT_EQ(at("0.0005"), 1.0);
  EXPECT_EQ(at("0.025"), 1.0);
  EXPECT_EQ(at("0.05"), 2.0);
  EXPECT_EQ(at("10"), 2.0);
  EXPECT_EQ(at("+Inf"), 3.0);
  const auto sum = text.value("marty_handler_duration_seconds_sum", {{"group", "g"}});
  ASSERT_TRUE(sum);
  EXPECT_NEAR(*sum, 60.0303, 1e-6);
}

TEST(MetricsTest, LabelValuesAreEscaped) {
  MessagingMetrics metrics;
  metrics.publisher("memory", "events.a\"b\\c\nd").published += 2;
  const std::string raw = metrics.prometheus_text();
  EXPECT_NE(raw.find(R"(subject="events.a\"b\\c\nd")"), std::string::npos) << raw;
  const auto text = parse_prometheus_text(raw);
  ASSERT_TRUE(text.error.empty()) << text.error;
  EXPECT_EQ(text.value("marty_messages_published_total", {{"subject", "events.a\"b\\c\nd"}}), 2.0);
}

TEST(MetricsTest, QueriesAndRepliesAreCounted) {
  BlockingEventBus bus;
  ASSERT_TRUE(bus.start());
  ASSERT_TRUE(bus.handle_queries(
      {"price"}, sync_query_handler([](const Message&) -> Result<Json> { return Json(42); }),
      "catalog"));
  for (int i = 0; i < 50; ++i) ASSERT_EQ(*bus.query("price", {}, "catalog", 5s), 42);
  auto unanswered = bus.query("price", {}, "nobody", 50ms);
  ASSERT_FALSE(unanswered);
  const auto text = parse_prometheus_text(bus.bus().metrics().prometheus_text());
  ASSERT_TRUE(text.error.empty()) << text.error;
  EXPECT_EQ(text.value("marty_messages_acked_total",
                       {{"subject", "queries.catalog.price"}, {"group", "catalog"}}),
            50.0);
  EXPECT_EQ(text.value("marty_messages_published_total", {{"subject", "queries.catalog.price"}}),
            50.0);
  // Replies are counted by the query they answer, not by their address: that is new for every
  // query, and the series would grow without bound.
  EXPECT_EQ(
      text.value("marty_messages_published_total", {{"subject", "reply:queries.catalog.price"}}),
      50.0);
  std::set<std::string> published;
  for (const auto& sample : text.samples) {
    if (sample.name == "marty_messages_published_total") {
      published.insert(sample.labels.at("subject"));
    }
  }
  EXPECT_EQ(published, (std::set<std::string>{"queries.catalog.price", "queries.nobody.price",
                                              "reply:queries.catalog.price"}));
}

// Waits, suspended, until `open` is set.
asio::awaitable<void> wait_until(const std::atomic<bool>& open) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  while (!open) {
    timer.expires_after(5ms);
    std::error_code ignored;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
  }
}

TEST(MetricsTest, ConsumerLagGaugeFollowsTheGroupsBacklog) {
  EventBusOptions options;
  options.consumer_lag_interval = 20ms;
  BlockingEventBus bus(options);
  ASSERT_TRUE(bus.start());
  std::atomic<bool> open{false};
  std::atomic<int> handled{0};
  MessageHandler gated = [&open, &handled](Message) -> asio::awaitable<Result<void>> {
    co_await wait_until(open);
    ++handled;
    co_return ok();
  };
  ASSERT_TRUE(bus.subscribe_to_events({"invoice_due"}, gated, "dunning"));
  // A subscriber of its own has no group, so no lag.
  ASSERT_TRUE(
      bus.subscribe_to_events({"invoice_due"}, sync_handler([](const Message&) { return ok(); })));
  for (int n = 0; n < 4; ++n) ASSERT_TRUE(bus.publish_event("invoice_due", {{"n", n}}));
  const std::map<std::string, std::string> labels{
      {"backend", "memory"}, {"subject", "events.invoice_due"}, {"group", "dunning"}};
  testing::PromExposition text;
  // One in the handler and three behind it: all four wait for the group's acknowledgement.
  ASSERT_TRUE(eventually([&] {
    text = parse_prometheus_text(bus.bus().metrics().prometheus_text());
    return text.value("marty_consumer_lag_messages", labels) == 4.0;
  })) << bus.bus().metrics().prometheus_text();
  ASSERT_TRUE(text.error.empty()) << text.error;
  EXPECT_EQ(text.types["marty_consumer_lag_messages"], "gauge");
  EXPECT_EQ(text.value("marty_consumer_lag_messages", {{"group", ""}}), std::nullopt);
  auto lag = bus.consumer_lag("events.invoice_due", "dunning");
  ASSERT_TRUE(lag) << lag.error().describe();
  EXPECT_EQ(*lag, 4u);

  open = true;
  ASSERT_TRUE(eventually([&] {
    return handled == 4 && parse_prometheus_text(bus.bus().metrics().prometheus_text())
                                   .value("marty_consumer_lag_messages", labels) == 0.0;
  })) << bus.bus().metrics().prometheus_text();
  EXPECT_EQ(*bus.consumer_lag("events.invoice_due", "dunning"), 0u);
  EXPECT_TRUE(bus.stop());
}

TEST(MetricsTest, ConsumerLagQueriesAreChecked) {
  BlockingEventBus bus;
  ASSERT_TRUE(bus.start());
  ASSERT_TRUE(bus.handle_commands({"send_reminder"},
                                  sync_handler([](const Message&) { return ok(); }), "mailer"));
  auto commands = bus.consumer_lag("commands.mailer.send_reminder", "mailer");
  ASSERT_TRUE(commands) << commands.error().describe();
  EXPECT_EQ(*commands, 0u);
  auto unknown = bus.consumer_lag("events.invoice_due", "nobody");
  ASSERT_FALSE(unknown);
  EXPECT_TRUE(unknown.error().is(errc::not_found)) << unknown.error().describe();
  for (const auto& [subject, group] :
       std::vector<std::pair<std::string, std::string>>{{"queries.mailer.status", "mailer"},
                                                        {"events.invoice_due", ""},
                                                        {"events.*", "dunning"},
                                                        {"", "dunning"}}) {
    auto refused = bus.consumer_lag(subject, group);
    ASSERT_FALSE(refused) << subject << " / " << group;
    EXPECT_TRUE(refused.error().is(errc::invalid_argument)) << refused.error().describe();
  }
  // Sampling off: no gauge, however long the group runs.
  EventBusOptions options;
  options.consumer_lag_interval = 0ms;
  BlockingEventBus quiet(options);
  ASSERT_TRUE(quiet.start());
  ASSERT_TRUE(quiet.subscribe_to_events(
      {"invoice_due"}, sync_handler([](const Message&) { return ok(); }), "dunning"));
  ASSERT_TRUE(quiet.publish_event("invoice_due", {{"n", 1}}));
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(quiet.bus().metrics().prometheus_text().find("marty_consumer_lag_messages{"),
            std::string::npos);
}

// A blocking HTTP exchange: sends `request` to 127.0.0.1:`port`, returns all it gets back.
std::string http_exchange(std::uint16_t port, const std::string& request) {
  asio::io_context io;
  asio::ip::tcp::socket socket(io);
  socket.connect({asio::ip::make_address("127.0.0.1"), port});
  asio::write(socket, asio::buffer(request));
  std::string reply;
  std::error_code error;
  char buffer[4096];
  while (true) {
    const std::size_t n = socket.read_some(asio::buffer(buffer), error);
    reply.append(buffer, n);
    if (error) break;
  }
  return reply;
}

TEST(MetricsEndpointTest, ServesTheMetricsToAScrape) {
  testing::TestLoop loop;
  MessagingMetrics metrics;
  metrics.publisher("memory", "events.order_placed").published += 7;
  auto endpoint = MetricsEndpoint::start(loop.executor(), "127.0.0.1", 0,
                                         [&metrics] { return metrics.prometheus_text(); });
  ASSERT_TRUE(endpoint) << endpoint.error().describe();
  const std::uint16_t port = (*endpoint)->port();
  ASSERT_NE(port, 0);

  const std::string ok = http_exchange(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(ok.starts_with("HTTP/1.1 200 OK\r\n")) << ok;
  EXPECT_NE(ok.find("Content-Type: text/plain; version=0.0.4"), std::string::npos) << ok;
  const std::string body = ok.substr(ok.find("\r\n\r\n") + 4);
  const auto text = parse_prometheus_text(body);
  ASSERT_TRUE(text.error.empty()) << text.error;
  EXPECT_EQ(text.value("marty_messages_published_total", {{"subject", "events.order_placed"}}),
            7.0);

  EXPECT_TRUE(http_exchange(port, "GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
  EXPECT_TRUE(http_exchange(port, "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
  EXPECT_TRUE(http_exchange(port, "hello\r\n\r\n").starts_with("HTTP/1.1 400"));
  EXPECT_TRUE(http_exchange(port, "GET /metrics HTTP/1.1\r\n" + std::string(9000, 'x'))
                  .starts_with("HTTP/1.1 400"));

  (*endpoint)->stop();
  EXPECT_TRUE(eventually([&] {
    try {
      http_exchange(port, "GET /metrics HTTP/1.1\r\n\r\n");
      return false;
    } catch (const std::system_error&) {
      return true;  // refused: nobody listens any more
    }
  }));
}

TEST(MetricsEndpointTest, BadAddressesAreNamed) {
  testing::TestLoop loop;
  auto bad = MetricsEndpoint::start(loop.executor(), "not-an-address", 0, [] { return ""; });
  ASSERT_FALSE(bad);
  EXPECT_TRUE(bad.error().is(errc::invalid_argument));
  EXPECT_NE(bad.error().message().find("not-an-address"), std::string::npos);
  auto first = MetricsEndpoint::start(loop.executor(), "127.0.0.1", 0, [] { return ""; });
  ASSERT_TRUE(first);
  auto taken =
      MetricsEndpoint::start(loop.executor(), "127.0.0.1", (*first)->port(), [] { return ""; });
  ASSERT_FALSE(taken);
  EXPECT_TRUE(taken.error().is(errc::unavailable)) << taken.error().describe();
  EXPECT_NE(taken.error().message().find(std::to_string((*first)->port())), std::string::npos);
}

}  // namespace
}  // namespace marty::messaging
