// The NATS backend against raw nats.c on the same server, in the same run, 128-byte messages:
//   core pub/sub throughput (publisher and subscriber on separate connections),
//   request/reply round trips (p50/p99; the raw responder writes at once, as the bus's does),
//   JetStream publish throughput (asynchronous publishes, each acknowledged by the server).
// usage: marty_bench_nats [--messages N] [--requests N] [--runs N]   (MARTY_NATS_URL: the server)
#include <nats/nats.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>

#include "bench_bus.hpp"
#include "bench_support.hpp"
#include "marty/messaging.hpp"
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

struct Counter {
  bool read_headers = false;
  std::atomic<std::size_t> received{0};
  std::size_t expected = 0;
  std::promise<Steady::time_point> done;
};

void count_message(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
  auto* counter = static_cast<Counter*>(closure);
  if (counter->read_headers) {  // what any reader of CloudEvents attributes must do
    const char** keys = nullptr;
    int count = 0;
    if (natsMsgHeader_Keys(msg, &keys, &count) == NATS_OK) {
      for (int i = 0; i < count; ++i) {
        const char* value = nullptr;
        natsMsgHeader_Get(msg, keys[i], &value);
      }
      std::free(static_cast<void*>(keys));
    }
  }
  natsMsg_Destroy(msg);
  if (counter->received.fetch_add(1) + 1 == counter->expected)
    counter->done.set_value(Steady::now());
}

