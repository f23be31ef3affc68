// Bus behaviour beyond the conformance suite: lifecycle, selection, validation, batching.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>

#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include "../support/test_loop.hpp"
#include "marty/messaging.hpp"

namespace marty::messaging {
namespace {

using namespace std::chrono_literals;
using testing::eventually;

// A real memory backend that claims different capabilities, or fails to connect.
class AlteredBackend final : public Backend {
 public:
  AlteredBackend(std::shared_ptr<Backend> inner, Capabilities caps, std::string name,
                 bool fail_connect = false)
      : inner_(std::move(inner)),
        caps_(std::move(caps)),
        name_(std::move(name)),
        fail_connect_(fail_connect) {}
  std::string_view name() const noexcept override { return name_; }
  const Capabilities& capabilities() const noexcept override { return caps_; }
  asio::awaitable<Result<void>> connect() override {
    if (fail_connect_) co_return Error(errc::unavailable, "connection refused to 127.0.0.1:1");
    co_return co_await inner_->connect();
  }
  asio::awaitable<Result<void>> publish(Message m, PublishOptions o) override {
    co_return co_await inner_->publish(std::move(m), o);
  }
  asio::awaitable<Result<std::shared_ptr<Subscription>>> subscribe(SubscriptionSpec s) override {
    co_return co_await inner_->subscribe(std::move(s));
  }
  asio::awaitable<Result<void>> close(SteadyClock::time_point deadline) override {
    co_return co_await inner_->close(deadline);
  }

 private:
  std::shared_ptr<Backend> inner_;
  Capabilities caps_;
  std::string name_;
  bool fail_connect_;
};

// A real memory backend whose broker can be taken down: while `down`, publishes fail as a
// lost connection does. Counts the publishes that reach it.
class InterruptibleBackend final : public Backend {
 public:
  explicit InterruptibleBackend(std::shared_ptr<Backend> inner) : inner_(std::move(inner)) {}
  std::string_view name() const noexcept override { return inner_->name(); }
  const Capabilities& capabilities() const noexcept override { return inner_->capabilities(); }
  asio::awaitable<Result<void>> connect() override { co_return co_await inner_->connect(); }
  asio::awaitable<Result<void>> publish(Message m, PublishOptions o) override {
    ++publishes;
    if (down) co_return Error(errc::unavailable, "connection refused", "memory");
    co_return co_await inner_->publish(std::move(m), o);
  }
  asio::awaitable<Result<std::shared_ptr<Subscription>>> subscribe(SubscriptionSpec s) override {
    co_return co_await inner_->subscribe(std::move(s));
  }
  asio::awaitable<Result<void>> close(SteadyClock::time_point deadline) override {
    co_return co_await inner_->close(deadline);
  }
  std::atomic<bool> down{false};
  std::atomic<int> publishes{0};

