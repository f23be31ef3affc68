// The `aws_sns` backend: events published to SNS topics, read through SQS queues subscribed to
// them with raw message delivery; everything else (commands, queries, dead letters) as
// `aws_sqs` does it.
#include <cctype>
#include <map>
#include <mutex>
#include <optional>

#include <spdlog/spdlog.h>

#include "aws_wire.hpp"
#include "marty/messaging/aws_backend.hpp"
#include "sqs_backend.hpp"

namespace marty::messaging::aws {
namespace {

using std::chrono::milliseconds;

// SNS topic names: 256 characters, ".fifo" included.
constexpr std::size_t kTopicNameLength = 256;

bool is_event(MessagingPattern pattern) {
  return pattern == MessagingPattern::pub_sub || pattern == MessagingPattern::broadcast;
}

std::string queue_policy(const std::string& queue_arn, const std::string& topic_arn) {
  const Json statement{{"Sid", "marty-sns-delivery"},
                       {"Effect", "Allow"},
                       {"Principal", Json{{"Service", "sns.amazonaws.com"}}},
                       {"Action", "sqs:SendMessage"},
                       {"Resource", queue_arn},
                       {"Condition", Json{{"ArnEquals", Json{{"aws:SourceArn", topic_arn}}}}}};
  const Json policy{{"Version", "2012-10-17"}, {"Statement", Json::array({statement})}};
  return policy.dump();
}

AwsSqsConfig sqs_part(const AwsSnsConfig& config) {
  AwsSqsConfig sqs = config.sqs;
  sqs.region = config.region;
  sqs.access_key_id = config.access_key_id;
  sqs.secret_access_key = config.secret_access_key;
  sqs.session_token = config.session_token;
  return sqs;
}

class SnsBackend final : public SqsBackend {
 public:
  explicit SnsBackend(AwsSnsConfig config)
      : SqsBackend(sqs_part(config), std::string(kSnsBackendName)), config_(std::move(config)) {
    caps_.patterns = {MessagingPattern::pub_sub, MessagingPattern::broadcast,
                      MessagingPattern::point_to_point, MessagingPattern::request_response};
    caps_.consumer_groups = true;  // a queue per group: groups fan out, members compete
    caps_.durable_groups = true;   // a group's queue keeps its messages while nobody reads
    // The payload limit is SQS's (set by the base): SNS takes 256 KiB as SQS does.
    caps_.deduplicates_by_id = config_.fifo_topics && !config_.content_based_deduplication;
  }

  asio::awaitable<Result<void>> publish(Message message, PublishOptions options) override {
    // Dead letters go to a queue (kept until read), not to a topic nobody may read.
    if (!is_event(options.pattern) || message.subject().starts_with("deadletter.")) {
      co_return co_await SqsBackend::publish(std::move(message), std::move(options));
    }
    if (auto usable = check_usable(); !usable) co_return usable;
    const std::string subject(message.subject());
    auto topic = co_await topic_arn(subject);
    if (!topic) co_return std::move(topic).error().with_context("publish to " + subject);
    QueryParameters parameters = publish_parameters(*topic, message, options.deduplication_id);
    auto published =
        co_await call_within("Publish", std::move(parameters), time_left(options.deadline));
    if (!published) co_return std::move(published).error().with_context("publish to " + subject);
    co_return ok();
  }

  // An event group is read through its own queue (see subscribe()).
  asio::awaitable<Result<std::uint64_t>> consumer_lag(SubscriptionSpec spec,
                                                      SteadyClock::time_point deadline) override {
    if (!is_event(spec.pattern))
      co_return co_await SqsBackend::consumer_lag(std::move(spec), deadline);
    co_return co_await queue_lag(event_queue(spec.subject, spec.group), spec.group, spec.subject,
                                 deadline);
  }

  // The queue `reader` (a group, or a private subscriber's id) reads the events of `subject` from.
  QueueRequest event_queue(const std::string& subject, const std::string& reader) const {
    QueueRequest request;
    request.key = "topic:" + subject + "@" + reader;
    request.name = aws_name_for(queues_->config.queue_prefix, subject + "@" + reader,
                                kQueueNameRoom, config_.fifo_topics);
    request.fifo = config_.fifo_topics;
    return request;
  }

