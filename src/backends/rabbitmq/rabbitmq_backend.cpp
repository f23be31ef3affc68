// The RabbitMQ backend (AMQP 0-9-1 on rabbitmq-c): a topic exchange for events, durable queues
// for commands, direct reply-to for queries, stream queues for bus streams.
//
// Threads: rabbitmq-c is blocking and single-threaded, so each connection runs on a thread of
// its own (AmqpConnection): one publishing connection per backend (publisher confirms,
// mandatory returns, and the direct reply-to consumer for queries), and one connection per
// subscription. Coroutines hand work to those threads and are resumed on their own executor
// with the outcome, so handlers run on the bus's executor.
//
// Delayed redelivery: RabbitMQ has no nack-with-delay, so a nacked message is published again,
// with its attempt count, to a retry queue per delay (`marty.retry.<ms>`, whose messages expire
// after that delay and are dead-lettered back to the queue they came from through the
// `retry-back` exchange), and the original is acknowledged once the broker confirmed the copy.
#include "marty/messaging/rabbitmq_backend.hpp"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <unordered_map>

#include <spdlog/spdlog.h>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include "amqp_connection.hpp"
#include "marty/messaging/detail/async_signal.hpp"
#include "marty/messaging/detail/completion.hpp"
#include "marty/messaging/detail/dead_letter_log.hpp"
#include "marty/messaging/detail/inbox.hpp"
#include "marty/messaging/detail/log.hpp"
#include "marty/messaging/detail/pending_replies.hpp"
#include "marty/messaging/detail/sleep.hpp"
#include "marty/messaging/detail/url.hpp"
#include "marty/messaging/subject.hpp"
#include "marty/messaging/wire.hpp"
#include "rabbitmq_wire.hpp"

namespace marty::messaging::rabbitmq {
namespace {

using detail::AsyncSignal;
using std::chrono::milliseconds;

using marty::messaging::detail::logger;

constexpr std::string_view kReplyToQueue = "amq.rabbitmq.reply-to";
constexpr std::string_view kDeadLetterQueue = "marty.dead-letters";
// How long a new stream may take to take consumers (the broker starts its writer after
// answering the declaration) before publishing to it fails.
constexpr std::chrono::milliseconds kStreamStartWait{10'000};

// ---- Running work on a connection's thread ---------------------------------------------

template <class T>
using Complete = detail::Complete<T>;

// Runs `start(conn, complete)` on the connection's thread and resumes the caller with what
// `complete` is given. `conn` is null when the connection cannot run the task (closed, or down
// longer than its outage wait): `start` must then complete with an error.
// With a `deadline`, the caller is resumed with `on_deadline` when it passes first (the task
// still runs; its late completion is dropped).
template <class T, class Start>
asio::awaitable<T> on_thread(AmqpConnection& connection, Start start,
                             SteadyClock::time_point deadline = SteadyClock::time_point::max(),
                             std::optional<T> on_deadline = std::nullopt) {
  auto post = [&connection, start = std::move(start)](Complete<T> complete) mutable {
    connection.post([start = std::move(start), complete](amqp_connection_state_t conn) mutable {
      start(conn, complete);
    });
  };
  if (deadline != SteadyClock::time_point::max() && on_deadline) {
    return detail::await_completion<T>(std::move(post), deadline, std::move(*on_deadline));
  }
  return detail::await_completion<T>(std::move(post));
}

Error connection_gone(std::string_view what) {
  return rabbit_error(errc::unavailable,
                      std::string(what) + ": RabbitMQ is unreachable (gave up waiting for it)");
}

// ---- Tables and declarations (connection thread only) ---------------------------------------

// An AMQP argument table whose strings live as long as it does.
class Table {
 public:
  Table& text(std::string key, std::string value) {
    strings_.push_back(std::move(key));
    strings_.push_back(std::move(value));
    kinds_.push_back('S');
    numbers_.push_back(0);
    return *this;
  }
  Table& number(std::string key, std::int64_t value) {
    strings_.push_back(std::move(key));
    strings_.emplace_back();
    kinds_.push_back('l');
    numbers_.push_back(value);
    return *this;
  }
  Table& timestamp(std::string key, std::uint64_t seconds) {
    strings_.push_back(std::move(key));
    strings_.emplace_back();
    kinds_.push_back('T');
    numbers_.push_back(static_cast<std::int64_t>(seconds));
    return *this;
  }
  amqp_table_t get() {
    entries_.clear();
    for (std::size_t i = 0; i < kinds_.size(); ++i) {
      amqp_table_entry_t entry{};
      entry.key = bytes_of(strings_[2 * i]);
      if (kinds_[i] == 'S') {
        entry.value.kind = AMQP_FIELD_KIND_UTF8;
        entry.value.value.bytes = bytes_of(strings_[2 * i + 1]);
      } else if (kinds_[i] == 'T') {
        entry.value.kind = AMQP_FIELD_KIND_TIMESTAMP;
        entry.value.value.u64 = static_cast<std::uint64_t>(numbers_[i]);
      } else {
        entry.value.kind = AMQP_FIELD_KIND_I64;
        entry.value.value.i64 = numbers_[i];
      }
      entries_.push_back(entry);
    }
    return amqp_table_t{static_cast<int>(entries_.size()), entries_.data()};
  }

 private:
  std::deque<std::string> strings_;  // stable addresses
  std::vector<char> kinds_;
  std::vector<std::int64_t> numbers_;
  std::vector<amqp_table_entry_t> entries_;
};

// After a failed declaration the broker has closed the topology channel: acknowledge the close
// and open it again, so the connection stays usable.
Error topology_failed(amqp_connection_state_t conn, const amqp_rpc_reply_t& reply,
                      std::string what) {
  Error error = rpc_error(reply, what);
  if (reply.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
      reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
    amqp_channel_close_ok_t close_ok{};
    amqp_send_method(conn, kTopologyChannel, AMQP_CHANNEL_CLOSE_OK_METHOD, &close_ok);
    amqp_channel_open(conn, kTopologyChannel);
    (void)amqp_get_rpc_reply(conn);
  }
  return error;
}

Result<void> declare_exchange(amqp_connection_state_t conn, const std::string& name,
                              const char* type, bool durable) {
  amqp_exchange_declare(conn, kTopologyChannel, bytes_of(name), amqp_cstring_bytes(type), 0,
                        durable ? 1 : 0, 0, 0, amqp_empty_table);
  const auto reply = amqp_get_rpc_reply(conn);
  if (reply.reply_type != AMQP_RESPONSE_NORMAL) {
    return topology_failed(conn, reply, "declaring exchange '" + name + "'");
  }
  return ok();
}

// Declares a queue; returns its name (the broker's, for a server-named queue).
Result<std::string> declare_queue(amqp_connection_state_t conn, const std::string& name,
                                  bool durable, bool exclusive, bool auto_delete, Table args) {
  auto* declared = amqp_queue_declare(conn, kTopologyChannel, bytes_of(name), 0, durable ? 1 : 0,
                                      exclusive ? 1 : 0, auto_delete ? 1 : 0, args.get());
  const auto reply = amqp_get_rpc_reply(conn);
  if (reply.reply_type != AMQP_RESPONSE_NORMAL || declared == nullptr) {
    return topology_failed(conn, reply, "declaring queue '" + name + "'");
  }
  return text_of(declared->queue);
}

Result<void> bind_queue(amqp_connection_state_t conn, const std::string& queue,
                        const std::string& exchange, const std::string& key) {
  amqp_queue_bind(conn, kTopologyChannel, bytes_of(queue), bytes_of(exchange), bytes_of(key),
                  amqp_empty_table);
  const auto reply = amqp_get_rpc_reply(conn);
  if (reply.reply_type != AMQP_RESPONSE_NORMAL) {
    return topology_failed(
        conn, reply, "binding queue '" + queue + "' to '" + exchange + "' with '" + key + "'");
  }
  return ok();
}

// Whether a stream just declared runs: a probe consumer on the topology channel, cancelled at
// once. Any failure says "not yet" (see Core::ensure_stream).
Result<void> probe_stream(amqp_connection_state_t conn, const std::string& name) {
  amqp_basic_qos(conn, kTopologyChannel, 0, 1, 0);
  if (auto reply = amqp_get_rpc_reply(conn); reply.reply_type != AMQP_RESPONSE_NORMAL) {
    return rpc_error(reply, "basic.qos");
  }
  Table args;
  args.text("x-stream-offset", "next");
  auto* consumed = amqp_basic_consume(conn, kTopologyChannel, bytes_of(name), amqp_empty_bytes, 0,
                                      0, 0, args.get());
  if (auto reply = amqp_get_rpc_reply(conn);
      reply.reply_type != AMQP_RESPONSE_NORMAL || consumed == nullptr) {
    return rpc_error(reply, "waiting for stream '" + name + "' to start");
  }
  amqp_basic_cancel(conn, kTopologyChannel, consumed->consumer_tag);
  if (auto reply = amqp_get_rpc_reply(conn); reply.reply_type != AMQP_RESPONSE_NORMAL) {
    return rpc_error(reply, "cancelling the probe of stream '" + name + "'");
  }
  return ok();
}

// A bus subject pattern as an AMQP topic binding key: `*` is one word in both, NATS's `>` (one
// or more words) becomes `#` (zero or more), so receivers still check subject::matches.
std::string binding_key(std::string_view pattern) {
  std::string key;
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = pattern.find('.', start);
    const std::string_view token = pattern.substr(start, dot - start);
    key += token == ">" ? std::string_view("#") : token;
    if (dot == std::string_view::npos) break;
    key += '.';
    start = dot + 1;
  }
  return key;
}

// Queue names are free text, but they also appear in the retry-back binding keys, where `*` and
// `#` are wildcards: those characters are replaced.
std::string queue_name_for(std::string_view text) {
  std::string name(text);
  for (char& c : name) {
    if (c == '*') c = '~';
    if (c == '>' || c == '#') c = '^';
  }
  return name;
}

// ---- Shared state -----------------------------------------------------------------------

struct RequestWaiter {
  std::shared_ptr<AsyncSignal> signal = AsyncSignal::create();
  std::mutex mutex;
  std::optional<Message> reply;
};

struct PendingPublish {
  Complete<Result<void>> complete;  // empty: nobody waits (at-most-once)
  std::string subject;
};

// What the backend's subscriptions and deliveries share with it. The publisher's state is
// touched on its connection's thread only; `requests` under its mutex.
struct Core {
  RabbitMqConfig config;
  ConnectionSettings settings;
  std::atomic<bool> closed{false};

