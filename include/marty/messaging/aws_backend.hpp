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
  /// All empty: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN from the
  /// environment. Any set: these alone (both keys required; no token from the environment).
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
  /// The dead-letter queue (its ARN) of every queue this backend makes, instead of a
  /// "<queue>--dlq" of each one's own. A FIFO queue's must be a FIFO queue, and the reverse.
  std::string dead_letter_queue_arn;
  /// Server-side encryption of the queues this backend makes, with this KMS key (id, ARN or
  /// alias, "alias/aws/sqs" for AWS's own); empty: SQS's default.
  std::string kms_master_key_id;
  std::chrono::milliseconds connect_timeout{3'000};
  /// Time allowed for one API call, retries of throttled calls included.
  std::chrono::milliseconds request_timeout{10'000};
};

std::shared_ptr<Backend> make_sqs_backend(AwsSqsConfig config);

/// `aws_sns`: events on SNS topics (made on demand), each subscriber group reading them from an
/// SQS queue of its own subscribed to the topic with raw message delivery; commands and queries
/// over SQS as `aws_sqs` does. Validated at connect(): a bad value is `invalid_argument` naming
/// the field.
struct AwsSnsConfig {
  /// Region and credentials of both services (those in `sqs` are not used).
  std::string region = "us-east-1";
  /// All empty: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN from the
  /// environment. Any set: these alone (both keys required; no token from the environment).
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;
  /// Empty: https://sns.<region>.amazonaws.com. An emulator's address otherwise.
  std::string endpoint;
  /// Prefix of every topic this backend names ("shop-" → "shop-events-order_placed").
  std::string topic_prefix;
  /// Topics that exist already, by subject: used as they are (never created or changed).
  std::map<std::string, std::string> topic_arns;
  /// FIFO topics (and queues): the events of one `partition_key` (message group) are delivered
  /// in order, and SNS drops a message whose id it has seen in the last five minutes
  /// (`MessageDeduplicationId` is the message id).
  bool fifo_topics = false;
  /// FIFO only: de-duplicate by a hash of the body instead of the message id.
  bool content_based_deduplication = false;
  /// Server-side encryption of the topics with this KMS key; empty: none.
  std::string kms_master_key_id;
  /// The topics' delivery retry policy (SNS's DeliveryPolicy JSON, as is); empty: SNS's default.
  std::string delivery_policy;
  /// Give each event queue a policy that lets its topic send to it (real AWS needs one). Off
  /// where queue policies are managed elsewhere, or the SQS emulator has none.
  bool set_queue_policy = true;
  /// Subscribe queues by URL instead of ARN: only for SNS emulators that deliver to a queue URL
  /// (serverless-offline-sns). Real SNS takes ARNs.
  bool subscribe_queue_urls = false;
  /// SQS: endpoint, queue prefix, visibility timeout, long polling, redrive...
  AwsSqsConfig sqs;
};

std::shared_ptr<Backend> make_sns_backend(AwsSnsConfig config);

}  // namespace marty::messaging::aws
