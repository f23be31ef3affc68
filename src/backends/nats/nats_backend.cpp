// The NATS backend: core NATS for queries and at-most-once traffic, JetStream for everything
// at-least-once (events and commands through one interest-retention stream, bus streams and
// dead letters as streams of their own).
//
// Consumers are JetStream push consumers that we create and delete ourselves (js_AddConsumer)
// and read through plain subscriptions on their deliver subject; acks are the JetStream ack
// protocol published on the message's reply subject. Owning the consumers (rather than letting
// nats.c create them inside js_Subscribe) is what keeps durable groups alive when a member
// unsubscribes, and lets a restarted member resume the same consumer by its derived name.
//
// Threads: nats.c calls our message callback on its own threads; the callback only queues the
// message and wakes the receiver, which runs on the bus's executor. Blocking nats.c calls
// (connect, JetStream publish and management, requests) run on a small pool (detail::offload).
#include "marty/messaging/nats_backend.hpp"

#include <algorithm>
#include <deque>
#include <limits>
#include <mutex>
#include <set>
#include <unordered_map>

#include <spdlog/spdlog.h>
#include <asio/thread_pool.hpp>

#include "marty/messaging/dead_letters.hpp"
#include "marty/messaging/detail/async_signal.hpp"
#include "marty/messaging/detail/backoff.hpp"
#include "marty/messaging/detail/log.hpp"
#include "marty/messaging/detail/offload.hpp"
#include "marty/messaging/detail/url.hpp"
#include "marty/messaging/subject.hpp"
#include "nats_wire.hpp"

namespace marty::messaging::nats {
namespace {

using detail::AsyncSignal;
using detail::offload;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;

constexpr std::string_view kDeliverPrefix = "_MARTY.deliver.";
constexpr std::string_view kCommandSubjects = "commands.>";
// How long the server keeps an ephemeral consumer without a subscriber. Longer than any
// outage a subscriber should survive (nats.c re-subscribes after reconnecting, and the
// consumer must still be there), short enough that consumers of crashed processes go.
constexpr std::chrono::minutes kEphemeralInactivity{10};
// Messages a core (at-most-once) subscription may queue before it drops, as NATS does for a
// slow consumer. JetStream subscriptions are bounded by max_ack_pending instead.
constexpr std::size_t kCoreQueueLimit = 65'536;
// JetStream publishes in flight per connection. Beyond it nats.c makes the publishing thread
// (the bus's executor) wait up to 200 ms, so the bound is set far above what a bus keeps in
// flight (each publish_event waits for its acknowledgement).
constexpr int kMaxPendingPublishes = 65'536;

using marty::messaging::detail::logger;

Error nats_error(errc code, std::string message) {
  return Error(code, std::move(message), std::string(kBackendName));
}

std::int64_t nanos(std::chrono::nanoseconds d) {
  return d.count();
}

// The names already made on servers (streams, consumers) were hashed from this basis: kept,
// so that they stay the same.
constexpr std::uint64_t kNameHashBasis = 1469598103934665603ull;
std::uint64_t fnv1a(std::string_view text) {
  return detail::fnv1a(text, kNameHashBasis);
}

// A JetStream publish waiting for the server's acknowledgement.
struct PublishWaiter {
  std::shared_ptr<AsyncSignal> signal = AsyncSignal::create();
  std::mutex mutex;
  std::optional<Result<void>> result;  // set once, by the acknowledgement handler
};

// Publishes in flight, by their nats.c message (unique while nats.c holds it, that is until
// its acknowledgement handler has run).
struct PendingPublishes {
  std::mutex mutex;
  std::unordered_map<const natsMsg*, std::shared_ptr<PublishWaiter>> waiters;

  void add(const natsMsg* msg, std::shared_ptr<PublishWaiter> waiter) {
    std::lock_guard lock(mutex);
    waiters.emplace(msg, std::move(waiter));
  }
  std::shared_ptr<PublishWaiter> take(const natsMsg* msg) {
    std::lock_guard lock(mutex);
    auto it = waiters.find(msg);
    if (it == waiters.end()) return nullptr;
    auto waiter = std::move(it->second);
    waiters.erase(it);
    return waiter;
  }
  // Removes `waiter` if it is still registered under `msg`. Only its own: once the handler has
  // taken it, the address may already belong to a newer publish.
  void forget(const natsMsg* msg, const std::shared_ptr<PublishWaiter>& waiter) {
    std::lock_guard lock(mutex);
    auto it = waiters.find(msg);
    if (it != waiters.end() && it->second == waiter) waiters.erase(it);
  }
};
using PendingPublishesPtr = std::shared_ptr<PendingPublishes>;

// nats.c may still be running an acknowledgement handler when a connection goes (destroying
// the JetStream context does not wait for it), so handlers reach their connection's publishes
// by a number looked up here rather than by a pointer into the connection.
class PublishRegistry {
 public:
  static PublishRegistry& instance() {
    static PublishRegistry registry;
    return registry;
  }
  std::uintptr_t add(PendingPublishesPtr pending) {
    std::lock_guard lock(mutex_);
    const std::uintptr_t id = next_++;
    entries_.emplace(id, std::move(pending));
    return id;
  }
  PendingPublishesPtr find(std::uintptr_t id) {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(id);
    return it == entries_.end() ? nullptr : it->second;
  }
  void remove(std::uintptr_t id) {
    std::lock_guard lock(mutex_);
    entries_.erase(id);
  }

 private:
  std::mutex mutex_;
  std::uintptr_t next_ = 1;
  std::unordered_map<std::uintptr_t, PendingPublishesPtr> entries_;
};

// nats.c's acknowledgement handler (on its thread): completes the waiting publish, if it has
// not given up yet. A duplicate acknowledgement (the server had stored this message id already,
// as for a retried publish) is a success.
void on_publish_ack(jsCtx*, natsMsg* msg, jsPubAck*, jsPubAckErr* failure, void* closure) {
  NatsMsgPtr owned(msg);
  auto pending = PublishRegistry::instance().find(reinterpret_cast<std::uintptr_t>(closure));
  auto waiter = pending ? pending->take(msg) : nullptr;
  if (!waiter) return;
  Result<void> result = ok();
  if (failure != nullptr) {
    const std::string subject = natsMsg_GetSubject(msg);
    std::string what = "JetStream publish on '" + subject + "'";
    if (failure->ErrText != nullptr) what += std::string(": ") + failure->ErrText;
    result = failure->Err == NATS_NO_RESPONDERS
                 ? nats_error(errc::not_found, "no JetStream stream captures '" + subject + "'")
                 : status_error(failure->Err, what, failure->ErrCode);
  }
  {
    std::lock_guard lock(waiter->mutex);
    waiter->result = std::move(result);
  }
  waiter->signal->notify();
}

// A request waiting for its reply.
struct RequestWaiter {
  std::shared_ptr<AsyncSignal> signal = AsyncSignal::create();
  std::mutex mutex;
  NatsMsgPtr reply;
};

// The connection's requests in flight: replies come to "<prefix>.<token>" on one wildcard
// subscription, so a request needs no subscription (and no thread) of its own.
struct PendingRequests {
  std::string prefix;  // a unique inbox
  std::atomic<std::uint64_t> next_token{1};
  std::mutex mutex;
  std::unordered_map<std::string, std::shared_ptr<RequestWaiter>> waiters;

