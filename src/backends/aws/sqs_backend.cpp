#include "sqs_backend.hpp"

#include <algorithm>

#include "aws_wire.hpp"
#include "marty/messaging/detail/query_deadline.hpp"

namespace marty::messaging::aws {

using std::chrono::milliseconds;

SqsBackend::SqsBackend(AwsSqsConfig config, std::string name)
    : queues_(std::make_shared<SqsQueues>()), name_(std::move(name)) {
  queues_->config = std::move(config);
  queues_->backend = name_;
  caps_.patterns = {MessagingPattern::point_to_point, MessagingPattern::request_response};
  caps_.delivery = DeliveryGuarantee::at_least_once;
  caps_.ordering = Ordering::none;
  caps_.durable_groups = true;
  caps_.consumer_groups = false;  // a queue's consumers compete; groups do not fan out
  caps_.delayed_redelivery = true;
  caps_.native_dead_letter = true;
  caps_.inspectable_dead_letters = true;
  caps_.consumer_lag = true;  // a queue's depth (GetQueueAttributes)
  caps_.headers = true;
  // SQS takes 256 KiB with the attributes; a binary payload grows by a third in base64.
  caps_.max_payload_bytes = 180 * 1024;
}

SqsBackend::~SqsBackend() {
  shutdown();
}

Error SqsBackend::error(errc code, std::string message) const {
  return Error(code, std::move(message), name_);
}

asio::awaitable<Result<void>> SqsBackend::connect() {
  {
    std::lock_guard lock(mutex_);
    if (connected_) co_return ok();
    if (closed_ || connecting_) {
      co_return error(errc::failed_precondition,
                      closed_ ? "the backend is closed" : "connect() is already running");
    }
    connecting_ = true;
  }
  Result<void> connected = validate_sqs_config(queues_->config, name_);
  if (connected) {
    // Under the lock: close() and the destructor read the client.
    std::lock_guard lock(mutex_);
    connected = closed_
                    ? error(errc::failed_precondition, "the backend closed while connecting")
                    : queues_->open(std::make_shared<HttpClient>(queues_->config.connect_timeout));
  }
  if (connected) {
    // Reachable, and the credentials taken? (ListQueues is the cheapest call there is.)
    QueryParameters probe{{"MaxResults", "1"}};
    auto listed = co_await queues_->call("ListQueues", std::move(probe));
    if (!listed) {
      connected = std::move(listed).error().with_context("connect to SQS at " +
                                                         queues_->sqs->endpoint().url);
    }
  }
  if (connected) connected = co_await connect_more();
  std::lock_guard lock(mutex_);
  connecting_ = false;
  if (connected && closed_) {
    connected = error(errc::failed_precondition, "the backend closed while connecting");
  }
  if (!connected) {
    if (queues_->http) queues_->http->close();
    co_return connected;
  }
  connected_ = true;
  co_return ok();
}

milliseconds SqsBackend::time_left(SteadyClock::time_point deadline) const {
  const milliseconds limit = queues_->config.request_timeout;
  if (deadline == SteadyClock::time_point::max()) return limit;
  return std::min(limit, std::chrono::duration_cast<milliseconds>(deadline - SteadyClock::now()));
}

asio::awaitable<Result<void>> SqsBackend::publish(Message message, PublishOptions options) {
  if (auto usable = check_usable(); !usable) co_return usable;
  const std::string subject(message.subject());
  // Queues are made by their subscribers (and dead-letter queues by whoever dead-letters):
  // a command to a queue nobody made is an error for its sender, never a message nobody reads.
  const bool create = subject.starts_with("deadletter.");
  // A dead-letter queue has no redrive policy of its own: reading dead letters (which SQS can
  // only do by receiving them) must never move them on.
  auto url = co_await queues_->queue_url(subject, create, !create);
  if (!url) co_return std::move(url).error().with_context("publish to " + subject);
  detail::carry_query_deadline(message, options);
  co_return co_await queues_->send(*url, std::move(message), time_left(options.deadline));
}

asio::awaitable<Result<std::uint64_t>> SqsBackend::consumer_lag(SubscriptionSpec spec,
                                                                SteadyClock::time_point deadline) {
  QueueRequest request;
  request.key = spec.subject;
  request.name = aws_name_for(queues_->config.queue_prefix, spec.subject, kQueueNameRoom, false);
  co_return co_await queue_lag(std::move(request), spec.group, spec.subject, deadline);
}

asio::awaitable<Result<std::uint64_t>> SqsBackend::queue_lag(QueueRequest request,
                                                             std::string group, std::string subject,
                                                             SteadyClock::time_point deadline) {
  if (auto usable = check_usable(); !usable) co_return std::move(usable).error();
  auto url = co_await queues_->queue_url(std::move(request));
  if (!url) {
    if (url.error().is(errc::not_found)) {
      co_return error(errc::not_found, "no consumer group '" + group + "' on '" + subject +
                                           "' (its queue does not exist)");
    }
    co_return std::move(url).error().with_context("consumer_lag " + subject);
  }
  auto depth = co_await queues_->queue_depth(*url, time_left(deadline));
  if (!depth) co_return std::move(depth).error().with_context("consumer_lag " + subject);
  co_return *depth;
}

asio::awaitable<Result<std::shared_ptr<Subscription>>> SqsBackend::subscribe(
    SubscriptionSpec spec) {
  if (auto usable = check_usable(); !usable) co_return std::move(usable).error();
  // A subscriber on its own reads a queue of its own (the bus's reply subject), deleted when
  // it closes and so without a dead-letter queue; a queue shared by a group outlives its
  // subscribers.
  const bool private_queue = spec.group.empty();
  auto url = co_await queues_->queue_url(spec.subject, true, !private_queue);
  if (!url) co_return std::move(url).error().with_context("subscribe " + spec.subject);
  std::function<asio::awaitable<void>()> nothing;
  co_return co_await subscribe_queue(std::move(spec), *url, private_queue, std::move(nothing),
                                     false);
}

asio::awaitable<Result<std::shared_ptr<Subscription>>> SqsBackend::subscribe_queue(
    SubscriptionSpec spec, std::string url, bool private_queue,
    std::function<asio::awaitable<void>()> before_delete, bool fifo) {
  auto consumer = std::make_shared<SqsConsumer>();
  consumer->fifo = fifo;
  consumer->queues = queues_;
  consumer->spec = std::move(spec);
  consumer->url = std::move(url);
  consumer->private_queue = private_queue;
  consumer->before_delete = std::move(before_delete);
  consumer->executor = co_await asio::this_coro::executor;
  {
    std::lock_guard lock(mutex_);
    if (closed_) co_return error(errc::failed_precondition, "the backend is closed");
    std::erase_if(consumers_, [](const SqsConsumerPtr& old) { return old->finished(); });
    consumers_.push_back(consumer);
  }
  co_return start_sqs_subscription(std::move(consumer));
}

asio::awaitable<Result<void>> SqsBackend::close(SteadyClock::time_point deadline) {
  std::vector<SqsConsumerPtr> consumers;
  std::shared_ptr<HttpClient> http;
  {
    std::lock_guard lock(mutex_);
    if (closed_) co_return ok();
    closed_ = true;
    consumers.swap(consumers_);
    http = queues_->http;
  }
  for (auto& consumer : consumers) co_await close_sqs_consumer(consumer, deadline);
  if (http) http->close();  // ends the long polls now
  co_return ok();
}

Result<void> SqsBackend::check_usable() {
  std::lock_guard lock(mutex_);
  if (closed_) return error(errc::failed_precondition, "the backend is closed");
  if (!connected_) return error(errc::failed_precondition, "connect() has not succeeded");
  return ok();
}

void SqsBackend::shutdown() {
  std::vector<SqsConsumerPtr> consumers;
  std::shared_ptr<HttpClient> http;
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
    consumers.swap(consumers_);
    http = queues_->http;
  }
  for (auto& consumer : consumers) stop_sqs_consumer(consumer);
  // Ends every call, the consumers' receive loops and keepers with them (their messages come
  // back after the visibility timeout: close() is where they are released at once).
  if (http) http->close();
}

std::shared_ptr<Backend> make_sqs_backend(AwsSqsConfig config) {
  return std::make_shared<SqsBackend>(std::move(config), std::string(kSqsBackendName));
}

}  // namespace marty::messaging::aws
