// The NATS backend against raw nats.c on the same server, in the same run, 128-byte JSON
// messages, median of alternating runs, with the client CPU per message (both sides in this
// process: every thread, nats.c's included).
//
// What the bus sends (captured with a raw subscriber on the subjects, and in nats_wire.cpp /
// nats_backend.cpp): every message carries the CloudEvents binary-mode headers ce-specversion,
// ce-id (a fresh UUIDv7), ce-source, ce-type, ce-time (fresh, RFC 3339 with microseconds) and
// content-type, the payload unchanged as the body; a JetStream publish also carries
// Nats-Msg-Id ("<subject>|<ce-id>") and waits for the server's acknowledgement.
//
// The baselines, each the same work done with nats.c alone:
//   core pub/sub, same bytes: a nats.c message per publish with the same six headers (fresh id
//     and time each) and the same pre-serialized body; the subscriber reads every header, as
//     the bus's does to decode one. The bus publishes a prepared message (the same bytes).
//   core pub/sub, bare: the body alone, no headers (what the headers cost).
//   request/reply: natsConnection_Request against a responder that echoes at once, both on
//     connections that write at once (as the bus's requests and replies are), same body size.
//   JetStream publish, same bytes: js_PublishMsgAsync of the same headers and body with the
//     same Nats-Msg-Id, at most kWindow unacknowledged (PublishAsync.MaxPending: the library
//     stalls the publisher until acks free a slot), on a file stream with the bus's settings;
//     the bus has kWindow stream_events calls in flight, each awaiting its acknowledgement.
//   JetStream publish, bare: the same without headers or message id.
//   JetStream end to end: the same acknowledged publishes, read by a durable push consumer
//     (explicit acks, max ack pending as the bus's consumer has it) that reads every header and
//     acknowledges each message (natsMsg_Ack); the bus: stream_events into process_stream.
// usage: marty_bench_nats [--messages N] [--requests N] [--jetstream-messages N] [--runs N]
//        (MARTY_NATS_URL: the server)
#include <nats/nats.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>

#include "bench_bus.hpp"
#include "bench_support.hpp"
#include "bench_wire.hpp"
#include "marty/messaging.hpp"
#include "marty/messaging/codec.hpp"
#include "marty/messaging/nats_backend.hpp"

namespace mm = marty::messaging;
using namespace std::chrono_literals;
using namespace marty::messaging::bench;

