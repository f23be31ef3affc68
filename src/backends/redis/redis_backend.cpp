// The Redis backend: pub/sub channels for at-most-once traffic and query replies, Streams with
// consumer groups for everything at-least-once (events, commands, queries, bus streams).
//
// Threads: hiredis connections run on a small process-wide pool of io threads (IoPool), one
// thread per connection. Subscriptions hand deliveries to the bus's executor through an inbox
// and a signal, as the other backends do; settling a delivery sends its command from there.
//
// Streams: each subscription has a connection of its own for its blocking XREADGROUP, a reader
// coroutine and a reclaimer coroutine on that connection's thread. The reclaimer takes entries
// that stayed pending longer than the visibility timeout (a crashed or closed consumer's) with
// XAUTOCLAIM, and moves entries delivered too often to the dead-letter stream.
#include "marty/messaging/redis_backend.hpp"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <deque>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <spdlog/spdlog.h>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/post.hpp>

#include "marty/messaging/dead_letters.hpp"
#include "marty/messaging/detail/async_signal.hpp"
#include "marty/messaging/detail/inbox.hpp"
#include "marty/messaging/detail/log.hpp"
#include "marty/messaging/detail/sleep.hpp"
#include "marty/messaging/detail/url.hpp"
#include "marty/messaging/subject.hpp"
#include "marty/messaging/wire.hpp"
#include "redis_connection.hpp"
#include "redis_scripts.hpp"
#include "redis_setup.hpp"
#include "redis_wire.hpp"

namespace marty::messaging::redis {
namespace {

using detail::AsyncSignal;
using std::chrono::milliseconds;

using marty::messaging::detail::logger;

// Messages a pub/sub subscription may queue before it drops, as Redis itself does for a slow
// subscriber (client-output-buffer-limit pubsub).
constexpr std::size_t kChannelQueueLimit = 65'536;
constexpr std::string_view kEntryIdHeader = "marty-redis-entry-id";
// The consumer that holds entries released by closing consumers until a live one reclaims them.
constexpr std::string_view kReleasedConsumer = "released";

// ---- Scripts -------------------------------------------------------------------------------
// Each runs atomically on the server, so a check and the append it guards cannot be split by
// another client. Each begins with scripts::kAppend.

// The scripts that append (an event, a command, a query) are in redis_scripts.hpp: the Redis
// bench's raw baseline runs the same query script.

// Takes entries pending longer than ARGV[3] ms, with their delivery counts, scanning the
// group's pending list from the cursor ARGV[5] (XAUTOCLAIM looks at no more than ten times
// COUNT entries per call, so a long list is scanned over several calls).
// KEYS: stream. ARGV: group, consumer, min idle ms, count, cursor.
// Returns {entries, counts, ids of entries trimmed away while pending, next cursor}.
constexpr std::string_view kReclaimScript = R"lua(
local claimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[5],
                           'COUNT', ARGV[4])
local counts = {}
for i, entry in ipairs(claimed[2]) do
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], entry[1], entry[1], 1)
  counts[i] = pending[1] and pending[1][4] or 1
end
return {claimed[2], counts, claimed[3] or {}, claimed[1]}
)lua";

// Removes a consumer from its group when it holds no pending entry (removing one that does
// would drop them). KEYS: stream. ARGV: group, consumer.
constexpr std::string_view kLeaveGroupScript = R"lua(
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
  return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1
)lua";

// Moves an entry to the dead-letter stream: appends the dead letter and acknowledges the
// original in one step, so it is neither lost nor left behind.
// KEYS: stream, dead-letter stream. ARGV: group, entry id, maxlen, fields...
constexpr std::string_view kDeadLetterScript = R"lua(
append(KEYS[2], ARGV[3], 4)
return redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
)lua";

// Removes a subscriber's private group; a topic Stream no group reads any more goes too, so
// that events stop being appended to it. KEYS: stream. ARGV: group, "1" to drop an unread topic.
constexpr std::string_view kDropGroupScript = R"lua(
redis.call('XGROUP', 'DESTROY', KEYS[1], ARGV[1])
if ARGV[2] == '1' and redis.call('EXISTS', KEYS[1]) == 1 and
   #redis.call('XINFO', 'GROUPS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1])
end
return 1
)lua";

enum class ScriptId {
  publish_event,
  send_command,
  send_query,
  reclaim,
  leave_group,
  dead_letter,
  drop_group
};
constexpr ScriptId kAllScripts[] = {
    ScriptId::publish_event, ScriptId::send_command, ScriptId::send_query, ScriptId::reclaim,
    ScriptId::leave_group,   ScriptId::dead_letter,  ScriptId::drop_group};

const std::string& script_text(ScriptId id) {
  static const std::map<ScriptId, std::string> texts = [] {
    const std::pair<ScriptId, std::string_view> bodies[] = {
        {ScriptId::publish_event, scripts::kPublishEventScript},
        {ScriptId::send_command, scripts::kSendCommandScript},
        {ScriptId::send_query, scripts::kSendQueryScript},
        {ScriptId::reclaim, kReclaimScript},
        {ScriptId::leave_group, kLeaveGroupScript},
        {ScriptId::dead_letter, kDeadLetterScript},
        {ScriptId::drop_group, kDropGroupScript}};
    std::map<ScriptId, std::string> out;
    for (const auto& body : bodies)
      out[body.first] = std::string(scripts::kAppend) + std::string(body.second);
    return out;
  }();
  return texts.at(id);
}

std::string millis(milliseconds d) {
  return std::to_string(d.count());
}

// ---- Shared state --------------------------------------------------------------------------

// What a backend's subscriptions and deliveries share with it. Read-only after connect(),
// except `closed`.
struct Core {
  RedisConfig config;
  ConnectionOptions connection_options;
  ConnectionPtr commands;
  std::map<ScriptId, std::string> script_shas;
  std::atomic<bool> closed{false};

  std::string key(std::string_view subject) const {
    return config.key_prefix + std::string(subject);
  }
  std::string maxlen() const { return std::to_string(config.max_stream_length); }

  ConnectionPtr open_connection(std::string role) {
    auto connection =
        Connection::create(IoPool::instance().next(), connection_options, std::move(role));
    connection->start();
    return connection;
  }

