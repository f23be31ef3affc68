// The AWS Query client: replies and errors read as AWS writes them, and real calls to the SQS
// emulator (sqslite) that scripts/brokers starts (MARTY_SQS_ENDPOINT).
#include <cstdlib>
#include <optional>
#include <string>

#include <gtest/gtest.h>

#include "../../src/backends/aws/aws_query.hpp"
#include "../../src/backends/aws/sqs_queues.hpp"
#include "../support/scripted_http_server.hpp"
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

// An AWS error reply, as SQS's Query API writes one.
std::string aws_error_reply(const std::string& code, const std::string& message) {
  return "<ErrorResponse><Error><Type>Sender</Type><Code>" + code + "</Code><Message>" + message +
         "</Message></Error><RequestId>r-1</RequestId></ErrorResponse>";
}

QueryClient client_of(const std::shared_ptr<HttpClient>& http, const std::string& url,
                      Credentials credentials = Credentials{"AKIDEXAMPLE", "secret-value", ""}) {
  QueryEndpoint endpoint;
  endpoint.url = url;
  endpoint.region = "us-east-1";
  endpoint.service = "sqs";
  endpoint.version = "2012-11-05";
  return QueryClient(http, endpoint, std::move(credentials));
}

TEST(AwsQuery, ThrottlingIsRetriedWithBackoffUntilItPasses) {
  testing::ScriptedHttpServer server(
      {{400, aws_error_reply("ThrottlingException", "Rate exceeded")},
       {400, aws_error_reply("RequestThrottled", "Slow down")},
       {200, "<ListQueuesResponse><ListQueuesResult/></ListQueuesResponse>"}});
  TestLoop loop;
  auto http = std::make_shared<HttpClient>(2s);
  QueryClient client = client_of(http, server.url());
  const auto start = std::chrono::steady_clock::now();
  auto reply = loop.run(client.call("ListQueues", {}, 5s, 5));
  const auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(reply) << reply.error().describe();
  const auto requests = server.requests();
  ASSERT_EQ(requests.size(), 3u);
  EXPECT_GE(elapsed, 150ms) << "waits of 50 then 100 ms between the attempts";
  // Each attempt is the same call, signed afresh.
  for (const auto& request : requests) {
    EXPECT_EQ(request.body, requests.front().body);
    EXPECT_NE(request.head.find("Authorization: AWS4-HMAC-SHA256"), std::string::npos);
  }
}

TEST(AwsQuery, ThrottlingThatLastsEndsAsResourceExhaustedWithTheAwsMessage) {
  testing::ScriptedHttpServer server({{400, aws_error_reply("Throttling", "Rate exceeded")}});
  TestLoop loop;
  auto http = std::make_shared<HttpClient>(2s);
  QueryClient client = client_of(http, server.url());
  auto reply = loop.run(client.call("ListQueues", {}, 5s, 3));
  ASSERT_FALSE(reply);
  EXPECT_TRUE(reply.error().is(errc::resource_exhausted)) << reply.error().describe();
  EXPECT_NE(reply.error().message().find("Rate exceeded"), std::string::npos);
  EXPECT_EQ(server.requests().size(), 3u) << "attempts bound the retries";
  EXPECT_EQ(reply.error().describe().find("secret-value"), std::string::npos);
}

TEST(AwsQuery, AccessDeniedIsNotRetried) {
  testing::ScriptedHttpServer server(
      {{403, aws_error_reply("AccessDenied", "User is not authorized to perform sqs:ListQueues")}});
  TestLoop loop;
  auto http = std::make_shared<HttpClient>(2s);
  QueryClient client = client_of(http, server.url());
  auto reply = loop.run(client.call("ListQueues", {}, 5s, 5));
  ASSERT_FALSE(reply);
  EXPECT_TRUE(reply.error().is(errc::permission_denied)) << reply.error().describe();
  EXPECT_NE(reply.error().message().find("not authorized to perform sqs:ListQueues"),
            std::string::npos);
  EXPECT_EQ(server.requests().size(), 1u);
}

