// The Redis backend against raw hiredis on the same server, in the same run, 128-byte JSON
// messages, median of alternating runs, with the client CPU per message (both sides in this
// process, every thread).
//
// What the bus sends (redis-cli MONITOR while it runs, and redis_backend.cpp / redis_wire.cpp):
//   pub/sub (events at most once): PUBLISH marty:events.<type> <CloudEvents structured JSON:
//     specversion, id (fresh UUIDv7), source, type, time (fresh), datacontenttype, data>, up to
//     the window in flight, each publish awaiting its reply;
//   bus streams: XADD marty:<stream> MAXLEN ~ 1000000 * ce-specversion 1.0 ce-id <id> ce-source
//     <source> ce-type <type> ce-time <time> content-type application/json data <payload>; read
//     by XREADGROUP ... COUNT <free slots of 256> BLOCK 1000, acknowledged by one XACK per batch
//     (not awaited);
//   queries: EVALSHA of a script (checks that a responder is live with XINFO, then XADD MAXLEN ~
//     to marty:queries.<service>.<type>) with the same fields plus ce-replyto (the asker's reply
//     channel) and ce-martyheaders (its reply token); the responder reads it with XREADGROUP,
//     PUBLISHes a structured reply on the reply channel and XACKs it.
//
// The baselines, each the same work with hiredis alone (synchronous API, pipelined):
//   pub/sub, same bytes: PUBLISH of the same structured JSON, made per message with a fresh id
//     and time, at most kWindow unanswered (each reply frees a slot); the subscriber reads every
//     attribute of each event, as decoding one does. The bus publishes a prepared message.
//   pub/sub, bare: the 128-byte payload alone (what the envelope costs).
//   Streams, same bytes: XADD with the same MAXLEN ~ and field pairs (fresh id and time), at
//     most kWindow unanswered; a consumer of a group reads with XREADGROUP COUNT 256 BLOCK 1000,
//     reads every field, and acknowledges each batch with one XACK pipelined with its next read.
//   Streams, bare: one field holding the payload, no MAXLEN.
//   query, same commands: the same script (EVALSHA, identical text) with the same fields, a
//     responder blocked in XREADGROUP that parses the JSON request, PUBLISHes the same
//     structured reply and XACKs (pipelined with its next read), and an asker that parses the
//     reply from its subscribed channel. The plain-XADD row skips the liveness script.
// usage: marty_bench_redis [--messages N] [--stream-messages N] [--queries N] [--runs N]
//        (MARTY_REDIS_URL: the server, redis://[user:password@]host[:port][/database])
#include <hiredis/hiredis.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "../src/backends/redis/redis_scripts.hpp"
#include "bench_bus.hpp"
#include "bench_support.hpp"
#include "bench_wire.hpp"
#include "marty/messaging.hpp"
#include "marty/messaging/codec.hpp"
#include "marty/messaging/redis_backend.hpp"

using namespace marty::messaging::bench;
namespace mm = marty::messaging;
using namespace std::chrono_literals;

