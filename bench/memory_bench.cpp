// The embedded backend against in-process baselines, 128-byte messages, same run:
//   throughput: publish -> handler through the bus, two threads (publisher, consumer), vs a
//               ZeroMQ inproc PUSH/PULL pair and a moodycamel BlockingConcurrentQueue hand-off;
//   latency:    query round trips through the bus vs ZeroMQ inproc REQ/REP and a pair of
//               BlockingConcurrentQueues, p50/p99/p99.9.
// usage: marty_bench_memory [--messages N] [--queries N] [--runs N] [--only-bus]
#include <zmq.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include <concurrentqueue/blockingconcurrentqueue.h>

#include "bench_support.hpp"
#include "marty/messaging.hpp"

namespace mm = marty::messaging;
using namespace std::chrono_literals;
using namespace marty::messaging::bench;

namespace {

struct Options {
  std::size_t messages = 500'000;
  std::size_t queries = 20'000;
  int runs = 3;
  bool only_bus = false;
};

// ---- throughput ----

double bus_throughput(std::size_t count) {
  mm::MemoryBackendConfig config;
  auto broker = mm::make_memory_broker(config);
  mm::BlockingEventBus consumer, producer;
  check(consumer.bus()
            .register_backend(mm::MessageBackendType::memory, mm::make_memory_backend(broker))
            .has_value(),
        "register");
  check(producer.bus()
            .register_backend(mm::MessageBackendType::memory, mm::make_memory_backend(broker))
            .has_value(),
        "register");
  check(consumer.start().has_value() && producer.start().has_value(), "start");
  std::atomic<std::size_t> received{0};
  std::promise<Steady::time_point> done;
  auto handler = mm::sync_handler([&](const mm::Message&) -> mm::Result<void> {
    if (received.fetch_add(1) + 1 == count) done.set_value(Steady::now());
    return mm::ok();
  });
  check(consumer.subscribe_to_events({"bench.tick"}, handler).has_value(), "subscribe");
  const mm::Message prototype = mm::Message::from_bytes(std::string(kPayloadBytes, 'x'));
  auto publish_all = [&]() -> asio::awaitable<mm::Result<void>> {
    for (std::size_t i = 0; i < count; ++i) {
      mm::Message message = prototype;
      auto published = co_await producer.bus().publish_event("bench.tick", std::move(message));
      if (!published) co_return published.error();
    }
    co_return mm::ok();
  };
  const auto start = Steady::now();
  auto published = producer.run(publish_all());
  check(published.has_value(), "publish");
  const auto end = done.get_future().get();
  return static_cast<double>(count) / std::chrono::duration<double>(end - start).count();
}

// Two connected inproc sockets in their own context, closed on destruction.
class ZmqPair {
 public:
  ZmqPair(int bound_type, int connected_type, const char* endpoint)
      : context_(zmq_ctx_new()),
        bound_(zmq_socket(context_, bound_type)),
        connected_(zmq_socket(context_, connected_type)) {
    check(zmq_bind(bound_, endpoint) == 0, "zmq bind");
    check(zmq_connect(connected_, endpoint) == 0, "zmq connect");
  }
  ~ZmqPair() {
    zmq_close(connected_);
    zmq_close(bound_);
    zmq_ctx_term(context_);
  }
  ZmqPair(const ZmqPair&) = delete;
  ZmqPair& operator=(const ZmqPair&) = delete;
  void* bound() const { return bound_; }
  void* connected() const { return connected_; }

