// The aws_sns backend against the SNS and SQS emulators (npm serverless-offline-sns and sqslite)
// that scripts/brokers starts (MARTY_SNS_ENDPOINT, MARTY_SQS_ENDPOINT); what it writes is checked
// on the wire (through a recording proxy) and read back with the AWS SDK for JavaScript.
#include <cstdio>
#include <cstdlib>
#include <mutex>
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

std::string env(const char* name) {
  return testing::env_or_empty(name);
}

AwsSnsConfig config() {
  AwsSnsConfig c = testing::emulator_sns_config();
  c.secret_access_key = "sns-test-secret";
  return c;
}

std::string unique(std::string_view base) {
  const std::string id = make_uuid_v7();
  return std::string(base) + "_" + id.substr(id.size() - 12);
}

int port_of(const std::string& url) {
  return std::stoi(url.substr(url.rfind(':') + 1));
}

// A plain SQS client, as another program would use it.
struct PlainSqs {
  testing::PlainAwsClient plain = testing::PlainAwsClient::sqs();
  TestLoop loop;

  Result<std::string> url_of(const std::string& queue) {
    auto reply = loop.run(plain.client().call("GetQueueUrl", {{"QueueName", queue}}, 5s, 3));
    if (!reply) return std::move(reply).error();
    return reply->text_of("QueueUrl");
  }
};

// The queue a subscriber group of an event reads.
std::string event_queue(const std::string& subject, const std::string& group, bool fifo) {
  return aws_name_for("", subject + "@" + group, kQueueNameRoom, fifo);
}

// Subscribes `group` to `subject` and closes the subscription: the group's queue stays
// subscribed and keeps what arrives, for a plain reader.
void leave_group_queue(TestLoop& loop, Backend& backend, const std::string& subject,
                       const std::string& group) {
  SubscriptionSpec spec;
  spec.subject = subject;
  spec.group = group;
  spec.pattern = MessagingPattern::pub_sub;
  auto subscription = loop.run(backend.subscribe(spec));
  ASSERT_TRUE(subscription) << subscription.error().describe();
  (*subscription)->close();
}

// What the AWS SDK for JavaScript reads from a queue: [{body, attributes, system}].
Json read_with_aws_sdk(const std::string& queue_url, int count) {
  const std::string command = "node " + std::string(MARTY_READ_QUEUE_SCRIPT) + " '" +
                              env("MARTY_SQS_ENDPOINT") + "' '" + queue_url + "' " +
                              std::to_string(count) + " 2>&1";
  std::string output;
  if (FILE* pipe = ::popen(command.c_str(), "r")) {
    char buffer[4096];
    while (std::size_t n = std::fread(buffer, 1, sizeof(buffer), pipe)) output.append(buffer, n);
    ::pclose(pipe);
  }
  auto parsed = Json::parse(output, nullptr, false);
  EXPECT_FALSE(parsed.is_discarded()) << "the AWS SDK script said: " << output;
  return parsed.is_discarded() ? Json::array() : parsed;
}

TEST(AwsSnsConfigCheck, BadSettingsAreRefusedByName) {
  AwsSnsConfig prefix = config();
  prefix.topic_prefix = "my topics.";
  testing::expect_invalid_config(make_sns_backend(prefix), "topic_prefix");
  AwsSnsConfig dedup = config();
  dedup.content_based_deduplication = true;
  testing::expect_invalid_config(make_sns_backend(dedup), "content_based_deduplication");
  AwsSnsConfig policy = config();
  policy.delivery_policy = "{\"healthyRetryPolicy\":";
  testing::expect_invalid_config(make_sns_backend(policy), "delivery_policy");
  AwsSnsConfig arns = config();
  arns.topic_arns["events.placed"] = "placed";
  testing::expect_invalid_config(make_sns_backend(arns), "topic_arns");
  AwsSnsConfig sqs = config();
  sqs.sqs.max_messages = 0;
  testing::expect_invalid_config(make_sns_backend(sqs), "max_messages");
}

TEST(AwsSnsConnect, NoServiceIsATransientErrorWithoutTheSecret) {
  AwsSnsConfig c = config();
  c.endpoint = "http://127.0.0.1:" + std::to_string(testing::free_port());
  c.sqs.request_timeout = 1500ms;
  auto connected = testing::connect_result(make_sns_backend(c));
  ASSERT_FALSE(connected);
  EXPECT_TRUE(connected.error().retryable()) << connected.error().describe();
  EXPECT_NE(connected.error().describe().find("SNS"), std::string::npos)
      << connected.error().describe();
  EXPECT_EQ(connected.error().describe().find("sns-test-secret"), std::string::npos);
}

