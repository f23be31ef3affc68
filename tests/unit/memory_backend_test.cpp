// The embedded backend through the SPI, below the bus: the mechanics the conformance suite
// relies on (groups, order, redelivery, bounds, streams, requests).
#include <gtest/gtest.h>

#include "../support/test_loop.hpp"
#include "marty/messaging/memory_backend.hpp"

namespace marty::messaging {
namespace {

using namespace std::chrono_literals;
using testing::TestLoop;

Message message_on(std::string subject, Json data, std::string key = {}) {
  MessageMetadata md;
  md.message_id = make_uuid_v7();
  md.partition_key = std::move(key);
  Message m = Message::from_json(std::move(data), md);
  m.set_subject(std::move(subject));
  return m;
}

SubscriptionSpec spec(std::string subject, std::string group = {},
                      DestinationKind kind = DestinationKind::topic,
                      StartPosition start = StartPosition::new_messages()) {
  SubscriptionSpec s;
  s.subject = std::move(subject);
  s.group = std::move(group);
  s.kind = kind;
  s.start = start;
  return s;
}

PublishOptions stream_options() {
  PublishOptions o;
  o.kind = DestinationKind::stream;
  o.pattern = MessagingPattern::streaming;
  return o;
}

class MemoryBackendTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(run(backend_->connect())); }

  template <class T>
  T run(asio::awaitable<T> op) {
    return loop_.run(std::move(op));
  }
  std::shared_ptr<Subscription> subscribe(SubscriptionSpec s) {
    auto sub = run(backend_->subscribe(std::move(s)));
    EXPECT_TRUE(sub);
    return *sub;
  }
  void publish(Message m, PublishOptions o = {}) {
    auto r = run(backend_->publish(std::move(m), o));
    ASSERT_TRUE(r) << r.error().describe();
  }
  std::unique_ptr<Delivery> receive(Subscription& sub, std::chrono::milliseconds wait = 2000ms) {
    auto d = run(sub.receive(SteadyClock::now() + wait));
    if (!d) return nullptr;
    return std::move(*d);
  }

  // Two members of group "g" and two messages of one key; `a` holds the first.
  struct KeyHeldByA {
    std::shared_ptr<Subscription> a, b;
    std::unique_ptr<Delivery> held;
  };
  KeyHeldByA key_held_by_a() {
    KeyHeldByA scene{subscribe(spec("events.k", "g")), subscribe(spec("events.k", "g")), nullptr};
    publish(message_on("events.k", 1, "key"));
    publish(message_on("events.k", 2, "key"));
    scene.held = receive(*scene.a);
    return scene;
  }

  TestLoop loop_;
  MemoryBackendConfig config_;
  std::shared_ptr<MemoryBroker> broker_ = make_memory_broker(config_);
  std::shared_ptr<Backend> backend_ = make_memory_backend(broker_);
};

TEST_F(MemoryBackendTest, FanOutToEverySubscriberAndWildcards) {
  auto exact = subscribe(spec("events.a"));
  auto star = subscribe(spec("events.*"));
  auto tail = subscribe(spec("events.>"));
  publish(message_on("events.a", 1));
  publish(message_on("events.a.b", 2));
  for (auto* sub : {exact.get(), star.get(), tail.get()}) {
    auto d = receive(*sub);
    ASSERT_TRUE(d);
    EXPECT_EQ(d->message().json(), 1);
    EXPECT_EQ(d->attempt(), 1);
    ASSERT_TRUE(run(d->ack()));
  }
  auto deep = receive(*tail);
  ASSERT_TRUE(deep);
  EXPECT_EQ(deep->message().json(), 2);
  EXPECT_FALSE(receive(*exact, 30ms));
  EXPECT_FALSE(receive(*star, 30ms));
}

TEST_F(MemoryBackendTest, GroupMembersCompete) {
  auto a = subscribe(spec("commands.svc.x", "svc"));
  auto b = subscribe(spec("commands.svc.x", "svc"));
  for (int i = 0; i < 10; ++i) publish(message_on("commands.svc.x", i));
  int from_a = 0, from_b = 0;
  while (auto d = receive(*a, 20ms)) {
    ++from_a;
    ASSERT_TRUE(run(d->ack()));
    if (auto e = receive(*b, 20ms)) {
      ++from_b;
      ASSERT_TRUE(run(e->ack()));
    }
  }
  while (auto e = receive(*b, 20ms)) {
    ++from_b;
    ASSERT_TRUE(run(e->ack()));
  }
  EXPECT_EQ(from_a + from_b, 10);
  EXPECT_GT(from_a, 0);
  EXPECT_GT(from_b, 0);
}

