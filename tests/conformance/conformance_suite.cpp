// The conformance suite: one set of behaviours every backend must show through the bus.
// Modelled on Watermill's universal pub/sub tests; skips only what a backend's declared
// capabilities exclude, and says so in the report.
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include "../support/prometheus_text.hpp"
#include "../support/test_loop.hpp"
#include "conformance.hpp"

namespace marty::messaging::conformance {
namespace {

using namespace std::chrono_literals;
using marty::messaging::testing::eventually;

#define REQUIRE_CAPABILITY(condition, what)                             \
  do {                                                                  \
    if (!(condition)) GTEST_SKIP() << "backend does not declare " what; \
  } while (false)

// Skips a test whose behaviour the backend has but its test environment cannot show.
#define REQUIRE_ENVIRONMENT_SHOWS(behaviour)                                     \
  do {                                                                           \
    if (const std::string why = cannot_show(behaviour); !why.empty()) {          \
      GTEST_SKIP() << "the test environment cannot show " behaviour ": " << why; \
    }                                                                            \
  } while (false)

// Thread-safe record of what a handler saw.
class Recorder {
 public:
  void add(const Message& message) {
    std::lock_guard lock(mutex_);
    messages_.push_back(message);
  }
  std::size_t size() const {
    std::lock_guard lock(mutex_);
    return messages_.size();
  }
  std::vector<Message> snapshot() const {
    std::lock_guard lock(mutex_);
    return messages_;
  }
  std::set<std::string> ids() const {
    std::set<std::string> out;
    for (const auto& m : snapshot()) out.insert(std::string(m.id()));
    return out;
  }
  MessageHandler handler(std::chrono::milliseconds work = 0ms) {
    return sync_handler([this, work](const Message& message) -> Result<void> {
      if (work.count() > 0) std::this_thread::sleep_for(work);
      add(message);
      return ok();
    });
  }