  // Publisher thread only.
  std::uint64_t next_tag = 1;
  std::map<std::uint64_t, PendingPublish> pending;
  std::map<std::uint64_t, std::string> returned;  // tag -> why the broker returned it
  std::set<std::string> declared;                 // streams and retry queues known to exist

  std::mutex requests_mutex;
  detail::PendingReplies<RequestWaiter> requests;  // by reply token

  std::unique_ptr<AmqpConnection> publisher;  // last: stopped before the rest goes

  Result<void> on_publisher_connected(amqp_connection_state_t conn);
  bool on_publisher_frame(amqp_connection_state_t conn, const amqp_frame_t& frame);
  void on_publisher_lost(const Error& error);
  void settle(std::uint64_t tag, bool multiple, bool acked);

  // Publisher thread: publishes `message` to `exchange` with `routing_key`; `complete` (if
  // any) runs when the broker confirmed it (or at once without confirms).
  void publish_now(amqp_connection_state_t conn, const Message& message,
                   const std::string& exchange, const std::string& routing_key, bool mandatory,
                   OutgoingMessage::Extra extra, Complete<Result<void>> complete);
  // Publisher thread (blocks it while a new stream starts).
  Result<void> ensure_stream(const std::string& name);
  Result<void> ensure_retry_queue(amqp_connection_state_t conn, milliseconds delay);
  Table queue_arguments() const {
    Table args;
    args.text("x-dead-letter-exchange", config.dead_letter_exchange);
    return args;
  }
};
using CorePtr = std::shared_ptr<Core>;

Result<void> Core::on_publisher_connected(amqp_connection_state_t conn) {
  next_tag = 1;
  declared.clear();
  for (const auto& [name, type] : std::vector<std::pair<std::string, const char*>>{
           {config.events_exchange, "topic"},
           {config.commands_exchange, "direct"},
           {config.dead_letter_exchange, "topic"},
           {config.retry_exchange, "topic"},
           {config.retry_exchange + ".back", "topic"}}) {
    if (auto declared_exchange = declare_exchange(conn, name, type, config.durable);
        !declared_exchange) {
      return declared_exchange;
    }
  }
  // Messages the broker itself dead-letters (expired, refused) are kept here, with x-death.
  auto dead = declare_queue(conn, std::string(kDeadLetterQueue), config.durable, false, false, {});
  if (!dead) return std::move(dead).error();
  if (auto bound = bind_queue(conn, *dead, config.dead_letter_exchange, "#"); !bound) return bound;
  if (config.publisher_confirms) {
    amqp_confirm_select(conn, kTrafficChannel);
    const auto reply = amqp_get_rpc_reply(conn);
    if (reply.reply_type != AMQP_RESPONSE_NORMAL) return rpc_error(reply, "confirm.select");
  }
  // Replies to our queries (direct reply-to: consumed without acks, on the publishing channel).
  const std::string reply_to(kReplyToQueue);
  amqp_basic_consume(conn, kTrafficChannel, bytes_of(reply_to), amqp_empty_bytes, 0, 1, 0,
                     amqp_empty_table);
  const auto consumed = amqp_get_rpc_reply(conn);
  if (consumed.reply_type != AMQP_RESPONSE_NORMAL) {
    return rpc_error(consumed, "consuming direct reply-to");
  }
  return ok();
}

void Core::settle(std::uint64_t tag, bool multiple, bool acked) {
  auto end = multiple ? pending.upper_bound(tag) : pending.find(tag);
  auto begin = multiple ? pending.begin() : end;
  if (!multiple) {
    if (end == pending.end()) return;
    end = std::next(end);
  }
  for (auto it = begin; it != end;) {
    Result<void> outcome = ok();
    if (auto returned_it = returned.find(it->first); returned_it != returned.end()) {
      outcome = rabbit_error(errc::not_found, "nothing takes '" + it->second.subject + "' (" +
                                                  returned_it->second + ")");
      returned.erase(returned_it);
    } else if (!acked) {
      outcome = rabbit_error(errc::unavailable, "the broker refused to store the message on '" +
                                                    it->second.subject + "'");
    }
    if (it->second.complete) it->second.complete(std::move(outcome));
    it = pending.erase(it);
  }
}

bool Core::on_publisher_frame(amqp_connection_state_t conn, const amqp_frame_t& frame) {
  if (frame.frame_type != AMQP_FRAME_METHOD) return true;
  switch (frame.payload.method.id) {
    case AMQP_BASIC_ACK_METHOD: {
      const auto* ack = static_cast<const amqp_basic_ack_t*>(frame.payload.method.decoded);
      settle(ack->delivery_tag, ack->multiple != 0, true);
      return true;
    }
    case AMQP_BASIC_NACK_METHOD: {
      const auto* nack = static_cast<const amqp_basic_nack_t*>(frame.payload.method.decoded);
      settle(nack->delivery_tag, nack->multiple != 0, false);
      return true;
    }
    case AMQP_BASIC_RETURN_METHOD: {
      const auto* back = static_cast<const amqp_basic_return_t*>(frame.payload.method.decoded);
      const std::string why = std::to_string(back->reply_code) + " " + text_of(back->reply_text);
      amqp_message_t message;
      if (amqp_read_message(conn, frame.channel, &message, 0).reply_type != AMQP_RESPONSE_NORMAL) {
        return false;
      }
      // The tag header is read directly: a returned message need not decode to be matched.
      if (message.properties._flags & AMQP_BASIC_HEADERS_FLAG) {
        const amqp_table_t& table = message.properties.headers;
        for (int i = 0; i < table.num_entries; ++i) {
          if (text_of(table.entries[i].key) != kPublishTagHeader) continue;
          const std::string tag = text_of(table.entries[i].value.value.bytes);
          std::uint64_t number = 0;
          std::from_chars(tag.data(), tag.data() + tag.size(), number);
          if (number != 0) returned[number] = why;
        }
      }
      amqp_destroy_message(&message);
      return true;
    }
    case AMQP_BASIC_DELIVER_METHOD: {  // a reply to one of our queries
      const auto* deliver = static_cast<const amqp_basic_deliver_t*>(frame.payload.method.decoded);
      const std::string routing_key = text_of(deliver->routing_key);
      amqp_message_t message;
      if (amqp_read_message(conn, frame.channel, &message, 0).reply_type != AMQP_RESPONSE_NORMAL) {
        return false;
      }
      auto decoded = decode_amqp(message, routing_key, false);
      amqp_destroy_message(&message);
      if (!decoded) {
        logger().warn("dropped a malformed reply from RabbitMQ: {}", decoded.error().describe());
        return true;
      }
      std::shared_ptr<RequestWaiter> waiter;
      {
        std::lock_guard lock(requests_mutex);
        waiter = requests.take(decoded->message);
      }
      if (!waiter) return true;  // it gave up already, or the reply names no query of ours
      {
        std::lock_guard lock(waiter->mutex);
        waiter->reply = std::move(decoded->message);
      }
      waiter->signal->notify();
      return true;
    }
    case AMQP_CHANNEL_CLOSE_METHOD:
      return false;
    default:
      return true;
  }
}

void Core::on_publisher_lost(const Error& error) {
  auto unsettled = std::move(pending);
  pending.clear();
  returned.clear();
  for (auto& [tag, publish] : unsettled) {
    if (publish.complete) {
      publish.complete(rabbit_error(error.is(errc::cancelled) ? errc::cancelled : errc::unavailable,
                                    "the connection went before the broker confirmed the "
                                    "message on '" +
                                        publish.subject +
                                        "' (it may or may not be stored): " + error.message()));
    }
  }
}

void Core::publish_now(amqp_connection_state_t conn, const Message& message,
                       const std::string& exchange, const std::string& routing_key, bool mandatory,
                       OutgoingMessage::Extra extra, Complete<Result<void>> complete) {
  const std::uint64_t tag = config.publisher_confirms ? next_tag : 0;
  extra.publish_tag = mandatory ? tag : 0;
  extra.persistent = extra.persistent && config.durable;
  OutgoingMessage outgoing(message, extra);
  const int status =
      amqp_basic_publish(conn, kTrafficChannel, bytes_of(exchange), bytes_of(routing_key),
                         mandatory ? 1 : 0, 0, outgoing.properties(), outgoing.body());
  if (status != AMQP_STATUS_OK) {
    if (complete) {
      complete(rabbit_error(errc::unavailable, "publishing on '" + std::string(message.subject()) +
                                                   "': " + amqp_error_string2(status)));
    }
    return;
  }
  if (!config.publisher_confirms) {
    if (complete) complete(ok());
    return;
  }
  ++next_tag;
  pending.emplace(tag, PendingPublish{std::move(complete), std::string(message.subject())});
}

// RabbitMQ 3.10 answers the declaration of a stream before its writer runs. A message published
// in that moment crashes the broker's channel (osiris_writer:write on no writer); a consumer is
// refused (406) or crashes the channel too (stream_not_found); and a crashed channel takes its
// connection down (541), with every publish in flight on it. So a new stream is declared and
// probed on a connection of its own, opened again after each failed probe until the stream
// takes a consumer: the publisher's connection only ever publishes to streams that run.
Result<void> Core::ensure_stream(const std::string& name) {
  if (declared.count(name) != 0) return ok();
  const auto give_up = SteadyClock::now() + kStreamStartWait;
  while (true) {
    auto opened = open_amqp_connection(settings, "declaring stream '" + name + "'");
    if (!opened) return std::move(opened).error();
    amqp_connection_state_t conn = *opened;
    Table args;
    args.text("x-queue-type", "stream");
    if (!config.stream_max_age.empty()) args.text("x-max-age", config.stream_max_age);
    auto queue = declare_queue(conn, name, true, false, false, std::move(args));
    Result<void> started = queue ? probe_stream(conn, name) : Result<void>(queue.error());
    (void)amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
    if (!queue) return std::move(queue).error();  // refused (other arguments): final
    if (started) {
      declared.insert(name);
      return ok();
    }
    if (SteadyClock::now() >= give_up) {
      return started.error().with_context(
          "stream '" + name + "' did not start within " +
          std::to_string(std::chrono::duration_cast<milliseconds>(kStreamStartWait).count()) +
          " ms");
    }
    std::this_thread::sleep_for(milliseconds(50));
  }
}

Result<void> Core::ensure_retry_queue(amqp_connection_state_t conn, milliseconds delay) {
  const std::string name = config.retry_exchange + "." + std::to_string(delay.count());
  if (declared.count(name) != 0) return ok();
  Table args;
  args.number("x-message-ttl", delay.count());
  args.text("x-dead-letter-exchange", config.retry_exchange + ".back");
  // No x-expires: publishes do not count as use, so the queue would go with messages in it.
  auto queue = declare_queue(conn, name, config.durable, false, false, std::move(args));
  if (!queue) return std::move(queue).error();
  if (auto bound =
          bind_queue(conn, name, config.retry_exchange, std::to_string(delay.count()) + ".#");
      !bound) {
    return bound;
  }
  declared.insert(name);
  return ok();
}

// Publishes on the publisher's thread and resumes the caller with the broker's confirm.
asio::awaitable<Result<void>> publish_via(CorePtr core, Message message, std::string exchange,
                                          std::string routing_key, bool mandatory, bool wait,
                                          OutgoingMessage::Extra extra, bool stream,
                                          SteadyClock::time_point deadline) {
  const std::string subject(message.subject());
  Core* c = core.get();
  auto start = [c, message = std::move(message), exchange = std::move(exchange),
                routing_key = std::move(routing_key), mandatory, wait, extra,
                stream](amqp_connection_state_t conn, Complete<Result<void>> complete) {
    if (conn == nullptr) {
      complete(connection_gone("publish on '" + std::string(message.subject()) + "'"));
      return;
    }
    if (stream) {
      if (auto declared = c->ensure_stream(routing_key); !declared) {
        complete(std::move(declared).error());
        return;
      }
    }
    if (wait) {
      c->publish_now(conn, message, exchange, routing_key, mandatory, extra, complete);
    } else {
      c->publish_now(conn, message, exchange, routing_key, mandatory, extra, nullptr);
      complete(ok());
    }
  };
  std::optional<Result<void>> late = rabbit_error(
      errc::deadline_exceeded, "publish on '" + subject +
                                   "': no confirm from the broker before the deadline (it may "
                                   "or may not be stored)");
  co_return co_await on_thread<Result<void>>(*core->publisher, std::move(start), deadline,
                                             std::move(late));
}

// ---- Subscriptions ----------------------------------------------------------------------

// Not an aggregate: it is passed to coroutines (docs/decisions/0001).
struct Received {
  Received() {}  // NOLINT(modernize-use-equals-default)
  Result<Incoming> incoming = Error(errc::internal, "unset");
  std::uint64_t tag = 0;
  std::uint64_t generation = 0;
  std::uint64_t offset = 0;  // streams
  std::string raw_body;      // kept for dead-lettering what cannot be decoded
  std::string routing_key;
};

// One subscription's consumer: a connection of its own, its queue, and what it has received.
struct Consumer {
  CorePtr core;
  SubscriptionSpec spec;
  bool stream = false;
  // Connection thread only: the consumer tag of the running basic.consume; the delivery tags
  // of the current channel not yet settled, in delivery order, each marked once acknowledged
  // (acknowledgements go out together as one basic.ack with `multiple`, see flush_acks).
  std::string consumer_tag;
  std::deque<std::pair<std::uint64_t, bool>> unsettled_tags;
  bool ack_flush_posted = false;

