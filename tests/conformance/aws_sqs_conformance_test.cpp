// The conformance suite against the SQS emulator (npm sqslite) that scripts/brokers starts
// (MARTY_SQS_ENDPOINT). The `aws_sqs` backend serves commands and queries; what needs events,
// replay or ordering is skipped, and the report says so.
#include <cstdlib>

#include "conformance.hpp"
#include "marty/messaging/aws_backend.hpp"

namespace marty::messaging::conformance {
namespace {

std::string endpoint() {
  const char* url = std::getenv("MARTY_SQS_ENDPOINT");
  return url != nullptr ? url : "";
}

BackendUnderTest sqs_backend() {
  BackendUnderTest backend;
  backend.name = "aws_sqs";
  backend.type = MessageBackendType::aws_sqs;
  backend.connect = [] {
    aws::AwsSqsConfig config;
    config.endpoint = endpoint();
    config.access_key_id = "test";
    config.secret_access_key = "test";
    // Short, so that a stopped instance's unsettled messages come back within the tests.
    config.visibility_timeout = std::chrono::seconds(2);
    config.wait_time = std::chrono::seconds(1);
    // The emulator gives every message of one ReceiveMessage the same receipt handle (deleting
    // one deletes them all): one message per call.
    config.max_messages = 1;
    return aws::make_sqs_backend(config);
  };
  return backend;
}

const std::vector<BackendUnderTest>& backends() {
  static const std::vector<BackendUnderTest> all{sqs_backend()};
  return all;
}

INSTANTIATE_TEST_SUITE_P(AwsSqs, Conformance, ::testing::ValuesIn(backends()),
                         [](const auto& param_info) { return param_info.param.name; });

}  // namespace
}  // namespace marty::messaging::conformance

int main(int argc, char** argv) {
  return marty::messaging::conformance::run_broker_suite(argc, argv, "MARTY_SQS_ENDPOINT", "sqs",
                                                         marty::messaging::conformance::backends());
}
