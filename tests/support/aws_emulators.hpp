#pragma once
// The AWS backends' settings for the emulators scripts/brokers starts (MARTY_SQS_ENDPOINT,
// MARTY_SNS_ENDPOINT), shared by the tests, the conformance suite and the benchmark.
#include <chrono>
#include <cstdlib>
#include <string>

#include "marty/messaging/aws_backend.hpp"

namespace marty::messaging::testing {

inline std::string env_or_empty(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? value : "";
}

/// Why the conformance suite cannot show redelivery against sqslite.
inline constexpr const char* kSqsliteCannotRedeliver =
    "sqslite never makes a received message visible again (neither after its visibility timeout "
    "nor after ChangeMessageVisibility), so nacks, releases and redrive cannot be seen";

inline aws::AwsSqsConfig emulator_sqs_config() {
  aws::AwsSqsConfig config;
  config.endpoint = env_or_empty("MARTY_SQS_ENDPOINT");
  config.access_key_id = "test";
  config.secret_access_key = "test";
  // Short, so that a stopped instance's unsettled messages come back within the tests.
  config.visibility_timeout = std::chrono::seconds(2);
  config.wait_time = std::chrono::seconds(1);
  // The emulator gives every message of one ReceiveMessage the same receipt handle (deleting
  // one deletes them all): one message per call.
  config.max_messages = 1;
  return config;
}

inline aws::AwsSnsConfig emulator_sns_config() {
  aws::AwsSnsConfig config;
  config.endpoint = env_or_empty("MARTY_SNS_ENDPOINT");
  config.access_key_id = "test";
  config.secret_access_key = "test";
  // The SNS emulator delivers to queue URLs, and the SQS emulator has no queue policies.
  config.subscribe_queue_urls = true;
  config.set_queue_policy = false;
  config.sqs = emulator_sqs_config();
  return config;
}

}  // namespace marty::messaging::testing