  std::shared_ptr<RequestWaiter> take(std::string_view token) {
    std::lock_guard lock(mutex);
    auto it = waiters.find(std::string(token));
    if (it == waiters.end()) return nullptr;
    auto waiter = std::move(it->second);
    waiters.erase(it);
    return waiter;
  }
};
using PendingRequestsPtr = std::shared_ptr<PendingRequests>;

void on_reply(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
  NatsMsgPtr owned(msg);
  PendingRequests& pending = **static_cast<PendingRequestsPtr*>(closure);
  const std::string_view subject = natsMsg_GetSubject(msg);
  if (subject.size() <= pending.prefix.size() + 1) return;
  // A reply after its request gave up (deadline) goes nowhere, as with any NATS request.
  if (auto waiter = pending.take(subject.substr(pending.prefix.size() + 1))) {
    {
      std::lock_guard lock(waiter->mutex);
      waiter->reply = std::move(owned);
    }
    waiter->signal->notify();
  }
}

void on_replies_complete(void* closure) {
  delete static_cast<PendingRequestsPtr*>(closure);
}

// nats.c handles of one connection. Deliveries and subscriptions keep it alive; close()
// closes it early (later calls then fail with unavailable).
struct Connection {
  PendingPublishesPtr pending = std::make_shared<PendingPublishes>();
  std::uintptr_t pending_id = PublishRegistry::instance().add(pending);
  PendingRequestsPtr requests = std::make_shared<PendingRequests>();
  natsSubscription* replies = nullptr;
  natsConnection* nc = nullptr;
  // Replies go out on a connection that writes at once: nats.c otherwise batches writes in a
  // flusher thread, which adds about 0.6 ms to every round trip.
  natsConnection* reply_nc = nullptr;
  jsCtx* js = nullptr;

  Connection() = default;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection() {
    if (replies != nullptr) {
      natsSubscription_Unsubscribe(replies);
      natsSubscription_Destroy(replies);
    }
    if (js != nullptr) jsCtx_Destroy(js);
    PublishRegistry::instance().remove(pending_id);
    for (natsConnection* c : {nc, reply_nc}) {
      if (c == nullptr) continue;
      natsConnection_Close(c);
      natsConnection_Destroy(c);
    }
  }
  void close() {
    for (natsConnection* c : {nc, reply_nc}) {
      if (c != nullptr) natsConnection_Close(c);
    }
  }
};
using ConnectionPtr = std::shared_ptr<Connection>;

// What a nats.c subscription has delivered and the receiver has not taken yet.
struct Inbox {
  std::mutex mutex;
  std::deque<NatsMsgPtr> messages;
  bool closed = false;
  // Why, when nats.c closed the subscription rather than we (its connection closed for good).
  std::optional<Error> failure;
  std::size_t dropped = 0;
  std::size_t limit = 0;  // 0: no limit of its own
  std::shared_ptr<AsyncSignal> signal = AsyncSignal::create();
};
using InboxPtr = std::shared_ptr<Inbox>;

// nats.c's callbacks get a heap-held reference to the inbox, released when nats.c says the
// subscription is complete (no callback runs after that).
void on_message(natsConnection* nc, natsSubscription*, natsMsg* msg, void* closure) {
  Inbox& inbox = **static_cast<InboxPtr*>(closure);
  NatsMsgPtr owned(msg);
  {
    std::lock_guard lock(inbox.mutex);
    if (inbox.closed) {
      // Arrived while closing: back to the consumer at once (a no-op for core messages,
      // which have no acknowledgement subject).
      const char* reply = natsMsg_GetReply(msg);
      if (reply != nullptr && std::string_view(reply).starts_with("$JS.ACK.")) {
        natsConnection_Publish(nc, reply, "-NAK", 4);
      }
      return;
    }
    if (inbox.limit != 0 && inbox.messages.size() >= inbox.limit) {
      if (inbox.dropped++ % 10'000 == 0) {
        logger().warn("NATS subscriber on {} is not keeping up: dropped {} message(s)",
                      natsMsg_GetSubject(owned.get()), inbox.dropped);
      }
      return;
    }
    inbox.messages.push_back(std::move(owned));
  }
  inbox.signal->notify();
}

// nats.c is done with the subscription: after our close(), or because the connection closed
// for good, in which case the receiver is woken with the reason rather than left waiting.
void on_complete(void* closure) {
  auto* inbox = static_cast<InboxPtr*>(closure);
  {
    std::lock_guard lock((*inbox)->mutex);
    if (!(*inbox)->closed) {
      (*inbox)->closed = true;
      (*inbox)->failure =
          nats_error(errc::unavailable, "the NATS connection closed this subscription for good");
    }
  }
  (*inbox)->signal->notify();
  delete inbox;
}

// The JetStream acknowledgement protocol, published on the message's reply subject.
Result<void> send_ack(const ConnectionPtr& connection, natsMsg* msg, std::string_view body) {
  const char* reply = natsMsg_GetReply(msg);
  if (reply == nullptr || *reply == '\0') {
    return nats_error(errc::failed_precondition, "message has no acknowledgement subject");
  }
  const natsStatus status =
      natsConnection_Publish(connection->nc, reply, body.data(), static_cast<int>(body.size()));
  if (status != NATS_OK) return status_error(status, "acknowledging a message");
  return ok();
}

class NatsDelivery final : public Delivery {
 public:
  // With `decode_error`, a poison delivery: `message` holds the raw bytes (undecodable_message).
  NatsDelivery(Message message, JetStreamInfo info, ConnectionPtr connection, NatsMsgPtr msg,
               bool jetstream, std::optional<Error> decode_error = std::nullopt)
      : Delivery(std::move(message), info.delivered, info.stream_sequence),
        connection_(std::move(connection)),
        msg_(std::move(msg)),
        jetstream_(jetstream) {
    if (decode_error) set_decode_error(std::move(*decode_error));
  }

  ~NatsDelivery() override {
    // Unsettled: release it for redelivery now rather than after the ack wait.
    if (jetstream_ && !settled_) (void)send_ack(connection_, msg_.get(), "-NAK");
  }

  asio::awaitable<Result<void>> ack() override { co_return settle("+ACK"); }

  asio::awaitable<Result<void>> nack(milliseconds delay) override {
    if (!jetstream_) {
      settled_ = true;
      co_return nats_error(errc::unimplemented,
                           "core NATS delivers at most once: a failed message is not redelivered");
    }
    co_return settle(delay.count() > 0 ? "-NAK {\"delay\": " + std::to_string(nanos(delay)) + "}"
                                       : std::string("-NAK"));
  }

  asio::awaitable<Result<void>> term() override { co_return settle("+TERM"); }

 private:
  Result<void> settle(const std::string& body) {
    if (settled_) return nats_error(errc::failed_precondition, "delivery was already settled");
    settled_ = true;
    if (!jetstream_) return ok();
    return send_ack(connection_, msg_.get(), body);
  }

  ConnectionPtr connection_;
  NatsMsgPtr msg_;
  bool jetstream_;
  bool settled_ = false;
};

class NatsSubscription final : public Subscription {
 public:
  // `skip_before`: messages stored earlier are acknowledged and not handed out (see
  // open_consumer: the consumer may start a little before the time asked for).
  NatsSubscription(ConnectionPtr connection, InboxPtr inbox, natsSubscription* sub, bool jetstream,
                   std::string description, std::optional<std::int64_t> skip_before)
      : connection_(std::move(connection)),
        inbox_(std::move(inbox)),
        sub_(sub),
        jetstream_(jetstream),
        description_(std::move(description)),
        skip_before_(skip_before) {}

  ~NatsSubscription() override {
    close();
    natsSubscription_Destroy(sub_);
  }