 private:
  std::shared_ptr<Backend> inner_;
};

Capabilities pub_sub_only() {
  Capabilities caps;
  caps.patterns = {MessagingPattern::pub_sub};
  caps.delivery = DeliveryGuarantee::at_least_once;
  return caps;
}

TEST(EventBusTest, RunsOnTheMemoryBackendByDefault) {
  BlockingEventBus bus;
  ASSERT_TRUE(bus.start());
  EXPECT_TRUE(bus.bus().running());
  EXPECT_EQ(*bus.bus().backend_for("anything", MessagingPattern::streaming),
            MessageBackendType::memory);
  ASSERT_NE(bus.bus().backend(MessageBackendType::memory), nullptr);
}

// A route in the Python envelope: the wire carries the envelope, and a receiving bus unwraps
// it (unless told not to), so a query is answered in the form it was asked in.
TEST(EventBusTest, APythonEnvelopeRouteIsUnwrappedOnReceiptUnlessTurnedOff) {
  auto seen = [](bool unwrap) {
    EventBusOptions options;
    options.python_envelope_on_receipt = unwrap;
    BlockingEventBus bus(options);
    EXPECT_TRUE(bus.bus().register_backend(MessageBackendType::memory, make_memory_backend()));
    EXPECT_TRUE(
        bus.bus().route("py.*", MessageBackendType::memory, {}, WireFormat::python_envelope));
    EXPECT_TRUE(bus.start());
    std::mutex mutex;
    std::vector<Message> got;
    EXPECT_TRUE(bus.subscribe_to_events({"py.ordered"}, sync_handler([&](const Message& m) {
                                          std::lock_guard lock(mutex);
                                          got.push_back(m);
                                          return ok();
                                        })));
    auto answers = sync_query_handler([](const Message& q) -> Result<Json> {
      return Json{{"echo", q.json()}};
    });
    EXPECT_TRUE(bus.handle_queries({"py.price"}, answers, "pricing"));
    MessageMetadata metadata;
    metadata.message_id = "py-7";
    EXPECT_TRUE(bus.publish_event("py.ordered", {{"n", 7}}, metadata));
    EXPECT_TRUE(eventually([&] {
      std::lock_guard lock(mutex);
      return got.size() == 1;
    }));
    auto reply = bus.query("py.price", {{"sku", 1}}, "pricing", 5s);
    EXPECT_TRUE(reply) << reply.error().describe();
    if (unwrap && reply) {
      EXPECT_EQ(*reply, (Json{{"echo", {{"sku", 1}}}}));
    }
    (void)bus.stop();
    std::lock_guard lock(mutex);
    return got.empty() ? Message() : got.front();
  };
  const Message unwrapped = seen(true);
  EXPECT_EQ(unwrapped.json(), (Json{{"n", 7}}));
  EXPECT_EQ(unwrapped.id(), "py-7");
  const Message as_sent = seen(false);
  EXPECT_EQ(as_sent.json()["data"], (Json{{"n", 7}}));
  EXPECT_EQ(as_sent.json()["metadata"]["message_id"], "py-7");
}

TEST(EventBusTest, BadHandlerOptionsAreRefusedNamingTheField) {
  BlockingEventBus bus;
  ASSERT_TRUE(bus.start());
  auto handler = sync_handler([](const Message&) -> Result<void> { return ok(); });
  HandlerOptions none;
  none.concurrency = 0;
  auto refused = bus.subscribe_to_events({"x"}, handler, "", none);
  ASSERT_FALSE(refused);
  EXPECT_TRUE(refused.error().is(errc::invalid_argument));
  EXPECT_NE(refused.error().message().find("HandlerOptions.concurrency"), std::string::npos);
  HandlerOptions backwards;
  backwards.timeout = std::chrono::milliseconds(-1);
  refused = bus.handle_commands({"y"}, handler, "svc", backwards);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("HandlerOptions.timeout"), std::string::npos);
  ASSERT_TRUE(bus.stop());
}

TEST(EventBusTest, NothingWorksBeforeStartOrAfterStop) {
  BlockingEventBus bus;
  auto early = bus.publish_event("x", 1);
  ASSERT_FALSE(early);
  EXPECT_TRUE(early.error().is(errc::failed_precondition));
  EXPECT_NE(early.error().message().find("start()"), std::string::npos);
  EXPECT_FALSE(bus.subscribe_to_events({"x"}, sync_handler([](const Message&) { return ok(); })));
  ASSERT_TRUE(bus.start());
  auto late_config = bus.bus().route("x*", MessageBackendType::memory);
  EXPECT_FALSE(late_config);
  EXPECT_FALSE(bus.start());  // already started
  ASSERT_TRUE(bus.stop());
  EXPECT_FALSE(bus.stop());
  EXPECT_TRUE(bus.publish_event("x", 1).error().is(errc::failed_precondition));
  ASSERT_TRUE(bus.start());  // a stopped bus can start again
}

TEST(EventBusTest, StartNamesTheBackendThatCannotConnect) {
  BlockingEventBus bus;
  ASSERT_TRUE(bus.bus().register_backend(MessageBackendType::memory, make_memory_backend()));
  ASSERT_TRUE(bus.bus().register_backend(
      MessageBackendType::nats,
      std::make_shared<AlteredBackend>(make_memory_backend(), pub_sub_only(), "nats", true)));
  auto started = bus.start();
  ASSERT_FALSE(started);
  EXPECT_TRUE(started.error().is(errc::unavailable));
  EXPECT_NE(started.error().message().find("backend nats failed to connect"), std::string::npos);
  EXPECT_NE(started.error().message().find("connection refused"), std::string::npos);
  EXPECT_FALSE(bus.bus().running());
}

TEST(EventBusTest, StartRefusesRoutesNoBackendCanServe) {
  {
    BlockingEventBus bus;
    ASSERT_TRUE(bus.bus().route("orders.*", MessageBackendType::kafka));
    auto started = bus.start();
    ASSERT_FALSE(started);
    EXPECT_TRUE(started.error().is(errc::failed_precondition));
    EXPECT_NE(started.error().message().find("orders.*"), std::string::npos);
    EXPECT_NE(started.error().message().find("kafka"), std::string::npos);
  }
  {
    BlockingEventBus bus;
    ASSERT_TRUE(bus.bus().register_backend(
        MessageBackendType::aws_sns,
        std::make_shared<AlteredBackend>(make_memory_backend(), pub_sub_only(), "aws_sns")));
    ASSERT_TRUE(
        bus.bus().route("clicks", MessageBackendType::aws_sns, {MessagingPattern::streaming}));
    auto started = bus.start();
    ASSERT_FALSE(started);
    EXPECT_NE(started.error().message().find("does not support pattern streaming"),
              std::string::npos);
  }
  {
    // A pattern config that asks for a guarantee nobody gives.
    BlockingEventBus bus;
    Capabilities weak = pub_sub_only();
    weak.delivery = DeliveryGuarantee::at_most_once;
    ASSERT_TRUE(bus.bus().register_backend(
        MessageBackendType::nats,
        std::make_shared<AlteredBackend>(make_memory_backend(), weak, "nats")));
    ASSERT_TRUE(bus.bus().update_pattern_config(MessagingPattern::pub_sub,
                                                default_pattern_config(MessagingPattern::pub_sub)));
    auto started = bus.start();
    ASSERT_FALSE(started);
    EXPECT_NE(started.error().message().find("at_least_once"), std::string::npos);
  }
}

TEST(EventBusTest, RoutesSendTypesToTheirBackend) {
  auto broker_a = make_memory_broker();
  auto broker_b = make_memory_broker();
  BlockingEventBus bus;
  ASSERT_TRUE(
      bus.bus().register_backend(MessageBackendType::memory, make_memory_backend(broker_a)));
  ASSERT_TRUE(bus.bus().register_backend(
      MessageBackendType::redis,
      std::make_shared<AlteredBackend>(make_memory_backend(broker_b), pub_sub_only(), "redis")));
  ASSERT_TRUE(bus.bus().set_default_backend(MessageBackendType::memory));
  ASSERT_TRUE(bus.bus().route("audit.*", MessageBackendType::redis));
  ASSERT_TRUE(bus.start());
  EXPECT_EQ(*bus.bus().backend_for("audit.login", MessagingPattern::pub_sub),
            MessageBackendType::redis);
  EXPECT_EQ(*bus.bus().backend_for("orders.created", MessagingPattern::pub_sub),
            MessageBackendType::memory);
  // The route covers only what redis serves: streams of audit.* still go to memory.
  EXPECT_EQ(*bus.bus().backend_for("audit.login", MessagingPattern::streaming),
            MessageBackendType::memory);

  // An observer on broker B sees only the routed type.
  BlockingEventBus observer;
  ASSERT_TRUE(
      observer.bus().register_backend(MessageBackendType::memory, make_memory_backend(broker_b)));
  ASSERT_TRUE(observer.start());
  std::atomic<int> seen{0};
  ASSERT_TRUE(observer.subscribe_to_events({">"}, sync_handler([&](const Message& m) {
                                             EXPECT_EQ(m.type(), "audit.login");
                                             ++seen;
                                             return ok();
                                           })));
  ASSERT_TRUE(bus.publish_event("orders.created", 1));
  ASSERT_TRUE(bus.publish_event("audit.login", 2));
  EXPECT_TRUE(eventually([&] { return seen.load() == 1; }));
  std::this_thread::sleep_for(30ms);
  EXPECT_EQ(seen.load(), 1);
}

TEST(EventBusTest, ConfigurationErrorsAreClear) {
  BlockingEventBus bus;
  auto missing = bus.bus().set_default_backend(MessageBackendType::kafka);
  ASSERT_FALSE(missing);
  EXPECT_TRUE(missing.error().is(errc::not_found));
  EXPECT_FALSE(bus.bus().register_backend(MessageBackendType::nats, nullptr));
  auto config = default_pattern_config(MessagingPattern::pub_sub);
  config.retry_count = -1;
  EXPECT_FALSE(bus.bus().update_pattern_config(MessagingPattern::pub_sub, config));
}

TEST(EventBusTest, BadNamesAreRejectedNamingTheArgument) {
  BlockingEventBus bus;
  ASSERT_TRUE(bus.start());
  auto handler = sync_handler([](const Message&) { return ok(); });
  struct Case {
    Result<void> result;
    std::string mentions;
  };
  std::vector<Case> cases;
  cases.push_back({bus.publish_event("bad..type", 1), "event type"});
  cases.push_back({bus.publish_event("", 1), "event type"});
  cases.push_back({bus.publish_event("a.*", 1), "event type"});
  cases.push_back({bus.send_command("charge", 1, "pay ment"), "target service"});
  cases.push_back({bus.stream_events("bad stream", {1}), "stream name"});
  for (const auto& c : cases) {
    ASSERT_FALSE(c.result);
    EXPECT_TRUE(c.result.error().is(errc::invalid_argument)) << c.result.error().describe();
    EXPECT_NE(c.result.error().message().find(c.mentions), std::string::npos)
        << c.result.error().describe();
  }
  EXPECT_FALSE(bus.subscribe_to_events({}, handler));
  EXPECT_FALSE(bus.subscribe_to_events({"a.>.b"}, handler));
  EXPECT_FALSE(bus.subscribe_to_events({"ok"}, nullptr));
  EXPECT_FALSE(bus.process_stream("s", sync_batch_processor([](auto&) { return ok(); }), ""));
  auto bad_batch = bus.process_stream("s", sync_batch_processor([](auto&) { return ok(); }), "g",
                                      StreamOptions(0, 1s, StartPosition::earliest()));
  ASSERT_FALSE(bad_batch);
  EXPECT_NE(bad_batch.error().message().find("batch_size"), std::string::npos);
  auto bad_timeout = bus.query("q", 1, "svc", 0ms);
  ASSERT_FALSE(bad_timeout);
  EXPECT_TRUE(bad_timeout.error().is(errc::invalid_argument));
}

TEST(EventBusTest, BusFillsMetadataAndChainsQueryIds) {
  EventBusOptions options;
  options.service_name = "orders";
  BlockingEventBus bus(options);
  ASSERT_TRUE(bus.start());
  std::mutex mutex;
  std::vector<Message> got;
  ASSERT_TRUE(bus.subscribe_to_events({"placed"}, sync_handler([&](const Message& m) {
                                        std::lock_guard lock(mutex);
                                        got.push_back(m);
                                        return ok();
                                      })));
  MessageMetadata md;
  md.message_type = "something_else";  // the Python original kept this and lost the real type
  md.correlation_id = "c-1";
  ASSERT_TRUE(bus.publish_event("placed", {{"id", 1}}, md));
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lock(mutex);
    return got.size() == 1;
  }));
  const Message& m = got[0];
  EXPECT_EQ(m.type(), "placed");
  EXPECT_EQ(m.metadata().source, "orders");
  EXPECT_EQ(m.metadata().correlation_id, "c-1");
  EXPECT_EQ(m.id().size(), 36u);
  EXPECT_TRUE(m.metadata().time.has_value());

  ASSERT_TRUE(bus.handle_queries(
      {"whoami"}, sync_query_handler([](const Message& q) -> Result<Json> {
        return Json{{"id", q.id()}, {"correlation", q.metadata().correlation_id}};
      }),
      "identity"));
  auto reply = bus.query("whoami", {}, "identity", 2s);
  ASSERT_TRUE(reply) << reply.error().describe();
  EXPECT_EQ((*reply)["correlation"], (*reply)["id"]);  // a query starts its own conversation
}

