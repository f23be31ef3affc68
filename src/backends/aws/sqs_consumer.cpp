#include "sqs_consumer.hpp"

#include <algorithm>
#include <cstdlib>

#include <spdlog/spdlog.h>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>

#include "aws_wire.hpp"
#include "marty/messaging/detail/inbox.hpp"
#include "marty/messaging/detail/sleep.hpp"
#include "marty/messaging/wire.hpp"

namespace marty::messaging::aws {

using std::chrono::milliseconds;
using Deletion = SqsConsumer::Deletion;

namespace {

constexpr const char* kComesBackLater = "the message comes back after its visibility timeout";

QueryParameters visibility(const std::string& url, std::string receipt, std::int64_t seconds) {
  return {{"QueueUrl", url},
          {"ReceiptHandle", std::move(receipt)},
          {"VisibilityTimeout", std::to_string(seconds)}};
}

asio::awaitable<void> delete_private_queue(SqsConsumerPtr consumer);

// Under the consumer's lock: a private queue whose deletion waited for the consumer to hold
// nothing may go now. Returns whether the caller must start it.
bool deletion_due(SqsConsumer& c) {
  if (c.deletion != Deletion::deferred || !c.closed || !c.unsettled.empty()) return false;
  c.deletion = Deletion::running;
  return true;
}

void start_deletion(SqsConsumerPtr consumer) {
  asio::co_spawn(consumer->executor, delete_private_queue(consumer), asio::detached);
}

// ChangeMessageVisibility off the caller's coroutine; a closing backend waits for it.
void change_visibility_detached(SqsConsumerPtr consumer, std::string receipt,
                                std::int64_t seconds) {
  {
    std::lock_guard lock(consumer->mutex);
    ++consumer->calls_in_flight;
  }
  auto run = [](SqsConsumerPtr c, std::string r, std::int64_t s) -> asio::awaitable<void> {
    QueryParameters parameters = visibility(c->url, std::move(r), s);
    co_await c->queues->call_logged("ChangeMessageVisibility", std::move(parameters),
                                    kComesBackLater);
    {
      std::lock_guard lock(c->mutex);
      --c->calls_in_flight;
    }
    c->quiet->notify();
  };
  asio::co_spawn(consumer->executor, run(consumer, std::move(receipt), seconds), asio::detached);
}

// The message of `key` is settled (deleted): no longer held.
void forget(const SqsConsumerPtr& consumer, std::uint64_t key) {
  bool delete_now = false;
  {
    std::lock_guard lock(consumer->mutex);
    consumer->unsettled.erase(key);
    delete_now = deletion_due(*consumer);
  }
  consumer->room->notify();
  if (delete_now) start_deletion(consumer);
}

// Lets go of the message of `key`: visible again after `seconds` (a nack's delay, or 0 for a
// release). While the keeper is extending it, the change waits for the keeper's call.
void let_go(const SqsConsumerPtr& consumer, std::uint64_t key, std::int64_t seconds) {
  std::optional<std::string> receipt;
  bool delete_now = false;
  {
    std::lock_guard lock(consumer->mutex);
    auto it = consumer->unsettled.find(key);
    if (it == consumer->unsettled.end()) return;  // released by a closing backend already
    if (it->second.extending) {
      it->second.after = seconds;
    } else {
      receipt = std::move(it->second.receipt);
      consumer->unsettled.erase(it);
      delete_now = deletion_due(*consumer);
    }
  }
  if (receipt) change_visibility_detached(consumer, std::move(*receipt), seconds);
  consumer->room->notify();
  if (delete_now) start_deletion(consumer);
}

// FIFO: a message of `group` comes back later (nacked, released, or not dead-lettered), so the
// group's later messages this consumer holds must not be handed out before it; they go back to
// the queue, where SQS keeps them behind it.
void release_rest_of_group(const SqsConsumerPtr& consumer, const std::string& group) {
  if (group.empty()) return;
  std::vector<std::uint64_t> keys;
  {
    std::lock_guard lock(consumer->mutex);
    auto& inbox = consumer->inbox;
    for (auto it = inbox.begin(); it != inbox.end();) {
      if (it->group == group) {
        keys.push_back(it->key);
        it = inbox.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (std::uint64_t key : keys) let_go(consumer, key, 0);
}

// Closes intake and lets go of what was received and not handed out.
void close_intake(const SqsConsumerPtr& consumer) {
  std::deque<SqsReceived> unread;
  {
    std::lock_guard lock(consumer->mutex);
    if (consumer->closed) return;
    consumer->closed = true;
    unread.swap(consumer->inbox);
  }
  consumer->arrived->notify();
  consumer->room->notify();
  consumer->keeper->notify();
  for (const auto& r : unread) let_go(consumer, r.key, 0);
}

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
    // The visibility timeout is asked for on every receive: the keeper counts with it, whatever
    // the queue's own default (a queue made elsewhere may have another).
    QueryParameters parameters{
        {"QueueUrl", c.url},
        {"MaxNumberOfMessages", std::to_string(wanted)},
        {"WaitTimeSeconds", std::to_string(config.wait_time.count())},
        {"VisibilityTimeout", std::to_string(config.visibility_timeout.count())},
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
      logger().warn("receiving from {} failed, retrying: {}", c.url, reply.error().describe());
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
    if (batch.empty()) {
      // An empty reply before the wait time: no long polling here (the SQS emulator, or
      // wait_time 0). A short pause keeps the loop from spinning.
      if (early) co_await detail::sleep_for(milliseconds(50));
      continue;
    }
    bool closed_meanwhile = false;
    {
      // Checked and queued under one lock: a close cannot slip in between and strand the batch.
      std::lock_guard lock(c.mutex);
      closed_meanwhile = c.closed;
      if (!closed_meanwhile) {
        // Received at `polled` or later: invisible to others until the timeout counted from then.
        const auto visible_at = polled + config.visibility_timeout;
        for (auto& r : batch) {
          r.key = ++c.next_key;
          c.unsettled.emplace(r.key, SqsHeld{r.receipt, visible_at, false, std::nullopt});
          c.inbox.push_back(std::move(r));
        }
      }
    }
    if (closed_meanwhile) {
      // Received while the subscription closed: visible again at once, for its next reader.
      for (auto& r : batch) change_visibility_detached(consumer, std::move(r.receipt), 0);
      break;
    }
    c.arrived->notify();
  }
}

// Keeps what the consumer holds invisible to others: a message waiting in the inbox, or a
// handler running longer than the visibility timeout, would otherwise be handed to another
// consumer too. Every quarter of the timeout, what has less than half of it left is extended by
// a whole timeout. Ends when stopped (a closing backend), or closed holding nothing.
asio::awaitable<void> keep_invisible(SqsConsumerPtr consumer) {
  SqsConsumer& c = *consumer;
  const milliseconds timeout = c.queues->config.visibility_timeout;
  if (timeout.count() == 0) co_return;
  const milliseconds tick = std::max(milliseconds(250), timeout / 4);
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(timeout).count();
  while (true) {
    (void)co_await c.keeper->wait(SteadyClock::now() + tick);
    std::vector<std::pair<std::uint64_t, std::string>> due;
    {
      std::lock_guard lock(c.mutex);
      if (c.keeper_stopped || (c.closed && c.unsettled.empty())) break;
      const auto now = SteadyClock::now();
      for (auto& [key, held] : c.unsettled) {
        if (!held.after && held.visible_at - now < timeout / 2) {
          due.emplace_back(key, held.receipt);
          held.extending = true;
          held.visible_at = now + timeout;
        }
      }
      c.keeper_busy = !due.empty();
    }
    for (std::size_t i = 0; i < due.size(); ++i) {  // no structured bindings across co_await
      QueryParameters extend = visibility(c.url, due[i].second, seconds);
      auto kept = co_await c.queues->call("ChangeMessageVisibility", std::move(extend));
      if (!kept && !kept.error().is(errc::cancelled)) {
        logger().warn(
            "keeping a message of {} invisible failed ({}): another consumer may get it too", c.url,
            kept.error().describe());
      }
      std::optional<std::int64_t> after;
      bool delete_now = false;
      {
        std::lock_guard lock(c.mutex);
        auto it = c.unsettled.find(due[i].first);
        if (it != c.unsettled.end()) {
          it->second.extending = false;
          after = it->second.after;
          if (after) {
            c.unsettled.erase(it);
            delete_now = deletion_due(c);
          }
        }
      }
      if (after) {
        QueryParameters later = visibility(c.url, due[i].second, *after);
        co_await c.queues->call_logged("ChangeMessageVisibility", std::move(later),
                                       kComesBackLater);
        c.room->notify();
      }
      if (delete_now) start_deletion(consumer);
    }
    {
      std::lock_guard lock(c.mutex);
      c.keeper_busy = false;
    }
    c.quiet->notify();
  }
  {
    std::lock_guard lock(c.mutex);
    c.keeper_busy = false;
  }
  c.quiet->notify();
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
    let_go(consumer_, key_, 0);
    if (consumer_->fifo) release_rest_of_group(consumer_, group_);
  }

  asio::awaitable<Result<void>> ack() override { co_return co_await remove(); }
  asio::awaitable<Result<void>> term() override { co_return co_await remove(); }
  asio::awaitable<Result<void>> nack(milliseconds delay) override {
    if (settled_) co_return already();
    settled_ = true;
    // SQS counts visibility in whole seconds (at most 12 hours).
    let_go(consumer_, key_, std::clamp<std::int64_t>((delay.count() + 999) / 1000, 0, 43'200));
    if (consumer_->fifo) release_rest_of_group(consumer_, group_);
    co_return ok();
  }

 private:
  asio::awaitable<Result<void>> remove() {
    if (settled_) co_return already();
    settled_ = true;
    QueryParameters parameters{{"QueueUrl", consumer_->url}, {"ReceiptHandle", receipt_}};
    auto removed = co_await consumer_->queues->call("DeleteMessage", std::move(parameters));
    forget(consumer_, key_);
    if (!removed) co_return std::move(removed).error();
    co_return ok();
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
      if (received->message->expired()) {
        // A query nobody waits for any more.
        QueryParameters parameters{{"QueueUrl", c.url}, {"ReceiptHandle", received->receipt}};
        co_await c.queues->call_logged("DeleteMessage", std::move(parameters),
                                       "the expired query will be skipped again");
        forget(consumer_, received->key);
        continue;
      }
      // The message first: the rest of `received` is moved into the delivery after it.
      Message message = std::move(*received->message);
      const int attempt = received->attempt;
      co_return std::unique_ptr<Delivery>(
          new SqsDelivery(std::move(message), attempt, consumer_, std::move(*received)));
    }
  }

  // Intake stops and what was not handed out goes back to the queue at once. A private queue
  // goes once nothing handed out is held any more (the bus's drain may still settle some).
  void close() override {
    close_intake(consumer_);
    bool delete_now = false;
    {
      std::lock_guard lock(consumer_->mutex);
      if (consumer_->private_queue && consumer_->deletion == Deletion::none) {
        consumer_->deletion = Deletion::deferred;
        delete_now = deletion_due(*consumer_);
      }
    }
    if (delete_now) start_deletion(consumer_);
  }

 private:
  // What cannot be decoded goes to the dead-letter queue of its subject with the reason, and is
  // deleted; the subscription goes on.
  asio::awaitable<void> dead_letter(SqsReceived received) {
    SqsConsumer& c = *consumer_;
    Message dead = undecodable_dead_letter(c.spec.subject, std::move(received.raw_body),
                                           received.message.error().describe());
    auto url = co_await c.queues->queue_url(std::string(dead.subject()), true, false);
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
      logger().warn("an undecodable message from {} went to {}: {}", c.spec.subject, dead.subject(),
                    received.message.error().describe());
      forget(consumer_, received.key);
      co_return;
    }
    logger().error(
        "cannot dead-letter an undecodable message from {} ({}); SQS will deliver it again, and "
        "its redrive policy move it",
        c.spec.subject, moved.error().describe());
    // Left to come back after its visibility timeout (not kept invisible any longer), ahead of
    // the rest of its group.
    bool delete_now = false;
    {
      std::lock_guard lock(c.mutex);
      c.unsettled.erase(received.key);
      delete_now = deletion_due(c);
    }
    if (c.fifo) release_rest_of_group(consumer_, received.group);
    if (delete_now) start_deletion(consumer_);
  }

  SqsConsumerPtr consumer_;
};

asio::awaitable<void> delete_private_queue(SqsConsumerPtr consumer) {
  if (consumer->before_delete) co_await consumer->before_delete();
  QueryParameters parameters{{"QueueUrl", consumer->url}};
  co_await consumer->queues->call_logged("DeleteQueue", std::move(parameters),
                                         "the subscriber's own queue stays behind");
  {
    std::lock_guard lock(consumer->mutex);
    consumer->deletion = Deletion::done;
  }
  consumer->quiet->notify();
}

bool keeper_and_calls_done(const SqsConsumer& c) {
  return !c.keeper_busy && c.calls_in_flight == 0;
}
bool queue_gone(const SqsConsumer& c) {
  return !c.private_queue || c.deletion == Deletion::done;
}

// Waits, while `deadline` allows, until `done` holds (checked under the consumer's lock).
asio::awaitable<bool> wait_quiet(SqsConsumerPtr consumer, SteadyClock::time_point deadline,
                                 bool (*done)(const SqsConsumer&)) {
  while (true) {
    {
      std::lock_guard lock(consumer->mutex);
      if (done(*consumer)) co_return true;
    }
    if (!co_await consumer->quiet->wait(deadline)) co_return false;
  }
}

}  // namespace

bool SqsConsumer::finished() {
  std::lock_guard lock(mutex);
  return closed && unsettled.empty() && calls_in_flight == 0 && !keeper_busy &&
         (!private_queue || deletion == Deletion::done);
}

std::shared_ptr<Subscription> start_sqs_subscription(SqsConsumerPtr consumer) {
  asio::co_spawn(consumer->executor, receive_loop(consumer), asio::detached);
  asio::co_spawn(consumer->executor, keep_invisible(consumer), asio::detached);
  return std::make_shared<SqsSubscription>(std::move(consumer));
}

void stop_sqs_consumer(const SqsConsumerPtr& consumer) {
  {
    std::lock_guard lock(consumer->mutex);
    consumer->closed = true;
    consumer->keeper_stopped = true;
    consumer->inbox.clear();
  }
  consumer->arrived->notify();
  consumer->room->notify();
  consumer->keeper->notify();
}

asio::awaitable<void> close_sqs_consumer(SqsConsumerPtr consumer,
                                         SteadyClock::time_point deadline) {
  SqsConsumer& c = *consumer;
  close_intake(consumer);
  {
    std::lock_guard lock(c.mutex);
    c.keeper_stopped = true;
  }
  c.keeper->notify();
  // The keeper's round and the detached calls finish first: this backend's client closes next.
  const bool settled_down = co_await wait_quiet(consumer, deadline, &keeper_and_calls_done);
  // What handlers still hold is visible again at once, as when a broker's connection drops.
  std::vector<std::string> receipts;
  bool delete_now = false;
  {
    std::lock_guard lock(c.mutex);
    for (auto& [key, held] : c.unsettled) receipts.push_back(std::move(held.receipt));
    c.unsettled.clear();
    if (c.private_queue && c.deletion != Deletion::running && c.deletion != Deletion::done) {
      c.deletion = Deletion::running;
      delete_now = true;
    }
  }
  for (std::size_t i = 0; i < receipts.size() && settled_down; ++i) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - SteadyClock::now());
    if (left.count() <= 0) break;
    QueryParameters release = visibility(c.url, receipts[i], 0);
    auto released =
        co_await c.queues->call_within("ChangeMessageVisibility", std::move(release), left);
    if (!released) {
      logger().warn("SQS ChangeMessageVisibility failed ({}): {}", released.error().describe(),
                    kComesBackLater);
    }
  }
  if (delete_now) {
    co_await delete_private_queue(consumer);
    co_return;
  }
  const bool gone = co_await wait_quiet(consumer, deadline, &queue_gone);
  if (!gone) {
    logger().warn("closing: the deletion of {} did not finish in time; it stays behind", c.url);
  }
}

}  // namespace marty::messaging::aws
