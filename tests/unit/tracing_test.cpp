// W3C trace context: parsing, and how the bus carries it from publish to handler to what the
// handler publishes, queries and replies, across two backends. (The conformance suite checks
// that every broker backend's wire keeps it.)
#include <gtest/gtest.h>

#include <mutex>
#include <vector>

#include "../support/test_loop.hpp"
#include "marty/messaging.hpp"

namespace marty::messaging {
namespace {

using namespace std::chrono_literals;
using testing::eventually;

constexpr std::string_view kExample = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

class RecordingTracer final : public Tracer {
 public:
  void on_span_end(const Span& span) override {
    std::lock_guard lock(mutex_);
    spans_.push_back(span);
  }
  std::vector<Span> spans() const {
    std::lock_guard lock(mutex_);
    return spans_;
  }
  std::optional<Span> find(Span::Kind kind, const std::string& subject) const {
    for (const auto& span : spans()) {
      if (span.kind == kind && span.subject == subject) return span;
    }
    return std::nullopt;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<Span> spans_;
};

TEST(TraceContextTest, ParsesAndWritesTraceparent) {
  auto context = TraceContext::parse(kExample, "vendor=opaque");
  ASSERT_TRUE(context);
  EXPECT_EQ(context->trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(context->span_id, "00f067aa0ba902b7");
  EXPECT_EQ(context->flags, 1);
  EXPECT_EQ(context->tracestate, "vendor=opaque");
  EXPECT_EQ(context->traceparent(), kExample);
  const TraceContext child = context->child();
  EXPECT_EQ(child.trace_id, context->trace_id);
  EXPECT_NE(child.span_id, context->span_id);
  EXPECT_EQ(child.tracestate, "vendor=opaque");
  // A later version: its first four fields are read, what follows is ignored.
  EXPECT_TRUE(TraceContext::parse(
      "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-later"));
  const TraceContext root = TraceContext::root();
  EXPECT_TRUE(TraceContext::parse(root.traceparent()));
}

TEST(TraceContextTest, RefusesMalformedTraceparents) {
  for (const char* bad : {
           "", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",   // no flags
           "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",    // uppercase
           "00-00000000000000000000000000000000-00f067aa0ba902b7-01",    // zero trace id
           "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",    // zero span id
           "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",    // version ff
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",  // 00 with more
           "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",    // separator
           "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",    // not hex
       }) {
    EXPECT_FALSE(TraceContext::parse(bad)) << bad;
  }
}

// publish → handler → command and query (caused_by) → their handlers → reply: one trace, each
// span the child of the one before, across two backends (events on one, queries on the other).
TEST(TracingTest, OneTraceFromEventToReplyAcrossTwoBackends) {
  auto tracer = std::make_shared<RecordingTracer>();
  EventBusOptions options;
  options.tracer = tracer;
  BlockingEventBus bus(options, 2);
  ASSERT_TRUE(bus.bus().register_backend(MessageBackendType::memory, make_memory_backend()));
  // A second, separate backend (its own transport) for the queries.
  ASSERT_TRUE(bus.bus().register_backend(MessageBackendType::redis, make_memory_backend()));
  ASSERT_TRUE(bus.bus().route("price*", MessageBackendType::redis));
  ASSERT_TRUE(bus.start());
  std::mutex mutex;
  std::optional<Message> event_seen, command_seen, query_seen;
  Result<Json> price = Error(errc::internal, "not yet");
  UnifiedEventBus& async_bus = bus.bus();
  ASSERT_TRUE(bus.subscribe_to_events(
      {"order_placed"},
      [&](Message m) -> asio::awaitable<Result<void>> {
        {
          std::lock_guard lock(mutex);
          event_seen = m;
        }
        // Named, not braced temporaries, inside co_await (GCC 12: docs/decisions).
        Json sku{{"sku", "a"}};
        MessageMetadata query_metadata = caused_by(m);
        std::optional<std::chrono::milliseconds> wait = 5s;
        auto asked = co_await async_bus.query("price", std::move(sku), "catalog", wait,
                                              std::move(query_metadata));
        {
          std::lock_guard lock(mutex);
          price = asked;
        }
        Json amount{{"amount", 3}};
        MessageMetadata command_metadata = caused_by(m);
        co_return co_await async_bus.send_command("charge", std::move(amount), "billing",
                                                  std::move(command_metadata));
      },
      "shop"));
  ASSERT_TRUE(bus.handle_queries({"price"},
                                 sync_query_handler([&](const Message& m) -> Result<Json> {
                                   std::lock_guard lock(mutex);
                                   query_seen = m;
                                   return Json(3);
                                 }),
                                 "catalog"));
  ASSERT_TRUE(bus.handle_commands({"charge"}, sync_handler([&](const Message& m) -> Result<void> {
                                    std::lock_guard lock(mutex);
                                    command_seen = m;
                                    return ok();
                                  }),
                                  "billing"));
  ASSERT_TRUE(bus.publish_event("order_placed", {{"order", 1}}));
  // Every span of the chain ended: publishing the event, the query, its reply and the command,
  // and handling the three (a publishing span ends when its publish returns, which may be after
  // the message was handled).
  ASSERT_TRUE(eventually([&] { return tracer->spans().size() == 7; }))
      << tracer->spans().size() << " spans";
  std::lock_guard lock(mutex);
  ASSERT_TRUE(event_seen && query_seen && command_seen);
  ASSERT_TRUE(price) << price.error().describe();
  EXPECT_EQ(*price, 3);

  const auto published = tracer->find(Span::Kind::producer, "events.order_placed");
  const auto handled = tracer->find(Span::Kind::consumer, "events.order_placed");
  const auto asked = tracer->find(Span::Kind::producer, "queries.catalog.price");
  const auto answered = tracer->find(Span::Kind::consumer, "queries.catalog.price");
  const auto commanded = tracer->find(Span::Kind::producer, "commands.billing.charge");
  const auto charged = tracer->find(Span::Kind::consumer, "commands.billing.charge");
  ASSERT_TRUE(published && handled && asked && answered && commanded && charged);
  const std::string trace = published->context.trace_id;
  for (const auto& span : tracer->spans()) {
    EXPECT_EQ(span.context.trace_id, trace) << span.name << " left the trace";
  }
  EXPECT_TRUE(published->parent_span_id.empty()) << "the first span starts the trace";
  EXPECT_EQ(handled->parent_span_id, published->context.span_id);
  EXPECT_EQ(asked->parent_span_id, handled->context.span_id);
  EXPECT_EQ(answered->parent_span_id, asked->context.span_id);
  EXPECT_EQ(commanded->parent_span_id, handled->context.span_id);
  EXPECT_EQ(charged->parent_span_id, commanded->context.span_id);
  EXPECT_EQ(answered->backend, "memory");
  // The reply: published by the query's handling span.
  bool reply_seen = false;
  for (const auto& span : tracer->spans()) {
    if (span.kind == Span::Kind::producer && span.parent_span_id == answered->context.span_id) {
      reply_seen = true;
      EXPECT_EQ(span.message_id.empty(), false);
    }
  }
  EXPECT_TRUE(reply_seen) << "no reply span under the query's handling span";
  // Correlation and causation chained from the event.
  EXPECT_EQ(command_seen->metadata().correlation_id, event_seen->id());
  EXPECT_EQ(command_seen->metadata().causation_id, event_seen->id());
  EXPECT_EQ(query_seen->metadata().causation_id, event_seen->id());
  // Handlers see their own span's context.
  EXPECT_EQ(TraceContext::of(*command_seen)->span_id, charged->context.span_id);
}

// A caller's context is continued, unsampled ones included (the flags are passed on as they
// came); a failed handler's span says why.
TEST(TracingTest, CallersContextIsContinuedAndFailuresRecorded) {
  auto tracer = std::make_shared<RecordingTracer>();
  EventBusOptions options;
  options.tracer = tracer;
  BlockingEventBus bus(options);
  ASSERT_TRUE(bus.start());
  ASSERT_TRUE(bus.handle_commands({"fail"}, sync_handler([](const Message&) -> Result<void> {
                                    return Error(errc::invalid_argument, "no such order");
                                  }),
                                  "orders"));
  MessageMetadata metadata;
  metadata.headers["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
  metadata.headers["tracestate"] = "vendor=opaque";
  ASSERT_TRUE(bus.send_command("fail", {}, "orders", metadata));
  ASSERT_TRUE(eventually(
      [&] { return tracer->find(Span::Kind::consumer, "commands.orders.fail").has_value(); }));
  const auto sent = tracer->find(Span::Kind::producer, "commands.orders.fail");
  const auto failed = tracer->find(Span::Kind::consumer, "commands.orders.fail");
  ASSERT_TRUE(sent && failed);
  EXPECT_EQ(sent->context.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(sent->parent_span_id, "00f067aa0ba902b7");
  EXPECT_EQ(failed->context.flags, 0) << "an unsampled trace stays unsampled";
  EXPECT_EQ(failed->context.tracestate, "vendor=opaque");
  EXPECT_FALSE(failed->ok);
  EXPECT_NE(failed->error.find("no such order"), std::string::npos) << failed->error;
}

// Without an enabled tracer the bus makes no spans and adds nothing: a message's context is
// passed on as it came (the default logging tracer is enabled only at debug level).
TEST(TracingTest, WithoutSpansContextsArePassedOnUntouched) {
  EventBusOptions options;
  options.tracer = nullptr;
  BlockingEventBus bus(options);
  ASSERT_TRUE(bus.start());
  std::mutex mutex;
  std::vector<Message> seen;
  ASSERT_TRUE(
      bus.subscribe_to_events({"noted"}, sync_handler([&](const Message& m) -> Result<void> {
                                std::lock_guard lock(mutex);
                                seen.push_back(m);
                                return ok();
                              })));
  MessageMetadata traced;
  traced.headers["traceparent"] = std::string(kExample);
  ASSERT_TRUE(bus.publish_event("noted", {{"n", 1}}, traced));
  ASSERT_TRUE(bus.publish_event("noted", {{"n", 2}}));
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lock(mutex);
    return seen.size() == 2;
  }));
  std::lock_guard lock(mutex);
  for (const auto& m : seen) {
    if (m.json()["n"] == 1) {
      EXPECT_EQ(TraceContext::of(m)->traceparent(), kExample);
    } else {
      EXPECT_FALSE(TraceContext::of(m)) << "a context was added without a tracer";
    }
  }
  EXPECT_FALSE(make_logging_tracer()->enabled()) << "spdlog's default level is info";
}

}  // namespace
}  // namespace marty::messaging
