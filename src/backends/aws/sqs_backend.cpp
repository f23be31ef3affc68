#include <algorithm>
#include <cstdlib>
#include <deque>
#include <mutex>

#include <spdlog/spdlog.h>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>

#include "aws_query.hpp"
#include "aws_wire.hpp"
#include "marty/messaging/aws_backend.hpp"
#include "marty/messaging/detail/async_signal.hpp"
#include "marty/messaging/detail/inbox.hpp"
#include "marty/messaging/detail/sleep.hpp"
#include "marty/messaging/event_bus.hpp"

namespace marty::messaging::aws {
namespace {

using detail::AsyncSignal;
using std::chrono::milliseconds;

spdlog::logger& logger() {
  static const std::shared_ptr<spdlog::logger> named = spdlog::get("marty.messaging");
  return named ? *named : *spdlog::default_logger_raw();
}

Error sqs_error(errc code, std::string message) {
  return Error(code, std::move(message), std::string(kSqsBackendName));
}
Error sqs_error(const Error& error) {
  return Error(error.code(), error.message(), std::string(kSqsBackendName));
}

// Names of queues: the subject's, shortened so that "--dlq" still fits SQS's 80 characters.
// (Readable names never contain "--", so a subject never gets a dead-letter queue's name.)
constexpr std::size_t kQueueNameRoom = 75;

std::string env_or(const std::string& value, const char* variable) {
  if (!value.empty()) return value;
  const char* found = std::getenv(variable);
  return found != nullptr ? found : "";
}

struct Core {
  AwsSqsConfig config;
  std::shared_ptr<HttpClient> http;
  std::unique_ptr<QueryClient> sqs;
  std::mutex mutex;
  std::map<std::string, std::string> urls;  // subject -> URL of a queue known to exist

  asio::awaitable<Result<XmlElement>> call(std::string action, QueryParameters parameters) {
    co_return co_await call_within(std::move(action), std::move(parameters),
                                   config.request_timeout);
  }
  // The same, bounded by `timeout` (a publish's deadline) rather than request_timeout.
  asio::awaitable<Result<XmlElement>> call_within(std::string action, QueryParameters parameters,
                                                  milliseconds timeout) {
    if (timeout.count() <= 0) {
      co_return sqs_error(errc::deadline_exceeded, action + ": the deadline has passed");
    }
    auto reply = co_await sqs->call(std::move(action), std::move(parameters), timeout, 5);
    if (!reply) co_return sqs_error(reply.error());
    co_return reply;
  }

  std::optional<std::string> known_url(const std::string& subject) {
    std::lock_guard lock(mutex);
    if (auto it = urls.find(subject); it != urls.end()) return it->second;
    return std::nullopt;
  }

  // The URL of the queue of `subject`: made when `create` (with its dead-letter queue and
  // redrive policy when `redrive`), else looked up (`not_found` when there is none).
  asio::awaitable<Result<std::string>> queue_url(std::string subject, bool create, bool redrive) {
    if (auto url = known_url(subject)) co_return *url;
    const std::string name = aws_name_for(config.queue_prefix, subject, kQueueNameRoom, false);
    // Looked up first even when it may be made: an existing queue is used as it is (the SQS
    // emulator would empty it on a second CreateQueue).
    QueryParameters lookup{{"QueueName", name}};
    Result<XmlElement> reply = co_await call("GetQueueUrl", std::move(lookup));
    if (!reply && (!create || !reply.error().is(errc::not_found))) {
      co_return reply.error().is(errc::not_found)
          ? sqs_error(errc::not_found,
                      "no queue '" + name + "' for '" + subject + "': nobody has subscribed to it")
          : std::move(reply).error();
    }
    if (!reply) {
      QueryParameters attributes{
          {"QueueName", name},
          {"Attribute.1.Name", "VisibilityTimeout"},
          {"Attribute.1.Value", std::to_string(config.visibility_timeout.count())}};
      if (redrive && config.max_receive_count > 0) {
        auto arn = co_await dead_letter_arn(name + "--dlq");
        if (!arn) co_return std::move(arn).error();
        const Json policy{{"deadLetterTargetArn", *arn},
                          {"maxReceiveCount", std::to_string(config.max_receive_count)}};
        attributes.emplace_back("Attribute.2.Name", "RedrivePolicy");
        attributes.emplace_back("Attribute.2.Value", policy.dump());
      }
      reply = co_await call("CreateQueue", std::move(attributes));
      if (!reply && reply.error().is(errc::already_exists)) {
        // Made meanwhile, with other attributes: used as it is.
        QueryParameters again{{"QueueName", name}};
        reply = co_await call("GetQueueUrl", std::move(again));
      }
      if (!reply) co_return std::move(reply).error();
    }
    const std::string url = reply->text_of("QueueUrl");
    if (url.empty()) co_return sqs_error(errc::internal, "no QueueUrl in the reply for " + name);
    std::lock_guard lock(mutex);
    urls[subject] = url;
    co_return url;
  }

