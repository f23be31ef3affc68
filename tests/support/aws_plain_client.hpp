#pragma once
// A plain AWS Query client for the emulators, as another program would use one: what the tests
// use to look at queues and topics, or to write what the backends must read.
#include <chrono>
#include <memory>
#include <string>

#include "../../src/backends/aws/aws_query.hpp"
#include "aws_emulators.hpp"

namespace marty::messaging::testing {

class PlainAwsClient {
 public:
  static PlainAwsClient sqs() {
    return PlainAwsClient(env_or_empty("MARTY_SQS_ENDPOINT"), "sqs", "2012-11-05");
  }
  static PlainAwsClient sns() {
    return PlainAwsClient(env_or_empty("MARTY_SNS_ENDPOINT"), "sns", "2010-03-31");
  }
  PlainAwsClient(PlainAwsClient&&) = default;
  ~PlainAwsClient() {
    if (http_) http_->close();
  }

  aws::QueryClient& client() { return *client_; }

 private:
  PlainAwsClient(std::string endpoint, const char* service, const char* version)
      : http_(std::make_shared<aws::HttpClient>(std::chrono::seconds(2))),
        client_(std::make_unique<aws::QueryClient>(
            http_, aws::QueryEndpoint{std::move(endpoint), "us-east-1", service, version},
            aws::Credentials{"test", "test", ""})) {}

  std::shared_ptr<aws::HttpClient> http_;
  std::unique_ptr<aws::QueryClient> client_;
};

}  // namespace marty::messaging::testing