  asio::awaitable<Result<std::shared_ptr<Subscription>>> subscribe(SubscriptionSpec spec) override {
    if (!is_event(spec.pattern)) co_return co_await SqsBackend::subscribe(std::move(spec));
    if (auto usable = check_usable(); !usable) co_return std::move(usable).error();
    const std::string subject = spec.subject;
    auto topic = co_await topic_arn(subject);
    if (!topic) co_return std::move(topic).error().with_context("subscribe " + subject);
    // One queue per group, shared by its members and kept while they are away; a subscriber
    // without a group has a queue of its own, ended with its subscription.
    const bool private_queue = spec.group.empty();
    const std::string reader = private_queue ? make_uuid_v7() : spec.group;
    QueueRequest request = event_queue(subject, reader);
    request.create = true;
    request.redrive = !private_queue;
    auto url = co_await queues_->queue_url(std::move(request));
    if (!url) co_return std::move(url).error().with_context("subscribe " + subject);
    auto subscription_arn = co_await subscribe_queue_to(*topic, *url);
    if (!subscription_arn) {
      if (private_queue) co_await delete_queue(*url);  // made for this subscriber alone
      co_return std::move(subscription_arn).error().with_context("subscribe " + subject);
    }
    std::function<asio::awaitable<void>()> before_delete;
    if (private_queue) {
      // Unsubscribed before its queue goes, so SNS never delivers to a deleted queue.
      before_delete = [sns = sns_, arn = *subscription_arn,
                       timeout = queues_->config.request_timeout]() -> asio::awaitable<void> {
        QueryParameters parameters{{"SubscriptionArn", arn}};
        auto done = co_await sns->call("Unsubscribe", std::move(parameters), timeout, 5);
        if (!done) {
          logger().warn("SNS Unsubscribe of {} failed ({}): SNS goes on sending to it", arn,
                        done.error().describe());
        }
      };
    }
    std::function<asio::awaitable<void>()> unsubscribe = before_delete;
    auto subscribed = co_await subscribe_queue(std::move(spec), *url, private_queue,
                                               std::move(before_delete), config_.fifo_topics);
    if (!subscribed && private_queue) {
      // The backend closed meanwhile: the subscriber's own subscription and queue go.
      co_await unsubscribe();
      co_await delete_queue(*url);
    }
    co_return subscribed;
  }

 private:
  asio::awaitable<Result<void>> connect_more() override {
    if (auto valid = validate(); !valid) co_return valid;
    auto credentials = resolve_credentials(config_.access_key_id, config_.secret_access_key,
                                           config_.session_token, name());
    if (!credentials) co_return std::move(credentials).error();
    QueryEndpoint endpoint;
    endpoint.url = config_.endpoint.empty() ? "https://sns." + config_.region + ".amazonaws.com"
                                            : config_.endpoint;
    endpoint.region = config_.region;
    endpoint.service = "sns";
    endpoint.version = "2010-03-31";
    sns_ = std::make_shared<QueryClient>(queues_->http, endpoint, *credentials);
    {
      std::lock_guard lock(mutex_);
      for (const auto& [subject, arn] : config_.topic_arns) topics_[subject] = arn;
    }
    // Reachable, and the credentials taken?
    QueryParameters probe;
    auto listed =
        co_await call_within("ListTopics", std::move(probe), queues_->config.request_timeout);
    if (!listed)
      co_return std::move(listed).error().with_context("connect to SNS at " + endpoint.url);
    co_return ok();
  }

  asio::awaitable<void> delete_queue(std::string url) {
    QueryParameters parameters{{"QueueUrl", url}};
    co_await queues_->call_logged("DeleteQueue", std::move(parameters),
                                  "the subscriber's own queue stays behind");
  }

  Result<void> validate() const {
    auto invalid = [this](std::string what) { return error(errc::invalid_argument, what); };
    for (char ch : config_.topic_prefix) {
      if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_')) {
        return invalid("topic_prefix '" + config_.topic_prefix +
                       "' has a character SNS names cannot carry");
      }
    }
    if (config_.content_based_deduplication && !config_.fifo_topics) {
      return invalid("content_based_deduplication needs fifo_topics");
    }
    if (!config_.delivery_policy.empty()) {
      auto parsed = Json::parse(config_.delivery_policy, nullptr, false);
      if (parsed.is_discarded() || !parsed.is_object()) {
        return invalid("delivery_policy is not a JSON object");
      }
    }
    for (const auto& [subject, arn] : config_.topic_arns) {
      if (!arn.starts_with("arn:")) {
        return invalid("topic_arns['" + subject + "'] = '" + arn + "' is not an ARN");
      }
    }
    return ok();
  }

  asio::awaitable<Result<XmlElement>> call_within(std::string action, QueryParameters parameters,
                                                  milliseconds timeout) {
    co_return co_await call_named(sns_.get(), std::string(name()), std::move(action),
                                  std::move(parameters), timeout);
  }