TEST(EventBusTest, StreamBatchesFlushOnSizeOrWait) {
  BlockingEventBus bus;
  ASSERT_TRUE(bus.start());
  std::mutex mutex;
  std::vector<std::size_t> sizes;
  std::vector<SteadyClock::time_point> times;
  StreamOptions options;
  options.batch_size = 10;
  options.max_wait = 200ms;
  options.start = StartPosition::earliest();
  ASSERT_TRUE(bus.process_stream("metrics",
                                 sync_batch_processor([&](const std::vector<Message>& batch) {
                                   std::lock_guard lock(mutex);
                                   sizes.push_back(batch.size());
                                   times.push_back(SteadyClock::now());
                                   return ok();
                                 }),
                                 "aggregator", options));
  std::vector<Json> events(25, Json{{"v", 1}});
  const auto published_at = SteadyClock::now();
  ASSERT_TRUE(bus.stream_events("metrics", events));
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lock(mutex);
    return sizes.size() == 3;
  }));
  std::lock_guard lock(mutex);
  EXPECT_EQ(sizes, (std::vector<std::size_t>{10, 10, 5}));
  // The partial batch waited for max_wait; the full ones did not.
  EXPECT_LT(times[0] - published_at, 150ms);
  EXPECT_GE(times[2] - published_at, 190ms);
}