  asio::awaitable<Result<std::unique_ptr<Delivery>>> receive(
      std::optional<SteadyClock::time_point> deadline) override {
    while (true) {
      NatsMsgPtr msg;
      {
        std::lock_guard lock(inbox_->mutex);
        if (inbox_->closed) {
          if (inbox_->failure) co_return inbox_->failure->with_context(description_);
          co_return nats_error(errc::cancelled, "subscription to " + description_ + " is closed");
        }
        if (!inbox_->messages.empty()) {
          msg = std::move(inbox_->messages.front());
          inbox_->messages.pop_front();
        }
      }
      if (msg) {
        auto delivery = to_delivery(std::move(msg));
        if (delivery) co_return std::move(delivery);
        continue;
      }
      if (!co_await inbox_->signal->wait(deadline)) {
        co_return nats_error(errc::deadline_exceeded, "no message before the deadline");
      }
    }
  }

  void close() override {
    std::deque<NatsMsgPtr> unreceived;
    {
      std::lock_guard lock(inbox_->mutex);
      if (inbox_->closed) return;
      inbox_->closed = true;
      unreceived.swap(inbox_->messages);
    }
    natsSubscription_Unsubscribe(sub_);
    // Queued but never handed out: give them back to the consumer at once.
    if (jetstream_) {
      for (const auto& msg : unreceived) (void)send_ack(connection_, msg.get(), "-NAK");
    }
    inbox_->signal->notify();
  }

 private:
  // nullptr for a message that is not for the bus (no acknowledgement subject, or stored before
  // the start asked for). One that cannot be decoded is handed up as a poison delivery, which
  // the bus dead-letters.
  std::unique_ptr<Delivery> to_delivery(NatsMsgPtr msg) {
    JetStreamInfo info;
    if (jetstream_) {
      const char* reply = natsMsg_GetReply(msg.get());
      auto parsed = parse_ack_subject(reply != nullptr ? reply : "");
      if (!parsed) {
        logger().error("NATS message on {} has no JetStream acknowledgement subject; dropped",
                       natsMsg_GetSubject(msg.get()));
        return nullptr;
      }
      info = *parsed;
      if (skip_before_ && info.timestamp_ns < *skip_before_) {
        (void)send_ack(connection_, msg.get(), "+ACK");
        return nullptr;
      }
    }
    auto message = from_nats(msg.get(), jetstream_);
    if (!message) {
      const char* data = natsMsg_GetData(msg.get());
      Message raw = undecodable_message(
          natsMsg_GetSubject(msg.get()),
          std::string(data != nullptr ? data : "",
                      static_cast<std::size_t>(natsMsg_GetDataLength(msg.get()))));
      return std::make_unique<NatsDelivery>(std::move(raw), info, connection_, std::move(msg),
                                            jetstream_, std::move(message).error());
    }
    return std::make_unique<NatsDelivery>(std::move(*message), info, connection_, std::move(msg),
                                          jetstream_);
  }

