// The conformance suite against the SQS emulator (npm sqslite) that scripts/brokers starts
// (MARTY_SQS_ENDPOINT). The `aws_sqs` backend serves commands and queries; what needs events,
// replay or ordering is skipped, and the report says so.
#include <cstdlib>

#include "../support/aws_emulators.hpp"
#include "conformance.hpp"
#include "marty/messaging/aws_backend.hpp"

namespace marty::messaging::conformance {
namespace {

BackendUnderTest sqs_backend() {
  BackendUnderTest backend;
  backend.name = "aws_sqs";
  backend.type = MessageBackendType::aws_sqs;
  backend.connect = [] { return aws::make_sqs_backend(testing::emulator_sqs_config()); };
  backend.environment_cannot_show["redelivery"] = testing::kSqsliteCannotRedeliver;
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
