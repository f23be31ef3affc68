// The SQS backend with the AWS SDK for JavaScript on the other side (tests/interop/sqs_peer.mjs),
// against the SQS emulator of scripts/brokers: a foreign service reads our commands, we read a
// foreign producer's, our responders answer a foreign query written with the extension names
// the docs give (it was dropped: the bus read only `ce_`-prefixed keys), and a query that names
// no reply address is dead-lettered, never dropped.
#include <gtest/gtest.h>

#include "interop_support.hpp"
#include "marty/messaging/aws_backend.hpp"

namespace marty::messaging {
namespace {

using namespace std::chrono_literals;
using testing::NodePeer;
using testing::unique_name;

testing::InteropTarget sqs_target() {
  testing::InteropTarget target;
  target.script = "sqs_peer.mjs";
  target.address = testing::env_or_empty("MARTY_SQS_ENDPOINT");
  target.type = MessageBackendType::aws_sqs;
  target.commands_only = true;
  target.make_backend = [endpoint = target.address] {
    aws::AwsSqsConfig config;
    config.endpoint = endpoint;
    config.access_key_id = "test";
    config.secret_access_key = "test";
    config.wait_time = 1s;
    config.max_messages = 1;  // the emulator gives one receipt handle to a whole batch
    return aws::make_sqs_backend(config);
  };
  return target;
}

TEST(SqsInterop, TheAwsSdkReadsOurCommands) {
  REQUIRE_INTEROP("MARTY_SQS_ENDPOINT");
  const auto target = sqs_target();
  const std::string service = unique_name("billing");
  auto bus = target.make_bus();
  NodePeer peer(target.script, {"listen", target.address, "commands." + service + ".charge", "1"});
  ASSERT_TRUE(peer.wait_for("ready")) << peer.transcript();
  MessageMetadata sent;
  sent.message_id = make_uuid_v7();
  sent.correlation_id = "order-7";
  auto sent_command = bus->send_command("charge", {{"cents", 700}}, service, sent);
  ASSERT_TRUE(sent_command) << sent_command.error().describe();
  auto got = peer.wait_for("received");
  ASSERT_TRUE(got) << peer.transcript();
  const auto& event = (*got)["cloudevent"];
  EXPECT_EQ(event["id"], sent.message_id);
  EXPECT_EQ(event["type"], "charge");
  EXPECT_EQ(event["correlationid"], "order-7");
  EXPECT_EQ(event["data"], (Json{{"cents", 700}}));
}

TEST(SqsInterop, WeReadAwsSdkCommands) {
  REQUIRE_INTEROP("MARTY_SQS_ENDPOINT");
  const auto target = sqs_target();
  const std::string service = unique_name("billing");
  testing::Received received;
  auto bus = target.make_bus();
  ASSERT_TRUE(bus->handle_commands({"refund"}, received.handler(), service));
  NodePeer peer(target.script, {"publish", target.address, "commands." + service + ".refund",
                                "refund", R"({"cents":300})"});
  auto published = peer.wait_for("published");
  ASSERT_TRUE(published) << peer.transcript();
  ASSERT_TRUE(received.wait_for(1));
  const Message got = received.messages().front();
  EXPECT_EQ(got.id(), (*published)["id"]);
  EXPECT_EQ(got.type(), "refund");
  EXPECT_EQ(got.metadata().correlation_id, "corr-refund");
  EXPECT_EQ(got.json(), (Json{{"cents", 300}}));
}

TEST(SqsInterop, OurRespondersAnswerTheAwsSdkWritingPlainExtensionNames) {
  REQUIRE_INTEROP("MARTY_SQS_ENDPOINT");
  testing::check_we_answer_their_queries(sqs_target());
}

TEST(SqsInterop, AQueryWithoutAReplyAddressIsDeadLetteredNotDropped) {
  REQUIRE_INTEROP("MARTY_SQS_ENDPOINT");
  const auto target = sqs_target();
  const std::string service = unique_name("pricing");
  const std::string subject = "queries." + service + ".price";
  auto bus = target.make_bus();
  auto handler = sync_query_handler([](const Message&) -> Result<Json> { return Json{{"p", 1}}; });
  ASSERT_TRUE(bus->handle_queries({"price"}, handler, service));
  NodePeer asker(target.script,
                 {"ask-without-reply", target.address, subject, "price", R"({"sku":4})"});
  auto asked = asker.wait_for("published");
  ASSERT_TRUE(asked) << asker.transcript();
  std::vector<DeadLetter> listed;
  ASSERT_TRUE(testing::eventually(
      [&] {
        auto dead = bus->list_dead_letters(DeadLetterFilter(subject));
        if (dead) listed = std::move(*dead);
        return listed.size() == 1;
      },
      20s));
  EXPECT_EQ(listed[0].message.id(), (*asked)["id"]);
  EXPECT_NE(listed[0].reason.find("reply_to"), std::string::npos) << listed[0].reason;
}

TEST(SqsInterop, WeReadThePythonOriginalsEnvelope) {
  REQUIRE_INTEROP("MARTY_SQS_ENDPOINT");
  testing::check_we_read_python_envelopes(sqs_target());
}

TEST(SqsInterop, TheAwsSdkReadsOurPythonEnvelopeRoute) {
  REQUIRE_INTEROP("MARTY_SQS_ENDPOINT");
  testing::check_they_read_our_python_envelopes(sqs_target());
}

}  // namespace
}  // namespace marty::messaging