  std::mutex mutex;
  std::deque<Received> inbox;
  bool closed = false;
  std::uint64_t generation = 0;  // bumped at every (re)connection
  std::string queue;             // declared name (the broker's, for a private queue)
  // Streams: offsets received and not yet settled (a reconnection resumes at the lowest, so
  // nothing received but unsettled is skipped), and the offset after the last one received.
  std::set<std::uint64_t> unsettled_offsets;
  std::optional<std::uint64_t> next_offset;
  std::shared_ptr<AsyncSignal> signal = AsyncSignal::create();

  std::unique_ptr<AmqpConnection> connection;  // last: stopped before the rest goes

  Result<void> on_connected(amqp_connection_state_t conn);
  bool on_frame(amqp_connection_state_t conn, const amqp_frame_t& frame);

  std::string queue_name() {
    std::lock_guard lock(mutex);
    return queue;
  }

  // Connection thread: settles a delivery of the current channel. An ack is only marked, and
  // sent with the others at the end of this turn of the thread; a requeue goes at once.
  int settle_tag(amqp_connection_state_t conn, std::uint64_t tag, bool ack) {
    auto it = std::lower_bound(unsettled_tags.begin(), unsettled_tags.end(), tag,
                               [](const auto& entry, std::uint64_t t) { return entry.first < t; });
    const bool known = it != unsettled_tags.end() && it->first == tag;
    if (!ack) {
      if (known) unsettled_tags.erase(it);
      return amqp_basic_nack(conn, kTrafficChannel, tag, 0, 1);
    }
    if (!known) return amqp_basic_ack(conn, kTrafficChannel, tag, 0);
    it->second = true;
    if (!ack_flush_posted) {
      ack_flush_posted = true;
      connection->post([this](amqp_connection_state_t live) {
        ack_flush_posted = false;
        if (live != nullptr) flush_acks(live);
      });
    }
    return AMQP_STATUS_OK;
  }
  // Acknowledges, with one basic.ack `multiple`, the longest run of acknowledged deliveries at
  // the front (nothing unsettled is ever covered).
  void flush_acks(amqp_connection_state_t conn) {
    std::uint64_t last = 0;
    while (!unsettled_tags.empty() && unsettled_tags.front().second) {
      last = unsettled_tags.front().first;
      unsettled_tags.pop_front();
    }
    if (last == 0) return;
    if (const int status = amqp_basic_ack(conn, kTrafficChannel, last, 1);
        status != AMQP_STATUS_OK) {
      logger().warn("acknowledging messages of '{}' failed: {}", queue_name(),
                    amqp_error_string2(status));
    }
  }
  void settled_offset(std::uint64_t offset) {
    std::lock_guard lock(mutex);
    unsettled_offsets.erase(offset);
  }
};
using ConsumerPtr = std::shared_ptr<Consumer>;

Result<void> Consumer::on_connected(amqp_connection_state_t conn) {
  const RabbitMqConfig& config = core->config;
  {
    std::lock_guard lock(mutex);
    if (closed) return ok();  // reconnected after close(): nothing to consume any more
  }
  unsettled_tags.clear();  // tags of the old channel
  ack_flush_posted = false;
  std::optional<std::uint64_t> resume_at;
  {
    std::lock_guard lock(mutex);
    ++generation;
    inbox.clear();  // their tags died with the old connection; the broker redelivers them
    if (stream) {
      resume_at = unsettled_offsets.empty() ? next_offset : *unsettled_offsets.begin();
      unsettled_offsets.clear();
    }
  }
  std::string declared_queue;
  Table consume_args;
  if (stream) {
    Table args;
    args.text("x-queue-type", "stream");
    if (!config.stream_max_age.empty()) args.text("x-max-age", config.stream_max_age);
    auto declared = declare_queue(conn, spec.subject, true, false, false, std::move(args));
    if (!declared) return std::move(declared).error();
    declared_queue = *declared;
    if (resume_at) {
      consume_args.number("x-stream-offset", static_cast<std::int64_t>(*resume_at));
    } else {
      switch (spec.start.kind) {
        case StartPosition::Kind::new_messages:
          consume_args.text("x-stream-offset", "next");
          break;
        case StartPosition::Kind::earliest:
          consume_args.text("x-stream-offset", "first");
          break;
        case StartPosition::Kind::sequence:
          consume_args.number("x-stream-offset", static_cast<std::int64_t>(spec.start.sequence));
          break;
        case StartPosition::Kind::time: {
          // An AMQP timestamp (whole seconds): the broker starts at the chunk holding that
          // second, so the receiver skips what is older than the time asked for.
          const auto seconds =
              std::chrono::duration_cast<std::chrono::seconds>(spec.start.time.time_since_epoch())
                  .count();
          consume_args.timestamp("x-stream-offset", static_cast<std::uint64_t>(seconds));
          break;
        }
      }
    }
  } else {
    const bool query = spec.pattern == MessagingPattern::request_response;
    const bool command = spec.pattern == MessagingPattern::point_to_point;
    const bool shared = !spec.group.empty();
    std::string name;
    bool durable = config.durable, exclusive = false, auto_delete = false;
    Table args = query ? Table() : core->queue_arguments();
    if (query) {
      // A query queue lives while its responders do: a query nobody answers is returned.
      name = queue_name_for(spec.subject);
      durable = false;
      auto_delete = true;
    } else if (command) {
      name = queue_name_for(spec.subject);
      args.number("x-max-priority", 10);
    } else if (shared) {
      name = queue_name_for(spec.group + "@" + spec.subject);
      args.number("x-max-priority", 10);
    } else {
      durable = false;
      exclusive = true;
      auto_delete = true;
    }
    auto declared = declare_queue(conn, name, durable, exclusive, auto_delete, std::move(args));
    if (!declared) return std::move(declared).error();
    declared_queue = *declared;
    const std::string& exchange =
        (query || command) ? config.commands_exchange : config.events_exchange;
    const std::string key = (query || command) ? spec.subject : binding_key(spec.subject);
    if (auto bound = bind_queue(conn, declared_queue, exchange, key); !bound) return bound;
    if (auto bound = bind_queue(conn, declared_queue, config.retry_exchange + ".back",
                                "*." + declared_queue);
        !bound) {
      return bound;
    }
  }
  // A stream queue just declared may not have its replica running yet: the broker refuses the
  // consumer (406) and closes the channel. The channel is opened again and the consumer retried
  // for a few seconds.
  for (int attempt = 1;; ++attempt) {
    amqp_basic_qos(conn, kTrafficChannel, 0, static_cast<std::uint16_t>(config.prefetch), 0);
    if (auto reply = amqp_get_rpc_reply(conn); reply.reply_type != AMQP_RESPONSE_NORMAL) {
      return rpc_error(reply, "basic.qos");
    }
    auto* consumed = amqp_basic_consume(conn, kTrafficChannel, bytes_of(declared_queue),
                                        amqp_empty_bytes, 0, 0, 0, consume_args.get());
    const auto reply = amqp_get_rpc_reply(conn);
    if (reply.reply_type == AMQP_RESPONSE_NORMAL && consumed != nullptr) {
      consumer_tag = text_of(consumed->consumer_tag);
      std::lock_guard lock(mutex);
      queue = declared_queue;
      return ok();
    }
    const bool not_ready =
        stream && reply.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
        reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD &&
        static_cast<const amqp_channel_close_t*>(reply.reply.decoded)->reply_code ==
            AMQP_PRECONDITION_FAILED;
    if (!not_ready || attempt >= 60) return rpc_error(reply, "consuming '" + declared_queue + "'");
    amqp_channel_close_ok_t close_ok{};
    amqp_send_method(conn, kTrafficChannel, AMQP_CHANNEL_CLOSE_OK_METHOD, &close_ok);
    std::this_thread::sleep_for(milliseconds(50));
    amqp_channel_open(conn, kTrafficChannel);
    if (auto reopened = amqp_get_rpc_reply(conn); reopened.reply_type != AMQP_RESPONSE_NORMAL) {
      return rpc_error(reopened, "reopening a channel");
    }
  }
}

std::optional<std::uint64_t> stream_offset_of(const amqp_message_t& message) {
  if (!(message.properties._flags & AMQP_BASIC_HEADERS_FLAG)) return std::nullopt;
  const amqp_table_t& table = message.properties.headers;
  for (int i = 0; i < table.num_entries; ++i) {
    if (text_of(table.entries[i].key) != "x-stream-offset") continue;
    const amqp_field_value_t& v = table.entries[i].value;
    if (v.kind == AMQP_FIELD_KIND_I64) return static_cast<std::uint64_t>(v.value.i64);
    if (v.kind == AMQP_FIELD_KIND_U64) return v.value.u64;
    if (v.kind == AMQP_FIELD_KIND_I32) return static_cast<std::uint64_t>(v.value.i32);
  }
  return std::nullopt;
}

bool Consumer::on_frame(amqp_connection_state_t conn, const amqp_frame_t& frame) {
  if (frame.frame_type != AMQP_FRAME_METHOD) return true;
  if (frame.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD) return false;
  if (frame.payload.method.id == AMQP_BASIC_CANCEL_METHOD) {
    // The broker cancelled the consumer (its queue was deleted): reconnecting declares the
    // queue again and consumes anew.
    logger().warn("the broker cancelled the consumer of '{}'; subscribing again", queue_name());
    return false;
  }
  if (frame.payload.method.id != AMQP_BASIC_DELIVER_METHOD) return true;
  const auto* deliver = static_cast<const amqp_basic_deliver_t*>(frame.payload.method.decoded);
  Received received;
  received.tag = deliver->delivery_tag;
  received.routing_key = text_of(deliver->routing_key);
  const bool redelivered = deliver->redelivered != 0;
  amqp_message_t message;
  if (amqp_read_message(conn, frame.channel, &message, 0).reply_type != AMQP_RESPONSE_NORMAL) {
    return false;
  }
  received.incoming =
      decode_amqp(message, stream ? spec.subject : received.routing_key, redelivered);
  if (stream) received.offset = stream_offset_of(message).value_or(0);
  if (!received.incoming) received.raw_body = text_of(message.body);
  amqp_destroy_message(&message);
  {
    std::lock_guard lock(mutex);
    if (closed) {
      // Arrived while closing: back to the queue (a stream keeps it anyway).
      if (!stream) amqp_basic_nack(conn, kTrafficChannel, received.tag, 0, 1);
      return true;
    }
    received.generation = generation;
    unsettled_tags.emplace_back(received.tag, false);
    if (stream) {
      next_offset = received.offset + 1;
      unsettled_offsets.insert(received.offset);
    }
    inbox.push_back(std::move(received));
  }
  signal->notify();
  return true;
}

enum class Settle { ack, requeue };

// Settles a delivery on the consumer's thread: acknowledges it, or returns it to its queue.
asio::awaitable<Result<void>> settle_on(ConsumerPtr consumer, std::uint64_t generation,
                                        std::uint64_t tag, Settle how, std::string what) {
  Consumer* c = consumer.get();
  auto start = [c, generation, tag, how, what](amqp_connection_state_t conn,
                                               Complete<Result<void>> complete) {
    if (conn == nullptr) {
      complete(connection_gone(what));
      return;
    }
    {
      std::lock_guard lock(c->mutex);
      if (generation != c->generation) {
        complete(rabbit_error(errc::unavailable, what + ": its connection was lost since it "
                                                        "was delivered (it will be redelivered)"));
        return;
      }
    }
    const int status = c->settle_tag(conn, tag, how == Settle::ack);
    if (status != AMQP_STATUS_OK) {
      complete(rabbit_error(errc::unavailable, what + ": " + amqp_error_string2(status)));
      return;
    }
    complete(ok());
  };
  co_return co_await on_thread<Result<void>>(*consumer->connection, std::move(start));
}

class RabbitDelivery final : public Delivery {
 public:
  RabbitDelivery(Message message, int attempt, std::uint64_t sequence, ConsumerPtr consumer,
                 std::uint64_t tag, std::uint64_t generation)
      : Delivery(std::move(message), attempt, sequence),
        consumer_(std::move(consumer)),
        tag_(tag),
        generation_(generation) {}