namespace {

struct Options {
  std::size_t messages = 200'000;
  std::size_t stream_messages = 200'000;
  std::size_t queries = 5'000;
  int runs = 3;
};

/// Commands awaiting their replies at once, on both sides (the bus: publishes in flight).
constexpr std::size_t kWindow = 256;
/// What the bus's stream readers hold and read at once (RedisConfig::prefetch), and how long
/// one of its blocking reads waits (RedisConfig::block_timeout).
constexpr std::size_t kPrefetch = 256;
constexpr const char* kBlockMs = "1000";
/// RedisConfig::max_stream_length: every append trims with MAXLEN ~ this.
constexpr const char* kMaxLen = "1000000";

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

// ---- what the bus writes, made without it ----

/// `message` with the metadata the bus gives an event of `type` it publishes.
mm::Message stamped(mm::Message message, const std::string& type) {
  auto& metadata = message.mutable_metadata();
  metadata.message_type = type;
  metadata.source = bus_source();
  metadata.message_id = mm::make_uuid_v7();
  metadata.time = mm::Clock::now();
  return message;
}

/// Text with fixed-size slots rewritten per message (ids and times keep their length): made
/// once from what the bus writes for one message, then patched in place.
class Template {
 public:
  /// `slots`: values that occur once in `text`, in the order set() numbers them.
  Template(std::string text, const std::vector<std::string>& slots) : text_(std::move(text)) {
    for (const auto& slot : slots) {
      const auto at = text_.find(slot);
      check(at != std::string::npos, "a template slot is in its text");
      at_.push_back({at, slot.size()});
    }
  }
  void set(std::size_t slot, std::string_view value) {
    check(value.size() == at_[slot].second, "a slot value keeps its length");
    std::memcpy(text_.data() + at_[slot].first, value.data(), value.size());
  }
  const std::string& text() const { return text_; }

 private:
  std::string text_;
  std::vector<std::pair<std::size_t, std::size_t>> at_;
};

/// The structured CloudEvents JSON the bus publishes on a channel for an event of `type`, with
/// a fresh id and time per next().
class StructuredEvent {
 public:
  explicit StructuredEvent(const std::string& type) : text_(make(type)) {}
  const std::string& next() {
    text_.set(0, mm::make_uuid_v7());
    text_.set(1, time_.now());
    return text_.text();
  }

 private:
  static Template make(const std::string& type) {
    const mm::Message event = stamped(prototype(), type);
    return Template(mm::codec::encode_structured(event),
                    {std::string(event.id()), mm::format_rfc3339(*event.metadata().time)});
  }
  Template text_;
  TimeText time_;
};

/// The field pairs the bus appends to a Stream for `message` (binary mode: its headers, then
/// `data`), with ce-id and ce-time fresh per next().
class EntryFields {
 public:
  explicit EntryFields(const mm::Message& message) {
    for (auto& [name, value] : mm::codec::encode_binary(message).headers) {
      fields_.push_back(std::move(name));
      fields_.push_back(std::move(value));
    }
    fields_.emplace_back("data");
    fields_.emplace_back(message.bytes());
  }
  std::vector<std::string>& next() {
    for (std::size_t i = 0; i < fields_.size(); i += 2) {
      if (fields_[i] == "ce-id") {
        fields_[i + 1] = mm::make_uuid_v7();
      } else if (fields_[i] == "ce-time") {
        fields_[i + 1] = time_.now();
      }
    }
    return fields_;
  }
  std::vector<std::string>& fields() { return fields_; }