  // Runs a script by its SHA, loading it again if the server lost it (a restart).
  // No defaulted deadline: GCC 12 miscompiles defaulted class-type arguments of coroutines
  // (docs/decisions/0001).
  asio::awaitable<ReplyResult> run_script(ScriptId id, std::vector<std::string> keys,
                                          std::vector<std::string> args,
                                          SteadyClock::time_point deadline) {
    Command command;
    command.reserve(3 + keys.size() + args.size());
    command.emplace_back("EVALSHA");
    command.push_back(script_shas.at(id));
    command.push_back(std::to_string(keys.size()));
    for (auto& k : keys) command.push_back(std::move(k));
    for (auto& a : args) command.push_back(std::move(a));
    // Formatted when sent, so the command is kept (not copied) for the rare resend.
    auto reply = co_await commands->command(command, deadline);
    if (reply && reply->is_error() && reply->error_code() == "NOSCRIPT") {
      command[0] = "EVAL";
      command[1] = script_text(id);
      reply = co_await commands->command(command, deadline);
    }
    co_return reply;
  }
};
using CorePtr = std::shared_ptr<Core>;

// The dead-letter form of an entry the bus cannot take (undecodable, or delivered too often):
// the decoded message when there is one, else the entry's fields as a JSON object, with the
// reason and where it came from.
Message dead_letter_message(const Result<Message>& decoded, const std::vector<std::string>& fields,
                            const std::string& subject, const std::string& id, int attempt,
                            const std::string& reason) {
  Message dead;
  if (decoded) {
    dead = *decoded;
  } else {
    Json raw = Json::object();
    for (std::size_t i = 0; i + 1 < fields.size(); i += 2) raw[fields[i]] = fields[i + 1];
    MessageMetadata metadata;
    metadata.message_type = subject::type_of(subject);
    metadata.message_id = make_uuid_v7();
    metadata.time = Clock::now();
    dead = Message::from_json(std::move(raw), std::move(metadata));
  }
  mark_dead_letter(dead, subject, reason, attempt);
  dead.mutable_metadata().headers[std::string(kEntryIdHeader)] = id;
  return dead;
}

// ---- Pub/sub -------------------------------------------------------------------------------

struct ChannelItem {
  std::string channel;
  std::string payload;
};

// What a pub/sub subscription has received and its receiver has not taken yet.
struct ChannelInbox {
  std::string pattern;  // the subject pattern, for wildcard subscriptions
  std::mutex mutex;
  std::deque<ChannelItem> items;
  bool closed = false;
  std::size_t dropped = 0;
  std::shared_ptr<AsyncSignal> signal = AsyncSignal::create();

  void push(ChannelItem item) {
    {
      std::lock_guard lock(mutex);
      if (closed) return;
      if (items.size() >= kChannelQueueLimit) {
        if (dropped++ % 10'000 == 0) {
          logger().warn("Redis subscriber on {} is not keeping up: dropped {} message(s)",
                        item.channel, dropped);
        }
        return;
      }
      items.push_back(std::move(item));
    }
    signal->notify();
  }
};
using ChannelInboxPtr = std::shared_ptr<ChannelInbox>;

// The backend's pub/sub connection and who listens on what. Its maps are touched on the
// connection's io thread only. Subscriptions are renewed after every reconnection.
class PubSubHub : public std::enable_shared_from_this<PubSubHub> {
 public:
  explicit PubSubHub(ConnectionPtr connection) : connection_(std::move(connection)) {}

  void attach() {
    std::weak_ptr<PubSubHub> weak = shared_from_this();
    connection_->on_push = [weak](const Reply& reply) {
      if (auto self = weak.lock()) self->on_push(reply);
    };
    connection_->on_ready = [weak] {
      if (auto self = weak.lock()) self->renew();
    };
  }
  const ConnectionPtr& connection() const { return connection_; }

  // Adds a listener; resumes the caller once the server confirmed the subscription.
  asio::awaitable<Result<void>> add(std::string name, bool pattern, ChannelInboxPtr inbox,
                                    SteadyClock::time_point deadline) {
    auto confirmed = std::make_shared<Confirmation>();
    auto self = shared_from_this();
    asio::post(connection_->io(), [self, name, pattern, inbox, confirmed] {
      auto& listeners = pattern ? self->patterns_ : self->channels_;
      auto& list = listeners[name];
      list.push_back(inbox);
      if (list.size() == 1) {
        self->confirmations_[key_of(name, pattern)].push_back(confirmed);
        self->connection_->send_subscription({pattern ? "PSUBSCRIBE" : "SUBSCRIBE", name});
      } else {
        confirmed->set();
      }
    });
    while (true) {
      {
        std::lock_guard lock(confirmed->mutex);
        if (confirmed->done) co_return ok();
      }
      if (!co_await confirmed->signal->wait(deadline)) {
        remove(name, pattern, inbox);
        co_return redis_error(errc::unavailable,
                              "Redis did not confirm the subscription to '" + name + "' in time");
      }
    }
  }

  void remove(std::string name, bool pattern, ChannelInboxPtr inbox) {
    auto self = shared_from_this();
    asio::post(connection_->io(), [self, name = std::move(name), pattern, inbox] {
      auto& listeners = pattern ? self->patterns_ : self->channels_;
      auto it = listeners.find(name);
      if (it == listeners.end()) return;
      std::erase(it->second, inbox);
      if (!it->second.empty()) return;
      listeners.erase(it);
      self->connection_->send_subscription({pattern ? "PUNSUBSCRIBE" : "UNSUBSCRIBE", name});
    });
  }

 private:
  struct Confirmation {
    std::mutex mutex;
    bool done = false;
    std::shared_ptr<AsyncSignal> signal = AsyncSignal::create();
    void set() {
      {
        std::lock_guard lock(mutex);
        done = true;
      }
      signal->notify();
    }
  };
  static std::string key_of(const std::string& name, bool pattern) {
    return (pattern ? "p:" : "c:") + name;
  }

  void on_push(const Reply& reply) {
    if (!reply.is_array() || reply.elements.empty()) return;
    const std::string& kind = reply.elements[0].text;
    const auto& e = reply.elements;
    if (kind == "message" && e.size() >= 3) {
      auto it = channels_.find(e[1].text);
      if (it == channels_.end()) return;
      for (const auto& inbox : it->second) inbox->push({e[1].text, e[2].text});
    } else if (kind == "pmessage" && e.size() >= 4) {
      auto it = patterns_.find(e[1].text);
      if (it == patterns_.end()) return;
      for (const auto& inbox : it->second) inbox->push({e[2].text, e[3].text});
    } else if ((kind == "subscribe" || kind == "psubscribe") && e.size() >= 2) {
      auto it = confirmations_.find(key_of(e[1].text, kind == "psubscribe"));
      if (it == confirmations_.end()) return;
      for (auto& c : it->second) c->set();
      confirmations_.erase(it);
    }
  }