TEST(EventBusTest, StopReportsHandlersStillRunningAtTheDeadline) {
  BlockingEventBus bus;
  ASSERT_TRUE(bus.start());
  std::atomic<bool> started{false};
  ASSERT_TRUE(bus.subscribe_to_events({"slow"}, sync_handler([&](const Message&) {
                                        started = true;
                                        std::this_thread::sleep_for(300ms);
                                        return ok();
                                      })));
  ASSERT_TRUE(bus.publish_event("slow", 1));
  ASSERT_TRUE(eventually([&] { return started.load(); }));
  // Handlers run on the bus's only thread, so stop() must be driven from elsewhere.
  BlockingEventBus driver;
  auto stopped = driver.run(bus.bus().stop(50ms));
  ASSERT_FALSE(stopped);
  EXPECT_TRUE(stopped.error().is(errc::deadline_exceeded));
  EXPECT_NE(stopped.error().message().find("handlers of 1 subscription(s) still running"),
            std::string::npos)
      << stopped.error().message();
  EXPECT_NE(stopped.error().message().find("1 message(s) they held were released"),
            std::string::npos)
      << stopped.error().message();
}

TEST(EventBusTest, UnsubscribeStopsDelivery) {
  BlockingEventBus bus;
  ASSERT_TRUE(bus.start());
  std::atomic<int> seen{0};
  auto id = bus.subscribe_to_events({"tick"}, sync_handler([&](const Message&) {
                                      ++seen;
                                      return ok();
                                    }));
  ASSERT_TRUE(id);
  ASSERT_TRUE(bus.publish_event("tick", 1));
  ASSERT_TRUE(eventually([&] { return seen.load() == 1; }));
  ASSERT_TRUE(bus.unsubscribe(*id));
  ASSERT_TRUE(bus.publish_event("tick", 2));
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(seen.load(), 1);
  auto again = bus.unsubscribe(*id);
  ASSERT_FALSE(again);
  EXPECT_TRUE(again.error().is(errc::not_found));
}