namespace {

struct Options {
  std::size_t messages = 200'000;
  std::size_t requests = 5'000;
  std::size_t jetstream_messages = 50'000;
  int runs = 3;
};

/// JetStream publishes awaiting their acknowledgement at once, on both sides.
constexpr std::size_t kWindow = 256;
/// The bus's consumers hold this many unacknowledged messages (NatsConfig::max_ack_pending).
constexpr int kMaxAckPending = 1'000;

std::string server_url() {
  const char* url = std::getenv("MARTY_NATS_URL");
  return url != nullptr ? url : "nats://127.0.0.1:4222";
}

void check_status(natsStatus status, const char* what) {
  if (status != NATS_OK) {
    std::fprintf(stderr, "benchmark failed: %s: %s\n", what, natsStatus_GetText(status));
    std::exit(1);
  }
}

double seconds(Steady::duration d) {
  return std::chrono::duration<double>(d).count();
}

std::string unique(const char* base) {
  return std::string(base) + "_" + mm::make_uuid_v7().substr(24);
}

// ---- raw nats.c ----

enum class Wire { bare, same_bytes };

natsConnection* raw_connect(bool send_asap) {
  natsOptions* options = nullptr;
  check_status(natsOptions_Create(&options), "options");
  check_status(natsOptions_SetURL(options, server_url().c_str()), "url");
  check_status(natsOptions_SetSendAsap(options, send_asap), "send asap");
  natsConnection* nc = nullptr;
  check_status(natsConnection_Connect(&nc, options), "connect");
  natsOptions_Destroy(options);
  return nc;
}

/// Reads every header of `msg`, as any reader of CloudEvents attributes must.
void read_headers(natsMsg* msg) {
  const char** keys = nullptr;
  int count = 0;
  if (natsMsgHeader_Keys(msg, &keys, &count) != NATS_OK) return;
  for (int i = 0; i < count; ++i) {
    const char* value = nullptr;
    natsMsgHeader_Get(msg, keys[i], &value);
  }
  std::free(static_cast<void*>(keys));
}

struct Counter {
  bool read_headers = false;
  bool ack = false;  // JetStream: acknowledge each message
  std::atomic<std::size_t> received{0};
  std::atomic<bool> failed{false};
  std::size_t expected = 0;
  std::promise<Steady::time_point> done;
};

void count_message(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
  auto* counter = static_cast<Counter*>(closure);
  if (counter->read_headers) read_headers(msg);
  if (counter->ack && natsMsg_Ack(msg, nullptr) != NATS_OK) counter->failed = true;
  natsMsg_Destroy(msg);
  if (counter->received.fetch_add(1) + 1 == counter->expected)
    counter->done.set_value(Steady::now());
}

/// A message on `subject` with the bus's headers (fresh id and time) and the prototype's body.
natsMsg* message_with_headers(const char* subject, CloudEventHeaders& headers) {
  const std::string_view body = prototype().bytes();
  natsMsg* msg = nullptr;
  check_status(natsMsg_Create(&msg, subject, nullptr, body.data(), static_cast<int>(body.size())),
               "message");
  for (const auto& [name, value] : headers.next()) {
    check_status(natsMsgHeader_Set(msg, name.c_str(), value.c_str()), "header");
  }
  return msg;
}

Rate raw_pubsub(std::size_t count, Wire wire) {
  natsConnection* publisher = raw_connect(false);
  natsConnection* subscriber = raw_connect(false);
  const std::string subject = "events." + unique("raw_bench");
  Counter counter;
  counter.expected = count;
  counter.read_headers = wire == Wire::same_bytes;
  CloudEventHeaders headers(subject.substr(7));
  natsSubscription* sub = nullptr;
  check_status(natsConnection_Subscribe(&sub, subscriber, subject.c_str(), count_message, &counter),
               "subscribe");
  check_status(natsSubscription_SetPendingLimits(sub, -1, -1), "limits");
  check_status(natsConnection_Flush(subscriber), "flush");
  const std::string_view body = prototype().bytes();
  auto done = counter.done.get_future();
  RateMeter meter(count);
  for (std::size_t i = 0; i < count; ++i) {
    if (wire == Wire::bare) {
      check_status(natsConnection_Publish(publisher, subject.c_str(), body.data(),
                                          static_cast<int>(body.size())),
                   "publish");
      continue;
    }
    natsMsg* msg = message_with_headers(subject.c_str(), headers);
    check_status(natsConnection_PublishMsg(publisher, msg), "publish");
    natsMsg_Destroy(msg);
  }
  check_status(natsConnection_Flush(publisher), "flush");
  check(done.wait_for(60s) == std::future_status::ready, "raw subscriber received everything");
  const Rate rate = meter.stop(done.get());
  natsSubscription_Unsubscribe(sub);
  natsSubscription_Destroy(sub);
  natsConnection_Destroy(publisher);
  natsConnection_Destroy(subscriber);
  return rate;
}

void echo_message(natsConnection* nc, natsSubscription*, natsMsg* msg, void*) {
  natsConnection_Publish(nc, natsMsg_GetReply(msg), natsMsg_GetData(msg),
                         natsMsg_GetDataLength(msg));
  natsMsg_Destroy(msg);
}

Latency raw_requests(std::size_t count) {
  natsConnection* responder = raw_connect(true);
  natsConnection* requester = raw_connect(true);
  const std::string subject = "queries.bench." + unique("raw");
  natsSubscription* sub = nullptr;
  check_status(natsConnection_Subscribe(&sub, responder, subject.c_str(), echo_message, nullptr),
               "subscribe");
  check_status(natsConnection_Flush(responder), "flush");
  const std::string_view payload = prototype().bytes();
  std::vector<double> micros;
  for (std::size_t i = 0; i < count + count / 10; ++i) {
    natsMsg* reply = nullptr;
    const auto start = Steady::now();
    check_status(natsConnection_Request(&reply, requester, subject.c_str(), payload.data(),
                                        static_cast<int>(payload.size()), 2000),
                 "request");
    if (i >= count / 10) micros.push_back(seconds(Steady::now() - start) * 1e6);
    natsMsg_Destroy(reply);
  }
  natsSubscription_Unsubscribe(sub);
  natsSubscription_Destroy(sub);
  natsConnection_Destroy(responder);
  natsConnection_Destroy(requester);
  return percentiles(std::move(micros));
}

std::atomic<std::size_t> raw_publish_failures{0};

void on_publish_error(jsCtx*, jsPubAckErr*, void*) {
  ++raw_publish_failures;
}

jsCtx* raw_jetstream_context(natsConnection* nc) {
  jsOptions options;
  jsOptions_Init(&options);
  options.PublishAsync.MaxPending = static_cast<int64_t>(kWindow);
  options.PublishAsync.StallWait = 60'000;  // a full window waits for an ack, never fails
  options.PublishAsync.ErrHandler = on_publish_error;
  jsCtx* js = nullptr;
  check_status(natsConnection_JetStream(&js, nc, &options), "jetstream");
  return js;
}

/// A file stream capturing the subject of its own name, as the bus makes a bus stream.
void add_stream(jsCtx* js, const std::string& name) {
  const char* subjects[] = {name.c_str()};
  jsStreamConfig config;
  jsStreamConfig_Init(&config);
  config.Name = name.c_str();
  config.Subjects = subjects;
  config.SubjectsLen = 1;
  config.Storage = js_FileStorage;
  config.Duplicates = 120'000'000'000;  // the bus's duplicate window (StreamConfig)
  jsStreamInfo* info = nullptr;
  jsErrCode code;
  check_status(js_AddStream(&info, js, &config, nullptr, &code), "add stream");
  jsStreamInfo_Destroy(info);
}

void delete_stream(const std::string& name) {
  natsConnection* nc = raw_connect(false);
  jsCtx* js = nullptr;
  check_status(natsConnection_JetStream(&js, nc, nullptr), "jetstream");
  jsErrCode code;
  js_DeleteStream(js, name.c_str(), nullptr, &code);
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
}

/// Acknowledged publishes to a stream, kWindow in flight; with `consume`, until a durable
/// consumer has received and acknowledged the last one.
Rate raw_jetstream(std::size_t count, Wire wire, bool consume) {
  natsConnection* nc = raw_connect(false);
  jsCtx* js = raw_jetstream_context(nc);
  const std::string stream = unique("raw_js");
  add_stream(js, stream);
  raw_publish_failures = 0;

  Counter counter;
  counter.expected = count;
  counter.read_headers = true;
  counter.ack = true;
  natsConnection* consumer_nc = nullptr;
  jsCtx* consumer_js = nullptr;
  natsSubscription* sub = nullptr;
  const std::string durable = unique("raw_group");
  if (consume) {
    consumer_nc = raw_connect(false);
    check_status(natsConnection_JetStream(&consumer_js, consumer_nc, nullptr), "jetstream");
    jsSubOptions options;
    jsSubOptions_Init(&options);
    options.Stream = stream.c_str();
    options.ManualAck = true;
    options.Config.Durable = durable.c_str();
    options.Config.AckPolicy = js_AckExplicit;
    options.Config.DeliverPolicy = js_DeliverNew;
    options.Config.MaxAckPending = kMaxAckPending;
    options.Config.AckWait = 30'000'000'000;  // the bus's ack_wait
    options.Config.MaxDeliver = -1;
    jsErrCode code;
    check_status(js_Subscribe(&sub, consumer_js, stream.c_str(), count_message, &counter, nullptr,
                              &options, &code),
                 "subscribe to the stream");
    check_status(natsSubscription_SetPendingLimits(sub, -1, -1), "limits");
    check_status(natsConnection_Flush(consumer_nc), "flush");
  }

  CloudEventHeaders headers(stream);
  const std::string_view body = prototype().bytes();
  auto done = counter.done.get_future();
  RateMeter meter(count);
  for (std::size_t i = 0; i < count; ++i) {
    if (wire == Wire::bare) {
      check_status(
          js_PublishAsync(js, stream.c_str(), body.data(), static_cast<int>(body.size()), nullptr),
          "publish async");
      continue;
    }
    natsMsg* msg = message_with_headers(stream.c_str(), headers);
    const std::string msg_id = stream + "|" + headers.id();
    jsPubOptions options;
    jsPubOptions_Init(&options);
    options.MsgId = msg_id.c_str();
    const natsStatus s = js_PublishMsgAsync(js, &msg, &options);
    if (s != NATS_OK) natsMsg_Destroy(msg);  // still ours when the library did not take it
    check_status(s, "publish async");
  }
  jsPubOptions wait;
  jsPubOptions_Init(&wait);
  wait.MaxWait = 60'000;
  check_status(js_PublishAsyncComplete(js, &wait), "publish complete");
  check(raw_publish_failures == 0, "JetStream acknowledged every publish");
  Steady::time_point last = Steady::now();
  if (consume) {
    check(done.wait_for(60s) == std::future_status::ready, "the consumer received everything");
    last = done.get();
  }
  const Rate rate = meter.stop(last);
  check(!counter.failed, "every message acknowledged");
  if (consume) {
    natsSubscription_Unsubscribe(sub);
    natsSubscription_Destroy(sub);
    jsCtx_Destroy(consumer_js);
    natsConnection_Destroy(consumer_nc);
  }
  jsErrCode code;
  js_DeleteStream(js, stream.c_str(), nullptr, &code);
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  return rate;
}

// ---- the bus ----

std::unique_ptr<mm::BlockingEventBus> bus_on_nats(bool jetstream) {
  mm::nats::NatsConfig config;
  config.servers = {server_url()};
  config.jetstream = jetstream;
  config.max_ack_pending = kMaxAckPending;
  // Core NATS delivers at most once; say so, or start() refuses the route.
  return started_bus(mm::MessageBackendType::nats, mm::nats::make_backend(config), !jetstream);
}

Rate bus_pubsub(std::size_t count) {
  auto consumer = bus_on_nats(false);
  auto producer = bus_on_nats(false);
  const std::string type = unique("bus_bench");
  std::atomic<std::size_t> received{0};
  std::promise<Steady::time_point> done;
  auto handler = mm::sync_handler([&](const mm::Message&) -> mm::Result<void> {
    if (received.fetch_add(1) + 1 == count) done.set_value(Steady::now());
    return mm::ok();
  });
  check(consumer->subscribe_to_events({type}, handler).has_value(), "subscribe");
  std::this_thread::sleep_for(100ms);  // the subscription reaches the server
  auto publish_all = [&]() -> asio::awaitable<mm::Result<void>> {
    for (std::size_t i = 0; i < count; ++i) {
      mm::Message message = prototype();
      auto published = co_await producer->bus().publish_event(type, std::move(message));
      if (!published) co_return published.error();
    }
    co_return mm::ok();
  };
  auto finished = done.get_future();
  RateMeter meter(count);
  check(producer->run(publish_all()).has_value(), "publish");
  check(finished.wait_for(60s) == std::future_status::ready, "bus subscriber received everything");
  return meter.stop(finished.get());
}

Latency bus_requests(std::size_t count) {
  // Queries travel on core NATS either way; JetStream on is the backend's default.
  auto responder = bus_on_nats(true);
  auto requester = bus_on_nats(true);
  const std::string service = unique("bench");
  auto echo = mm::sync_query_handler([](const mm::Message& q) -> mm::Result<mm::Json> {
    return mm::Json{{"n", q.json()["n"]}};
  });
  auto handled = responder->handle_queries({"ping"}, echo, service);
  if (!handled) std::fprintf(stderr, "%s\n", handled.error().describe().c_str());
  check(handled.has_value(), "handle_queries");
  std::this_thread::sleep_for(100ms);
  std::vector<double> micros;
  auto asked = requester->run(ask_round_trips(&requester->bus(), service, count, &micros));
  if (!asked) std::fprintf(stderr, "%s\n", asked.error().describe().c_str());
  check(asked.has_value(), "query");
  return percentiles(std::move(micros));
}

// kWindow stream_events calls in flight (each waits for JetStream's acknowledgement: one caller
// would measure round trips); with `consume`, until process_stream has handled the last one.
Rate bus_jetstream(std::size_t count, bool consume) {
  auto producer = bus_on_nats(true);
  std::unique_ptr<mm::BlockingEventBus> consumer;
  const std::string stream = unique("bus_js");
  std::atomic<std::size_t> received{0};
  std::promise<Steady::time_point> done;
  auto finished = done.get_future();
  if (consume) {
    consumer = bus_on_nats(true);
    auto processor = mm::sync_batch_processor([&](const std::vector<mm::Message>& batch) {
      if (received.fetch_add(batch.size()) + batch.size() == count) done.set_value(Steady::now());
      return mm::ok();
    });
    mm::StreamOptions options;
    options.batch_size = kWindow;
    options.max_wait = 2ms;
    check(consumer->process_stream(stream, processor, "bench", options).has_value(),
          "process_stream");
  } else {
    // The stream exists before the clock starts, as the raw run's does.
    check(
        producer->run(producer->bus().stream_events(stream, std::vector<mm::Message>{prototype()}))
            .has_value(),
        "create stream");
  }
  RateMeter meter(count);
  publish_concurrently(*producer, count, kWindow, [&]() -> asio::awaitable<mm::Result<void>> {
    std::vector<mm::Message> one{prototype()};
    co_return co_await producer->bus().stream_events(stream, std::move(one));
  });
  Steady::time_point last = Steady::now();
  if (consume) {
    check(finished.wait_for(60s) == std::future_status::ready, "the consumer processed everything");
    last = finished.get();
  }
  const Rate rate = meter.stop(last);
  consumer.reset();
  producer.reset();
  delete_stream(mm::nats::jetstream_name(stream));
  return rate;
}

// ---- the report ----

}  // namespace