  ~RabbitDelivery() override {
    if (settled_) return;
    if (consumer_->stream) {
      // A stream has no requeue: the subscription hands the message out again itself.
      requeue_locally(consumer_, stream_copy(0));
      return;
    }
    // Unsettled: back to the queue at once.
    const std::uint64_t tag = tag_, generation = generation_;
    Consumer* c = consumer_.get();
    consumer_->connection->post([c, tag, generation](amqp_connection_state_t conn) {
      if (conn == nullptr) return;
      std::lock_guard lock(c->mutex);
      if (generation != c->generation) return;
      c->settle_tag(conn, tag, false);
    });
  }

  asio::awaitable<Result<void>> ack() override { co_return co_await acknowledge("ack"); }
  // The bus has dead-lettered the message before it terms it: acknowledged, not rejected
  // (a rejection would dead-letter it a second time through the queue's exchange).
  asio::awaitable<Result<void>> term() override { co_return co_await acknowledge("term"); }

  asio::awaitable<Result<void>> nack(milliseconds delay) override {
    if (settled_) co_return already();
    settled_ = true;
    if (consumer_->stream) co_return co_await nack_stream(delay);
    // A copy with the next attempt number goes to the retry queue of this delay; once the
    // broker has it, the original is acknowledged.
    CorePtr core = consumer_->core;
    const std::string routing_key = std::to_string(delay.count()) + "." + consumer_->queue_name();
    OutgoingMessage::Extra extra;
    extra.attempt = attempt() + 1;
    extra.keep_expiration = false;
    Core* c = core.get();
    auto declare = [c, delay](amqp_connection_state_t conn, Complete<Result<void>> complete) {
      if (conn == nullptr) {
        complete(connection_gone("retry queue"));
        return;
      }
      complete(c->ensure_retry_queue(conn, delay));
    };
    auto declared = co_await on_thread<Result<void>>(*core->publisher, std::move(declare));
    Result<void> copied = declared;
    if (declared) {
      // mandatory: a copy that reaches no retry queue (one deleted by hand) is reported, and the
      // original goes back to its queue instead of being lost.
      copied = co_await publish_via(core, message(), core->config.retry_exchange, routing_key,
                                    core->config.publisher_confirms, true, extra, false,
                                    SteadyClock::time_point::max());
    }
    if (!copied) {
      // No retry copy: back to the queue at once rather than lost.
      logger().warn("delayed retry of {} failed ({}); requeued at once", message().id(),
                    copied.error().describe());
      co_return co_await settle_on(consumer_, generation_, tag_, Settle::requeue, "nack");
    }
    co_return co_await settle_on(consumer_, generation_, tag_, Settle::ack, "nack");
  }