  asio::awaitable<Result<std::string>> dead_letter_arn(std::string name) {
    QueryParameters lookup{{"QueueName", name}};
    auto made = co_await call("GetQueueUrl", std::move(lookup));
    if (!made && made.error().is(errc::not_found)) {
      QueryParameters create{{"QueueName", name}};
      made = co_await call("CreateQueue", std::move(create));
    }
    if (!made) co_return std::move(made).error();
    QueryParameters get{{"QueueUrl", made->text_of("QueueUrl")}, {"AttributeName.1", "QueueArn"}};
    auto attributes = co_await call("GetQueueAttributes", std::move(get));
    if (!attributes) co_return std::move(attributes).error();
    for (const XmlElement* attribute : attributes->find_all("Attribute")) {
      if (attribute->text_of("Name") == "QueueArn") co_return attribute->text_of("Value");
    }
    co_return sqs_error(errc::internal, "no QueueArn for " + name);
  }

  asio::awaitable<Result<void>> send(std::string url, Message message, milliseconds timeout) {
    const AwsMessage aws = to_aws(message);
    QueryParameters parameters{{"QueueUrl", std::move(url)}, {"MessageBody", aws.body}};
    int n = 0;
    for (const auto& [name, value] : aws.attributes) {
      const std::string prefix = "MessageAttribute." + std::to_string(++n);
      parameters.emplace_back(prefix + ".Name", name);
      parameters.emplace_back(prefix + ".Value.DataType", "String");
      parameters.emplace_back(prefix + ".Value.StringValue", value);
    }
    auto sent = co_await call_within("SendMessage", std::move(parameters), timeout);
    if (!sent) co_return std::move(sent).error();
    co_return ok();
  }

  // A call whose failure the caller cannot act on (a release, a delete after the work is
  // done): said in the log, with what it means for the message, never dropped silently.
  asio::awaitable<void> call_logged(std::string action, QueryParameters parameters,
                                    std::string consequence) {
    auto done = co_await call(action, std::move(parameters));
    if (!done) {
      logger().warn("SQS {} failed ({}): {}", action, done.error().describe(), consequence);
    }
  }

  // The same, fire and forget, on `executor`.
  void detached_call(std::shared_ptr<Core> self, std::string action, QueryParameters parameters,
                     asio::any_io_executor executor) {
    auto run = [](std::shared_ptr<Core> core, std::string what,
                  QueryParameters p) -> asio::awaitable<void> {
      co_await core->call_logged(std::move(what), std::move(p),
                                 "the message comes back after its visibility timeout");
    };
    asio::co_spawn(executor, run(std::move(self), std::move(action), std::move(parameters)),
                   asio::detached);
  }
};
using CorePtr = std::shared_ptr<Core>;

// A message received and not yet handed out.
struct Received {
  Result<Message> message = Error(errc::internal, "unset");
  std::string raw_body;
  std::string receipt;
  int attempt = 1;
};

struct Consumer {
  CorePtr core;
  SubscriptionSpec spec;
  std::string url;
  bool private_queue = false;  // a subscriber's own queue (replies): deleted when it closes
  bool queue_deleted = false;
  asio::any_io_executor executor;
  std::mutex mutex;
  std::deque<Received> inbox;
  int held = 0;  // received and not settled
  bool closed = false;
  std::shared_ptr<AsyncSignal> arrived = AsyncSignal::create();
  std::shared_ptr<AsyncSignal> room = AsyncSignal::create();

