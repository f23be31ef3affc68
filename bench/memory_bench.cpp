// The embedded backend against in-process baselines, 128-byte messages, same run:
//   throughput: publish -> handler through the bus, two threads (publisher, consumer), vs a
//               ZeroMQ inproc PUSH/PULL pair carrying the same metadata (a header frame with a
//               new time-ordered id, the time, type, source, subject and content type, made per
//               message and read by the receiver, then the payload frame), the same pair moving
//               the bare 128-byte blob, and a moodycamel BlockingConcurrentQueue hand-off;
//   latency:    query round trips through the bus vs ZeroMQ inproc REQ/REP and a pair of
//               BlockingConcurrentQueues, p50/p99/p99.9.
// usage: marty_bench_memory [--messages N] [--queries N] [--runs N] [--only-bus [--windowed]]
//                           [--only-query]
#include <zmq.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <future>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <concurrentqueue/blockingconcurrentqueue.h>

#include "bench_support.hpp"
#include "bench_wire.hpp"
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
  bool only_query = false;  // the bus's two-thread query round trips alone
  bool windowed = false;    // --only-bus measures Publisher::send instead of publish_event
};

// ---- throughput ----

// publish -> handler through the bus: each message awaited with publish_event, or (windowed)
// handed over with Publisher::send, waiting for room only when the window is full, then flush.
Rate bus_throughput(std::size_t count, bool windowed = false) {
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
  auto publisher = producer.bus().publisher("bench.tick");
  check(publisher.has_value(), "publisher");
  auto publish_all = [&]() -> asio::awaitable<mm::Result<void>> {
    for (std::size_t i = 0; i < count; ++i) {
      mm::Message message = prototype;
      if (windowed) {
        auto sent = (*publisher)->send(message);
        if (!sent && sent.error().is(mm::errc::resource_exhausted)) {
          sent = co_await (*publisher)->send_when_room(std::move(message));
        }
        if (!sent) co_return sent.error();
        continue;
      }
      auto published = co_await producer.bus().publish_event("bench.tick", std::move(message));
      if (!published) co_return published.error();
    }
    if (windowed) co_return co_await (*publisher)->flush();
    co_return mm::ok();
  };
  const RateMeter meter(count);
  auto published = producer.run(publish_all());
  check(published.has_value(), "publish");
  return meter.stop(done.get_future().get());
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

Rate zmq_throughput(std::size_t count) {
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
  const RateMeter meter(count);
  for (std::size_t i = 0; i < count; ++i) {
    check(zmq_send(push, payload.data(), payload.size(), 0) >= 0, "send");
  }
  const auto rate = meter.stop(done.get_future().get());
  consumer.join();
  return rate;
}

// The metadata the bus gives every message, as the ZeroMQ baseline carries it: a header frame
// written per message (a new UUIDv7 as 16 bytes, the time in nanoseconds, then type, source,
// subject and content type, each length-prefixed), which the receiver reads back into views.
class MetadataFrame {
 public:
  static constexpr std::string_view kType = "bench.tick";
  static constexpr std::string_view kSource = "bench";
  static constexpr std::string_view kSubject = "events.bench.tick";
  static constexpr std::string_view kContentType = "application/octet-stream";

  // Writes a new message's header into `out`; returns its size.
  std::size_t write(char* out) {
    const auto now = std::chrono::system_clock::now().time_since_epoch();
    const auto nanos = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(now).count());
    const std::uint64_t millis = nanos / 1'000'000;
    // UUIDv7: 48 bits of milliseconds, version 7, 74 random bits with the variant.
    const std::uint64_t high = (millis << 16) | 0x7000 | (next_random() & 0x0fff);
    const std::uint64_t low = (next_random() & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;
    char* at = out;
    std::memcpy(at, &high, 8);
    std::memcpy(at + 8, &low, 8);
    std::memcpy(at + 16, &nanos, 8);
    at += 24;
    for (std::string_view field : {kType, kSource, kSubject, kContentType}) {
      *at++ = static_cast<char>(field.size());
      std::memcpy(at, field.data(), field.size());
      at += field.size();
    }
    return static_cast<std::size_t>(at - out);
  }

  struct Read {
    std::uint64_t id_high = 0, id_low = 0, nanos = 0;
    std::string_view type, source, subject, content_type;
  };
  static Read read(const char* in, std::size_t size) {
    Read read;
    check(size >= 24, "metadata frame");
    std::memcpy(&read.id_high, in, 8);
    std::memcpy(&read.id_low, in + 8, 8);
    std::memcpy(&read.nanos, in + 16, 8);
    const char* at = in + 24;
    for (std::string_view* field : {&read.type, &read.source, &read.subject, &read.content_type}) {
      const auto length = static_cast<unsigned char>(*at++);
      *field = std::string_view(at, length);
      at += length;
    }
    check(at <= in + size, "metadata frame size");
    return read;
  }

  static constexpr std::size_t kMaxSize = 24 + 4 + 64 * 4;

 private:
  std::uint64_t next_random() {  // xorshift64*: what a fast id generator uses per message
    state_ ^= state_ >> 12;
    state_ ^= state_ << 25;
    state_ ^= state_ >> 27;
    return state_ * 0x2545F4914F6CDD1DULL;
  }
  std::uint64_t state_ =
      0x9E3779B97F4A7C15ULL ^ static_cast<std::uint64_t>(Steady::now().time_since_epoch().count());
};

Rate zmq_throughput_with_metadata(std::size_t count) {
  ZmqPair sockets(ZMQ_PULL, ZMQ_PUSH, "inproc://bench-metadata");
  void* pull = sockets.bound();
  void* push = sockets.connected();
  std::promise<Steady::time_point> done;
  std::thread consumer([&] {
    char header[MetadataFrame::kMaxSize];
    char payload[kPayloadBytes];
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < count; ++i) {
      const int size = zmq_recv(pull, header, sizeof header, 0);
      check(size >= 0, "recv header");
      const auto read = MetadataFrame::read(header, static_cast<std::size_t>(size));
      seen += read.type.size();
      check(zmq_recv(pull, payload, sizeof payload, 0) >= 0, "recv payload");
    }
    check(seen == count * MetadataFrame::kType.size(), "metadata read");
    done.set_value(Steady::now());
  });
  const std::string payload(kPayloadBytes, 'x');
  MetadataFrame frame;
  char header[MetadataFrame::kMaxSize];
  const RateMeter meter(count);
  for (std::size_t i = 0; i < count; ++i) {
    const std::size_t size = frame.write(header);
    check(zmq_send(push, header, size, ZMQ_SNDMORE) >= 0, "send header");
    check(zmq_send(push, payload.data(), payload.size(), 0) >= 0, "send payload");
  }
  const auto rate = meter.stop(done.get_future().get());
  consumer.join();
  return rate;
}