// FIFO topics on the wire: the topic's name and attributes, MessageGroupId from the partition
// key (the subject without one), MessageDeduplicationId from the message id; the queue is
// subscribed with raw message delivery; and the events arrive.
TEST(AwsSnsWire, FifoTopicsCarryGroupAndDeduplicationIds) {
  ASSERT_FALSE(env("MARTY_SNS_ENDPOINT").empty()) << "MARTY_SNS_ENDPOINT is not set";
  testing::RecordingProxy proxy(port_of(env("MARTY_SNS_ENDPOINT")));
  AwsSnsConfig c = config();
  c.endpoint = "http://127.0.0.1:" + std::to_string(proxy.port());
  c.fifo_topics = true;
  c.kms_master_key_id = "alias/marty-test";
  c.delivery_policy = R"({"healthyRetryPolicy":{"numRetries":5}})";
  const std::string type = unique("order_placed");
  std::mutex mutex;
  std::vector<Message> got;
  BlockingEventBus bus;
  ASSERT_TRUE(bus.bus().register_backend(MessageBackendType::aws_sns, make_sns_backend(c)));
  ASSERT_TRUE(bus.start());
  ASSERT_TRUE(bus.subscribe_to_events({type}, sync_handler([&](const Message& m) -> Result<void> {
                                        std::lock_guard lock(mutex);
                                        got.push_back(m);
                                        return ok();
                                      }),
                                      "shipping"));
  MessageMetadata keyed;
  keyed.partition_key = "order-42";
  ASSERT_TRUE(bus.publish_event(type, {{"n", 1}}, keyed));
  ASSERT_TRUE(bus.publish_event(type, {{"n", 2}}));
  ASSERT_TRUE(testing::eventually(
      [&] {
        std::lock_guard lock(mutex);
        return got.size() == 2;
      },
      15s));

  const std::string subject = subject::for_event(type);
  auto created = proxy.requests_of("CreateTopic");
  ASSERT_EQ(created.size(), 1u) << "one topic, made once";
  EXPECT_EQ(created[0]["Name"], "events-" + type + ".fifo");
  std::map<std::string, std::string> attributes;
  for (int i = 1; created[0].count("Attributes.entry." + std::to_string(i) + ".key") != 0; ++i) {
    const std::string entry = "Attributes.entry." + std::to_string(i);
    attributes[created[0][entry + ".key"]] = created[0][entry + ".value"];
  }
  EXPECT_EQ(attributes["FifoTopic"], "true");
  EXPECT_EQ(attributes["KmsMasterKeyId"], "alias/marty-test");
  EXPECT_EQ(attributes["DeliveryPolicy"], c.delivery_policy);
  EXPECT_EQ(attributes.count("ContentBasedDeduplication"), 0u);

  auto subscribed = proxy.requests_of("Subscribe");
  ASSERT_EQ(subscribed.size(), 1u);
  EXPECT_EQ(subscribed[0]["Protocol"], "sqs");
  EXPECT_EQ(subscribed[0]["Attributes.entry.1.key"], "RawMessageDelivery");
  EXPECT_EQ(subscribed[0]["Attributes.entry.1.value"], "true");
  EXPECT_NE(subscribed[0]["Endpoint"].find(event_queue(subject, "shipping", true)),
            std::string::npos)
      << subscribed[0]["Endpoint"];

  auto published = proxy.requests_of("Publish");
  ASSERT_EQ(published.size(), 2u);
  std::lock_guard lock(mutex);
  for (const auto& request : published) {
    const Message* same = nullptr;
    for (const auto& m : got) {
      if (request.at("MessageDeduplicationId") == m.id()) same = &m;
    }
    ASSERT_NE(same, nullptr) << "MessageDeduplicationId " << request.at("MessageDeduplicationId")
                             << " is no delivered message's id";
    EXPECT_EQ(request.at("MessageGroupId"),
              same->json()["n"] == 1 ? std::string("order-42") : subject);
    EXPECT_EQ(request.at("TopicArn").substr(request.at("TopicArn").rfind(':') + 1),
              "events-" + type + ".fifo");
  }
}