// Callers are coroutines too: temporaries and defaulted arguments must reach the bus intact.
// (GCC 12 miscompiles aggregate temporaries here; ASan catches a regression.)
asio::awaitable<Result<Json>> caller_with_temporaries(UnifiedEventBus& bus) {
  auto published = co_await bus.publish_event("coro_event", Json(1));
  if (!published) co_return published.error();
  auto with_metadata = co_await bus.publish_event("coro_event", Json(2), MessageMetadata());
  if (!with_metadata) co_return with_metadata.error();
  auto streamed = co_await bus.stream_events("coro_stream", std::vector<Json>(3, Json(1)));
  if (!streamed) co_return streamed.error();
  co_return co_await bus.query("coro_query", Json("ping"), "coro_service", 2s);
}

TEST(EventBusTest, CoroutineCallersMayPassTemporaries) {
  BlockingEventBus bus;
  ASSERT_TRUE(bus.start());
  std::atomic<int> events{0};
  ASSERT_TRUE(bus.subscribe_to_events({"coro_event"}, sync_handler([&](const Message&) {
                                        ++events;
                                        return ok();
                                      })));
  ASSERT_TRUE(bus.handle_queries(
      {"coro_query"}, sync_query_handler([](const Message& q) -> Result<Json> { return q.json(); }),
      "coro_service"));
  auto reply = bus.run(caller_with_temporaries(bus.bus()));
  ASSERT_TRUE(reply) << reply.error().describe();
  EXPECT_EQ(*reply, "ping");
  EXPECT_TRUE(eventually([&] { return events.load() == 2; }));
}