 private:
  Result<void> already() const {
    return rabbit_error(errc::failed_precondition, "delivery was already settled");
  }
  // basic.ack has no reply, so the ack is handed to the consumer's thread without waiting for
  // it to be written: an ack lost with its connection only means a redelivery, which
  // at-least-once allows. A connection that went meanwhile is logged.
  asio::awaitable<Result<void>> acknowledge(std::string what) {
    if (settled_) co_return already();
    settled_ = true;
    Consumer* c = consumer_.get();
    {
      std::lock_guard lock(c->mutex);
      if (generation_ != c->generation || !c->connection->connected()) {
        co_return rabbit_error(errc::unavailable,
                               what +
                                   ": the connection it came on was lost (it will be "
                                   "delivered again)");
      }
      if (c->stream) c->unsettled_offsets.erase(sequence());
    }
    consumer_->connection->post([c, tag = tag_, generation = generation_,
                                 what = std::move(what)](amqp_connection_state_t conn) {
      if (conn == nullptr) return;  // closed or down: the broker redelivers it
      std::lock_guard lock(c->mutex);
      if (generation != c->generation) return;
      if (const int status = c->settle_tag(conn, tag, true); status != AMQP_STATUS_OK) {
        logger().warn("{} of a message from '{}' failed: {}", what, c->queue,
                      amqp_error_string2(status));
      }
    });
    co_return ok();
  }
  // A stream keeps every message for every reader, so a retry is not written back to it: the
  // message is handed out again by this subscription after the delay.
  asio::awaitable<Result<void>> nack_stream(milliseconds delay);
  // This delivery as a received message again, `extra_attempts` later.
  Received stream_copy(int extra_attempts) const;
  static void requeue_locally(const ConsumerPtr& consumer, Received again);