 private:
  std::vector<std::string> fields_;
  TimeText time_;
};

/// Reads the attributes of a structured event as a reader of one must, without a JSON library
/// (the fastest way for the flat objects the bus writes): each member's name and value up to
/// `data`. Returns the members read and the value of `wanted`, if any.
std::pair<std::size_t, std::string_view> read_attributes(std::string_view text,
                                                         std::string_view wanted = {}) {
  std::size_t members = 0;
  std::string_view found;
  auto string_end = [&](std::size_t from) {  // the closing quote of the string opened before
    std::size_t at = text.find('"', from);
    while (at != std::string_view::npos && text[at - 1] == '\\') at = text.find('"', at + 1);
    return at;
  };
  std::size_t at = 1;  // past '{'
  while (at < text.size() && text[at] == '"') {
    const std::size_t name_end = string_end(at + 1);
    check(name_end != std::string_view::npos, "a structured event");
    const std::string_view name = text.substr(at + 1, name_end - at - 1);
    if (name == "data") break;
    std::size_t value = name_end + 2;  // past ':'
    std::size_t value_end = 0;
    if (text[value] == '"') {
      value_end = string_end(value + 1);
      if (name == wanted) found = text.substr(value + 1, value_end - value - 1);
      ++value_end;
    } else {
      value_end = text.find(',', value);
    }
    ++members;
    at = value_end + 1;  // past ','
  }
  return {members, found};
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

/// Every reply must be free of errors.
Reply checked_reply(Reply reply, const char* what) {
  if (reply && reply->type == REDIS_REPLY_ERROR) {
    std::fprintf(stderr, "benchmark failed: %s: %.*s\n", what, static_cast<int>(reply->len),
                 reply->str);
    std::exit(1);
  }
  return reply;
}

/// A reply already read from the connection, without reading more; null when there is none.
Reply buffered_reply(redisContext* context, const char* what) {
  void* raw = nullptr;
  if (redisGetReplyFromReader(context, &raw) != REDIS_OK) check_context(context, what);
  return checked_reply(Reply(static_cast<redisReply*>(raw)), what);
}

/// A command's arguments, kept between commands so that making one allocates nothing.
class Args {
 public:
  Args& clear() {
    argv_.clear();
    lengths_.clear();
    return *this;
  }
  Args& add(std::string_view arg) {
    argv_.push_back(arg.data());
    lengths_.push_back(arg.size());
    return *this;
  }
  void append_to(redisContext* context) const {
    check(
        redisAppendCommandArgv(context, static_cast<int>(argv_.size()),
                               const_cast<const char**>(argv_.data()), lengths_.data()) == REDIS_OK,
        "append a command");
  }

 private:
  std::vector<const char*> argv_;
  std::vector<std::size_t> lengths_;
};

/// Sends `count` commands (append_one(i) appends the i-th) with at most kWindow unanswered:
/// appends until the window is full, waits for a reply (which first writes what was appended),
/// then takes every reply already read without waiting; each reply frees a slot.
template <class AppendOne, class CheckReply>
void pipelined(redisContext* context, std::size_t count, AppendOne append_one,
               CheckReply check_reply, const char* what) {
  std::size_t sent = 0, answered = 0;
  while (answered < count) {
    while (sent < count && sent - answered < kWindow) append_one(sent++);
    check_reply(*next_reply(context, what));
    ++answered;
    while (answered < sent) {
      Reply more = buffered_reply(context, what);
      if (!more) break;
      check_reply(*more);
      ++answered;
    }
  }
}

enum class Wire { bare, same_bytes };

/// From the first PUBLISH until the subscriber has read the last message, kWindow in flight.
Rate raw_pubsub(const Endpoint& endpoint, std::size_t count, Wire wire) {
  Context subscriber = raw_connect(endpoint);
  Context publisher = raw_connect(endpoint);
  const std::string type = unique("raw_pubsub");
  const std::string channel = "marty:events." + type;
  StructuredEvent event(type);
  const std::string_view bare = prototype().bytes();
  // SUBSCRIBE's confirmation: from here on, the server delivers every PUBLISH to it.
  command(subscriber.get(), {"SUBSCRIBE", channel}, "subscribe");
  Steady::time_point last{};
  std::thread reader([&] {
    for (std::size_t i = 0; i < count; ++i) {
      Reply message = next_reply(subscriber.get(), "subscriber read");
      check(message->type == REDIS_REPLY_ARRAY && message->elements == 3, "a pub/sub message");
      const std::string_view text(message->element[2]->str, message->element[2]->len);
      if (wire == Wire::same_bytes) {
        check(read_attributes(text).first >= 6, "a CloudEvent with its attributes");
      } else {
        check(text.size() == bare.size(), "a message of the benchmark's size");
      }
    }
    last = Steady::now();
  });
  Args publish;
  RateMeter meter(count);
  pipelined(
      publisher.get(), count,
      [&](std::size_t) {
        publish.clear().add("PUBLISH").add(channel);
        publish.add(wire == Wire::same_bytes ? std::string_view(event.next()) : bare);
        publish.append_to(publisher.get());
      },
      [](const redisReply& receivers) {
        check(receivers.type == REDIS_REPLY_INTEGER && receivers.integer == 1,
              "each message reaches the subscriber");
      },
      "publish");
  reader.join();
  return meter.stop(last);
}

/// From the first XADD until the consumer has read and acknowledged the last entry; kWindow
/// appends in flight; the consumer pipelines each batch's XACK with its next XREADGROUP.
Rate raw_streams(const Endpoint& endpoint, std::size_t count, Wire wire) {
  Context producer = raw_connect(endpoint);
  Context consumer = raw_connect(endpoint);
  const std::string stream = unique("raw_stream");
  const std::string key = "marty:" + stream;
  command(producer.get(), {"XGROUP", "CREATE", key, "g", "$", "MKSTREAM"}, "create group");
  const std::string batch = std::to_string(kPrefetch);
  const Command read_batch(
      {"XREADGROUP", "GROUP", "g", "c", "COUNT", batch, "BLOCK", kBlockMs, "STREAMS", key, ">"});
  Steady::time_point last{};
  std::thread reader([&] {
    append(consumer.get(), read_batch);
    std::size_t acked = 0;
    auto progress = Steady::now();
    Args ack;
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
      ack.clear().add("XACK").add(key).add("g");
      for (std::size_t i = 0; i < entries->elements; ++i) {
        const redisReply* entry = entries->element[i];
        const redisReply* fields = entry->element[1];
        // Every field read, as decoding an entry does.
        std::size_t data = 0;
        for (std::size_t f = 0; f + 1 < fields->elements; f += 2) {
          const std::string_view name(fields->element[f]->str, fields->element[f]->len);
          if (name == "data" || name == "payload") data = fields->element[f + 1]->len;
        }
        check(data == kPayloadBytes, "an entry of the benchmark's size");
        ack.add(std::string_view(entry->element[0]->str, entry->element[0]->len));
      }
      ack.append_to(consumer.get());
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
  EntryFields fields(stamped(prototype(), stream));
  const std::string_view bare = prototype().bytes();
  Args add;
  RateMeter meter(count);
  pipelined(
      producer.get(), count,
      [&](std::size_t) {
        add.clear().add("XADD").add(key);
        if (wire == Wire::bare) {
          add.add("*").add("payload").add(bare);
        } else {
          add.add("MAXLEN").add("~").add(kMaxLen).add("*");
          for (const auto& field : fields.next()) add.add(field);
        }
        add.append_to(producer.get());
      },
      [](const redisReply& id) { check(id.type == REDIS_REPLY_STRING, "an entry ID"); }, "xadd");
  reader.join();
  const Rate rate = meter.stop(last);
  command(producer.get(), {"DEL", key}, "delete the stream");
  return rate;
}

// The bus's own query script (kAppend + kSendQueryScript): a query is appended only when a
// responder of its Stream looks live. check_same_query_script() makes sure that the bus runs
// the very same text.
const std::string& query_script() {
  static const std::string text = mm::redis::scripts::query_script();
  return text;
}
/// The liveness bound the bus passes to its query script: 3 × block_timeout + 1 s, in ms.
constexpr const char* kLivenessMs = "4000";

std::string sha_of_query_script(redisContext* context) {
  Reply sha = command(context, {"SCRIPT", "LOAD", query_script()}, "script load");
  return std::string(sha->str, sha->len);
}

/// Query round trips, one at a time: the asker appends the query to the service's Stream (with
/// the bus's script, or a plain XADD) and waits for the reply on its channel; the responder
/// reads the Stream, parses the request, publishes the reply and acknowledges the entry.
Latency raw_queries(const Endpoint& endpoint, std::size_t count, bool liveness_script) {
  Context asker = raw_connect(endpoint);
  Context replies = raw_connect(endpoint);
  Context responder = raw_connect(endpoint);
  const std::string service = unique("raw_service");
  const std::string key = "marty:queries." + service + ".ping";
  const std::string inbox = "_replies." + mm::make_uuid_v7() + ".redis";
  command(asker.get(), {"XGROUP", "CREATE", key, service, "$", "MKSTREAM"}, "create group");
  command(asker.get(), {"XGROUP", "CREATECONSUMER", key, service, "c"}, "join group");
  command(replies.get(), {"SUBSCRIBE", "marty:" + inbox}, "subscribe");
  const std::string sha = liveness_script ? sha_of_query_script(asker.get()) : std::string();

  std::atomic<bool> stop{false};
  std::thread answer([&] {
    const std::string batch = std::to_string(kPrefetch);
    const Command read({"XREADGROUP", "GROUP", service, "c", "COUNT", batch, "BLOCK", kBlockMs,
                        "STREAMS", key, ">"});
    TimeText time;
    Args publish, ack;
    append(responder.get(), read);
    while (true) {
      Reply got = next_reply(responder.get(), "responder read");
      if (got->type == REDIS_REPLY_NIL) {
        if (stop) return;
        append(responder.get(), read);
        continue;
      }
      const redisReply* entries = got->element[0]->element[1];
      // Per entry: the reply's channel and text.
      std::vector<std::pair<std::string, std::string>> out;
      out.reserve(entries->elements);
      ack.clear().add("XACK").add(key).add(service);
      for (std::size_t i = 0; i < entries->elements; ++i) {
        const redisReply* entry = entries->element[i];
        const redisReply* fields = entry->element[1];
        std::string_view id, reply_to, headers, data;
        for (std::size_t f = 0; f + 1 < fields->elements; f += 2) {
          const std::string_view name(fields->element[f]->str, fields->element[f]->len);
          const std::string_view value(fields->element[f + 1]->str, fields->element[f + 1]->len);
          if (name == "ce-id") id = value;
          if (name == "ce-replyto") reply_to = value;
          if (name == "ce-martyheaders") headers = value;
          if (name == "data") data = value;
        }
        const auto token_at = headers.find("marty-reply-token\":\"");
        check(!reply_to.empty() && token_at != std::string_view::npos, "a query with its inbox");
        const std::string_view token = headers.substr(token_at + 20, 36);
        const mm::Json request = mm::Json::parse(data);
        const std::string body = mm::Json{{"n", request["n"]}}.dump();
        // The reply as the bus writes it: structured JSON, its attributes in the bus's order.
        std::string text;
        text.reserve(400);
        text.append(R"({"specversion":"1.0","id":")").append(mm::make_uuid_v7());
        text.append(R"(","source":")").append(bus_source());
        text.append(R"(","type":"ping","time":")").append(time.now());
        text.append(R"(","datacontenttype":"application/json","correlationid":")").append(id);
        text.append(R"(","causationid":")").append(id);
        text.append(R"(","martyheaders":"{\"marty-reply-status\":\"ok\",\"marty-reply-token\":\")");
        text.append(token).append(R"(\"}","data":)").append(body).append("}");
        out.emplace_back("marty:" + std::string(reply_to), std::move(text));
        ack.add(std::string_view(entry->element[0]->str, entry->element[0]->len));
      }
      // Replies, the acknowledgement and the next read go out in one write.
      for (const auto& [channel, text] : out) {
        publish.clear().add("PUBLISH").add(channel).add(text).append_to(responder.get());
      }
      ack.append_to(responder.get());
      append(responder.get(), read);
      for (std::size_t i = 0; i < out.size(); ++i) next_reply(responder.get(), "publish reply");
      next_reply(responder.get(), "xack");
    }
  });

  EntryFields fields([&] {
    mm::Message query = stamped(prototype(), "ping");
    query.mutable_metadata().correlation_id = query.id();
    query.mutable_metadata().reply_to = inbox;
    query.mutable_metadata().headers["marty-reply-token"] = mm::make_uuid_v7();
    return query;
  }());
  const std::string padding(kPayloadBytes - 16, 'x');
  Args add;
  std::vector<double> micros;
  for (std::size_t i = 0; i < count + count / 10; ++i) {
    const auto start = Steady::now();
    const std::string body = mm::Json{{"n", i}, {"p", padding}}.dump();
    const std::string token = mm::make_uuid_v7();
    std::vector<std::string>& entry = fields.next();
    std::string id;
    for (std::size_t f = 0; f + 1 < entry.size(); f += 2) {
      if (entry[f] == "ce-id") id = entry[f + 1];
      if (entry[f] == "ce-correlationid") entry[f + 1] = id;  // the bus sets it to the id
      if (entry[f] == "ce-martyheaders") entry[f + 1] = R"({"marty-reply-token":")" + token + "\"}";
      if (entry[f] == "data") entry[f + 1] = body;
    }
    add.clear();
    if (liveness_script) {
      add.add("EVALSHA").add(sha).add("1").add(key).add(kMaxLen).add(kLivenessMs);
    } else {
      add.add("XADD").add(key).add("MAXLEN").add("~").add(kMaxLen).add("*");
    }
    for (const auto& field : entry) add.add(field);
    add.append_to(asker.get());
    Reply appended = next_reply(asker.get(), "send the query");
    check(appended->type == REDIS_REPLY_STRING, "a live responder took the query");
    Reply message = next_reply(replies.get(), "read the reply");
    check(message->type == REDIS_REPLY_ARRAY && message->elements == 3, "a reply message");
    const std::string_view text(message->element[2]->str, message->element[2]->len);
    const auto [members, headers] = read_attributes(text, "martyheaders");
    check(members >= 6 && headers.find(token) != std::string_view::npos, "the query's reply");
    const auto data = text.find("\"data\":");
    const mm::Json reply = mm::Json::parse(text.substr(data + 7, text.size() - data - 8));
    check(reply["n"] == i, "the reply to this query");
    if (i >= count / 10) micros.push_back(seconds(Steady::now() - start) * 1e6);
  }
  stop = true;
  answer.join();
  command(asker.get(), {"DEL", key}, "delete the stream");
  return percentiles(std::move(micros));
}

// ---- the bus ----

std::unique_ptr<mm::BlockingEventBus> bus_on_redis(const Endpoint& endpoint, bool at_most_once) {
  mm::redis::RedisConfig config;
  config.url = endpoint.url;
  return started_bus(mm::MessageBackendType::redis, mm::redis::make_backend(config), at_most_once);
}

/// Events at most once (pub/sub), kWindow publishes in flight: from the first publish until the
/// subscriber's handler has seen the last one.
Rate bus_pubsub(const Endpoint& endpoint, std::size_t count) {
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
  auto finished = done.get_future();
  RateMeter meter(count);
  publish_concurrently(*producer, count, kWindow, [&]() -> asio::awaitable<mm::Result<void>> {
    mm::Message message = prototype();
    co_return co_await producer->bus().publish_event(type, std::move(message));
  });
  check(finished.wait_for(120s) == std::future_status::ready, "the subscriber received everything");
  return meter.stop(finished.get());
}

/// A bus stream: appended by stream_events (kWindow in flight), read by process_stream in
/// batches (every entry acknowledged), from the first append until the last entry was processed.
Rate bus_streams(const Endpoint& endpoint, std::size_t count) {
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
  options.batch_size = kPrefetch;
  options.max_wait = 2ms;
  check(consumer->process_stream(stream, processor, "bench", options).has_value(),
        "process_stream");
  auto finished = done.get_future();
  RateMeter meter(count);
  publish_concurrently(*producer, count, kWindow, [&]() -> asio::awaitable<mm::Result<void>> {
    std::vector<mm::Message> one{prototype()};
    co_return co_await producer->bus().stream_events(stream, std::move(one));
  });
  check(finished.wait_for(120s) == std::future_status::ready, "the consumer processed everything");
  const Rate rate = meter.stop(finished.get());
  consumer.reset();  // stopped before its stream goes
  Context cleanup = raw_connect(endpoint);
  command(cleanup.get(), {"DEL", "marty:" + stream}, "delete the stream");
  return rate;
}

/// Query round trips through the bus, one at a time, answered by another bus.
Latency bus_queries(const Endpoint& endpoint, std::size_t count) {
  auto responder = bus_on_redis(endpoint, false);
  auto asker = bus_on_redis(endpoint, false);
  const std::string service = unique("bus_service");
  auto echo = mm::sync_query_handler([](const mm::Message& q) -> mm::Result<mm::Json> {
    return mm::Json{{"n", q.json()["n"]}};
  });
  check(responder->handle_queries({"ping"}, echo, service).has_value(), "handle_queries");
  std::vector<double> micros;
  auto asked = asker->run(ask_round_trips(&asker->bus(), service, count, &micros));
  if (!asked) std::fprintf(stderr, "%s\n", asked.error().describe().c_str());
  check(asked.has_value(), "query");
  asker.reset();
  responder.reset();  // stopped before their Stream goes
  Context cleanup = raw_connect(endpoint);
  command(cleanup.get(), {"DEL", "marty:queries." + service + ".ping"}, "delete the stream");
  return percentiles(std::move(micros));
}

/// Checks that the baseline's query script is the very one the bus runs: with the server's
/// script cache emptied, a bus that has sent queries has cached its scripts, and loading the
/// baseline's adds none when its text is one of them. (The bus loads its scripts again when
/// the server has lost them.)
void check_same_query_script(const Endpoint& endpoint) {
  Context probe = raw_connect(endpoint);
  command(probe.get(), {"SCRIPT", "FLUSH"}, "script flush");
  (void)bus_queries(endpoint, 10);
  auto cached = [&] {
    Reply info = command(probe.get(), {"INFO", "memory"}, "info memory");
    const std::string_view text(info->str, info->len);
    const std::string_view field = "number_of_cached_scripts:";
    const auto at = text.find(field);
    check(at != std::string_view::npos, "INFO reports the cached scripts");
    return std::atol(std::string(text.substr(at + field.size(), 12)).c_str());
  };
  const long before = cached();
  (void)sha_of_query_script(probe.get());
  check(cached() == before, "the baseline's query script is the bus's (the same text)");
}

// ---- the report ----

}  // namespace

int main(int argc, char** argv) {
  Options options;
  std::size_t only_bus_pubsub = 0;   // for profiling: the bus's pub/sub alone
  std::size_t only_bus_streams = 0;  // for profiling: the bus's Streams alone
  const bool parsed =
      parse_flags(argc, argv,
                  {{"--messages", [&](std::uint64_t v) { options.messages = v; }},
                   {"--stream-messages", [&](std::uint64_t v) { options.stream_messages = v; }},
                   {"--queries", [&](std::uint64_t v) { options.queries = v; }},
                   {"--runs", [&](std::uint64_t v) { options.runs = static_cast<int>(v); }},
                   {"--only-bus-pubsub", [&](std::uint64_t v) { only_bus_pubsub = v; }},
                   {"--only-bus-streams", [&](std::uint64_t v) { only_bus_streams = v; }}},
                  "marty_bench_redis [--messages N] [--stream-messages N] [--queries N] "
                  "[--runs N]");
  if (!parsed) return 2;
  check(options.messages > 0 && options.stream_messages > 0 && options.queries > 0 &&
            options.runs > 0,
        "counts above zero");
  const Endpoint endpoint = server_endpoint();
  if (only_bus_pubsub != 0 || only_bus_streams != 0) {
    if (only_bus_pubsub != 0) {
      std::printf("bus pub/sub: %.0f msg/s\n", bus_pubsub(endpoint, only_bus_pubsub).per_second);
    }
    if (only_bus_streams != 0) {
      std::printf("bus Streams: %.0f msg/s\n", bus_streams(endpoint, only_bus_streams).per_second);
    }
    return 0;
  }
  std::printf(
      "Redis benchmark against %s: %zu-byte messages, median of %d alternating runs; CPU: client "
      "CPU microseconds per message (every thread of this process)\n\n",
      endpoint.address().c_str(), kPayloadBytes, options.runs);
  RateRow pubsub_same{"pub/sub, same bytes (CloudEvents JSON)", {}, {}};
  RateRow pubsub_bare{"pub/sub, raw bare (payload alone)", {}, {}};
  RateRow streams_same{"Streams end to end, same bytes", {}, {}};
  RateRow streams_bare{"Streams end to end, raw bare (one field)", {}, {}};
  std::vector<Latency> raw_rtt, plain_rtt, bus_rtt;
  for (int run = 0; run < options.runs; ++run) {
    pubsub_bare.raw.push_back(raw_pubsub(endpoint, options.messages, Wire::bare));
    pubsub_same.raw.push_back(raw_pubsub(endpoint, options.messages, Wire::same_bytes));
    pubsub_same.bus.push_back(bus_pubsub(endpoint, options.messages));
    streams_bare.raw.push_back(raw_streams(endpoint, options.stream_messages, Wire::bare));
    streams_same.raw.push_back(raw_streams(endpoint, options.stream_messages, Wire::same_bytes));
    streams_same.bus.push_back(bus_streams(endpoint, options.stream_messages));
    bus_rtt.push_back(bus_queries(endpoint, options.queries));
    raw_rtt.push_back(raw_queries(endpoint, options.queries, true));
    plain_rtt.push_back(raw_queries(endpoint, options.queries, false));
  }
  check_same_query_script(endpoint);
  pubsub_bare.bus = pubsub_same.bus;
  streams_bare.bus = streams_same.bus;
  auto by_p50 = [](const Latency& l) { return l.p50; };
  const Latency rq = median_latency(raw_rtt, by_p50), pq = median_latency(plain_rtt, by_p50),
                bq = median_latency(bus_rtt, by_p50);

  std::printf(
      "| measure                                    | raw msg/s   | raw CPU | bus msg/s | bus CPU "
      "| bus/raw |\n");
  std::printf(
      "|--------------------------------------------|------------:|--------:|----------:|--------:"
      "|--------:|\n");
  print_rate_rows({&pubsub_same, &pubsub_bare, &streams_same, &streams_bare}, 42);
  std::printf(
      "\n| query round trip (one in flight)             | raw p50, us | raw p99 | bus p50 | bus "
      "p99 "
      "| bus/raw p50 |\n");
  std::printf(
      "|----------------------------------------------|------------:|--------:|--------:|--------:"
      "|------------:|\n");
  std::printf(
      "| same commands (the bus's liveness script)    | %11.1f | %7.1f | %7.1f | %7.1f | %11.2f "
      "|\n",
      rq.p50, rq.p99, bq.p50, bq.p99, bq.p50 / rq.p50);
  std::printf(
      "| raw plain XADD (no liveness check)           | %11.1f | %7.1f | %7.1f | %7.1f | %11.2f "
      "|\n",
      pq.p50, pq.p99, bq.p50, bq.p99, bq.p50 / pq.p50);
  std::printf(
      "\nCPU: client CPU microseconds per message. bus/raw: the medians' ratio (for throughput, "
      "above 1 is the bus faster; for latency, below 1). Raw bare rows send no CloudEvents "
      "envelope (what it costs); the others do the same work as the bus.\n\n");
  print_result("redis.pubsub.throughput.vs_raw_same_bytes", median_rate(pubsub_same.bus).per_second,
               median_rate(pubsub_same.raw).per_second);
  print_result("redis.streams.end_to_end.vs_raw_same_bytes",
               median_rate(streams_same.bus).per_second, median_rate(streams_same.raw).per_second);
  print_result("redis.query.p50.vs_raw", bq.p50, rq.p50);
  return 0;
}