 private:
  mutable std::mutex mutex_;
  std::vector<Message> messages_;
};

// Thread-safe record of the spans a bus ended.
class SpanRecorder final : public Tracer {
 public:
  void on_span_end(const Span& span) override {
    std::lock_guard lock(mutex_);
    spans_.push_back(span);
  }
  std::size_t size() const {
    std::lock_guard lock(mutex_);
    return spans_.size();
  }
  std::vector<Span> snapshot() const {
    std::lock_guard lock(mutex_);
    return spans_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<Span> spans_;
};

}  // namespace

void Conformance::SetUp() {
  if (GetParam().reset) GetParam().reset();
  const std::string id = make_uuid_v7();
  uid_ = id.substr(id.size() - 12);
  caps_ = GetParam().connect()->capabilities();
}

std::unique_ptr<BlockingEventBus> Conformance::make_bus(std::string service,
                                                        std::shared_ptr<Tracer> tracer) {
  EventBusOptions options;
  options.service_name = std::move(service);
  options.drain_timeout = 10s;
  options.consumer_lag_interval = 200ms;  // every test also shows sampling ends with the bus
  if (tracer) options.tracer = std::move(tracer);
  auto bus = std::make_unique<BlockingEventBus>(options);
  EXPECT_TRUE(bus->bus().register_backend(GetParam().type, GetParam().connect()));
  for (MessagingPattern pattern : kAllPatterns) {
    if (!caps_.supports(pattern)) continue;
    auto config = default_pattern_config(pattern);
    // A backend that delivers at most once is configured (and tested) as such.
    if (caps_.delivery == DeliveryGuarantee::at_most_once) {
      config.delivery_guarantee = DeliveryGuarantee::at_most_once;
    }
    config.initial_backoff = 5ms;
    config.max_backoff = 50ms;
    EXPECT_TRUE(bus->bus().update_pattern_config(pattern, config));
  }
  auto started = bus->start();
  EXPECT_TRUE(started) << started.error().describe();
  return bus;
}

TEST_P(Conformance, RoundTripKeepsPayloadAndMetadata) {
  REQUIRE_CAPABILITY(caps().supports(MessagingPattern::pub_sub), "events (pub_sub)");
  // Declared before the buses: their handlers use it, so it must outlive them.
  Recorder got;
  auto consumer = make_bus("consumer");
  auto producer = make_bus("producer");
  const std::string type = unique("round_trip");
  ASSERT_TRUE(consumer->subscribe_to_events({type}, got.handler()));

  MessageMetadata metadata;
  metadata.message_id = make_uuid_v7();
  metadata.correlation_id = "corr-1";
  metadata.causation_id = "cause-1";
  metadata.partition_key = "key-1";
  metadata.priority = 5;
  metadata.ttl = 60s;
  metadata.source = "urn:test:producer";
  metadata.headers = {{"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
                      {"x-tenant", "acme"}};
  const Json data = {{"order_id", 42},
                     {"note", "h\u00e9llo \u2713"},
                     {"items", {1, 2, 3}},
                     {"nested", {{"ok", true}, {"ratio", 0.25}}}};
  const auto before = Clock::now();
  auto published = producer->publish_event(type, data, metadata);
  ASSERT_TRUE(published) << published.error().describe();
  ASSERT_TRUE(eventually([&] { return got.size() == 1; }));

  const Message m = got.snapshot()[0];
  EXPECT_EQ(m.json(), data);
  EXPECT_EQ(m.type(), type);
  EXPECT_EQ(m.subject(), "events." + type);
  EXPECT_EQ(m.id(), metadata.message_id);
  EXPECT_EQ(m.metadata().correlation_id, "corr-1");
  EXPECT_EQ(m.metadata().causation_id, "cause-1");
  EXPECT_EQ(m.metadata().partition_key, "key-1");
  EXPECT_EQ(m.metadata().priority, 5);
  ASSERT_TRUE(m.metadata().ttl.has_value());
  EXPECT_EQ(*m.metadata().ttl, 60s);
  EXPECT_EQ(m.metadata().source, "urn:test:producer");
  EXPECT_EQ(m.metadata().content_type, "application/json");
  ASSERT_TRUE(m.metadata().time.has_value());
  EXPECT_LE(std::chrono::abs(*m.metadata().time - before), 60s);
  if (caps().headers) {
    EXPECT_EQ(m.metadata().headers.at("traceparent"), metadata.headers.at("traceparent"));
    EXPECT_EQ(m.metadata().headers.at("x-tenant"), "acme");
  }

  // Raw bytes, including NUL and non-UTF-8 bytes, travel unchanged.
  const std::string raw("\x00\x01\xff\xfe binary\n", 13);
  MessageMetadata raw_metadata;
  raw_metadata.content_type = "application/octet-stream";
  auto raw_published =
      producer->run(producer->bus().publish_event(type, Message::from_bytes(raw, raw_metadata)));
  ASSERT_TRUE(raw_published) << raw_published.error().describe();
  ASSERT_TRUE(eventually([&] { return got.size() == 2; }));
  const Message r = got.snapshot()[1];
  EXPECT_EQ(r.bytes(), raw);
  EXPECT_EQ(r.metadata().content_type, "application/octet-stream");
  EXPECT_FALSE(r.try_json());
}

TEST_P(Conformance, ManyPublishersAndSubscribersLoseNothing) {
  REQUIRE_CAPABILITY(caps().supports(MessagingPattern::pub_sub), "events (pub_sub)");
  constexpr int kPublishers = 4;
  constexpr int kPerPublisher = 250;
  constexpr int kSubscribers = 3;
  const std::string type = unique("fan_out");
  // Declared before the buses: their handlers use it, so it must outlive them.
  std::vector<std::unique_ptr<Recorder>> received;
  std::atomic<int> failures{0};
  std::vector<std::unique_ptr<BlockingEventBus>> subscribers;
  for (int i = 0; i < kSubscribers; ++i) {
    subscribers.push_back(make_bus("subscriber"));
    received.push_back(std::make_unique<Recorder>());
    ASSERT_TRUE(subscribers.back()->subscribe_to_events({type}, received.back()->handler()));
  }
  auto producer = make_bus("producer");
  std::vector<std::thread> threads;
  for (int p = 0; p < kPublishers; ++p) {
    threads.emplace_back([&, p] {
      for (int i = 0; i < kPerPublisher; ++i) {
        if (!producer->publish_event(type, {{"publisher", p}, {"n", i}})) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  for (const auto& recorder : received) {
    EXPECT_TRUE(eventually([&] { return recorder->size() >= kPublishers * kPerPublisher; }, 30s));
    EXPECT_EQ(recorder->ids().size(), static_cast<std::size_t>(kPublishers * kPerPublisher));
  }
}

// A Publisher's sends (not awaited one by one) are all confirmed and all delivered, on every
// backend: natively where the backend submits batches, through the default path elsewhere.
TEST_P(Conformance, PublisherSendsAreConfirmedAndDelivered) {
  REQUIRE_CAPABILITY(caps().supports(MessagingPattern::pub_sub), "events (pub_sub)");
  constexpr int kSends = 200;
  const std::string type = unique("windowed");
  Recorder got;
  auto consumer = make_bus("consumer");
  ASSERT_TRUE(consumer->subscribe_to_events({type}, got.handler()));
  auto producer = make_bus("producer");
  PublisherOptions window;
  window.max_in_flight = 32;
  auto publisher = producer->bus().publisher(type, window);
  ASSERT_TRUE(publisher) << publisher.error().describe();
  std::atomic<int> confirmed{0}, failed{0};
  (*publisher)->on_confirm([&](std::uint64_t first, std::uint64_t last, const Result<void>& r) {
    (r ? confirmed : failed) += static_cast<int>(last - first + 1);
  });
  auto send_all = [&]() -> asio::awaitable<Result<void>> {
    for (int n = 0; n < kSends; ++n) {
      Json data{{"n", n}};
      auto sent = co_await (*publisher)->send_when_room(Message::from_json(std::move(data)));
      if (!sent) co_return sent.error();
    }
    co_return co_await (*publisher)->flush();
  };
  auto sent = producer->run(send_all());
  ASSERT_TRUE(sent) << sent.error().describe();
  EXPECT_EQ(confirmed.load(), kSends);
  EXPECT_EQ(failed.load(), 0);
  ASSERT_TRUE(eventually([&] { return got.size() >= kSends; }, 30s)) << got.size();
  std::set<int> numbers;
  for (const auto& m : got.snapshot()) {
    EXPECT_EQ(m.type(), type);
    numbers.insert(m.json()["n"].get<int>());
  }
  EXPECT_EQ(numbers.size(), static_cast<std::size_t>(kSends));
  EXPECT_EQ(got.ids().size(), static_cast<std::size_t>(kSends));
}

TEST_P(Conformance, ManyTopicsAtOnce) {
  REQUIRE_CAPABILITY(caps().supports(MessagingPattern::pub_sub), "events (pub_sub)");
  constexpr int kTopics = 40;
  constexpr int kEach = 5;
  // Declared before the buses: their handlers use it, so it must outlive them.
  Recorder got;
  auto consumer = make_bus();
  auto producer = make_bus();
  std::vector<std::string> types;
  for (int i = 0; i < kTopics; ++i) types.push_back(unique("topic" + std::to_string(i)));
  ASSERT_TRUE(consumer->subscribe_to_events(types, got.handler()));
  for (int n = 0; n < kEach; ++n) {
    for (const auto& type : types) ASSERT_TRUE(producer->publish_event(type, {{"n", n}}));
  }
  ASSERT_TRUE(eventually([&] { return got.size() >= kTopics * kEach; }, 30s));
  std::map<std::string, int> per_type;
  for (const auto& m : got.snapshot()) {
    EXPECT_EQ(m.subject(), "events." + std::string(m.type()));
    ++per_type[std::string(m.type())];
  }
  for (const auto& type : types) EXPECT_EQ(per_type[type], kEach) << type;
}

TEST_P(Conformance, TopicsAreIsolated) {
  REQUIRE_CAPABILITY(caps().supports(MessagingPattern::pub_sub), "events (pub_sub)");
  // Declared before the buses: their handlers use it, so it must outlive them.
  Recorder got;
  auto consumer = make_bus();
  auto producer = make_bus();
  const std::string wanted = unique("isolated_a");
  ASSERT_TRUE(consumer->subscribe_to_events({wanted}, got.handler()));
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(producer->publish_event(unique("isolated_b"), {{"n", i}}));
    ASSERT_TRUE(producer->publish_event(wanted + ".child", {{"n", i}}));
  }
  ASSERT_TRUE(producer->publish_event(wanted, {{"n", 99}}));
  ASSERT_TRUE(eventually([&] { return got.size() == 1; }));
  std::this_thread::sleep_for(100ms);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got.snapshot()[0].json()["n"], 99);
}

TEST_P(Conformance, FailedHandlerGetsTheMessageAgain) {
  REQUIRE_CAPABILITY(caps().supports(MessagingPattern::pub_sub), "events (pub_sub)");
  REQUIRE_CAPABILITY(caps().delivery != DeliveryGuarantee::at_most_once, "at-least-once delivery");
  REQUIRE_ENVIRONMENT_SHOWS("redelivery");
  // Declared before the buses: their handlers use it, so it must outlive them.
  std::mutex mutex;
  std::map<std::string, int> attempts;
  std::atomic<int> succeeded{0};
  auto consumer = make_bus();
  auto producer = make_bus();
  const std::string type = unique("redelivery");
  auto handler = sync_handler([&](const Message& m) -> Result<void> {
    std::lock_guard lock(mutex);
    if (++attempts[std::string(m.id())] == 1)
      return Error(errc::unavailable, "first attempt fails");
    ++succeeded;
    return ok();
  });
  ASSERT_TRUE(consumer->subscribe_to_events({type}, handler));
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(producer->publish_event(type, {{"n", i}}));
  ASSERT_TRUE(eventually([&] { return succeeded.load() == 20; }));
  std::lock_guard lock(mutex);
  for (const auto& [id, count] : attempts) EXPECT_EQ(count, 2) << id;
}

// At-least-once plus an idempotent consumer: copies of one message (same id) take effect once,
// and a failed handling is not remembered, so its retry (or a copy) still takes effect.
TEST_P(Conformance, IdempotentConsumerHandlesCopiesOnce) {
  REQUIRE_CAPABILITY(caps().supports(MessagingPattern::pub_sub), "events (pub_sub)");
  // Declared before the buses: their handlers use it, so it must outlive them.
  std::mutex mutex;
  std::map<std::string, int> calls, successes;
  std::atomic<int> deliveries{0};
  auto inner = sync_handler([&](const Message& m) -> Result<void> {
    std::lock_guard lock(mutex);
    if (++calls[m.json().at("name").get<std::string>()] == 1 &&
        m.json().at("name") == "fails-first") {
      return Error(errc::unavailable, "first attempt fails");
    }
    ++successes[m.json().at("name").get<std::string>()];
    return ok();
  });
  auto deduplicated =
      idempotent(inner, make_memory_idempotency_store(), IdempotencyOptions("audit"));
  ASSERT_TRUE(deduplicated) << deduplicated.error().describe();
  MessageHandler counted = [&,
                            handler = *deduplicated](Message m) -> asio::awaitable<Result<void>> {
    ++deliveries;
    co_return co_await handler(std::move(m));
  };
  auto consumer = make_bus();
  auto producer = make_bus();
  const std::string type = unique("audited");
  ASSERT_TRUE(consumer->subscribe_to_events({type}, counted));
  // Three copies of each of two messages (a publisher retrying after lost acks).
  for (const std::string name : {"fails-first", "plain"}) {
    MessageMetadata metadata;
    metadata.message_id = make_uuid_v7();
    for (int copy = 0; copy < 3; ++copy) {
      auto published = producer->publish_event(type, {{"name", name}}, metadata);
      ASSERT_TRUE(published) << published.error().describe();
    }
  }
  // A broker that drops republished ids delivers one copy of each (and the failed one again).
  const int copies_delivered = caps().deduplicates_by_id ? 2 : 6;
  ASSERT_TRUE(eventually([&] { return deliveries.load() >= copies_delivered; }, 20s))
      << deliveries.load();
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lock(mutex);
    return successes["fails-first"] == 1 && successes["plain"] == 1;
  }));
  std::this_thread::sleep_for(100ms);  // a late extra copy would show here
  std::lock_guard lock(mutex);
  EXPECT_EQ(successes["fails-first"], 1);
  EXPECT_EQ(successes["plain"], 1);
  EXPECT_EQ(calls["fails-first"], 2);  // the failure, then one success; the copies not at all
  EXPECT_EQ(calls["plain"], 1);
}

// Competing instances of a service sharing one store: a command sent three times (same id) is
// carried out once, whichever instances get the copies.
TEST_P(Conformance, InstancesSharingAStoreHandleACommandOnce) {
  REQUIRE_CAPABILITY(caps().supports(MessagingPattern::point_to_point), "commands");
  const std::string service = unique("payments");
  // Declared before the buses: their handlers use it, so it must outlive them.
  Recorder got;
  std::atomic<int> deliveries{0};
  auto store = make_memory_idempotency_store();
  auto deduplicated = idempotent(got.handler(), store, IdempotencyOptions(service));
  ASSERT_TRUE(deduplicated) << deduplicated.error().describe();
  MessageHandler counted = [&,
                            handler = *deduplicated](Message m) -> asio::awaitable<Result<void>> {
    ++deliveries;
    co_return co_await handler(std::move(m));
  };
  auto instance_1 = make_bus(service);
  auto instance_2 = make_bus(service);
  ASSERT_TRUE(instance_1->handle_commands({"refund"}, counted, service));
  ASSERT_TRUE(instance_2->handle_commands({"refund"}, counted, service));
  auto sender = make_bus("orders");
  std::set<std::string> sent_ids;
  for (int order = 0; order < 5; ++order) {
    MessageMetadata metadata;
    metadata.message_id = make_uuid_v7();
    sent_ids.insert(metadata.message_id);
    for (int copy = 0; copy < 3; ++copy) {
      auto sent = sender->send_command("refund", {{"order", order}}, service, metadata);
      ASSERT_TRUE(sent) << sent.error().describe();
    }
  }
  const int copies_delivered = caps().deduplicates_by_id ? 5 : 15;
  ASSERT_TRUE(eventually([&] { return deliveries.load() >= copies_delivered; }, 20s))
      << deliveries.load();
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(got.size(), 5u);
  EXPECT_EQ(got.ids(), sent_ids);
}

// HandlerOptions.concurrency: a slow message no longer holds back the ones after it, and
// stop() still waits for it.
TEST_P(Conformance, ConcurrentHandlersLetOthersPassASlowMessage) {
  REQUIRE_CAPABILITY(caps().supports(MessagingPattern::pub_sub), "events (pub_sub)");
  // Declared before the buses: their handlers use it, so it must outlive them.
  Recorder got;
  std::atomic<bool> release{false}, slow_done{false};
  MessageHandler handler = [&](Message m) -> asio::awaitable<Result<void>> {
    if (m.json().at("name") == "slow") {
      asio::steady_timer timer(co_await asio::this_coro::executor);
      while (!release) {
        timer.expires_after(5ms);
        co_await timer.async_wait(asio::use_awaitable);
      }
      slow_done = true;
    }
    got.add(m);
    co_return ok();
  };
  auto consumer = make_bus();
  auto producer = make_bus();
  const std::string type = unique("mixed");
  HandlerOptions options;
  options.concurrency = 4;
  ASSERT_TRUE(consumer->subscribe_to_events({type}, handler, "", options));
  ASSERT_TRUE(producer->publish_event(type, {{"name", "slow"}}));
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(producer->publish_event(type, {{"name", "fast"}}));
  ASSERT_TRUE(eventually([&] { return got.size() == 10; }, 20s)) << got.size();
  EXPECT_FALSE(slow_done.load()) << "the fast messages waited for the slow one";
  release = true;
  ASSERT_TRUE(eventually([&] { return got.size() == 11; }));
  auto stopped = consumer->stop();
  EXPECT_TRUE(stopped) << stopped.error().describe();
}

// With concurrency, messages of one partition key are still handled one at a time, in order,
// however long each takes; other keys go on meanwhile.
TEST_P(Conformance, PerKeyOrderHoldsUnderConcurrency) {
  REQUIRE_CAPABILITY(caps().supports(MessagingPattern::pub_sub), "events (pub_sub)");
  REQUIRE_CAPABILITY(caps().ordering != Ordering::none, "per-key ordering");
  constexpr int kPerKey = 30;
  // Declared before the buses: their handlers use it, so it must outlive them.
  std::mutex mutex;
  std::map<std::string, std::vector<int>> seen;
  std::map<std::string, int> running;
  std::atomic<int> overlaps{0};
  MessageHandler handler = [&](Message m) -> asio::awaitable<Result<void>> {
    const std::string key = m.metadata().partition_key;
    {
      std::lock_guard lock(mutex);
      if (++running[key] > 1) ++overlaps;
    }
    // Earlier messages take longer, so that without the per-key gate later ones would overtake.
    asio::steady_timer timer(co_await asio::this_coro::executor);
    timer.expires_after(std::chrono::milliseconds(kPerKey - m.json().at("n").get<int>()) / 3);
    co_await timer.async_wait(asio::use_awaitable);
    std::lock_guard lock(mutex);
    --running[key];
    seen[key].push_back(m.json().at("n").get<int>());
    co_return ok();
  };
  auto consumer = make_bus();
  auto producer = make_bus();
  const std::string type = unique("keyed");
  HandlerOptions options;
  options.concurrency = 8;
  ASSERT_TRUE(consumer->subscribe_to_events({type}, handler, "", options));
  for (int n = 0; n < kPerKey; ++n) {
    for (const std::string key : {"a", "b", "c"}) {
      MessageMetadata metadata;
      metadata.partition_key = key;
      ASSERT_TRUE(producer->publish_event(type, {{"n", n}}, metadata));
    }
  }
  ASSERT_TRUE(eventually(
      [&] {
        std::lock_guard lock(mutex);
        return seen["a"].size() + seen["b"].size() + seen["c"].size() == 3 * kPerKey;
      },
      20s));
  std::vector<int> in_order(kPerKey);
  for (int n = 0; n < kPerKey; ++n) in_order[static_cast<std::size_t>(n)] = n;
  std::lock_guard lock(mutex);
  for (const std::string key : {"a", "b", "c"}) EXPECT_EQ(seen[key], in_order) << key;
  EXPECT_EQ(overlaps.load(), 0);
}

// HandlerOptions.timeout: a call that runs too long is cancelled and fails, so the message is
// retried like any failure.
TEST_P(Conformance, HandlerTimeoutCancelsTheCallAndRetries) {
  REQUIRE_CAPABILITY(caps().supports(MessagingPattern::point_to_point), "commands");
  REQUIRE_CAPABILITY(caps().delivery != DeliveryGuarantee::at_most_once, "at-least-once delivery");
  REQUIRE_ENVIRONMENT_SHOWS("redelivery");
  const std::string service = unique("slowpoke");
  // Declared before the buses: their handlers use it, so it must outlive them.
  std::atomic<int> calls{0}, cancelled{0}, succeeded{0};
  MessageHandler handler = [&](Message) -> asio::awaitable<Result<void>> {
    if (++calls == 1) {
      asio::steady_timer timer(co_await asio::this_coro::executor);
      timer.expires_after(30s);
      asio::error_code ec;
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (ec == asio::error::operation_aborted) ++cancelled;
      co_return Error(errc::internal, "woke up");
    }
    ++succeeded;
    co_return ok();
  };
  auto consumer = make_bus(service);
  HandlerOptions options;
  options.timeout = 200ms;
  ASSERT_TRUE(consumer->handle_commands({"work"}, handler, service, options));
  auto sender = make_bus("orders");
  ASSERT_TRUE(sender->send_command("work", {{"job", 1}}, service));
  ASSERT_TRUE(eventually([&] { return succeeded.load() == 1; }, 20s)) << calls.load();
  ASSERT_TRUE(eventually([&] { return cancelled.load() == 1; }));
  EXPECT_EQ(calls.load(), 2);
}

TEST_P(Conformance, NackStormDoesNotWedgeDelivery) {
  REQUIRE_CAPABILITY(caps().supports(MessagingPattern::pub_sub), "events (pub_sub)");
  REQUIRE_CAPABILITY(caps().delivery != DeliveryGuarantee::at_most_once, "at-least-once delivery");
  REQUIRE_ENVIRONMENT_SHOWS("redelivery");
  // Declared before the buses: their handlers use it, so it must outlive them.
  std::mutex mutex;
  std::map<std::string, int> attempts;
  std::atomic<int> storm_done{0};
  Recorder calm_got;
  auto consumer = make_bus();
  auto producer = make_bus();
  const std::string stormy = unique("storm");
  const std::string calm = unique("calm");
  auto failing_twice = sync_handler([&](const Message& m) -> Result<void> {
    std::lock_guard lock(mutex);
    if (++attempts[std::string(m.id())] <= 2) return Error(errc::unavailable, "injected failure");
    ++storm_done;
    return ok();
  });
  ASSERT_TRUE(consumer->subscribe_to_events({stormy}, failing_twice));
  ASSERT_TRUE(consumer->subscribe_to_events({calm}, calm_got.handler()));
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(producer->publish_event(stormy, {{"n", i}}));
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(producer->publish_event(calm, {{"n", i}}));
  EXPECT_TRUE(eventually([&] { return calm_got.size() == 50; }, 20s));
  EXPECT_TRUE(eventually([&] { return storm_done.load() == 200; }, 30s));
}

TEST_P(Conformance, OrderIsKeptPerKey) {
  REQUIRE_CAPABILITY(caps().ordering != Ordering::none, "ordering");
  REQUIRE_CAPABILITY(caps().supports(MessagingPattern::streaming), "the streaming pattern");
  constexpr int kKeys = 4;
  constexpr int kPerKey = 50;
  // Declared before the buses: their handlers use it, so it must outlive them.
  std::mutex mutex;
  std::map<std::string, std::vector<int>> seen;
  int calls = 0;
  auto consumer = make_bus();
  auto producer = make_bus();
  const std::string stream = unique("ordered");
  auto processor = sync_batch_processor([&](const std::vector<Message>& batch) -> Result<void> {
    std::lock_guard lock(mutex);
    if (++calls % 4 == 0) return Error(errc::unavailable, "injected batch failure");
    for (const auto& m : batch) seen[m.metadata().partition_key].push_back(m.json()["n"]);
    return ok();
  });
  StreamOptions options;
  options.batch_size = 10;
  options.max_wait = 20ms;
  options.start = StartPosition::earliest();
  ASSERT_TRUE(consumer->process_stream(stream, processor, "ordered_readers", options));
  for (int n = 0; n < kPerKey; ++n) {
    for (int k = 0; k < kKeys; ++k) {
      ASSERT_TRUE(producer->stream_events(stream, {{{"n", n}}}, "key" + std::to_string(k)));
    }
  }
  ASSERT_TRUE(eventually(
      [&] {
        std::lock_guard lock(mutex);
        std::size_t total = 0;
        for (const auto& [key, values] : seen) total += values.size();
        return total >= kKeys * kPerKey;
      },
      30s));
  std::lock_guard lock(mutex);
  std::vector<int> expected(kPerKey);
  for (int n = 0; n < kPerKey; ++n) expected[static_cast<std::size_t>(n)] = n;
  for (int k = 0; k < kKeys; ++k) EXPECT_EQ(seen["key" + std::to_string(k)], expected) << k;
}

TEST_P(Conformance, ConsumerGroupsShareWithinAndFanOutAcross) {
  REQUIRE_CAPABILITY(caps().supports(MessagingPattern::pub_sub), "events (pub_sub)");
  REQUIRE_CAPABILITY(caps().consumer_groups, "consumer_groups");
  constexpr int kEvents = 100;
  const std::string type = unique("grouped");
  // Declared before the buses: their handlers use it, so it must outlive them.
  Recorder got_a, got_b, got_other;
  auto member_a = make_bus("a");
  auto member_b = make_bus("b");
  auto other_group = make_bus("c");
  ASSERT_TRUE(member_a->subscribe_to_events({type}, got_a.handler(2ms), "group_one"));
  ASSERT_TRUE(member_b->subscribe_to_events({type}, got_b.handler(2ms), "group_one"));
  ASSERT_TRUE(other_group->subscribe_to_events({type}, got_other.handler(), "group_two"));
  auto producer = make_bus();
  for (int i = 0; i < kEvents; ++i) ASSERT_TRUE(producer->publish_event(type, {{"n", i}}));
  ASSERT_TRUE(eventually([&] { return got_a.size() + got_b.size() >= kEvents; }, 20s));
  ASSERT_TRUE(eventually([&] { return got_other.size() >= kEvents; }, 20s));
  std::this_thread::sleep_for(50ms);
  std::set<std::string> ids = got_a.ids();
  for (const auto& id : got_b.ids())
    EXPECT_TRUE(ids.insert(id).second) << "delivered twice: " << id;
  EXPECT_EQ(ids.size(), static_cast<std::size_t>(kEvents));
  EXPECT_EQ(got_a.size() + got_b.size(), static_cast<std::size_t>(kEvents));
  EXPECT_GT(got_a.size(), 0u);
  EXPECT_GT(got_b.size(), 0u);
  EXPECT_EQ(got_other.ids().size(), static_cast<std::size_t>(kEvents));
}

TEST_P(Conformance, EachCommandIsHandledByOneInstance) {
  constexpr int kCommands = 60;
  const std::string service = unique("billing");
  // Declared before the buses: their handlers use it, so it must outlive them.
  Recorder got_1, got_2;
  auto instance_1 = make_bus(service);
  auto instance_2 = make_bus(service);
  ASSERT_TRUE(instance_1->handle_commands({"charge"}, got_1.handler(1ms), service));
  ASSERT_TRUE(instance_2->handle_commands({"charge"}, got_2.handler(1ms), service));
  auto sender = make_bus("orders");
  for (int i = 0; i < kCommands; ++i) {
    auto sent = sender->send_command("charge", {{"order", i}}, service);
    ASSERT_TRUE(sent) << sent.error().describe();
  }
  ASSERT_TRUE(eventually([&] { return got_1.size() + got_2.size() >= kCommands; }, 20s));
  std::this_thread::sleep_for(50ms);
  std::set<std::string> ids = got_1.ids();
  for (const auto& id : got_2.ids()) EXPECT_TRUE(ids.insert(id).second) << "handled twice: " << id;
  EXPECT_EQ(ids.size(), static_cast<std::size_t>(kCommands));
  EXPECT_GT(got_1.size(), 0u);
  EXPECT_GT(got_2.size(), 0u);
  for (const auto& m : got_1.snapshot()) EXPECT_EQ(m.subject(), "commands." + service + ".charge");
}

TEST_P(Conformance, NothingIsLostAcrossSubscriberRestarts) {
  REQUIRE_CAPABILITY(caps().durable_groups, "durable_groups");
  const std::string service = unique("shipping");
  // Declared before the buses: their handlers use it, so it must outlive them.
  Recorder first_run, second_run;
  auto sender = make_bus("orders");
  {
    auto instance = make_bus(service);
    ASSERT_TRUE(instance->handle_commands({"ship"}, first_run.handler(), service));
    for (int i = 0; i < 10; ++i) ASSERT_TRUE(sender->send_command("ship", {{"n", i}}, service));
    ASSERT_TRUE(eventually([&] { return first_run.size() == 10; }));
    ASSERT_TRUE(instance->stop());
  }
  // Nobody is running now: the group holds the commands for the next instance.
  for (int i = 10; i < 20; ++i) {
    auto sent = sender->send_command("ship", {{"n", i}}, service);
    ASSERT_TRUE(sent) << sent.error().describe();
  }
  auto restarted = make_bus(service);
  ASSERT_TRUE(restarted->handle_commands({"ship"}, second_run.handler(), service));
  ASSERT_TRUE(eventually([&] { return second_run.size() == 10; }))
      << "the restarted instance got " << second_run.size() << " of 10";
  std::set<int> numbers;
  for (const auto& m : first_run.snapshot()) numbers.insert(m.json()["n"].get<int>());
  for (const auto& m : second_run.snapshot()) numbers.insert(m.json()["n"].get<int>());
  EXPECT_EQ(numbers.size(), 20u);
}

TEST_P(Conformance, LateJoinersReplayHistory) {
  REQUIRE_CAPABILITY(caps().persistent_replay, "persistent_replay");
  // Declared before the buses: their handlers use it, so it must outlive them.
  Recorder from_start, from_time, only_new;
  auto producer = make_bus();
  const std::string stream = unique("history");
  std::vector<Json> first, second;
  for (int n = 0; n < 10; ++n) first.push_back({{"n", n}});
  for (int n = 10; n < 20; ++n) second.push_back({{"n", n}});
  ASSERT_TRUE(producer->stream_events(stream, first));
  std::this_thread::sleep_for(30ms);
  const auto between = Clock::now();
  std::this_thread::sleep_for(30ms);
  ASSERT_TRUE(producer->stream_events(stream, second));

  auto consumer = make_bus();
  auto collect = [&](std::string group, StartPosition start, Recorder& into) {
    StreamOptions options;
    options.batch_size = 7;
    options.max_wait = 20ms;
    options.start = start;
    auto processor = sync_batch_processor([&into](const std::vector<Message>& batch) {
      for (const auto& m : batch) into.add(m);
      return ok();
    });
    return consumer->process_stream(stream, processor, std::move(group), options);
  };
  ASSERT_TRUE(collect("from_start", StartPosition::earliest(), from_start));
  ASSERT_TRUE(collect("from_time", StartPosition::from_time(between), from_time));
  ASSERT_TRUE(collect("only_new", StartPosition::new_messages(), only_new));
  ASSERT_TRUE(eventually([&] { return from_start.size() == 20 && from_time.size() == 10; }))
      << "from the start: " << from_start.size() << " of 20, from the time: " << from_time.size()
      << " of 10, only new: " << only_new.size();
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(only_new.size(), 0u);
  ASSERT_TRUE(producer->stream_events(stream, {{{"n", 20}}}));
  ASSERT_TRUE(eventually(
      [&] { return only_new.size() == 1 && from_start.size() == 21 && from_time.size() == 11; }));

  auto numbers = [](const Recorder& r) {
    std::vector<int> out;
    for (const auto& m : r.snapshot()) out.push_back(m.json()["n"].get<int>());
    return out;
  };
  std::vector<int> all(21);
  for (int n = 0; n < 21; ++n) all[static_cast<std::size_t>(n)] = n;
  EXPECT_EQ(numbers(from_start), all);
  EXPECT_EQ(numbers(from_time), std::vector<int>(all.begin() + 10, all.end()));
  EXPECT_EQ(numbers(only_new), std::vector<int>{20});
}

TEST_P(Conformance, CloseFlushesPendingPublishes) {
  REQUIRE_CAPABILITY(caps().persistent_replay, "persistent_replay");
  const std::string stream = unique("flushed");
  {
    auto producer = make_bus();
    std::vector<Json> events;
    for (int n = 0; n < 200; ++n) events.push_back({{"n", n}});
    ASSERT_TRUE(producer->stream_events(stream, events));
    auto stopped = producer->stop();
    ASSERT_TRUE(stopped) << stopped.error().describe();
  }
  // Declared before the buses: their handlers use it, so it must outlive them.
  Recorder got;
  auto consumer = make_bus();
  StreamOptions options;
  options.start = StartPosition::earliest();
  options.max_wait = 20ms;
  auto processor = sync_batch_processor([&got](const std::vector<Message>& batch) {
    for (const auto& m : batch) got.add(m);
    return ok();
  });
  ASSERT_TRUE(consumer->process_stream(stream, processor, "after_close", options));
  ASSERT_TRUE(eventually([&] { return got.size() == 200; }));
}

TEST_P(Conformance, ConcurrentCloseIsSafe) {
  REQUIRE_CAPABILITY(caps().supports(MessagingPattern::pub_sub), "events (pub_sub)");
  // Declared before the buses: their handlers use it, so it must outlive them.
  Recorder got;
  std::atomic<bool> stop_publishing{false};
  std::atomic<int> unexpected{0};
  std::atomic<int> stops_ok{0}, stops_refused{0};
  std::mutex failures_mutex;
  std::vector<std::string> stop_failures;  // named in the report: a bare count hides the cause
  auto bus = make_bus();
  const std::string type = unique("closing");
  ASSERT_TRUE(bus->subscribe_to_events({type}, got.handler()));
  std::vector<std::thread> publishers;
  for (int p = 0; p < 2; ++p) {
    publishers.emplace_back([&] {
      while (!stop_publishing) {
        auto published = bus->publish_event(type, {{"x", 1}});
        if (published) continue;
        const auto& e = published.error();
        if (!e.is(errc::failed_precondition) && !e.is(errc::unavailable) &&
            !e.is(errc::cancelled)) {
          ++unexpected;
        }
        return;
      }
    });
  }
  std::this_thread::sleep_for(20ms);
  std::vector<std::thread> stoppers;
  for (int s = 0; s < 2; ++s) {
    stoppers.emplace_back([&] {
      auto stopped = bus->stop();
      if (stopped) {
        ++stops_ok;
      } else if (stopped.error().is(errc::failed_precondition)) {
        ++stops_refused;
      } else {
        std::lock_guard lock(failures_mutex);
        stop_failures.push_back(stopped.error().describe());
      }
    });
  }
  for (auto& t : stoppers) t.join();
  stop_publishing = true;
  for (auto& t : publishers) t.join();
  EXPECT_TRUE(stop_failures.empty()) << stop_failures.front();
  EXPECT_EQ(stops_ok.load(), 1);
  EXPECT_EQ(stops_refused.load(), 1);
  EXPECT_EQ(unexpected.load(), 0);
}

TEST_P(Conformance, QueryReturnsTheHandlersReply) {
  REQUIRE_CAPABILITY(caps().supports(MessagingPattern::request_response), "request_response");
  const std::string service = unique("inventory");
  auto responder = make_bus(service);
  auto handler = sync_query_handler([](const Message& q) -> Result<Json> {
    return Json{
        {"sku", q.json()["sku"]}, {"available", 3}, {"correlation", q.metadata().correlation_id}};
  });
  ASSERT_TRUE(responder->handle_queries({"check_stock"}, handler, service));
  auto requester = make_bus("orders");
  MessageMetadata metadata;
  metadata.correlation_id = "order-77";
  auto reply = requester->run(
      requester->bus().query("check_stock", {{"sku", "A-1"}}, service, 5s, metadata));
  ASSERT_TRUE(reply) << reply.error().describe();
  EXPECT_EQ((*reply)["sku"], "A-1");
  EXPECT_EQ((*reply)["available"], 3);
  EXPECT_EQ((*reply)["correlation"], "order-77");
  for (int i = 0; i < 20; ++i) {
    auto again = requester->query("check_stock", {{"sku", "B-" + std::to_string(i)}}, service, 5s);
    ASSERT_TRUE(again) << again.error().describe();
    EXPECT_EQ((*again)["sku"], "B-" + std::to_string(i));
  }
}

TEST_P(Conformance, QueryDeadlineIsHonoured) {
  REQUIRE_CAPABILITY(caps().supports(MessagingPattern::request_response), "request_response");
  const std::string service = unique("slow");
  auto responder = make_bus(service);
  auto slow = sync_query_handler([](const Message&) -> Result<Json> {
    std::this_thread::sleep_for(400ms);
    return Json{{"late", true}};
  });
  ASSERT_TRUE(responder->handle_queries({"compute"}, slow, service));
  auto requester = make_bus();
  const auto start = SteadyClock::now();
  auto reply = requester->query("compute", {{"x", 1}}, service, 100ms);
  const auto elapsed = SteadyClock::now() - start;
  ASSERT_FALSE(reply);
  EXPECT_TRUE(reply.error().is(errc::deadline_exceeded)) << reply.error().describe();
  EXPECT_GE(elapsed, 100ms);
  EXPECT_LT(elapsed, 380ms);
}

TEST_P(Conformance, QueryHandlerErrorsReachTheCaller) {
  REQUIRE_CAPABILITY(caps().supports(MessagingPattern::request_response), "request_response");
  const std::string service = unique("catalog");
  auto responder = make_bus(service);
  auto failing = sync_query_handler([](const Message& q) -> Result<Json> {
    if (q.json()["sku"] == "boom") throw std::runtime_error("boom happened");
    return Error(errc::not_found, "sku " + q.json()["sku"].get<std::string>() + " is unknown");
  });
  ASSERT_TRUE(responder->handle_queries({"lookup"}, failing, service));
  auto requester = make_bus();
  const auto start = SteadyClock::now();
  auto reply = requester->query("lookup", {{"sku", "X-9"}}, service, 5s);
  ASSERT_FALSE(reply);
  EXPECT_TRUE(reply.error().is(errc::not_found)) << reply.error().describe();
  EXPECT_NE(reply.error().message().find("sku X-9 is unknown"), std::string::npos);
  auto thrown = requester->query("lookup", {{"sku", "boom"}}, service, 5s);
  ASSERT_FALSE(thrown);
  EXPECT_TRUE(thrown.error().is(errc::internal)) << thrown.error().describe();
  EXPECT_NE(thrown.error().message().find("boom happened"), std::string::npos);
  EXPECT_LT(SteadyClock::now() - start, 2s) << "errors must not look like timeouts";
}

TEST_P(Conformance, QueryWithoutResponderFails) {
  REQUIRE_CAPABILITY(caps().supports(MessagingPattern::request_response), "request_response");
  auto requester = make_bus();
  const auto start = SteadyClock::now();
  auto reply = requester->query("nobody_home", {{"x", 1}}, unique("absent"), 300ms);
  ASSERT_FALSE(reply);
  EXPECT_TRUE(reply.error().is(errc::not_found) || reply.error().is(errc::deadline_exceeded))
      << reply.error().describe();
  EXPECT_LT(SteadyClock::now() - start, 1300ms);
}

TEST_P(Conformance, StopDrainsInFlightHandlers) {
  REQUIRE_CAPABILITY(caps().supports(MessagingPattern::pub_sub), "events (pub_sub)");
  // Declared before the buses: their handlers use it, so it must outlive them.
  std::atomic<bool> started{false}, finished{false};
  auto consumer = make_bus();
  auto producer = make_bus();
  const std::string type = unique("draining");
  auto slow = sync_handler([&](const Message&) -> Result<void> {
    started = true;
    std::this_thread::sleep_for(300ms);
    finished = true;
    return ok();
  });
  ASSERT_TRUE(consumer->subscribe_to_events({type}, slow));
  ASSERT_TRUE(producer->publish_event(type, {{"n", 1}}));
  ASSERT_TRUE(eventually([&] { return started.load(); }));
  auto stopped = consumer->stop(5s);
  EXPECT_TRUE(stopped) << stopped.error().describe();
  EXPECT_TRUE(finished.load()) << "stop() returned before the in-flight handler finished";
  // After stop the bus refuses new work with a clear error.
  auto late = consumer->publish_event(type, {{"n", 2}});
  ASSERT_FALSE(late);
  EXPECT_TRUE(late.error().is(errc::failed_precondition));
}

TEST_P(Conformance, WildcardSubscriptions) {
  REQUIRE_CAPABILITY(caps().supports(MessagingPattern::pub_sub), "events (pub_sub)");
  REQUIRE_CAPABILITY(caps().wildcard_subscriptions, "wildcard_subscriptions");
  // Declared before the buses: their handlers use it, so it must outlive them.
  Recorder one_token, tail;
  auto consumer = make_bus();
  auto producer = make_bus();
  const std::string base = unique("wild");
  ASSERT_TRUE(consumer->subscribe_to_events({base + ".*"}, one_token.handler()));
  ASSERT_TRUE(consumer->subscribe_to_events({base + ".>"}, tail.handler()));
  ASSERT_TRUE(producer->publish_event(base + ".created", {{"n", 1}}));
  ASSERT_TRUE(producer->publish_event(base + ".eu.created", {{"n", 2}}));
  ASSERT_TRUE(producer->publish_event(base, {{"n", 3}}));
  ASSERT_TRUE(eventually([&] { return tail.size() == 2 && one_token.size() == 1; }));
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(one_token.size(), 1u);
  EXPECT_EQ(tail.size(), 2u);
  EXPECT_EQ(one_token.snapshot()[0].type(), base + ".created");
}

TEST_P(Conformance, MetricsCountDeliveriesRetriesAndAcks) {
  REQUIRE_CAPABILITY(caps().supports(MessagingPattern::pub_sub), "events (pub_sub)");
  REQUIRE_CAPABILITY(caps().delivery != DeliveryGuarantee::at_most_once, "at-least-once delivery");
  REQUIRE_ENVIRONMENT_SHOWS("redelivery");
  // Declared before the buses: their handlers use it, so it must outlive them.
  std::mutex mutex;
  std::map<int, int> attempts;
  auto consumer = make_bus();
  auto producer = make_bus();
  const std::string type = unique("counted");
  auto first_fails = sync_handler([&](const Message& m) -> Result<void> {
    std::lock_guard lock(mutex);
    if (++attempts[m.json()["n"].get<int>()] == 1 && m.json()["n"] == 0) {
      return Error(errc::unavailable, "first attempt fails");
    }
    return ok();
  });
  ASSERT_TRUE(consumer->subscribe_to_events({type}, first_fails, "counters"));
  for (int n = 0; n < 3; ++n) ASSERT_TRUE(producer->publish_event(type, {{"n", n}}));
  const std::string backend(consumer->bus().backend(GetParam().type)->name());
  const std::map<std::string, std::string> labels{
      {"backend", backend}, {"subject", "events." + type}, {"group", "counters"}};
  testing::PromExposition seen;
  ASSERT_TRUE(eventually([&] {
    seen = testing::parse_prometheus_text(consumer->bus().metrics().prometheus_text());
    return seen.value("marty_messages_acked_total", labels) == 3.0;
  })) << consumer->bus().metrics().prometheus_text();
  // Read again: one exposition reads the counters one after another while deliveries go on, so
  // the text that showed the last ack may show an earlier count of deliveries.
  seen = testing::parse_prometheus_text(consumer->bus().metrics().prometheus_text());
  EXPECT_TRUE(seen.error.empty()) << seen.error;
  EXPECT_EQ(seen.value("marty_messages_delivered_total", labels), 4.0);
  EXPECT_EQ(seen.value("marty_messages_redelivered_total", labels), 1.0);
  EXPECT_EQ(seen.value("marty_messages_nacked_total", labels), 1.0);
  EXPECT_EQ(seen.value("marty_messages_dead_lettered_total", labels), 0.0);
  EXPECT_EQ(seen.value("marty_handler_duration_seconds_count", labels), 4.0);
  const auto published =
      testing::parse_prometheus_text(producer->bus().metrics().prometheus_text());
  EXPECT_EQ(published.value("marty_messages_published_total",
                            {{"backend", backend}, {"subject", "events." + type}}),
            3.0);
}

TEST_P(Conformance, TraceContextSurvivesTheWire) {
  REQUIRE_CAPABILITY(caps().supports(MessagingPattern::pub_sub), "events (pub_sub)");
  // Declared before the buses: their handlers use it, so it must outlive them.
  Recorder got;
  auto spans = std::make_shared<SpanRecorder>();
  auto consumer = make_bus("conformance", spans);
  auto producer = make_bus("conformance", spans);
  const std::string type = unique("traced");
  ASSERT_TRUE(consumer->subscribe_to_events({type}, got.handler()));
  MessageMetadata metadata;
  metadata.headers["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
  metadata.headers["tracestate"] = "vendor=opaque,other=1";
  ASSERT_TRUE(producer->publish_event(type, {{"n", 1}}, metadata));
  ASSERT_TRUE(eventually([&] { return got.size() == 1; }));
  const auto context = TraceContext::of(got.snapshot()[0]);
  ASSERT_TRUE(context) << "the handler's message carries no valid traceparent";
  EXPECT_EQ(context->trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(context->flags, 0);
  EXPECT_EQ(context->tracestate, "vendor=opaque,other=1");
  // The publishing span is the caller's child, the handling span the publishing span's: the
  // publisher's context crossed the backend's wire.
  ASSERT_TRUE(eventually([&] { return spans->size() == 2; }));
  const auto recorded = spans->snapshot();
  const Span& published = recorded[0].kind == Span::Kind::producer ? recorded[0] : recorded[1];
  const Span& handled = recorded[0].kind == Span::Kind::producer ? recorded[1] : recorded[0];
  EXPECT_EQ(published.parent_span_id, "00f067aa0ba902b7");
  EXPECT_EQ(handled.parent_span_id, published.context.span_id);
  EXPECT_EQ(context->span_id, handled.context.span_id) << "the handler sees its own span";
}

TEST_P(Conformance, ExhaustedRetriesEndInTheDeadLetterStream) {
  REQUIRE_CAPABILITY(caps().supports(MessagingPattern::pub_sub), "events (pub_sub)");
  REQUIRE_CAPABILITY(caps().supports(MessagingPattern::streaming), "the streaming pattern");
  REQUIRE_ENVIRONMENT_SHOWS("redelivery");
  // Declared before the buses: their handlers use it, so it must outlive them.
  std::atomic<int> calls{0};
  Recorder dead;
  auto consumer = make_bus();
  auto producer = make_bus();
  const std::string type = unique("poison");
  auto always_down = sync_handler([&](const Message& m) -> Result<void> {
    ++calls;
    if (m.json()["kind"] == "bad") return Error(errc::invalid_argument, "field 'amount' missing");
    return Error(errc::unavailable, "payment gateway down");
  });
  const std::string group = caps().consumer_groups ? "auditors" : "";
  ASSERT_TRUE(consumer->subscribe_to_events({type}, always_down, group));
  MessageMetadata traced;
  traced.headers["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  const auto before = Clock::now() - 1s;
  ASSERT_TRUE(producer->publish_event(type, {{"kind", "transient"}}, traced));
  ASSERT_TRUE(producer->publish_event(type, {{"kind", "bad"}}, traced));

  StreamOptions options;
  options.start = StartPosition::earliest();
  options.max_wait = 20ms;
  auto reader = sync_batch_processor([&dead](const std::vector<Message>& batch) {
    for (const auto& m : batch) dead.add(m);
    return ok();
  });
  ASSERT_TRUE(consumer->process_stream(dead_letter_subject("events." + type), reader,
                                       "dead_letter_readers", options));
  ASSERT_TRUE(eventually([&] { return dead.size() == 2; }));
  const int retries = consumer->bus().pattern_config(MessagingPattern::pub_sub).retry_count;
  EXPECT_EQ(calls.load(), retries + 1 + 1);  // transient: every retry; bad input: once
  for (const auto& m : dead.snapshot()) {
    const auto& h = m.metadata().headers;
    EXPECT_EQ(h.at(std::string(headers::kDeadLetterSubject)), "events." + type);
    const bool bad = m.json()["kind"] == "bad";
    EXPECT_EQ(h.at(std::string(headers::kDeadLetterAttempts)),
              bad ? "1" : std::to_string(retries + 1));
    EXPECT_NE(h.at(std::string(headers::kDeadLetterReason))
                  .find(bad ? "field 'amount' missing" : "payment gateway down"),
              std::string::npos);
    auto failed_at = parse_rfc3339(h.at(std::string(headers::kDeadLetterTime)));
    ASSERT_TRUE(failed_at) << failed_at.error().describe();
    EXPECT_GE(*failed_at, before);
    EXPECT_LE(*failed_at, Clock::now());
    if (group.empty()) {
      EXPECT_EQ(h.count(std::string(headers::kDeadLetterGroup)), 0u);
    } else {
      EXPECT_EQ(h.at(std::string(headers::kDeadLetterGroup)), group);
    }
    // The trace it belongs to comes along, so the dead letter is found in its trace.
    EXPECT_NE(h.at("traceparent").find("4bf92f3577b34da6a3ce929d0e0e4736"), std::string::npos);
  }
}

TEST_P(Conformance, DeadLettersAreListedPurgedAndRequeuedAfterAFix) {
  REQUIRE_CAPABILITY(caps().supports(MessagingPattern::pub_sub), "events (pub_sub)");
  REQUIRE_CAPABILITY(caps().inspectable_dead_letters, "dead letters it can list");
  REQUIRE_ENVIRONMENT_SHOWS("redelivery");
  std::atomic<bool> fixed{false};
  Recorder handled;
  auto consumer = make_bus();
  auto producer = make_bus();
  const std::string type = unique("refund");
  const std::string subject = "events." + type;
  auto handler = sync_handler([&](const Message& m) -> Result<void> {
    if (!fixed) {
      if (m.json()["kind"] == "bad") return Error(errc::invalid_argument, "field 'amount' missing");
      return Error(errc::unavailable, "refund service down");
    }
    handled.add(m);
    return ok();
  });
  const std::string group = caps().consumer_groups ? "refunds" : "";
  ASSERT_TRUE(consumer->subscribe_to_events({type}, handler, group));
  MessageMetadata first;
  first.message_id = unique("first");
  MessageMetadata second;
  second.message_id = unique("second");
  MessageMetadata third;
  third.message_id = unique("third");
  third.headers["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  ASSERT_TRUE(producer->publish_event(type, {{"kind", "bad"}, {"n", 1}}, first));
  ASSERT_TRUE(producer->publish_event(type, {{"kind", "bad"}, {"n", 2}}, second));
  ASSERT_TRUE(producer->publish_event(type, {{"kind", "transient"}, {"n", 3}}, third));

  DeadLetterFilter all(subject);
  std::vector<DeadLetter> listed;
  ASSERT_TRUE(eventually([&] {
    auto got = consumer->list_dead_letters(all);
    if (!got) ADD_FAILURE() << got.error().describe();
    listed = got ? *got : std::vector<DeadLetter>{};
    return listed.size() == 3;
  })) << listed.size()
      << " dead letters listed";
  const int retries = consumer->bus().pattern_config(MessagingPattern::pub_sub).retry_count;
  std::set<std::string> ids;
  for (const DeadLetter& dead : listed) {
    ids.insert(dead.id);
    EXPECT_EQ(dead.subject, subject);
    EXPECT_EQ(dead.group, group);
    EXPECT_EQ(dead.backend, std::string(consumer->bus().backend(GetParam().type)->name()));
    ASSERT_TRUE(dead.pattern.has_value());
    EXPECT_EQ(*dead.pattern, MessagingPattern::pub_sub);
    ASSERT_TRUE(dead.first_failure && dead.last_failure);
    const bool bad = dead.message.json()["kind"] == "bad";
    EXPECT_EQ(dead.attempts, bad ? 1 : retries + 1);
    EXPECT_NE(dead.reason.find(bad ? "field 'amount' missing" : "refund service down"),
              std::string::npos);
    // A retried message failed first one backoff or more before it failed for good.
    if (bad) {
      EXPECT_EQ(*dead.first_failure, *dead.last_failure);
    } else {
      EXPECT_LT(*dead.first_failure, *dead.last_failure);
      EXPECT_EQ(dead.message.id(), third.message_id);
      EXPECT_EQ(dead.original().metadata().headers.at("traceparent"),
                third.headers.at("traceparent"));
    }
    // The copy to requeue is the message as first published.
    const Message original = dead.original();
    EXPECT_EQ(original.subject(), subject);
    for (const auto& [name, value] : original.metadata().headers) {
      EXPECT_FALSE(name.starts_with(headers::kDeadLetterPrefix)) << name << "=" << value;
    }
  }
  EXPECT_EQ(ids.size(), 3u) << "dead-letter ids are unique";

  // Filters select without touching the rest.
  DeadLetterFilter by_reason(subject);
  by_reason.reason_contains = "amount";
  auto bad_ones = consumer->list_dead_letters(by_reason);
  ASSERT_TRUE(bad_ones) << bad_ones.error().describe();
  EXPECT_EQ(bad_ones->size(), 2u);
  DeadLetterFilter oldest(subject);
  oldest.limit = 1;
  auto one = consumer->list_dead_letters(oldest);
  ASSERT_TRUE(one);
  ASSERT_EQ(one->size(), 1u);
  DeadLetterFilter other_group(subject);
  other_group.group = "nobody";
  auto none = consumer->list_dead_letters(other_group);
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->empty());

  // Purge one by message id; requeue the rest once the handler is fixed.
  DeadLetterFilter second_only(subject);
  second_only.message_id = second.message_id;
  auto purged = consumer->purge_dead_letters(second_only);
  ASSERT_TRUE(purged) << purged.error().describe();
  EXPECT_EQ(*purged, 1u);
  auto left = consumer->list_dead_letters(all);
  ASSERT_TRUE(left);
  EXPECT_EQ(left->size(), 2u);

  fixed = true;
  auto requeued = consumer->requeue_dead_letters(all);
  ASSERT_TRUE(requeued) << requeued.error().describe();
  EXPECT_EQ(*requeued, 2u);
  auto handled_list = [&] {
    std::string text;
    for (const Message& m : handled.snapshot()) text += " " + std::string(m.id());
    return text;
  };
  ASSERT_TRUE(eventually([&] { return handled.size() >= 2; })) << "handled:" << handled_list();
  std::set<std::string> handled_ids;
  for (const Message& m : handled.snapshot()) {
    handled_ids.insert(std::string(m.id()));
    const auto& h = m.metadata().headers;
    ASSERT_TRUE(h.contains(std::string(headers::kRequeuedFrom)));
    EXPECT_TRUE(ids.contains(h.at(std::string(headers::kRequeuedFrom))));
    for (const auto& [name, value] : m.metadata().headers) {
      EXPECT_FALSE(name.starts_with(headers::kDeadLetterPrefix)) << name << "=" << value;
    }
  }
  EXPECT_EQ(handled_ids, (std::set<std::string>{first.message_id, third.message_id}));
  EXPECT_EQ(handled.size(), 2u) << "handled:" << handled_list();
  auto after = consumer->list_dead_letters(all);
  ASSERT_TRUE(after);
  EXPECT_TRUE(after->empty()) << after->size() << " dead letters left after the requeue";
  auto again = consumer->requeue_dead_letters(all);
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, 0u);

  auto no_subject = consumer->list_dead_letters(DeadLetterFilter());
  ASSERT_FALSE(no_subject);
  EXPECT_TRUE(no_subject.error().is(errc::invalid_argument));
}

TEST_P(Conformance, OpenCircuitPausesIntakeThenAProbeClosesIt) {
  REQUIRE_CAPABILITY(caps().supports(MessagingPattern::pub_sub), "events (pub_sub)");
  REQUIRE_CAPABILITY(caps().delivery != DeliveryGuarantee::at_most_once, "at-least-once delivery");
  REQUIRE_ENVIRONMENT_SHOWS("redelivery");
  constexpr auto kOpenFor = 600ms;
  std::mutex mutex;
  std::vector<SteadyClock::time_point> calls;
  Recorder handled;
  auto consumer = make_bus();
  auto producer = make_bus();
  const std::string type = unique("ledger_entry");
  // The first three calls find the ledger down; it is back for the fourth.
  auto handler = sync_handler([&](const Message& m) -> Result<void> {
    std::size_t call = 0;
    {
      std::lock_guard lock(mutex);
      calls.push_back(SteadyClock::now());
      call = calls.size();
    }
    if (call <= 3) return Error(errc::unavailable, "ledger down");
    handled.add(m);
    return ok();
  });
  HandlerOptions options;
  options.circuit_breaker.failure_threshold = 3;
  options.circuit_breaker.open_for = kOpenFor;
  const std::string group = caps().consumer_groups ? "ledger" : "";
  ASSERT_TRUE(consumer->subscribe_to_events({type}, handler, group, options));
  std::set<std::string> sent;
  for (int i = 0; i < 5; ++i) {
    MessageMetadata metadata;
    metadata.message_id = unique("entry" + std::to_string(i));
    sent.insert(metadata.message_id);
    ASSERT_TRUE(producer->publish_event(type, {{"n", i}}, metadata));
  }
  ASSERT_TRUE(eventually([&] { return handled.size() == 5; })) << handled.size() << " handled";
  std::set<std::string> handled_ids;
  for (const Message& m : handled.snapshot()) handled_ids.insert(std::string(m.id()));
  EXPECT_EQ(handled_ids, sent) << "no message was dead-lettered while the circuit was open";
  std::lock_guard lock(mutex);
  ASSERT_GE(calls.size(), 8u);
  // Redeliveries come back within 50 ms here: only the open circuit explains the pause.
  EXPECT_GE(calls[3] - calls[2], kOpenFor - 5ms)
      << "the fourth call came "
      << std::chrono::duration_cast<std::chrono::milliseconds>(calls[3] - calls[2]).count()
      << " ms after the third failure";

  HandlerOptions bad;
  bad.circuit_breaker.failure_threshold = 1;
  bad.circuit_breaker.open_for = 0ms;
  auto refused = consumer->subscribe_to_events({type}, handler, group, bad);
  ASSERT_FALSE(refused);
  EXPECT_TRUE(refused.error().is(errc::invalid_argument));
  EXPECT_NE(refused.error().message().find("open_for"), std::string::npos);
}

TEST_P(Conformance, StopReleasesWhatItCouldNotFinishForAnotherInstance) {
  REQUIRE_CAPABILITY(caps().supports(MessagingPattern::pub_sub), "events (pub_sub)");
  REQUIRE_CAPABILITY(caps().delivery != DeliveryGuarantee::at_most_once, "at-least-once delivery");
  REQUIRE_CAPABILITY(caps().consumer_groups && caps().durable_groups, "durable consumer groups");
  REQUIRE_ENVIRONMENT_SHOWS("redelivery");
  std::atomic<bool> started{false};
  Recorder taken_over;
  auto first = make_bus();
  auto producer = make_bus();
  const std::string type = unique("long_report");
  // Outlasts the drain deadline: stop() must give up on it and release its message. It waits
  // suspended, not blocking the bus's thread, so stop() can run meanwhile.
  MessageHandler stuck = [&started](Message) -> asio::awaitable<Result<void>> {
    started = true;
    asio::steady_timer timer(co_await asio::this_coro::executor, 1500ms);
    std::error_code ignored;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
    co_return ok();
  };
  ASSERT_TRUE(first->subscribe_to_events({type}, stuck, "reporters"));
  MessageMetadata metadata;
  metadata.message_id = unique("report");
  ASSERT_TRUE(producer->publish_event(type, {{"n", 1}}, metadata));
  ASSERT_TRUE(eventually([&] { return started.load(); }));
  auto stopped = first->stop(200ms);
  ASSERT_FALSE(stopped) << "stop() waited for a handler past its drain deadline";
  EXPECT_TRUE(stopped.error().is(errc::deadline_exceeded)) << stopped.error().describe();

  auto second = make_bus();
  ASSERT_TRUE(second->subscribe_to_events({type}, taken_over.handler(), "reporters"));
  ASSERT_TRUE(eventually([&] { return taken_over.size() >= 1; }))
      << "the message the stopped instance held was not delivered to the next one";
  EXPECT_EQ(taken_over.snapshot().front().id(), metadata.message_id);
}

TEST_P(Conformance, ConsumerLagCountsWhatWaitsForAGroup) {
  // Events where the backend has them (a consumer group), else commands (the service's queue).
  const bool events = caps().supports(MessagingPattern::pub_sub);
  REQUIRE_CAPABILITY(events || caps().supports(MessagingPattern::point_to_point),
                     "events or commands");
  REQUIRE_CAPABILITY(caps().consumer_lag, "consumer lag");
  REQUIRE_CAPABILITY(caps().durable_groups && (!events || caps().consumer_groups),
                     "durable consumer groups");
  Recorder before;
  Recorder after;
  const std::string type = unique("ledger_entry");
  const std::string group = events ? "ledger" : unique("ledger");
  const std::string subject = events ? "events." + type : "commands." + group + "." + type;
  auto subscribe = [&](BlockingEventBus& bus, MessageHandler handler) {
    return events ? bus.subscribe_to_events({type}, std::move(handler), group)
                  : bus.handle_commands({type}, std::move(handler), group);
  };
  auto producer = make_bus();
  auto send = [&](Json data, MessageMetadata metadata) {
    return events ? producer->publish_event(type, std::move(data), std::move(metadata))
                  : producer->send_command(type, std::move(data), group, std::move(metadata));
  };
  auto lag = [&]() -> std::optional<std::uint64_t> {
    auto got = producer->consumer_lag(subject, group);
    if (!got) return std::nullopt;
    return *got;
  };
  {
    auto first = make_bus();
    ASSERT_TRUE(subscribe(*first, before.handler()));
    ASSERT_TRUE(send({{"n", 0}}, {}));
    ASSERT_TRUE(eventually([&] { return before.size() == 1; }));
    ASSERT_TRUE(eventually([&] { return lag() == 0u; }))
        << "a group that has handled everything waits for nothing";
    ASSERT_TRUE(first->stop());
  }
  // Nobody of the group runs: what is sent now waits for it.
  for (int n = 1; n <= 5; ++n) {
    MessageMetadata metadata;
    metadata.partition_key = "account-" + std::to_string(n);
    ASSERT_TRUE(send({{"n", n}}, metadata));
  }
  std::optional<std::uint64_t> seen;
  ASSERT_TRUE(eventually([&] {
    seen = lag();
    return seen == 5u;
  })) << "lag "
      << (seen ? std::to_string(*seen) : "unknown") << " with 5 messages waiting";

  auto unknown = producer->consumer_lag(
      events ? subject : "commands." + unique("nobody") + "." + type, unique("nobody"));
  ASSERT_FALSE(unknown);
  EXPECT_TRUE(unknown.error().is(errc::not_found)) << unknown.error().describe();
  auto query = producer->consumer_lag("queries.billing.balance", "billing");
  ASSERT_FALSE(query);
  EXPECT_TRUE(query.error().is(errc::invalid_argument)) << query.error().describe();

  // A member comes back, catches up, and its gauge says so.
  auto second = make_bus();
  ASSERT_TRUE(subscribe(*second, after.handler()));
  ASSERT_TRUE(eventually([&] { return after.size() == 5; })) << after.size() << " of 5 caught up";
  ASSERT_TRUE(eventually([&] { return lag() == 0u; }));
  const std::string gauge = "marty_consumer_lag_messages{backend=\"" +
                            std::string(second->bus().backend(GetParam().type)->name()) +
                            "\",subject=\"" + subject + "\",group=\"" + group + "\"} 0\n";
  EXPECT_TRUE(eventually([&] {
    return second->bus().metrics().prometheus_text().find(gauge) != std::string::npos;
  })) << "no sampled gauge "
      << gauge << " in\n"
      << second->bus().metrics().prometheus_text();
}

}  // namespace marty::messaging::conformance