// A subject named in topic_arns is published to that topic as it is: the backend never
// creates a topic for it.
TEST(AwsSnsWire, ATopicNamedInTheConfigIsUsedAsItIs) {
  ASSERT_FALSE(env("MARTY_SNS_ENDPOINT").empty()) << "MARTY_SNS_ENDPOINT is not set";
  TestLoop loop;
  auto plain = testing::PlainAwsClient::sns();
  auto made = loop.run(plain.client().call("CreateTopic", {{"Name", unique("erp-events")}}, 5s, 3));
  ASSERT_TRUE(made) << made.error().describe();
  const std::string arn = made->text_of("TopicArn");
  ASSERT_FALSE(arn.empty());
  testing::RecordingProxy proxy(port_of(env("MARTY_SNS_ENDPOINT")));
  AwsSnsConfig c = config();
  c.endpoint = "http://127.0.0.1:" + std::to_string(proxy.port());
  const std::string subject = subject::for_event(unique("erp_synced"));
  c.topic_arns[subject] = arn;
  auto backend = make_sns_backend(c);
  ASSERT_TRUE(loop.run(backend->connect()));
  MessageMetadata metadata;
  metadata.message_type = "erp_synced";
  metadata.message_id = make_uuid_v7();
  Message message = Message::from_json({{"n", 1}}, metadata);
  message.set_subject(subject);
  PublishOptions options;
  options.pattern = MessagingPattern::pub_sub;
  auto published = loop.run(backend->publish(message, options));
  ASSERT_TRUE(published) << published.error().describe();
  auto publishes = proxy.requests_of("Publish");
  ASSERT_EQ(publishes.size(), 1u);
  EXPECT_EQ(publishes[0]["TopicArn"], arn);
  EXPECT_TRUE(proxy.requests_of("CreateTopic").empty()) << "a topic was made for a configured ARN";
  (void)loop.run(backend->close(SteadyClock::now() + 5s));
}

// With content-based de-duplication SNS hashes the body: no MessageDeduplicationId is sent.
// A partition key SNS cannot take as a group id becomes a stable hash of it.
TEST(AwsSnsWire, ContentBasedDeduplicationAndUnusableKeys) {
  ASSERT_FALSE(env("MARTY_SNS_ENDPOINT").empty()) << "MARTY_SNS_ENDPOINT is not set";
  testing::RecordingProxy proxy(port_of(env("MARTY_SNS_ENDPOINT")));
  AwsSnsConfig c = config();
  c.endpoint = "http://127.0.0.1:" + std::to_string(proxy.port());
  c.fifo_topics = true;
  c.content_based_deduplication = true;
  BlockingEventBus bus;
  ASSERT_TRUE(bus.bus().register_backend(MessageBackendType::aws_sns, make_sns_backend(c)));
  ASSERT_TRUE(bus.start());
  const std::string type = unique("note");
  MessageMetadata odd;
  odd.partition_key = "kunde Müller";  // a space and a non-ASCII letter
  ASSERT_TRUE(bus.publish_event(type, {{"n", 1}}, odd));
  ASSERT_TRUE(bus.publish_event(type, {{"n", 2}}, odd));
  auto published = proxy.requests_of("Publish");
  ASSERT_EQ(published.size(), 2u);
  EXPECT_EQ(published[0].count("MessageDeduplicationId"), 0u);
  const std::string group = published[0]["MessageGroupId"];
  EXPECT_EQ(group, published[1]["MessageGroupId"]) << "one key, one message group";
  EXPECT_LE(group.size(), 128u);
  for (char ch : group) {
    EXPECT_TRUE(ch > ' ' && ch < 127) << "'" << group << "' has a character SNS refuses";
  }
  auto created = proxy.requests_of("CreateTopic");
  ASSERT_EQ(created.size(), 1u);
  EXPECT_EQ(created[0]["Attributes.entry.2.key"], "ContentBasedDeduplication");
}

