// The conformance suite against the SNS and SQS emulators (npm serverless-offline-sns and
// sqslite) that scripts/brokers starts (MARTY_SNS_ENDPOINT, MARTY_SQS_ENDPOINT). What the backend
// does not declare (replay, ordering, wildcards) is skipped, and so is what the emulators cannot
// show (below); the report says which and why.
#include <cstdlib>

#include "../support/aws_emulators.hpp"
#include "conformance.hpp"
#include "marty/messaging/aws_backend.hpp"

namespace marty::messaging::conformance {
namespace {

BackendUnderTest sns_backend() {
  BackendUnderTest backend;
  backend.name = "aws_sns";
  backend.type = MessageBackendType::aws_sns;
  backend.connect = [] { return aws::make_sns_backend(testing::emulator_sns_config()); };
  backend.environment_cannot_show["redelivery"] = testing::kSqsliteCannotRedeliver;
  return backend;
}

const std::vector<BackendUnderTest>& backends() {
  static const std::vector<BackendUnderTest> all{sns_backend()};
  return all;
}

INSTANTIATE_TEST_SUITE_P(AwsSns, Conformance, ::testing::ValuesIn(backends()),
                         [](const auto& param_info) { return param_info.param.name; });

}  // namespace
}  // namespace marty::messaging::conformance

int main(int argc, char** argv) {
  return marty::messaging::conformance::run_broker_suite(argc, argv, "MARTY_SNS_ENDPOINT", "sns",
                                                         marty::messaging::conformance::backends());
}
