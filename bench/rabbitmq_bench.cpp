// The RabbitMQ backend against raw rabbitmq-c on the same broker, in the same run, 128-byte
// messages:
//   confirmed throughput, end to end: one publisher connection with publisher confirms sends
//   persistent messages to a durable queue (default exchange) with at most a window of them
//   unconfirmed; one consumer connection (prefetch = the window) acknowledges them manually, in
//   batches. From the first publish until the last message was consumed and acknowledged.
// usage: marty_bench_rabbitmq [--messages N] [--runs N]
//        (MARTY_RABBITMQ_URL: the broker, amqp://user:password@host:port/vhost)
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "bench_bus.hpp"
#include "bench_support.hpp"
#include "marty/messaging/rabbitmq_backend.hpp"

using namespace marty::messaging::bench;
namespace mm = marty::messaging;

namespace {

struct Options {
  std::size_t messages = 100'000;
  int runs = 3;
};

/// Messages published and not yet confirmed, at most; also the consumer's prefetch.
constexpr std::size_t kWindow = 256;
/// The consumer acknowledges every this many messages at once (multiple), and the last one.
constexpr std::size_t kAckEvery = 64;
constexpr amqp_channel_t kChannel = 1;
/// Longer than this without a frame the broker should have sent: the benchmark is stuck.
constexpr timeval kStuck{60, 0};

/// The broker, from MARTY_RABBITMQ_URL.
struct Endpoint {
  std::string url;  // as given
  std::string host = "127.0.0.1";
  int port = 5672;
  std::string user = "guest";
  std::string password = "guest";
  std::string vhost = "/";

