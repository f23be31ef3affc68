// The configuration file's schema: which keys exist and where each goes. docs/configuration.md
// documents the same keys; keep the two together.
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "marty/messaging/config.hpp"
#include "yaml_reader.hpp"

namespace marty::messaging::config {

using detail::Node;

namespace {

void read_memory(Node& node, MemoryBackendConfig& c) {
  auto read_limits = [](Node& n, MemoryStreamLimits& limits) {
    if (!n.expect_map()) return;
    n.read("max_messages", limits.max_messages);
    n.read_bytes("max_bytes", limits.max_bytes);
    n.read("max_age", limits.max_age);
    n.finish();
  };
  node.read("group_capacity", c.group_capacity);
  node.read_bytes("max_payload_bytes", c.max_payload_bytes);
  node.read("native_request_reply", c.native_request_reply);
  if (Node defaults = node.child("stream_defaults"); !defaults.is_null()) {
    read_limits(defaults, c.stream_defaults);
  }
  if (Node streams = node.child("streams"); streams.expect_map()) {
    for (auto& [name, entry] : streams.entries()) read_limits(entry, c.streams[name]);
  }
}

void read_nats_stream(Node& n, nats::StreamConfig& s) {
  if (!n.expect_map()) return;
  n.read("subjects", s.subjects);
  n.read_enum("retention", s.retention,
              {{"limits", nats::Retention::limits},
               {"interest", nats::Retention::interest},
               {"workqueue", nats::Retention::workqueue}});
  n.read_enum("storage", s.storage,
              {{"file", nats::Storage::file}, {"memory", nats::Storage::memory}});
  n.read("max_messages", s.max_messages);
  n.read_bytes("max_bytes", s.max_bytes);
  n.read("max_age", s.max_age);
  n.read("replicas", s.replicas);
  n.read("duplicate_window", s.duplicate_window);
  n.finish();
}

// The `tls` map NATS and RabbitMQ share (files, on/off, host check); `more` reads a backend's
// own keys before unknown ones are reported.
template <class Tls, class More>
void read_tls(Node& node, Tls& t, More more) {
  Node tls = node.child("tls");
  if (!tls.expect_map() || tls.is_null()) return;
  tls.read("enabled", t.enabled);
  tls.read("ca_file", t.ca_file);
  tls.read("cert_file", t.cert_file);
  tls.read("key_file", t.key_file);
  tls.read("verify_hostname", t.verify_hostname);
  more(tls, t);
  tls.finish();
}

void read_nats(Node& node, nats::NatsConfig& c) {
  node.read("servers", c.servers);
  node.read("name", c.name);
  node.read("user", c.user);
  node.read("password", c.password);
  node.read("token", c.token);
  node.read("credentials_file", c.credentials_file);
  read_tls(node, c.tls, [](Node&, auto&) {});
  node.read("connect_timeout", c.connect_timeout);
  node.read("max_reconnect_attempts", c.max_reconnect_attempts);
  node.read("reconnect_wait", c.reconnect_wait);
  if (Node buffer = node.child("reconnect_buffer_bytes"); !buffer.is_null()) {
    std::int64_t bytes = 0;
    if (buffer.get_bytes(bytes)) {
      if (bytes < 0 || bytes > std::numeric_limits<int>::max()) {
        buffer.problem("must be from 0 to 2147483647 bytes (the NATS client holds it in an int)");
      } else {
        c.reconnect_buffer_bytes = static_cast<int>(bytes);
      }
    }
  }
  node.read("jetstream", c.jetstream);
  node.read("topic_stream", c.topic_stream);
  node.read("topic_subjects", c.topic_subjects);
  node.read_enum("topic_storage", c.topic_storage,
                 {{"file", nats::Storage::file}, {"memory", nats::Storage::memory}});
  node.read("command_stream", c.command_stream);
  if (Node streams = node.child("streams"); streams.expect_map()) {
    for (auto& [name, entry] : streams.entries()) read_nats_stream(entry, c.streams[name]);
  }
  if (Node defaults = node.child("stream_defaults"); !defaults.is_null()) {
    read_nats_stream(defaults, c.stream_defaults);
  }
  node.read("max_ack_pending", c.max_ack_pending);
  node.read("ack_wait", c.ack_wait);
  node.read("publish_timeout", c.publish_timeout);
  node.read("blocking_threads", c.blocking_threads);
}

void read_kafka(Node& node, kafka::KafkaConfig& c) {
  node.read("bootstrap_servers", c.bootstrap_servers);
  node.read("client_id", c.client_id);
  node.read_enum("security_protocol", c.security_protocol,
                 {{"plaintext", std::string("plaintext")},
                  {"ssl", std::string("ssl")},
                  {"sasl_plaintext", std::string("sasl_plaintext")},
                  {"sasl_ssl", std::string("sasl_ssl")}});
  node.read("sasl_mechanism", c.sasl_mechanism);
  node.read("sasl_username", c.sasl_username);
  node.read("sasl_password", c.sasl_password);
  node.read("ssl_ca_location", c.ssl_ca_location);
  node.read("ssl_certificate_location", c.ssl_certificate_location);
  node.read("ssl_key_location", c.ssl_key_location);
  node.read("ssl_key_password", c.ssl_key_password);
  node.read("properties", c.properties);
  node.read("producer_properties", c.producer_properties);
  node.read("consumer_properties", c.consumer_properties);
  node.read("topic_prefix", c.topic_prefix);
  using TopicCreation = kafka::KafkaConfig::TopicCreation;
  node.read_enum("topic_creation", c.topic_creation,
                 {{"admin", TopicCreation::admin},
                  {"broker_auto_create", TopicCreation::broker_auto_create},
                  {"none", TopicCreation::none}});
  node.read("topic_partitions", c.topic_partitions);
  node.read("topic_replication_factor", c.topic_replication_factor);
  node.read("session_timeout", c.session_timeout);
  node.read("max_in_flight", c.max_in_flight);
  node.read("commit_interval", c.commit_interval);
  node.read("rebalance_drain", c.rebalance_drain);
  node.read("linger", c.linger);
  node.read("request_timeout", c.request_timeout);
  if (c.bootstrap_servers.empty() && !node.has("bootstrap_servers")) {
    node.problem("bootstrap_servers is required (\"host:port,host:port\")");
  }
}

void read_rabbitmq(Node& node, rabbitmq::RabbitMqConfig& c) {
  node.read("url", c.url);
  node.read("host", c.host);
  node.read("port", c.port);
  node.read("vhost", c.vhost);
  node.read("user", c.user);
  node.read("password", c.password);
  read_tls(node, c.tls, [](Node& tls, auto& t) { tls.read("verify_peer", t.verify_peer); });
  node.read("heartbeat_seconds", c.heartbeat_seconds);
  node.read("connect_timeout", c.connect_timeout);
  node.read("reconnect_wait", c.reconnect_wait);
  node.read("outage_wait", c.outage_wait);
  node.read("prefetch", c.prefetch);
  node.read("publisher_confirms", c.publisher_confirms);
  node.read("durable", c.durable);
  node.read("events_exchange", c.events_exchange);
  node.read("commands_exchange", c.commands_exchange);
  node.read("dead_letter_exchange", c.dead_letter_exchange);
  node.read("retry_exchange", c.retry_exchange);
  node.read("stream_max_age", c.stream_max_age);
}

void read_redis(Node& node, redis::RedisConfig& c) {
  node.read("url", c.url);
  node.read("host", c.host);
  node.read("port", c.port);
  node.read("database", c.database);
  node.read("username", c.username);
  node.read("password", c.password);
  node.read("client_name", c.client_name);
  node.read("connect_timeout", c.connect_timeout);
  node.read("reconnect_wait", c.reconnect_wait);
  node.read("outage_wait", c.outage_wait);
  node.read("key_prefix", c.key_prefix);
  node.read("max_stream_length", c.max_stream_length);
  node.read("visibility_timeout", c.visibility_timeout);
  node.read("reclaim_interval", c.reclaim_interval);
  node.read("max_deliveries", c.max_deliveries);
  node.read("prefetch", c.prefetch);
  node.read("block_timeout", c.block_timeout);
}

// Region, credentials and endpoint: the same keys for SQS and SNS.
template <class AwsConfig>
void read_aws_access(Node& node, AwsConfig& c) {
  node.read("region", c.region);
  node.read("access_key_id", c.access_key_id);
  node.read("secret_access_key", c.secret_access_key);
  node.read("session_token", c.session_token);
  node.read("endpoint", c.endpoint);
}

// The SQS settings beyond access (SNS nests them under `sqs`, which has no access keys but may
// have its own endpoint).
void read_sqs_queues(Node& node, aws::AwsSqsConfig& c) {
  node.read("queue_prefix", c.queue_prefix);
  node.read("queue_urls", c.queue_urls);
  node.read("visibility_timeout", c.visibility_timeout);
  node.read("wait_time", c.wait_time);
  node.read("max_messages", c.max_messages);
  node.read("prefetch", c.prefetch);
  node.read("max_receive_count", c.max_receive_count);
  node.read("dead_letter_queue_arn", c.dead_letter_queue_arn);
  node.read("kms_master_key_id", c.kms_master_key_id);
  node.read("connect_timeout", c.connect_timeout);
  node.read("request_timeout", c.request_timeout);
}

void read_sqs(Node& node, aws::AwsSqsConfig& c) {
  read_aws_access(node, c);
  read_sqs_queues(node, c);
}

void read_sns(Node& node, aws::AwsSnsConfig& c) {
  read_aws_access(node, c);
  node.read("topic_prefix", c.topic_prefix);
  node.read("topic_arns", c.topic_arns);
  node.read("fifo_topics", c.fifo_topics);
  node.read("content_based_deduplication", c.content_based_deduplication);
  node.read("kms_master_key_id", c.kms_master_key_id);
  node.read("delivery_policy", c.delivery_policy);
  node.read("set_queue_policy", c.set_queue_policy);
  node.read("subscribe_queue_urls", c.subscribe_queue_urls);
  if (Node sqs = node.child("sqs"); sqs.expect_map() && !sqs.is_null()) {
    sqs.read("endpoint", c.sqs.endpoint);
    read_sqs_queues(sqs, c.sqs);
    sqs.finish();
  }
}

template <class Settings>
BackendSettingsVariant read_into(Node& node, void (*read)(Node&, Settings&)) {
  Settings settings;
  read(node, settings);
  return settings;
}

BackendSettingsVariant read_backend(MessageBackendType type, Node& node) {
  switch (type) {
    case MessageBackendType::memory:
      return read_into(node, read_memory);
    case MessageBackendType::nats:
      return read_into(node, read_nats);
    case MessageBackendType::kafka:
      return read_into(node, read_kafka);
    case MessageBackendType::rabbitmq:
      return read_into(node, read_rabbitmq);
    case MessageBackendType::redis:
      return read_into(node, read_redis);
    case MessageBackendType::aws_sns:
      return read_into(node, read_sns);
    case MessageBackendType::aws_sqs:
      return read_into(node, read_sqs);
  }
  return MemoryBackendConfig{};
}

bool get_backend_type(const Node& node, MessageBackendType& out) {
  detail::Scalar name;
  if (!node.scalar(name)) return false;
  auto parsed = parse_backend_type(name.value);
  if (!parsed) {
    node.problem(name.from_environment ? "'" + name.shown() + "' is not a backend type"
                                       : parsed.error().message());
    return false;
  }
  out = *parsed;
  return true;
}

bool get_pattern(const Node& node, std::string_view name, MessagingPattern& out) {
  auto parsed = parse_pattern(name);
  if (!parsed) {
    node.problem(parsed.error().message());
    return false;
  }
  out = *parsed;
  return true;
}

void read_pattern(Node& node, MessagingPatternConfig& c) {
  if (!node.expect_map()) return;
  if (Node guarantee = node.child("delivery_guarantee"); !guarantee.is_null()) {
    guarantee.get_enum(c.delivery_guarantee, {{"at_most_once", DeliveryGuarantee::at_most_once},
                                              {"at_least_once", DeliveryGuarantee::at_least_once},
                                              {"exactly_once", DeliveryGuarantee::exactly_once}});
  }
  node.read("timeout", c.timeout);
  node.read("retry_count", c.retry_count);
  node.read("initial_backoff", c.initial_backoff);
  node.read("max_backoff", c.max_backoff);
  node.read("backoff_multiplier", c.backoff_multiplier);
  node.read("backoff_jitter", c.backoff_jitter);
  node.read("dead_letter_enabled", c.dead_letter_enabled);
  node.read("ordering_enabled", c.ordering_enabled);
  node.read("content_based_routing", c.content_based_routing);
  node.read("options", c.options);
  node.finish();
  if (c.retry_count < 0) node.problem("retry_count must not be negative");
  if (c.timeout.count() <= 0) node.problem("timeout must be positive");
  if (c.backoff_multiplier < 1.0) node.problem("backoff_multiplier must be at least 1");
  if (c.backoff_jitter < 0.0 || c.backoff_jitter > 1.0) {
    node.problem("backoff_jitter must be between 0 and 1");
  }
}

void read_retry(Node& node, saga::RetryPolicy& r) {
  if (!node.expect_map()) return;
  node.read("max_attempts", r.max_attempts);
  node.read("initial_backoff", r.initial_backoff);
  node.read("max_backoff", r.max_backoff);
  node.read("multiplier", r.multiplier);
  node.read("jitter", r.jitter);
  node.finish();
}

void read_saga_definition(Node& node, saga::SagaDefinition& d) {
  if (!node.expect_map()) return;
  node.read("timeout", d.timeout);
  node.read("require_compensations", d.require_compensations);
  if (Node retry = node.child("compensation_retry"); !retry.is_null()) {
    read_retry(retry, d.compensation_retry);
  }
  Node steps = node.child("steps");
  if (steps.is_null()) {
    node.problem("steps is required: a list of {name, service, action, compensation}");
  } else if (steps.expect_list()) {
    for (auto& [index, entry] : steps.entries()) {
      saga::SagaStep step;
      if (entry.expect_map()) {
        entry.read("name", step.name);
        entry.read("service", step.service);
        entry.read("action", step.action);
        entry.read("compensation", step.compensation);
        entry.read("timeout", step.timeout);
        entry.read("critical", step.critical);
        if (Node retry = entry.child("retry"); !retry.is_null()) read_retry(retry, step.retry);
        entry.finish();
        if (step.name.empty()) step.name = step.action;  // a step is named by its action
      }
      d.steps.push_back(std::move(step));
    }
  }
  node.finish();
  if (auto valid = saga::validate(d); !valid) node.problem(valid.error().message());
}

void read_sagas(Node& node, BusConfig& config) {
  if (!node.expect_map()) return;
  node.read("lease", config.saga_lease);
  if (Node store = node.child("store"); store.expect_map() && !store.is_null()) {
    SagaStoreSettings& s = config.saga_store;
    store.read_enum(
        "type", s.kind,
        {{"memory", SagaStoreSettings::Kind::memory}, {"sqlite", SagaStoreSettings::Kind::sqlite}});
    store.read("path", s.path);
    store.read("sync_to_disk", s.sqlite.sync_to_disk);
    store.read("busy_timeout", s.sqlite.busy_timeout);
    store.finish();
    if (s.kind == SagaStoreSettings::Kind::sqlite && s.path.empty()) {
      store.problem("path is required for a sqlite store");
    }
  }
  if (Node definitions = node.child("definitions"); definitions.expect_map()) {
    for (auto& [name, entry] : definitions.entries()) {
      saga::SagaDefinition definition;
      definition.name = name;
      read_saga_definition(entry, definition);
      config.sagas.push_back(std::move(definition));
    }
  }
  node.finish();
}

void read_routes(Node& node, BusConfig& config) {
  if (!node.expect_list()) return;
  for (auto& [index, entry] : node.entries()) {
    if (!entry.expect_map()) continue;
    Route route;
    entry.read("match", route.type_glob);
    if (route.type_glob.empty())
      entry.problem("match is required: a message-type glob (\"orders.*\")");
    Node backend = entry.child("backend");
    if (backend.is_null()) {
      entry.problem("backend is required");
    } else if (get_backend_type(backend, route.backend) &&
               route.backend != MessageBackendType::memory && !config.backend(route.backend)) {
      backend.problem("backend '" + std::string(to_string(route.backend)) +
                      "' is not declared under backends");
    }
    if (Node patterns = entry.child("patterns"); !patterns.is_null()) {
      std::vector<std::string> names;
      if (patterns.get(names)) {
        for (const std::string& name : names) {
          MessagingPattern pattern{};
          if (get_pattern(patterns, name, pattern)) route.patterns.insert(pattern);
        }
      }
    }
    if (Node format = entry.child("format"); !format.is_null()) {
      std::string name;
      if (format.get(name)) {
        if (auto parsed = parse_wire_format(name); parsed) {
          route.format = *parsed;
        } else {
          format.problem(parsed.error().message());
        }
      }
    }
    entry.finish();
    config.routes.push_back(std::move(route));
  }
}

void read_root(Node& root, BusConfig& config, detail::Problems& problems) {
  if (!root.expect_map()) return;
  root.read("service", config.options.service_name);
  root.read("drain_timeout", config.options.drain_timeout);
  root.read("consumer_lag_interval", config.options.consumer_lag_interval);
  root.read("python_envelope_on_receipt", config.options.python_envelope_on_receipt);
  root.read("connect_wait", config.options.connect_wait);
  if (Node breaker = root.child("backend_circuit_breaker");
      breaker.expect_map() && !breaker.is_null()) {
    breaker.read("failure_threshold", config.options.backend_circuit_breaker.failure_threshold);
    breaker.read("open_for", config.options.backend_circuit_breaker.open_for);
    breaker.finish();
  }
  if (Node backends = root.child("backends"); backends.expect_map()) {
    for (auto& [name, entry] : backends.entries()) {
      auto type = parse_backend_type(name);
      if (!type) {
        problems.add(entry.yaml().Mark(), backends.path(), type.error().message());
        continue;
      }
      if (!entry.expect_map()) continue;
      BackendSettings settings;
      settings.type = *type;
      settings.origin = problems.where(entry.yaml().Mark());
      settings.settings = read_backend(*type, entry);
      entry.finish();
      config.backends.push_back(std::move(settings));
    }
  }
  if (Node fallback = root.child("default_backend"); !fallback.is_null()) {
    MessageBackendType type{};
    if (get_backend_type(fallback, type)) {
      if (type != MessageBackendType::memory && !config.backend(type)) {
        fallback.problem("backend '" + std::string(to_string(type)) +
                         "' is not declared under backends");
      }
      config.default_backend = type;
    }
  }
  if (Node routes = root.child("routes"); !routes.is_null()) read_routes(routes, config);
  if (Node patterns = root.child("patterns"); patterns.expect_map()) {
    for (auto& [name, entry] : patterns.entries()) {
      MessagingPattern pattern{};
      if (!get_pattern(entry, name, pattern)) continue;
      MessagingPatternConfig settings = default_pattern_config(pattern);
      read_pattern(entry, settings);
      config.patterns[pattern] = std::move(settings);
    }
  }
  if (Node sagas = root.child("sagas"); !sagas.is_null()) read_sagas(sagas, config);
  root.finish();
}

}  // namespace

const BackendSettings* BusConfig::backend(MessageBackendType type) const {
  for (const BackendSettings& settings : backends) {
    if (settings.type == type) return &settings;
  }
  return nullptr;
}

Result<BusConfig> parse_config(std::string_view yaml_text, std::string source_name) {
  detail::Problems problems(source_name);
  YAML::Node document;
  try {
    document = YAML::Load(std::string(yaml_text));
  } catch (const YAML::Exception& e) {
    problems.add(e.mark, "", e.msg);
    return Error(errc::invalid_argument, problems.joined());
  }
  BusConfig config;
  config.source = std::move(source_name);
  detail::report_duplicate_keys(document, "", problems);
  Node root(document, "", problems);
  read_root(root, config, problems);
  if (!problems.empty()) return Error(errc::invalid_argument, problems.joined());
  return config;
}

Result<BusConfig> load_config_file(const std::string& path) {
  std::error_code ignored;
  if (std::filesystem::is_directory(path, ignored)) {
    return Error(errc::invalid_argument,
                 "configuration file " + path + " is a directory, not a YAML file");
  }
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return Error(errc::not_found,
                 "cannot read configuration file " + path + ": " + std::strerror(errno));
  }
  std::ostringstream text;
  text << file.rdbuf();
  return parse_config(text.str(), path);
}

}  // namespace marty::messaging::config