  void renew() {
    Command channels{"SUBSCRIBE"}, patterns{"PSUBSCRIBE"};
    for (const auto& [name, list] : channels_) channels.push_back(name);
    for (const auto& [name, list] : patterns_) patterns.push_back(name);
    if (channels.size() > 1) connection_->send_subscription(channels);
    if (patterns.size() > 1) connection_->send_subscription(patterns);
  }

  ConnectionPtr connection_;
  std::map<std::string, std::vector<ChannelInboxPtr>> channels_;
  std::map<std::string, std::vector<ChannelInboxPtr>> patterns_;
  std::map<std::string, std::vector<std::shared_ptr<Confirmation>>> confirmations_;
};
using PubSubHubPtr = std::shared_ptr<PubSubHub>;

class ChannelDelivery final : public Delivery {
 public:
  explicit ChannelDelivery(Message message) : Delivery(std::move(message), 1, 0) {}
  asio::awaitable<Result<void>> ack() override { co_return ok(); }
  asio::awaitable<Result<void>> nack(milliseconds) override {
    co_return redis_error(errc::unimplemented,
                          "Redis pub/sub delivers at most once: a failed message is not "
                          "redelivered (use an at-least-once subscription)");
  }
  asio::awaitable<Result<void>> term() override { co_return ok(); }
};

class ChannelSubscription final : public Subscription {
 public:
  ChannelSubscription(PubSubHubPtr hub, ChannelInboxPtr inbox, std::string name, bool pattern,
                      std::string prefix)
      : hub_(std::move(hub)),
        inbox_(std::move(inbox)),
        name_(std::move(name)),
        pattern_(pattern),
        prefix_(std::move(prefix)) {}
  ~ChannelSubscription() override { close(); }

  asio::awaitable<Result<std::unique_ptr<Delivery>>> receive(
      std::optional<SteadyClock::time_point> deadline) override {
    while (true) {
      std::optional<ChannelItem> item;
      {
        std::lock_guard lock(inbox_->mutex);
        if (!inbox_->items.empty()) {
          item = std::move(inbox_->items.front());
          inbox_->items.pop_front();
        } else if (inbox_->closed) {
          co_return redis_error(errc::cancelled, "subscription closed");
        }
      }
      if (!item) {
        if (!co_await inbox_->signal->wait(deadline)) {
          co_return redis_error(errc::deadline_exceeded, "no message before the deadline");
        }
        continue;
      }
      std::string subject = item->channel.substr(prefix_.size());
      if (!inbox_->pattern.empty() && !subject::matches(inbox_->pattern, subject)) continue;
      auto message = decode_channel_payload(std::move(item->payload), subject);
      if (!message) {
        // At most once: nothing to redeliver or dead-letter; say what was dropped.
        logger().warn("dropped a malformed message on Redis channel {}: {}", item->channel,
                      message.error().describe());
        continue;
      }
      co_return std::unique_ptr<Delivery>(new ChannelDelivery(std::move(*message)));
    }
  }

  void close() override {
    {
      std::lock_guard lock(inbox_->mutex);
      if (inbox_->closed) return;
      inbox_->closed = true;
    }
    inbox_->signal->notify();
    hub_->remove(name_, pattern_, inbox_);
  }

 private:
  PubSubHubPtr hub_;
  ChannelInboxPtr inbox_;
  std::string name_;
  bool pattern_;
  std::string prefix_;
};

// ---- Streams -------------------------------------------------------------------------------

struct Entry {
  std::string id;
  std::vector<std::string> fields;
  int attempt = 1;
};

// Entries of a Stream reply ([[id, [field, value...]], ...]); deleted entries (nil) are skipped.
std::vector<Entry> entries_of(const Reply& list, int attempt) {
  std::vector<Entry> out;
  for (const auto& item : list.elements) {
    if (!item.is_array() || item.elements.size() < 2 || !item.elements[1].is_array()) continue;
    Entry entry;
    entry.id = item.elements[0].text;
    entry.attempt = attempt;
    entry.fields.reserve(item.elements[1].elements.size());
    for (const auto& f : item.elements[1].elements) entry.fields.push_back(f.text);
    out.push_back(std::move(entry));
  }
  return out;
}

// One consumer of one group on one Stream. Shared by its Subscription, its Deliveries and its
// reader and reclaimer coroutines (which run on the reader connection's io thread).
struct StreamConsumer : std::enable_shared_from_this<StreamConsumer> {
  CorePtr core;
  ConnectionPtr reader;
  std::string subject, key, group, consumer;
  bool private_group = false;  // made for this subscriber alone: removed when it closes
  bool topic = true;           // events/commands/queries (not a bus stream)

  std::mutex mutex;
  std::deque<Entry> ready;  // read, not yet handed out
  std::vector<std::string> unsent_acks;
  int held = 0;  // read and not yet settled (ready, handed out, or waiting to retry)
  bool closed = false;
  std::shared_ptr<AsyncSignal> arrived = AsyncSignal::create();  // wakes receive()
  std::shared_ptr<AsyncSignal> room = AsyncSignal::create();     // wakes the reader
  std::shared_ptr<AsyncSignal> reclaim_now = AsyncSignal::create();

  const RedisConfig& config() const { return core->config; }

  int free_slots() {
    std::lock_guard lock(mutex);
    return config().prefetch - held;
  }
  // Queues entries read or reclaimed for receive(); after close() they are released for the
  // group's other members instead.
  void add(std::vector<Entry> entries) {
    if (entries.empty()) return;
    bool queued = false;
    {
      std::lock_guard lock(mutex);
      if (!closed) {
        held += static_cast<int>(entries.size());
        for (auto& e : entries) ready.push_back(std::move(e));
        queued = true;
      }
    }
    if (queued) {
      arrived->notify();
      return;
    }
    std::vector<std::string> ids;
    for (const auto& e : entries) ids.push_back(e.id);
    release(ids);
  }
  void settled(int count = 1) {
    {
      std::lock_guard lock(mutex);
      held -= count;
    }
    room->notify();
  }
  bool is_closed() {
    std::lock_guard lock(mutex);
    return closed;
  }