// On a FIFO topic, what AWS's own SDK reads from a group's queue is our message, and carries
// the message group (the partition key) and the de-duplication id (the message id) the backend
// published with, where the emulator passes them on (it does not: then said as a skip).
TEST(AwsSnsInterop, TheAwsSdkReadsTheFifoGroupAndDeduplicationId) {
  ASSERT_FALSE(env("MARTY_AWS_EMULATORS_DIR").empty()) << "MARTY_AWS_EMULATORS_DIR is not set";
  TestLoop loop;
  AwsSnsConfig c = config();
  c.fifo_topics = true;
  auto backend = make_sns_backend(c);
  ASSERT_TRUE(loop.run(backend->connect()));
  const std::string subject = subject::for_event(unique("shipment_booked"));
  leave_group_queue(loop, *backend, subject, "logistics");
  MessageMetadata metadata;
  metadata.message_id = make_uuid_v7();
  metadata.message_type = "shipment_booked";
  metadata.partition_key = "order-42";
  Message message = Message::from_json({{"n", 1}}, metadata);
  message.set_subject(subject);
  PublishOptions options;
  options.pattern = MessagingPattern::pub_sub;
  ASSERT_TRUE(loop.run(backend->publish(message, options)));

  PlainSqs sqs;
  auto url = sqs.url_of(event_queue(subject, "logistics", true));
  ASSERT_TRUE(url) << url.error().describe();
  const Json read = read_with_aws_sdk(*url, 1);
  ASSERT_EQ(read.size(), 1u) << read.dump();
  EXPECT_EQ(read[0]["attributes"].value("ce_id", ""), message.id());
  EXPECT_NE(read[0]["attributes"].value("ce_extensions", "").find("order-42"), std::string::npos)
      << read.dump();
  (void)loop.run(backend->close(SteadyClock::now() + 5s));
  const Json system = read[0].value("system", Json::object());
  if (!system.contains("MessageGroupId")) {
    // What was sent is checked on the wire (FifoTopicsCarryGroupAndDeduplicationIds).
    GTEST_SKIP() << "the SNS emulator does not pass MessageGroupId and MessageDeduplicationId "
                    "on to SQS, so the SDK cannot read them here: "
                 << system.dump();
  }
  EXPECT_EQ(system.value("MessageGroupId", ""), "order-42") << read.dump();
  EXPECT_EQ(system.value("MessageDeduplicationId", ""), message.id()) << read.dump();
}

// FIFO order survives a failure: when the first event of a group fails (and waits for its
// retry), the group's later events this consumer already holds are not handed out before it;
// they go back to the queue, where SQS keeps them behind it.
TEST(AwsSnsFifo, ALaterEventOfAGroupNeverOvertakesOneThatFailed) {
  ASSERT_FALSE(env("MARTY_SNS_ENDPOINT").empty()) << "MARTY_SNS_ENDPOINT is not set";
  AwsSnsConfig c = config();
  c.fifo_topics = true;
  // Both events in one ReceiveMessage (the emulator then gives them one receipt handle, which
  // only matters for deletes, and nothing is deleted here).
  c.sqs.max_messages = 10;
  const std::string type = unique("seat_booked");
  std::mutex mutex;
  std::vector<int> seen;
  auto first_fails = sync_handler([&](const Message& m) -> Result<void> {
    std::lock_guard lock(mutex);
    seen.push_back(m.json()["n"].get<int>());
    if (m.json()["n"] == 1) return Error(errc::unavailable, "seat map locked");
    return ok();
  });
  {  // The group's queue made and subscribed, then left: the events wait in it.
    BlockingEventBus setup;
    ASSERT_TRUE(setup.bus().register_backend(MessageBackendType::aws_sns, make_sns_backend(c)));
    ASSERT_TRUE(setup.start());
    ASSERT_TRUE(setup.subscribe_to_events({type}, first_fails, "booking"));
    ASSERT_TRUE(setup.stop());
  }
  BlockingEventBus bus;
  ASSERT_TRUE(bus.bus().register_backend(MessageBackendType::aws_sns, make_sns_backend(c)));
  ASSERT_TRUE(bus.start());
  MessageMetadata flight;
  flight.partition_key = "flight-7";
  ASSERT_TRUE(bus.publish_event(type, {{"n", 1}}, flight));
  ASSERT_TRUE(bus.publish_event(type, {{"n", 2}}, flight));
  PlainSqs sqs;
  auto url = sqs.url_of(event_queue(subject::for_event(type), "booking", true));
  ASSERT_TRUE(url) << url.error().describe();
  std::this_thread::sleep_for(500ms);  // the emulator delivers to the queue asynchronously
  ASSERT_TRUE(bus.subscribe_to_events({type}, first_fails, "booking"));
  ASSERT_TRUE(testing::eventually(
      [&] {
        std::lock_guard lock(mutex);
        return !seen.empty();
      },
      10s));
  // The retry of event 1 waits for its backoff (and the emulator never makes it visible again:
  // docs/aws-backends.md); event 2 must not be handled meanwhile.
  std::this_thread::sleep_for(1500ms);
  std::lock_guard lock(mutex);
  EXPECT_EQ(seen, std::vector<int>{1}) << "event 2 overtook event 1 of the same group";
}

