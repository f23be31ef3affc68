#include "sqs_consumer.hpp"

#include <algorithm>
#include <cstdlib>

#include <spdlog/spdlog.h>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>

#include "aws_wire.hpp"
#include "marty/messaging/detail/inbox.hpp"
#include "marty/messaging/detail/sleep.hpp"
#include "marty/messaging/event_bus.hpp"

namespace marty::messaging::aws {

using std::chrono::milliseconds;

void SqsConsumer::settled(std::uint64_t key) {
  bool last = false;
  {
    std::lock_guard lock(mutex);
    unsettled.erase(key);
    last = closed && unsettled.empty();
  }
  room->notify();
  if (last) keeper->notify();
}

std::vector<std::string> SqsConsumer::take_unsettled() {
  std::vector<std::string> receipts;
  {
    std::lock_guard lock(mutex);
    for (auto& [key, held] : unsettled) receipts.push_back(std::move(held.receipt));
    unsettled.clear();
  }
  room->notify();
  keeper->notify();
  return receipts;
}

std::deque<SqsReceived> SqsConsumer::close_intake() {
  std::deque<SqsReceived> unread;
  {
    std::lock_guard lock(mutex);
    if (closed) return unread;
    closed = true;
    unread.swap(inbox);
    for (const auto& r : unread) unsettled.erase(r.key);
  }
  arrived->notify();
  room->notify();
  keeper->notify();
  return unread;
}

bool SqsConsumer::take_queue_deletion() {
  std::lock_guard lock(mutex);
  const bool due = private_queue && !queue_deletion_taken;
  queue_deletion_taken = true;
  if (due) queue_deletion_running = true;
  return due;
}

bool SqsConsumer::finished() {
  std::lock_guard lock(mutex);
  return closed && !queue_deletion_running && (queue_deletion_taken || !private_queue);
}

std::vector<std::string> SqsConsumer::take_group(const std::string& group) {
  std::vector<std::string> receipts;
  if (group.empty()) return receipts;
  std::lock_guard lock(mutex);
  for (auto it = inbox.begin(); it != inbox.end();) {
    if (it->group == group) {
      receipts.push_back(std::move(it->receipt));
      unsettled.erase(it->key);
      it = inbox.erase(it);
    } else {
      ++it;
    }
  }
  return receipts;
}

namespace {

// Receives into the consumer's inbox (long polling) until it closes.
asio::awaitable<void> receive_loop(SqsConsumerPtr consumer) {
  SqsConsumer& c = *consumer;
  const AwsSqsConfig& config = c.queues->config;
  milliseconds backoff(100);
  while (true) {
    int wanted = 0;
    {
      std::lock_guard lock(c.mutex);
      if (c.closed) break;
      wanted =
          std::min(config.max_messages, config.prefetch - static_cast<int>(c.unsettled.size()));
    }
    if (wanted <= 0) {
      (void)co_await c.room->wait(SteadyClock::now() + std::chrono::seconds(1));
      continue;
    }
    QueryParameters parameters{{"QueueUrl", c.url},
                               {"MaxNumberOfMessages", std::to_string(wanted)},
                               {"WaitTimeSeconds", std::to_string(config.wait_time.count())},
                               {"AttributeName.1", "ApproximateReceiveCount"},
                               {"AttributeName.2", "MessageGroupId"},
                               {"MessageAttributeName.1", "All"}};
    const auto polled = SteadyClock::now();
    auto reply = co_await c.queues->sqs->call("ReceiveMessage", std::move(parameters),
                                              config.request_timeout + config.wait_time, 3);
    if (!reply) {
      {
        std::lock_guard lock(c.mutex);
        if (c.closed) break;
      }
      aws_logger().warn("receiving from {} failed, retrying: {}", c.url, reply.error().describe());
      co_await detail::sleep_for(backoff);
      backoff = std::min(backoff * 2, milliseconds(5'000));
      continue;
    }
    backoff = milliseconds(100);
    const bool early =
        config.wait_time.count() == 0 || SteadyClock::now() - polled < config.wait_time;
    std::vector<SqsReceived> batch;
    for (const XmlElement* message : reply->find_all("Message")) {
      Attributes attributes;
      for (const XmlElement* attribute : message->find_all("MessageAttribute")) {
        attributes.emplace_back(attribute->text_of("Name"), attribute->text_of("StringValue"));
      }
      SqsReceived received;
      received.receipt = message->text_of("ReceiptHandle");
      for (const XmlElement* attribute : message->find_all("Attribute")) {
        if (attribute->text_of("Name") == "ApproximateReceiveCount") {
          received.attempt = std::max(1, std::atoi(attribute->text_of("Value").c_str()));
        } else if (attribute->text_of("Name") == "MessageGroupId") {
          received.group = attribute->text_of("Value");
        }
      }
      received.raw_body = message->text_of("Body");
      received.message = from_aws(c.spec.subject, received.raw_body, attributes);
      if (c.fifo && received.group.empty() && received.message) {
        // SQS names the group when asked (an emulator may not): ours are derived the same way
        // the publisher derived them.
        received.group = message_group_of(*received.message);
      }
      batch.push_back(std::move(received));
    }
    bool closed_meanwhile = false;
    {
      std::lock_guard lock(c.mutex);
      closed_meanwhile = c.closed;
    }
    if (closed_meanwhile) {
      // SqsReceived while the subscription closed: visible again at once, for its next reader.
      for (const auto& r : batch) {
        QueryParameters release{
            {"QueueUrl", c.url}, {"ReceiptHandle", r.receipt}, {"VisibilityTimeout", "0"}};
        co_await c.queues->call_logged("ChangeMessageVisibility", std::move(release),
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
      // Received at `polled` or later: invisible to others until the timeout counted from then.
      const auto visible_at = polled + config.visibility_timeout;
      for (auto& r : batch) {
        r.key = ++c.next_key;
        c.unsettled.emplace(r.key, SqsHeld{r.receipt, visible_at});
        c.inbox.push_back(std::move(r));
      }
    }
    c.arrived->notify();
  }
}

// Keeps what the consumer holds invisible to others: a message waiting in the inbox, or a
// handler running longer than the visibility timeout, would otherwise be handed to another
// consumer too. Every quarter of the timeout, what has less than half of it left is extended by
// a whole timeout. Ends when the consumer is closed and holds nothing, or its client closes.
asio::awaitable<void> keep_invisible(SqsConsumerPtr consumer) {
  SqsConsumer& c = *consumer;
  const std::chrono::seconds timeout = c.queues->config.visibility_timeout;
  if (timeout.count() == 0) co_return;
  const milliseconds tick = std::max(milliseconds(250), milliseconds(timeout) / 4);
  while (true) {
    (void)co_await c.keeper->wait(SteadyClock::now() + tick);
    std::vector<std::string> due;
    {
      std::lock_guard lock(c.mutex);
      if (c.closed && c.unsettled.empty()) break;
      const auto now = SteadyClock::now();
      for (auto& [key, held] : c.unsettled) {
        if (held.visible_at - now < timeout / 2) {
          due.push_back(held.receipt);
          held.visible_at = now + timeout;
        }
      }
    }
    for (auto& receipt : due) {
      QueryParameters parameters{{"QueueUrl", c.url},
                                 {"ReceiptHandle", receipt},
                                 {"VisibilityTimeout", std::to_string(timeout.count())}};
      auto kept = co_await c.queues->call("ChangeMessageVisibility", std::move(parameters));
      if (!kept && kept.error().is(errc::cancelled)) co_return;  // the backend closed
      if (!kept) {
        aws_logger().warn(
            "keeping a message of {} invisible failed ({}): another consumer may get it too", c.url,
            kept.error().describe());
      }
    }
  }
}

class SqsDelivery final : public Delivery {
 public:
  SqsDelivery(Message message, int attempt, SqsConsumerPtr consumer, SqsReceived received)
      : Delivery(std::move(message), attempt, 0),
        consumer_(std::move(consumer)),
        receipt_(std::move(received.receipt)),
        group_(std::move(received.group)),
        key_(received.key) {}
  ~SqsDelivery() override {
    if (settled_) return;
    // Released: visible again at once, to any consumer of the queue.
    change_visibility(receipt_, 0);
    release_rest_of_group();
    consumer_->settled(key_);
  }

  asio::awaitable<Result<void>> ack() override { co_return co_await remove(); }
  asio::awaitable<Result<void>> term() override { co_return co_await remove(); }
  asio::awaitable<Result<void>> nack(milliseconds delay) override {
    if (settled_) co_return already();
    settled_ = true;
    // SQS counts visibility in whole seconds (at most 12 hours).
    const auto seconds = std::clamp<std::int64_t>((delay.count() + 999) / 1000, 0, 43'200);
    change_visibility(receipt_, seconds);
    release_rest_of_group();
    consumer_->settled(key_);
    co_return ok();
  }

 private:
  asio::awaitable<Result<void>> remove() {
    if (settled_) co_return already();
    settled_ = true;
    QueryParameters parameters{{"QueueUrl", consumer_->url}, {"ReceiptHandle", receipt_}};
    auto removed = co_await consumer_->queues->call("DeleteMessage", std::move(parameters));
    consumer_->settled(key_);
    if (!removed) co_return std::move(removed).error();
    co_return ok();
  }
  // FIFO: this message comes back later, so its group's later messages held here must not be
  // handed out before it; they go back to the queue, where SQS keeps them behind it.
  void release_rest_of_group() {
    const auto receipts = consumer_->take_group(group_);
    for (const auto& receipt : receipts) change_visibility(receipt, 0);
    if (!receipts.empty()) consumer_->room->notify();
  }
  void change_visibility(const std::string& receipt, std::int64_t seconds) {
    QueryParameters parameters{{"QueueUrl", consumer_->url},
                               {"ReceiptHandle", receipt},
                               {"VisibilityTimeout", std::to_string(seconds)}};
    SqsQueues::detached_call(consumer_->queues, "ChangeMessageVisibility", std::move(parameters),
                             consumer_->executor);
  }
  Error already() const {
    return Error(errc::failed_precondition, "the delivery was already settled",
                 consumer_->queues->backend);
  }

  SqsConsumerPtr consumer_;
  std::string receipt_;
  std::string group_;
  std::uint64_t key_;
  bool settled_ = false;
};

class SqsSubscription final : public Subscription {
 public:
  explicit SqsSubscription(SqsConsumerPtr consumer) : consumer_(std::move(consumer)) {}
  ~SqsSubscription() override { close(); }

  asio::awaitable<Result<std::unique_ptr<Delivery>>> receive(
      std::optional<SteadyClock::time_point> deadline) override {
    SqsConsumer& c = *consumer_;
    while (true) {
      auto received = co_await detail::take_next(&c.mutex, &c.inbox, &c.closed, c.arrived.get(),
                                                 deadline, c.queues->backend);
      if (!received) co_return std::move(received).error();
      if (!received->message) {
        co_await dead_letter(std::move(*received));
        continue;
      }
      const MessageMetadata& metadata = received->message->metadata();
      if (metadata.ttl && metadata.time && *metadata.time + *metadata.ttl < Clock::now()) {
        // A query nobody waits for any more.
        QueryParameters parameters{{"QueueUrl", c.url}, {"ReceiptHandle", received->receipt}};
        co_await c.queues->call_logged("DeleteMessage", std::move(parameters),
                                       "the expired query will be skipped again");
        c.settled(received->key);
        continue;
      }
      // The message first: the rest of `received` is moved into the delivery after it.
      Message message = std::move(*received->message);
      const int attempt = received->attempt;
      co_return std::unique_ptr<Delivery>(
          new SqsDelivery(std::move(message), attempt, consumer_, std::move(*received)));
    }
  }

  void close() override {
    SqsConsumer& c = *consumer_;
    auto unread = c.close_intake();
    if (c.take_queue_deletion()) {
      asio::co_spawn(c.executor, delete_private_queue(consumer_), asio::detached);
      return;  // its messages go with it
    }
    for (auto& r : unread) {
      QueryParameters parameters{
          {"QueueUrl", c.url}, {"ReceiptHandle", r.receipt}, {"VisibilityTimeout", "0"}};
      SqsQueues::detached_call(c.queues, "ChangeMessageVisibility", std::move(parameters),
                               c.executor);
    }
  }

 private:
  // What cannot be decoded goes to the dead-letter queue of its subject with the reason, and is
  // deleted; the subscription goes on.
  asio::awaitable<void> dead_letter(SqsReceived received) {
    SqsConsumer& c = *consumer_;
    Message dead = undecodable_dead_letter(c.spec.subject, std::move(received.raw_body),
                                           received.message.error().describe());
    auto url = co_await c.queues->queue_url(dead.subject(), true, false);
    Result<void> moved = ok();
    if (url) {
      moved = co_await c.queues->send(*url, dead, c.queues->config.request_timeout);
    } else {
      moved = std::move(url).error();
    }
    if (moved) {
      QueryParameters parameters{{"QueueUrl", c.url}, {"ReceiptHandle", received.receipt}};
      co_await c.queues->call_logged("DeleteMessage", std::move(parameters),
                                     "it will be dead-lettered again when it comes back");
      aws_logger().warn("an undecodable message from {} went to {}: {}", c.spec.subject,
                        dead.subject(), received.message.error().describe());
    } else {
      aws_logger().error(
          "cannot dead-letter an undecodable message from {} ({}); SQS will "
          "deliver it again, and its redrive policy move it",
          c.spec.subject, moved.error().describe());
    }
    c.settled(received.key);
  }

  SqsConsumerPtr consumer_;
};

}  // namespace

std::shared_ptr<Subscription> start_sqs_subscription(SqsConsumerPtr consumer) {
  asio::co_spawn(consumer->executor, receive_loop(consumer), asio::detached);
  asio::co_spawn(consumer->executor, keep_invisible(consumer), asio::detached);
  return std::make_shared<SqsSubscription>(std::move(consumer));
}

asio::awaitable<void> delete_private_queue(SqsConsumerPtr consumer) {
  if (consumer->before_delete) co_await consumer->before_delete();
  QueryParameters parameters{{"QueueUrl", consumer->url}};
  co_await consumer->queues->call_logged("DeleteQueue", std::move(parameters),
                                         "the subscriber's own queue stays behind");
  {
    std::lock_guard lock(consumer->mutex);
    consumer->queue_deletion_running = false;
  }
  consumer->queue_deleted->notify();
}

asio::awaitable<void> close_sqs_consumer(SqsConsumerPtr consumer,
                                         SteadyClock::time_point deadline) {
  // What was received and not handed out, and what was handed out and not settled, is visible
  // again at once (as when a broker's consumer connection drops).
  std::vector<std::string> receipts;
  for (auto& r : consumer->close_intake()) receipts.push_back(std::move(r.receipt));
  for (auto& receipt : consumer->take_unsettled()) receipts.push_back(std::move(receipt));
  for (auto& receipt : receipts) {
    if (SteadyClock::now() >= deadline) break;
    QueryParameters parameters{
        {"QueueUrl", consumer->url}, {"ReceiptHandle", receipt}, {"VisibilityTimeout", "0"}};
    co_await consumer->queues->call_logged("ChangeMessageVisibility", std::move(parameters),
                                           "the message comes back after its visibility timeout");
  }
  if (consumer->take_queue_deletion()) {
    co_await delete_private_queue(consumer);
    co_return;
  }
  // Its subscription's close started the deletion: the client must outlive it.
  while (true) {
    {
      std::lock_guard lock(consumer->mutex);
      if (!consumer->queue_deletion_running) co_return;
    }
    if (!co_await consumer->queue_deleted->wait(deadline)) {
      aws_logger().warn("closing: the deletion of {} did not finish in time; it stays behind",
                        consumer->url);
      co_return;
    }
  }
}

}  // namespace marty::messaging::aws