TEST_F(MemoryBackendTest, NackRedeliversAfterTheDelay) {
  auto sub = subscribe(spec("events.retry"));
  publish(message_on("events.retry", 1));
  auto first = receive(*sub);
  ASSERT_TRUE(first);
  const auto nacked_at = SteadyClock::now();
  ASSERT_TRUE(run(first->nack(80ms)));
  auto second = receive(*sub);
  ASSERT_TRUE(second);
  EXPECT_GE(SteadyClock::now() - nacked_at, 75ms);
  EXPECT_EQ(second->attempt(), 2);
  EXPECT_EQ(second->message().id(), first->message().id());
  ASSERT_TRUE(run(second->ack()));
  auto settled_twice = run(second->ack());
  ASSERT_FALSE(settled_twice);
  EXPECT_TRUE(settled_twice.error().is(errc::failed_precondition));
}

TEST_F(MemoryBackendTest, DelayedMessageHoldsBackItsKeyButNotOthers) {
  auto sub = subscribe(spec("events.k"));
  publish(message_on("events.k", "k1-first", "k1"));
  publish(message_on("events.k", "k1-second", "k1"));
  publish(message_on("events.k", "k2-first", "k2"));
  auto first = receive(*sub);
  ASSERT_EQ(first->message().json(), "k1-first");
  ASSERT_TRUE(run(first->nack(100ms)));
  auto next = receive(*sub);
  ASSERT_TRUE(next);
  EXPECT_EQ(next->message().json(), "k2-first");  // k1-second must wait behind k1-first
  ASSERT_TRUE(run(next->ack()));
  auto again = receive(*sub);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->message().json(), "k1-first");
  ASSERT_TRUE(run(again->ack()));
  auto last = receive(*sub);
  ASSERT_TRUE(last);
  EXPECT_EQ(last->message().json(), "k1-second");
}

TEST_F(MemoryBackendTest, KeyHeldByOneMemberIsNotGivenToAnother) {
  auto [a, b, held] = key_held_by_a();
  ASSERT_TRUE(held);
  EXPECT_FALSE(receive(*b, 30ms)) << "b got a message of a key a is still processing";
  ASSERT_TRUE(run(held->ack()));
  auto next = receive(*b);
  ASSERT_TRUE(next);
  EXPECT_EQ(next->message().json(), 2);
}

TEST_F(MemoryBackendTest, UnsettledDeliveryOfAClosedMemberGoesToTheNextMember) {
  auto a = subscribe(spec("commands.s.c", "s"));
  publish(message_on("commands.s.c", 1));
  {
    auto d = receive(*a);
    ASSERT_TRUE(d);
    a->close();
  }  // dropped unsettled: released
  auto b = subscribe(spec("commands.s.c", "s"));
  auto again = receive(*b);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->attempt(), 2);
}

TEST_F(MemoryBackendTest, AckWakesAMemberWaitingBehindTheKeyEvenAfterTheHolderLeft) {
  auto [a, b, held] = key_held_by_a();
  ASSERT_TRUE(held);
  std::thread closer_and_acker([&] {
    std::this_thread::sleep_for(30ms);
    a->close();  // the holder leaves (stop intake), then its handler finishes
    (void)run(held->ack());
  });
  auto next = receive(*b, 2000ms);  // parked: key held by a
  closer_and_acker.join();
  ASSERT_TRUE(next) << "b was never woken after a acked";
  EXPECT_EQ(next->message().json(), 2);
}

TEST_F(MemoryBackendTest, ClosingTheConnectionReleasesWhatItsHandlersStillHold) {
  auto doomed = make_memory_backend(broker_);
  ASSERT_TRUE(run(doomed->connect()));
  auto a = *run(doomed->subscribe(spec("commands.s.c", "s")));
  auto b = subscribe(spec("commands.s.c", "s"));
  publish(message_on("commands.s.c", 1));
  auto held = run(a->receive(std::nullopt));
  ASSERT_TRUE(held);
  a->close();
  EXPECT_FALSE(receive(*b, 30ms)) << "a closed subscription's in-flight message moved early";
  ASSERT_TRUE(run(doomed->close(SteadyClock::now() + 1s)));
  auto moved = receive(*b);
  ASSERT_TRUE(moved) << "closing the connection did not release the held message";
  EXPECT_EQ(moved->attempt(), 2);
  auto late = run((*held)->ack());
  ASSERT_FALSE(late);
  EXPECT_TRUE(late.error().is(errc::failed_precondition));
}