struct Block {
  char bytes[kPayloadBytes];
};

Rate queue_throughput(std::size_t count) {
  moodycamel::BlockingConcurrentQueue<Block> queue;
  std::promise<Steady::time_point> done;
  std::thread consumer([&] {
    Block block;
    for (std::size_t i = 0; i < count; ++i) queue.wait_dequeue(block);
    done.set_value(Steady::now());
  });
  Block block;
  std::memset(block.bytes, 'x', sizeof block.bytes);
  const RateMeter meter(count);
  for (std::size_t i = 0; i < count; ++i) queue.enqueue(block);
  const auto rate = meter.stop(done.get_future().get());
  consumer.join();
  return rate;
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
  auto asked = driver.run(ask_round_trips(requester.get(), "echo", count, &micros));
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
    if (flag == "--only-query") {  // the bus's two-thread query round trips alone, for profiling
      options.only_query = true;
      --i;
      continue;
    }
    if (flag == "--windowed") {  // with --only-bus: through Publisher::send
      options.windowed = true;
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
      std::fprintf(
          stderr,
          "unknown flag %s (--messages N, --queries N, --runs N, --only-bus, --only-query)\n",
          flag.c_str());
      return 2;
    }
  }
  if (options.only_query) {
    const Latency l = bus_round_trips(options.queries, false);
    std::printf("bus query, services on two threads: p50 %.1f us, p99 %.1f us, p99.9 %.1f us\n",
                l.p50, l.p99, l.p999);
    return 0;
  }
  std::printf(
      "memory backend benchmark: %zu-byte messages, %zu messages, %zu queries, median of %d "
      "runs, %u hardware threads\n\n",
      kPayloadBytes, options.messages, options.queries, options.runs,
      std::thread::hardware_concurrency());

  // The throughput runs alternate, so that a slow spell of this (virtual) machine does not fall
  // on one of them only.
  std::vector<Rate> buses, windowed, zmqs_metadata, zmqs, queues;
  for (int run = 0; run < options.runs; ++run) {
    buses.push_back(bus_throughput(options.messages, options.windowed));
    if (options.only_bus) continue;
    windowed.push_back(bus_throughput(options.messages, true));
    zmqs_metadata.push_back(zmq_throughput_with_metadata(options.messages));
    zmqs.push_back(zmq_throughput(options.messages));
    queues.push_back(queue_throughput(options.messages));
  }
  const Rate bus = median_rate(buses);
  if (options.only_bus) {
    std::printf("bus (memory backend): %.0f msg/s\n", bus.per_second);
    return 0;
  }
  const Rate bus_windowed = median_rate(windowed);
  const Rate zmq_metadata = median_rate(zmqs_metadata);
  const Rate zmq = median_rate(zmqs);
  const Rate queue = median_rate(queues);
  std::printf(
      "| publish -> handler, 2 threads         | msg/s      | CPU us/msg | bus / baseline |\n");
  std::printf(
      "|---------------------------------------|-----------:|-----------:|---------------:|\n");
  auto rate_row = [&](const char* name, const Rate& rate, bool baseline) {
    std::printf("| %-37s | %10.0f | %10.2f | ", name, rate.per_second, rate.cpu_us);
    if (baseline) {
      std::printf("%14.2f |\n", bus.per_second / rate.per_second);
    } else {
      std::printf("               |\n");
    }
  };
  rate_row("bus, publish_event (memory backend)", bus, false);
  rate_row("bus, Publisher::send + flush", bus_windowed, false);
  rate_row("ZeroMQ inproc, same metadata frame", zmq_metadata, true);
  rate_row("ZeroMQ inproc, bare 128 B", zmq, true);
  rate_row("moodycamel BlockingConcurrentQueue", queue, true);
  std::printf("\n");

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
  std::printf("\n");
  print_result("memory.throughput.vs_zmq_same_metadata", bus.per_second, zmq_metadata.per_second);
  print_result("memory.throughput.vs_zmq_bare", bus.per_second, zmq.per_second);
  print_result("memory.windowed_send.vs_zmq_same_metadata", bus_windowed.per_second,
               zmq_metadata.per_second);
  print_result("memory.query_p99_us", cross.p99, zrt.p99);
  return 0;
}