TEST(AwsQuery, ASessionTokenTravelsSignedAndNeverInAnError) {
  testing::ScriptedHttpServer server({{400, aws_error_reply("InvalidParameterValue", "bad")}});
  TestLoop loop;
  auto http = std::make_shared<HttpClient>(2s);
  QueryClient client = client_of(http, server.url(),
                                 Credentials{"ASIAEXAMPLE", "secret-value", "session-token-value"});
  auto reply = loop.run(client.call("ListQueues", {}, 5s, 1));
  ASSERT_FALSE(reply);
  const auto requests = server.requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_NE(requests[0].head.find("X-Amz-Security-Token: session-token-value"), std::string::npos);
  EXPECT_NE(requests[0].head.find("x-amz-security-token"), std::string::npos)
      << "the token is one of the signed headers";
  EXPECT_EQ(requests[0].head.find("secret-value"), std::string::npos);
  EXPECT_EQ(reply.error().describe().find("session-token-value"), std::string::npos);
}

// Sets an environment variable for one scope, restoring what was there.
class ScopedEnvironment {
 public:
  ScopedEnvironment(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value != nullptr) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnvironment() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  ScopedEnvironment(const ScopedEnvironment&) = delete;
  ScopedEnvironment& operator=(const ScopedEnvironment&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(AwsCredentials, TakenWholeFromTheConfigOrWholeFromTheEnvironment) {
  ScopedEnvironment id("AWS_ACCESS_KEY_ID", "ASIAENVIRONMENT");
  ScopedEnvironment secret("AWS_SECRET_ACCESS_KEY", "environment-secret");
  ScopedEnvironment token("AWS_SESSION_TOKEN", "environment-token");

  auto from_environment = resolve_credentials("", "", "", "aws_sqs");
  ASSERT_TRUE(from_environment) << from_environment.error().describe();
  EXPECT_EQ(from_environment->access_key_id, "ASIAENVIRONMENT");
  EXPECT_EQ(from_environment->secret_access_key, "environment-secret");
  EXPECT_EQ(from_environment->session_token, "environment-token");

  // Keys of the config's own never get the environment's token (it belongs to other keys).
  auto from_config = resolve_credentials("AKIACONFIG", "config-secret", "", "aws_sqs");
  ASSERT_TRUE(from_config) << from_config.error().describe();
  EXPECT_EQ(from_config->access_key_id, "AKIACONFIG");
  EXPECT_EQ(from_config->secret_access_key, "config-secret");
  EXPECT_EQ(from_config->session_token, "");
  auto with_token = resolve_credentials("ASIACONFIG", "config-secret", "config-token", "aws_sqs");
  ASSERT_TRUE(with_token);
  EXPECT_EQ(with_token->session_token, "config-token");

  auto half = resolve_credentials("AKIACONFIG", "", "", "aws_sns");
  ASSERT_FALSE(half);
  EXPECT_TRUE(half.error().is(errc::invalid_argument));
  EXPECT_NE(half.error().message().find("secret_access_key"), std::string::npos);
  EXPECT_EQ(half.error().describe().find("environment-secret"), std::string::npos);
}

TEST(AwsCredentials, NoneAnywhereSaysWhatToSet) {
  ScopedEnvironment id("AWS_ACCESS_KEY_ID", nullptr);
  ScopedEnvironment secret("AWS_SECRET_ACCESS_KEY", nullptr);
  ScopedEnvironment token("AWS_SESSION_TOKEN", "orphan-token");
  auto none = resolve_credentials("", "", "", "aws_sqs");
  ASSERT_FALSE(none);
  EXPECT_TRUE(none.error().is(errc::invalid_argument));
  EXPECT_NE(none.error().message().find("AWS_ACCESS_KEY_ID"), std::string::npos);
}

}  // namespace
}  // namespace marty::messaging::aws