TEST(EventBusTest, GenericRepliesMatchTheirQueryEvenWhenCallersReuseIds) {
  MemoryBackendConfig config;
  config.native_request_reply = false;
  auto broker = make_memory_broker(config);
  BlockingEventBus responder, requester(EventBusOptions(), 2);
  ASSERT_TRUE(
      responder.bus().register_backend(MessageBackendType::memory, make_memory_backend(broker)));
  ASSERT_TRUE(
      requester.bus().register_backend(MessageBackendType::memory, make_memory_backend(broker)));
  ASSERT_TRUE(responder.start());
  ASSERT_TRUE(requester.start());
  ASSERT_TRUE(responder.handle_queries({"echo"},
                                       sync_query_handler([](const Message& q) -> Result<Json> {
                                         if (q.json() == "slow") std::this_thread::sleep_for(50ms);
                                         return q.json();
                                       }),
                                       "echo_service"));
  MessageMetadata same_id;
  same_id.message_id = "caller-chosen-id";
  std::thread other([&] {
    auto slow =
        requester.run(requester.bus().query("echo", Json("slow"), "echo_service", 2s, same_id));
    ASSERT_TRUE(slow) << slow.error().describe();
    EXPECT_EQ(*slow, "slow");
  });
  std::this_thread::sleep_for(10ms);
  auto fast =
      requester.run(requester.bus().query("echo", Json("fast"), "echo_service", 2s, same_id));
  other.join();
  ASSERT_TRUE(fast) << fast.error().describe();
  EXPECT_EQ(*fast, "fast");
}

TEST(EventBusTest, QueryToAServiceThatLeftFailsAtOnce) {
  BlockingEventBus bus;
  ASSERT_TRUE(bus.start());
  auto id = bus.handle_queries(
      {"ping"}, sync_query_handler([](const Message&) -> Result<Json> { return Json("pong"); }),
      "pinger");
  ASSERT_TRUE(id);
  ASSERT_TRUE(bus.query("ping", {}, "pinger", 2s));
  ASSERT_TRUE(bus.unsubscribe(*id));
  const auto start = SteadyClock::now();
  auto gone = bus.query("ping", {}, "pinger", 2s);
  ASSERT_FALSE(gone);
  EXPECT_TRUE(gone.error().is(errc::not_found)) << gone.error().describe();
  EXPECT_LT(SteadyClock::now() - start, 500ms);
}