// `with_headers`: each message carries the CloudEvents headers the bus would send, and the
// subscriber reads them: raw nats.c doing the bus's job on the wire, without the bus.
double raw_pubsub(std::size_t count, bool with_headers) {
  natsConnection* publisher = raw_connect(false);
  natsConnection* subscriber = raw_connect(false);
  const std::string subject = "events." + unique("raw_bench");
  Counter counter;
  counter.expected = count;
  counter.read_headers = with_headers;
  mm::MessageMetadata metadata;
  metadata.message_type = "bench";
  metadata.source = "marty-bench";
  const auto wire =
      mm::codec::encode_binary(mm::Message::from_bytes(std::string(kPayloadBytes, 'x'), metadata));
  natsSubscription* sub = nullptr;
  check_status(natsConnection_Subscribe(&sub, subscriber, subject.c_str(), count_message, &counter),
               "subscribe");
  check_status(natsSubscription_SetPendingLimits(sub, -1, -1), "limits");
  check_status(natsConnection_Flush(subscriber), "flush");
  const std::string payload(kPayloadBytes, 'x');
  auto done = counter.done.get_future();
  const auto start = Steady::now();
  for (std::size_t i = 0; i < count; ++i) {
    if (!with_headers) {
      check_status(natsConnection_Publish(publisher, subject.c_str(), payload.data(),
                                          static_cast<int>(payload.size())),
                   "publish");
      continue;
    }
    natsMsg* msg = nullptr;
    check_status(natsMsg_Create(&msg, subject.c_str(), nullptr, payload.data(),
                                static_cast<int>(payload.size())),
                 "message");
    for (const auto& [name, value] : wire.headers) {
      check_status(natsMsgHeader_Set(msg, name.c_str(), value.c_str()), "header");
    }
    check_status(natsConnection_PublishMsg(publisher, msg), "publish");
    natsMsg_Destroy(msg);
  }
  check_status(natsConnection_Flush(publisher), "flush");
  check(done.wait_for(60s) == std::future_status::ready, "raw subscriber received everything");
  const double rate = static_cast<double>(count) / seconds(done.get() - start);
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
  natsConnection* requester = raw_connect(false);
  const std::string subject = "queries.bench." + unique("raw");
  natsSubscription* sub = nullptr;
  check_status(natsConnection_Subscribe(&sub, responder, subject.c_str(), echo_message, nullptr),
               "subscribe");
  check_status(natsConnection_Flush(responder), "flush");
  const std::string payload(kPayloadBytes, 'x');
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

double raw_jetstream(std::size_t count) {
  natsConnection* nc = raw_connect(false);
  jsCtx* js = nullptr;
  jsOptions options;
  jsOptions_Init(&options);
  options.PublishAsync.MaxPending = 4096;
  check_status(natsConnection_JetStream(&js, nc, &options), "jetstream");
  const std::string stream = unique("raw_js");
  const char* subjects[] = {stream.c_str()};
  jsStreamConfig config;
  jsStreamConfig_Init(&config);
  config.Name = stream.c_str();
  config.Subjects = subjects;
  config.SubjectsLen = 1;
  jsStreamInfo* info = nullptr;
  jsErrCode code;
  check_status(js_AddStream(&info, js, &config, nullptr, &code), "add stream");
  jsStreamInfo_Destroy(info);
  const std::string payload(kPayloadBytes, 'x');
  const auto start = Steady::now();
  for (std::size_t i = 0; i < count; ++i) {
    check_status(js_PublishAsync(js, stream.c_str(), payload.data(),
                                 static_cast<int>(payload.size()), nullptr),
                 "publish async");
  }
  jsPubOptions wait;
  jsPubOptions_Init(&wait);
  wait.MaxWait = 60'000;
  check_status(js_PublishAsyncComplete(js, &wait), "publish complete");
  const double rate = static_cast<double>(count) / seconds(Steady::now() - start);
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
  // Core NATS delivers at most once; say so, or start() refuses the route.
  return started_bus(mm::MessageBackendType::nats, mm::nats::make_backend(config), !jetstream);
}

double bus_pubsub(std::size_t count) {
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
  const mm::Message prototype = mm::Message::from_bytes(std::string(kPayloadBytes, 'x'));
  auto publish_all = [&]() -> asio::awaitable<mm::Result<void>> {
    for (std::size_t i = 0; i < count; ++i) {
      mm::Message message = prototype;
      auto published = co_await producer->bus().publish_event(type, std::move(message));
      if (!published) co_return published.error();
    }
    co_return mm::ok();
  };
  auto finished = done.get_future();
  const auto start = Steady::now();
  check(producer->run(publish_all()).has_value(), "publish");
  check(finished.wait_for(60s) == std::future_status::ready, "bus subscriber received everything");
  return static_cast<double>(count) / seconds(finished.get() - start);
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
  auto ask_all = [&]() -> asio::awaitable<mm::Result<void>> {
    const std::string padding(kPayloadBytes - 16, 'x');
    for (std::size_t i = 0; i < count + count / 10; ++i) {
      mm::Json request{{"n", i}, {"p", padding}};
      const auto start = Steady::now();
      auto reply = co_await requester->bus().query("ping", std::move(request), service, 2s);
      if (!reply) co_return reply.error();
      if (i >= count / 10) micros.push_back(seconds(Steady::now() - start) * 1e6);
    }
    co_return mm::ok();
  };
  auto asked = requester->run(ask_all());
  if (!asked) std::fprintf(stderr, "%s\n", asked.error().describe().c_str());
  check(asked.has_value(), "query");
  return percentiles(std::move(micros));
}

// Publishes from `concurrency` coroutines at once: each publish_event waits for JetStream's
// acknowledgement, so a single caller would measure round trips, not throughput.
double bus_jetstream(std::size_t count, std::size_t concurrency) {
  auto producer = bus_on_nats(true);
  const std::string stream = unique("bus_js");
  check(
      producer
          ->run(producer->bus().stream_events(stream, std::vector<mm::Json>{mm::Json{{"warm", 1}}}))
          .has_value(),
      "create stream");
  const mm::Message prototype = mm::Message::from_bytes(std::string(kPayloadBytes, 'x'));
  const auto start = Steady::now();
  publish_concurrently(*producer, count, concurrency, [&]() -> asio::awaitable<mm::Result<void>> {
    std::vector<mm::Message> one{prototype};
    co_return co_await producer->bus().stream_events(stream, std::move(one));
  });
  return static_cast<double>(count) / seconds(Steady::now() - start);
}

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
  if (only_bus_pubsub != 0) {
    std::printf("bus core pub/sub: %.0f msg/s\n", bus_pubsub(only_bus_pubsub));
    return 0;
  }
  std::printf("NATS benchmark against %s: %zu-byte messages, median of %d alternating runs\n\n",
              server_url().c_str(), kPayloadBytes, options.runs);
  std::vector<double> raw_rates, raw_header_rates, bus_rates, raw_js, bus_js;
  std::vector<Latency> raw_rtt, bus_rtt;
  for (int run = 0; run < options.runs; ++run) {
    raw_rates.push_back(raw_pubsub(options.messages, false));
    raw_header_rates.push_back(raw_pubsub(options.messages, true));
    bus_rates.push_back(bus_pubsub(options.messages));
    raw_rtt.push_back(raw_requests(options.requests));
    bus_rtt.push_back(bus_requests(options.requests));
    raw_js.push_back(raw_jetstream(options.jetstream_messages));
    bus_js.push_back(bus_jetstream(options.jetstream_messages, 256));
  }
  const double raw = median(raw_rates), bus = median(bus_rates);
  const double raw_headers = median(raw_header_rates);
  const double rjs = median(raw_js), bjs = median(bus_js);
  auto by_p50 = [](const Latency& l) { return l.p50; };
  const Latency rr = median_latency(raw_rtt, by_p50), br = median_latency(bus_rtt, by_p50);
  std::printf("| measure                              | raw nats.c | bus      | bus / raw |\n");
  std::printf("|--------------------------------------|-----------:|---------:|----------:|\n");
  std::printf("| core pub/sub, msg/s                  | %10.0f | %8.0f | %9.2f |\n", raw, bus,
              bus / raw);
  std::printf("| core pub/sub, CloudEvents headers    | %10.0f | %8.0f | %9.2f |\n", raw_headers,
              bus, bus / raw_headers);
  std::printf("| request/reply p50, us                | %10.1f | %8.1f | %9.2f |\n", rr.p50, br.p50,
              br.p50 / rr.p50);
  std::printf("| request/reply p99, us                | %10.1f | %8.1f | %9.2f |\n", rr.p99, br.p99,
              br.p99 / rr.p99);
  std::printf("| JetStream publish (acked), msg/s     | %10.0f | %8.0f | %9.2f |\n", rjs, bjs,
              bjs / rjs);
  return 0;
}
