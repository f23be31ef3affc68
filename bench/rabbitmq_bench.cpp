// The RabbitMQ backend against raw rabbitmq-c on the same broker, in the same run, 128-byte
// JSON messages, median of alternating runs, with the client CPU per message (both sides in
// this process, every thread).
//
// Confirmed throughput, end to end: a publisher with publisher confirms sends persistent
// messages to a durable queue with at most kWindow of them unconfirmed; a consumer on its own
// connection (prefetch kWindow) acknowledges them; from the first publish until the last message
// was consumed and acknowledged.
//
// What the bus sends for a command (captured with the broker's firehose tracer, and in
// rabbitmq_backend.cpp / rabbitmq_wire.cpp): basic.publish to the durable direct exchange
// marty.commands, routing key commands.<service>.<type>, mandatory, with the properties
// content_type application/json, message_id (the CloudEvents id), type, timestamp (seconds),
// delivery_mode 2 and a header table of cloudEvents:specversion, cloudEvents:id (a fresh
// UUIDv7), cloudEvents:source, cloudEvents:type, cloudEvents:time (fresh), x-marty-subject and
// x-marty-publish-tag (the confirm's delivery tag, to match returns); the JSON body serialized
// from the caller's value on each send. The queue its service declares is durable, with the
// arguments x-dead-letter-exchange marty.dead-letters and x-max-priority 10 (a priority queue),
// bound to marty.commands by the subject (and to marty.retry.back for delayed retries); its
// consumer has prefetch 256 and acknowledges with basic.ack `multiple`.
//
// The baselines, with rabbitmq-c alone:
//   same bytes: the same exchange, queue arguments and bindings, mandatory, the same properties
//     and header table (fresh id, time and tag per message), the same JSON value serialized on
//     each send; the same window of unconfirmed publishes (a count released by the broker's
//     basic.ack), the same prefetch; the consumer reads every header and acknowledges every
//     kAckEvery messages with `multiple` (and the last).
//   bare: the default exchange, a plain durable queue, persistent messages with no properties
//     beyond delivery_mode, not mandatory, a pre-serialized body (what the bus's wire costs).
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
#include "bench_wire.hpp"
#include "marty/messaging/codec.hpp"
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
    case AMQP_BASIC_RETURN_METHOD:
      check(false, "every mandatory message reaches the queue (the broker returned one)");
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

/// The payload of every measure: a 128-byte JSON value, which the bus serializes on each send.
const mm::Json& payload() {
  static const mm::Json value{{"p", std::string(kPayloadBytes - 8, 'x')}};
  return value;
}

amqp_bytes_t bytes_of(const std::string& text) {
  return amqp_bytes_t{text.size(), const_cast<char*>(text.data())};
}

enum class Wire { bare, same_bytes };

/// Declares what the bus's command queue is: the durable direct exchange marty.commands and
/// marty.retry.back (a topic exchange), a durable queue `queue` with the bus's arguments,
/// bound to both as the bus binds a service's command queue.
void declare_command_queue(amqp_connection_state_t conn, const std::string& queue) {
  for (const auto& [name, type] :
       {std::pair{"marty.commands", "direct"}, std::pair{"marty.retry.back", "topic"}}) {
    amqp_exchange_declare(conn, kChannel, amqp_cstring_bytes(name), amqp_cstring_bytes(type), 0,
                          1 /* durable */, 0, 0, amqp_empty_table);
    check_reply(amqp_get_rpc_reply(conn), "declare an exchange");
  }
  amqp_table_entry_t arguments[2]{};
  arguments[0].key = amqp_cstring_bytes("x-dead-letter-exchange");
  arguments[0].value.kind = AMQP_FIELD_KIND_UTF8;
  arguments[0].value.value.bytes = amqp_cstring_bytes("marty.dead-letters");
  arguments[1].key = amqp_cstring_bytes("x-max-priority");
  arguments[1].value.kind = AMQP_FIELD_KIND_I64;
  arguments[1].value.value.i64 = 10;
  amqp_queue_declare(conn, kChannel, bytes_of(queue), 0, 1 /* durable */, 0, 0,
                     amqp_table_t{2, arguments});
  check_reply(amqp_get_rpc_reply(conn), "declare the queue");
  amqp_queue_bind(conn, kChannel, bytes_of(queue), amqp_cstring_bytes("marty.commands"),
                  bytes_of(queue), amqp_empty_table);
  check_reply(amqp_get_rpc_reply(conn), "bind the queue");
  const std::string retry_key = "*." + queue;
  amqp_queue_bind(conn, kChannel, bytes_of(queue), amqp_cstring_bytes("marty.retry.back"),
                  bytes_of(retry_key), amqp_empty_table);
  check_reply(amqp_get_rpc_reply(conn), "bind the queue for retries");
}