  ConsumerPtr consumer_;
  std::uint64_t tag_;
  std::uint64_t generation_;
  bool settled_ = false;
};

class RabbitSubscription final : public Subscription {
 public:
  explicit RabbitSubscription(ConsumerPtr consumer) : consumer_(std::move(consumer)) {}
  ~RabbitSubscription() override { close(); }

  asio::awaitable<Result<std::unique_ptr<Delivery>>> receive(
      std::optional<SteadyClock::time_point> deadline) override {
    Consumer& c = *consumer_;
    while (true) {
      auto received = co_await detail::take_next(&c.mutex, &c.inbox, &c.closed, c.signal.get(),
                                                 deadline, kBackendName);
      if (!received) co_return std::move(received).error();
      if (!received->incoming) {
        co_await dead_letter(std::move(*received));
        continue;
      }
      Incoming& incoming = *received->incoming;
      const std::string_view subject = incoming.message.subject();
      if (!c.stream && subject::has_wildcard(c.spec.subject) &&
          !subject::matches(c.spec.subject, subject)) {
        // `#` also matches no word where `>` wants one: not ours.
        (void)co_await settle_on(consumer_, received->generation, received->tag, Settle::ack,
                                 "ack");
        continue;
      }
      if (c.stream && c.spec.start.kind == StartPosition::Kind::time &&
          incoming.message.metadata().time &&
          *incoming.message.metadata().time < c.spec.start.time) {
        (void)co_await settle_on(consumer_, received->generation, received->tag, Settle::ack,
                                 "ack");
        continue;
      }
      co_return std::unique_ptr<Delivery>(new RabbitDelivery(
          std::move(incoming.message), incoming.attempt, c.stream ? received->offset : 0, consumer_,
          received->tag, received->generation));
    }
  }

  void close() override {
    {
      std::lock_guard lock(consumer_->mutex);
      if (consumer_->closed) return;
      consumer_->closed = true;
    }
    consumer_->signal->notify();
    // Intake stops now (basic.cancel) and what was received but not handed out goes back to
    // its queue; the connection stays while deliveries already handed out may be settled (the
    // bus's drain), and closes when the last of them and this subscription are gone.
    Consumer* c = consumer_.get();
    consumer_->connection->post([c](amqp_connection_state_t conn) {
      std::deque<Received> unread;
      {
        std::lock_guard lock(c->mutex);
        unread.swap(c->inbox);
      }
      if (conn == nullptr) return;
      if (!c->consumer_tag.empty()) {
        amqp_basic_cancel(conn, kTrafficChannel, bytes_of(c->consumer_tag));
        (void)amqp_get_rpc_reply(conn);
      }
      std::lock_guard lock(c->mutex);
      for (const auto& r : unread) {
        if (r.generation == c->generation && !c->stream) {
          c->settle_tag(conn, r.tag, false);
        }
      }
    });
  }

 private:
  // What the bus could not decode goes to the dead-letter stream with the reason, and is
  // acknowledged; the subscription goes on with the next message.
  asio::awaitable<void> dead_letter(Received received) {
    Consumer& c = *consumer_;
    const std::string subject = c.stream ? c.spec.subject : received.routing_key;
    Message dead = undecodable_dead_letter(subject, std::move(received.raw_body),
                                           received.incoming.error().describe());
    const std::string stream(dead.subject());
    const OutgoingMessage::Extra plain;
    auto moved = co_await publish_via(c.core, std::move(dead), "", stream, false, true, plain, true,
                                      SteadyClock::time_point::max());
    if (!moved) {
      logger().error("cannot dead-letter an undecodable message from {} ({}); it is requeued",
                     subject, moved.error().describe());
      (void)co_await settle_on(consumer_, received.generation, received.tag, Settle::requeue,
                               "nack");
      co_return;
    }
    logger().warn("an undecodable message from {} was dead-lettered to {}: {}", subject, stream,
                  received.incoming.error().describe());
    (void)co_await settle_on(consumer_, received.generation, received.tag, Settle::ack, "ack");
  }