TEST_F(MemoryBackendTest, QueriesNeedALiveReceiverCommandsOnlyAGroup) {
  auto instance = subscribe(spec("queries.svc.q", "svc"));
  auto commands = subscribe(spec("commands.svc.c", "svc"));
  instance->close();
  commands->close();
  PublishOptions query;
  query.pattern = MessagingPattern::request_response;
  query.require_receiver = true;
  auto refused = run(backend_->publish(message_on("queries.svc.q", 1), query));
  ASSERT_FALSE(refused);
  EXPECT_TRUE(refused.error().is(errc::not_found));
  PublishOptions command;
  command.pattern = MessagingPattern::point_to_point;
  command.require_receiver = true;
  EXPECT_TRUE(run(backend_->publish(message_on("commands.svc.c", 1), command)))
      << "a durable group keeps commands for the next instance";
}

// An old message held at the front while thousands behind it are acked: the settled slots are
// compacted away, and the held one can still be settled and redelivered (found by search).
TEST_F(MemoryBackendTest, AckedMessagesBehindAHeldOneAreCompacted) {
  auto a = subscribe(spec("events.burst", "g"));
  auto b = subscribe(spec("events.burst", "g"));
  constexpr int kBehind = 5000;
  for (int i = 0; i <= kBehind; ++i) publish(message_on("events.burst", i));
  auto held = receive(*a);
  ASSERT_TRUE(held);
  ASSERT_EQ(held->message().json(), 0);
  for (int i = 1; i <= kBehind; ++i) {
    auto d = receive(*b);
    ASSERT_TRUE(d) << i;
    ASSERT_EQ(d->message().json(), i);
    ASSERT_TRUE(run(d->ack()));
  }
  ASSERT_TRUE(run(held->nack(0ms)));
  auto again = receive(*b);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->message().json(), 0);
  EXPECT_EQ(again->attempt(), 2);
  ASSERT_TRUE(run(again->ack()));
  publish(message_on("events.burst", "after"));
  auto after = receive(*a);
  ASSERT_TRUE(after);
  EXPECT_EQ(after->message().json(), "after");
}

TEST_F(MemoryBackendTest, FullGroupAppliesBackpressureThenFails) {
  MemoryBackendConfig small;
  small.group_capacity = 2;
  auto backend = make_memory_backend(small);
  ASSERT_TRUE(run(backend->connect()));
  auto sub = *run(backend->subscribe(spec("events.slow")));
  PublishOptions o;
  o.deadline = SteadyClock::now() + 50ms;
  ASSERT_TRUE(run(backend->publish(message_on("events.slow", 1), o)));
  ASSERT_TRUE(run(backend->publish(message_on("events.slow", 2), o)));
  auto full = run(backend->publish(message_on("events.slow", 3), o));
  ASSERT_FALSE(full);
  EXPECT_TRUE(full.error().is(errc::resource_exhausted)) << full.error().describe();
  // A consumer making room lets a waiting publisher through.
  auto d = *run(sub->receive(std::nullopt));
  o.deadline = SteadyClock::now() + 2s;
  std::thread acker([&] {
    std::this_thread::sleep_for(30ms);
    (void)run(d->ack());
  });
  auto waited = run(backend->publish(message_on("events.slow", 3), o));
  acker.join();
  EXPECT_TRUE(waited) << waited.error().describe();
}