// Suspends the calling handler for `duration` (without blocking the bus's thread).
asio::awaitable<void> pause(std::chrono::milliseconds duration) {
  asio::steady_timer timer(co_await asio::this_coro::executor, duration);
  std::error_code ignored;
  co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
}

TEST(EventBusTest, QueriesAreAnsweredConcurrentlyWhenAsked) {
  BlockingEventBus bus;
  ASSERT_TRUE(bus.start());
  std::atomic<int> active{0};
  std::atomic<int> arrived{0};
  std::atomic<int> most{0};
  // Each call waits (up to 2 s) until all four have arrived: only concurrency lets them.
  QueryHandler gathering = [&](Message) -> asio::awaitable<Result<Json>> {
    ++arrived;
    most = std::max(most.load(), ++active);
    for (int i = 0; i < 400 && arrived < 4; ++i) co_await pause(5ms);
    most = std::max(most.load(), active.load());
    --active;
    co_return Json("quote");
  };
  HandlerOptions options;
  options.concurrency = 4;
  ASSERT_TRUE(bus.handle_queries({"quote"}, gathering, "pricing", options));
  std::vector<std::thread> callers;
  std::atomic<int> answered{0};
  for (int i = 0; i < 4; ++i) {
    callers.emplace_back([&] {
      if (auto reply = bus.query("quote", {}, "pricing", 5s); reply && *reply == "quote") {
        ++answered;
      }
    });
  }
  for (auto& caller : callers) caller.join();
  EXPECT_EQ(answered, 4);
  EXPECT_EQ(most, 4) << "the four queries were not handled at once";
}

TEST(EventBusTest, AQueryHandlerPastItsTimeoutAnswersDeadlineExceeded) {
  BlockingEventBus bus;
  ASSERT_TRUE(bus.start());
  QueryHandler stuck = [](Message) -> asio::awaitable<Result<Json>> {
    co_await pause(3s);
    co_return Json("late");
  };
  HandlerOptions options;
  options.timeout = 100ms;
  ASSERT_TRUE(bus.handle_queries({"report"}, stuck, "reports", options));
  auto reply = bus.query("report", {}, "reports", 5s);
  ASSERT_FALSE(reply);
  EXPECT_TRUE(reply.error().is(errc::deadline_exceeded)) << reply.error().describe();
  EXPECT_NE(reply.error().message().find("100 ms timeout"), std::string::npos)
      << reply.error().message();
  HandlerOptions bad;
  bad.concurrency = 0;
  auto refused = bus.handle_queries({"report"}, stuck, "reports", bad);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("handle_queries: HandlerOptions.concurrency"),
            std::string::npos)
      << refused.error().message();
}

TEST(EventBusTest, HandlersMayStillPublishWhileStopDrains) {
  auto broker = make_memory_broker();
  BlockingEventBus bus, observer;
  ASSERT_TRUE(bus.bus().register_backend(MessageBackendType::memory, make_memory_backend(broker)));
  ASSERT_TRUE(
      observer.bus().register_backend(MessageBackendType::memory, make_memory_backend(broker)));
  ASSERT_TRUE(bus.start());
  ASSERT_TRUE(observer.start());
  std::atomic<int> followups{0};
  ASSERT_TRUE(observer.subscribe_to_events({"followup"}, sync_handler([&](const Message&) {
                                             ++followups;
                                             return ok();
                                           })));
  std::atomic<bool> started{false};
  std::atomic<bool> publish_ok{false};
  auto handler = [&](Message) -> asio::awaitable<Result<void>> {
    started = true;
    co_await testing::async_sleep(100ms);
    auto sent = co_await bus.bus().publish_event("followup", Json(1));
    publish_ok = sent.has_value();
    co_return sent;
  };
  ASSERT_TRUE(bus.subscribe_to_events({"work"}, handler));
  ASSERT_TRUE(bus.publish_event("work", 1));
  ASSERT_TRUE(eventually([&] { return started.load(); }));
  ASSERT_TRUE(bus.stop(5s));
  EXPECT_TRUE(publish_ok.load()) << "a draining handler could not publish";
  EXPECT_TRUE(eventually([&] { return followups.load() == 1; }));
}