 private:
  void* context_;
  void* bound_;
  void* connected_;
};

double zmq_throughput(std::size_t count) {
  ZmqPair sockets(ZMQ_PULL, ZMQ_PUSH, "inproc://bench");
  void* pull = sockets.bound();
  void* push = sockets.connected();
  std::promise<Steady::time_point> done;
  std::thread consumer([&] {
    char buffer[kPayloadBytes];
    for (std::size_t i = 0; i < count; ++i)
      check(zmq_recv(pull, buffer, sizeof buffer, 0) >= 0, "recv");
    done.set_value(Steady::now());
  });
  const std::string payload(kPayloadBytes, 'x');
  const auto start = Steady::now();
  for (std::size_t i = 0; i < count; ++i) {
    check(zmq_send(push, payload.data(), payload.size(), 0) >= 0, "send");
  }
  const auto end = done.get_future().get();
  consumer.join();
  return static_cast<double>(count) / std::chrono::duration<double>(end - start).count();
}

struct Block {
  char bytes[kPayloadBytes];
};

double queue_throughput(std::size_t count) {
  moodycamel::BlockingConcurrentQueue<Block> queue;
  std::promise<Steady::time_point> done;
  std::thread consumer([&] {
    Block block;
    for (std::size_t i = 0; i < count; ++i) queue.wait_dequeue(block);
    done.set_value(Steady::now());
  });
  Block block;
  std::memset(block.bytes, 'x', sizeof block.bytes);
  const auto start = Steady::now();
  for (std::size_t i = 0; i < count; ++i) queue.enqueue(block);
  const auto end = done.get_future().get();
  consumer.join();
  return static_cast<double>(count) / std::chrono::duration<double>(end - start).count();
}

// ---- round trips ----

// Queries between two services. `shared_thread`: both buses on one io_context thread (services
// in one process, no thread hop); otherwise each bus has its own thread (two hops per trip).
Latency bus_round_trips(std::size_t count, bool shared_thread) {
  auto broker = mm::make_memory_broker();
  mm::BlockingEventBus responder_home;
  std::unique_ptr<mm::BlockingEventBus> requester_home;
  std::shared_ptr<mm::UnifiedEventBus> requester;
  if (shared_thread) {
    requester = mm::create_unified_event_bus(responder_home.context().get_executor());
  } else {
    requester_home = std::make_unique<mm::BlockingEventBus>();
    requester = mm::create_unified_event_bus(requester_home->context().get_executor());
  }
  mm::BlockingEventBus& driver = shared_thread ? responder_home : *requester_home;
  check(responder_home.bus()
            .register_backend(mm::MessageBackendType::memory, mm::make_memory_backend(broker))
            .has_value(),
        "register");
  check(requester->register_backend(mm::MessageBackendType::memory, mm::make_memory_backend(broker))
            .has_value(),
        "register");
  check(responder_home.start().has_value(), "start");
  check(driver.run(requester->start()).has_value(), "start");
  auto echo = mm::sync_query_handler([](const mm::Message& q) -> mm::Result<mm::Json> {
    return mm::Json{{"n", q.json()["n"]}};
  });
  check(responder_home.handle_queries({"ping"}, echo, "echo").has_value(), "handle_queries");
  std::vector<double> micros;
  micros.reserve(count);
  auto ask_all = [&]() -> asio::awaitable<mm::Result<void>> {
    const std::string padding(kPayloadBytes - 16, 'x');
    for (std::size_t i = 0; i < count + count / 10; ++i) {  // the first 10% warm up
      mm::Json request{{"n", i}, {"p", padding}};
      const auto start = Steady::now();
      auto reply = co_await requester->query("ping", std::move(request), "echo", 2s);
      if (!reply) co_return reply.error();
      if (i >= count / 10) micros.push_back(seconds_since(start) * 1e6);
    }
    co_return mm::ok();
  };
  auto asked = driver.run(ask_all());
  if (!asked) std::fprintf(stderr, "%s\n", asked.error().describe().c_str());
  check(asked.has_value(), "query");
  check(driver.run(requester->stop(1s)).has_value(), "stop");
  return percentiles(std::move(micros));
}

Latency zmq_round_trips(std::size_t count) {
  ZmqPair sockets(ZMQ_REP, ZMQ_REQ, "inproc://rtt");
  void* rep = sockets.bound();
  void* req = sockets.connected();
  const std::size_t total = count + count / 10;
  std::thread server([&] {
    char buffer[kPayloadBytes];
    for (std::size_t i = 0; i < total; ++i) {
      const int n = zmq_recv(rep, buffer, sizeof buffer, 0);
      check(n >= 0 && zmq_send(rep, buffer, static_cast<std::size_t>(n), 0) >= 0, "echo");
    }
  });
  std::vector<double> micros;
  micros.reserve(count);
  const std::string payload(kPayloadBytes, 'x');
  char buffer[kPayloadBytes];
  for (std::size_t i = 0; i < total; ++i) {
    const auto start = Steady::now();
    check(zmq_send(req, payload.data(), payload.size(), 0) >= 0, "send");
    check(zmq_recv(req, buffer, sizeof buffer, 0) >= 0, "recv");
    if (i >= count / 10) micros.push_back(seconds_since(start) * 1e6);
  }
  server.join();
  return percentiles(std::move(micros));
}

Latency queue_round_trips(std::size_t count) {
  moodycamel::BlockingConcurrentQueue<Block> requests, replies;
  const std::size_t total = count + count / 10;
  std::thread server([&] {
    Block block;
    for (std::size_t i = 0; i < total; ++i) {
      requests.wait_dequeue(block);
      replies.enqueue(block);
    }
  });
  std::vector<double> micros;
  micros.reserve(count);
  Block block;
  std::memset(block.bytes, 'x', sizeof block.bytes);
  for (std::size_t i = 0; i < total; ++i) {
    const auto start = Steady::now();
    requests.enqueue(block);
    replies.wait_dequeue(block);
    if (i >= count / 10) micros.push_back(seconds_since(start) * 1e6);
  }
  server.join();
  return percentiles(std::move(micros));
}

template <class Fn>
Latency median_latency(int runs, Fn&& fn) {
  std::vector<Latency> values;
  for (int i = 0; i < runs; ++i) values.push_back(fn());
  return marty::messaging::bench::median_latency(std::move(values),
                                                 [](const Latency& l) { return l.p99; });
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--only-bus") {  // the bus's throughput alone, for profiling
      options.only_bus = true;
      --i;
      continue;
    }
    if (i + 1 == argc) {
      std::fprintf(stderr, "flag %s needs a value\n", flag.c_str());
      return 2;
    }
    const auto value = std::strtoull(argv[i + 1], nullptr, 10);
    if (flag == "--messages")
      options.messages = value;
    else if (flag == "--queries")
      options.queries = value;
    else if (flag == "--runs")
      options.runs = static_cast<int>(value);
    else {
      std::fprintf(stderr, "unknown flag %s (--messages N, --queries N, --runs N, --only-bus)\n",
                   flag.c_str());
      return 2;
    }
  }
  std::printf(
      "memory backend benchmark: %zu-byte messages, %zu messages, %zu queries, median of %d "
      "runs, %u hardware threads\n\n",
      kPayloadBytes, options.messages, options.queries, options.runs,
      std::thread::hardware_concurrency());

  // The three throughput runs alternate, so that a slow spell of this (virtual) machine does not
  // fall on one of them only.
  std::vector<double> buses, zmqs, queues;
  for (int run = 0; run < options.runs; ++run) {
    buses.push_back(bus_throughput(options.messages));
    if (options.only_bus) continue;
    zmqs.push_back(zmq_throughput(options.messages));
    queues.push_back(queue_throughput(options.messages));
  }
  const double bus = median(buses);
  if (options.only_bus) {
    std::printf("bus (memory backend): %.0f msg/s\n", bus);
    return 0;
  }
  const double zmq = median(zmqs);
  const double queue = median(queues);
  std::printf("| publish -> handler, 2 threads      | msg/s      | bus / baseline |\n");
  std::printf("|------------------------------------|-----------:|---------------:|\n");
  std::printf("| bus (memory backend)               | %10.0f |                |\n", bus);
  std::printf("| ZeroMQ inproc PUSH/PULL            | %10.0f | %14.2f |\n", zmq, bus / zmq);
  std::printf("| moodycamel BlockingConcurrentQueue | %10.0f | %14.2f |\n\n", queue, bus / queue);

  const Latency same =
      median_latency(options.runs, [&] { return bus_round_trips(options.queries, true); });
  const Latency cross =
      median_latency(options.runs, [&] { return bus_round_trips(options.queries, false); });
  const Latency zrt =
      median_latency(options.runs, [&] { return zmq_round_trips(options.queries); });
  const Latency qrt =
      median_latency(options.runs, [&] { return queue_round_trips(options.queries); });
  std::printf("| query round trip                   | p50 us | p99 us | p99.9 us |\n");
  std::printf("|------------------------------------|-------:|-------:|---------:|\n");
  auto row = [](const char* name, Latency l) {
    std::printf("| %-34s | %6.1f | %6.1f | %8.1f |\n", name, l.p50, l.p99, l.p999);
  };
  row("bus, services on one thread", same);
  row("bus, services on two threads", cross);
  row("ZeroMQ inproc REQ/REP, 2 threads", zrt);
  row("moodycamel queue pair, 2 threads", qrt);
  std::printf("\nratios: throughput bus/zmq %.2f, bus/queue %.2f; p99 bus(2 threads)/zmq %.2f\n",
              bus / zmq, bus / queue, cross.p99 / zrt.p99);
  return 0;
}