  ConnectionPtr connection_;
  InboxPtr inbox_;
  natsSubscription* sub_;
  bool jetstream_;
  std::string description_;
  std::optional<std::int64_t> skip_before_;
};

// ---- configuration ----

Result<void> validate(const NatsConfig& config) {
  auto bad = [](std::string what) { return nats_error(errc::invalid_argument, std::move(what)); };
  if (config.servers.empty()) return bad("NatsConfig.servers is empty: name at least one server");
  for (std::size_t i = 0; i < config.servers.size(); ++i) {
    const std::string& url = config.servers[i];
    const auto scheme = url.find("://");
    const std::string_view name =
        scheme == std::string::npos ? std::string_view() : std::string_view(url).substr(0, scheme);
    const bool known = name == "nats" || name == "tls" || name == "ws" || name == "wss";
    const std::string_view rest =
        scheme == std::string::npos ? std::string_view() : std::string_view(url).substr(scheme + 3);
    if (!known || rest.empty() || rest.find_first_of(" \t") != std::string_view::npos) {
      return bad("NatsConfig.servers[" + std::to_string(i) + "]: '" + detail::redact_url(url) +
                 "' is not a URL like nats://host:4222");
    }
  }
  if (!config.tls.cert_file.empty() && config.tls.key_file.empty()) {
    return bad("NatsConfig.tls.cert_file is set but tls.key_file is empty");
  }
  if (config.tls.cert_file.empty() && !config.tls.key_file.empty()) {
    return bad("NatsConfig.tls.key_file is set but tls.cert_file is empty");
  }
  if (!config.token.empty() && !config.user.empty()) {
    return bad("NatsConfig: set either token or user/password, not both");
  }
  if (config.max_ack_pending <= 0) return bad("NatsConfig.max_ack_pending must be positive");
  if (config.blocking_threads <= 0) return bad("NatsConfig.blocking_threads must be positive");
  if (config.ack_wait.count() <= 0) return bad("NatsConfig.ack_wait must be positive");
  if (config.publish_timeout.count() <= 0) {
    return bad("NatsConfig.publish_timeout must be positive");
  }
  if (config.jetstream) {
    if (config.topic_stream.empty() || jetstream_name(config.topic_stream) != config.topic_stream) {
      return bad("NatsConfig.topic_stream '" + config.topic_stream +
                 "' is not a valid JetStream name (letters, digits, '_' and '-')");
    }
    for (const auto& subject : config.topic_subjects) {
      if (auto valid = subject::validate_pattern(subject, "NatsConfig.topic_subjects"); !valid) {
        return valid;
      }
      if (!config.command_stream.empty() && subject::matches(subject, "commands.any.command")) {
        return bad("NatsConfig.topic_subjects: '" + subject +
                   "' captures commands, which command_stream '" + config.command_stream +
                   "' takes");
      }
    }
    if (!config.command_stream.empty() &&
        (jetstream_name(config.command_stream) != config.command_stream ||
         config.command_stream == config.topic_stream)) {
      return bad("NatsConfig.command_stream '" + config.command_stream +
                 "' is not a valid JetStream name distinct from topic_stream");
    }
  }
  for (const auto& [name, stream] : config.streams) {
    const std::string where = "NatsConfig.streams[" + name + "]";
    if (name.empty()) return bad("NatsConfig.streams: a stream has an empty name");
    if (stream.replicas < 1 || stream.replicas > 5) return bad(where + ".replicas must be 1..5");
    if (stream.max_messages < -1 || stream.max_messages == 0) {
      return bad(where + ".max_messages must be positive or -1 (unlimited)");
    }
    if (stream.max_bytes < -1 || stream.max_bytes == 0) {
      return bad(where + ".max_bytes must be positive or -1 (unlimited)");
    }
    if (stream.max_age.count() < 0) return bad(where + ".max_age must not be negative");
  }
  return ok();
}

// nats.c reports some failures only asynchronously (a subscription refused by the server's
// permissions, a slow consumer); they are logged, with the subject when there is one.
void on_async_error(natsConnection*, natsSubscription* sub, natsStatus status, void*) {
  const char* subject = sub != nullptr ? natsSubscription_GetSubject(sub) : nullptr;
  logger().error("NATS reported {}{}{}", natsStatus_GetText(status),
                 subject != nullptr ? " on subscription " : "", subject != nullptr ? subject : "");
}

void on_disconnected(natsConnection* nc, void*) {
  // nats.c also reports our own close() as a disconnection.
  if (natsConnection_IsClosed(nc) || natsConnection_Status(nc) == NATS_CONN_STATUS_CLOSED) return;
  logger().warn("NATS connection lost; reconnecting");
}

void on_reconnected(natsConnection* nc, void*) {
  char url[256] = {0};
  natsConnection_GetConnectedUrl(nc, url, sizeof url);
  logger().info("NATS connection re-established to {}", detail::redact_url(url));
}

Result<natsOptions*> make_options(const NatsConfig& config, bool send_asap) {
  natsOptions* options = nullptr;
  natsStatus s = natsOptions_Create(&options);
  if (s != NATS_OK) return status_error(s, "creating NATS options");
  std::unique_ptr<natsOptions, void (*)(natsOptions*)> guard(options, natsOptions_Destroy);
  std::vector<const char*> servers;
  for (const auto& url : config.servers) servers.push_back(url.c_str());
  auto step = [&](natsStatus status, const char* what) -> Result<void> {
    if (status != NATS_OK) return status_error(status, std::string("NatsConfig: ") + what);
    return ok();
  };
  std::vector<Result<void>> steps;
  steps.push_back(
      step(natsOptions_SetServers(options, servers.data(), static_cast<int>(servers.size())),
           "servers"));
  steps.push_back(step(natsOptions_SetName(options, config.name.c_str()), "name"));
  if (!config.user.empty()) {
    steps.push_back(step(
        natsOptions_SetUserInfo(options, config.user.c_str(), config.password.c_str()), "user"));
  }
  if (!config.token.empty()) {
    steps.push_back(step(natsOptions_SetToken(options, config.token.c_str()), "token"));
  }
  if (!config.credentials_file.empty()) {
    steps.push_back(step(
        natsOptions_SetUserCredentialsFromFiles(options, config.credentials_file.c_str(), nullptr),
        "credentials_file"));
  }
  if (config.tls.enabled) {
    steps.push_back(step(natsOptions_SetSecure(options, true), "tls.enabled"));
    if (!config.tls.ca_file.empty()) {
      steps.push_back(
          step(natsOptions_LoadCATrustedCertificates(options, config.tls.ca_file.c_str()),
               "tls.ca_file"));
    }
    if (!config.tls.cert_file.empty()) {
      steps.push_back(step(natsOptions_LoadCertificatesChain(options, config.tls.cert_file.c_str(),
                                                             config.tls.key_file.c_str()),
                           "tls.cert_file/key_file"));
    }
    if (!config.tls.verify_hostname) {
      steps.push_back(step(natsOptions_SkipServerVerification(options, true), "tls.verify"));
    }
  }
  steps.push_back(
      step(natsOptions_SetTimeout(options, config.connect_timeout.count()), "connect_timeout"));
  steps.push_back(step(natsOptions_SetMaxReconnect(options, config.max_reconnect_attempts),
                       "max_reconnect_attempts"));
  steps.push_back(
      step(natsOptions_SetReconnectWait(options, config.reconnect_wait.count()), "reconnect_wait"));
  steps.push_back(step(natsOptions_SetReconnectBufSize(options, config.reconnect_buffer_bytes),
                       "reconnect_buffer_bytes"));
  steps.push_back(step(natsOptions_SetSendAsap(options, send_asap), "send_asap"));
  steps.push_back(step(natsOptions_SetErrorHandler(options, on_async_error, nullptr), "errors"));
  steps.push_back(
      step(natsOptions_SetDisconnectedCB(options, on_disconnected, nullptr), "disconnects"));
  steps.push_back(
      step(natsOptions_SetReconnectedCB(options, on_reconnected, nullptr), "reconnects"));
  for (auto& result : steps) {
    if (!result) return std::move(result).error();
  }
  return guard.release();
}

Result<natsConnection*> open_connection(const NatsConfig& config, bool send_asap) {
  auto options = make_options(config, send_asap);
  if (!options) return std::move(options).error();
  natsConnection* nc = nullptr;
  const natsStatus s = natsConnection_Connect(&nc, *options);
  natsOptions_Destroy(*options);
  if (s != NATS_OK) {
    std::string servers;
    for (const auto& url : config.servers) {
      servers += (servers.empty() ? "" : ", ") + detail::redact_url(url);
    }
    return status_error(s, "connecting to " + servers);
  }
  return nc;
}

struct StreamState {
  std::set<std::string> subjects;
  jsRetentionPolicy retention;
  jsStorageType storage;
};

std::string join(const std::set<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return "[" + out + "]";
}

jsRetentionPolicy js_retention(Retention retention) {
  switch (retention) {
    case Retention::interest:
      return js_InterestPolicy;
    case Retention::workqueue:
      return js_WorkQueuePolicy;
    case Retention::limits:
      break;
  }
  return js_LimitsPolicy;
}

// Creates the stream, or checks that the existing one is the same stream (subjects,
// retention, storage) and updates its limits. A different existing stream is an error, never
// a silent change.
Result<void> provision_stream(jsCtx* js, const std::string& name, const StreamConfig& wanted) {
  std::vector<const char*> subjects;
  for (const auto& s : wanted.subjects) subjects.push_back(s.c_str());
  jsStreamConfig config;
  jsStreamConfig_Init(&config);
  config.Name = name.c_str();
  config.Subjects = subjects.data();
  config.SubjectsLen = static_cast<int>(subjects.size());
  config.Retention = js_retention(wanted.retention);
  config.Storage = wanted.storage == Storage::memory ? js_MemoryStorage : js_FileStorage;
  config.MaxMsgs = wanted.max_messages;
  config.MaxBytes = wanted.max_bytes;
  config.MaxAge = nanos(wanted.max_age);
  config.Replicas = wanted.replicas;
  config.Duplicates = nanos(wanted.duplicate_window);

  jsStreamInfo* info = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  natsStatus s = js_AddStream(&info, js, &config, nullptr, &code);
  if (s == NATS_OK) {
    jsStreamInfo_Destroy(info);
    return ok();
  }
  if (s == NATS_NO_RESPONDERS) {
    return nats_error(errc::failed_precondition,
                      "creating JetStream stream '" + name +
                          "': JetStream is not enabled on the server (nats-server -js), or set "
                          "NatsConfig.jetstream = false");
  }
  if (code != JSStreamNameExistErr) {
    return status_error(s, "creating JetStream stream '" + name + "'", code);
  }
  s = js_GetStreamInfo(&info, js, name.c_str(), nullptr, &code);
  if (s != NATS_OK) return status_error(s, "reading JetStream stream '" + name + "'", code);
  StreamState existing{{}, info->Config->Retention, info->Config->Storage};
  for (int i = 0; i < info->Config->SubjectsLen; ++i) {
    existing.subjects.insert(info->Config->Subjects[i]);
  }
  jsStreamInfo_Destroy(info);
  const std::set<std::string> wanted_subjects(wanted.subjects.begin(), wanted.subjects.end());
  if (existing.subjects != wanted_subjects || existing.retention != config.Retention ||
      existing.storage != config.Storage) {
    return nats_error(errc::failed_precondition,
                      "JetStream stream '" + name + "' exists with subjects " +
                          join(existing.subjects) + " and other settings than configured (" +
                          join(wanted_subjects) +
                          "); change or delete it deliberately, the backend will not");
  }
  s = js_UpdateStream(&info, js, &config, nullptr, &code);
  if (s != NATS_OK) return status_error(s, "updating JetStream stream '" + name + "'", code);
  jsStreamInfo_Destroy(info);
  return ok();
}

// Calls `visit(sequence, message)` with the messages of JetStream stream `stream`, oldest
// first, up to `limit` of them, reading each by its sequence (deleted ones are passed over;
// ones that do not decode are logged and passed over). A stream that does not exist has none.
// Blocks: run it on the pool.
template <class Visit>
Result<void> scan_stream(jsCtx* js, const std::string& stream, std::size_t limit, Visit visit) {
  jsStreamInfo* info = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  natsStatus s = js_GetStreamInfo(&info, js, stream.c_str(), nullptr, &code);
  if (s != NATS_OK) {
    if (code == JSStreamNotFoundErr || s == NATS_NOT_FOUND) return ok();
    return status_error(s, "reading JetStream stream '" + stream + "'", code);
  }
  const std::uint64_t first = info->State.FirstSeq;
  const std::uint64_t last = info->State.LastSeq;
  jsStreamInfo_Destroy(info);
  std::size_t seen = 0;
  for (std::uint64_t sequence = first; sequence != 0 && sequence <= last && seen < limit;
       ++sequence) {
    natsMsg* raw = nullptr;
    code = static_cast<jsErrCode>(0);
    s = js_GetMsg(&raw, js, stream.c_str(), sequence, nullptr, &code);
    if (s != NATS_OK) {
      if (code == JSNoMessageFoundErr || s == NATS_NOT_FOUND) continue;  // deleted
      return status_error(s, "reading message " + std::to_string(sequence) + " of '" + stream + "'",
                          code);
    }
    NatsMsgPtr msg(raw);
    auto message = from_nats(msg.get(), true);
    if (!message) {
      logger().warn("message {} of JetStream stream {} is not ours, passed over: {}", sequence,
                    stream, message.error().describe());
      continue;
    }
    visit(sequence, std::move(*message));
    ++seen;
  }
  return ok();
}

Capabilities capabilities_for(const NatsConfig& config) {
  Capabilities caps;
  caps.patterns = {MessagingPattern::pub_sub, MessagingPattern::point_to_point,
                   MessagingPattern::request_response, MessagingPattern::broadcast};
  caps.consumer_groups = true;
  caps.native_request_reply = true;
  caps.headers = true;
  caps.wildcard_subscriptions = true;
  caps.max_payload_bytes = 1u << 20;  // the server's default max_payload
  // JetStream redelivers a failed message while later ones go on, so order holds per subject
  // only until a failure: no ordering is declared.
  caps.ordering = Ordering::none;
  if (config.jetstream) {
    caps.patterns.insert(MessagingPattern::streaming);
    caps.delivery = DeliveryGuarantee::at_least_once;
    caps.persistent_replay = true;
    caps.durable_groups = true;
    caps.delayed_redelivery = true;
    caps.deduplicates_by_id = true;  // every JetStream publish carries Nats-Msg-Id
    caps.inspectable_dead_letters =
        true;                  // dead letters are a stream: read and deleted by sequence
    caps.consumer_lag = true;  // a durable consumer's pending and unacknowledged counts
  }
  return caps;
}

class NatsBackend final : public Backend {
 public:
  explicit NatsBackend(NatsConfig config)
      : config_(std::move(config)),
        capabilities_(capabilities_for(config_)),
        pool_(static_cast<std::size_t>(std::max(1, config_.blocking_threads))) {}

