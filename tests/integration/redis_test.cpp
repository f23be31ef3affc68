// The Redis backend against real redis-server processes: bad configuration, ACL
// authentication, a consumer killed mid-handler, a server crash and restart with the
// append-only file, entries the bus cannot decode, entries delivered too often, and what plain
// Redis clients publish. The shared server of scripts/brokers (MARTY_REDIS_URL) serves the tests
// that need no server of their own.
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include "../support/backend_checks.hpp"
#include "../support/redis_server.hpp"
#include "../support/test_loop.hpp"
#include "marty/messaging.hpp"
#include "marty/messaging/redis_backend.hpp"

namespace marty::messaging {
namespace {

using namespace std::chrono_literals;
using testing::eventually;
using testing::free_port;
using testing::PrivateRedis;
using testing::PrivateRedisOptions;
using testing::TempDir;
using testing::TestLoop;

std::string shared_url() {
  const char* url = std::getenv("MARTY_REDIS_URL");
  return url != nullptr ? url : "";
}

std::string unique(std::string_view base) {
  const std::string id = make_uuid_v7();
  return std::string(base) + "_" + id.substr(id.size() - 12);
}

// A plain Redis client, to look at what the backend wrote and to write what it must cope with.
class RawClient {
 public:
  explicit RawClient(int port) : context_(redisConnect("127.0.0.1", port)) {}
  explicit RawClient(const std::string& url)
      : RawClient(std::stoi(url.substr(url.rfind(':') + 1))) {}
  ~RawClient() { redisFree(context_); }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  bool ok() const { return context_ != nullptr && context_->err == 0; }
  // Runs a command; the reply is freed with the returned pointer.
  std::unique_ptr<redisReply, void (*)(redisReply*)> run(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lengths;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lengths.push_back(a.size());
    }
    auto* reply = static_cast<redisReply*>(
        redisCommandArgv(context_, static_cast<int>(argv.size()), argv.data(), lengths.data()));
    return {reply, [](redisReply* r) {
              if (r != nullptr) freeReplyObject(r);
            }};
  }

