#include <cstdint>
#include <limits>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "marty/messaging/message.hpp"

namespace marty::messaging {
namespace {

TEST(MessageTest, JsonMessagesKeepTheParsedValue) {
  Message m = Message::from_json({{"a", 1}});
  EXPECT_EQ(m.bytes(), R"({"a":1})");
  EXPECT_EQ(m.json()["a"], 1);
  EXPECT_EQ(m.metadata().content_type, "application/json");
}

TEST(MessageTest, CopiesSharePayload) {
  Message m = Message::from_bytes(std::string(1 << 20, 'x'));
  Message copy = m;
  EXPECT_EQ(copy.payload().get(), m.payload().get());
  EXPECT_EQ(copy.bytes().data(), m.bytes().data());
}

TEST(MessageTest, ChangingACopyLeavesTheOriginal) {
  MessageMetadata md;
  md.correlation_id = "original";
  Message original = Message::from_json(1, md);
  Message copy = original;
  copy.mutable_metadata().correlation_id = "changed";
  copy.set_subject("events.copy");
  EXPECT_EQ(original.metadata().correlation_id, "original");
  EXPECT_EQ(original.subject(), "");
  EXPECT_EQ(copy.metadata().correlation_id, "changed");
  EXPECT_EQ(copy.payload().get(), original.payload().get());  // the payload stays shared
}

TEST(MessageTest, MovedFromMessageIsEmptyAndUsable) {
  Message source = Message::from_json(Json{{"a", 1}});
  source.set_subject("events.a");
  Message target = std::move(source);
  EXPECT_EQ(target.subject(), "events.a");
  EXPECT_EQ(source.subject(), "");  // NOLINT(bugprone-use-after-move): the contract under test
  EXPECT_EQ(source.bytes(), "");
  EXPECT_FALSE(source.try_json());
  source.set_subject("events.reused");
  EXPECT_EQ(source.subject(), "events.reused");
}

TEST(MessageTest, InvalidJsonIsAClearError) {
  Message m = Message::from_bytes("{not json");
  auto parsed = m.try_json();
  ASSERT_FALSE(parsed);
  EXPECT_TRUE(parsed.error().is(errc::invalid_argument));
  EXPECT_THROW((void)m.json(), MessagingException);
}

TEST(MessageTest, LazyParseIsThreadSafe) {
  Message m = Message::from_bytes(R"({"n":[1,2,3]})");
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] { good += m.json()["n"].size() == 3; });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(good.load(), 8);

  // Readers of a payload that is not JSON all get the same error, however they interleave.
  Message bad = Message::from_bytes("{not json");
  std::atomic<int> refused{0};
  threads.clear();
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      auto parsed = bad.try_json();
      refused += !parsed && parsed.error().is(errc::invalid_argument);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(refused.load(), 8);
}

TEST(MessageTest, TtlExpiry) {
  MessageMetadata md;
  md.time = Clock::now() - std::chrono::seconds(10);
  md.ttl = std::chrono::seconds(5);
  EXPECT_TRUE(Message::from_json(1, md).expired());
  md.ttl = std::chrono::seconds(60);
  EXPECT_FALSE(Message::from_json(1, md).expired());
  md.ttl.reset();
  EXPECT_FALSE(Message::from_json(1, md).expired());
}

