#include <set>
#include <thread>

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