// What the backend publishes is what AWS's own SDK reads: CloudEvents attributes within AWS's
// ten, JSON bodies as they are, binary bodies in base64 (said so by an attribute).
TEST(AwsSnsInterop, TheAwsSdkReadsWhatWePublish) {
  ASSERT_FALSE(env("MARTY_AWS_EMULATORS_DIR").empty()) << "MARTY_AWS_EMULATORS_DIR is not set";
  TestLoop loop;
  auto backend = make_sns_backend(config());
  ASSERT_TRUE(loop.run(backend->connect()));
  const std::string subject = subject::for_event(unique("invoice_issued"));
  leave_group_queue(loop, *backend, subject, "accounting");

  MessageMetadata metadata;
  metadata.message_id = make_uuid_v7();
  metadata.message_type = "invoice_issued";
  metadata.source = "billing";
  metadata.partition_key = "customer-7";
  metadata.headers["tenant"] = "acme";
  Message json_message = Message::from_json({{"amount", 12.5}, {"text", "ü"}}, metadata);
  json_message.set_subject(subject);
  MessageMetadata binary_metadata;
  binary_metadata.message_id = make_uuid_v7();
  binary_metadata.message_type = "invoice_issued";
  binary_metadata.content_type = "application/pdf";
  const std::string bytes("%PDF\x00\x01\xff", 7);
  Message binary(binary_metadata, std::make_shared<const Payload>(bytes), subject);
  PublishOptions options;
  options.pattern = MessagingPattern::pub_sub;
  ASSERT_TRUE(loop.run(backend->publish(json_message, options)));
  ASSERT_TRUE(loop.run(backend->publish(binary, options)));

  PlainSqs sqs;
  auto url = sqs.url_of(event_queue(subject, "accounting", false));
  ASSERT_TRUE(url) << url.error().describe();
  const Json read = read_with_aws_sdk(*url, 2);
  ASSERT_EQ(read.size(), 2u) << read.dump();
  for (const Json& m : read) {
    const Json a = m.value("attributes", Json::object());
    EXPECT_LE(a.size(), 10u) << "AWS takes at most 10 message attributes";
    EXPECT_EQ(a.value("ce_specversion", ""), "1.0");
    EXPECT_EQ(a.value("ce_type", ""), "invoice_issued");
    if (a.value("ce_id", "") == json_message.id()) {
      EXPECT_EQ(Json::parse(m["body"].get<std::string>()), json_message.json());
      EXPECT_EQ(a.value("ce_source", ""), "billing");
      EXPECT_EQ(a.value("content-type", ""), "application/json");
      const Json extensions = Json::parse(a.value("ce_extensions", "{}"));
      // Under their CloudEvents names, as the docs say (once `ce_partitionkey`).
      EXPECT_EQ(extensions.value("partitionkey", ""), "customer-7") << extensions.dump();
      EXPECT_EQ(extensions.value("tenant", ""), "acme") << extensions.dump();
      EXPECT_EQ(extensions.dump().find("acme") != std::string::npos, true) << extensions.dump();
    } else {
      EXPECT_EQ(a.value("ce_id", ""), binary.id());
      EXPECT_EQ(a.value("content-type", ""), "application/pdf");
      EXPECT_EQ(a.value("marty-body-encoding", ""), "base64");
      EXPECT_EQ(m.value("body", ""), "JVBERgAB/w==");
    }
  }
  (void)loop.run(backend->close(SteadyClock::now() + 5s));
}