int main(int argc, char** argv) {
  Options options;
  std::size_t only_bus_pubsub = 0;  // for profiling: the bus's pub/sub alone
  const bool parsed = parse_flags(
      argc, argv,
      {{"--messages", [&](std::uint64_t v) { options.messages = v; }},
       {"--requests", [&](std::uint64_t v) { options.requests = v; }},
       {"--jetstream-messages", [&](std::uint64_t v) { options.jetstream_messages = v; }},
       {"--runs", [&](std::uint64_t v) { options.runs = static_cast<int>(v); }},
       {"--only-bus-pubsub", [&](std::uint64_t v) { only_bus_pubsub = v; }}},
      "marty_bench_nats [--messages N] [--requests N] [--jetstream-messages N] [--runs N] "
      "[--only-bus-pubsub N]");
  if (!parsed) return 2;
  check(options.messages > 0 && options.requests > 0 && options.jetstream_messages > 0 &&
            options.runs > 0,
        "counts above zero");
  if (only_bus_pubsub != 0) {
    std::printf("bus core pub/sub: %.0f msg/s\n", bus_pubsub(only_bus_pubsub).per_second);
    return 0;
  }
  std::printf(
      "NATS benchmark against %s: %zu-byte messages, median of %d alternating runs; CPU: client "
      "CPU microseconds per message (every thread of this process)\n\n",
      server_url().c_str(), kPayloadBytes, options.runs);
  RateRow core_same{"core pub/sub, same bytes (CloudEvents headers)", {}, {}};
  RateRow core_bare{"core pub/sub, raw bare (no headers)", {}, {}};
  RateRow js_same{"JetStream publish (acked), same bytes", {}, {}};
  RateRow js_bare{"JetStream publish (acked), raw bare", {}, {}};
  RateRow js_e2e{"JetStream end to end (durable consumer, acks)", {}, {}};
  std::vector<Latency> raw_rtt, bus_rtt;
  const std::size_t js = options.jetstream_messages;
  for (int run = 0; run < options.runs; ++run) {
    core_bare.raw.push_back(raw_pubsub(options.messages, Wire::bare));
    core_same.raw.push_back(raw_pubsub(options.messages, Wire::same_bytes));
    core_same.bus.push_back(bus_pubsub(options.messages));
    raw_rtt.push_back(raw_requests(options.requests));
    bus_rtt.push_back(bus_requests(options.requests));
    js_bare.raw.push_back(raw_jetstream(js, Wire::bare, false));
    js_same.raw.push_back(raw_jetstream(js, Wire::same_bytes, false));
    js_same.bus.push_back(bus_jetstream(js, false));
    js_e2e.raw.push_back(raw_jetstream(js, Wire::same_bytes, true));
    js_e2e.bus.push_back(bus_jetstream(js, true));
  }
  core_bare.bus = core_same.bus;
  js_bare.bus = js_same.bus;
  auto by_p50 = [](const Latency& l) { return l.p50; };
  const Latency rr = median_latency(raw_rtt, by_p50), br = median_latency(bus_rtt, by_p50);

  std::printf(
      "| measure                                        | raw msg/s  | raw CPU | bus msg/s | bus "
      "CPU | bus/raw |\n");
  std::printf(
      "|------------------------------------------------|-----------:|--------:|----------:|------"
      "--:|--------:|\n");
  print_rate_rows({&core_same, &core_bare, &js_same, &js_bare, &js_e2e}, 46);
  std::printf("\n| measure (one request in flight) | raw nats.c, us | bus, us | bus/raw |\n");
  std::printf("|---------------------------------|---------------:|--------:|--------:|\n");
  std::printf("| request/reply p50               | %14.1f | %7.1f | %7.2f |\n", rr.p50, br.p50,
              br.p50 / rr.p50);
  std::printf("| request/reply p99               | %14.1f | %7.1f | %7.2f |\n", rr.p99, br.p99,
              br.p99 / rr.p99);
  std::printf(
      "\nCPU: client CPU microseconds per message. bus/raw: the medians' ratio (for throughput, "
      "above 1 is the bus faster; for latency, below 1). Bare rows compare the bus with raw "
      "nats.c sending no headers (what the headers cost); the others do the same work.\n\n");
  print_result("nats.core.throughput.vs_raw_same_bytes", median_rate(core_same.bus).per_second,
               median_rate(core_same.raw).per_second);
  print_result("nats.jetstream.publish.vs_raw_same_bytes", median_rate(js_same.bus).per_second,
               median_rate(js_same.raw).per_second);
  print_result("nats.jetstream.end_to_end.vs_raw_same_bytes", median_rate(js_e2e.bus).per_second,
               median_rate(js_e2e.raw).per_second);
  print_result("nats.request.p50.vs_raw", br.p50, rr.p50);
  return 0;
}
