#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "marty/messaging/backend.hpp"

/// The AWS backends, on the SQS and SNS Query APIs (libcurl, our own SigV4 signing). Link
/// `marty::messaging_aws`. docs/aws-backends.md has the whole picture.
///
/// `aws_sqs`: point-to-point and request/response. Each subject is a queue (commands of a
/// service and type, a service's queries, a bus's replies); the subscribers of a queue compete.
namespace marty::messaging::aws {

/// Validated at connect(): a bad value is `invalid_argument` naming the field. Secrets never
/// appear in logs or errors.
struct AwsSqsConfig {
  std::string region = "us-east-1";
  /// Empty: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN from the environment.
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;
  /// Empty: https://sqs.<region>.amazonaws.com. An emulator's address otherwise.
  std::string endpoint;
  /// Prefix of every queue this backend names ("shop-" → "shop-commands-billing-charge").
  std::string queue_prefix;
  /// Queues that exist already, by subject: used as they are (never created or changed).
  std::map<std::string, std::string> queue_urls;
  /// How long a received message stays invisible to other consumers before it is delivered
  /// again (the time a crashed consumer's messages wait).
  std::chrono::seconds visibility_timeout{30};
  /// Long polling: how long one ReceiveMessage waits for messages (0..20 s).
  std::chrono::seconds wait_time{20};
  /// Messages one ReceiveMessage takes (1..10).
  int max_messages = 10;
  /// Messages a subscription holds unsettled; it stops receiving at this bound.
  int prefetch = 20;
  /// Receives after which SQS moves a message to the queue's dead-letter queue
  /// ("<queue>--dlq", made with the queue); 0: no redrive policy.
  int max_receive_count = 5;
  /// Server-side encryption of the queues this backend makes, with this KMS key (id, ARN or
  /// alias, "alias/aws/sqs" for AWS's own); empty: SQS's default.
  std::string kms_master_key_id;
  std::chrono::milliseconds connect_timeout{3'000};
  /// Time allowed for one API call, retries of throttled calls included.
  std::chrono::milliseconds request_timeout{10'000};
};

std::shared_ptr<Backend> make_sqs_backend(AwsSqsConfig config);

}  // namespace marty::messaging::aws