  ConsumerPtr consumer_;
};

Received RabbitDelivery::stream_copy(int extra_attempts) const {
  Received again;
  Incoming incoming;
  incoming.message = message();
  incoming.attempt = attempt() + extra_attempts;
  again.incoming = std::move(incoming);
  again.tag = tag_;
  again.generation = generation_;
  again.offset = sequence();
  again.routing_key = consumer_->spec.subject;
  return again;
}

void RabbitDelivery::requeue_locally(const ConsumerPtr& consumer, Received again) {
  {
    std::lock_guard lock(consumer->mutex);
    // After a reconnection the broker delivers it again from its offset.
    if (consumer->closed || again.generation != consumer->generation) return;
    consumer->inbox.push_front(std::move(again));
  }
  consumer->signal->notify();
}

asio::awaitable<Result<void>> RabbitDelivery::nack_stream(milliseconds delay) {
  // The message stays unacknowledged (holding its prefetch slot, and its offset unsettled) until
  // it is handed out again.
  auto consumer = consumer_;
  auto timer = std::make_shared<asio::steady_timer>(co_await asio::this_coro::executor, delay);
  timer->async_wait([consumer, timer, again = stream_copy(1)](const std::error_code&) mutable {
    requeue_locally(consumer, std::move(again));
  });
  co_return ok();
}

// ---- Configuration ----------------------------------------------------------------------

Result<void> apply_url(RabbitMqConfig& config) {
  if (config.url.empty()) return ok();
  auto parts = detail::parse_url(config.url, "RabbitMqConfig.url");
  if (!parts) return std::move(parts).error();
  if (parts->scheme == "amqps") {
    config.tls.enabled = true;
    config.port = 5671;
  } else if (parts->scheme != "amqp") {
    return Error(errc::invalid_argument, "RabbitMqConfig.url: must start with amqp:// or amqps://");
  }
  config.host = parts->host;
  if (parts->port) config.port = *parts->port;
  if (!parts->user.empty() || parts->password) {
    config.user = parts->user;
    config.password = parts->password.value_or("");
  }
  if (parts->path) {
    config.vhost = parts->path->empty() ? "/" : detail::percent_decode(*parts->path);
  }
  return ok();
}

Result<void> validate(const RabbitMqConfig& c) {
  auto bad = [](std::string_view field, std::string why) {
    return Error(errc::invalid_argument, "RabbitMqConfig." + std::string(field) + " " + why);
  };
  if (c.host.empty()) return bad("host", "is empty");
  if (c.port <= 0 || c.port > 65535) return bad("port", "must be 1..65535");
  if (c.vhost.empty()) return bad("vhost", "is empty (the default vhost is \"/\")");
  if (c.heartbeat_seconds < 0) return bad("heartbeat_seconds", "must not be negative");
  if (c.connect_timeout.count() <= 0) return bad("connect_timeout", "must be positive");
  if (c.reconnect_wait.count() <= 0) return bad("reconnect_wait", "must be positive");
  if (c.outage_wait.count() < 0) return bad("outage_wait", "must not be negative");
  if (c.prefetch <= 0 || c.prefetch > 65535) return bad("prefetch", "must be 1..65535");
  for (const auto& [field, name] :
       {std::pair<std::string_view, const std::string*>{"events_exchange", &c.events_exchange},
        {"commands_exchange", &c.commands_exchange},
        {"dead_letter_exchange", &c.dead_letter_exchange},
        {"retry_exchange", &c.retry_exchange}}) {
    if (name->empty() || name->starts_with("amq.")) {
      return bad(field, "must be a name of ours (not empty, not amq.*)");
    }
  }
  if (c.tls.enabled && c.tls.cert_file.empty() != c.tls.key_file.empty()) {
    return bad(c.tls.cert_file.empty() ? "tls.cert_file" : "tls.key_file",
               "is needed with the other (a client certificate and its key)");
  }
  return ok();
}

// ---- The backend ------------------------------------------------------------------------

class RabbitMqBackend final : public Backend {
 public:
  explicit RabbitMqBackend(RabbitMqConfig config) : core_(std::make_shared<Core>()) {
    core_->config = std::move(config);
    caps_.patterns = {MessagingPattern::pub_sub, MessagingPattern::point_to_point,
                      MessagingPattern::request_response, MessagingPattern::streaming,
                      MessagingPattern::broadcast};
    caps_.delivery = DeliveryGuarantee::at_least_once;
    caps_.ordering = Ordering::none;
    caps_.persistent_replay = true;
    caps_.durable_groups = true;
    caps_.consumer_groups = true;
    caps_.native_request_reply = true;
    caps_.delayed_redelivery = true;
    caps_.native_dead_letter = true;
    caps_.inspectable_dead_letters = true;
    caps_.consumer_lag = true;  // a group's queue depth (queue.declare, passive)
    caps_.headers = true;
    caps_.wildcard_subscriptions = true;
    caps_.max_payload_bytes = 128u << 20;  // the broker's default max_message_size
  }
  ~RabbitMqBackend() override { shutdown(); }

  std::string_view name() const noexcept override { return kBackendName; }
  const Capabilities& capabilities() const noexcept override { return caps_; }

  asio::awaitable<Result<void>> connect() override {
    {
      std::lock_guard lock(mutex_);
      if (connected_) co_return ok();
      if (connecting_ || core_->closed) {
        co_return rabbit_error(errc::failed_precondition, connecting_
                                                              ? "connect() is already running"
                                                              : "the backend is closed");
      }
      connecting_ = true;
    }
    auto connected = co_await connect_once();
    std::lock_guard lock(mutex_);
    connecting_ = false;
    if (connected) connected_ = true;
    co_return connected;
  }

 private:
  asio::awaitable<Result<void>> connect_once() {
    RabbitMqConfig& config = core_->config;
    if (auto applied = apply_url(config); !applied) co_return applied;
    if (auto valid = validate(config); !valid) co_return valid;
    ConnectionSettings& settings = core_->settings;
    settings.host = config.host;
    settings.port = config.port;
    settings.vhost = config.vhost;
    settings.user = config.user;
    settings.password = config.password;
    settings.tls = config.tls;
    settings.heartbeat_seconds = config.heartbeat_seconds;
    settings.connect_timeout = config.connect_timeout;
    settings.reconnect_wait = config.reconnect_wait;
    Core* c = core_.get();
    AmqpConnection::Hooks hooks;
    hooks.on_connected = [c](amqp_connection_state_t conn) {
      return c->on_publisher_connected(conn);
    };
    hooks.on_frame = [c](amqp_connection_state_t conn, const amqp_frame_t& frame) {
      return c->on_publisher_frame(conn, frame);
    };
    hooks.on_lost = [c](const Error& error) { c->on_publisher_lost(error); };
    core_->publisher = std::make_unique<AmqpConnection>(settings, config.outage_wait, "publisher",
                                                        std::move(hooks));
    auto ready = co_await blocking_wait(*core_->publisher);
    if (!ready) {
      core_->publisher->close();
      co_return std::move(ready).error();
    }
    co_return ok();
  }

 public:
  asio::awaitable<Result<void>> publish(Message message, PublishOptions options) override {
    if (auto usable = check_usable(); !usable) co_return usable;
    const RabbitMqConfig& config = core_->config;
    const std::string subject(message.subject());
    const bool wait = options.guarantee != DeliveryGuarantee::at_most_once;
    if (options.kind == DestinationKind::stream) {
      const OutgoingMessage::Extra plain;
      co_return co_await publish_via(core_, std::move(message), "", subject, false, true, plain,
                                     true, options.deadline);
    }
    if (options.pattern == MessagingPattern::request_response &&
        subject.starts_with(kReplyToQueue)) {
      // A reply to a query: straight to the asker's direct reply-to.
      const OutgoingMessage::Extra plain;
      co_return co_await publish_via(core_, std::move(message), "", subject, false, false, plain,
                                     false, options.deadline);
    }
    const bool to_service = options.pattern == MessagingPattern::point_to_point ||
                            options.pattern == MessagingPattern::request_response;
    const std::string& exchange = to_service ? config.commands_exchange : config.events_exchange;
    // mandatory: a command nobody's queue takes comes back, and the sender hears of it.
    const bool mandatory = options.require_receiver && config.publisher_confirms;
    const OutgoingMessage::Extra plain;
    co_return co_await publish_via(core_, std::move(message), exchange, subject, mandatory,
                                   wait || mandatory, plain, false, options.deadline);
  }

  asio::awaitable<Result<std::shared_ptr<Subscription>>> subscribe(SubscriptionSpec spec) override {
    if (auto usable = check_usable(); !usable) co_return std::move(usable).error();
    // RabbitMQ 3.10 sometimes refuses, or drops the connection of, the first consumer of a
    // stream queue declared a moment before (its replica is still starting): such an attempt
    // is made again, for a few seconds, on a new connection.
    ConsumerPtr consumer;
    for (int attempt = 1;; ++attempt) {
      consumer = open_consumer(spec);
      auto ready = co_await blocking_wait(*consumer->connection);
      if (ready) break;
      consumer->connection->close();
      const bool starting_stream =
          consumer->stream &&
          (ready.error().is(errc::internal) || ready.error().is(errc::failed_precondition));
      if (!starting_stream || attempt >= 20) {
        co_return std::move(ready).error().with_context("subscribe " + spec.subject);
      }
      co_await detail::sleep_for(milliseconds(100));
    }
    std::shared_ptr<Subscription> subscription = std::make_shared<RabbitSubscription>(consumer);
    {
      std::lock_guard lock(mutex_);
      if (!core_->closed) {
        std::erase_if(subscriptions_, [](const auto& weak) { return weak.expired(); });
        subscriptions_.push_back(subscription);
        co_return subscription;
      }
    }
    subscription->close();  // the backend closed meanwhile
    co_return rabbit_error(errc::failed_precondition, "the backend is closed");
  }