TEST(EventBusTest, WildcardsNeedABackendThatSupportsThem) {
  BlockingEventBus bus;
  ASSERT_TRUE(bus.bus().register_backend(
      MessageBackendType::aws_sns,
      std::make_shared<AlteredBackend>(make_memory_backend(), pub_sub_only(), "aws_sns")));
  ASSERT_TRUE(bus.start());
  auto sub =
      bus.subscribe_to_events({"orders.*"}, sync_handler([](const Message&) { return ok(); }));
  ASSERT_FALSE(sub);
  EXPECT_NE(sub.error().message().find("wildcard"), std::string::npos);
}

}  // namespace
}  // namespace marty::messaging

namespace marty::messaging {
namespace {

TEST(EventBusTest, AnOpenBackendCircuitFailsSendsAtOnceUntilAProbeSucceeds) {
  EventBusOptions options;
  options.backend_circuit_breaker.failure_threshold = 3;
  options.backend_circuit_breaker.open_for = 1s;  // far above a publish, even under ASan
  BlockingEventBus bus(options);
  auto backend = std::make_shared<InterruptibleBackend>(make_memory_backend());
  ASSERT_TRUE(bus.bus().register_backend(MessageBackendType::memory, backend));
  ASSERT_TRUE(bus.start());
  ASSERT_TRUE(bus.publish_event("tick", {{"n", 0}}));

  backend->down = true;
  for (int i = 0; i < 3; ++i) {
    auto failed = bus.publish_event("tick", {{"n", i}});
    ASSERT_FALSE(failed);
    EXPECT_NE(failed.error().message().find("connection refused"), std::string::npos);
  }
  // Open: refused without reaching the backend, saying why and for how long.
  const int reached = backend->publishes;
  auto refused = bus.publish_event("tick", {{"n", 3}});
  ASSERT_FALSE(refused);
  EXPECT_TRUE(refused.error().is(errc::unavailable));
  EXPECT_NE(refused.error().message().find("circuit of backend memory is open"), std::string::npos)
      << refused.error().describe();
  EXPECT_EQ(backend->publishes, reached);
  backend->down = false;
  std::this_thread::sleep_for(1020ms);
  // Half-open: the probe goes through and closes the circuit.
  ASSERT_TRUE(bus.publish_event("tick", {{"n", 4}}));
  EXPECT_EQ(backend->publishes, reached + 1);
  ASSERT_TRUE(bus.publish_event("tick", {{"n", 5}}));
  // A failed probe opens it again for the whole time.
  backend->down = true;
  for (int i = 0; i < 3; ++i) ASSERT_FALSE(bus.publish_event("tick", {{"n", i}}));
  std::this_thread::sleep_for(1020ms);
  ASSERT_FALSE(bus.publish_event("tick", {{"n", 6}}));  // the probe, failing
  const int after_probe = backend->publishes;
  auto again = bus.publish_event("tick", {{"n", 7}});
  ASSERT_FALSE(again);
  EXPECT_NE(again.error().message().find("is open"), std::string::npos);
  EXPECT_EQ(backend->publishes, after_probe);
  ASSERT_TRUE(bus.stop());
}

TEST(EventBusTest, ABackendCircuitWithoutAnOpenTimeIsRefusedAtStart) {
  EventBusOptions options;
  options.backend_circuit_breaker.failure_threshold = 1;
  options.backend_circuit_breaker.open_for = 0ms;
  BlockingEventBus bus(options);
  auto started = bus.start();
  ASSERT_FALSE(started);
  EXPECT_TRUE(started.error().is(errc::invalid_argument));
  EXPECT_NE(started.error().message().find("backend_circuit_breaker.open_for"), std::string::npos);
}

}  // namespace
}  // namespace marty::messaging