  /// The address without the credentials, for printing.
  std::string address() const {
    return "amqp://" + host + ":" + std::to_string(port) + (vhost == "/" ? "/" : "/" + vhost);
  }
};

/// "amqp://[user:password@]host[:port][/vhost]" (the vhost percent-encoded, "%2F" for "/");
/// an empty vhost is "/". What rabbitmq-c cannot read fails the benchmark.
Endpoint parse_endpoint(const std::string& url) {
  Endpoint endpoint;
  endpoint.url = url;
  std::string buffer = url;  // amqp_parse_url decodes in place; the info points into it
  amqp_connection_info info;
  amqp_default_connection_info(&info);
  check(amqp_parse_url(buffer.data(), &info) == AMQP_STATUS_OK,
        "MARTY_RABBITMQ_URL is amqp://user:password@host:port/vhost");
  check(info.ssl == 0, "MARTY_RABBITMQ_URL is amqp:// (the raw baseline does not do TLS)");
  endpoint.host = info.host;
  endpoint.port = info.port;
  endpoint.user = info.user;
  endpoint.password = info.password;
  endpoint.vhost = info.vhost[0] != '\0' ? info.vhost : "/";
  return endpoint;
}

Endpoint broker_endpoint() {
  const char* url = std::getenv("MARTY_RABBITMQ_URL");
  return parse_endpoint(url != nullptr ? url : "amqp://guest:guest@127.0.0.1:5672/");
}

double seconds(Steady::duration d) {
  return std::chrono::duration<double>(d).count();
}

std::string unique(const char* base) {
  static std::atomic<unsigned> counter{0};
  return "bench." + std::string(base) + "." + std::to_string(::getpid()) + "." +
         std::to_string(Steady::now().time_since_epoch().count()) + "." +
         std::to_string(counter.fetch_add(1));
}

// ---- raw rabbitmq-c (0.11: no amqp_publisher_confirm_wait; confirms are read as frames) ----

void check_status(int status, const char* what) {
  if (status != AMQP_STATUS_OK) {
    std::fprintf(stderr, "benchmark failed: %s: %s\n", what, amqp_error_string2(status));
    std::exit(1);
  }
}

/// Fails the benchmark unless `reply` is normal, with what the broker or the library said.
void check_reply(const amqp_rpc_reply_t& reply, const char* what) {
  switch (reply.reply_type) {
    case AMQP_RESPONSE_NORMAL:
      return;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
      std::fprintf(stderr, "benchmark failed: %s: %s\n", what,
                   amqp_error_string2(reply.library_error));
      break;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
      if (reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        const auto* close = static_cast<const amqp_connection_close_t*>(reply.reply.decoded);
        std::fprintf(stderr, "benchmark failed: %s: connection closed: %d %.*s\n", what,
                     close->reply_code, static_cast<int>(close->reply_text.len),
                     static_cast<const char*>(close->reply_text.bytes));
      } else if (reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        const auto* close = static_cast<const amqp_channel_close_t*>(reply.reply.decoded);
        std::fprintf(stderr, "benchmark failed: %s: channel closed: %d %.*s\n", what,
                     close->reply_code, static_cast<int>(close->reply_text.len),
                     static_cast<const char*>(close->reply_text.bytes));
      } else {
        std::fprintf(stderr, "benchmark failed: %s: the broker replied with method 0x%08x\n", what,
                     reply.reply.id);
      }
      break;
    default:
      std::fprintf(stderr, "benchmark failed: %s: no reply\n", what);
      break;
  }
  std::exit(1);
}

/// A logged-in connection with channel kChannel open; closed (politely) when destroyed.
class Connection {
 public:
  explicit Connection(const Endpoint& endpoint) : state_(amqp_new_connection()) {
    check(state_ != nullptr, "new connection");
    amqp_socket_t* socket = amqp_tcp_socket_new(state_);
    check(socket != nullptr, "new socket");
    timeval connect_limit{2, 0};
    check_status(
        amqp_socket_open_noblock(socket, endpoint.host.c_str(), endpoint.port, &connect_limit),
        "connect");
    // Synchronous methods (declare, qos, consume...) that take longer: the broker is stuck.
    check_status(amqp_set_rpc_timeout(state_, &kStuck), "set rpc timeout");
    check_reply(amqp_login(state_, endpoint.vhost.c_str(), 0, AMQP_DEFAULT_FRAME_SIZE,
                           0 /* no heartbeats */, AMQP_SASL_METHOD_PLAIN, endpoint.user.c_str(),
                           endpoint.password.c_str()),
                "login");
    amqp_channel_open(state_, kChannel);
    check_reply(amqp_get_rpc_reply(state_), "open a channel");
  }
  ~Connection() {
    amqp_channel_close(state_, kChannel, AMQP_REPLY_SUCCESS);
    amqp_connection_close(state_, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(state_);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  amqp_connection_state_t get() const { return state_; }

 private:
  amqp_connection_state_t state_;
};

/// The publisher's view of its confirms: a delivery tag per message published on the channel
/// (1, 2, ...), each acknowledged by basic.ack alone or with others (multiple: every tag up to it).
class Confirms {
 public:
  /// Every tag up to this one is confirmed.
  std::uint64_t all_up_to() const { return upto_; }
  std::size_t confirmed() const { return static_cast<std::size_t>(upto_) + above_.size(); }

  void ack(std::uint64_t tag, bool multiple) {
    if (multiple) {
      upto_ = std::max(upto_, tag);
      above_.erase(above_.begin(), above_.upper_bound(upto_));
    } else if (tag > upto_) {
      above_.insert(tag);
    }
    while (!above_.empty() && *above_.begin() == upto_ + 1) {
      above_.erase(above_.begin());
      ++upto_;
    }
  }

 private:
  std::uint64_t upto_ = 0;
  std::set<std::uint64_t> above_;  // confirmed alone, past a gap
};

/// Reads one frame from `connection`, waiting at most `limit` for it; false when none came
/// within `limit`. The frame's contents live in the connection's buffers until they are released
/// (amqp_maybe_release_buffers).
bool next_frame(amqp_connection_state_t connection, amqp_frame_t& frame, timeval limit) {
  const int status = amqp_simple_wait_frame_noblock(connection, &frame, &limit);
  if (status == AMQP_STATUS_TIMEOUT) return false;
  check_status(status, "read a frame");
  return true;
}

/// Handles a frame the publisher read: confirms count, anything else fails the benchmark (the
/// broker nacks only when it lost a message; a close names what went wrong).
void publisher_frame(const amqp_frame_t& frame, Confirms& confirms) {
  check(frame.frame_type == AMQP_FRAME_METHOD && frame.channel == kChannel,
        "only methods on the channel come back to the publisher");
  switch (frame.payload.method.id) {
    case AMQP_BASIC_ACK_METHOD: {
      const auto* ack = static_cast<const amqp_basic_ack_t*>(frame.payload.method.decoded);
      confirms.ack(ack->delivery_tag, ack->multiple != 0);
      return;
    }
    case AMQP_BASIC_NACK_METHOD:
      check(false, "the broker confirms every message (it sent basic.nack)");
      return;
    case AMQP_CHANNEL_CLOSE_METHOD: {
      amqp_rpc_reply_t reply{};
      reply.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION;
      reply.reply = frame.payload.method;
      check_reply(reply, "publish");
      return;
    }
    default:
      std::fprintf(stderr, "benchmark failed: publisher: unexpected method 0x%08x\n",
                   frame.payload.method.id);
      std::exit(1);
  }
}

/// Messages per second from the first publish until the consumer has received and acknowledged
/// the last message: persistent messages, a durable queue, publisher confirms with at most
/// kWindow unconfirmed, prefetch kWindow, acknowledgements every kAckEvery messages.
double raw_confirmed(const Endpoint& endpoint, std::size_t count) {
  Connection publisher(endpoint);
  const std::string queue = unique("raw_confirmed");
  const amqp_bytes_t queue_name = amqp_cstring_bytes(queue.c_str());
  amqp_queue_declare(publisher.get(), kChannel, queue_name, 0 /* passive */, 1 /* durable */,
                     0 /* exclusive */, 0 /* auto-delete */, amqp_empty_table);
  check_reply(amqp_get_rpc_reply(publisher.get()), "declare the queue");
  amqp_confirm_select(publisher.get(), kChannel);
  check_reply(amqp_get_rpc_reply(publisher.get()), "confirm.select");

  Steady::time_point start{}, last{};
  {
    // The consumer is registered (consume-ok) before the first publish.
    Connection consumer(endpoint);
    amqp_basic_qos(consumer.get(), kChannel, 0, static_cast<std::uint16_t>(kWindow), 0);
    check_reply(amqp_get_rpc_reply(consumer.get()), "basic.qos");
    amqp_basic_consume(consumer.get(), kChannel, queue_name, amqp_empty_bytes, 0 /* no-local */,
                       0 /* no-ack */, 0 /* exclusive */, amqp_empty_table);
    check_reply(amqp_get_rpc_reply(consumer.get()), "basic.consume");

    std::thread reader([&] {
      std::size_t received = 0;
      while (received < count) {
        // Frees the previous message's buffers (when nothing else is queued).
        amqp_maybe_release_buffers(consumer.get());
        amqp_envelope_t envelope;
        timeval limit = kStuck;
        check_reply(amqp_consume_message(consumer.get(), &envelope, &limit, 0), "consume");
        check(envelope.message.body.len == kPayloadBytes, "a message of the benchmark's size");
        ++received;
        if (received % kAckEvery == 0 || received == count) {
          check_status(amqp_basic_ack(consumer.get(), kChannel, envelope.delivery_tag, 1),
                       "basic.ack");
        }
        amqp_destroy_envelope(&envelope);
      }
      last = Steady::now();
    });

    const std::string payload(kPayloadBytes, 'x');
    const amqp_bytes_t body{payload.size(), const_cast<char*>(payload.data())};
    amqp_basic_properties_t properties{};
    properties._flags = AMQP_BASIC_DELIVERY_MODE_FLAG;
    properties.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    Confirms confirms;
    std::size_t published = 0;
    start = Steady::now();
    while (confirms.confirmed() < count) {
      while (published < count && published - confirms.confirmed() < kWindow) {
        check_status(amqp_basic_publish(publisher.get(), kChannel, amqp_empty_bytes, queue_name,
                                        0 /* mandatory */, 0 /* immediate */, &properties, body),
                     "basic.publish");
        ++published;
      }
      // The window is full (or everything is out): wait for a confirm, then take every other
      // frame already read, without waiting.
      amqp_frame_t frame;
      check(next_frame(publisher.get(), frame, kStuck), "the broker confirms the publishes");
      publisher_frame(frame, confirms);
      while (amqp_frames_enqueued(publisher.get()) || amqp_data_in_buffer(publisher.get())) {
        if (!next_frame(publisher.get(), frame, timeval{0, 0})) break;
        publisher_frame(frame, confirms);
      }
      amqp_maybe_release_buffers(publisher.get());
    }
    reader.join();
  }  // the consumer's connection closes before its queue goes
  const double rate = static_cast<double>(count) / seconds(last - start);
  amqp_queue_delete(publisher.get(), kChannel, queue_name, 0, 0);
  check_reply(amqp_get_rpc_reply(publisher.get()), "delete the queue");
  return rate;
}

// ---- the bus ----

// The same measure through the bus: commands (a durable queue, persistent messages, publisher
// confirms) sent with kWindow in flight, until the handler has seen the last one.
double bus_confirmed(const Endpoint& endpoint, std::size_t count) {
  mm::rabbitmq::RabbitMqConfig config;
  config.url = endpoint.url;
  const std::string service = unique("bus_bench");
  auto consumer =
      started_bus(mm::MessageBackendType::rabbitmq, mm::rabbitmq::make_backend(config), false);
  auto producer =
      started_bus(mm::MessageBackendType::rabbitmq, mm::rabbitmq::make_backend(config), false);
  std::atomic<std::size_t> received{0};
  std::promise<Steady::time_point> done;
  auto handler = mm::sync_handler([&](const mm::Message&) -> mm::Result<void> {
    if (received.fetch_add(1) + 1 == count) done.set_value(Steady::now());
    return mm::ok();
  });
  check(consumer->handle_commands({"work"}, handler, service).has_value(), "handle_commands");
  const mm::Json prototype{{"p", std::string(kPayloadBytes - 8, 'x')}};
  auto finished = done.get_future();
  const auto start = Steady::now();
  publish_concurrently(*producer, count, kWindow, [&]() -> asio::awaitable<mm::Result<void>> {
    mm::Json data = prototype;
    co_return co_await producer->bus().send_command("work", std::move(data), service);
  });
  check(finished.wait_for(std::chrono::seconds(300)) == std::future_status::ready,
        "the handler received everything");
  return static_cast<double>(count) / seconds(finished.get() - start);
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  const bool parsed =
      parse_flags(argc, argv,
                  {{"--messages", [&](std::uint64_t v) { options.messages = v; }},
                   {"--runs", [&](std::uint64_t v) { options.runs = static_cast<int>(v); }}},
                  "marty_bench_rabbitmq [--messages N] [--runs N]");
  if (!parsed) return 2;
  check(options.messages > 0 && options.runs > 0, "counts above zero");
  const Endpoint endpoint = broker_endpoint();
  std::printf("RabbitMQ benchmark against %s: %zu-byte messages, median of %d runs\n\n",
              endpoint.address().c_str(), kPayloadBytes, options.runs);
  std::vector<double> raw_rates, bus_rates, ratios;
  for (int run = 0; run < options.runs; ++run) {
    raw_rates.push_back(raw_confirmed(endpoint, options.messages));
    bus_rates.push_back(bus_confirmed(endpoint, options.messages));
    ratios.push_back(bus_rates.back() / raw_rates.back());
  }
  std::printf(
      "| measure (msg/s)                                  | raw rabbitmq-c |    bus | bus/raw |\n");
  std::printf(
      "|--------------------------------------------------|---------------:|-------:|--------:|\n");
  std::printf("| confirmed, persistent, durable queue, end to end | %14.0f | %6.0f | %6.2fx |\n",
              median(raw_rates), median(bus_rates), median(ratios));
  std::printf(
      "\nbus/raw is the median of the per-run ratios (each run measures both back to back).\n");
  return 0;
}
