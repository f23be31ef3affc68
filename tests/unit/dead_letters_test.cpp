// Dead letters read back: provenance parsed from headers (never failing on bad ones), the
// message to requeue, and the filter.
#include <gtest/gtest.h>

#include "marty/messaging/dead_letters.hpp"
#include "marty/messaging/event_bus.hpp"

namespace marty::messaging {
namespace {

using namespace std::chrono_literals;

Message stored_dead_letter() {
  MessageMetadata metadata;
  metadata.message_id = "order-1";
  metadata.message_type = "order_placed";
  metadata.headers["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  Message message = Message::from_json({{"total", 12}}, std::move(metadata));
  message.set_subject("events.order_placed");
  mark_dead_letter(message, "events.order_placed", "unavailable: payment gateway down", 4);
  auto& headers = message.mutable_metadata().headers;
  headers[std::string(headers::kDeadLetterGroup)] = "billing";
  headers[std::string(headers::kDeadLetterPattern)] = "pub_sub";
  headers[std::string(headers::kDeadLetterFirstFailure)] = "2026-11-28T10:00:00Z";
  headers[std::string(headers::kDeadLetterTime)] = "2026-11-28T10:00:05Z";
  return message;
}

TEST(DeadLetter, ReadsItsProvenanceFromTheHeaders) {
  const Message stored = stored_dead_letter();
  const DeadLetter dead = DeadLetter::from_message(stored, "redis");
  EXPECT_EQ(dead.id, stored.metadata().headers.at(std::string(headers::kDeadLetterId)));
  EXPECT_EQ(dead_letter_id(stored), dead.id);
  EXPECT_EQ(dead.subject, "events.order_placed");
  EXPECT_EQ(dead.message.subject(), "deadletter.events.order_placed");
  EXPECT_EQ(dead.reason, "unavailable: payment gateway down");
  EXPECT_EQ(dead.attempts, 4);
  EXPECT_EQ(dead.group, "billing");
  ASSERT_TRUE(dead.pattern);
  EXPECT_EQ(*dead.pattern, MessagingPattern::pub_sub);
  ASSERT_TRUE(dead.first_failure && dead.last_failure);
  EXPECT_EQ(*dead.last_failure - *dead.first_failure, 5s);
  EXPECT_EQ(dead.backend, "redis");
}

TEST(DeadLetter, MalformedHeadersLeaveFieldsEmptyButKeepItReadable) {
  Message stored = stored_dead_letter();
  auto& headers = stored.mutable_metadata().headers;
  headers[std::string(headers::kDeadLetterAttempts)] = "many";
  headers[std::string(headers::kDeadLetterPattern)] = "carrier pigeon";
  headers[std::string(headers::kDeadLetterTime)] = "yesterday";
  headers.erase(std::string(headers::kDeadLetterFirstFailure));
  headers.erase(std::string(headers::kDeadLetterSubject));
  headers.erase(std::string(headers::kDeadLetterId));
  const DeadLetter dead = DeadLetter::from_message(stored, "kafka");
  EXPECT_EQ(dead.attempts, 0);
  EXPECT_FALSE(dead.pattern);
  EXPECT_FALSE(dead.last_failure);
  EXPECT_FALSE(dead.first_failure);
  EXPECT_EQ(dead.subject, "events.order_placed");  // from the dead-letter subject
  EXPECT_EQ(dead.id, "order-1");                   // written without an id: the message id
}

TEST(DeadLetter, TheOriginalIsTheMessageAsFirstSent) {
  const DeadLetter dead = DeadLetter::from_message(stored_dead_letter(), "memory");
  const Message original = dead.original();
  EXPECT_EQ(original.subject(), "events.order_placed");
  EXPECT_EQ(original.id(), "order-1");
  EXPECT_EQ(original.json()["total"], 12);
  const auto& headers = original.metadata().headers;
  EXPECT_EQ(headers.size(), 1u);
  EXPECT_EQ(headers.at("traceparent"), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
}

TEST(DeadLetterFilter, EveryConditionSetMustHold) {
  const DeadLetter dead = DeadLetter::from_message(stored_dead_letter(), "memory");
  DeadLetterFilter filter("events.order_placed");
  EXPECT_TRUE(filter.matches(dead));
  filter.reason_contains = "gateway";
  filter.group = "billing";
  filter.message_id = "order-1";
  filter.ids = {dead.id, "another"};
  filter.failed_since = *dead.last_failure;
  filter.failed_before = *dead.last_failure + 1s;
  EXPECT_TRUE(filter.matches(dead));

  auto without = [&](auto change) {
    DeadLetterFilter narrower = filter;
    change(narrower);
    return narrower.matches(dead);
  };
  EXPECT_FALSE(without([](DeadLetterFilter& f) { f.reason_contains = "timeout"; }));
  EXPECT_FALSE(without([](DeadLetterFilter& f) { f.group = "shipping"; }));
  EXPECT_FALSE(without([](DeadLetterFilter& f) { f.message_id = "order-2"; }));
  EXPECT_FALSE(without([](DeadLetterFilter& f) { f.ids = {"another"}; }));
  EXPECT_FALSE(without([&](DeadLetterFilter& f) { f.failed_before = *dead.last_failure; }));
  EXPECT_FALSE(without([&](DeadLetterFilter& f) { f.failed_since = *dead.last_failure + 1ms; }));
}

TEST(DeadLetter, UndecodableRecordsAreDeadLettersWithTheirRawBytes) {
  const Message dead = undecodable_dead_letter("commands.billing.charge", "\x01garbage", "bad");
  const DeadLetter read = DeadLetter::from_message(dead, "kafka");
  EXPECT_FALSE(read.id.empty());
  EXPECT_NE(read.id, dead.id());
  EXPECT_EQ(read.subject, "commands.billing.charge");
  EXPECT_EQ(read.attempts, 1);
  EXPECT_TRUE(read.first_failure && read.last_failure);
  EXPECT_EQ(read.original().bytes(), "\x01garbage");
}

}  // namespace
}  // namespace marty::messaging