  // The ARN of the topic of `subject`, made when missing (CreateTopic returns the ARN of an
  // existing topic of the same name and attributes).
  asio::awaitable<Result<std::string>> topic_arn(std::string subject) {
    {
      std::lock_guard lock(mutex_);
      if (auto it = topics_.find(subject); it != topics_.end()) co_return it->second;
    }
    const std::string name =
        aws_name_for(config_.topic_prefix, subject, kTopicNameLength, config_.fifo_topics);
    QueryParameters parameters{{"Name", name}};
    int n = 0;
    auto attribute = [&parameters, &n](std::string key, std::string value) {
      const std::string prefix = "Attributes.entry." + std::to_string(++n);
      parameters.emplace_back(prefix + ".key", std::move(key));
      parameters.emplace_back(prefix + ".value", std::move(value));
    };
    if (config_.fifo_topics) {
      attribute("FifoTopic", "true");
      if (config_.content_based_deduplication) attribute("ContentBasedDeduplication", "true");
    }
    if (!config_.kms_master_key_id.empty()) attribute("KmsMasterKeyId", config_.kms_master_key_id);
    if (!config_.delivery_policy.empty()) attribute("DeliveryPolicy", config_.delivery_policy);
    auto created =
        co_await call_within("CreateTopic", std::move(parameters), queues_->config.request_timeout);
    if (!created) co_return std::move(created).error();
    const std::string arn = created->text_of("TopicArn");
    if (arn.empty()) co_return error(errc::internal, "no TopicArn in the reply for " + name);
    std::lock_guard lock(mutex_);
    topics_[subject] = arn;
    co_return arn;
  }

  // `deduplication_id`: PublishOptions::deduplication_id (empty: the message id).
  QueryParameters publish_parameters(const std::string& topic, const Message& message,
                                     const std::string& deduplication_id) const {
    const AwsMessage aws = to_aws(message);
    QueryParameters parameters{{"TopicArn", topic}, {"Message", aws.body}};
    int n = 0;
    for (const auto& [name, value] : aws.attributes) {
      const std::string prefix = "MessageAttributes.entry." + std::to_string(++n);
      parameters.emplace_back(prefix + ".Name", name);
      parameters.emplace_back(prefix + ".Value.DataType", "String");
      parameters.emplace_back(prefix + ".Value.StringValue", value);
    }
    if (config_.fifo_topics) {
      parameters.emplace_back("MessageGroupId", message_group_of(message));
      // An explicit id overrides content-based de-duplication, which would drop a resend.
      if (!deduplication_id.empty()) {
        parameters.emplace_back("MessageDeduplicationId", fifo_id(deduplication_id));
      } else if (!config_.content_based_deduplication) {
        parameters.emplace_back("MessageDeduplicationId", fifo_id(message.id()));
      }
    }
    return parameters;
  }

  // Subscribes the queue at `url` to `topic` with raw message delivery; returns the
  // subscription's ARN. A queue subscribed already is subscribed again harmlessly (SNS returns
  // the same subscription).
  asio::awaitable<Result<std::string>> subscribe_queue_to(std::string topic, std::string url) {
    std::string endpoint = url;
    if (config_.set_queue_policy || !config_.subscribe_queue_urls) {
      auto arn = co_await queues_->queue_arn(url);
      if (!arn) co_return std::move(arn).error();
      if (config_.set_queue_policy) {
        QueryParameters policy{{"QueueUrl", url},
                               {"Attribute.1.Name", "Policy"},
                               {"Attribute.1.Value", queue_policy(*arn, topic)}};
        auto set = co_await queues_->call("SetQueueAttributes", std::move(policy));
        if (!set)
          co_return std::move(set).error().with_context("letting " + topic + " send to " + url);
      }
      if (!config_.subscribe_queue_urls) endpoint = *arn;
    }
    QueryParameters parameters{{"TopicArn", topic},
                               {"Protocol", "sqs"},
                               {"Endpoint", endpoint},
                               {"Attributes.entry.1.key", "RawMessageDelivery"},
                               {"Attributes.entry.1.value", "true"},
                               {"ReturnSubscriptionArn", "true"}};
    auto subscribed =
        co_await call_within("Subscribe", std::move(parameters), queues_->config.request_timeout);
    if (!subscribed) co_return std::move(subscribed).error();
    const std::string arn = subscribed->text_of("SubscriptionArn");
    if (arn.empty()) co_return error(errc::internal, "no SubscriptionArn for " + url);
    co_return arn;
  }

  AwsSnsConfig config_;
  std::shared_ptr<QueryClient> sns_;
  std::mutex mutex_;
  std::map<std::string, std::string> topics_;  // subject -> ARN of a topic known to exist
};

}  // namespace

std::shared_ptr<Backend> make_sns_backend(AwsSnsConfig config) {
  return std::make_shared<SnsBackend>(std::move(config));
}

}  // namespace marty::messaging::aws