  asio::awaitable<Result<Message>> request(Message message, milliseconds timeout) override {
    if (auto usable = check_usable(); !usable) co_return std::move(usable).error();
    const auto deadline = SteadyClock::now() + timeout;
    const std::string subject(message.subject());
    const std::string token = make_uuid_v7();
    auto waiter = std::make_shared<RequestWaiter>();
    message.mutable_metadata().headers[std::string(headers::kReplyToken)] = token;
    {
      std::lock_guard lock(core_->requests_mutex);
      core_->requests.add(token, message, waiter);
    }
    OutgoingMessage::Extra extra;
    extra.reply_to = std::string(kReplyToQueue);
    extra.persistent = false;
    // A query nobody took in time is of no use to anyone: it expires with its deadline.
    extra.expiration_ms = std::to_string(std::max<long long>(timeout.count(), 1));
    auto sent =
        co_await publish_via(core_, std::move(message), core_->config.commands_exchange, subject,
                             core_->config.publisher_confirms, true, extra, false, deadline);
    while (sent) {
      {
        std::lock_guard lock(waiter->mutex);
        if (waiter->reply) co_return std::move(*waiter->reply);
      }
      if (!co_await waiter->signal->wait(deadline)) break;
    }
    {
      std::lock_guard lock(core_->requests_mutex);
      core_->requests.erase(token);
    }
    if (!sent) {
      if (sent.error().is(errc::not_found)) {
        co_return rabbit_error(errc::not_found, "no responder is consuming '" + subject + "'");
      }
      co_return std::move(sent).error();
    }
    std::lock_guard lock(waiter->mutex);
    if (waiter->reply) co_return std::move(*waiter->reply);
    co_return rabbit_error(errc::deadline_exceeded, "no reply on '" + subject + "' within " +
                                                        std::to_string(timeout.count()) + " ms");
  }

  // Dead letters are in a stream queue, which can neither delete one message nor say where it
  // ends: read to an end marker and settled by a settlement record (detail/dead_letter_log.hpp).
  asio::awaitable<Result<std::vector<Message>>> read_dead_letters(
      std::string dead_letter_subject, std::size_t limit,
      SteadyClock::time_point deadline) override {
    co_return co_await detail::read_dead_letter_log(*this, std::move(dead_letter_subject), limit,
                                                    deadline);
  }
  asio::awaitable<Result<std::size_t>> remove_dead_letters(
      std::string dead_letter_subject, std::set<std::string> ids,
      SteadyClock::time_point deadline) override {
    co_return co_await detail::settle_dead_letters_in_log(*this, std::move(dead_letter_subject),
                                                          std::move(ids), deadline);
  }

  // A group is a queue, and AMQP tells its ready messages only (queue.declare-ok's
  // message_count): what consumers hold unacknowledged, and messages waiting in a retry queue,
  // are not counted. Streams keep no group positions the broker could report.
  asio::awaitable<Result<std::uint64_t>> consumer_lag(SubscriptionSpec spec,
                                                      SteadyClock::time_point deadline) override {
    if (spec.kind == DestinationKind::stream) {
      co_return rabbit_error(errc::unimplemented,
                             "a stream's consumer groups keep no position the broker reports");
    }
    if (!core_ || !core_->publisher) {
      co_return rabbit_error(errc::failed_precondition, "the backend is not connected");
    }
    const std::string queue = spec.pattern == MessagingPattern::point_to_point
                                  ? queue_name_for(spec.subject)
                                  : queue_name_for(spec.group + "@" + spec.subject);
    auto inspect = [queue](amqp_connection_state_t conn, Complete<Result<std::uint64_t>> complete) {
      if (conn == nullptr) {
        complete(connection_gone("looking up queue '" + queue + "'"));
        return;
      }
      auto* declared =
          amqp_queue_declare(conn, kTopologyChannel, bytes_of(queue), 1, 0, 0, 0, amqp_empty_table);
      const auto reply = amqp_get_rpc_reply(conn);
      if (reply.reply_type != AMQP_RESPONSE_NORMAL || declared == nullptr) {
        complete(topology_failed(conn, reply, "looking up queue '" + queue + "'"));
        return;
      }
      complete(std::uint64_t{declared->message_count});
    };
    std::optional<Result<std::uint64_t>> late = rabbit_error(
        errc::deadline_exceeded, "looking up queue '" + queue + "': no reply before the deadline");
    co_return co_await on_thread<Result<std::uint64_t>>(*core_->publisher, std::move(inspect),
                                                        deadline, std::move(late));
  }

  asio::awaitable<Result<void>> close(SteadyClock::time_point) override {
    shutdown();
    co_return ok();
  }

 private:
  // Waits for a connection's first attempt without blocking the caller's executor.
  static asio::awaitable<Result<void>> blocking_wait(AmqpConnection& connection) {
    // The task runs on the connection's thread once connected, or with null once the first
    // attempt failed (or the connection closed): its completion ends the first attempt either
    // way, and the outcome is then settled (read without blocking).
    auto start = [](amqp_connection_state_t, Complete<Result<void>> complete) { complete(ok()); };
    (void)co_await on_thread<Result<void>>(connection, std::move(start));
    co_return connection.first_outcome().value_or(
        rabbit_error(errc::cancelled, "the connection was closed"));
  }

  ConsumerPtr open_consumer(const SubscriptionSpec& spec) {
    auto consumer = std::make_shared<Consumer>();
    consumer->core = core_;
    consumer->stream = spec.kind == DestinationKind::stream;
    consumer->spec = spec;
    Consumer* raw = consumer.get();
    AmqpConnection::Hooks hooks;
    hooks.on_connected = [raw](amqp_connection_state_t conn) { return raw->on_connected(conn); };
    hooks.on_frame = [raw](amqp_connection_state_t conn, const amqp_frame_t& frame) {
      return raw->on_frame(conn, frame);
    };
    // Acknowledgements marked but not yet flushed go out before the connection does: without
    // this, a drain's last acks were lost and their messages delivered again.
    hooks.before_close = [raw](amqp_connection_state_t conn) { raw->flush_acks(conn); };
    consumer->connection = std::make_unique<AmqpConnection>(
        core_->settings, core_->config.outage_wait, "consumer", std::move(hooks));
    return consumer;
  }

  Result<void> check_usable() {
    std::lock_guard lock(mutex_);
    if (core_->closed) return rabbit_error(errc::failed_precondition, "the backend is closed");
    if (!connected_) return rabbit_error(errc::failed_precondition, "the backend is not connected");
    return ok();
  }

  void shutdown() {
    std::vector<std::weak_ptr<Subscription>> subscriptions;
    {
      std::lock_guard lock(mutex_);
      if (core_->closed.exchange(true)) return;
      subscriptions = std::move(subscriptions_);
    }
    for (auto& weak : subscriptions) {
      if (auto subscription = weak.lock()) subscription->close();
    }
    if (core_->publisher) core_->publisher->close();
  }

  CorePtr core_;
  Capabilities caps_;
  std::mutex mutex_;
  bool connected_ = false;
  bool connecting_ = false;
  std::vector<std::weak_ptr<Subscription>> subscriptions_;
};

}  // namespace

std::shared_ptr<Backend> make_backend(RabbitMqConfig config) {
  return std::make_shared<RabbitMqBackend>(std::move(config));
}

}  // namespace marty::messaging::rabbitmq