  ~NatsBackend() override {
    close_subscriptions();
    pool_.join();
  }

  std::string_view name() const noexcept override { return kBackendName; }
  const Capabilities& capabilities() const noexcept override { return capabilities_; }

  asio::awaitable<Result<void>> connect() override {
    if (auto valid = validate(config_); !valid) co_return valid;
    {
      std::lock_guard lock(mutex_);
      if (connection_) co_return ok();
    }
    // Pool tasks use `this`: the destructor joins the pool, so none outlives the backend (a
    // task holding a shared_ptr could end up running the destructor on the pool itself).
    auto work = [this]() -> Result<ConnectionPtr> { return open(); };
    auto opened = co_await offload(pool_, std::move(work));
    if (!opened) co_return std::move(opened).error();
    std::lock_guard lock(mutex_);
    connection_ = std::move(*opened);
    co_return ok();
  }

  asio::awaitable<Result<void>> publish(Message message, PublishOptions options) override {
    auto connection = current();
    if (!connection) co_return nats_error(errc::unavailable, "backend is not connected");
    const std::string subject(message.subject());
    auto msg = to_nats(message, subject);
    if (!msg) co_return std::move(msg).error();

    // At-most-once traffic goes out as a core publish even on captured subjects (the stream
    // still stores it for its consumers); only at-least-once waits for JetStream's ack.
    const bool at_most_once = options.guarantee == DeliveryGuarantee::at_most_once &&
                              options.kind == DestinationKind::topic;
    if (at_most_once || !uses_jetstream(subject, options.kind)) {
      natsConnection* nc = subject.starts_with("_INBOX.") ? connection->reply_nc : connection->nc;
      const natsStatus s = natsConnection_PublishMsg(nc, msg->get());
      if (s != NATS_OK) co_return status_error(s, "publishing on '" + subject + "'");
      co_return ok();
    }

    // The first publish to a stream creates it, and a command needs its service's consumer
    // group: blocking round trips, on the pool, once per stream or command subject.
    const bool check_receiver =
        options.pattern == MessagingPattern::point_to_point && options.require_receiver;
    const bool new_stream = options.kind == DestinationKind::stream && !known_stream(subject);
    if (new_stream || (check_receiver && !known_receiver(subject))) {
      auto prepare = [this, connection, subject, new_stream, check_receiver]() -> Result<void> {
        if (new_stream) {
          if (auto made = ensure_stream(connection, subject); !made) return made;
        }
        if (check_receiver) return check_command_receiver(connection, subject);
        return ok();
      };
      if (auto ready = co_await offload(pool_, std::move(prepare)); !ready) co_return ready;
    }
    const std::string dedup_id =
        options.deduplication_id.empty() ? std::string(message.id()) : options.deduplication_id;
    co_return co_await publish_to_jetstream(connection, std::move(*msg), subject, dedup_id,
                                            options.deadline);
  }

  asio::awaitable<Result<std::vector<Message>>> read_dead_letters(
      std::string dead_letter_subject, std::size_t limit,
      SteadyClock::time_point /*deadline*/) override {
    auto connection = current();
    if (!connection) co_return nats_error(errc::unavailable, "backend is not connected");
    auto work = [connection, dead_letter_subject, limit]() -> Result<std::vector<Message>> {
      std::vector<Message> out;
      auto scanned =
          scan_stream(connection->js, jetstream_name(dead_letter_subject), limit,
                      [&](std::uint64_t, Message message) { out.push_back(std::move(message)); });
      if (!scanned) return std::move(scanned).error();
      return out;
    };
    co_return co_await offload(pool_, std::move(work));
  }

  // A group is a durable consumer: what waits for it is what the stream holds beyond its ack
  // floor, not yet delivered (NumPending) or delivered and unacknowledged (NumAckPending).
  asio::awaitable<Result<std::uint64_t>> consumer_lag(SubscriptionSpec spec,
                                                      SteadyClock::time_point deadline) override {
    auto connection = current();
    if (!connection) co_return nats_error(errc::unavailable, "backend is not connected");
    if (!uses_jetstream(spec.subject, spec.kind)) {
      co_return nats_error(errc::unimplemented, "'" + spec.subject +
                                                    "' travels on core NATS, which keeps no "
                                                    "messages for a group");
    }
    const std::string stream = spec.kind == DestinationKind::stream
                                   ? jetstream_name(spec.subject)
                                   : stream_for_topic(spec.subject);
    auto work = [connection, spec, stream, deadline]() -> Result<std::uint64_t> {
      const std::string consumer = consumer_name(spec.group, spec.subject);
      jsOptions options;
      jsOptions_Init(&options);
      options.Wait = std::max<std::int64_t>(
          1, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now())
                 .count());
      jsConsumerInfo* info = nullptr;
      jsErrCode code = static_cast<jsErrCode>(0);
      const natsStatus s = js_GetConsumerInfo(&info, connection->js, stream.c_str(),
                                              consumer.c_str(), &options, &code);
      if (s != NATS_OK) {
        if (code == JSConsumerNotFoundErr || code == JSStreamNotFoundErr || s == NATS_NOT_FOUND) {
          return nats_error(errc::not_found,
                            "no consumer group '" + spec.group + "' on '" + spec.subject + "'");
        }
        return status_error(
            s, "reading the consumer of group '" + spec.group + "' on '" + spec.subject + "'",
            code);
      }
      const std::uint64_t lag =
          info->NumPending +
          static_cast<std::uint64_t>(std::max<std::int64_t>(0, info->NumAckPending));
      jsConsumerInfo_Destroy(info);
      return lag;
    };
    co_return co_await offload(pool_, std::move(work));
  }

