// Publisher: the windowed send on the embedded backend (which confirms at once while its
// groups have room, and through the waiting path of Backend::submit when they are full).
#include <gtest/gtest.h>

#include <mutex>
#include <vector>

#include "../support/test_loop.hpp"
#include "marty/messaging.hpp"

namespace marty::messaging {
namespace {

using namespace std::chrono_literals;
using testing::eventually;

// A bus on a memory broker whose groups hold at most `capacity` messages.
struct Bench {
  explicit Bench(std::size_t capacity = 65'536) {
    MemoryBackendConfig config;
    config.group_capacity = capacity;
    broker = make_memory_broker(config);
    EXPECT_TRUE(
        bus.bus().register_backend(MessageBackendType::memory, make_memory_backend(broker)));
    EXPECT_TRUE(bus.start());
  }
  std::shared_ptr<MemoryBroker> broker;
  BlockingEventBus bus;
};

// Messages seen by a handler, in order.
struct Seen {
  std::mutex mutex;
  std::vector<Message> messages;
  MessageHandler handler() {
    return sync_handler([this](const Message& m) {
      std::lock_guard lock(mutex);
      messages.push_back(m);
      return ok();
    });
  }
  std::size_t size() {
    std::lock_guard lock(mutex);
    return messages.size();
  }
};

TEST(PublisherTest, SendsInOrderWithTheMetadataPublishEventGives) {
  Bench bench;
  Seen seen;
  ASSERT_TRUE(bench.bus.subscribe_to_events({"tick"}, seen.handler()));
  auto publisher = bench.bus.bus().publisher("tick");
  ASSERT_TRUE(publisher) << publisher.error().describe();
  EXPECT_EQ((*publisher)->subject(), "events.tick");
  for (int i = 1; i <= 100; ++i) {
    auto sent = (*publisher)->send(Json{{"n", i}});
    ASSERT_TRUE(sent) << sent.error().describe();
    EXPECT_EQ(*sent, static_cast<std::uint64_t>(i));
  }
  EXPECT_TRUE(bench.bus.run((*publisher)->flush()));
  EXPECT_TRUE(bench.bus.run((*publisher)->confirmed(42)));
  EXPECT_EQ((*publisher)->in_flight(), 0u);
  ASSERT_TRUE(eventually([&] { return seen.size() == 100; }));
  std::lock_guard lock(seen.mutex);
  for (int i = 0; i < 100; ++i) {
    const Message& m = seen.messages[static_cast<std::size_t>(i)];
    EXPECT_EQ(m.json()["n"], i + 1);
    EXPECT_EQ(m.type(), "tick");
    EXPECT_FALSE(m.id().empty());
    EXPECT_TRUE(m.metadata().time.has_value());
    EXPECT_EQ(m.metadata().source, EventBusOptions().service_name);
  }
  EXPECT_EQ(bench.bus.bus().metrics().publisher("memory", "events.tick").published.load(), 100u);
}

TEST(PublisherTest, AFullWindowRefusesUntilConfirmationsComeAndSendWhenRoomWaits) {
  Bench bench(2);  // a group holds 2 messages: the third send waits for room
  // A durable group with nobody consuming keeps what is sent.
  auto id = bench.bus.subscribe_to_events(
      {"slow"}, sync_handler([](const Message&) { return ok(); }), "workers");
  ASSERT_TRUE(id);
  ASSERT_TRUE(bench.bus.unsubscribe(*id));
  PublisherOptions options;
  options.max_in_flight = 3;
  options.timeout = 10s;
  auto publisher = bench.bus.bus().publisher("slow", options);
  ASSERT_TRUE(publisher);
  std::vector<std::uint64_t> confirmed;
  std::mutex mutex;
  (*publisher)->on_confirm([&](std::uint64_t first, std::uint64_t last, const Result<void>& r) {
    std::lock_guard lock(mutex);
    for (auto s = first; s <= last; ++s) confirmed.push_back(r ? s : 0);
  });
  for (int i = 0; i < 5; ++i) ASSERT_TRUE((*publisher)->send(Json{{"n", i}}));
  // 1 and 2 are in the group (confirmed); 3, 4 and 5 wait for room, filling the window.
  EXPECT_EQ((*publisher)->in_flight(), 3u);
  auto refused = (*publisher)->send(Json{{"n", 5}});
  ASSERT_FALSE(refused);
  EXPECT_TRUE(refused.error().is(errc::resource_exhausted)) << refused.error().describe();
  EXPECT_NE(refused.error().message().find("window"), std::string::npos);
  // A consumer drains the group: the waiting sends land, a send waiting for room gets in.
  Seen seen;
  ASSERT_TRUE(bench.bus.subscribe_to_events({"slow"}, seen.handler(), "workers"));
  auto sixth = bench.bus.run((*publisher)->send_when_room(Message::from_json(Json{{"n", 5}})));
  ASSERT_TRUE(sixth) << sixth.error().describe();
  EXPECT_EQ(*sixth, 6u);
  EXPECT_TRUE(bench.bus.run((*publisher)->flush()));
  ASSERT_TRUE(eventually([&] { return seen.size() == 6; }));
  std::lock_guard lock(mutex);
  EXPECT_EQ(confirmed, (std::vector<std::uint64_t>{1, 2, 3, 4, 5, 6}));
  std::lock_guard seen_lock(seen.mutex);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(seen.messages[static_cast<std::size_t>(i)].json()["n"], i);
}

TEST(PublisherTest, ASendThatCannotBeConfirmedInTimeFailsItsConfirmationAndTheFlush) {
  Bench bench(1);
  auto id = bench.bus.subscribe_to_events(
      {"stuck"}, sync_handler([](const Message&) { return ok(); }), "workers");
  ASSERT_TRUE(id);
  ASSERT_TRUE(bench.bus.unsubscribe(*id));
  PublisherOptions options;
  options.timeout = 100ms;
  auto publisher = bench.bus.bus().publisher("stuck", options);
  ASSERT_TRUE(publisher);
  ASSERT_TRUE((*publisher)->send(Json{{"n", 1}}));
  auto second = (*publisher)->send(Json{{"n", 2}});
  ASSERT_TRUE(second);
  auto outcome = bench.bus.run((*publisher)->confirmed(*second));
  ASSERT_FALSE(outcome);
  EXPECT_TRUE(outcome.error().is(errc::resource_exhausted)) << outcome.error().describe();
  EXPECT_TRUE(bench.bus.run((*publisher)->confirmed(1)));
  auto flushed = bench.bus.run((*publisher)->flush());
  ASSERT_FALSE(flushed);
  EXPECT_NE(flushed.error().describe().find("1 send(s) to events.stuck failed"), std::string::npos)
      << flushed.error().describe();
  EXPECT_TRUE(bench.bus.run((*publisher)->flush()));  // told once
  auto unknown = bench.bus.run((*publisher)->confirmed(99));
  ASSERT_FALSE(unknown);
  EXPECT_TRUE(unknown.error().is(errc::invalid_argument));
}

TEST(PublisherTest, CommandsToAServiceNobodyRunsFailTheirConfirmationNotFound) {
  Bench bench;
  auto publisher = bench.bus.bus().command_publisher("charge", "billing");
  ASSERT_TRUE(publisher);
  auto sent = (*publisher)->send(Json{{"amount", 3}});
  ASSERT_TRUE(sent);
  auto outcome = bench.bus.run((*publisher)->confirmed(*sent));
  ASSERT_FALSE(outcome);
  EXPECT_TRUE(outcome.error().is(errc::not_found)) << outcome.error().describe();
  auto bad = bench.bus.bus().command_publisher("charge", "no such service");
  ASSERT_FALSE(bad);
  EXPECT_TRUE(bad.error().is(errc::invalid_argument));
}

TEST(PublisherTest, ABatchIsAllOrNothingAndStreamEventsIsOneBatch) {
  Bench bench;
  PublisherOptions options;
  options.max_in_flight = 2;
  auto publisher = bench.bus.bus().stream_publisher("ledger", options);
  ASSERT_TRUE(publisher);
  std::vector<Message> three;
  for (int i = 0; i < 3; ++i) three.push_back(Message::from_json(Json{{"n", i}}));
  auto refused = (*publisher)->send_batch(three);
  ASSERT_FALSE(refused);
  EXPECT_TRUE(refused.error().is(errc::resource_exhausted));
  EXPECT_FALSE((*publisher)->send_batch({}));
  std::vector<Json> events;
  for (int i = 0; i < 500; ++i) events.push_back(Json{{"n", i}});
  ASSERT_TRUE(bench.bus.stream_events("ledger", events, "key-1"));
  std::vector<Message> read;
  std::mutex mutex;
  StreamOptions stream_options;
  stream_options.start = StartPosition::earliest();
  ASSERT_TRUE(bench.bus.process_stream("ledger",
                                       sync_batch_processor([&](const std::vector<Message>& batch) {
                                         std::lock_guard lock(mutex);
                                         read.insert(read.end(), batch.begin(), batch.end());
                                         return ok();
                                       }),
                                       "readers", stream_options));
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lock(mutex);
    return read.size() == 500;
  }));
  std::lock_guard lock(mutex);
  for (int i = 0; i < 500; ++i) {
    EXPECT_EQ(read[static_cast<std::size_t>(i)].json()["n"], i);
    EXPECT_EQ(read[static_cast<std::size_t>(i)].metadata().partition_key, "key-1");
    EXPECT_EQ(read[static_cast<std::size_t>(i)].type(), "ledger");
  }
}

TEST(PublisherTest, NoPublisherBeforeStartAndBadOptionsAreRefused) {
  BlockingEventBus bus;
  auto early = bus.bus().publisher("tick");
  ASSERT_FALSE(early);
  ASSERT_TRUE(bus.start());
  PublisherOptions none;
  none.max_in_flight = 0;
  auto bad = bus.bus().publisher("tick", none);
  ASSERT_FALSE(bad);
  EXPECT_TRUE(bad.error().is(errc::invalid_argument));
  EXPECT_NE(bad.error().message().find("max_in_flight"), std::string::npos);
  auto bad_type = bus.bus().publisher("no spaces");
  ASSERT_FALSE(bad_type);
  EXPECT_TRUE(bad_type.error().is(errc::invalid_argument));
}

}  // namespace
}  // namespace marty::messaging