  // Acknowledges an entry. Acks are gathered and sent as one XACK per turn of the commands
  // connection's thread, so a batch of settled entries costs one command, not one each. The
  // XACK is not waited for, as NATS acks are not: its reply only says whether the entry was
  // still pending, and an ack lost with the connection leads to a redelivery, which
  // at-least-once allows. Failures are logged.
  void acknowledge(std::string id) {
    bool first = false;
    {
      std::lock_guard lock(mutex);
      first = unsent_acks.empty();
      unsent_acks.push_back(std::move(id));
    }
    if (!first) return;
    auto self = shared_from_this();
    asio::post(core->commands->io(), [self] { self->flush_acks(); });
  }
  void flush_acks() {
    Command command{"XACK", key, group};
    {
      std::lock_guard lock(mutex);
      for (auto& id : unsent_acks) command.push_back(std::move(id));
      unsent_acks.clear();
    }
    const std::size_t count = command.size() - 3;
    core->commands->post(
        std::move(command), make_callback([key = key, group = group, count](ReplyResult reply) {
          auto outcome = checked(std::move(reply), "acknowledging " + std::to_string(count) +
                                                       " entries of " + key + " for " + group);
          if (!outcome) logger().warn("{}", outcome.error().describe());
        }));
  }

  // Makes entries reclaimable by any consumer of the group at once (their idle time is set
  // past the visibility timeout). Fire and forget: if it fails they come back after the
  // visibility timeout anyway.
  // They are handed to the group's `released` consumer, so that this consumer holds nothing
  // and can leave the group when it closes.
  void release(const std::vector<std::string>& ids) {
    if (ids.empty()) return;
    Command command{"XCLAIM", key, group, std::string(kReleasedConsumer), "0"};
    for (const auto& id : ids) command.push_back(id);
    command.insert(command.end(), {"IDLE", millis(config().visibility_timeout), "JUSTID"});
    core->commands->post(
        std::move(command), make_callback([key = key, count = ids.size()](ReplyResult reply) {
          auto outcome = checked(std::move(reply),
                                 "releasing " + std::to_string(count) + " entries of " + key);
          if (!outcome) {
            logger().warn("{}; they come back after the visibility timeout instead",
                          outcome.error().describe());
          }
        }));
  }

  asio::awaitable<Result<void>> dead_letter(const Result<Message>& decoded, const Entry& entry,
                                            std::string reason) {
    Message dead =
        dead_letter_message(decoded, entry.fields, subject, entry.id, entry.attempt, reason);
    std::vector<std::string> args{group, entry.id, core->maxlen()};
    for (auto& f : entry_fields(dead)) args.push_back(std::move(f));
    std::vector<std::string> keys{key, core->key(dead.subject())};
    auto reply = checked(co_await core->run_script(ScriptId::dead_letter, std::move(keys),
                                                   std::move(args), SteadyClock::time_point::max()),
                         "moving entry " + entry.id + " of " + key + " to the dead letters");
    if (!reply) co_return std::move(reply).error();
    logger().warn("Redis entry {} of {} moved to {}: {}", entry.id, key, dead.subject(), reason);
    co_return ok();
  }

  static asio::awaitable<void> admit_later(std::shared_ptr<StreamConsumer> self,
                                           std::vector<Entry> entries) {
    co_await self->admit(std::move(entries));
  }

  // Entries delivered more often than max_deliveries go to the dead letters, not the bus.
  asio::awaitable<void> admit(std::vector<Entry> entries) {
    const int limit = config().max_deliveries;
    std::vector<Entry> keep;
    for (auto& entry : entries) {
      if (limit > 0 && entry.attempt > limit) {
        auto moved = co_await dead_letter(decode_entry(entry.fields, subject), entry,
                                          "delivered " + std::to_string(entry.attempt) +
                                              " times without being settled (max_deliveries " +
                                              std::to_string(limit) + ")");
        if (!moved) logger().error("{}", moved.error().describe());
        continue;
      }
      keep.push_back(std::move(entry));
    }
    add(std::move(keep));
  }

  // `keep` holds this consumer alive while the loop runs.
  asio::awaitable<void> read_loop(std::shared_ptr<StreamConsumer> keep) {
    (void)keep;
    while (!is_closed()) {
      const int slots = free_slots();
      if (slots <= 0) {
        co_await room->wait(SteadyClock::now() + config().block_timeout);
        continue;
      }
      // Commands are named before co_await: GCC 12 miscompiles braced lists inside it (0001).
      Command read{"XREADGROUP", "GROUP",
                   group,        consumer,
                   "COUNT",      std::to_string(slots),
                   "BLOCK",      millis(config().block_timeout),
                   "STREAMS",    key,
                   ">"};
      auto reply = co_await reader->command(std::move(read));
      if (!reply) {
        if (is_closed()) break;
        co_await detail::sleep_for(config().reconnect_wait);
        continue;
      }
      if (reply->is_error()) {
        if (reply->error_code() == "NOGROUP") {
          // The Stream or the group went (a server that lost its data, a manual DEL): make
          // the group again, from the start of what is there now.
          logger().warn("Redis group {} of {} is gone; recreating it", group, key);
          Command create{"XGROUP", "CREATE", key, group, "0", "MKSTREAM"};
          (void)co_await core->commands->command(std::move(create));
        } else {
          logger().warn("reading {} for group {} failed: {}", key, group, reply->text);
          co_await detail::sleep_for(config().reconnect_wait * 4);
        }
        continue;
      }
      if (!reply->is_array() || reply->elements.empty()) continue;  // timed out: read again
      const Reply& stream = reply->elements[0];
      if (stream.elements.size() < 2) continue;
      add(entries_of(stream.elements[1], 1));
    }
  }

  asio::awaitable<void> reclaim_loop(std::shared_ptr<StreamConsumer> keep) {
    (void)keep;
    std::string cursor = "0-0";
    while (!is_closed()) {
      const int slots = free_slots();
      if (slots > 0) {
        std::vector<std::string> keys{key};
        std::vector<std::string> args{group, consumer, millis(config().visibility_timeout),
                                      std::to_string(slots), cursor};
        auto reply = co_await core->run_script(ScriptId::reclaim, std::move(keys), std::move(args),
                                               SteadyClock::time_point::max());
        if (reply && reply->is_array() && reply->elements.size() >= 4) {
          cursor = reply->elements[3].text;
          auto entries = entries_of(reply->elements[0], 1);
          const auto& counts = reply->elements[1].elements;
          for (std::size_t i = 0; i < entries.size() && i < counts.size(); ++i) {
            entries[i].attempt = static_cast<int>(counts[i].integer);
          }
          if (const auto trimmed = reply->elements[2].elements.size(); trimmed > 0) {
            logger().error(
                "{} entr{} of {} pending with group {} were trimmed before being acknowledged "
                "(max_stream_length {}): lost",
                trimmed, trimmed == 1 ? "y" : "ies", key, group, config().max_stream_length);
          }
          co_await admit(std::move(entries));
          if (cursor != "0-0") continue;  // the scan of the pending list goes on
        } else if (reply && reply->is_error() && reply->error_code() != "NOGROUP") {
          logger().warn("reclaiming entries of {} for group {} failed: {}", key, group,
                        reply->text);
        }
      }
      co_await reclaim_now->wait(SteadyClock::now() + config().reclaim_interval);
    }
  }