  asio::awaitable<Result<std::size_t>> remove_dead_letters(
      std::string dead_letter_subject, std::set<std::string> ids,
      SteadyClock::time_point /*deadline*/) override {
    auto connection = current();
    if (!connection) co_return nats_error(errc::unavailable, "backend is not connected");
    auto work = [connection, dead_letter_subject, ids]() -> Result<std::size_t> {
      const std::string stream = jetstream_name(dead_letter_subject);
      std::vector<std::uint64_t> doomed;
      auto scanned = scan_stream(connection->js, stream, std::numeric_limits<std::size_t>::max(),
                                 [&](std::uint64_t sequence, const Message& message) {
                                   if (ids.contains(dead_letter_id(message))) {
                                     doomed.push_back(sequence);
                                   }
                                 });
      if (!scanned) return std::move(scanned).error();
      std::size_t removed = 0;
      for (std::uint64_t sequence : doomed) {
        jsErrCode code = static_cast<jsErrCode>(0);
        const natsStatus s = js_DeleteMsg(connection->js, stream.c_str(), sequence, nullptr, &code);
        if (s == NATS_OK) {
          ++removed;
        } else if (code != JSNoMessageFoundErr) {
          return status_error(s,
                              "deleting message " + std::to_string(sequence) + " of '" + stream +
                                  "' (" + std::to_string(removed) + " deleted)",
                              code);
        }
      }
      return removed;
    };
    co_return co_await offload(pool_, std::move(work));
  }

  asio::awaitable<Result<std::shared_ptr<Subscription>>> subscribe(SubscriptionSpec spec) override {
    auto connection = current();
    if (!connection) co_return nats_error(errc::unavailable, "backend is not connected");
    if (spec.kind == DestinationKind::stream && subject::has_wildcard(spec.subject)) {
      co_return nats_error(errc::invalid_argument,
                           "stream name '" + spec.subject + "' cannot contain wildcards");
    }
    auto work = [this, connection, spec]() { return open_subscription(connection, spec); };
    auto made = co_await offload(pool_, std::move(work));
    if (!made) co_return std::move(made).error();
    {
      std::lock_guard lock(mutex_);
      if (connection_ == connection) {
        std::erase_if(subscriptions_, [](const auto& weak) { return weak.expired(); });
        subscriptions_.push_back(*made);
        co_return std::shared_ptr<Subscription>(std::move(*made));
      }
    }
    (*made)->close();  // close() ran while it was being made
    co_return nats_error(errc::unavailable, "backend closed while subscribing");
  }

  asio::awaitable<Result<Message>> request(Message message, milliseconds timeout) override {
    auto connection = current();
    if (!connection) co_return nats_error(errc::unavailable, "backend is not connected");
    const std::string subject(message.subject());
    PendingRequests& pending = *connection->requests;
    const std::string token = std::to_string(pending.next_token.fetch_add(1));
    auto msg = to_nats(message, subject, pending.prefix + "." + token);
    if (!msg) co_return std::move(msg).error();
    auto waiter = std::make_shared<RequestWaiter>();
    {
      std::lock_guard lock(pending.mutex);
      pending.waiters.emplace(token, waiter);
    }
    // Written at once (the send-at-once connection): a request is latency, not throughput.
    const natsStatus s = natsConnection_PublishMsg(connection->reply_nc, msg->get());
    if (s != NATS_OK) {
      pending.take(token);
      co_return status_error(s, "request on '" + subject + "'");
    }
    if (!co_await waiter->signal->wait(SteadyClock::now() + timeout)) pending.take(token);
    NatsMsgPtr reply;
    {
      std::lock_guard lock(waiter->mutex);
      reply = std::move(waiter->reply);
    }
    if (!reply) {
      co_return nats_error(errc::deadline_exceeded, "no reply on '" + subject + "' within " +
                                                        std::to_string(timeout.count()) + " ms");
    }
    if (natsMsg_IsNoResponders(reply.get())) {
      co_return nats_error(errc::not_found, "no responder on '" + subject + "'");
    }
    co_return from_nats(reply.get(), false);
  }

  asio::awaitable<Result<void>> close(SteadyClock::time_point deadline) override {
    close_subscriptions();
    ConnectionPtr connection;
    {
      std::lock_guard lock(mutex_);
      connection = std::move(connection_);
    }
    if (!connection) co_return ok();
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - SteadyClock::now());
    auto work = [connection, left]() -> Result<void> {
      // Publishes still in nats.c's buffers go out, and JetStream acknowledges those in
      // flight, before the connection closes.
      Result<void> result = ok();
      if (connection->js != nullptr) {
        jsPubOptions options;
        jsPubOptions_Init(&options);
        options.MaxWait = std::max<std::int64_t>(1, left.count());
        const natsStatus s = js_PublishAsyncComplete(connection->js, &options);
        if (s != NATS_OK) result = status_error(s, "waiting for JetStream publishes before close");
      }
      for (natsConnection* nc : {connection->nc, connection->reply_nc}) {
        const natsStatus s =
            natsConnection_FlushTimeout(nc, std::max<std::int64_t>(1, left.count()));
        if (s != NATS_OK && result) result = status_error(s, "flushing before close");
      }
      connection->close();
      return result;
    };
    co_return co_await offload(pool_, std::move(work));
  }

 private:
  Result<ConnectionPtr> open() {
    auto connection = std::make_shared<Connection>();
    auto nc = open_connection(config_, false);
    if (!nc) return std::move(nc).error();
    connection->nc = *nc;
    auto reply_nc = open_connection(config_, true);
    if (!reply_nc) return std::move(reply_nc).error();
    connection->reply_nc = *reply_nc;
    natsInbox* inbox = nullptr;
    natsStatus s = natsInbox_Create(&inbox);
    if (s != NATS_OK) return status_error(s, "creating a reply inbox");
    connection->requests->prefix = inbox;
    natsInbox_Destroy(inbox);
    auto* closure = new PendingRequestsPtr(connection->requests);
    // On the connection that publishes the requests: the server answers "no responders" only
    // to a client that both sent the request and subscribed to its reply subject.
    s = natsConnection_Subscribe(&connection->replies, connection->reply_nc,
                                 (connection->requests->prefix + ".*").c_str(), on_reply, closure);
    if (s != NATS_OK) {
      delete closure;
      return status_error(s, "subscribing to the reply inbox");
    }
    natsSubscription_SetOnCompleteCB(connection->replies, on_replies_complete, closure);
    natsSubscription_SetPendingLimits(connection->replies, -1, -1);
    // The subscription reaches the server before any request can be answered on it.
    s = natsConnection_FlushTimeout(connection->reply_nc, config_.connect_timeout.count());
    if (s != NATS_OK) return status_error(s, "registering the reply inbox");
    if (!config_.jetstream) return connection;
    jsOptions options;
    jsOptions_Init(&options);
    options.PublishAsync.AckHandler = on_publish_ack;
    options.PublishAsync.AckHandlerClosure = reinterpret_cast<void*>(connection->pending_id);
    options.PublishAsync.MaxPending = kMaxPendingPublishes;
    s = natsConnection_JetStream(&connection->js, connection->nc, &options);
    if (s != NATS_OK) return status_error(s, "opening a JetStream context");
    StreamConfig topics;
    topics.subjects = config_.topic_subjects;
    topics.storage = config_.topic_storage;
    topics.retention = Retention::interest;
    if (auto made = provision_stream(connection->js, config_.topic_stream, topics); !made) {
      return made.error().with_context("NatsConfig.topic_stream");
    }
    if (!config_.command_stream.empty()) {
      StreamConfig commands;
      commands.subjects = {std::string(kCommandSubjects)};
      commands.storage = config_.topic_storage;
      commands.retention = Retention::workqueue;
      if (auto made = provision_stream(connection->js, config_.command_stream, commands); !made) {
        return made.error().with_context("NatsConfig.command_stream");
      }
    }
    for (const auto& [name, stream] : config_.streams) {
      StreamConfig wanted = stream;
      if (wanted.subjects.empty()) wanted.subjects = {name};
      if (auto made = provision_stream(connection->js, jetstream_name(name), wanted); !made) {
        return made.error().with_context("NatsConfig.streams[" + name + "]");
      }
      std::lock_guard lock(mutex_);
      known_streams_.insert(name);
    }
    return connection;
  }

