#pragma once
// Our messages on SNS and SQS: names for topics and queues, and messages as a body with
// string message attributes (CloudEvents binary mode, within AWS's limit of 10 attributes).
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "marty/messaging/message.hpp"
#include "marty/messaging/result.hpp"

namespace marty::messaging::aws {

inline constexpr std::string_view kSqsBackendName = "aws_sqs";
inline constexpr std::string_view kSnsBackendName = "aws_sns";

/// The SNS topic or SQS queue name of `subject` ([A-Za-z0-9_-], `max_length` characters with
/// `prefix` and the ".fifo" suffix of FIFO ones). Subjects of letters, digits, '_' and '.' map
/// readably, '.' becoming '-' ("events.order_placed" → "events-order_placed"); any other
/// subject (or one too long) is cleaned the same way and ends with "--" and a 64-bit hash of the
/// whole subject, which readable names never contain: two subjects never share a name.
std::string aws_name_for(std::string_view prefix, std::string_view subject, std::size_t max_length,
                         bool fifo);

/// A FIFO message group or de-duplication id SNS and SQS take (1..128 characters of ASCII
/// alphanumerics and punctuation): `text` itself when it is one, else a stable hash-suffixed
/// cleaning of it, so one text always gives one id.
std::string fifo_id(std::string_view text);

/// The FIFO message group of one of our messages: its partition key, or its subject when it has
/// none (a subject's keyless events are one ordered sequence).
std::string message_group_of(const Message& message);

/// String message attributes, in order.
using Attributes = std::vector<std::pair<std::string, std::string>>;

/// A message as AWS carries it.
struct AwsMessage {
  std::string body;
  Attributes attributes;
};

/// CloudEvents attributes in binary mode (`ce_id`, `ce_type`, `ce_source`, `ce_specversion`,
/// `ce_time`, `content-type`) as message attributes, every other attribute and header together
/// in one `ce_extensions` attribute (a JSON object): AWS takes at most 10. A payload that is not
/// text AWS can carry (UTF-8 without control characters other than tab and line breaks) is sent
/// base64-encoded, with `marty-body-encoding: base64`.
AwsMessage to_aws(const Message& message);

/// The reverse. Messages without `ce_specversion` (from plain AWS producers) are taken as they
/// are, typed by their subject, their attributes kept as headers. A malformed CloudEvents
/// attribute is `invalid_argument` naming it.
Result<Message> from_aws(std::string_view subject, std::string body, const Attributes& attributes);

}  // namespace marty::messaging::aws