// What the bus does to every message it publishes (stamp) and how a sealed message reads and
// changes: every field the sender set survives, the bus fills only what is empty.
MessageMetadata filled_metadata() {
  MessageMetadata md;
  md.correlation_id = "a-conversation-id-longer-than-sixteen";
  md.causation_id = "cause-1";
  md.reply_to = "_INBOX.reply";
  md.content_type = "application/vnd.example+json";
  md.ttl = std::chrono::milliseconds(1500);
  md.priority = 7;
  md.partition_key = "customer-42";
  md.headers = {{"traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
                {"x-empty", ""},
                {"x-tenant", "acme"}};
  return md;
}

TEST(MessageTest, StampFillsWhatIsEmptyAndKeepsEverythingElse) {
  const auto before = Clock::now();
  Message m = Message::from_bytes("body", filled_metadata());
  m.stamp("order_placed", "orders-service", "events.order_placed");
  EXPECT_EQ(m.id().size(), 36u);
  EXPECT_EQ(m.id()[14], '7');  // a UUIDv7
  EXPECT_EQ(m.type(), "order_placed");
  EXPECT_EQ(m.source(), "orders-service");
  EXPECT_EQ(m.subject(), "events.order_placed");
  ASSERT_TRUE(m.time());
  EXPECT_GE(*m.time(), before);
  EXPECT_LE(*m.time(), Clock::now());
  EXPECT_EQ(m.correlation_id(), "a-conversation-id-longer-than-sixteen");
  EXPECT_EQ(m.causation_id(), "cause-1");
  EXPECT_EQ(m.reply_to(), "_INBOX.reply");
  EXPECT_EQ(m.content_type(), "application/vnd.example+json");
  EXPECT_EQ(m.ttl(), std::chrono::milliseconds(1500));
  EXPECT_EQ(m.priority(), 7);
  EXPECT_EQ(m.partition_key(), "customer-42");
  EXPECT_EQ(m.header("x-tenant"), "acme");
  EXPECT_EQ(m.header("x-empty"), "");
  EXPECT_FALSE(m.header("x-missing"));
  EXPECT_EQ(m.bytes(), "body");

  // The seed's struct says the same.
  MessageMetadata expected = filled_metadata();
  expected.message_id = std::string(m.id());
  expected.message_type = "order_placed";
  expected.source = "orders-service";
  expected.time = m.time();
  const MessageMetadata& view = m.metadata();
  EXPECT_EQ(view.message_id, expected.message_id);
  EXPECT_EQ(view.message_type, expected.message_type);
  EXPECT_EQ(view.source, expected.source);
  EXPECT_EQ(view.time, expected.time);
  EXPECT_EQ(view.correlation_id, expected.correlation_id);
  EXPECT_EQ(view.causation_id, expected.causation_id);
  EXPECT_EQ(view.reply_to, expected.reply_to);
  EXPECT_EQ(view.content_type, expected.content_type);
  EXPECT_EQ(view.ttl, expected.ttl);
  EXPECT_EQ(view.priority, expected.priority);
  EXPECT_EQ(view.partition_key, expected.partition_key);
  EXPECT_EQ(view.headers, expected.headers);
  EXPECT_EQ(&m.metadata(), &view);  // made once
}

TEST(MessageTest, StampKeepsTheSendersIdTimeAndSource) {
  MessageMetadata md;
  md.message_id = "my-own-id";
  md.source = "upstream";
  md.time = Clock::time_point(std::chrono::seconds(1'700'000'000));
  Message m = Message::from_json(1, md);
  m.stamp("t", "bus-service", "events.t");
  EXPECT_EQ(m.id(), "my-own-id");
  EXPECT_EQ(m.source(), "upstream");
  EXPECT_EQ(m.time(), md.time);
  EXPECT_EQ(m.content_type(), "application/json");
  EXPECT_TRUE(m.correlation_id().empty());
  // Stamping again (a resend) changes nothing but what it is given.
  const std::string id(m.id());
  m.stamp(m.type(), m.source(), m.subject());  // its own fields as the arguments
  EXPECT_EQ(m.id(), id);
  EXPECT_EQ(m.type(), "t");
  EXPECT_EQ(m.subject(), "events.t");
}

TEST(MessageTest, StampCorrelatesAQueryByItsOwnIdUnlessItHasOne) {
  Message query = Message::from_json(1);
  query.stamp("q", "s", "queries.s.q", /*correlate=*/true);
  EXPECT_EQ(query.correlation_id(), query.id());
  EXPECT_EQ(query.metadata().correlation_id, query.id());
  MessageMetadata md;
  md.correlation_id = "saga-1";
  Message in_saga = Message::from_json(1, md);
  in_saga.stamp("q", "s", "queries.s.q", /*correlate=*/true);
  EXPECT_EQ(in_saga.correlation_id(), "saga-1");
}

TEST(MessageTest, ChangingASealedCopyLeavesTheOthers) {
  Message original = Message::from_bytes("x", filled_metadata());
  original.stamp("t", "s", "events.t");
  const std::string id(original.id());
  Message copy = original;
  copy.mutable_metadata().headers["x-tenant"] = "other";
  copy.mutable_metadata().priority = 1;
  Message moved_elsewhere = original;
  moved_elsewhere.set_subject("events.elsewhere");
  EXPECT_EQ(original.header("x-tenant"), "acme");
  EXPECT_EQ(original.priority(), 7);
  EXPECT_EQ(original.subject(), "events.t");
  EXPECT_EQ(copy.header("x-tenant"), "other");
  EXPECT_EQ(copy.priority(), 1);
  EXPECT_EQ(copy.id(), id);
  EXPECT_EQ(copy.subject(), "events.t");
  EXPECT_EQ(moved_elsewhere.subject(), "events.elsewhere");
  EXPECT_EQ(moved_elsewhere.header("x-tenant"), "acme");
  EXPECT_EQ(moved_elsewhere.id(), id);
  // An edited message stamped again is sealed with the edits.
  copy.stamp("t", "s", "events.t");
  EXPECT_EQ(copy.header("x-tenant"), "other");
  EXPECT_EQ(copy.metadata().headers.at("x-tenant"), "other");
}

TEST(MessageTest, ASealedMessagesViewIsMadeOnceAcrossThreads) {
  Message sealed = Message::from_bytes("x", filled_metadata());
  sealed.stamp("t", "s", "events.t");
  std::vector<const MessageMetadata*> seen(8);
  std::vector<std::thread> readers;
  for (std::size_t i = 0; i < seen.size(); ++i) {
    readers.emplace_back([copy = sealed, &seen, i] { seen[i] = &copy.metadata(); });
  }
  for (auto& reader : readers) reader.join();
  for (const auto* view : seen) EXPECT_EQ(view, &sealed.metadata());
  EXPECT_EQ(sealed.metadata().partition_key, "customer-42");
}

TEST(MessageTest, ViewsOfASealedMessageOutliveTurningItEditable) {
  // The right side is read first: a view into the sealed form, which the edit must not free
  // (ASan checks).
  Message m = Message::from_bytes("x", filled_metadata());
  m.stamp("t", "s", "events.t");
  const std::string id(m.id());
  m.mutable_metadata().correlation_id = m.id();
  EXPECT_EQ(m.correlation_id(), id);
  const std::string_view tenant = *m.header("x-tenant");
  m.mutable_metadata().headers["x-copy"] = tenant;
  EXPECT_EQ(m.header("x-copy"), "acme");
}

TEST(MessageTest, AHugeTtlIsNotTakenForExpired) {
  MessageMetadata md;
  md.time = Clock::now();
  md.ttl = std::chrono::milliseconds(std::numeric_limits<std::int64_t>::max() / 2);
  EXPECT_FALSE(Message::from_json(1, md).expired());
  Message sealed = Message::from_json(1, md);
  sealed.stamp("t", "s", "events.t");
  EXPECT_FALSE(sealed.expired());
}

TEST(MessageTest, AnEmptyMessageReadsAsEmpty) {
  Message m;
  EXPECT_TRUE(m.id().empty());
  EXPECT_TRUE(m.subject().empty());
  EXPECT_FALSE(m.header("traceparent"));
  EXPECT_FALSE(m.time());
  EXPECT_EQ(m.content_type(), "application/json");
  EXPECT_EQ(m.bytes(), "");
}

TEST(UuidTest, Version7AndTimeOrdered) {
  std::set<std::string> seen;
  std::string previous;
  for (int i = 0; i < 1000; ++i) {
    std::string id = make_uuid_v7();
    ASSERT_EQ(id.size(), 36u);
    EXPECT_EQ(id[14], '7');
    EXPECT_TRUE(id[19] == '8' || id[19] == '9' || id[19] == 'a' || id[19] == 'b');
    EXPECT_GE(id.substr(0, 13), previous.substr(0, std::min<std::size_t>(13, previous.size())));
    previous = id;
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 1000u);
}

TEST(TimeTest, Rfc3339RoundTripAndOffsets) {
  const auto t = Clock::time_point(std::chrono::microseconds(1'764'192'211'123'456LL));
  const std::string text = format_rfc3339(t);
  EXPECT_EQ(text, "2025-11-26T21:23:31.123456Z");
  EXPECT_EQ(*parse_rfc3339(text), t);
  EXPECT_EQ(*parse_rfc3339("2025-11-26T22:23:31.123456+01:00"), t);
  EXPECT_EQ(*parse_rfc3339("2025-11-26T21:23:31.123456"), t);  // naive: read as UTC
  EXPECT_EQ(*parse_rfc3339("2025-11-26T21:23:31.1234567Z"), t);
  EXPECT_TRUE(parse_rfc3339("2024-02-29T00:00:00Z"));  // leap day
  for (const char* bad :
       {"", "2025-13-01T00:00:00Z", "2025-11-26 21:23", "2025-11-26T21:23:31+1",
        "2025-11-26T21:23:31.Z", "2025-11-26T21:23:31Zjunk", "2026-01-01T-1:00:00Z",
        "2026-01-01T00:-5:00Z", "2026-01-01T00:00:00+99:99", "2026-01-01T00:00:00+-1:00",
        "2026-02-31T00:00:00Z", "2025-02-29T00:00:00Z"}) {
    auto parsed = parse_rfc3339(bad);
    EXPECT_FALSE(parsed) << bad;
    if (!parsed) {
      EXPECT_TRUE(parsed.error().is(errc::invalid_argument));
    }
  }
}

}  // namespace
}  // namespace marty::messaging