// A subscriber without a group has a queue of its own: when it closes, its SNS subscription
// ends first and then its queue goes.
TEST(AwsSnsQueues, ALoneSubscribersQueueAndSubscriptionGoWithIt) {
  ASSERT_FALSE(env("MARTY_SNS_ENDPOINT").empty()) << "MARTY_SNS_ENDPOINT is not set";
  testing::RecordingProxy proxy(port_of(env("MARTY_SNS_ENDPOINT")));
  AwsSnsConfig c = config();
  c.endpoint = "http://127.0.0.1:" + std::to_string(proxy.port());
  TestLoop loop;
  auto backend = make_sns_backend(c);
  ASSERT_TRUE(loop.run(backend->connect()));
  SubscriptionSpec spec;
  spec.subject = subject::for_event(unique("price_changed"));
  spec.pattern = MessagingPattern::broadcast;
  auto subscription = loop.run(backend->subscribe(spec));
  ASSERT_TRUE(subscription) << subscription.error().describe();
  auto subscribed = proxy.requests_of("Subscribe");
  ASSERT_EQ(subscribed.size(), 1u);
  const std::string queue_url = subscribed[0]["Endpoint"];
  PublishOptions options;
  options.pattern = MessagingPattern::broadcast;
  MessageMetadata metadata;
  metadata.message_type = "price_changed";
  Message event = Message::from_json({{"n", 1}}, metadata);
  event.set_subject(spec.subject);
  ASSERT_TRUE(loop.run(backend->publish(event, options)));
  auto first = loop.run((*subscription)->receive(SteadyClock::now() + 10s));
  ASSERT_TRUE(first) << first.error().describe();
  ASSERT_TRUE(loop.run((*first)->ack()));
  (*subscription)->close();

  PlainSqs sqs;
  const std::string queue = queue_url.substr(queue_url.rfind('/') + 1);
  ASSERT_TRUE(testing::eventually([&] { return !sqs.url_of(queue); }, 5s))
      << "the lone subscriber's queue " << queue << " is still there";
  auto unsubscribed = proxy.requests_of("Unsubscribe");
  ASSERT_EQ(unsubscribed.size(), 1u);
  EXPECT_NE(unsubscribed[0]["SubscriptionArn"].find(spec.subject.substr(7)), std::string::npos)
      << unsubscribed[0]["SubscriptionArn"];
  (void)loop.run(backend->close(SteadyClock::now() + 5s));
}

// A message on the topic that is not ours (a malformed CloudEvent from a plain SNS publisher)
// goes to the dead-letter queue with the reason; the group goes on with the next event.
TEST(AwsSnsDeadLetters, AnUndecodableEventIsDeadLetteredAndTheGroupGoesOn) {
  ASSERT_FALSE(env("MARTY_SNS_ENDPOINT").empty()) << "MARTY_SNS_ENDPOINT is not set";
  const std::string type = unique("stock_moved");
  const std::string subject = subject::for_event(type);
  testing::NumbersSeen handled;
  BlockingEventBus bus;
  ASSERT_TRUE(bus.bus().register_backend(MessageBackendType::aws_sns, make_sns_backend(config())));
  ASSERT_TRUE(bus.start());
  ASSERT_TRUE(bus.subscribe_to_events({type}, handled.handler(), "warehouse"));

  TestLoop loop;
  auto plain_sns = testing::PlainAwsClient::sns();
  QueryClient& sns = plain_sns.client();
  auto topic =
      loop.run(sns.call("CreateTopic", {{"Name", aws_name_for("", subject, 256, false)}}, 5s, 3));
  ASSERT_TRUE(topic) << topic.error().describe();
  auto sent = loop.run(sns.call("Publish",
                                {{"TopicArn", topic->text_of("TopicArn")},
                                 {"Message", "{\"n\": -1}"},
                                 {"MessageAttributes.entry.1.Name", "ce_specversion"},
                                 {"MessageAttributes.entry.1.Value.DataType", "String"},
                                 {"MessageAttributes.entry.1.Value.StringValue", "1.0"},
                                 {"MessageAttributes.entry.2.Name", "ce_time"},
                                 {"MessageAttributes.entry.2.Value.DataType", "String"},
                                 {"MessageAttributes.entry.2.Value.StringValue", "teatime"}},
                                5s, 3));
  ASSERT_TRUE(sent) << sent.error().describe();
  ASSERT_TRUE(bus.publish_event(type, {{"n", 1}}));
  ASSERT_TRUE(testing::eventually([&] { return handled.distinct() == 1; }, 15s));
  EXPECT_EQ(handled.numbers(), std::set<int>{1});

  PlainSqs sqs;
  Result<std::string> dead_url = Error(errc::not_found, "not yet");
  ASSERT_TRUE(testing::eventually(
      [&] {
        dead_url =
            sqs.url_of(aws_name_for("", dead_letter_subject(subject), kQueueNameRoom, false));
        return dead_url.has_value();
      },
      10s));
  const Json dead = read_with_aws_sdk(*dead_url, 1);
  ASSERT_EQ(dead.size(), 1u) << dead.dump();
  EXPECT_EQ(dead[0]["body"], "{\"n\": -1}");
  const Json extensions =
      Json::parse(dead[0].value("attributes", Json::object()).value("ce_extensions", "{}"));
  // The reason names what was wrong (the first thing found: no ce_id).
  EXPECT_NE(extensions.dump().find("header 'ce_id' is missing"), std::string::npos)
      << extensions.dump();
}

}  // namespace
}  // namespace marty::messaging::aws