  // Redelivers a nacked entry to this consumer after `delay`; the entry stays pending with it
  // meanwhile (so a crash here still leaves it to the reclaimers).
  void retry_later(Entry entry, milliseconds delay) {
    auto self = shared_from_this();
    auto timer = std::make_shared<asio::steady_timer>(reader->io(), delay);
    timer->async_wait([self, timer, entry = std::move(entry),
                       delay](const std::error_code&) mutable {
      if (self->is_closed()) {
        self->release({entry.id});
        self->settled();
        return;
      }
      // Claims it again only if nobody else did meanwhile (its idle time would be short).
      const auto min_idle = std::max<milliseconds::rep>(0, delay.count() - 50);
      auto connection = self->core->commands;
      Command claim{"XCLAIM", self->key, self->group, self->consumer, std::to_string(min_idle),
                    entry.id};
      auto callback = make_callback([self, entry = std::move(entry)](ReplyResult reply) mutable {
        if (!reply || !reply->is_array()) {
          // Still pending with us: the reclaimers take it after the visibility timeout.
          self->settled();
          return;
        }
        auto again = entries_of(*reply, entry.attempt + 1);
        self->settled();            // `admit` counts what it keeps again
        if (again.empty()) return;  // acknowledged, trimmed, or claimed by another consumer
        asio::co_spawn(self->reader->io(), admit_later(self, std::move(again)), asio::detached);
      });
      connection->post(std::move(claim), std::move(callback));
    });
  }
};
using StreamConsumerPtr = std::shared_ptr<StreamConsumer>;

class StreamDelivery final : public Delivery {
 public:
  StreamDelivery(Message message, Entry entry, StreamConsumerPtr owner)
      : Delivery(std::move(message), entry.attempt,
                 owner->topic ? 0 : sequence_from_entry_id(entry.id)),
        entry_(std::move(entry)),
        owner_(std::move(owner)) {}

  ~StreamDelivery() override {
    if (settled_) return;
    owner_->release({entry_.id});
    owner_->settled();
    owner_->reclaim_now->notify();
  }

  asio::awaitable<Result<void>> ack() override { co_return co_await acknowledge("ack"); }
  asio::awaitable<Result<void>> term() override { co_return co_await acknowledge("term"); }

  asio::awaitable<Result<void>> nack(milliseconds delay) override {
    if (settled_) co_return already();
    settled_ = true;
    owner_->retry_later(std::move(entry_), delay);
    co_return ok();
  }

 private:
  Result<void> already() const {
    return redis_error(errc::failed_precondition, "delivery was already settled");
  }
  // XACK is sent without waiting for its reply, as NATS sends its acks: the reply only says
  // whether the entry was still pending, and an ack that is lost (the connection drops) just
  // leads to a redelivery, which at-least-once allows. Failures are logged.
  asio::awaitable<Result<void>> acknowledge(std::string_view) {
    if (settled_) co_return already();
    settled_ = true;
    if (owner_->core->closed) {
      owner_->settled();
      co_return redis_error(errc::failed_precondition, "the backend is closed");
    }
    owner_->acknowledge(entry_.id);
    owner_->settled();
    co_return ok();
  }

  Entry entry_;
  StreamConsumerPtr owner_;
  bool settled_ = false;
};

class StreamSubscription final : public Subscription {
 public:
  explicit StreamSubscription(StreamConsumerPtr consumer) : consumer_(std::move(consumer)) {}
  ~StreamSubscription() override { close(); }

  asio::awaitable<Result<std::unique_ptr<Delivery>>> receive(
      std::optional<SteadyClock::time_point> deadline) override {
    StreamConsumer& c = *consumer_;
    while (true) {
      auto entry = co_await detail::take_next(&c.mutex, &c.ready, &c.closed, c.arrived.get(),
                                              deadline, kBackendName);
      if (!entry) co_return std::move(entry).error();
      auto message = decode_entry(entry->fields, c.subject);
      if (!message) {
        // The bus could not even tell what it is: straight to the dead letters, with why.
        auto moved = co_await c.dead_letter(message, *entry, message.error().describe());
        if (!moved) {
          logger().error("{}; it stays pending", moved.error().describe());
        }
        c.settled();
        continue;
      }
      co_return std::unique_ptr<Delivery>(
          new StreamDelivery(std::move(*message), std::move(*entry), consumer_));
    }
  }

  void close() override {
    StreamConsumer& c = *consumer_;
    std::vector<std::string> unread;
    {
      std::lock_guard lock(c.mutex);
      if (c.closed) return;
      c.closed = true;
      for (const auto& e : c.ready) unread.push_back(e.id);
      c.held -= static_cast<int>(c.ready.size());
      c.ready.clear();
    }
    c.arrived->notify();
    c.room->notify();
    c.reclaim_now->notify();
    c.reader->close();  // ends the blocked read at once
    c.release(unread);
    // Sent after the release, on the same connection (so in order); both run before a closing
    // backend's final PING.
    std::vector<std::string> keys{c.key};
    if (c.private_group) {
      // Nobody else reads this group: it goes, and its Stream with it if it was the last.
      std::vector<std::string> args{c.group, c.topic ? "1" : "0"};
      asio::co_spawn(c.core->commands->io(),
                     run_detached(c.core, ScriptId::drop_group, std::move(keys), std::move(args)),
                     asio::detached);
    } else {
      // Leaves the group unless deliveries handed out are still unsettled.
      std::vector<std::string> args{c.group, c.consumer};
      asio::co_spawn(c.core->commands->io(),
                     run_detached(c.core, ScriptId::leave_group, std::move(keys), std::move(args)),
                     asio::detached);
    }
  }

 private:
  static asio::awaitable<void> run_detached(CorePtr core, ScriptId script,
                                            std::vector<std::string> keys,
                                            std::vector<std::string> args) {
    auto reply = checked(co_await core->run_script(script, std::move(keys), std::move(args),
                                                   SteadyClock::time_point::max()),
                         "closing a subscription");
    if (!reply) logger().warn("{}", reply.error().describe());
  }

