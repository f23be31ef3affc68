// The AWS Query client: replies and errors read as AWS writes them, and real calls to the SQS
// emulator (sqslite) that scripts/brokers starts (MARTY_SQS_ENDPOINT).
#include <cstdlib>

#include <gtest/gtest.h>

#include "../../src/backends/aws/aws_query.hpp"
#include "../support/test_loop.hpp"
#include "marty/messaging/message.hpp"

namespace marty::messaging::aws {
namespace {

using namespace std::chrono_literals;
using testing::TestLoop;

TEST(AwsXml, RepliesAreReadWithoutTheirNamespaces) {
  auto xml =
      parse_xml(R"(<ReceiveMessageResponse xmlns="http://queue.amazonaws.com/doc/2012-11-05/">)"
                R"(<ReceiveMessageResult><Message><MessageId>m-1</MessageId><Body>a &amp; b</Body>)"
                R"(<MessageAttribute><Name>ce_type</Name><Value><DataType>String</DataType>)"
                R"(<StringValue>order_placed</StringValue></Value></MessageAttribute></Message>)"
                R"(<Message><MessageId>m-2</MessageId><Body><![CDATA[<raw>]]></Body></Message>)"
                R"(</ReceiveMessageResult></ReceiveMessageResponse>)");
  ASSERT_TRUE(xml) << xml.error().describe();
  auto messages = xml->find_all("Message");
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_EQ(messages[0]->text_of("Body"), "a & b");
  EXPECT_EQ(messages[0]->text_of("StringValue"), "order_placed");
  EXPECT_EQ(messages[1]->text_of("Body"), "<raw>");
  EXPECT_EQ(xml->text_of("MessageId"), "m-1");
  EXPECT_EQ(xml->find("Nothing"), nullptr);

  auto broken = parse_xml("<Unclosed>");
  ASSERT_FALSE(broken);
  EXPECT_TRUE(broken.error().is(errc::invalid_argument));
}

TEST(AwsErrors, AwsCodesBecomeOursWithTheirMessageKept) {
  struct Case {
    long status;
    const char* code;
    errc expected;
  };
  for (const Case& c :
       {Case{400, "Throttling", errc::resource_exhausted},
        Case{400, "AWS.SimpleQueueService.NonExistentQueue", errc::not_found},
        Case{404, "NotFound", errc::not_found},
        Case{403, "AuthorizationError", errc::permission_denied},
        Case{403, "SignatureDoesNotMatch", errc::unauthenticated},
        Case{400, "InvalidParameter", errc::invalid_argument},
        Case{503, "ServiceUnavailable", errc::unavailable}, Case{500, "", errc::unavailable}}) {
    const Error error = aws_error(c.status, c.code, "what AWS said", "Publish");
    EXPECT_TRUE(error.is(c.expected)) << c.code << ": " << error.describe();
    EXPECT_NE(error.message().find("what AWS said"), std::string::npos);
    EXPECT_NE(error.message().find("Publish"), std::string::npos);
  }
  EXPECT_TRUE(aws_error(400, "Throttling", "", "x").retryable());
}

std::string sqs_endpoint() {
  const char* url = std::getenv("MARTY_SQS_ENDPOINT");
  return url != nullptr ? url : "";
}

QueryClient sqs_client(std::shared_ptr<HttpClient> http) {
  QueryEndpoint endpoint;
  endpoint.url = sqs_endpoint();
  endpoint.region = "us-east-1";
  endpoint.service = "sqs";
  endpoint.version = "2012-11-05";
  Credentials credentials;
  credentials.access_key_id = "test";
  credentials.secret_access_key = "test-secret";
  return QueryClient(std::move(http), endpoint, credentials);
}

TEST(AwsQuery, SqsCallsRoundTripAgainstTheEmulator) {
  ASSERT_FALSE(sqs_endpoint().empty()) << "MARTY_SQS_ENDPOINT is not set";
  TestLoop loop;
  auto http = std::make_shared<HttpClient>(2s);
  QueryClient sqs = sqs_client(http);
  const std::string id = make_uuid_v7();
  const std::string name = "query-test-" + id.substr(id.size() - 12);

  auto created = loop.run(sqs.call("CreateQueue", {{"QueueName", name}}, 5s, 3));
  ASSERT_TRUE(created) << created.error().describe();
  const std::string url = created->text_of("QueueUrl");
  ASSERT_NE(url.find(name), std::string::npos) << url;

  const std::string body = "{\"n\": 1, \"text\": \"a & b = c?\"}";
  auto sent = loop.run(sqs.call("SendMessage",
                                {{"QueueUrl", url},
                                 {"MessageBody", body},
                                 {"MessageAttribute.1.Name", "ce_type"},
                                 {"MessageAttribute.1.Value.DataType", "String"},
                                 {"MessageAttribute.1.Value.StringValue", "order placed"}},
                                5s, 3));
  ASSERT_TRUE(sent) << sent.error().describe();
  EXPECT_FALSE(sent->text_of("MessageId").empty());

  auto received = loop.run(sqs.call(
      "ReceiveMessage",
      {{"QueueUrl", url}, {"MaxNumberOfMessages", "10"}, {"MessageAttributeName.1", "All"}}, 5s,
      3));
  ASSERT_TRUE(received) << received.error().describe();
  auto messages = received->find_all("Message");
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0]->text_of("Body"), body);
  EXPECT_EQ(messages[0]->text_of("StringValue"), "order placed");
  const std::string receipt = messages[0]->text_of("ReceiptHandle");
  ASSERT_FALSE(receipt.empty());
  auto deleted =
      loop.run(sqs.call("DeleteMessage", {{"QueueUrl", url}, {"ReceiptHandle", receipt}}, 5s, 3));
  ASSERT_TRUE(deleted) << deleted.error().describe();

  auto missing = loop.run(sqs.call("GetQueueUrl", {{"QueueName", name + "-absent"}}, 5s, 3));
  ASSERT_FALSE(missing);
  EXPECT_TRUE(missing.error().is(errc::not_found)) << missing.error().describe();
  EXPECT_EQ(missing.error().describe().find("test-secret"), std::string::npos);
}

TEST(AwsQuery, NoServerIsATransientErrorNamingTheUrl) {
  TestLoop loop;
  auto http = std::make_shared<HttpClient>(1s);
  QueryEndpoint endpoint;
  endpoint.url = "http://127.0.0.1:9";  // discard: nothing listens
  endpoint.region = "us-east-1";
  endpoint.service = "sqs";
  endpoint.version = "2012-11-05";
  QueryClient client(http, endpoint, Credentials{"id", "secret-value", ""});
  auto reply = loop.run(client.call("ListQueues", {}, 2s, 2));
  ASSERT_FALSE(reply);
  EXPECT_TRUE(reply.error().retryable()) << reply.error().describe();
  EXPECT_NE(reply.error().message().find("127.0.0.1:9"), std::string::npos);
  EXPECT_EQ(reply.error().describe().find("secret-value"), std::string::npos);
}

}  // namespace
}  // namespace marty::messaging::aws