TEST_F(MemoryBackendTest, StreamReplayFromEveryStartPosition) {
  for (int i = 1; i <= 5; ++i) publish(message_on("orders", i), stream_options());
  auto take_all = [&](StartPosition start) {
    auto sub = subscribe(spec("orders", {}, DestinationKind::stream, start));
    std::vector<std::uint64_t> sequences;
    while (auto d = receive(*sub, 30ms)) {
      sequences.push_back(d->sequence());
      EXPECT_EQ(d->message().json().get<std::uint64_t>(), d->sequence());
      (void)run(d->ack());
    }
    return sequences;
  };
  EXPECT_EQ(take_all(StartPosition::earliest()), (std::vector<std::uint64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(take_all(StartPosition::from_sequence(4)), (std::vector<std::uint64_t>{4, 5}));
  EXPECT_TRUE(take_all(StartPosition::new_messages()).empty());
  EXPECT_TRUE(take_all(StartPosition::from_time(Clock::now() + 1h)).empty());
  EXPECT_EQ(take_all(StartPosition::from_time(Clock::now() - 1h)).size(), 5u);
}

TEST_F(MemoryBackendTest, StreamRetentionDropsTheOldest) {
  MemoryBackendConfig config;
  config.streams["short"] = MemoryStreamLimits{3, 0, std::chrono::seconds(0)};
  auto backend = make_memory_backend(config);
  ASSERT_TRUE(run(backend->connect()));
  for (int i = 1; i <= 5; ++i) {
    ASSERT_TRUE(run(backend->publish(message_on("short", i), stream_options())));
  }
  auto sub = *run(
      backend->subscribe(spec("short", {}, DestinationKind::stream, StartPosition::earliest())));
  std::vector<int> got;
  while (auto d = run(sub->receive(SteadyClock::now() + 30ms))) {
    got.push_back((*d)->message().json());
    ASSERT_TRUE(run((*d)->ack()));
  }
  EXPECT_EQ(got, (std::vector<int>{3, 4, 5}));
}

TEST_F(MemoryBackendTest, DurableStreamGroupResumesWhereItStopped) {
  for (int i = 1; i <= 4; ++i) publish(message_on("log", i), stream_options());
  {
    auto sub =
        subscribe(spec("log", "readers", DestinationKind::stream, StartPosition::earliest()));
    for (int i = 0; i < 2; ++i) {
      auto d = receive(*sub);
      ASSERT_TRUE(run(d->ack()));
    }
    sub->close();
  }
  // The start position is ignored for an existing group.
  auto resumed =
      subscribe(spec("log", "readers", DestinationKind::stream, StartPosition::earliest()));
  auto d = receive(*resumed);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->sequence(), 3u);
}

TEST_F(MemoryBackendTest, ExpiredMessagesAreNotDelivered) {
  auto sub = subscribe(spec("events.ttl"));
  MessageMetadata md;
  md.time = Clock::now() - 10s;
  md.ttl = 1s;
  Message stale = Message::from_json("stale", md);
  stale.set_subject("events.ttl");
  publish(stale);
  publish(message_on("events.ttl", "fresh"));
  auto d = receive(*sub);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->message().json(), "fresh");
}

TEST_F(MemoryBackendTest, CommandsNeedAReceiverAndPayloadsAreBounded) {
  PublishOptions o;
  o.require_receiver = true;
  auto nobody = run(backend_->publish(message_on("commands.none.x", 1), o));
  ASSERT_FALSE(nobody);
  EXPECT_TRUE(nobody.error().is(errc::not_found));
  EXPECT_NE(nobody.error().message().find("commands.none.x"), std::string::npos);

  MemoryBackendConfig tiny;
  tiny.max_payload_bytes = 8;
  auto backend = make_memory_backend(tiny);
  ASSERT_TRUE(run(backend->connect()));
  auto big = run(backend->publish(message_on("events.x", "a long string"), {}));
  ASSERT_FALSE(big);
  EXPECT_TRUE(big.error().is(errc::invalid_argument));
}

TEST_F(MemoryBackendTest, NativeRequestReplyAndDeadline) {
  auto responder = subscribe(spec("queries.svc.q", "svc"));
  std::thread server([&] {
    auto d = receive(*responder);
    ASSERT_TRUE(d);
    Message reply = message_on(d->message().metadata().reply_to, {{"echo", d->message().json()}});
    ASSERT_TRUE(run(backend_->publish(reply, {})));
    (void)run(d->ack());
  });
  auto reply = run(backend_->request(message_on("queries.svc.q", 7), 2s));
  server.join();
  ASSERT_TRUE(reply) << reply.error().describe();
  EXPECT_EQ(reply->json()["echo"], 7);

  const auto start = SteadyClock::now();
  auto late = run(backend_->request(message_on("queries.svc.q", 8), 50ms));
  ASSERT_FALSE(late);
  EXPECT_TRUE(late.error().is(errc::deadline_exceeded));
  EXPECT_GE(SteadyClock::now() - start, 50ms);
}

TEST_F(MemoryBackendTest, ClosingAConnectionWakesItsReceiversButSparesOthers) {
  auto other = make_memory_backend(broker_);
  ASSERT_TRUE(run(other->connect()));
  auto mine = subscribe(spec("events.c"));
  auto theirs = *run(other->subscribe(spec("events.c")));
  std::thread closer([&] {
    std::this_thread::sleep_for(30ms);
    (void)run(backend_->close(SteadyClock::now() + 1s));
  });
  auto woken = run(mine->receive(std::nullopt));
  closer.join();
  ASSERT_FALSE(woken);
  EXPECT_TRUE(woken.error().is(errc::cancelled));
  ASSERT_TRUE(run(other->publish(message_on("events.c", 1), {})));
  auto d = run(theirs->receive(SteadyClock::now() + 1s));
  EXPECT_TRUE(d);
  auto refused = run(backend_->publish(message_on("events.c", 2), {}));
  ASSERT_FALSE(refused);
  EXPECT_TRUE(refused.error().is(errc::unavailable));
}

}  // namespace
}  // namespace marty::messaging