  void settled() {
    {
      std::lock_guard lock(mutex);
      --held;
    }
    room->notify();
  }

  // Closes intake; returns what was received and not handed out (to be released).
  std::deque<Received> close_intake() {
    std::deque<Received> unread;
    {
      std::lock_guard lock(mutex);
      if (closed) return unread;
      closed = true;
      unread.swap(inbox);
      held -= static_cast<int>(unread.size());
    }
    arrived->notify();
    room->notify();
    return unread;
  }
};
using ConsumerPtr = std::shared_ptr<Consumer>;

// Receives into the consumer's inbox (long polling) until it closes.
asio::awaitable<void> receive_loop(ConsumerPtr consumer) {
  Consumer& c = *consumer;
  const AwsSqsConfig& config = c.core->config;
  milliseconds backoff(100);
  while (true) {
    int wanted = 0;
    {
      std::lock_guard lock(c.mutex);
      if (c.closed) break;
      wanted = std::min(config.max_messages, config.prefetch - c.held);
    }
    if (wanted <= 0) {
      (void)co_await c.room->wait(SteadyClock::now() + std::chrono::seconds(1));
      continue;
    }
    QueryParameters parameters{{"QueueUrl", c.url},
                               {"MaxNumberOfMessages", std::to_string(wanted)},
                               {"WaitTimeSeconds", std::to_string(config.wait_time.count())},
                               {"AttributeName.1", "ApproximateReceiveCount"},
                               {"MessageAttributeName.1", "All"}};
    const auto polled = SteadyClock::now();
    auto reply = co_await c.core->sqs->call("ReceiveMessage", std::move(parameters),
                                            config.request_timeout + config.wait_time, 3);
    if (!reply) {
      {
        std::lock_guard lock(c.mutex);
        if (c.closed) break;
      }
      logger().warn("receiving from {} failed, retrying: {}", c.url, reply.error().describe());
      co_await detail::sleep_for(backoff);
      backoff = std::min(backoff * 2, milliseconds(5'000));
      continue;
    }
    backoff = milliseconds(100);
    const bool early =
        config.wait_time.count() == 0 || SteadyClock::now() - polled < config.wait_time;
    std::vector<Received> batch;
    for (const XmlElement* message : reply->find_all("Message")) {
      Attributes attributes;
      for (const XmlElement* attribute : message->find_all("MessageAttribute")) {
        attributes.emplace_back(attribute->text_of("Name"), attribute->text_of("StringValue"));
      }
      Received received;
      received.receipt = message->text_of("ReceiptHandle");
      for (const XmlElement* attribute : message->find_all("Attribute")) {
        if (attribute->text_of("Name") == "ApproximateReceiveCount") {
          received.attempt = std::max(1, std::atoi(attribute->text_of("Value").c_str()));
        }
      }
      received.raw_body = message->text_of("Body");
      received.message = from_aws(c.spec.subject, received.raw_body, attributes);
      batch.push_back(std::move(received));
    }
    bool closed_meanwhile = false;
    {
      std::lock_guard lock(c.mutex);
      closed_meanwhile = c.closed;
    }
    if (closed_meanwhile) {
      // Received while the subscription closed: visible again at once, for its next reader.
      for (const auto& r : batch) {
        QueryParameters release{
            {"QueueUrl", c.url}, {"ReceiptHandle", r.receipt}, {"VisibilityTimeout", "0"}};
        co_await c.core->call_logged("ChangeMessageVisibility", std::move(release),
                                     "the message comes back after its visibility timeout");
      }
      break;
    }
    if (batch.empty()) {
      // An empty reply before the wait time: no long polling here (the SQS emulator, or
      // wait_time 0). A short pause keeps the loop from spinning.
      if (early) co_await detail::sleep_for(milliseconds(50));
      continue;
    }
    {
      std::lock_guard lock(c.mutex);
      for (auto& r : batch) {
        c.inbox.push_back(std::move(r));
        ++c.held;
      }
    }
    c.arrived->notify();
  }
}

class SqsDelivery final : public Delivery {
 public:
  SqsDelivery(Message message, int attempt, ConsumerPtr consumer, std::string receipt)
      : Delivery(std::move(message), attempt, 0),
        consumer_(std::move(consumer)),
        receipt_(std::move(receipt)) {}
  ~SqsDelivery() override {
    if (settled_) return;
    // Released: visible again at once, to any consumer of the queue.
    change_visibility(0);
    consumer_->settled();
  }

  asio::awaitable<Result<void>> ack() override { co_return co_await remove(); }
  asio::awaitable<Result<void>> term() override { co_return co_await remove(); }
  asio::awaitable<Result<void>> nack(milliseconds delay) override {
    if (settled_) co_return already();
    settled_ = true;
    // SQS counts visibility in whole seconds (at most 12 hours).
    const auto seconds = std::clamp<std::int64_t>((delay.count() + 999) / 1000, 0, 43'200);
    change_visibility(seconds);
    consumer_->settled();
    co_return ok();
  }

 private:
  asio::awaitable<Result<void>> remove() {
    if (settled_) co_return already();
    settled_ = true;
    QueryParameters parameters{{"QueueUrl", consumer_->url}, {"ReceiptHandle", receipt_}};
    auto removed = co_await consumer_->core->call("DeleteMessage", std::move(parameters));
    consumer_->settled();
    if (!removed) co_return std::move(removed).error();
    co_return ok();
  }
  void change_visibility(std::int64_t seconds) {
    QueryParameters parameters{{"QueueUrl", consumer_->url},
                               {"ReceiptHandle", receipt_},
                               {"VisibilityTimeout", std::to_string(seconds)}};
    consumer_->core->detached_call(consumer_->core, "ChangeMessageVisibility",
                                   std::move(parameters), consumer_->executor);
  }
  static Error already() {
    return sqs_error(errc::failed_precondition, "the delivery was already settled");
  }

  ConsumerPtr consumer_;
  std::string receipt_;
  bool settled_ = false;
};

class SqsSubscription final : public Subscription {
 public:
  explicit SqsSubscription(ConsumerPtr consumer) : consumer_(std::move(consumer)) {}
  ~SqsSubscription() override { close(); }

  asio::awaitable<Result<std::unique_ptr<Delivery>>> receive(
      std::optional<SteadyClock::time_point> deadline) override {
    Consumer& c = *consumer_;
    while (true) {
      auto received = co_await detail::take_next(&c.mutex, &c.inbox, &c.closed, c.arrived.get(),
                                                 deadline, kSqsBackendName);
      if (!received) co_return std::move(received).error();
      if (!received->message) {
        co_await dead_letter(std::move(*received));
        continue;
      }
      const MessageMetadata& metadata = received->message->metadata();
      if (metadata.ttl && metadata.time && *metadata.time + *metadata.ttl < Clock::now()) {
        // A query nobody waits for any more.
        QueryParameters parameters{{"QueueUrl", c.url}, {"ReceiptHandle", received->receipt}};
        co_await c.core->call_logged("DeleteMessage", std::move(parameters),
                                     "the expired query will be skipped again");
        c.settled();
        continue;
      }
      co_return std::unique_ptr<Delivery>(new SqsDelivery(std::move(*received->message),
                                                          received->attempt, consumer_,
                                                          std::move(received->receipt)));
    }
  }

  void close() override {
    Consumer& c = *consumer_;
    auto unread = c.close_intake();
    bool delete_queue = false;
    {
      std::lock_guard lock(c.mutex);
      delete_queue = c.private_queue && !c.queue_deleted;
      c.queue_deleted = true;
    }
    if (delete_queue) {
      QueryParameters parameters{{"QueueUrl", c.url}};
      c.core->detached_call(c.core, "DeleteQueue", std::move(parameters), c.executor);
    }
    for (auto& r : unread) {
      QueryParameters parameters{
          {"QueueUrl", c.url}, {"ReceiptHandle", r.receipt}, {"VisibilityTimeout", "0"}};
      c.core->detached_call(c.core, "ChangeMessageVisibility", std::move(parameters), c.executor);
    }
  }

 private:
  // What cannot be decoded goes to the dead-letter queue of its subject with the reason, and is
  // deleted; the subscription goes on.
  asio::awaitable<void> dead_letter(Received received) {
    Consumer& c = *consumer_;
    Message dead = undecodable_dead_letter(c.spec.subject, std::move(received.raw_body),
                                           received.message.error().describe());
    auto url = co_await c.core->queue_url(dead.subject(), true, false);
    Result<void> moved = ok();
    if (url) {
      moved = co_await c.core->send(*url, dead, c.core->config.request_timeout);
    } else {
      moved = std::move(url).error();
    }
    if (moved) {
      QueryParameters parameters{{"QueueUrl", c.url}, {"ReceiptHandle", received.receipt}};
      co_await c.core->call_logged("DeleteMessage", std::move(parameters),
                                   "it will be dead-lettered again when it comes back");
      logger().warn("an undecodable message from {} went to {}: {}", c.spec.subject, dead.subject(),
                    received.message.error().describe());
    } else {
      logger().error(
          "cannot dead-letter an undecodable message from {} ({}); SQS will "
          "deliver it again, and its redrive policy move it",
          c.spec.subject, moved.error().describe());
    }
    c.settled();
  }

  ConsumerPtr consumer_;
};

class SqsBackend final : public Backend {
 public:
  explicit SqsBackend(AwsSqsConfig config) : core_(std::make_shared<Core>()) {
    core_->config = std::move(config);
    caps_.patterns = {MessagingPattern::point_to_point, MessagingPattern::request_response};
    caps_.delivery = DeliveryGuarantee::at_least_once;
    caps_.ordering = Ordering::none;
    caps_.durable_groups = true;
    caps_.consumer_groups = false;  // a queue's consumers compete; groups do not fan out
    caps_.delayed_redelivery = true;
    caps_.native_dead_letter = true;
    caps_.headers = true;
    // SQS takes 256 KiB with the attributes; a binary payload grows by a third in base64.
    caps_.max_payload_bytes = 180 * 1024;
  }
  ~SqsBackend() override { shutdown(); }

  std::string_view name() const noexcept override { return kSqsBackendName; }
  const Capabilities& capabilities() const noexcept override { return caps_; }

  asio::awaitable<Result<void>> connect() override {
    {
      std::lock_guard lock(mutex_);
      if (connected_) co_return ok();
      if (closed_ || connecting_) {
        co_return sqs_error(errc::failed_precondition,
                            closed_ ? "the backend is closed" : "connect() is already running");
      }
      connecting_ = true;
    }
    auto connected = co_await connect_once();
    std::lock_guard lock(mutex_);
    connecting_ = false;
    if (connected && closed_) {
      core_->http->close();
      co_return sqs_error(errc::failed_precondition, "the backend closed while connecting");
    }
    if (connected) connected_ = true;
    co_return connected;
  }

 private:
  asio::awaitable<Result<void>> connect_once() {
    AwsSqsConfig& config = core_->config;
    if (auto valid = validate(config); !valid) co_return valid;
    Credentials credentials;
    credentials.access_key_id = env_or(config.access_key_id, "AWS_ACCESS_KEY_ID");
    credentials.secret_access_key = env_or(config.secret_access_key, "AWS_SECRET_ACCESS_KEY");
    credentials.session_token = env_or(config.session_token, "AWS_SESSION_TOKEN");
    if (credentials.access_key_id.empty() || credentials.secret_access_key.empty()) {
      co_return sqs_error(errc::invalid_argument,
                          "no credentials: set access_key_id and secret_access_key, or "
                          "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY");
    }
    QueryEndpoint endpoint;
    endpoint.url = config.endpoint.empty() ? "https://sqs." + config.region + ".amazonaws.com"
                                           : config.endpoint;
    endpoint.region = config.region;
    endpoint.service = "sqs";
    endpoint.version = "2012-11-05";
    core_->http = std::make_shared<HttpClient>(config.connect_timeout);
    core_->sqs = std::make_unique<QueryClient>(core_->http, endpoint, credentials);
    for (const auto& [subject, url] : config.queue_urls) core_->urls[subject] = url;
    // Reachable, and the credentials taken? (ListQueues is the cheapest call there is.)
    QueryParameters probe{{"MaxResults", "1"}};
    auto listed = co_await core_->call("ListQueues", std::move(probe));
    if (!listed) {
      core_->http->close();
      co_return listed.error().with_context("connect to SQS at " + endpoint.url);
    }
    co_return ok();
  }

 public:
  asio::awaitable<Result<void>> publish(Message message, PublishOptions options) override {
    if (auto usable = check_usable(); !usable) co_return usable;
    const std::string subject = message.subject();
    // Queues are made by their subscribers (and dead-letter queues by whoever dead-letters):
    // a command to a queue nobody made is an error for its sender, never a message nobody reads.
    const bool create = subject.starts_with("deadletter.");
    auto url = co_await core_->queue_url(subject, create, true);
    if (!url) co_return std::move(url).error().with_context("publish to " + subject);
    if (options.pattern == MessagingPattern::request_response && !message.metadata().ttl &&
        options.deadline != SteadyClock::time_point::max()) {
      auto& metadata = message.mutable_metadata();
      if (!metadata.time) metadata.time = Clock::now();
      metadata.ttl =
          std::max(milliseconds(1),
                   std::chrono::duration_cast<milliseconds>(options.deadline - SteadyClock::now()));
    }
    const auto left =
        options.deadline == SteadyClock::time_point::max()
            ? core_->config.request_timeout
            : std::min(core_->config.request_timeout, std::chrono::duration_cast<milliseconds>(
                                                          options.deadline - SteadyClock::now()));
    co_return co_await core_->send(*url, std::move(message), left);
  }

  asio::awaitable<Result<std::shared_ptr<Subscription>>> subscribe(SubscriptionSpec spec) override {
    if (auto usable = check_usable(); !usable) co_return std::move(usable).error();
    // A subscriber on its own reads a queue of its own (the bus's reply subject), deleted when
    // it closes and so without a dead-letter queue; a queue shared by a group outlives its
    // subscribers.
    const bool private_queue = spec.group.empty();
    auto url = co_await core_->queue_url(spec.subject, true, !private_queue);
    if (!url) co_return std::move(url).error().with_context("subscribe " + spec.subject);
    auto consumer = std::make_shared<Consumer>();
    consumer->core = core_;
    consumer->spec = spec;
    consumer->url = *url;
    consumer->private_queue = private_queue;
    consumer->executor = co_await asio::this_coro::executor;
    {
      std::lock_guard lock(mutex_);
      if (closed_) co_return sqs_error(errc::failed_precondition, "the backend is closed");
      std::erase_if(consumers_, [](const ConsumerPtr& old) {
        std::lock_guard consumer_lock(old->mutex);
        return old->closed && old->queue_deleted;
      });
      consumers_.push_back(consumer);
    }
    asio::co_spawn(consumer->executor, receive_loop(consumer), asio::detached);
    co_return std::shared_ptr<Subscription>(std::make_shared<SqsSubscription>(consumer));
  }

  asio::awaitable<Result<void>> close(SteadyClock::time_point deadline) override {
    std::vector<ConsumerPtr> consumers;
    {
      std::lock_guard lock(mutex_);
      if (closed_) co_return ok();
      closed_ = true;
      consumers.swap(consumers_);
    }
    for (auto& consumer : consumers) {
      // What was received and not handed out is visible again at once (awaited: the client
      // closes below).
      for (auto& r : consumer->close_intake()) {
        if (SteadyClock::now() >= deadline) break;
        QueryParameters parameters{
            {"QueueUrl", consumer->url}, {"ReceiptHandle", r.receipt}, {"VisibilityTimeout", "0"}};
        co_await core_->call_logged("ChangeMessageVisibility", std::move(parameters),
                                    "the message comes back after its visibility timeout");
      }
    }
    for (auto& consumer : consumers) {
      bool delete_queue = false;
      {
        std::lock_guard lock(consumer->mutex);
        delete_queue = consumer->private_queue && !consumer->queue_deleted;
        consumer->queue_deleted = true;
      }
      if (!delete_queue || SteadyClock::now() >= deadline) continue;
      QueryParameters parameters{{"QueueUrl", consumer->url}};
      auto deleted = co_await core_->call("DeleteQueue", std::move(parameters));
      if (!deleted)
        logger().warn("deleting {} failed: {}", consumer->url, deleted.error().describe());
    }
    if (core_->http) core_->http->close();  // ends the long polls now
    co_return ok();
  }

 private:
  static Result<void> validate(const AwsSqsConfig& c) {
    auto invalid = [](std::string what) { return sqs_error(errc::invalid_argument, what); };
    if (c.region.empty()) return invalid("region is empty");
    if (c.wait_time.count() < 0 || c.wait_time.count() > 20) {
      return invalid("wait_time must be 0..20 seconds");
    }
    if (c.max_messages < 1 || c.max_messages > 10) return invalid("max_messages must be 1..10");
    if (c.prefetch < 1) return invalid("prefetch must be at least 1");
    if (c.visibility_timeout.count() < 0 || c.visibility_timeout.count() > 43'200) {
      return invalid("visibility_timeout must be 0..43200 seconds");
    }
    if (c.max_receive_count < 0 || c.max_receive_count > 1000) {
      return invalid("max_receive_count must be 0..1000");
    }
    if (c.request_timeout.count() < 1) return invalid("request_timeout must be positive");
    for (char ch : c.queue_prefix) {
      if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_')) {
        return invalid("queue_prefix '" + c.queue_prefix +
                       "' has a character SQS names cannot carry");
      }
    }
    return ok();
  }

  Result<void> check_usable() {
    std::lock_guard lock(mutex_);
    if (closed_) return sqs_error(errc::failed_precondition, "the backend is closed");
    if (!connected_) return sqs_error(errc::failed_precondition, "connect() has not succeeded");
    return ok();
  }

  void shutdown() {
    std::vector<ConsumerPtr> consumers;
    {
      std::lock_guard lock(mutex_);
      closed_ = true;
      consumers.swap(consumers_);
    }
    for (auto& consumer : consumers) (void)consumer->close_intake();
    if (core_->http) core_->http->close();
  }

  CorePtr core_;
  Capabilities caps_;
  std::mutex mutex_;
  bool connecting_ = false;
  bool connected_ = false;
  bool closed_ = false;
  std::vector<ConsumerPtr> consumers_;
};

}  // namespace

std::shared_ptr<Backend> make_sqs_backend(AwsSqsConfig config) {
  return std::make_shared<SqsBackend>(std::move(config));
}

}  // namespace marty::messaging::aws