  ConnectionPtr current() const {
    std::lock_guard lock(mutex_);
    return connection_;
  }

  bool in_command_stream(const std::string& subject) const {
    return !config_.command_stream.empty() && subject::matches(kCommandSubjects, subject);
  }

  // The stream that captures a topic (event or command) subject.
  const std::string& stream_for_topic(const std::string& subject) const {
    return in_command_stream(subject) ? config_.command_stream : config_.topic_stream;
  }

  bool uses_jetstream(const std::string& subject, DestinationKind kind) const {
    if (!config_.jetstream || subject.starts_with("_INBOX.")) return false;
    if (kind == DestinationKind::stream || in_command_stream(subject)) return true;
    return std::any_of(
        config_.topic_subjects.begin(), config_.topic_subjects.end(),
        [&](const std::string& pattern) { return subject::matches(pattern, subject); });
  }

  // Publishes without blocking and waits (suspended) for the server's acknowledgement, so
  // many publishes can be in flight on one connection.
  asio::awaitable<Result<void>> publish_to_jetstream(ConnectionPtr connection, NatsMsgPtr msg,
                                                     std::string subject, std::string id,
                                                     SteadyClock::time_point deadline) {
    const auto wait = std::chrono::duration_cast<milliseconds>(
        std::min<SteadyClock::duration>(config_.publish_timeout, deadline - SteadyClock::now()));
    if (wait.count() <= 0) {
      co_return nats_error(errc::deadline_exceeded, "publish deadline passed before publishing");
    }
    auto waiter = std::make_shared<PublishWaiter>();
    const natsMsg* key = msg.get();
    PendingPublishes& pending = *connection->pending;
    pending.add(key, waiter);
    // The server de-duplicates by this id across the whole stream, which holds every event and
    // command type: scoped to the subject, a message forwarded unchanged to another subject is
    // not taken for a duplicate of itself.
    const std::string scoped_id = subject + "|" + id;
    jsPubOptions options;
    jsPubOptions_Init(&options);
    options.MsgId = scoped_id.c_str();
    options.MaxWait = wait.count();
    natsMsg* raw = msg.release();
    const natsStatus s = js_PublishMsgAsync(connection->js, &raw, &options);
    if (s != NATS_OK) {
      pending.forget(key, waiter);
      natsMsg_Destroy(raw);  // still ours when the library did not take it
      co_return status_error(s, "publishing on '" + subject + "' to JetStream");
    }
    // A little longer than nats.c's own MaxWait, which reports a timeout through the handler.
    if (!co_await waiter->signal->wait(SteadyClock::now() + wait + milliseconds(200))) {
      pending.forget(key, waiter);
    }
    std::lock_guard lock(waiter->mutex);
    if (waiter->result) co_return std::move(*waiter->result);
    co_return nats_error(errc::deadline_exceeded, "no acknowledgement from JetStream for '" +
                                                      subject + "' within " +
                                                      std::to_string(wait.count()) + " ms");
  }

  bool known_stream(const std::string& stream) const {
    std::lock_guard lock(mutex_);
    return known_streams_.count(stream) != 0;
  }

  bool known_receiver(const std::string& command_subject) const {
    std::lock_guard lock(mutex_);
    return known_consumers_.count(command_consumer(command_subject)) != 0;
  }

  // The durable consumer of a command subject: commands.<service>.<type> is consumed by the
  // service's instances as group <service>. Empty for subjects of another shape.
  static std::string command_consumer(const std::string& subject) {
    const auto first = subject.find('.');
    const auto second = first == std::string::npos ? first : subject.find('.', first + 1);
    if (second == std::string::npos) return {};
    return consumer_name(subject.substr(first + 1, second - first - 1), subject);
  }

  // The consumer of `group` on `subject`: named from both, so a group resumes its consumer.
  static std::string consumer_name(const std::string& group, const std::string& subject) {
    return jetstream_name(group + "__" + subject);
  }

  // Runs on the pool.
  Result<void> ensure_stream(const ConnectionPtr& connection, const std::string& stream) {
    if (known_stream(stream)) return ok();
    StreamConfig wanted = config_.stream_defaults;
    wanted.subjects = {stream};
    if (auto made = provision_stream(connection->js, jetstream_name(stream), wanted); !made) {
      return made;
    }
    std::lock_guard lock(mutex_);
    known_streams_.insert(stream);
    return ok();
  }

  // A command must have a consumer group (a durable consumer) of its service. Runs on the pool.
  Result<void> check_command_receiver(const ConnectionPtr& connection, const std::string& subject) {
    const std::string durable = command_consumer(subject);
    if (durable.empty() || known_receiver(subject)) return ok();
    jsConsumerInfo* info = nullptr;
    jsErrCode code = static_cast<jsErrCode>(0);
    const natsStatus s = js_GetConsumerInfo(
        &info, connection->js, stream_for_topic(subject).c_str(), durable.c_str(), nullptr, &code);
    if (s != NATS_OK) {
      if (code == JSConsumerNotFoundErr || s == NATS_NOT_FOUND) {
        return nats_error(errc::not_found,
                          "no consumer group for '" + subject + "' (its service never handled it)");
      }
      return status_error(s, "looking up the consumer of '" + subject + "'", code);
    }
    jsConsumerInfo_Destroy(info);
    std::lock_guard lock(mutex_);
    known_consumers_.insert(durable);
    return ok();
  }

