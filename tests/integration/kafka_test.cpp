// The Kafka backend against librdkafka's mock cluster: the shared one scripts/brokers starts
// (MARTY_KAFKA_BOOTSTRAP) and private ones (tools/kafka-mock-cluster) whose brokers a test takes
// down and brings back.
#include <librdkafka/rdkafka.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/use_future.hpp>

#include "../../src/backends/kafka/partition_progress.hpp"
#include "../support/backend_checks.hpp"
#include "../support/kafka_cluster.hpp"
#include "../support/server_process.hpp"
#include "../support/test_loop.hpp"
#include "marty/messaging.hpp"
#include "marty/messaging/detail/sleep.hpp"
#include "marty/messaging/kafka_backend.hpp"

namespace marty::messaging {
namespace {

using namespace std::chrono_literals;
using kafka::KafkaConfig;
using testing::eventually;
using testing::TestLoop;

std::string shared_bootstrap() {
  const char* servers = std::getenv("MARTY_KAFKA_BOOTSTRAP");
  return servers != nullptr ? servers : "";
}

// What the mock cluster needs (see tests/conformance/kafka_conformance_test.cpp).
KafkaConfig config_for(const std::string& bootstrap) {
  KafkaConfig config;
  config.bootstrap_servers = bootstrap;
  config.topic_creation = KafkaConfig::TopicCreation::broker_auto_create;
  config.session_timeout = 4s;
  config.consumer_properties["fetch.wait.max.ms"] = "10";
  return config;
}

std::string unique(std::string_view base) {
  const std::string id = make_uuid_v7();
  return std::string(base) + "_" + id.substr(id.size() - 12);
}

Message numbered(const std::string& subject, int n, std::string key = {}) {
  Message message = Message::from_json({{"n", n}});
  message.mutable_metadata().message_type = subject::type_of(subject);
  message.mutable_metadata().partition_key = std::move(key);
  message.set_subject(subject);
  return message;
}

// ---- Bookkeeping -------------------------------------------------------------------------

TEST(KafkaBookkeeping, CommitsNeverPassAnUnfinishedOffset) {
  kafka::PartitionProgress progress;
  EXPECT_FALSE(progress.committable());
  for (std::int64_t offset = 10; offset < 15; ++offset) progress.fetched(offset);
  EXPECT_EQ(progress.committable(), 10);
  progress.finished(11);
  progress.finished(12);
  EXPECT_EQ(progress.committable(), 10) << "10 is unfinished: a commit may not pass it";
  progress.finished(10);
  EXPECT_EQ(progress.committable(), 13);
  progress.finished(14);
  EXPECT_EQ(progress.committable(), 13);
  progress.finished(13);
  EXPECT_EQ(progress.committable(), 15) << "all finished: the next offset to read";
  EXPECT_EQ(progress.unfinished(), 0u);
}

TEST(KafkaBookkeeping, KeyGateLetsOneMessagePerKeyOutInOrder) {
  kafka::KeyGate<int> gate;
  int a1 = 1, a2 = 2, a3 = 3, b1 = 10, none = 99;
  EXPECT_TRUE(gate.offer("a", a1));
  EXPECT_TRUE(gate.offer("b", b1)) << "another key is not held back";
  EXPECT_FALSE(gate.offer("a", a2));
  EXPECT_FALSE(gate.offer("a", a3));
  EXPECT_TRUE(gate.offer("", none)) << "messages without a key are never held";
  EXPECT_EQ(gate.waiting(), 2u);
  EXPECT_EQ(gate.done("a"), 2);
  EXPECT_EQ(gate.done("a"), 3);
  EXPECT_EQ(gate.done("a"), std::nullopt);
  EXPECT_FALSE(gate.is_out("a"));
  EXPECT_TRUE(gate.is_out("b"));
  int a4 = 4, a5 = 5;
  EXPECT_TRUE(gate.offer("a", a4));
  EXPECT_FALSE(gate.offer("a", a5));
  EXPECT_EQ(gate.remove_waiting_if([](int v) { return v == 5; }, [](int) {}), 1u);
  EXPECT_EQ(gate.done("a"), std::nullopt);
}

// ---- Configuration and connection -----------------------------------------------------------

TEST(KafkaConfigCheck, BadSettingsAreRefusedByName) {
  KafkaConfig empty;
  testing::expect_invalid_config(kafka::make_backend(empty), "bootstrap_servers");

  KafkaConfig unknown = config_for("127.0.0.1:9");
  unknown.properties["no.such.property"] = "1";
  testing::expect_invalid_config(kafka::make_backend(unknown), "no.such.property");

  KafkaConfig bad_value = config_for("127.0.0.1:9");
  bad_value.properties["linger.ms"] = "soon";
  testing::expect_invalid_config(kafka::make_backend(bad_value), "linger.ms");

  KafkaConfig owned = config_for("127.0.0.1:9");
  owned.properties["enable.auto.commit"] = "true";
  testing::expect_invalid_config(kafka::make_backend(owned), "enable.auto.commit");

  KafkaConfig prefix = config_for("127.0.0.1:9");
  prefix.topic_prefix = "my topics/";
  testing::expect_invalid_config(kafka::make_backend(prefix), "topic_prefix");

  KafkaConfig group = config_for("127.0.0.1:9");
  group.consumer_properties["group.id"] = "mine";
  testing::expect_invalid_config(kafka::make_backend(group), "group.id");

  KafkaConfig partitions = config_for("127.0.0.1:9");
  partitions.topic_partitions = 0;
  testing::expect_invalid_config(kafka::make_backend(partitions), "topic_partitions");
}

TEST(KafkaConnect, NoClusterIsATransientError) {
  KafkaConfig config = config_for("127.0.0.1:" + std::to_string(testing::free_port()));
  config.request_timeout = 1500ms;
  const auto start = SteadyClock::now();
  auto connected = testing::connect_result(kafka::make_backend(config));
  ASSERT_FALSE(connected);
  EXPECT_TRUE(connected.error().retryable()) << connected.error().describe();
  EXPECT_NE(connected.error().message().find("cannot reach the Kafka cluster"), std::string::npos)
      << connected.error().describe();
  EXPECT_LT(SteadyClock::now() - start, 10s);
}

TEST(KafkaPublish, SubjectsKafkaCannotNameAreRefused) {
  ASSERT_FALSE(shared_bootstrap().empty()) << "MARTY_KAFKA_BOOTSTRAP is not set";
  TestLoop loop;
  auto backend = kafka::make_backend(config_for(shared_bootstrap()));
  ASSERT_TRUE(loop.run(backend->connect()));
  Message message = numbered("events.a b", 1);
  auto published = loop.run(backend->publish(message, PublishOptions()));
  ASSERT_FALSE(published);
  EXPECT_TRUE(published.error().is(errc::invalid_argument)) << published.error().describe();
  EXPECT_NE(published.error().message().find("events.a b"), std::string::npos);
  (void)loop.run(backend->close(SteadyClock::now() + 5s));
}

// Many single publishes at once on a bus run by several threads, as marty-bus runs it: the
// delivery report may resume a publisher on another thread before librdkafka's produce call has
// returned on the first. Under ASan this caught the publish writing into its coroutine's frame
// after handing over its completion (a heap use after free, about 1 run in 100 of `pub`).
TEST(KafkaPublish, ManyConcurrentSinglePublishesOnSeveralThreadsAllComplete) {
  ASSERT_FALSE(shared_bootstrap().empty()) << "MARTY_KAFKA_BOOTSTRAP is not set";
  asio::io_context io;
  auto work = asio::make_work_guard(io);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back([&io] { io.run(); });
  auto backend = kafka::make_backend(config_for(shared_bootstrap()));
  const std::string subject = "events." + unique("concurrent");
  auto connected = asio::co_spawn(io, backend->connect(), asio::use_future).get();
  ASSERT_TRUE(connected) << connected.error().describe();
  constexpr int kRounds = 25;
  constexpr int kAtOnce = 400;
  std::atomic<int> succeeded{0};
  std::atomic<int> finished{0};
  std::mutex failures_mutex;
  std::vector<std::string> failures;
  for (int round = 0; round < kRounds; ++round) {
    for (int i = 0; i < kAtOnce; ++i) {
      PublishOptions options;
      options.deadline = SteadyClock::now() + 30s;
      asio::co_spawn(io, backend->publish(numbered(subject, round * kAtOnce + i), options),
                     [&](std::exception_ptr thrown, Result<void> published) {
                       if (thrown == nullptr && published) {
                         ++succeeded;
                       } else {
                         std::lock_guard lock(failures_mutex);
                         failures.push_back(thrown ? "exception" : published.error().describe());
                       }
                       ++finished;
                     });
    }
    ASSERT_TRUE(eventually([&] { return finished.load() == (round + 1) * kAtOnce; }, 60s))
        << finished.load() << " of " << (round + 1) * kAtOnce << " publishes finished";
  }
  EXPECT_EQ(succeeded.load(), kRounds * kAtOnce)
      << (failures.empty() ? std::string() : failures.front());
  (void)asio::co_spawn(io, backend->close(SteadyClock::now() + 5s), asio::use_future).get();
  work.reset();
  for (auto& thread : threads) thread.join();
}

// ---- Ordered parallel consumption ----------------------------------------------------------

// Many keys, eight handlers at once through the SPI (as a consumer with concurrency does):
// different keys overlap, each key's messages are handled strictly in order (even when some
// fail and come back), and every message is handled.
TEST(KafkaOrdering, SameKeyInOrderDifferentKeysInParallel) {
  ASSERT_FALSE(shared_bootstrap().empty()) << "MARTY_KAFKA_BOOTSTRAP is not set";
  constexpr int kKeys = 20;
  constexpr int kPerKey = 25;
  const std::string subject = "events." + unique("ordered");
  std::mutex mutex;
  std::map<std::string, std::vector<int>> seen;
  std::set<std::string> busy;
  std::size_t most_at_once = 0;
  int same_key_overlaps = 0;
  std::atomic<int> failures{0};
  std::atomic<bool> stop{false};
  std::atomic<int> running{0};

  TestLoop loop;
  auto consumer = kafka::make_backend(config_for(shared_bootstrap()));
  auto producer = kafka::make_backend(config_for(shared_bootstrap()));
  ASSERT_TRUE(loop.run(consumer->connect()));
  ASSERT_TRUE(loop.run(producer->connect()));
  // The whole backlog is there before the group starts reading it from the earliest offset, so
  // the consumer has many messages of each key at hand at once.
  std::atomic<int> published{0}, publish_failures{0};
  // No captures: the coroutine outlives this loop's iteration.
  auto send = [](std::shared_ptr<Backend> to, Message m, std::atomic<int>* done,
                 std::atomic<int>* failed) -> asio::awaitable<void> {
    auto sent = co_await to->publish(std::move(m), PublishOptions());
    if (!sent) ++*failed;
    ++*done;
  };
  // The first publish creates the topic; after it, each publish reaches the producer in the
  // order it was started (concurrent publishes before that would race to create the topic).
  ASSERT_TRUE(loop.run(producer->publish(numbered(subject, 0, "key0"), PublishOptions())));
  ++published;
  for (int n = 0; n < kPerKey; ++n) {
    for (int k = n == 0 ? 1 : 0; k < kKeys; ++k) {
      asio::co_spawn(loop.executor(),
                     send(producer, numbered(subject, n, "key" + std::to_string(k)), &published,
                          &publish_failures),
                     asio::detached);
    }
  }
  ASSERT_TRUE(eventually([&] { return published.load() == kKeys * kPerKey; }, 30s));
  ASSERT_EQ(publish_failures.load(), 0);
  SubscriptionSpec spec;
  spec.subject = subject;
  spec.group = "ordered_readers";
  spec.start = StartPosition::earliest();
  auto subscription = loop.run(consumer->subscribe(spec));
  ASSERT_TRUE(subscription) << subscription.error().describe();
  std::shared_ptr<Subscription> sub = *subscription;

  // One coroutine receives (receive() is called by one coroutine at a time) and hands each
  // delivery to a handler coroutine of its own, as a consumer with concurrency does.
  auto handle = [&](std::unique_ptr<Delivery> delivery, unsigned seed) -> asio::awaitable<void> {
    const Message& m = delivery->message();
    const std::string key = m.metadata().partition_key;
    const int n = m.json()["n"].get<int>();
    {
      std::lock_guard lock(mutex);
      if (!busy.insert(key).second) ++same_key_overlaps;
      most_at_once = std::max(most_at_once, busy.size());
    }
    co_await detail::sleep_for(std::chrono::milliseconds(seed % 4));
    const bool fail = n % 7 == 3 && delivery->attempt() == 1;
    {
      std::lock_guard lock(mutex);
      busy.erase(key);
      if (!fail) seen[key].push_back(n);
    }
    if (fail) {
      ++failures;
      (void)co_await delivery->nack(5ms);
    } else {
      (void)co_await delivery->ack();
    }
    --running;
  };
  auto receiver = [&]() -> asio::awaitable<void> {
    std::minstd_rand random(7);
    ++running;
    while (!stop.load()) {
      auto delivery = co_await sub->receive(SteadyClock::now() + 200ms);
      if (!delivery) continue;
      ++running;
      asio::co_spawn(co_await asio::this_coro::executor,
                     handle(std::move(*delivery), static_cast<unsigned>(random())), asio::detached);
    }
    --running;
  };
  asio::co_spawn(loop.executor(), receiver(), asio::detached);

  const bool all = eventually(
      [&] {
        std::lock_guard lock(mutex);
        std::size_t total = 0;
        for (const auto& [key, values] : seen) total += values.size();
        return total >= static_cast<std::size_t>(kKeys * kPerKey);
      },
      30s);
  stop = true;
  ASSERT_TRUE(eventually([&] { return running.load() == 0; }, 5s));
  std::lock_guard lock(mutex);
  ASSERT_TRUE(all) << [&] {
    std::string counts;
    for (const auto& [key, values] : seen)
      counts += key + ":" + std::to_string(values.size()) + " ";
    return counts;
  }();
  std::vector<int> expected(kPerKey);
  for (int n = 0; n < kPerKey; ++n) expected[static_cast<std::size_t>(n)] = n;
  for (int k = 0; k < kKeys; ++k) EXPECT_EQ(seen["key" + std::to_string(k)], expected) << k;
  EXPECT_EQ(same_key_overlaps, 0) << "two messages of one key were out at once";
  EXPECT_GT(most_at_once, 1u) << "different keys were never handled at the same time";
  EXPECT_GT(failures.load(), 0);
  sub->close();
  (void)loop.run(consumer->close(SteadyClock::now() + 5s));
  (void)loop.run(producer->close(SteadyClock::now() + 5s));
}

// A group's commit stops at its oldest unfinished message: after a restart the group reads
// again from there (and only from there).
TEST(KafkaCommits, ARestartResumesAtTheOldestUnfinishedMessage) {
  ASSERT_FALSE(shared_bootstrap().empty()) << "MARTY_KAFKA_BOOTSTRAP is not set";
  const std::string stream = unique("resumed");
  TestLoop loop;
  auto producer = kafka::make_backend(config_for(shared_bootstrap()));
  ASSERT_TRUE(loop.run(producer->connect()));
  PublishOptions options;
  options.kind = DestinationKind::stream;
  options.pattern = MessagingPattern::streaming;
  SubscriptionSpec spec;
  spec.subject = stream;
  spec.group = "resumers";
  spec.kind = DestinationKind::stream;
  spec.pattern = MessagingPattern::streaming;
  spec.start = StartPosition::earliest();
  for (int n = 0; n < 10; ++n)
    ASSERT_TRUE(loop.run(producer->publish(numbered(stream, n), options)));
  {
    auto first = kafka::make_backend(config_for(shared_bootstrap()));
    ASSERT_TRUE(loop.run(first->connect()));
    auto subscription = loop.run(first->subscribe(spec));
    ASSERT_TRUE(subscription) << subscription.error().describe();
    std::unique_ptr<Delivery> unfinished;
    for (int i = 0; i < 10; ++i) {
      auto delivery = loop.run((*subscription)->receive(SteadyClock::now() + 10s));
      ASSERT_TRUE(delivery) << delivery.error().describe();
      EXPECT_EQ((*delivery)->message().json()["n"], i) << "a keyless stream is one ordered log";
      if (i == 4) {
        unfinished = std::move(*delivery);  // in the handler's hands when the process ends
      } else {
        ASSERT_TRUE(loop.run((*delivery)->ack()));
      }
    }
    (*subscription)->close();
    unfinished.reset();
    ASSERT_TRUE(loop.run(first->close(SteadyClock::now() + 10s)));
  }
  auto second = kafka::make_backend(config_for(shared_bootstrap()));
  ASSERT_TRUE(loop.run(second->connect()));
  auto subscription = loop.run(second->subscribe(spec));
  ASSERT_TRUE(subscription) << subscription.error().describe();
  std::vector<int> again;
  while (true) {
    auto delivery = loop.run((*subscription)->receive(SteadyClock::now() + 3s));
    if (!delivery) break;
    again.push_back((*delivery)->message().json()["n"].get<int>());
    ASSERT_TRUE(loop.run((*delivery)->ack()));
  }
  EXPECT_EQ(again, (std::vector<int>{4, 5, 6, 7, 8, 9}));
  (*subscription)->close();
  (void)loop.run(second->close(SteadyClock::now() + 5s));
  (void)loop.run(producer->close(SteadyClock::now() + 5s));
}

// A second member joins a group while messages flow: the first hands its partitions over
// only after settling what it holds and committing it, so nothing is lost.
TEST(KafkaRebalance, AMemberJoiningMidStreamLosesNothing) {
  ASSERT_FALSE(shared_bootstrap().empty()) << "MARTY_KAFKA_BOOTSTRAP is not set";
  constexpr int kMessages = 400;
  const std::string subject = "events." + unique("rebalanced");
  std::mutex mutex;
  std::map<int, std::vector<std::string>> handled;  // n -> the members that handled it
  std::map<std::string, int> by_member;
  std::atomic<bool> stop{false};
  std::atomic<int> running{0};
  TestLoop loop;
  auto producer = kafka::make_backend(config_for(shared_bootstrap()));
  auto first = kafka::make_backend(config_for(shared_bootstrap()));
  auto second = kafka::make_backend(config_for(shared_bootstrap()));
  for (auto* backend : {&producer, &first, &second}) ASSERT_TRUE(loop.run((*backend)->connect()));
  SubscriptionSpec spec;
  spec.subject = subject;
  spec.group = "rebalanced_readers";
  auto member = [&](std::shared_ptr<Subscription> sub, std::string name) -> asio::awaitable<void> {
    ++running;
    while (!stop.load()) {
      auto delivery = co_await sub->receive(SteadyClock::now() + 100ms);
      if (!delivery) continue;
      co_await detail::sleep_for(1ms);
      {
        std::lock_guard lock(mutex);
        handled[(*delivery)->message().json()["n"].get<int>()].push_back(name);
        ++by_member[name];
      }
      (void)co_await (*delivery)->ack();
    }
    --running;
  };
  auto first_sub = loop.run(first->subscribe(spec));
  ASSERT_TRUE(first_sub) << first_sub.error().describe();
  asio::co_spawn(loop.executor(), member(*first_sub, "first"), asio::detached);
  ASSERT_TRUE(loop.run(producer->publish(numbered(subject, 0, "k0"), PublishOptions())));
  std::thread publisher([&] {
    for (int n = 1; n < kMessages; ++n) {
      auto sent = loop.run(
          producer->publish(numbered(subject, n, "k" + std::to_string(n % 37)), PublishOptions()));
      EXPECT_TRUE(sent) << sent.error().describe();
      std::this_thread::sleep_for(10ms);
    }
  });
  std::this_thread::sleep_for(1s);
  auto second_sub = loop.run(second->subscribe(spec));
  ASSERT_TRUE(second_sub) << second_sub.error().describe();
  asio::co_spawn(loop.executor(), member(*second_sub, "second"), asio::detached);
  publisher.join();
  const bool all = eventually(
      [&] {
        std::lock_guard lock(mutex);
        return handled.size() == static_cast<std::size_t>(kMessages);
      },
      30s);
  std::this_thread::sleep_for(200ms);
  stop = true;
  ASSERT_TRUE(eventually([&] { return running.load() == 0; }, 5s));
  std::lock_guard lock(mutex);
  EXPECT_TRUE(all) << "handled " << handled.size() << " of " << kMessages;
  // A real broker accepts the revoking member's commit during the rebalance, and nothing is
  // repeated. The mock cluster refuses commits while a rebalance is in progress, so the work
  // done since the last commit it accepted is read again by whichever member gets the partition
  // next (with the eager protocol, possibly the same one): repeated, never lost.
  int repeated = 0;
  for (const auto& [n, members] : handled) repeated += static_cast<int>(members.size()) - 1;
  std::printf("messages handled again after the rebalance: %d of %d\n", repeated, kMessages);
  EXPECT_GT(by_member["first"], 0);
  EXPECT_GT(by_member["second"], 0) << "the second member never got partitions";
  (*first_sub)->close();
  (*second_sub)->close();
  for (auto* backend : {&first, &second, &producer}) {
    (void)loop.run((*backend)->close(SteadyClock::now() + 10s));
  }
}

// A message nacked with a long delay does not hold its subscription's close (or a rebalance):
// it is dropped uncommitted, and the group's next reader gets it.
TEST(KafkaRetries, ANackedMessageWaitingForItsDelayDoesNotHoldClose) {
  ASSERT_FALSE(shared_bootstrap().empty()) << "MARTY_KAFKA_BOOTSTRAP is not set";
  const std::string stream = unique("delayed");
  TestLoop loop;
  auto producer = kafka::make_backend(config_for(shared_bootstrap()));
  ASSERT_TRUE(loop.run(producer->connect()));
  PublishOptions options;
  options.kind = DestinationKind::stream;
  options.pattern = MessagingPattern::streaming;
  ASSERT_TRUE(loop.run(producer->publish(numbered(stream, 1), options)));
  SubscriptionSpec spec;
  spec.subject = stream;
  spec.group = "patient_readers";
  spec.kind = DestinationKind::stream;
  spec.pattern = MessagingPattern::streaming;
  spec.start = StartPosition::earliest();
  {
    auto first = kafka::make_backend(config_for(shared_bootstrap()));
    ASSERT_TRUE(loop.run(first->connect()));
    auto subscription = loop.run(first->subscribe(spec));
    ASSERT_TRUE(subscription) << subscription.error().describe();
    auto delivery = loop.run((*subscription)->receive(SteadyClock::now() + 10s));
    ASSERT_TRUE(delivery) << delivery.error().describe();
    ASSERT_TRUE(loop.run((*delivery)->nack(60s)));
    const auto start = SteadyClock::now();
    (*subscription)->close();
    auto closed = loop.run(first->close(SteadyClock::now() + 20s));
    EXPECT_TRUE(closed) << closed.error().describe();
    EXPECT_LT(SteadyClock::now() - start, 8s) << "close waited for the nacked message's delay";
  }
  auto second = kafka::make_backend(config_for(shared_bootstrap()));
  ASSERT_TRUE(loop.run(second->connect()));
  auto subscription = loop.run(second->subscribe(spec));
  ASSERT_TRUE(subscription) << subscription.error().describe();
  auto again = loop.run((*subscription)->receive(SteadyClock::now() + 10s));
  ASSERT_TRUE(again) << again.error().describe();
  EXPECT_EQ((*again)->message().json()["n"], 1);
  ASSERT_TRUE(loop.run((*again)->ack()));
  (*subscription)->close();
  (void)loop.run(second->close(SteadyClock::now() + 10s));
  (void)loop.run(producer->close(SteadyClock::now() + 5s));
}

// ---- Bad records ---------------------------------------------------------------------------

// A record that claims to be a CloudEvent but is malformed goes to the dead-letter topic with
// the reason; the subscription goes on with the next record.
TEST(KafkaDeadLetters, AnUndecodableRecordIsDeadLetteredAndTheConsumerGoesOn) {
  ASSERT_FALSE(shared_bootstrap().empty()) << "MARTY_KAFKA_BOOTSTRAP is not set";
  const std::string type = unique("garbled");
  const std::string subject = "events." + type;
  testing::NumbersSeen good;
  std::mutex mutex;
  std::vector<Message> dead;
  BlockingEventBus bus(EventBusOptions{});
  ASSERT_TRUE(bus.bus().register_backend(MessageBackendType::kafka,
                                         kafka::make_backend(config_for(shared_bootstrap()))));
  ASSERT_TRUE(bus.start());
  ASSERT_TRUE(bus.subscribe_to_events({type}, good.handler(), "garbled_readers"));
  StreamOptions options;
  options.start = StartPosition::earliest();
  options.max_wait = 20ms;
  auto reader = sync_batch_processor([&](const std::vector<Message>& batch) {
    std::lock_guard lock(mutex);
    dead.insert(dead.end(), batch.begin(), batch.end());
    return ok();
  });
  ASSERT_TRUE(bus.process_stream(dead_letter_subject(subject), reader, "dead_readers", options));

  // A plain librdkafka producer writes the bad record.
  char reason[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  ASSERT_EQ(rd_kafka_conf_set(conf, "bootstrap.servers", shared_bootstrap().c_str(), reason,
                              sizeof reason),
            RD_KAFKA_CONF_OK);
  rd_kafka_t* raw = rd_kafka_new(RD_KAFKA_PRODUCER, conf, reason, sizeof reason);
  ASSERT_NE(raw, nullptr) << reason;
  const std::string body = "{\"n\": -1}";
  ASSERT_EQ(
      rd_kafka_producev(
          raw, RD_KAFKA_V_TOPIC(subject.c_str()),
          RD_KAFKA_V_VALUE(const_cast<char*>(body.data()), body.size()),
          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADER("ce_specversion", "1.0", -1),
          RD_KAFKA_V_HEADER("ce_id", "bad-1", -1), RD_KAFKA_V_HEADER("ce_type", type.c_str(), -1),
          RD_KAFKA_V_HEADER("ce_source", "elsewhere", -1),
          RD_KAFKA_V_HEADER("ce_time", "yesterday at noon", -1), RD_KAFKA_V_END),
      RD_KAFKA_RESP_ERR_NO_ERROR);
  EXPECT_EQ(rd_kafka_flush(raw, 10'000), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_destroy(raw);
  ASSERT_TRUE(bus.publish_event(type, {{"n", 1}}));

  ASSERT_TRUE(eventually([&] { return good.distinct() == 1; }, 20s));
  ASSERT_TRUE(eventually(
      [&] {
        std::lock_guard lock(mutex);
        return dead.size() == 1;
      },
      20s));
  std::lock_guard lock(mutex);
  const auto& headers = dead[0].metadata().headers;
  EXPECT_EQ(headers.at(std::string(headers::kDeadLetterSubject)), subject);
  EXPECT_NE(headers.at(std::string(headers::kDeadLetterReason)).find("time"), std::string::npos)
      << headers.at(std::string(headers::kDeadLetterReason));
  EXPECT_EQ(dead[0].payload()->bytes(), body);
  EXPECT_EQ(good.numbers(), std::set<int>{1});
}

// ---- A cluster whose brokers go down and come back -------------------------------------------

// Broker 1 of a private three-broker cluster goes down while events are published and consumed,
// then comes back: every event whose publish succeeded is handled.
TEST(KafkaOutage, ABrokerDownAndUpLosesNothingAcknowledged) {
  testing::KafkaCluster cluster(MARTY_KAFKA_MOCK, 3);
  const std::string type = unique("outage");
  testing::NumbersSeen handled;
  EventBusOptions consumer_options;
  consumer_options.service_name = "consumer";
  BlockingEventBus consumer(consumer_options);
  BlockingEventBus producer(EventBusOptions{});
  ASSERT_TRUE(consumer.bus().register_backend(
      MessageBackendType::kafka, kafka::make_backend(config_for(cluster.bootstrap()))));
  ASSERT_TRUE(producer.bus().register_backend(
      MessageBackendType::kafka, kafka::make_backend(config_for(cluster.bootstrap()))));
  ASSERT_TRUE(consumer.start());
  ASSERT_TRUE(producer.start());
  ASSERT_TRUE(consumer.subscribe_to_events({type}, handled.handler(), "outage_readers"));

  // Broker 1 is down for three seconds, from one second in; publishing goes on all along (a
  // publish to a partition whose leader is down waits for it to come back).
  std::atomic<bool> outage_over{false};
  std::thread outage([&] {
    std::this_thread::sleep_for(1s);
    EXPECT_EQ(cluster.command("down 1"), "ok");
    std::this_thread::sleep_for(3s);
    EXPECT_EQ(cluster.command("up 1"), "ok");
    outage_over = true;
  });
  std::set<int> acknowledged;
  int refused = 0;
  for (int n = 0; n < 300 || !outage_over.load(); ++n) {
    if (auto sent = producer.publish_event(type, {{"n", n}})) {
      acknowledged.insert(n);
    } else {
      ++refused;  // allowed: the caller knows it was not written
    }
    std::this_thread::sleep_for(10ms);
  }
  outage.join();
  EXPECT_GE(acknowledged.size(), 200u) << refused << " publishes failed";
  ASSERT_TRUE(eventually(
      [&] {
        auto seen = handled.numbers();
        return std::includes(seen.begin(), seen.end(), acknowledged.begin(), acknowledged.end());
      },
      60s))
      << "handled " << handled.distinct() << " of " << acknowledged.size() << " acknowledged";
  EXPECT_TRUE(consumer.stop());
  EXPECT_TRUE(producer.stop());
}

}  // namespace
}  // namespace marty::messaging