 private:
  redisContext* context_;
};

redis::RedisConfig config_for(std::string url) {
  redis::RedisConfig config;
  config.url = std::move(url);
  config.visibility_timeout = 1s;
  config.reclaim_interval = 100ms;
  return config;
}

// A started bus on a Redis backend. `at_most_once`: events travel on pub/sub channels.
std::unique_ptr<BlockingEventBus> redis_bus(redis::RedisConfig config,
                                            std::string service = "redis-test",
                                            bool at_most_once = false) {
  EventBusOptions options;
  options.service_name = std::move(service);
  options.drain_timeout = 5s;
  auto bus = std::make_unique<BlockingEventBus>(options);
  EXPECT_TRUE(bus->bus().register_backend(MessageBackendType::redis,
                                          redis::make_backend(std::move(config))));
  if (at_most_once) {
    auto pub_sub = default_pattern_config(MessagingPattern::pub_sub);
    pub_sub.delivery_guarantee = DeliveryGuarantee::at_most_once;
    EXPECT_TRUE(bus->bus().update_pattern_config(MessagingPattern::pub_sub, pub_sub));
  }
  auto started = bus->start();
  EXPECT_TRUE(started) << started.error().describe();
  return bus;
}

Result<void> connect_with(redis::RedisConfig config) {
  return testing::connect_result(redis::make_backend(std::move(config)));
}

void expect_invalid(redis::RedisConfig config, std::string_view field) {
  testing::expect_invalid_config(redis::make_backend(std::move(config)), field);
}

using Seen = testing::NumbersSeen;

TEST(RedisConfig, BadValuesAreRefusedNamingTheField) {
  redis::RedisConfig bad_url;
  bad_url.url = "http://localhost:6379";
  expect_invalid(bad_url, "url");

  redis::RedisConfig bad_port;
  bad_port.url = "redis://localhost:notaport";
  expect_invalid(bad_port, "port");

  redis::RedisConfig out_of_range;
  out_of_range.port = 70000;
  expect_invalid(out_of_range, "port");

  redis::RedisConfig no_prefetch;
  no_prefetch.prefetch = 0;
  expect_invalid(no_prefetch, "prefetch");

  redis::RedisConfig spaced_prefix;
  spaced_prefix.key_prefix = "my app:";
  expect_invalid(spaced_prefix, "key_prefix");

  redis::RedisConfig no_visibility;
  no_visibility.visibility_timeout = 0ms;
  expect_invalid(no_visibility, "visibility_timeout");
}

TEST(RedisConfig, EntryIdsAndSequencesRoundTrip) {
  EXPECT_EQ(redis::entry_id_from_sequence(redis::sequence_from_entry_id("1700000000123-7")),
            "1700000000123-7");
  EXPECT_LT(redis::sequence_from_entry_id("1700000000123-7"),
            redis::sequence_from_entry_id("1700000000124-0"));
  EXPECT_EQ(redis::sequence_from_entry_id("0-0"), 0u);
}

TEST(RedisConnect, NoServerIsUnavailableNotAHang) {
  redis::RedisConfig config;
  config.port = free_port();
  const auto start = SteadyClock::now();
  const auto result = connect_with(config);
  ASSERT_FALSE(result);
  EXPECT_TRUE(result.error().is(errc::unavailable)) << result.error().describe();
  EXPECT_LT(SteadyClock::now() - start, 5s);
}

// A server restarted with a data set to load answers the handshake's PING with "LOADING Redis
// is loading the dataset in memory" for a while: that is a server coming up (unavailable, to
// retry), not a refusal (failed_precondition, marty-bus exit 9) as it once was.
TEST(RedisConnect, AServerLoadingItsDataIsUnavailableNotAPrecondition) {
  testing::PrivateRedisOptions options;
  // Loading takes 20,000 x 200 us, answering LOADING between every kilobyte read.
  options.extra_args = {"--enable-debug-command",
                        "yes",
                        "--key-load-delay",
                        "200",
                        "--loading-process-events-interval-bytes",
                        "1024"};
  testing::PrivateRedis redis(options);
  {
    RawClient client(redis.port());
    ASSERT_TRUE(client.ok());
    ASSERT_TRUE(client.run({"DEBUG", "POPULATE", "20000"}));
    ASSERT_TRUE(client.run({"SAVE"}));
  }
  redis.stop();
  ASSERT_TRUE(redis.server().start()) << redis.log();  // port open; the data still loading
  const auto result = connect_with(config_for(redis.url()));
  ASSERT_FALSE(result) << "connected while the server loaded its data; make loading slower";
  EXPECT_TRUE(result.error().is(errc::unavailable)) << result.error().describe();
  EXPECT_TRUE(result.error().retryable()) << result.error().describe();
  EXPECT_NE(result.error().message().find("LOADING"), std::string::npos)
      << result.error().describe();
}

// A bus started while its broker is still coming up waits for it within connect_wait instead
// of failing on the first refused connection (and without it, fails at once).
TEST(RedisConnect, StartWaitsForABrokerComingUpWithinConnectWait) {
  testing::PrivateRedis redis;
  redis.stop(SIGKILL);
  EventBusOptions options;
  options.connect_wait = 15s;
  BlockingEventBus bus(options);
  ASSERT_TRUE(bus.bus().register_backend(MessageBackendType::redis,
                                         redis::make_backend(config_for(redis.url()))));
  std::thread later([&redis] {
    std::this_thread::sleep_for(1500ms);
    EXPECT_TRUE(redis.start()) << redis.log();
  });
  const auto began = SteadyClock::now();
  auto started = bus.start();
  later.join();
  ASSERT_TRUE(started) << started.error().describe();
  EXPECT_GE(SteadyClock::now() - began, 1s);
  ASSERT_TRUE(bus.stream_events("came_up", {{{"n", 1}}}));
  ASSERT_TRUE(bus.stop());
}

TEST(RedisAuth, AclUserWithPassword) {
  PrivateRedisOptions options;
  options.extra_args = {"--user", "default",   "off", "--user", "alice",
                        "on",     ">pa55word", "~*",  "&*",     "+@all"};
  PrivateRedis server(options);
  ASSERT_TRUE(server.server().running());

  auto accepted =
      connect_with(config_for("redis://alice:pa55word@127.0.0.1:" + std::to_string(server.port())));
  EXPECT_TRUE(accepted) << accepted.error().describe();

  const auto start = SteadyClock::now();
  auto refused = connect_with(
      config_for("redis://alice:wrong-secret@127.0.0.1:" + std::to_string(server.port())));
  ASSERT_FALSE(refused);
  EXPECT_TRUE(refused.error().is(errc::unauthenticated)) << refused.error().describe();
  EXPECT_EQ(refused.error().describe().find("wrong-secret"), std::string::npos)
      << "a secret appears in the error: " << refused.error().describe();
  EXPECT_LT(SteadyClock::now() - start, 5s);

  // No credentials at all: the disabled default user cannot run anything.
  auto anonymous = connect_with(config_for(server.url()));
  ASSERT_FALSE(anonymous);
  EXPECT_TRUE(anonymous.error().is(errc::unauthenticated)) << anonymous.error().describe();

  // The user's messages flow end to end.
  Seen seen;
  auto bus =
      redis_bus(config_for("redis://alice:pa55word@127.0.0.1:" + std::to_string(server.port())));
  ASSERT_TRUE(bus->subscribe_to_events({"acl_checked"}, seen.handler()));
  ASSERT_TRUE(bus->publish_event("acl_checked", {{"n", 1}}));
  EXPECT_TRUE(eventually([&] { return seen.distinct() == 1; }));
}

// A service instance killed in the middle of handling: what it held is reclaimed by the next
// instance after the visibility timeout, and nothing is lost.
TEST(RedisCrash, KilledConsumersEntriesGoToAnotherConsumer) {
  ASSERT_FALSE(shared_url().empty()) << "MARTY_REDIS_URL is not set";
  TempDir dir;
  const std::string service = unique("crashing");
  const auto ready = dir.path() / "ready";
  const auto taken = dir.path() / "taken";
  testing::ChildProcess child(
      {MARTY_REDIS_CHILD, shared_url(), service, ready.string(), taken.string()});
  ASSERT_TRUE(eventually([&] { return std::filesystem::exists(ready); }, 20s))
      << "the child never subscribed";

  auto sender = redis_bus(config_for(shared_url()));
  constexpr int kCommands = 20;
  for (int n = 0; n < kCommands; ++n) {
    auto sent = sender->send_command("work", {{"n", n}}, service);
    ASSERT_TRUE(sent) << sent.error().describe();
  }
  ASSERT_TRUE(eventually([&] { return std::filesystem::exists(taken); }, 10s));
  child.kill(SIGKILL);

  Seen seen;
  auto survivor = redis_bus(config_for(shared_url()), service);
  ASSERT_TRUE(survivor->handle_commands({"work"}, seen.handler(), service));
  ASSERT_TRUE(eventually([&] { return seen.distinct() == kCommands; }, 20s))
      << "the survivor got " << seen.distinct() << " of " << kCommands;
  std::set<int> all;
  for (int n = 0; n < kCommands; ++n) all.insert(n);
  EXPECT_EQ(seen.numbers(), all);
}

// A server crash (SIGKILL) with the append-only file on: every acknowledged entry is still
// there after the restart, and a running bus reconnects and resubscribes by itself.
TEST(RedisRestart, AcknowledgedEntriesSurviveAndTheBusReconnects) {
  PrivateRedisOptions options;
  options.append_only = true;
  PrivateRedis server(options);
  ASSERT_TRUE(server.server().running());
  auto config = config_for(server.url());
  config.outage_wait = 10s;

  Seen live_events, live_channel;
  auto consumer = redis_bus(config, "restart-consumer");
  ASSERT_TRUE(consumer->subscribe_to_events({"restarted"}, live_events.handler(), "keepers"));
  auto listener = redis_bus(config, "restart-listener", true);
  ASSERT_TRUE(listener->subscribe_to_events({"restarted"}, live_channel.handler()));
  auto producer = redis_bus(config, "restart-producer");
  std::vector<Json> before;
  for (int n = 0; n < 50; ++n) before.push_back({{"n", n}});
  ASSERT_TRUE(producer->stream_events("restart_log", before));
  for (int n = 0; n < 5; ++n) ASSERT_TRUE(producer->publish_event("restarted", {{"n", n}}));
  ASSERT_TRUE(eventually([&] { return live_events.distinct() == 5; }));
  ASSERT_TRUE(eventually([&] { return live_channel.distinct() == 5; }));

  ASSERT_TRUE(server.restart(SIGKILL)) << server.log();

  // Published after the restart by the same buses: the reconnected subscription gets them.
  for (int n = 5; n < 10; ++n) {
    auto published = producer->publish_event("restarted", {{"n", n}});
    ASSERT_TRUE(published) << published.error().describe();
  }
  ASSERT_TRUE(eventually([&] { return live_events.distinct() == 10; }, 20s))
      << "after the restart the subscriber got " << live_events.distinct() << " of 10";
  // The pub/sub connection resubscribed when it came back (at most once: a message published
  // before it had may be missed, so only the last one is certain to arrive).
  ASSERT_TRUE(eventually([&] {
    (void)producer->publish_event("restarted", {{"n", 99}});
    return live_channel.numbers().count(99) == 1;
  }));

  // Everything appended before the crash is read back by a new group.
  std::mutex mutex;
  std::set<int> replayed;
  StreamOptions stream_options;
  stream_options.start = StartPosition::earliest();
  stream_options.max_wait = 20ms;
  auto reader = sync_batch_processor([&](const std::vector<Message>& batch) {
    std::lock_guard lock(mutex);
    for (const auto& m : batch) replayed.insert(m.json()["n"].get<int>());
    return ok();
  });
  ASSERT_TRUE(consumer->process_stream("restart_log", reader, "after_restart", stream_options));
  EXPECT_TRUE(eventually([&] {
    std::lock_guard lock(mutex);
    return replayed.size() == 50;
  }));
}

// A server SIGKILLed and restarted under a running publisher: every publish rides through the
// outage (sent again with its id after the reconnect; one failed with `unavailable` at once
// before), and none that succeeded is lost (append-only file, written through). One that
// outlives its deadline fails with a retryable error: PublishDuringAnOutageFailsClearlyOrWaits.
TEST(RedisRestart, PublishersRideThroughAServerRestart) {
  PrivateRedisOptions options;
  options.append_only = true;
  PrivateRedis server(options);
  auto config = config_for(server.url());
  config.outage_wait = 500ms;
  auto bus = redis_bus(config, "ride-through");
  Seen seen;
  ASSERT_TRUE(bus->subscribe_to_events({"ridden"}, seen.handler(), "riders"));
  std::atomic<bool> stop{false};
  std::mutex mutex;
  std::set<int> succeeded;
  std::vector<std::string> failures;
  std::thread publisher([&] {
    for (int n = 0; !stop; ++n) {
      auto published = bus->publish_event("ridden", {{"n", n}});
      std::lock_guard lock(mutex);
      if (published) {
        succeeded.insert(n);
      } else {
        failures.push_back(published.error().describe());
      }
      std::this_thread::sleep_for(5ms);
    }
  });
  std::this_thread::sleep_for(500ms);
  server.stop(SIGKILL);
  std::this_thread::sleep_for(1500ms);
  ASSERT_TRUE(server.start()) << server.log();
  std::this_thread::sleep_for(1500ms);
  stop = true;
  publisher.join();
  std::lock_guard lock(mutex);
  // The outage (about 2 s) is far shorter than a publish's deadline (30 s): none fails.
  EXPECT_TRUE(failures.empty()) << failures.size() << " failed, first: " << failures.front();
  ASSERT_GT(succeeded.size(), 20u);
  EXPECT_TRUE(eventually(
      [&] {
        for (int n : succeeded) {
          if (!seen.numbers().contains(n)) return false;
        }
        return true;
      },
      20s))
      << seen.distinct() << " of the " << succeeded.size() << " published were handled";
}

// While the server is down, a publish is tried again until its deadline (each try waiting
// within outage_wait), then fails with `unavailable`: it never vanishes, nor hangs.
TEST(RedisRestart, PublishDuringAnOutageFailsClearlyOrWaits) {
  PrivateRedis server;
  auto config = config_for(server.url());
  config.outage_wait = 300ms;
  auto bus = std::make_unique<BlockingEventBus>();
  ASSERT_TRUE(bus->bus().register_backend(MessageBackendType::redis, redis::make_backend(config)));
  auto streaming = default_pattern_config(MessagingPattern::streaming);
  streaming.timeout = 1500ms;
  ASSERT_TRUE(bus->bus().update_pattern_config(MessagingPattern::streaming, streaming));
  ASSERT_TRUE(bus->start());
  server.stop(SIGKILL);
  const auto start = SteadyClock::now();
  auto failed = bus->stream_events("outage_log", {{{"n", 1}}});
  ASSERT_FALSE(failed);
  EXPECT_TRUE(failed.error().is(errc::unavailable)) << failed.error().describe();
  EXPECT_TRUE(failed.error().retryable()) << failed.error().describe();
  EXPECT_GE(SteadyClock::now() - start, 1s);  // it kept trying until its deadline
  EXPECT_LT(SteadyClock::now() - start, 5s);

  ASSERT_TRUE(server.start()) << server.log();
  ASSERT_TRUE(eventually(
      [&] {
        return bool(bus->stream_events("outage_log", {{{"n", 2}}}));
      },
      10s));
}

// A server that stops answering without closing the connection (SIGSTOP): a publish gives up at
// its deadline with `deadline_exceeded` instead of waiting for ever, and works again once the
// server goes on.
TEST(RedisRestart, AServerThatStopsAnsweringMeetsTheDeadline) {
  PrivateRedis server;
  TestLoop loop;
  auto backend = redis::make_backend(config_for(server.url()));
  ASSERT_TRUE(loop.run(backend->connect()));
  Message message = Message::from_json({{"n", 1}});
  message.mutable_metadata().message_type = "frozen";
  message.set_subject("frozen_log");
  PublishOptions options;
  options.kind = DestinationKind::stream;
  options.pattern = MessagingPattern::streaming;
  ASSERT_TRUE(loop.run(backend->publish(message, options)));
  ASSERT_EQ(::kill(server.server().pid(), SIGSTOP), 0);
  options.deadline = SteadyClock::now() + 300ms;
  const auto start = SteadyClock::now();
  auto frozen = loop.run(backend->publish(message, options));
  ::kill(server.server().pid(), SIGCONT);
  ASSERT_FALSE(frozen);
  EXPECT_TRUE(frozen.error().is(errc::deadline_exceeded)) << frozen.error().describe();
  EXPECT_LT(SteadyClock::now() - start, 2s);
  options.deadline = SteadyClock::now() + 5s;
  EXPECT_TRUE(loop.run(backend->publish(message, options)));
  (void)loop.run(backend->close(SteadyClock::now() + 2s));
}

// An entry another program wrote without our fields, or with a broken one, goes to the
// dead-letter stream with the reason; the consumer goes on with the next.
TEST(RedisBadInput, UndecodableEntriesAreDeadLetteredAndTheConsumerGoesOn) {
  ASSERT_FALSE(shared_url().empty()) << "MARTY_REDIS_URL is not set";
  const std::string type = unique("mangled");
  Seen seen;
  auto bus = redis_bus(config_for(shared_url()));
  ASSERT_TRUE(bus->subscribe_to_events({type}, seen.handler(), "readers"));
  RawClient raw(shared_url());
  ASSERT_TRUE(raw.ok());
  const std::string key = "marty:events." + type;
  // (An entry with `data` and no CloudEvents fields is a plain message, taken as it is.)
  auto no_data = raw.run({"XADD", key, "*", "ce-specversion", "1.0", "payload", "{\"n\":100}"});
  ASSERT_EQ(no_data->type, REDIS_REPLY_STRING);
  auto bad_time = raw.run({"XADD", key, "*", "ce-specversion", "1.0", "ce-id", "x1", "ce-source",
                           "elsewhere", "ce-type", type, "ce-time", "yesterday", "data", "{}"});
  ASSERT_EQ(bad_time->type, REDIS_REPLY_STRING);
  ASSERT_TRUE(bus->publish_event(type, {{"n", 1}}));
  ASSERT_TRUE(eventually([&] { return seen.distinct() == 1; }));

  const std::string dead_key = "marty:deadletter.events." + type;
  ASSERT_TRUE(eventually([&] {
    auto length = raw.run({"XLEN", dead_key});
    return length && length->integer == 2;
  }));
  auto entries = raw.run({"XRANGE", dead_key, "-", "+"});
  ASSERT_EQ(entries->type, REDIS_REPLY_ARRAY);
  std::vector<std::string> reasons;
  for (std::size_t i = 0; i < entries->elements; ++i) {
    const redisReply* fields = entries->element[i]->element[1];
    for (std::size_t f = 0; f + 1 < fields->elements; f += 2) {
      // Headers that are not CloudEvents extension names travel in one JSON attribute.
      const std::string name(fields->element[f]->str, fields->element[f]->len);
      if (name != "ce-martyheaders") continue;
      const Json headers =
          Json::parse(std::string(fields->element[f + 1]->str, fields->element[f + 1]->len));
      reasons.push_back(headers.value("marty-dead-letter-reason", ""));
      EXPECT_EQ(headers.value("marty-dead-letter-subject", ""), "events." + type);
      EXPECT_FALSE(headers.value("marty-redis-entry-id", "").empty());
    }
  }
  ASSERT_EQ(reasons.size(), 2u);
  EXPECT_NE(reasons[0].find("no 'data' field"), std::string::npos) << reasons[0];
  EXPECT_NE(reasons[1].find("time"), std::string::npos) << reasons[1];
  // Nothing is left pending: the bad entries were settled when they were dead-lettered (and
  // the good one's ack, which may still be on its way when the handler has run, arrives).
  EXPECT_TRUE(eventually([&] {
    auto pending = raw.run({"XPENDING", key, "readers"});
    return pending && pending->type == REDIS_REPLY_ARRAY && pending->element[0]->integer == 0;
  }));
}

// A message whose consumer never settles it (it crashes on it, every time) is moved to the
// dead letters by the backend after max_deliveries, rather than circulating for ever.
TEST(RedisBadInput, EntriesDeliveredTooOftenAreDeadLettered) {
  ASSERT_FALSE(shared_url().empty()) << "MARTY_REDIS_URL is not set";
  TestLoop loop;
  auto config = config_for(shared_url());
  config.max_deliveries = 3;
  auto backend = redis::make_backend(config);
  ASSERT_TRUE(loop.run(backend->connect()));
  const std::string stream = unique("crasher");
  SubscriptionSpec spec;
  spec.subject = stream;
  spec.group = "fragile";
  spec.kind = DestinationKind::stream;
  spec.pattern = MessagingPattern::streaming;
  spec.start = StartPosition::earliest();
  auto subscription = loop.run(backend->subscribe(spec));
  ASSERT_TRUE(subscription) << subscription.error().describe();
  Message message = Message::from_json({{"n", 1}});
  message.mutable_metadata().message_type = stream;
  message.mutable_metadata().message_id = make_uuid_v7();
  message.set_subject(stream);
  PublishOptions options;
  options.kind = DestinationKind::stream;
  options.pattern = MessagingPattern::streaming;
  ASSERT_TRUE(loop.run(backend->publish(message, options)));
  for (int attempt = 1; attempt <= 3; ++attempt) {
    auto delivery = loop.run((*subscription)->receive(SteadyClock::now() + 5s));
    ASSERT_TRUE(delivery) << "attempt " << attempt << ": " << delivery.error().describe();
    EXPECT_EQ((*delivery)->attempt(), attempt);
    EXPECT_EQ((*delivery)->message().id(), message.id());
    // Dropped unsettled: as if its handler had crashed the process.
  }
  auto fourth = loop.run((*subscription)->receive(SteadyClock::now() + 1500ms));
  ASSERT_FALSE(fourth) << "delivered a fourth time";
  EXPECT_TRUE(fourth.error().is(errc::deadline_exceeded)) << fourth.error().describe();
  RawClient raw(shared_url());
  auto length = raw.run({"XLEN", "marty:deadletter." + stream});
  EXPECT_EQ(length->integer, 1);
  (*subscription)->close();
  (void)loop.run(backend->close(SteadyClock::now() + 2s));
}

// Entries released by a closing consumer sit behind a long list of entries another consumer
// still holds: the reclaimers scan the whole pending list, a piece per call, and find them.
TEST(RedisReclaim, ReleasedEntriesBehindALongPendingListAreFound) {
  ASSERT_FALSE(shared_url().empty()) << "MARTY_REDIS_URL is not set";
  TestLoop loop;
  auto backend_with = [](int prefetch) {
    auto config = config_for(shared_url());
    config.visibility_timeout = 30s;  // nothing becomes reclaimable by waiting in this test
    config.reclaim_interval = 50ms;
    config.prefetch = prefetch;
    return redis::make_backend(config);
  };
  const std::string stream = unique("long_pending");
  SubscriptionSpec spec;
  spec.subject = stream;
  spec.group = "workers";
  spec.kind = DestinationKind::stream;
  spec.pattern = MessagingPattern::streaming;
  spec.start = StartPosition::earliest();
  PublishOptions options;
  options.kind = DestinationKind::stream;
  options.pattern = MessagingPattern::streaming;
  auto publisher = backend_with(1);
  ASSERT_TRUE(loop.run(publisher->connect()));
  auto publish_range = [&](int from, int to) {
    for (int n = from; n < to; ++n) {
      Message message = Message::from_json({{"n", n}});
      message.mutable_metadata().message_type = stream;
      message.set_subject(stream);
      ASSERT_TRUE(loop.run(publisher->publish(message, options)));
    }
  };

  // The holder reads 300 entries and settles none of them.
  auto holder = backend_with(300);
  ASSERT_TRUE(loop.run(holder->connect()));
  publish_range(0, 300);
  auto held = loop.run(holder->subscribe(spec));
  ASSERT_TRUE(held) << held.error().describe();
  std::vector<std::unique_ptr<Delivery>> holding;
  while (holding.size() < 300) {
    auto delivery = loop.run((*held)->receive(SteadyClock::now() + 5s));
    ASSERT_TRUE(delivery) << delivery.error().describe();
    holding.push_back(std::move(*delivery));
  }

  // A second consumer reads five newer entries and closes without settling them.
  publish_range(300, 305);
  {
    auto leaver = backend_with(5);
    ASSERT_TRUE(loop.run(leaver->connect()));
    auto subscription = loop.run(leaver->subscribe(spec));
    ASSERT_TRUE(subscription) << subscription.error().describe();
    // Kept unsettled until the subscription closes: a delivery dropped earlier would be released
    // at once and could be reclaimed by the leaver itself, counting one more attempt.
    std::vector<std::unique_ptr<Delivery>> unsettled;
    for (int i = 0; i < 5; ++i) {
      auto delivery = loop.run((*subscription)->receive(SteadyClock::now() + 5s));
      ASSERT_TRUE(delivery) << delivery.error().describe();
      EXPECT_GE((*delivery)->message().json()["n"].get<int>(), 300);
      unsettled.push_back(std::move(*delivery));
    }
    (*subscription)->close();
    unsettled.clear();
    ASSERT_TRUE(loop.run(leaver->close(SteadyClock::now() + 5s)));
  }

  // A third consumer with room for five finds them, though 300 pending entries come first.
  auto finder = backend_with(5);
  ASSERT_TRUE(loop.run(finder->connect()));
  auto found = loop.run(finder->subscribe(spec));
  ASSERT_TRUE(found) << found.error().describe();
  std::set<int> numbers;
  for (int i = 0; i < 5; ++i) {
    auto delivery = loop.run((*found)->receive(SteadyClock::now() + 10s));
    ASSERT_TRUE(delivery) << "found " << numbers.size() << " of 5: " << delivery.error().describe();
    numbers.insert((*delivery)->message().json()["n"].get<int>());
    EXPECT_EQ((*delivery)->attempt(), 2);
    ASSERT_TRUE(loop.run((*delivery)->ack()));
  }
  EXPECT_EQ(numbers, (std::set<int>{300, 301, 302, 303, 304}));
  holding.clear();
  (*held)->close();
  (*found)->close();
  for (auto* backend : {&holder, &finder, &publisher}) {
    (void)loop.run((*backend)->close(SteadyClock::now() + 5s));
  }
}

// A group can start at an entry: Delivery::sequence() names it, StartPosition takes it back.
TEST(RedisReplay, FromAnEntryId) {
  ASSERT_FALSE(shared_url().empty()) << "MARTY_REDIS_URL is not set";
  TestLoop loop;
  auto backend = redis::make_backend(config_for(shared_url()));
  ASSERT_TRUE(loop.run(backend->connect()));
  const std::string stream = unique("replayed");
  PublishOptions options;
  options.kind = DestinationKind::stream;
  options.pattern = MessagingPattern::streaming;
  for (int n = 0; n < 6; ++n) {
    Message message = Message::from_json({{"n", n}});
    message.mutable_metadata().message_type = stream;
    message.set_subject(stream);
    ASSERT_TRUE(loop.run(backend->publish(message, options)));
  }
  auto read_all = [&](std::string group, StartPosition start) {
    SubscriptionSpec spec;
    spec.subject = stream;
    spec.group = std::move(group);
    spec.kind = DestinationKind::stream;
    spec.pattern = MessagingPattern::streaming;
    spec.start = start;
    auto subscription = loop.run(backend->subscribe(spec));
    EXPECT_TRUE(subscription) << subscription.error().describe();
    std::vector<std::pair<int, std::uint64_t>> got;
    while (subscription) {
      auto delivery = loop.run((*subscription)->receive(SteadyClock::now() + 500ms));
      if (!delivery) break;
      got.emplace_back((*delivery)->message().json()["n"].get<int>(), (*delivery)->sequence());
      EXPECT_TRUE(loop.run((*delivery)->ack()));
    }
    if (subscription) (*subscription)->close();
    return got;
  };
  const auto everything = read_all("all", StartPosition::earliest());
  ASSERT_EQ(everything.size(), 6u);
  const std::uint64_t third = everything[2].second;
  EXPECT_LT(everything[1].second, third);
  const auto from_third = read_all("from_third", StartPosition::from_sequence(third));
  ASSERT_EQ(from_third.size(), 4u);
  EXPECT_EQ(from_third.front().first, 2);
  EXPECT_EQ(from_third.front().second, third);
  (void)loop.run(backend->close(SteadyClock::now() + 5s));
}

// The database number of the URL, the key prefix and the stream trimming are what lands in
// Redis: looked at with a plain client.
TEST(RedisLayout, DatabasePrefixAndTrimmingAsConfigured) {
  ASSERT_FALSE(shared_url().empty()) << "MARTY_REDIS_URL is not set";
  auto config = config_for(shared_url() + "/3");
  config.key_prefix = "shop:";
  config.max_stream_length = 100;
  auto bus = redis_bus(config);
  const std::string stream = unique("laid_out");
  std::vector<Json> events;
  for (int n = 0; n < 1000; ++n) events.push_back({{"n", n}});
  ASSERT_TRUE(bus->stream_events(stream, events));
  RawClient raw(shared_url());
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(raw.run({"EXISTS", "shop:" + stream})->integer, 0) << "written to database 0";
  ASSERT_EQ(raw.run({"SELECT", "3"})->type, REDIS_REPLY_STATUS);
  const long long length = raw.run({"XLEN", "shop:" + stream})->integer;
  EXPECT_GE(length, 100);   // MAXLEN ~ keeps at least the limit...
  EXPECT_LT(length, 1000);  // ...and trims whole nodes beyond it
  EXPECT_EQ(raw.run({"EXISTS", "marty:" + stream})->integer, 0) << "the default prefix was used";
  (void)raw.run({"DEL", "shop:" + stream});
}

// What a plain Redis client publishes on a channel reaches pub/sub subscribers, typed by the
// channel; what we publish is structured CloudEvents JSON that any client can read.
TEST(RedisInterop, PlainPublishersAndReaders) {
  ASSERT_FALSE(shared_url().empty()) << "MARTY_REDIS_URL is not set";
  const std::string type = unique("plain");
  std::mutex mutex;
  std::vector<Message> got;
  auto config = config_for(shared_url());
  auto bus = redis_bus(config, "interop", true);
  ASSERT_TRUE(bus->subscribe_to_events({type}, sync_handler([&](const Message& m) -> Result<void> {
                                         std::lock_guard lock(mutex);
                                         got.push_back(m);
                                         return ok();
                                       })));
  RawClient raw(shared_url());
  auto receivers = raw.run({"PUBLISH", "marty:events." + type, "{\"from\":\"redis-cli\"}"});
  EXPECT_EQ(receivers->integer, 1);
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lock(mutex);
    return got.size() == 1;
  }));
  std::lock_guard lock(mutex);
  EXPECT_EQ(got[0].type(), type);
  EXPECT_EQ(got[0].json()["from"], "redis-cli");
}

}  // namespace
}  // namespace marty::messaging
