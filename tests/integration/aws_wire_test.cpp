// Names and messages as SNS and SQS carry them.
#include <set>

#include <gtest/gtest.h>

#include "../../src/backends/aws/aws_wire.hpp"

namespace marty::messaging::aws {
namespace {

TEST(AwsNames, CommonSubjectsMapReadably) {
  EXPECT_EQ(aws_name_for("", "events.order_placed", 256, false), "events-order_placed");
  EXPECT_EQ(aws_name_for("shop-", "commands.billing.charge", 80, false),
            "shop-commands-billing-charge");
  EXPECT_EQ(aws_name_for("", "events.order_placed", 256, true), "events-order_placed.fifo");
}

TEST(AwsNames, OtherSubjectsNeverShareAName) {
  // '-' and '.' would both become '-': such subjects carry a hash of themselves instead.
  const std::string dotted = aws_name_for("", "a.b", 80, false);
  const std::string dashed = aws_name_for("", "a-b", 80, false);
  const std::string odd = aws_name_for("", "a:b", 80, false);
  EXPECT_EQ(dotted, "a-b");
  EXPECT_NE(dashed, dotted);
  EXPECT_NE(odd, dashed);
  EXPECT_NE(dashed.find("--"), std::string::npos);
  std::set<std::string> names;
  for (const char* subject : {"a.b", "a-b", "a:b", "a_b", "a/b", "a+b"}) {
    const std::string name = aws_name_for("", subject, 80, false);
    EXPECT_TRUE(names.insert(name).second) << subject << " -> " << name;
    for (char c : name) {
      EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') << name;
    }
  }
}

TEST(AwsNames, LongSubjectsFitTheLimitAndStayDistinct) {
  const std::string base(120, 'x');
  const std::string first = aws_name_for("p-", base + ".one", 80, true);
  const std::string second = aws_name_for("p-", base + ".two", 80, true);
  EXPECT_EQ(first.size(), 80u);
  EXPECT_EQ(second.size(), 80u);
  EXPECT_NE(first, second);
  EXPECT_TRUE(first.ends_with(".fifo"));
}

TEST(AwsMessages, RoundTripWithinTenAttributes) {
  MessageMetadata metadata;
  metadata.message_id = "m-1";
  metadata.message_type = "order_placed";
  metadata.source = "shop";
  metadata.correlation_id = "c-9";
  metadata.causation_id = "m-0";
  metadata.reply_to = "_replies.x";
  metadata.partition_key = "order-7";
  metadata.priority = 3;
  metadata.ttl = std::chrono::milliseconds(5000);
  metadata.time = Clock::now();
  metadata.headers["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  metadata.headers["tenant"] = "acme";
  Message message = Message::from_json({{"n", 1}, {"text", "é & <b>"}}, metadata);
  message.set_subject("events.order_placed");
  const AwsMessage aws = to_aws(message);
  EXPECT_LE(aws.attributes.size(), 10u);
  EXPECT_EQ(aws.body, message.payload()->bytes()) << "text goes as it is";
  auto back = from_aws("events.order_placed", aws.body, aws.attributes);
  ASSERT_TRUE(back) << back.error().describe();
  EXPECT_EQ(back->id(), "m-1");
  EXPECT_EQ(back->type(), "order_placed");
  EXPECT_EQ(back->metadata().correlation_id, "c-9");
  EXPECT_EQ(back->metadata().causation_id, "m-0");
  EXPECT_EQ(back->metadata().reply_to, "_replies.x");
  EXPECT_EQ(back->metadata().partition_key, "order-7");
  EXPECT_EQ(back->metadata().priority, 3);
  EXPECT_EQ(back->metadata().ttl, std::chrono::milliseconds(5000));
  EXPECT_EQ(back->metadata().headers.at("traceparent"), metadata.headers["traceparent"]);
  EXPECT_EQ(back->metadata().headers.at("tenant"), "acme");
  EXPECT_EQ(back->json()["text"], "é & <b>");
  EXPECT_EQ(back->subject(), "events.order_placed");
}

TEST(AwsMessages, BinaryPayloadsTravelAsBase64) {
  MessageMetadata metadata;
  metadata.message_type = "blob";
  metadata.content_type = "application/octet-stream";
  const std::string bytes("\x00\x01\xff\xfe binary", 11);
  Message message(metadata, std::make_shared<const Payload>(bytes), "events.blob");
  const AwsMessage aws = to_aws(message);
  EXPECT_NE(aws.body, bytes);
  auto back = from_aws("events.blob", aws.body, aws.attributes);
  ASSERT_TRUE(back) << back.error().describe();
  EXPECT_EQ(back->payload()->bytes(), bytes);
}

TEST(AwsMessages, PlainAwsMessagesAreTakenAsTheyAre) {
  auto plain = from_aws("commands.billing.charge", "hello", {{"origin", "console"}});
  ASSERT_TRUE(plain) << plain.error().describe();
  EXPECT_EQ(plain->payload()->bytes(), "hello");
  EXPECT_EQ(plain->type(), "charge");
  EXPECT_EQ(plain->metadata().headers.at("origin"), "console");

  auto broken = from_aws("events.x", "{}",
                         {{"ce_specversion", "1.0"},
                          {"ce_id", "1"},
                          {"ce_type", "x"},
                          {"ce_source", "s"},
                          {"ce_extensions", "[1, 2]"}});
  ASSERT_FALSE(broken);
  EXPECT_TRUE(broken.error().is(errc::invalid_argument));
  EXPECT_NE(broken.error().message().find("ce_extensions"), std::string::npos);
}

}  // namespace
}  // namespace marty::messaging::aws
