// The aws_sqs backend against the SQS emulator (npm sqslite) that scripts/brokers starts
// (MARTY_SQS_ENDPOINT).
#include <cstdlib>
#include <thread>

#include <gtest/gtest.h>

#include "../../src/backends/aws/aws_query.hpp"
#include "../../src/backends/aws/aws_wire.hpp"
#include "../../src/backends/aws/sqs_queues.hpp"
#include "../support/aws_emulators.hpp"
#include "../support/aws_plain_client.hpp"
#include "../support/backend_checks.hpp"
#include "../support/recording_proxy.hpp"
#include "../support/server_process.hpp"
#include "../support/test_loop.hpp"
#include "marty/messaging.hpp"
#include "marty/messaging/aws_backend.hpp"

namespace marty::messaging::aws {
namespace {

using namespace std::chrono_literals;
using testing::TestLoop;

std::string endpoint() {
  const char* url = std::getenv("MARTY_SQS_ENDPOINT");
  return url != nullptr ? url : "";
}

AwsSqsConfig config() {
  AwsSqsConfig c = testing::emulator_sqs_config();
  c.secret_access_key = "sqs-test-secret";
  return c;
}

std::string unique(std::string_view base) {
  const std::string id = make_uuid_v7();
  return std::string(base) + "_" + id.substr(id.size() - 12);
}

TEST(AwsSqsConfigCheck, BadSettingsAreRefusedByName) {
  AwsSqsConfig wait = config();
  wait.wait_time = 30s;
  testing::expect_invalid_config(make_sqs_backend(wait), "wait_time");
  AwsSqsConfig batch = config();
  batch.max_messages = 11;
  testing::expect_invalid_config(make_sqs_backend(batch), "max_messages");
  AwsSqsConfig prefix = config();
  prefix.queue_prefix = "my queues.";
  testing::expect_invalid_config(make_sqs_backend(prefix), "queue_prefix");
  AwsSqsConfig dead = config();
  dead.dead_letter_queue_arn = "my-dlq";
  testing::expect_invalid_config(make_sqs_backend(dead), "dead_letter_queue_arn");
}

TEST(AwsSqsConnect, NoServiceIsATransientErrorWithoutTheSecret) {
  AwsSqsConfig c = config();
  c.endpoint = "http://localhost:" + std::to_string(testing::free_port());
  c.request_timeout = 1500ms;
  auto connected = testing::connect_result(make_sqs_backend(c));
  ASSERT_FALSE(connected);
  EXPECT_TRUE(connected.error().retryable()) << connected.error().describe();
  EXPECT_EQ(connected.error().describe().find("sqs-test-secret"), std::string::npos);
}

// A command to a service that never subscribed fails for its sender at once.
TEST(AwsSqsCommands, ACommandNobodyTakesIsNotFound) {
  ASSERT_FALSE(endpoint().empty()) << "MARTY_SQS_ENDPOINT is not set";
  BlockingEventBus bus;
  ASSERT_TRUE(bus.bus().register_backend(MessageBackendType::aws_sqs, make_sqs_backend(config())));
  ASSERT_TRUE(bus.start());
  auto sent = bus.send_command("charge", {{"n", 1}}, unique("nobody"));
  ASSERT_FALSE(sent);
  EXPECT_TRUE(sent.error().is(errc::not_found)) << sent.error().describe();
}

// A binary payload comes through unchanged; an acknowledged message does not come back.
TEST(AwsSqsDeliveries, BinaryPayloadsArriveUnchangedAndAcksDelete) {
  ASSERT_FALSE(endpoint().empty()) << "MARTY_SQS_ENDPOINT is not set";
  TestLoop loop;
  auto backend = make_sqs_backend(config());
  ASSERT_TRUE(loop.run(backend->connect()));
  SubscriptionSpec spec;
  spec.subject = "commands." + unique("billing") + ".charge";
  spec.group = "billing";
  spec.pattern = MessagingPattern::point_to_point;
  auto subscription = loop.run(backend->subscribe(spec));
  ASSERT_TRUE(subscription) << subscription.error().describe();
  MessageMetadata metadata;
  metadata.message_type = "charge";
  metadata.content_type = "application/octet-stream";
  const std::string bytes("\x00\xff binary \x01", 11);
  Message message(metadata, std::make_shared<const Payload>(bytes), spec.subject);
  PublishOptions options;
  options.pattern = MessagingPattern::point_to_point;
  ASSERT_TRUE(loop.run(backend->publish(message, options)));

  auto first = loop.run((*subscription)->receive(SteadyClock::now() + 10s));
  ASSERT_TRUE(first) << first.error().describe();
  EXPECT_EQ((*first)->attempt(), 1);
  EXPECT_EQ((*first)->message().payload()->bytes(), bytes);
  EXPECT_EQ((*first)->message().type(), "charge");
  ASSERT_TRUE(loop.run((*first)->ack()));
  auto none = loop.run((*subscription)->receive(SteadyClock::now() + 2s));
  EXPECT_FALSE(none) << "an acknowledged message came back";
  (*subscription)->close();
  (void)loop.run(backend->close(SteadyClock::now() + 5s));
}

// A subscriber on its own (a bus's reply inbox) has a queue of its own, gone when it closes.
TEST(AwsSqsQueues, APrivateQueueGoesWithItsSubscription) {
  ASSERT_FALSE(endpoint().empty()) << "MARTY_SQS_ENDPOINT is not set";
  TestLoop loop;
  auto backend = make_sqs_backend(config());
  ASSERT_TRUE(loop.run(backend->connect()));
  SubscriptionSpec spec;
  spec.subject = "_replies." + unique("inbox");
  auto subscription = loop.run(backend->subscribe(spec));
  ASSERT_TRUE(subscription) << subscription.error().describe();
  auto plain = testing::PlainAwsClient::sqs();
  QueryClient& sqs = plain.client();
  const std::string name = aws_name_for("", spec.subject, kQueueNameRoom, false);
  ASSERT_TRUE(loop.run(sqs.call("GetQueueUrl", {{"QueueName", name}}, 5s, 3)));
  auto dead = loop.run(sqs.call("GetQueueUrl", {{"QueueName", name + "--dlq"}}, 5s, 3));
  EXPECT_FALSE(dead) << "a private queue has no dead-letter queue to leave behind";
  (*subscription)->close();
  EXPECT_TRUE(testing::eventually(
      [&] {
        return !loop.run(sqs.call("GetQueueUrl", {{"QueueName", name}}, 5s, 3));
      },
      5s));
  (void)loop.run(backend->close(SteadyClock::now() + 5s));
}

// A queue made for group "ledger" by a backend of config `c` (subscribed, then closed), as a
// plain SQS client sees it: its name and its redrive policy ("" when it has none).
struct MadeQueue {
  std::string name;
  std::string redrive_policy;
};
MadeQueue make_group_queue(TestLoop& loop, const AwsSqsConfig& c) {
  MadeQueue made;
  auto backend = make_sqs_backend(c);
  EXPECT_TRUE(loop.run(backend->connect()));
  SubscriptionSpec spec;
  spec.subject = "commands." + unique("ledger") + ".post";
  spec.group = "ledger";
  spec.pattern = MessagingPattern::point_to_point;
  auto subscription = loop.run(backend->subscribe(spec));
  EXPECT_TRUE(subscription) << subscription.error().describe();
  made.name = aws_name_for("", spec.subject, kQueueNameRoom, false);
  auto plain = testing::PlainAwsClient::sqs();
  auto url = loop.run(plain.client().call("GetQueueUrl", {{"QueueName", made.name}}, 5s, 3));
  EXPECT_TRUE(url) << url.error().describe();
  if (url) {
    auto policy = loop.run(plain.client().call(
        "GetQueueAttributes",
        {{"QueueUrl", url->text_of("QueueUrl")}, {"AttributeName.1", "RedrivePolicy"}}, 5s, 3));
    EXPECT_TRUE(policy) << policy.error().describe();
    for (const XmlElement* a :
         policy ? policy->find_all("Attribute") : std::vector<const XmlElement*>{}) {
      if (a->text_of("Name") == "RedrivePolicy") made.redrive_policy = a->text_of("Value");
    }
  }
  if (subscription) (*subscription)->close();
  (void)loop.run(backend->close(SteadyClock::now() + 5s));
  return made;
}

// A subject named in queue_urls goes to that queue as it is (made by someone else, named as
// they chose), never to a queue of the bus's own naming.
TEST(AwsSqsQueues, AQueueNamedInTheConfigIsUsedAsItIs) {
  ASSERT_FALSE(endpoint().empty()) << "MARTY_SQS_ENDPOINT is not set";
  TestLoop loop;
  auto plain = testing::PlainAwsClient::sqs();
  QueryClient& sqs = plain.client();
  auto made = loop.run(sqs.call("CreateQueue", {{"QueueName", unique("erp-inbox")}}, 5s, 3));
  ASSERT_TRUE(made) << made.error().describe();
  const std::string url = made->text_of("QueueUrl");
  AwsSqsConfig c = config();
  const std::string subject = "commands." + unique("erp") + ".sync";
  c.queue_urls[subject] = url;
  auto backend = make_sqs_backend(c);
  ASSERT_TRUE(loop.run(backend->connect()));
  MessageMetadata metadata;
  metadata.message_type = "sync";
  metadata.message_id = make_uuid_v7();
  Message message = Message::from_json({{"order", 7}}, metadata);
  message.set_subject(subject);
  PublishOptions options;
  options.pattern = MessagingPattern::point_to_point;
  auto sent = loop.run(backend->publish(message, options));
  ASSERT_TRUE(sent) << sent.error().describe();
  auto received = loop.run(
      sqs.call("ReceiveMessage", {{"QueueUrl", url}, {"MessageAttributeName.1", "All"}}, 5s, 3));
  ASSERT_TRUE(received) << received.error().describe();
  const auto messages = received->find_all("Message");
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_NE(messages[0]->text_of("Body").find("\"order\":7"), std::string::npos);
  EXPECT_FALSE(loop.run(sqs.call(
      "GetQueueUrl", {{"QueueName", aws_name_for("", subject, kQueueNameRoom, false)}}, 5s, 3)))
      << "a queue of the bus's naming was used";
  (void)loop.run(backend->close(SteadyClock::now() + 5s));
}

// Queues can share one existing dead-letter queue (named by its ARN) instead of each making
// its own.
TEST(AwsSqsQueues, AGivenDeadLetterQueueServesTheQueuesMade) {
  ASSERT_FALSE(endpoint().empty()) << "MARTY_SQS_ENDPOINT is not set";
  TestLoop loop;
  auto plain = testing::PlainAwsClient::sqs();
  QueryClient& sqs = plain.client();
  const std::string shared = unique("shared-dlq");
  auto made = loop.run(sqs.call("CreateQueue", {{"QueueName", shared}}, 5s, 3));
  ASSERT_TRUE(made) << made.error().describe();
  auto arn_reply = loop.run(
      sqs.call("GetQueueAttributes",
               {{"QueueUrl", made->text_of("QueueUrl")}, {"AttributeName.1", "QueueArn"}}, 5s, 3));
  ASSERT_TRUE(arn_reply) << arn_reply.error().describe();
  std::string arn;
  for (const XmlElement* a : arn_reply->find_all("Attribute")) {
    if (a->text_of("Name") == "QueueArn") arn = a->text_of("Value");
  }
  ASSERT_FALSE(arn.empty());

  AwsSqsConfig c = config();
  c.dead_letter_queue_arn = arn;
  const MadeQueue queue = make_group_queue(loop, c);
  EXPECT_NE(queue.redrive_policy.find(arn), std::string::npos) << queue.redrive_policy;
  EXPECT_FALSE(loop.run(sqs.call("GetQueueUrl", {{"QueueName", queue.name + "--dlq"}}, 5s, 3)))
      << "a dead-letter queue of its own was made anyway";
}

// A private queue outlives its closed subscription while a delivery from it is still held (the
// bus drains handlers after closing): the delivery can still be acknowledged, then the queue goes.
TEST(AwsSqsQueues, APrivateQueueWaitsForItsDeliveriesToBeSettled) {
  ASSERT_FALSE(endpoint().empty()) << "MARTY_SQS_ENDPOINT is not set";
  TestLoop loop;
  auto backend = make_sqs_backend(config());
  ASSERT_TRUE(loop.run(backend->connect()));
  SubscriptionSpec spec;
  spec.subject = "_replies." + unique("inbox");
  spec.pattern = MessagingPattern::request_response;
  auto subscription = loop.run(backend->subscribe(spec));
  ASSERT_TRUE(subscription) << subscription.error().describe();
  MessageMetadata metadata;
  metadata.message_type = "reply";
  Message reply = Message::from_json({{"n", 1}}, metadata);
  reply.set_subject(spec.subject);
  PublishOptions options;
  options.pattern = MessagingPattern::point_to_point;
  ASSERT_TRUE(loop.run(backend->publish(reply, options)));
  auto delivery = loop.run((*subscription)->receive(SteadyClock::now() + 10s));
  ASSERT_TRUE(delivery) << delivery.error().describe();
  (*subscription)->close();

  auto plain = testing::PlainAwsClient::sqs();
  QueryClient& sqs = plain.client();
  const std::string name = aws_name_for("", spec.subject, kQueueNameRoom, false);
  std::this_thread::sleep_for(300ms);
  EXPECT_TRUE(loop.run(sqs.call("GetQueueUrl", {{"QueueName", name}}, 5s, 3)))
      << "the queue went while a delivery from it was held";
  auto acked = loop.run((*delivery)->ack());
  EXPECT_TRUE(acked) << acked.error().describe();
  EXPECT_TRUE(testing::eventually(
      [&] {
        return !loop.run(sqs.call("GetQueueUrl", {{"QueueName", name}}, 5s, 3));
      },
      5s))
      << "the queue stayed after its last delivery was settled";
  (void)loop.run(backend->close(SteadyClock::now() + 5s));
}

// A bus stopping closes its reply subscription and then its backend at once: the queue's
// deletion, started by the subscription, still finishes before the backend's client goes.
TEST(AwsSqsQueues, APrivateQueueGoesEvenWhenTheBackendClosesRightAfter) {
  ASSERT_FALSE(endpoint().empty()) << "MARTY_SQS_ENDPOINT is not set";
  TestLoop loop;
  auto backend = make_sqs_backend(config());
  ASSERT_TRUE(loop.run(backend->connect()));
  SubscriptionSpec spec;
  spec.subject = "_replies." + unique("inbox");
  auto subscription = loop.run(backend->subscribe(spec));
  ASSERT_TRUE(subscription) << subscription.error().describe();
  (*subscription)->close();
  ASSERT_TRUE(loop.run(backend->close(SteadyClock::now() + 5s)));
  auto plain = testing::PlainAwsClient::sqs();
  QueryClient& sqs = plain.client();
  const std::string name = aws_name_for("", spec.subject, kQueueNameRoom, false);
  EXPECT_FALSE(loop.run(sqs.call("GetQueueUrl", {{"QueueName", name}}, 5s, 3)))
      << "the private queue " << name << " was left behind";
}

// A subscription through a recording proxy, with one command waiting in its queue.
struct RecordedQueue {
  testing::RecordingProxy proxy{std::stoi(endpoint().substr(endpoint().rfind(':') + 1))};
  TestLoop loop;
  std::shared_ptr<Backend> backend;
  std::shared_ptr<Subscription> subscription;