  // Runs on the pool.
  Result<std::shared_ptr<NatsSubscription>> open_subscription(const ConnectionPtr& connection,
                                                              const SubscriptionSpec& spec) {
    const bool jetstream = uses_jetstream(spec.subject, spec.kind);
    auto inbox = std::make_shared<Inbox>();
    std::string deliver_subject = spec.subject;
    std::string queue = spec.group;
    std::string description = "'" + spec.subject + "'";
    std::optional<std::int64_t> skip_before;
    if (jetstream) {
      if (spec.kind == DestinationKind::stream && spec.start.kind == StartPosition::Kind::time) {
        skip_before = nanos(spec.start.time.time_since_epoch());
      }
      auto consumer = open_consumer(connection, spec);
      if (!consumer) return std::move(consumer).error();
      deliver_subject = consumer->first;
      queue = consumer->second;
      description += " (JetStream)";
    } else {
      inbox->limit = kCoreQueueLimit;
    }
    natsSubscription* sub = nullptr;
    auto* closure = new InboxPtr(inbox);
    const natsStatus s =
        queue.empty() ? natsConnection_Subscribe(&sub, connection->nc, deliver_subject.c_str(),
                                                 on_message, closure)
                      : natsConnection_QueueSubscribe(&sub, connection->nc, deliver_subject.c_str(),
                                                      queue.c_str(), on_message, closure);
    if (s != NATS_OK) {
      delete closure;
      return status_error(s, "subscribing to " + description);
    }
    if (natsSubscription_SetOnCompleteCB(sub, on_complete, closure) != NATS_OK) {
      // Closed already (its connection went meanwhile): nats.c will not call us again.
      natsSubscription_Destroy(sub);
      delete closure;
      return nats_error(errc::unavailable,
                        "the connection closed while subscribing to " + description);
    }
    // Our inbox bounds core subscriptions; JetStream is bounded by max_ack_pending.
    natsSubscription_SetPendingLimits(sub, -1, -1);
    auto subscription = std::make_shared<NatsSubscription>(connection, inbox, sub, jetstream,
                                                           description, skip_before);
    // Subscribed means the server knows: a core publish sent after subscribe() returns, even
    // from another connection, must reach it.
    if (const natsStatus flushed =
            natsConnection_FlushTimeout(connection->nc, config_.connect_timeout.count());
        flushed != NATS_OK) {
      subscription->close();
      return status_error(flushed, "registering the subscription to " + description);
    }
    return subscription;
  }

  // Creates (or finds) the consumer behind a JetStream subscription. Returns its deliver
  // subject and the queue group to subscribe with (empty: none). Runs on the pool.
  Result<std::pair<std::string, std::string>> open_consumer(const ConnectionPtr& connection,
                                                            const SubscriptionSpec& spec) {
    std::string stream = stream_for_topic(spec.subject);
    if (spec.kind == DestinationKind::stream) {
      if (auto made = ensure_stream(connection, spec.subject); !made) return made.error();
      stream = jetstream_name(spec.subject);
    }
    const bool durable = !spec.group.empty();
    const std::string name = durable ? consumer_name(spec.group, spec.subject) : std::string();
    const std::string deliver =
        std::string(kDeliverPrefix) + (durable ? name : jetstream_name(make_uuid_v7()));
    jsConsumerConfig config;
    jsConsumerConfig_Init(&config);
    if (durable) {
      config.Durable = name.c_str();
      config.DeliverGroup = name.c_str();
    } else {
      config.InactiveThreshold = nanos(kEphemeralInactivity);
    }
    config.DeliverSubject = deliver.c_str();
    config.AckPolicy = js_AckExplicit;
    config.AckWait = nanos(config_.ack_wait);
    config.MaxDeliver = -1;  // the bus counts attempts and dead-letters
    config.MaxAckPending = config_.max_ack_pending;
    if (spec.kind == DestinationKind::topic) config.FilterSubject = spec.subject.c_str();
    // A work queue holds only what nobody has acknowledged yet, and JetStream requires its
    // consumers to start at the beginning.
    config.DeliverPolicy = in_command_stream(spec.subject) ? js_DeliverAll : js_DeliverNew;
    if (spec.kind == DestinationKind::stream) {
      switch (spec.start.kind) {
        case StartPosition::Kind::new_messages:
          config.DeliverPolicy = js_DeliverNew;
          break;
        case StartPosition::Kind::earliest:
          config.DeliverPolicy = js_DeliverAll;
          break;
        case StartPosition::Kind::sequence:
          config.DeliverPolicy = js_DeliverByStartSequence;
          config.OptStartSeq = std::max<std::uint64_t>(1, spec.start.sequence);
          break;
        case StartPosition::Kind::time: {
          // nats.c 3.4 writes the fraction of a second without its leading zeros (5 ms goes
          // out as ".5"), so a fraction under 0.1 s is rounded down to the second here and
          // the subscription skips what the stream stored before the time asked for.
          const std::int64_t wanted = nanos(spec.start.time.time_since_epoch());
          const std::int64_t fraction = wanted % 1'000'000'000;
          config.DeliverPolicy = js_DeliverByStartTime;
          config.OptStartTime = fraction < 100'000'000 ? wanted - fraction : wanted;
          break;
        }
      }
    }
    jsConsumerInfo* info = nullptr;
    jsErrCode code = static_cast<jsErrCode>(0);
    natsStatus s = js_AddConsumer(&info, connection->js, stream.c_str(), &config, nullptr, &code);
    const bool exists_otherwise = code == JSConsumerCreateErr || code == JSConsumerNameExistErr ||
                                  code == JSConsumerExistingActiveErr ||
                                  code == JSConsumerReplacementWithDifferentNameErr;
    if (s != NATS_OK && durable && exists_otherwise) {
      // It exists with other settings (another start position): a durable group resumes
      // where it left off, so take it as it is, if it is a consumer this group can read.
      const Error create_error =
          status_error(s, "creating JetStream consumer '" + name + "'", code);
      jsErrCode lookup_code = static_cast<jsErrCode>(0);
      if (js_GetConsumerInfo(&info, connection->js, stream.c_str(), name.c_str(), nullptr,
                             &lookup_code) != NATS_OK) {
        return create_error;
      }
      const bool usable = info->Config->DeliverSubject != nullptr &&
                          info->Config->DeliverGroup != nullptr &&
                          name == info->Config->DeliverGroup;
      if (!usable) {
        jsConsumerInfo_Destroy(info);
        return nats_error(errc::failed_precondition,
                          "JetStream consumer '" + name + "' on stream '" + stream +
                              "' exists but is not a push consumer of this group; delete it "
                              "or use another group name");
      }
      s = NATS_OK;
    }
    if (s != NATS_OK) {
      return status_error(s, "creating a JetStream consumer for '" + spec.subject + "'", code);
    }
    std::pair<std::string, std::string> out{
        info->Config->DeliverSubject != nullptr ? info->Config->DeliverSubject : deliver,
        info->Config->DeliverGroup != nullptr ? info->Config->DeliverGroup : ""};
    jsConsumerInfo_Destroy(info);
    if (durable) {
      std::lock_guard lock(mutex_);
      known_consumers_.insert(name);
    }
    return out;
  }

  void close_subscriptions() {
    std::vector<std::shared_ptr<NatsSubscription>> open;
    {
      std::lock_guard lock(mutex_);
      for (auto& weak : subscriptions_) {
        if (auto subscription = weak.lock()) open.push_back(std::move(subscription));
      }
      subscriptions_.clear();
    }
    for (auto& subscription : open) subscription->close();
  }

  const NatsConfig config_;
  const Capabilities capabilities_;
  asio::thread_pool pool_;
  mutable std::mutex mutex_;
  ConnectionPtr connection_;
  std::vector<std::weak_ptr<NatsSubscription>> subscriptions_;
  std::set<std::string> known_streams_;    // bus stream names provisioned by this backend
  std::set<std::string> known_consumers_;  // durable consumers known to exist
};

}  // namespace

std::string jetstream_name(std::string_view name) {
  std::string out(name);
  bool changed = false;
  for (char& c : out) {
    const bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                         (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!allowed) {
      c = '_';
      changed = true;
    }
  }
  if (!changed) return out;
  char suffix[17];
  std::snprintf(suffix, sizeof suffix, "%016llx", static_cast<unsigned long long>(fnv1a(name)));
  return out + "_" + std::string(suffix, 8);
}

std::shared_ptr<Backend> make_backend(NatsConfig config) {
  return std::make_shared<NatsBackend>(std::move(config));
}

}  // namespace marty::messaging::nats
