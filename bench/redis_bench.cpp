// The Redis backend against raw hiredis on the same server, in the same run, 128-byte messages:
//   pub/sub throughput (publisher and subscriber on separate connections, PUBLISH pipelined),
//   Streams throughput (XADD pipelined; one consumer of a consumer group reading with
//   XREADGROUP and acknowledging each batch with XACK, on a connection of its own).
// usage: marty_bench_redis [--messages N] [--stream-messages N] [--runs N]
//        (MARTY_REDIS_URL: the server, redis://[user:password@]host[:port][/database])
#include <hiredis/hiredis.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "bench_bus.hpp"
#include "bench_support.hpp"
#include "marty/messaging.hpp"
#include "marty/messaging/redis_backend.hpp"

using namespace marty::messaging::bench;
namespace mm = marty::messaging;
using namespace std::chrono_literals;

namespace {

struct Options {
  std::size_t messages = 200'000;
  std::size_t stream_messages = 200'000;
  int runs = 3;
};

/// Commands sent before the replies to them are read.
constexpr std::size_t kWindow = 256;

/// The server, from MARTY_REDIS_URL.
struct Endpoint {
  std::string url;  // as given (the bus takes it whole)
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string username;  // empty: the default user
  std::string password;
  int database = 0;

  /// The address without the credentials, for printing.
  std::string address() const {
    return "redis://" + host + ":" + std::to_string(port) +
           (database != 0 ? "/" + std::to_string(database) : "");
  }
};

/// "redis://[[user]:password@]host[:port][/database]"; what it cannot read fails the benchmark.
Endpoint parse_endpoint(const std::string& url) {
  Endpoint endpoint;
  endpoint.url = url;
  constexpr std::string_view scheme = "redis://";
  check(url.rfind(scheme, 0) == 0, "MARTY_REDIS_URL starts with redis://");
  std::string rest = url.substr(scheme.size());
  if (const auto slash = rest.find('/'); slash != std::string::npos) {
    const std::string database = rest.substr(slash + 1);
    if (!database.empty()) endpoint.database = std::atoi(database.c_str());
    rest.resize(slash);
  }
  if (const auto at = rest.rfind('@'); at != std::string::npos) {
    const std::string user_info = rest.substr(0, at);
    rest.erase(0, at + 1);
    const auto colon = user_info.find(':');
    if (colon == std::string::npos) {
      endpoint.password = user_info;
    } else {
      endpoint.username = user_info.substr(0, colon);
      endpoint.password = user_info.substr(colon + 1);
    }
  }
  if (const auto colon = rest.rfind(':'); colon != std::string::npos) {
    endpoint.port = std::atoi(rest.c_str() + colon + 1);
    rest.resize(colon);
  }
  if (!rest.empty()) endpoint.host = rest;
  check(endpoint.port > 0, "MARTY_REDIS_URL has a valid port");
  return endpoint;
}

Endpoint server_endpoint() {
  const char* url = std::getenv("MARTY_REDIS_URL");
  return parse_endpoint(url != nullptr ? url : "redis://127.0.0.1:6379");
}

double seconds(Steady::duration d) {
  return std::chrono::duration<double>(d).count();
}

std::string unique(const char* base) {
  static std::atomic<unsigned> counter{0};
  return "bench:" + std::string(base) + ":" + std::to_string(::getpid()) + "." +
         std::to_string(Steady::now().time_since_epoch().count()) + "." +
         std::to_string(counter.fetch_add(1));
}

// ---- raw hiredis (synchronous API) ----

struct ContextDeleter {
  void operator()(redisContext* context) const { redisFree(context); }
};
using Context = std::unique_ptr<redisContext, ContextDeleter>;

struct ReplyDeleter {
  void operator()(redisReply* reply) const { freeReplyObject(reply); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

void check_context(const redisContext* context, const char* what) {
  if (context == nullptr || context->err != 0) {
    std::fprintf(stderr, "benchmark failed: %s: %s\n", what,
                 context != nullptr ? context->errstr : "out of memory");
    std::exit(1);
  }
}

/// The next reply on `context` (sending what was appended first); an error reply or a broken
/// connection fails the benchmark.
Reply next_reply(redisContext* context, const char* what) {
  void* raw = nullptr;
  if (redisGetReply(context, &raw) != REDIS_OK) check_context(context, what);
  Reply reply(static_cast<redisReply*>(raw));
  check(reply != nullptr, what);
  if (reply->type == REDIS_REPLY_ERROR) {
    std::fprintf(stderr, "benchmark failed: %s: %.*s\n", what, static_cast<int>(reply->len),
                 reply->str);
    std::exit(1);
  }
  return reply;
}

/// A command's arguments as redisAppendCommandArgv takes them (they point into `args`' strings).
struct Command {
  std::vector<const char*> argv;
  std::vector<std::size_t> lengths;
  explicit Command(const std::vector<std::string_view>& args) {
    for (const auto arg : args) {
      argv.push_back(arg.data());
      lengths.push_back(arg.size());
    }
  }
};

void append(redisContext* context, const Command& command) {
  // hiredis 0.14 takes `const char**`, though it only reads the array.
  check(redisAppendCommandArgv(context, static_cast<int>(command.argv.size()),
                               const_cast<const char**>(command.argv.data()),
                               command.lengths.data()) == REDIS_OK,
        "append a command");
}

Reply command(redisContext* context, const std::vector<std::string_view>& args, const char* what) {
  append(context, Command(args));
  return next_reply(context, what);
}

Context raw_connect(const Endpoint& endpoint) {
  Context context(redisConnectWithTimeout(endpoint.host.c_str(), endpoint.port, timeval{2, 0}));
  check_context(context.get(), "connect");
  // A reply that takes longer means the benchmark is stuck: fail rather than hang.
  check(redisSetTimeout(context.get(), timeval{60, 0}) == REDIS_OK, "set timeout");
  if (!endpoint.password.empty()) {
    if (endpoint.username.empty()) {
      command(context.get(), {"AUTH", endpoint.password}, "auth");
    } else {
      command(context.get(), {"AUTH", endpoint.username, endpoint.password}, "auth");
    }
  }
  if (endpoint.database != 0) {
    command(context.get(), {"SELECT", std::to_string(endpoint.database)}, "select");
  }
  return context;
}

/// Messages per second from the first PUBLISH until the subscriber has read the last message.
double raw_pubsub(const Endpoint& endpoint, std::size_t count, const std::string& payload) {
  Context subscriber = raw_connect(endpoint);
  Context publisher = raw_connect(endpoint);
  const std::string channel = unique("raw_pubsub");
  const Command publish({"PUBLISH", channel, payload});
  // SUBSCRIBE's confirmation: from here on, the server delivers every PUBLISH to it.
  command(subscriber.get(), {"SUBSCRIBE", channel}, "subscribe");
  Steady::time_point last{};
  std::thread reader([&] {
    for (std::size_t i = 0; i < count; ++i) {
      Reply message = next_reply(subscriber.get(), "subscriber read");
      check(message->type == REDIS_REPLY_ARRAY && message->elements == 3 &&
                message->element[2]->len == payload.size(),
            "a pub/sub message of the benchmark's size");
    }
    last = Steady::now();
  });
  const auto start = Steady::now();
  for (std::size_t sent = 0; sent < count;) {
    const std::size_t window = std::min(kWindow, count - sent);
    for (std::size_t i = 0; i < window; ++i) append(publisher.get(), publish);
    for (std::size_t i = 0; i < window; ++i) {
      Reply receivers = next_reply(publisher.get(), "publish");
      check(receivers->type == REDIS_REPLY_INTEGER && receivers->integer == 1,
            "each message reaches the subscriber");
    }
    sent += window;
  }
  reader.join();
  return static_cast<double>(count) / seconds(last - start);
}

/// Messages per second from the first XADD until the consumer has read and acknowledged the last
/// entry. The consumer pipelines each batch's XACK with the next XREADGROUP.
double raw_streams(const Endpoint& endpoint, std::size_t count) {
  Context producer = raw_connect(endpoint);
  Context consumer = raw_connect(endpoint);
  const std::string key = unique("raw_stream");
  const std::string payload(kPayloadBytes, 'x');
  command(producer.get(), {"XGROUP", "CREATE", key, "g", "0", "MKSTREAM"}, "create group");
  const std::string batch = std::to_string(kWindow);
  const Command read_batch(
      {"XREADGROUP", "GROUP", "g", "c", "COUNT", batch, "BLOCK", "1000", "STREAMS", key, ">"});
  const Command add({"XADD", key, "*", "payload", payload});
  Steady::time_point last{};
  std::thread reader([&] {
    append(consumer.get(), read_batch);
    std::size_t acked = 0;
    auto progress = Steady::now();
    while (acked < count) {
      Reply read = next_reply(consumer.get(), "xreadgroup");
      if (read->type == REDIS_REPLY_NIL) {  // BLOCK ran out with nothing new
        check(seconds(Steady::now() - progress) < 60, "the consumer keeps receiving entries");
        append(consumer.get(), read_batch);
        continue;
      }
      check(read->type == REDIS_REPLY_ARRAY && read->elements == 1 &&
                read->element[0]->type == REDIS_REPLY_ARRAY && read->element[0]->elements == 2,
            "one stream in the reply");
      const redisReply* entries = read->element[0]->element[1];
      check(entries->type == REDIS_REPLY_ARRAY && entries->elements > 0, "entries in the reply");
      std::vector<std::string_view> ack{"XACK", key, "g"};
      for (std::size_t i = 0; i < entries->elements; ++i) {
        const redisReply* id = entries->element[i]->element[0];
        ack.emplace_back(id->str, id->len);
      }
      append(consumer.get(), Command(ack));
      acked += entries->elements;
      if (acked < count) append(consumer.get(), read_batch);
      Reply settled = next_reply(consumer.get(), "xack");
      check(settled->type == REDIS_REPLY_INTEGER &&
                static_cast<std::size_t>(settled->integer) == entries->elements,
            "every entry of the batch acknowledged");
      progress = Steady::now();
    }
    last = Steady::now();
  });
  const auto start = Steady::now();
  for (std::size_t sent = 0; sent < count;) {
    const std::size_t window = std::min(kWindow, count - sent);
    for (std::size_t i = 0; i < window; ++i) append(producer.get(), add);
    for (std::size_t i = 0; i < window; ++i) {
      Reply id = next_reply(producer.get(), "xadd");
      check(id->type == REDIS_REPLY_STRING, "an entry ID");
    }
    sent += window;
  }
  reader.join();
  const double rate = static_cast<double>(count) / seconds(last - start);
  command(producer.get(), {"DEL", key}, "delete the stream");
  return rate;
}

// ---- the bus ----

// A JSON event of kPayloadBytes bytes, as the bus's events usually are: {"p":"xxx..."}.
mm::Message json_payload() {
  return mm::Message::from_json(mm::Json{{"p", std::string(kPayloadBytes - 8, 'x')}});
}

std::unique_ptr<mm::BlockingEventBus> bus_on_redis(const Endpoint& endpoint, bool at_most_once) {
  mm::redis::RedisConfig config;
  config.url = endpoint.url;
  return started_bus(mm::MessageBackendType::redis, mm::redis::make_backend(config), at_most_once);
}

/// Events at most once (pub/sub): from the first publish until the subscriber's handler has
/// seen the last one.
double bus_pubsub(const Endpoint& endpoint, std::size_t count) {
  auto consumer = bus_on_redis(endpoint, true);
  auto producer = bus_on_redis(endpoint, true);
  const std::string type = unique("bus_pubsub");
  std::atomic<std::size_t> received{0};
  std::promise<Steady::time_point> done;
  auto handler = mm::sync_handler([&](const mm::Message&) -> mm::Result<void> {
    if (received.fetch_add(1) + 1 == count) done.set_value(Steady::now());
    return mm::ok();
  });
  check(consumer->subscribe_to_events({type}, handler).has_value(), "subscribe");
  const mm::Message prototype = json_payload();
  auto finished = done.get_future();
  const auto start = Steady::now();
  publish_concurrently(*producer, count, kWindow, [&]() -> asio::awaitable<mm::Result<void>> {
    mm::Message message = prototype;
    co_return co_await producer->bus().publish_event(type, std::move(message));
  });
  check(finished.wait_for(120s) == std::future_status::ready, "the subscriber received everything");
  return static_cast<double>(count) / seconds(finished.get() - start);
}

/// A bus stream: appended by stream_events, read by process_stream in batches (every entry
/// acknowledged), from the first append until the last entry was processed.
double bus_streams(const Endpoint& endpoint, std::size_t count) {
  auto consumer = bus_on_redis(endpoint, false);
  auto producer = bus_on_redis(endpoint, false);
  const std::string stream = unique("bus_stream");
  std::atomic<std::size_t> received{0};
  std::promise<Steady::time_point> done;
  auto processor = mm::sync_batch_processor([&](const std::vector<mm::Message>& batch) {
    if (received.fetch_add(batch.size()) + batch.size() == count) done.set_value(Steady::now());
    return mm::ok();
  });
  mm::StreamOptions options;
  options.batch_size = kWindow;
  options.max_wait = 2ms;
  check(consumer->process_stream(stream, processor, "bench", options).has_value(),
        "process_stream");
  const mm::Message prototype = json_payload();
  auto finished = done.get_future();
  const auto start = Steady::now();
  publish_concurrently(*producer, count, kWindow, [&]() -> asio::awaitable<mm::Result<void>> {
    std::vector<mm::Message> one{prototype};
    co_return co_await producer->bus().stream_events(stream, std::move(one));
  });
  check(finished.wait_for(120s) == std::future_status::ready, "the consumer processed everything");
  const double rate = static_cast<double>(count) / seconds(finished.get() - start);
  consumer.reset();  // stopped before its stream goes
  Context cleanup = raw_connect(endpoint);
  command(cleanup.get(), {"DEL", "marty:" + stream}, "delete the stream");
  return rate;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  std::size_t only_bus_pubsub = 0;   // for profiling: the bus's pub/sub alone
  std::size_t only_bus_streams = 0;  // for profiling: the bus's Streams alone
  const bool parsed =
      parse_flags(argc, argv,
                  {{"--messages", [&](std::uint64_t v) { options.messages = v; }},
                   {"--stream-messages", [&](std::uint64_t v) { options.stream_messages = v; }},
                   {"--runs", [&](std::uint64_t v) { options.runs = static_cast<int>(v); }},
                   {"--only-bus-pubsub", [&](std::uint64_t v) { only_bus_pubsub = v; }},
                   {"--only-bus-streams", [&](std::uint64_t v) { only_bus_streams = v; }}},
                  "marty_bench_redis [--messages N] [--stream-messages N] [--runs N]");
  if (!parsed) return 2;
  check(options.messages > 0 && options.stream_messages > 0 && options.runs > 0,
        "counts above zero");
  const Endpoint endpoint = server_endpoint();
  if (only_bus_pubsub != 0 || only_bus_streams != 0) {
    if (only_bus_pubsub != 0) {
      std::printf("bus pub/sub: %.0f msg/s\n", bus_pubsub(endpoint, only_bus_pubsub));
    }
    if (only_bus_streams != 0) {
      std::printf("bus Streams: %.0f msg/s\n", bus_streams(endpoint, only_bus_streams));
    }
    return 0;
  }
  std::printf("Redis benchmark against %s: %zu-byte messages, median of %d alternating runs\n\n",
              endpoint.address().c_str(), kPayloadBytes, options.runs);
  // What the bus puts on a channel for one of its events: structured CloudEvents JSON.
  const std::string event_text = [] {
    mm::Message event = json_payload();
    event.mutable_metadata().message_id = mm::make_uuid_v7();
    event.mutable_metadata().message_type = "bench_event";
    event.mutable_metadata().source = "marty-service";
    event.mutable_metadata().time = mm::Clock::now();
    return mm::codec::encode_structured(event);
  }();
  std::vector<double> raw_rates, raw_event_rates, raw_stream_rates, bus_rates, bus_stream_rates;
  std::vector<double> pubsub_ratios, event_ratios, stream_ratios;
  for (int run = 0; run < options.runs; ++run) {
    raw_rates.push_back(raw_pubsub(endpoint, options.messages, std::string(kPayloadBytes, 'x')));
    raw_event_rates.push_back(raw_pubsub(endpoint, options.messages, event_text));
    bus_rates.push_back(bus_pubsub(endpoint, options.messages));
    raw_stream_rates.push_back(raw_streams(endpoint, options.stream_messages));
    bus_stream_rates.push_back(bus_streams(endpoint, options.stream_messages));
    pubsub_ratios.push_back(bus_rates.back() / raw_rates.back());
    event_ratios.push_back(bus_rates.back() / raw_event_rates.back());
    stream_ratios.push_back(bus_stream_rates.back() / raw_stream_rates.back());
  }
  std::printf("| measure (msg/s)                        | raw hiredis |     bus | bus/raw |\n");
  std::printf("|----------------------------------------|------------:|--------:|--------:|\n");
  std::printf("| pub/sub                                | %11.0f | %7.0f | %6.2fx |\n",
              median(raw_rates), median(bus_rates), median(pubsub_ratios));
  std::printf("| pub/sub, raw sending the bus's %3zu B   | %11.0f | %7.0f | %6.2fx |\n",
              event_text.size(), median(raw_event_rates), median(bus_rates), median(event_ratios));
  std::printf("| Streams (XADD, XREADGROUP+XACK)        | %11.0f | %7.0f | %6.2fx |\n",
              median(raw_stream_rates), median(bus_stream_rates), median(stream_ratios));
  std::printf(
      "\nbus/raw is the median of the per-run ratios (each run measures both back to back).\n");
  return 0;
}