  StreamConsumerPtr consumer_;
};

// ---- Configuration -------------------------------------------------------------------------

// The group's last-delivered ID that makes a new group start at `start`.
std::string group_start(const StartPosition& start) {
  switch (start.kind) {
    case StartPosition::Kind::new_messages:
      return "$";
    case StartPosition::Kind::earliest:
      return "0";
    case StartPosition::Kind::sequence: {
      // The group's last-delivered ID is the one just before the first entry to deliver.
      const std::string first = entry_id_from_sequence(start.sequence);
      const auto dash = first.find('-');
      const std::uint64_t ms = std::stoull(first.substr(0, dash));
      const std::uint64_t seq = std::stoull(first.substr(dash + 1));
      if (seq > 0) return std::to_string(ms) + "-" + std::to_string(seq - 1);
      if (ms > 0) return std::to_string(ms - 1) + "-18446744073709551615";
      return "0";
    }
    case StartPosition::Kind::time: {
      const auto ms =
          std::chrono::duration_cast<milliseconds>(start.time.time_since_epoch()).count();
      if (ms <= 0) return "0";
      return std::to_string(ms - 1) + "-18446744073709551615";
    }
  }
  return "$";
}

// ---- The backend ---------------------------------------------------------------------------

class RedisBackend final : public Backend {
 public:
  explicit RedisBackend(RedisConfig config) : core_(std::make_shared<Core>()) {
    core_->config = std::move(config);
    caps_.patterns = {MessagingPattern::pub_sub, MessagingPattern::point_to_point,
                      MessagingPattern::request_response, MessagingPattern::streaming,
                      MessagingPattern::broadcast};
    caps_.delivery = DeliveryGuarantee::at_least_once;
    // A failed entry is redelivered while later ones go on, and members of a group read in
    // parallel: no ordering is promised (docs/redis-backend.md).
    caps_.ordering = Ordering::none;
    caps_.persistent_replay = true;
    caps_.durable_groups = true;
    caps_.consumer_groups = true;
    caps_.native_request_reply = false;  // replies come on the bus's private reply channel
    caps_.delayed_redelivery = true;
    caps_.native_dead_letter = false;
    caps_.inspectable_dead_letters = true;
    caps_.consumer_lag = true;  // XINFO GROUPS: the group's lag and pending entries
    caps_.headers = true;
    caps_.wildcard_subscriptions = true;
    caps_.max_payload_bytes = 512u << 20;  // proto-max-bulk-len's default
  }
  ~RedisBackend() override { shutdown(); }

  std::string_view name() const noexcept override { return kBackendName; }
  const Capabilities& capabilities() const noexcept override { return caps_; }

  asio::awaitable<Result<void>> connect() override {
    {
      std::lock_guard lock(mutex_);
      if (connected_) co_return ok();
    }
    RedisConfig& config = core_->config;
    if (auto applied = apply_url(config); !applied) co_return applied;
    if (auto valid = validate(config); !valid) co_return valid;
    core_->connection_options = connection_options_for(config);

    auto commands = core_->open_connection("commands");
    // The hub's callbacks are set before the connection starts: its thread reads them.
    auto pubsub_connection =
        Connection::create(IoPool::instance().next(), core_->connection_options, "pubsub");
    auto hub = std::make_shared<PubSubHub>(pubsub_connection);
    hub->attach();
    pubsub_connection->start();
    core_->commands = commands;
    auto failed = [&](Error error) {
      commands->close();
      pubsub_connection->close();
      return error;
    };
    auto ready = co_await commands->wait_ready();
    if (ready) ready = co_await pubsub_connection->wait_ready();
    if (!ready) co_return failed(std::move(ready).error());
    // XAUTOCLAIM reclaims a crashed consumer's entries; its reply took its final shape (the
    // entries trimmed while pending) in Redis 7.0.
    Command info_command{"INFO", "server"};
    auto info = checked(co_await commands->command(std::move(info_command)), "INFO server");
    if (!info) co_return failed(std::move(info).error());
    const auto at = info->text.find("redis_version:");
    if (at != std::string::npos) {
      const std::string version = info->text.substr(at + 14, info->text.find('\r', at) - at - 14);
      int major = 0;
      std::from_chars(version.data(), version.data() + version.size(), major);
      if (major < 7) {
        co_return failed(redis_error(errc::failed_precondition,
                                     "the Redis backend needs Redis 7.0 or later (XAUTOCLAIM); "
                                     "the server is " +
                                         version));
      }
    }
    for (ScriptId id : kAllScripts) {
      Command load{"SCRIPT", "LOAD", script_text(id)};
      auto loaded = checked(co_await commands->command(std::move(load)), "SCRIPT LOAD");
      if (!loaded) co_return failed(std::move(loaded).error());
      core_->script_shas[id] = loaded->text;
    }
    std::lock_guard lock(mutex_);
    hub_ = hub;
    connected_ = true;
    co_return ok();
  }

  // Calls `visit` with each decodable entry of the Stream of `subject`, oldest first, up to
  // `limit` of them, paging through XRANGE (so a long Stream is not one huge reply). Entries
  // that do not decode are logged and passed over.
  template <class Visit>
  asio::awaitable<Result<void>> scan_stream(std::string subject, std::size_t limit,
                                            SteadyClock::time_point deadline, Visit visit) {
    if (!core_->commands) co_return redis_error(errc::failed_precondition, "not connected");
    const std::string key = core_->key(subject);
    std::string from = "-";
    std::size_t seen = 0;
    while (seen < limit) {
      const std::size_t page = std::min<std::size_t>(kScanPage, limit - seen);
      Command range{"XRANGE", key, from, "+", "COUNT", std::to_string(page)};
      auto reply =
          checked(co_await core_->commands->command(std::move(range), deadline), "XRANGE " + key);
      if (!reply) co_return std::move(reply).error();
      const std::vector<Entry> entries = entries_of(*reply, 1);
      for (const Entry& entry : entries) {
        auto message = decode_entry(entry.fields, subject);
        if (!message) {
          logger().warn("entry {} of {} is not a message, passed over: {}", entry.id, key,
                        message.error().describe());
          continue;
        }
        visit(entry, std::move(*message));
        ++seen;
      }
      if (reply->elements.size() < page) break;
      from = "(" + reply->elements.back().elements[0].text;
    }
    co_return ok();
  }
  static constexpr std::size_t kScanPage = 500;

