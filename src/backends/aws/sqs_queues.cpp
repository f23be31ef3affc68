#include "sqs_queues.hpp"

#include <cctype>
#include <charconv>
#include <cstdlib>

#include <spdlog/spdlog.h>

#include "aws_wire.hpp"
#include "marty/messaging/detail/log.hpp"

namespace marty::messaging::aws {

using std::chrono::milliseconds;

namespace {

// CreateQueue's attributes: Attribute.N.Name / Attribute.N.Value, numbered from 1.
void add_queue_attribute(QueryParameters& parameters, std::string name, std::string value) {
  int n = 1;
  for (const auto& parameter : parameters) n += parameter.first.ends_with(".Name") ? 1 : 0;
  const std::string prefix = "Attribute." + std::to_string(n);
  parameters.emplace_back(prefix + ".Name", std::move(name));
  parameters.emplace_back(prefix + ".Value", std::move(value));
}

}  // namespace

namespace {

std::string environment(const char* variable) {
  const char* found = std::getenv(variable);
  return found != nullptr ? found : "";
}

}  // namespace

Result<Credentials> resolve_credentials(const std::string& access_key_id,
                                        const std::string& secret_access_key,
                                        const std::string& session_token,
                                        std::string_view backend) {
  // One source for all three: keys from the config never take a session token from the
  // environment (which belongs to other keys: a CI job's, a Lambda's role).
  Credentials credentials;
  if (!access_key_id.empty() || !secret_access_key.empty() || !session_token.empty()) {
    if (access_key_id.empty() || secret_access_key.empty()) {
      return Error(errc::invalid_argument,
                   std::string(access_key_id.empty() ? "access_key_id" : "secret_access_key") +
                       " is empty while other credentials are set in the config: set both "
                       "keys there, or none to take all three from the environment",
                   std::string(backend));
    }
    credentials.access_key_id = access_key_id;
    credentials.secret_access_key = secret_access_key;
    credentials.session_token = session_token;
    return credentials;
  }
  credentials.access_key_id = environment("AWS_ACCESS_KEY_ID");
  credentials.secret_access_key = environment("AWS_SECRET_ACCESS_KEY");
  credentials.session_token = environment("AWS_SESSION_TOKEN");
  if (credentials.access_key_id.empty() || credentials.secret_access_key.empty()) {
    return Error(errc::invalid_argument,
                 "no credentials: set access_key_id and secret_access_key, or "
                 "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                 std::string(backend));
  }
  return credentials;
}

asio::awaitable<Result<XmlElement>> call_named(QueryClient* client, std::string backend,
                                               std::string action, QueryParameters parameters,
                                               milliseconds timeout) {
  if (timeout.count() <= 0) {
    co_return Error(errc::deadline_exceeded, action + ": the deadline has passed", backend);
  }
  auto reply = co_await client->call(std::move(action), std::move(parameters), timeout, 5);
  if (!reply) co_return Error(reply.error().code(), reply.error().message(), backend);
  co_return reply;
}

Result<void> SqsQueues::open(std::shared_ptr<HttpClient> client) {
  auto credentials = resolve_credentials(config.access_key_id, config.secret_access_key,
                                         config.session_token, backend);
  if (!credentials) return std::move(credentials).error();
  QueryEndpoint endpoint;
  endpoint.url =
      config.endpoint.empty() ? "https://sqs." + config.region + ".amazonaws.com" : config.endpoint;
  endpoint.region = config.region;
  endpoint.service = "sqs";
  endpoint.version = "2012-11-05";
  http = std::move(client);
  sqs = std::make_unique<QueryClient>(http, endpoint, *credentials);
  std::lock_guard lock(mutex_);
  for (const auto& [subject, url] : config.queue_urls) urls_[subject] = url;
  return ok();
}

Error SqsQueues::error(errc code, std::string message) const {
  return Error(code, std::move(message), backend);
}

asio::awaitable<Result<XmlElement>> SqsQueues::call(std::string action,
                                                    QueryParameters parameters) {
  co_return co_await call_within(std::move(action), std::move(parameters), config.request_timeout);
}

asio::awaitable<Result<XmlElement>> SqsQueues::call_within(std::string action,
                                                           QueryParameters parameters,
                                                           milliseconds timeout) {
  co_return co_await call_named(sqs.get(), backend, std::move(action), std::move(parameters),
                                timeout);
}

std::optional<std::string> SqsQueues::known_url(const std::string& key) {
  std::lock_guard lock(mutex_);
  if (auto it = urls_.find(key); it != urls_.end()) return it->second;
  return std::nullopt;
}

asio::awaitable<Result<std::string>> SqsQueues::queue_url(std::string subject, bool create,
                                                          bool redrive) {
  QueueRequest request;
  request.name = aws_name_for(config.queue_prefix, subject, kQueueNameRoom, false);
  request.key = std::move(subject);
  request.create = create;
  request.redrive = redrive;
  co_return co_await queue_url(std::move(request));
}

asio::awaitable<Result<std::string>> SqsQueues::queue_url(QueueRequest request) {
  if (auto url = known_url(request.key)) co_return *url;
  const std::string& name = request.name;
  // Looked up first even when it may be made: an existing queue is used as it is (the SQS
  // emulator would empty it on a second CreateQueue).
  QueryParameters lookup{{"QueueName", name}};
  Result<XmlElement> reply = co_await call("GetQueueUrl", std::move(lookup));
  if (!reply && (!request.create || !reply.error().is(errc::not_found))) {
    co_return reply.error().is(errc::not_found)
        ? error(errc::not_found,
                "no queue '" + name + "' for '" + request.key + "': nobody has subscribed to it")
        : std::move(reply).error();
  }
  if (!reply) {
    QueryParameters attributes{{"QueueName", name}};
    auto attribute = [&attributes](std::string key, std::string value) {
      add_queue_attribute(attributes, std::move(key), std::move(value));
    };
    attribute("VisibilityTimeout", std::to_string(config.visibility_timeout.count()));
    if (request.fifo) attribute("FifoQueue", "true");
    if (!config.kms_master_key_id.empty()) attribute("KmsMasterKeyId", config.kms_master_key_id);
    if (request.redrive && config.max_receive_count > 0) {
      Result<std::string> arn = config.dead_letter_queue_arn;
      if (config.dead_letter_queue_arn.empty()) {
        const std::string base = request.fifo ? name.substr(0, name.size() - 5) : name;
        arn =
            co_await dead_letter_arn(base + (request.fifo ? "--dlq.fifo" : "--dlq"), request.fifo);
        if (!arn) co_return std::move(arn).error();
      } else if (request.fifo != config.dead_letter_queue_arn.ends_with(".fifo")) {
        // SQS moves messages only between queues of one kind.
        co_return error(errc::invalid_argument,
                        "dead_letter_queue_arn '" + config.dead_letter_queue_arn + "' is " +
                            (request.fifo ? "not " : "") + "a FIFO queue, and queue '" + name +
                            "' is" + (request.fifo ? "" : " not"));
      }
      const Json policy{{"deadLetterTargetArn", *arn},
                        {"maxReceiveCount", std::to_string(config.max_receive_count)}};
      attribute("RedrivePolicy", policy.dump());
    }
    reply = co_await call("CreateQueue", std::move(attributes));
    if (!reply && reply.error().is(errc::already_exists)) {
      // Made meanwhile, with other attributes: used as it is.
      QueryParameters again{{"QueueName", name}};
      reply = co_await call("GetQueueUrl", std::move(again));
    }
    if (!reply) co_return std::move(reply).error();
  }
  const std::string url = reply->text_of("QueueUrl");
  if (url.empty()) co_return error(errc::internal, "no QueueUrl in the reply for " + name);
  std::lock_guard lock(mutex_);
  urls_[request.key] = url;
  co_return url;
}

asio::awaitable<Result<std::string>> SqsQueues::queue_arn(std::string url) {
  QueryParameters get{{"QueueUrl", url}, {"AttributeName.1", "QueueArn"}};
  auto attributes = co_await call("GetQueueAttributes", std::move(get));
  if (!attributes) co_return std::move(attributes).error();
  for (const XmlElement* attribute : attributes->find_all("Attribute")) {
    if (attribute->text_of("Name") == "QueueArn") co_return attribute->text_of("Value");
  }
  co_return error(errc::internal, "no QueueArn for " + url);
}

asio::awaitable<Result<std::uint64_t>> SqsQueues::queue_depth(std::string url,
                                                              milliseconds timeout) {
  QueryParameters get{{"QueueUrl", url},
                      {"AttributeName.1", "ApproximateNumberOfMessages"},
                      {"AttributeName.2", "ApproximateNumberOfMessagesNotVisible"},
                      {"AttributeName.3", "ApproximateNumberOfMessagesDelayed"}};
  auto attributes = co_await call_within("GetQueueAttributes", std::move(get), timeout);
  if (!attributes) co_return std::move(attributes).error();
  std::uint64_t depth = 0;
  bool counted = false;
  for (const XmlElement* attribute : attributes->find_all("Attribute")) {
    const std::string value = attribute->text_of("Value");
    std::uint64_t count = 0;
    const auto parsed = std::from_chars(value.data(), value.data() + value.size(), count);
    if (parsed.ec != std::errc() || parsed.ptr != value.data() + value.size()) {
      co_return error(errc::internal, "GetQueueAttributes of " + url + ": " +
                                          attribute->text_of("Name") + " is not a count: '" +
                                          value + "'");
    }
    depth += count;
    counted = counted || attribute->text_of("Name") == "ApproximateNumberOfMessages";
  }
  if (!counted) {
    co_return error(errc::internal,
                    "GetQueueAttributes of " + url + " gave no ApproximateNumberOfMessages");
  }
  co_return depth;
}

asio::awaitable<Result<std::string>> SqsQueues::dead_letter_arn(std::string name, bool fifo) {
  QueryParameters lookup{{"QueueName", name}};
  auto made = co_await call("GetQueueUrl", std::move(lookup));
  if (!made && made.error().is(errc::not_found)) {
    QueryParameters create{{"QueueName", name}};
    if (fifo) add_queue_attribute(create, "FifoQueue", "true");
    // Dead letters are the queues' messages: encrypted alike.
    if (!config.kms_master_key_id.empty()) {
      add_queue_attribute(create, "KmsMasterKeyId", config.kms_master_key_id);
    }
    made = co_await call("CreateQueue", std::move(create));
  }
  if (!made) co_return std::move(made).error();
  co_return co_await queue_arn(made->text_of("QueueUrl"));
}

asio::awaitable<Result<void>> SqsQueues::send(std::string url, Message message,
                                              milliseconds timeout) {
  const AwsMessage aws = to_aws(message);
  QueryParameters parameters{{"QueueUrl", std::move(url)}, {"MessageBody", aws.body}};
  int n = 0;
  for (const auto& [name, value] : aws.attributes) {
    const std::string prefix = "MessageAttribute." + std::to_string(++n);
    parameters.emplace_back(prefix + ".Name", name);
    parameters.emplace_back(prefix + ".Value.DataType", "String");
    parameters.emplace_back(prefix + ".Value.StringValue", value);
  }
  auto sent = co_await call_within("SendMessage", std::move(parameters), timeout);
  if (!sent) co_return std::move(sent).error();
  co_return ok();
}

asio::awaitable<void> SqsQueues::call_logged(std::string action, QueryParameters parameters,
                                             std::string consequence) {
  auto done = co_await call(action, std::move(parameters));
  if (!done) {
    logger().warn("SQS {} failed ({}): {}", action, done.error().describe(), consequence);
  }
}

Result<void> validate_sqs_config(const AwsSqsConfig& c, std::string_view backend) {
  auto invalid = [backend](std::string what) {
    return Error(errc::invalid_argument, std::move(what), std::string(backend));
  };
  if (c.region.empty()) return invalid("region is empty");
  if (c.wait_time.count() < 0 || c.wait_time.count() > 20) {
    return invalid("wait_time must be 0..20 seconds");
  }
  if (c.max_messages < 1 || c.max_messages > 10) return invalid("max_messages must be 1..10");
  if (c.prefetch < 1) return invalid("prefetch must be at least 1");
  if (c.visibility_timeout.count() < 0 || c.visibility_timeout.count() > 43'200) {
    return invalid("visibility_timeout must be 0..43200 seconds");
  }
  if (c.max_receive_count < 0 || c.max_receive_count > 1000) {
    return invalid("max_receive_count must be 0..1000");
  }
  if (c.request_timeout.count() < 1) return invalid("request_timeout must be positive");
  if (!c.dead_letter_queue_arn.empty() && !c.dead_letter_queue_arn.starts_with("arn:")) {
    return invalid("dead_letter_queue_arn '" + c.dead_letter_queue_arn + "' is not an ARN");
  }
  for (char ch : c.queue_prefix) {
    if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_')) {
      return invalid("queue_prefix '" + c.queue_prefix +
                     "' has a character SQS names cannot carry");
    }
  }
  return ok();
}

}  // namespace marty::messaging::aws