  RecordedQueue() {
    AwsSqsConfig c = config();
    c.endpoint = "http://localhost:" + std::to_string(proxy.port());
    backend = make_sqs_backend(c);
    EXPECT_TRUE(loop.run(backend->connect()));
    SubscriptionSpec spec;
    spec.subject = "commands." + unique("billing") + ".charge";
    spec.group = "billing";
    spec.pattern = MessagingPattern::point_to_point;
    auto subscribed = loop.run(backend->subscribe(spec));
    EXPECT_TRUE(subscribed) << subscribed.error().describe();
    if (subscribed) subscription = *subscribed;
    MessageMetadata metadata;
    metadata.message_type = "charge";
    Message message = Message::from_json({{"n", 1}}, metadata);
    message.set_subject(spec.subject);
    PublishOptions options;
    options.pattern = MessagingPattern::point_to_point;
    EXPECT_TRUE(loop.run(backend->publish(message, options)));
  }
  std::vector<std::string> visibility_changes(const std::string& timeout) const {
    std::vector<std::string> receipts;
    for (auto& request : proxy.requests_of("ChangeMessageVisibility")) {
      if (request["VisibilityTimeout"] == timeout) receipts.push_back(request["ReceiptHandle"]);
    }
    return receipts;
  }
};

// A handler running past the visibility timeout keeps its message: the subscription extends
// the message's visibility while it is held, so no other consumer gets it meanwhile.
TEST(AwsSqsVisibility, AMessageHeldPastItsVisibilityTimeoutIsKeptInvisible) {
  ASSERT_FALSE(endpoint().empty()) << "MARTY_SQS_ENDPOINT is not set";
  RecordedQueue queue;
  ASSERT_TRUE(queue.subscription);
  auto delivery = queue.loop.run(queue.subscription->receive(SteadyClock::now() + 10s));
  ASSERT_TRUE(delivery) << delivery.error().describe();
  EXPECT_TRUE(queue.visibility_changes("2").empty());
  std::this_thread::sleep_for(2500ms);  // longer than the 2 s visibility timeout
  EXPECT_FALSE(queue.visibility_changes("2").empty())
      << "the held message's visibility was not extended";
  ASSERT_TRUE(queue.loop.run((*delivery)->ack()));
  const auto extended = queue.visibility_changes("2").size();
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(queue.visibility_changes("2").size(), extended) << "a settled message is still kept";
  queue.subscription->close();
  (void)queue.loop.run(queue.backend->close(SteadyClock::now() + 5s));
}

// A nack lets the message go with its delay as the visibility timeout (SQS counts whole
// seconds: rounded up), so that it comes back after the delay, to any consumer of the queue.
TEST(AwsSqsVisibility, ANackMakesTheMessageVisibleAgainAfterItsDelay) {
  ASSERT_FALSE(endpoint().empty()) << "MARTY_SQS_ENDPOINT is not set";
  RecordedQueue queue;
  ASSERT_TRUE(queue.subscription);
  auto delivery = queue.loop.run(queue.subscription->receive(SteadyClock::now() + 10s));
  ASSERT_TRUE(delivery) << delivery.error().describe();
  ASSERT_TRUE(queue.loop.run((*delivery)->nack(3'500ms)));
  EXPECT_TRUE(testing::eventually([&] { return queue.visibility_changes("4").size() == 1; }))
      << "no ChangeMessageVisibility with VisibilityTimeout=4 for a 3.5 s nack";
  EXPECT_TRUE(queue.proxy.requests_of("DeleteMessage").empty()) << "a nacked message was deleted";
  queue.subscription->close();
  (void)queue.loop.run(queue.backend->close(SteadyClock::now() + 5s));
}

// A queue made for a group gets a dead-letter queue of its own ("<queue>--dlq") and a redrive
// policy with max_receive_count, so SQS moves a message there after that many receives.
TEST(AwsSqsQueues, AGroupQueueIsMadeWithItsDeadLetterQueueAndRedrivePolicy) {
  ASSERT_FALSE(endpoint().empty()) << "MARTY_SQS_ENDPOINT is not set";
  TestLoop loop;
  AwsSqsConfig c = config();
  c.max_receive_count = 3;
  const MadeQueue made = make_group_queue(loop, c);
  auto plain = testing::PlainAwsClient::sqs();
  auto dead =
      loop.run(plain.client().call("GetQueueUrl", {{"QueueName", made.name + "--dlq"}}, 5s, 3));
  ASSERT_TRUE(dead) << "no dead-letter queue " << made.name << "--dlq: " << dead.error().describe();
  auto parsed = Json::parse(made.redrive_policy, nullptr, false);
  ASSERT_FALSE(parsed.is_discarded()) << made.redrive_policy;
  EXPECT_NE(parsed.value("deadLetterTargetArn", "").find(made.name + "--dlq"), std::string::npos)
      << made.redrive_policy;
  const Json count = parsed.value("maxReceiveCount", Json());
  EXPECT_EQ(count.is_string() ? count.get<std::string>() : count.dump(), "3")
      << made.redrive_policy;
}

// A backend that closes lets go of what its subscriptions hold unsettled at once (as a broker
// does when a consumer's connection drops), instead of leaving it to the visibility timeout.
TEST(AwsSqsClose, UnsettledDeliveriesAreReleasedWhenTheBackendCloses) {
  ASSERT_FALSE(endpoint().empty()) << "MARTY_SQS_ENDPOINT is not set";
  RecordedQueue queue;
  ASSERT_TRUE(queue.subscription);
  auto delivery = queue.loop.run(queue.subscription->receive(SteadyClock::now() + 10s));
  ASSERT_TRUE(delivery) << delivery.error().describe();
  EXPECT_TRUE(queue.visibility_changes("0").empty());
  ASSERT_TRUE(queue.loop.run(queue.backend->close(SteadyClock::now() + 5s)));
  EXPECT_EQ(queue.visibility_changes("0").size(), 1u)
      << "the unsettled delivery was not released when the backend closed";
}

// A message that claims to be a CloudEvent but is malformed goes to the subject's dead-letter
// queue with the reason; the next message is handled.
TEST(AwsSqsDeadLetters, AnUndecodableMessageIsDeadLetteredAndTheConsumerGoesOn) {
  ASSERT_FALSE(endpoint().empty()) << "MARTY_SQS_ENDPOINT is not set";
  const std::string service = unique("ledger");
  testing::NumbersSeen handled;
  BlockingEventBus bus;
  ASSERT_TRUE(bus.bus().register_backend(MessageBackendType::aws_sqs, make_sqs_backend(config())));
  ASSERT_TRUE(bus.start());
  ASSERT_TRUE(bus.handle_commands({"post"}, handled.handler(), service));

  // A plain SQS client writes the bad message.
  TestLoop loop;
  auto plain = testing::PlainAwsClient::sqs();
  QueryClient& sqs = plain.client();
  const std::string subject = subject::for_command(service, "post");
  auto url = loop.run(sqs.call(
      "GetQueueUrl", {{"QueueName", aws_name_for("", subject, kQueueNameRoom, false)}}, 5s, 3));
  ASSERT_TRUE(url) << url.error().describe();
  auto sent = loop.run(sqs.call("SendMessage",
                                {{"QueueUrl", url->text_of("QueueUrl")},
                                 {"MessageBody", "{\"n\": -1}"},
                                 {"MessageAttribute.1.Name", "ce_specversion"},
                                 {"MessageAttribute.1.Value.DataType", "String"},
                                 {"MessageAttribute.1.Value.StringValue", "1.0"},
                                 {"MessageAttribute.2.Name", "ce_time"},
                                 {"MessageAttribute.2.Value.DataType", "String"},
                                 {"MessageAttribute.2.Value.StringValue", "half past nine"},
                                 {"MessageAttribute.3.Name", "ce_id"},
                                 {"MessageAttribute.3.Value.DataType", "String"},
                                 {"MessageAttribute.3.Value.StringValue", "bad-1"},
                                 {"MessageAttribute.4.Name", "ce_type"},
                                 {"MessageAttribute.4.Value.DataType", "String"},
                                 {"MessageAttribute.4.Value.StringValue", "post"},
                                 {"MessageAttribute.5.Name", "ce_source"},
                                 {"MessageAttribute.5.Value.DataType", "String"},
                                 {"MessageAttribute.5.Value.StringValue", "elsewhere"}},
                                5s, 3));
  ASSERT_TRUE(sent) << sent.error().describe();
  ASSERT_TRUE(bus.send_command("post", {{"n", 1}}, service));
  ASSERT_TRUE(testing::eventually([&] { return handled.distinct() == 1; }, 10s));

  const std::string dead_queue =
      aws_name_for("", dead_letter_subject(subject), kQueueNameRoom, false);
  std::string body, reason;
  ASSERT_TRUE(testing::eventually(
      [&] {
        auto dead_url = loop.run(sqs.call("GetQueueUrl", {{"QueueName", dead_queue}}, 5s, 3));
        if (!dead_url) return false;
        auto got = loop.run(sqs.call(
            "ReceiveMessage",
            {{"QueueUrl", dead_url->text_of("QueueUrl")}, {"MessageAttributeName.1", "All"}}, 5s,
            3));
        if (!got || got->find("Message") == nullptr) return false;
        const XmlElement* found = got->find("Message");
        body = found->text_of("Body");
        Attributes attributes;
        for (const XmlElement* a : found->find_all("MessageAttribute")) {
          attributes.emplace_back(a->text_of("Name"), a->text_of("StringValue"));
        }
        auto dead = from_aws(dead_letter_subject(subject), body, attributes);
        if (dead) reason = dead->metadata().headers.at(std::string(headers::kDeadLetterReason));
        return true;
      },
      10s));
  EXPECT_EQ(body, "{\"n\": -1}");
  EXPECT_NE(reason.find("ce_time"), std::string::npos) << "reason: " << reason;
  EXPECT_EQ(handled.numbers(), std::set<int>{1});
}

}  // namespace
}  // namespace marty::messaging::aws