void delete_queue(const Endpoint& endpoint, const std::string& queue) {
  Connection connection(endpoint);
  amqp_queue_delete(connection.get(), kChannel, bytes_of(queue), 0, 0);
  check_reply(amqp_get_rpc_reply(connection.get()), "delete the queue");
}

/// From the first publish until the consumer has received and acknowledged the last message:
/// persistent messages, a durable queue, publisher confirms with at most kWindow unconfirmed,
/// prefetch kWindow, acknowledgements every kAckEvery messages.
Rate raw_confirmed(const Endpoint& endpoint, std::size_t count, Wire wire) {
  Connection publisher(endpoint);
  const std::string service = unique("raw_bench");
  const std::string queue = wire == Wire::bare ? service : "commands." + service + ".work";
  const amqp_bytes_t queue_name = bytes_of(queue);
  if (wire == Wire::bare) {
    amqp_queue_declare(publisher.get(), kChannel, queue_name, 0 /* passive */, 1 /* durable */,
                       0 /* exclusive */, 0 /* auto-delete */, amqp_empty_table);
    check_reply(amqp_get_rpc_reply(publisher.get()), "declare the queue");
  } else {
    declare_command_queue(publisher.get(), queue);
  }
  amqp_confirm_select(publisher.get(), kChannel);
  check_reply(amqp_get_rpc_reply(publisher.get()), "confirm.select");

  Steady::time_point last{};
  Rate rate;
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
        // Every header read, as decoding the message does.
        const amqp_basic_properties_t& properties = envelope.message.properties;
        std::size_t header_bytes = 0;
        if (properties._flags & AMQP_BASIC_HEADERS_FLAG) {
          for (int i = 0; i < properties.headers.num_entries; ++i) {
            const amqp_table_entry_t& entry = properties.headers.entries[i];
            header_bytes += entry.key.len + entry.value.value.bytes.len;
          }
        }
        check((header_bytes != 0) == (wire == Wire::same_bytes), "the headers sent");
        ++received;
        if (received % kAckEvery == 0 || received == count) {
          check_status(amqp_basic_ack(consumer.get(), kChannel, envelope.delivery_tag, 1),
                       "basic.ack");
        }
        amqp_destroy_envelope(&envelope);
      }
      last = Steady::now();
    });

    const std::string bare_body = payload().dump();
    const std::string source = mm::EventBusOptions().service_name;  // the bus's default source
    const std::string type = "work", content_type = "application/json", version = "1.0";
    TimeText time;
    Confirms confirms;
    std::size_t published = 0;
    RateMeter meter(count);
    while (confirms.confirmed() < count) {
      while (published < count && published - confirms.confirmed() < kWindow) {
        amqp_basic_properties_t properties{};
        properties._flags = AMQP_BASIC_DELIVERY_MODE_FLAG;
        properties.delivery_mode = AMQP_DELIVERY_PERSISTENT;
        if (wire == Wire::bare) {
          check_status(amqp_basic_publish(publisher.get(), kChannel, amqp_empty_bytes, queue_name,
                                          0 /* mandatory */, 0 /* immediate */, &properties,
                                          bytes_of(bare_body)),
                       "basic.publish");
          ++published;
          continue;
        }
        const std::string body = payload().dump();
        const std::string id = mm::make_uuid_v7();
        const std::string& now = time.now();
        const std::string tag = std::to_string(published + 1);  // the confirm's delivery tag
        amqp_table_entry_t headers[7]{};
        const std::pair<const char*, const std::string*> fields[7] = {
            {"cloudEvents:specversion", &version},
            {"cloudEvents:id", &id},
            {"cloudEvents:source", &source},
            {"cloudEvents:type", &type},
            {"cloudEvents:time", &now},
            {"x-marty-subject", &queue},
            {"x-marty-publish-tag", &tag}};
        for (int i = 0; i < 7; ++i) {
          headers[i].key = amqp_cstring_bytes(fields[i].first);
          headers[i].value.kind = AMQP_FIELD_KIND_UTF8;
          headers[i].value.value.bytes = bytes_of(*fields[i].second);
        }
        properties._flags |= AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG |
                             AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TYPE_FLAG |
                             AMQP_BASIC_TIMESTAMP_FLAG;
        properties.headers = amqp_table_t{7, headers};
        properties.content_type = bytes_of(content_type);
        properties.message_id = bytes_of(id);
        properties.type = bytes_of(type);
        properties.timestamp = static_cast<std::uint64_t>(time.seconds());
        check_status(
            amqp_basic_publish(publisher.get(), kChannel, amqp_cstring_bytes("marty.commands"),
                               queue_name, 1 /* mandatory */, 0 /* immediate */, &properties,
                               bytes_of(body)),
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
    rate = meter.stop(last);
  }  // the consumer's connection closes before its queue goes
  amqp_queue_delete(publisher.get(), kChannel, queue_name, 0, 0);
  check_reply(amqp_get_rpc_reply(publisher.get()), "delete the queue");
  return rate;
}

// ---- the bus ----

// The same measure through the bus: commands (a durable queue, persistent messages, publisher
// confirms) sent with kWindow in flight, until the handler has seen the last one.
Rate bus_confirmed(const Endpoint& endpoint, std::size_t count) {
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
  auto finished = done.get_future();
  RateMeter meter(count);
  publish_concurrently(*producer, count, kWindow, [&]() -> asio::awaitable<mm::Result<void>> {
    mm::Json data = payload();
    co_return co_await producer->bus().send_command("work", std::move(data), service);
  });
  check(finished.wait_for(std::chrono::seconds(300)) == std::future_status::ready,
        "the handler received everything");
  const Rate rate = meter.stop(finished.get());
  consumer.reset();  // stopped before its queue goes
  producer.reset();
  delete_queue(endpoint, "commands." + service + ".work");
  return rate;
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
  std::printf(
      "RabbitMQ benchmark against %s: %zu-byte messages, %zu unconfirmed at most, median of %d "
      "alternating runs; CPU: client CPU microseconds per message (every thread of this "
      "process)\n\n",
      endpoint.address().c_str(), kPayloadBytes, kWindow, options.runs);
  std::vector<Rate> raw_same, raw_bare, bus;
  for (int run = 0; run < options.runs; ++run) {
    raw_bare.push_back(raw_confirmed(endpoint, options.messages, Wire::bare));
    raw_same.push_back(raw_confirmed(endpoint, options.messages, Wire::same_bytes));
    bus.push_back(bus_confirmed(endpoint, options.messages));
  }
  const Rate same = median_rate(raw_same), bare = median_rate(raw_bare), b = median_rate(bus);
  std::printf(
      "| confirmed, persistent, durable queue, end to end | raw msg/s | raw CPU | bus msg/s | bus "
      "CPU | bus/raw |\n");
  std::printf(
      "|--------------------------------------------------|----------:|--------:|----------:|----"
      "----:|--------:|\n");
  std::printf(
      "| same bytes (the bus's exchange, queue, headers)  | %9.0f | %7.2f | %9.0f | %7.2f | "
      "%7.2f |\n",
      same.per_second, same.cpu_us, b.per_second, b.cpu_us, b.per_second / same.per_second);
  std::printf(
      "| raw bare (default exchange, plain queue)         | %9.0f | %7.2f | %9.0f | %7.2f | "
      "%7.2f |\n",
      bare.per_second, bare.cpu_us, b.per_second, b.cpu_us, b.per_second / bare.per_second);
  std::printf(
      "\nCPU: client CPU microseconds per message. bus/raw: the medians' ratio (above 1: the bus "
      "is faster). The raw bare row leaves out what the bus's wire and queue cost; the same-bytes "
      "row does the same work as the bus.\n\n");
  print_result("rabbitmq.confirmed.end_to_end.vs_raw_same_bytes", b.per_second, same.per_second);
  return 0;
}