  asio::awaitable<Result<void>> publish(Message message, PublishOptions options) override {
    if (auto usable = check_usable(); !usable) co_return usable;
    const RedisConfig& config = core_->config;
    const std::string subject(message.subject());
    const std::string key = core_->key(subject);
    const auto deadline = options.deadline;
    const std::string what = "publish on '" + subject + "'";

    const bool topic = options.kind == DestinationKind::topic;
    const bool query =
        topic && options.pattern == MessagingPattern::request_response && options.require_receiver;
    if (query || (topic && options.pattern == MessagingPattern::point_to_point &&
                  options.require_receiver)) {
      std::vector<std::string> args{core_->maxlen()};
      if (query) {
        // A responder reads at least once per block_timeout; allow for a slow round.
        args.push_back(millis(config.block_timeout * 3 + milliseconds(1'000)));
      }
      for (auto& f : entry_fields(message)) args.push_back(std::move(f));
      const ScriptId script = query ? ScriptId::send_query : ScriptId::send_command;
      std::vector<std::string> keys{key};
      auto reply = checked(
          co_await core_->run_script(script, std::move(keys), std::move(args), deadline), what);
      if (!reply) co_return std::move(reply).error();
      if (reply->is_nil()) {
        co_return redis_error(errc::not_found, query ? "no responder is reading '" + subject + "'"
                                                     : "no consumer group reads '" + subject +
                                                           "' (no service has subscribed)");
      }
      co_return ok();
    }
    // Bus streams, and commands that may wait for a service to come.
    if (options.kind == DestinationKind::stream ||
        options.pattern == MessagingPattern::point_to_point) {
      Command command{"XADD", key};
      if (config.max_stream_length > 0)
        command.insert(command.end(), {"MAXLEN", "~", core_->maxlen()});
      command.emplace_back("*");
      for (auto& f : entry_fields(message)) command.push_back(std::move(f));
      auto reply = checked(co_await core_->commands->command(std::move(command), deadline), what);
      if (!reply) co_return std::move(reply).error();
      co_return ok();
    }
    if (options.pattern == MessagingPattern::request_response ||
        options.guarantee == DeliveryGuarantee::at_most_once) {
      Command command{"PUBLISH", key, channel_payload(message)};
      auto reply = checked(co_await core_->commands->command(std::move(command), deadline), what);
      if (!reply) co_return std::move(reply).error();
      if (options.require_receiver && reply->integer == 0) {
        co_return redis_error(errc::not_found, "nobody listens on '" + subject + "'");
      }
      co_return ok();
    }
    std::vector<std::string> args{key, core_->maxlen(), channel_payload(message)};
    for (auto& f : entry_fields(message)) args.push_back(std::move(f));
    std::vector<std::string> keys{key};
    auto reply = checked(co_await core_->run_script(ScriptId::publish_event, std::move(keys),
                                                    std::move(args), deadline),
                         what);
    if (!reply) co_return std::move(reply).error();
    co_return ok();
  }

  asio::awaitable<Result<std::shared_ptr<Subscription>>> subscribe(SubscriptionSpec spec) override {
    if (auto usable = check_usable(); !usable) co_return std::move(usable).error();
    const bool wildcard = subject::has_wildcard(spec.subject);
    const bool on_channel =
        spec.kind == DestinationKind::topic &&
        (wildcard || spec.guarantee == DeliveryGuarantee::at_most_once ||
         (spec.pattern == MessagingPattern::request_response && spec.group.empty()));
    if (on_channel) co_return co_await subscribe_channel(std::move(spec), wildcard);
    co_return co_await subscribe_stream(std::move(spec));
  }

  asio::awaitable<Result<std::vector<Message>>> read_dead_letters(
      std::string dead_letter_subject, std::size_t limit,
      SteadyClock::time_point deadline) override {
    std::vector<Message> out;
    auto scanned = co_await scan_stream(dead_letter_subject, limit, deadline,
                                        [&](const Entry& entry, Message message) {
                                          (void)entry;
                                          out.push_back(std::move(message));
                                        });
    if (!scanned) co_return std::move(scanned).error();
    co_return out;
  }

  // A group of a Stream: entries not yet delivered to it (XINFO's lag, Redis 7) and delivered
  // but unacknowledged (its pending entries).
  asio::awaitable<Result<std::uint64_t>> consumer_lag(SubscriptionSpec spec,
                                                      SteadyClock::time_point deadline) override {
    if (auto usable = check_usable(); !usable) co_return std::move(usable).error();
    if (subject::has_wildcard(spec.subject) || spec.guarantee == DeliveryGuarantee::at_most_once) {
      co_return redis_error(errc::unimplemented, "'" + spec.subject +
                                                     "' is read from pub/sub channels, which keep "
                                                     "nothing for a group");
    }
    const std::string key = core_->key(spec.subject);
    Command info{"XINFO", "GROUPS", key};
    auto groups = co_await core_->commands->command(std::move(info), deadline);
    if (!groups) co_return std::move(groups).error().with_context("XINFO GROUPS " + key);
    const std::string missing = "no consumer group '" + spec.group + "' on '" + spec.subject + "'";
    if (groups->is_error()) {
      if (groups->text.find("no such key") != std::string::npos) {
        co_return redis_error(errc::not_found, missing);
      }
      co_return redis_error(code_for_error_reply(groups->error_code()),
                            "XINFO GROUPS " + key + ": " + groups->text);
    }
    for (const Reply& group : groups->elements) {
      std::map<std::string, const Reply*, std::less<>> fields;
      for (std::size_t i = 0; i + 1 < group.elements.size(); i += 2) {
        fields.emplace(group.elements[i].text, &group.elements[i + 1]);
      }
      auto name = fields.find("name");
      if (name == fields.end() || name->second->text != spec.group) continue;
      auto lag = fields.find("lag");
      auto pending = fields.find("pending");
      if (lag == fields.end() || pending == fields.end()) {
        co_return redis_error(errc::unimplemented,
                              "XINFO GROUPS reports no lag: Redis 7 or later is needed");
      }
      if (lag->second->is_nil()) {
        // Redis cannot count when entries were deleted past the group's position.
        co_return redis_error(errc::unavailable, "Redis cannot tell the lag of group '" +
                                                     spec.group + "' on '" + spec.subject +
                                                     "' (entries were deleted past its position)");
      }
      co_return static_cast<std::uint64_t>(std::max(0LL, lag->second->integer)) +
          static_cast<std::uint64_t>(std::max(0LL, pending->second->integer));
    }
    co_return redis_error(errc::not_found, missing);
  }

  asio::awaitable<Result<std::size_t>> remove_dead_letters(
      std::string dead_letter_subject, std::set<std::string> ids,
      SteadyClock::time_point deadline) override {
    Command remove{"XDEL", core_->key(dead_letter_subject)};
    auto scanned =
        co_await scan_stream(dead_letter_subject, std::numeric_limits<std::size_t>::max(), deadline,
                             [&](const Entry& entry, Message message) {
                               if (ids.contains(dead_letter_id(message))) {
                                 remove.push_back(entry.id);
                               }
                             });
    if (!scanned) co_return std::move(scanned).error();
    if (remove.size() == 2) co_return std::size_t{0};
    auto removed = checked(co_await core_->commands->command(std::move(remove), deadline),
                           "XDEL " + core_->key(dead_letter_subject));
    if (!removed) co_return std::move(removed).error();
    co_return static_cast<std::size_t>(removed->integer);
  }

  asio::awaitable<Result<void>> close(SteadyClock::time_point deadline) override {
    ConnectionPtr commands;
    {
      std::lock_guard lock(mutex_);
      if (!connected_) {
        core_->closed = true;
        co_return ok();
      }
      commands = core_->commands;
    }
    // Subscriptions first: what they send as they close (releasing unread entries, removing
    // private groups) goes out before the PING below, on the same connection.
    close_subscriptions();
    // Replies come in order: once a PING is answered, every earlier command has been.
    Command ping{"PING"};
    auto flushed = co_await commands->command(std::move(ping), deadline);
    shutdown();
    if (!flushed) co_return std::move(flushed).error().with_context("close: flushing publishes");
    co_return ok();
  }

 private:
  Result<void> check_usable() {
    std::lock_guard lock(mutex_);
    if (core_->closed) return redis_error(errc::failed_precondition, "the backend is closed");
    if (!connected_) return redis_error(errc::failed_precondition, "the backend is not connected");
    return ok();
  }

  void close_subscriptions() {
    std::vector<std::weak_ptr<Subscription>> subscriptions;
    {
      std::lock_guard lock(mutex_);
      subscriptions = std::move(subscriptions_);
      subscriptions_.clear();
    }
    for (auto& weak : subscriptions) {
      if (auto subscription = weak.lock()) subscription->close();
    }
  }

  void shutdown() {
    close_subscriptions();
    PubSubHubPtr hub;
    {
      std::lock_guard lock(mutex_);
      if (core_->closed.exchange(true)) return;
      hub = std::move(hub_);
    }
    if (hub) hub->connection()->close();
    if (core_->commands) core_->commands->close();
  }

  void track(const std::shared_ptr<Subscription>& subscription) {
    std::lock_guard lock(mutex_);
    std::erase_if(subscriptions_, [](const auto& weak) { return weak.expired(); });
    subscriptions_.push_back(subscription);
  }

  asio::awaitable<Result<std::shared_ptr<Subscription>>> subscribe_channel(SubscriptionSpec spec,
                                                                           bool wildcard) {
    PubSubHubPtr hub;
    {
      std::lock_guard lock(mutex_);
      hub = hub_;
    }
    if (!hub) co_return redis_error(errc::failed_precondition, "the backend is closed");
    const RedisConfig& config = core_->config;
    auto inbox = std::make_shared<ChannelInbox>();
    std::string name;
    if (wildcard) {
      inbox->pattern = spec.subject;
      name = glob_for(config.key_prefix, spec.subject);
    } else {
      name = core_->key(spec.subject);
    }
    const auto deadline = SteadyClock::now() + config.connect_timeout + config.outage_wait;
    auto added = co_await hub->add(name, wildcard, inbox, deadline);
    if (!added) co_return std::move(added).error().with_context("subscribe " + spec.subject);
    std::shared_ptr<Subscription> subscription =
        std::make_shared<ChannelSubscription>(hub, inbox, name, wildcard, config.key_prefix);
    track(subscription);
    co_return subscription;
  }

  asio::awaitable<Result<std::shared_ptr<Subscription>>> subscribe_stream(SubscriptionSpec spec) {
    const RedisConfig& config = core_->config;
    auto consumer = std::make_shared<StreamConsumer>();
    consumer->core = core_;
    consumer->subject = spec.subject;
    consumer->key = core_->key(spec.subject);
    consumer->topic = spec.kind == DestinationKind::topic;
    consumer->private_group = spec.group.empty();
    const std::string uid = make_uuid_v7();
    consumer->group = spec.group.empty() ? "private-" + uid : spec.group;
    consumer->consumer = config.client_name + "-" + uid;
    // Topics start with what is published from now on; streams where the spec says.
    const std::string start = consumer->topic ? "$" : group_start(spec.start);
    Command create{"XGROUP", "CREATE", consumer->key, consumer->group, start, "MKSTREAM"};
    auto created = co_await core_->commands->command(std::move(create));
    if (!created) co_return std::move(created).error().with_context("subscribe " + spec.subject);
    if (created->is_error() && created->error_code() != "BUSYGROUP") {
      co_return redis_error(code_for_error_reply(created->error_code()),
                            "subscribe " + spec.subject + ": creating group " + consumer->group +
                                ": " + created->text);
    }
    // The consumer exists from now on, so a query sent before its first read finds it live.
    Command join{"XGROUP", "CREATECONSUMER", consumer->key, consumer->group, consumer->consumer};
    auto joined = checked(co_await core_->commands->command(std::move(join)),
                          "subscribe " + spec.subject + ": joining group " + consumer->group);
    if (!joined) co_return std::move(joined).error();
    consumer->reader = core_->open_connection("reader");
    auto ready = co_await consumer->reader->wait_ready();
    if (!ready) {
      consumer->reader->close();
      co_return std::move(ready).error().with_context("subscribe " + spec.subject);
    }
    asio::co_spawn(consumer->reader->io(), consumer->read_loop(consumer), asio::detached);
    asio::co_spawn(consumer->reader->io(), consumer->reclaim_loop(consumer), asio::detached);
    std::shared_ptr<Subscription> subscription = std::make_shared<StreamSubscription>(consumer);
    track(subscription);
    co_return subscription;
  }

  CorePtr core_;
  Capabilities caps_;
  std::mutex mutex_;
  bool connected_ = false;
  PubSubHubPtr hub_;
  std::vector<std::weak_ptr<Subscription>> subscriptions_;
};

}  // namespace

std::shared_ptr<Backend> make_backend(RedisConfig config) {
  return std::make_shared<RedisBackend>(std::move(config));
}

}  // namespace marty::messaging::redis
