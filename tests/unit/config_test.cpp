// Configuration files: every section reaches its settings struct, and every mistake is reported
// with file, line, column and key.
#include <cstdlib>

#include <gtest/gtest.h>
#include <asio/io_context.hpp>

#include "marty/messaging/config.hpp"

namespace marty::messaging::config {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

BusConfig parse_ok(std::string_view text) {
  auto parsed = parse_config(text, "test.yaml");
  EXPECT_TRUE(parsed) << parsed.error().message();
  return parsed ? std::move(*parsed) : BusConfig();
}

std::string parse_error(std::string_view text) {
  auto parsed = parse_config(text, "test.yaml");
  EXPECT_FALSE(parsed);
  if (parsed) return {};
  EXPECT_TRUE(parsed.error().is(errc::invalid_argument));
  return parsed.error().message();
}

// Whether the error text `text` says `expected`; a failure shows the whole text.
testing::AssertionResult mentions(const std::string& text, std::string_view expected) {
  if (text.find(expected) != std::string::npos) return testing::AssertionSuccess();
  return testing::AssertionFailure() << "'" << expected << "' is not in:\n" << text;
}

TEST(ConfigDuration, TakesWholeNumbersWithUnits) {
  EXPECT_EQ(*parse_duration("250ms"), milliseconds(250));
  EXPECT_EQ(*parse_duration("30s"), seconds(30));
  EXPECT_EQ(*parse_duration("5m"), std::chrono::minutes(5));
  EXPECT_EQ(*parse_duration("2h"), std::chrono::hours(2));
  EXPECT_EQ(*parse_duration("7d"), std::chrono::hours(24 * 7));
  EXPECT_EQ(*parse_duration("0s"), milliseconds(0));
  EXPECT_TRUE(mentions(parse_duration("30").error().message(), "needs a unit"));
  EXPECT_TRUE(mentions(parse_duration("3 s").error().message(), "unknown unit"));
  EXPECT_FALSE(parse_duration("-1s"));
  EXPECT_FALSE(parse_duration("s"));
  EXPECT_FALSE(parse_duration("1.5s"));
  EXPECT_FALSE(parse_duration("999999999999999999d"));
  // Deadlines are now + duration in nanoseconds: beyond a century they would overflow.
  EXPECT_EQ(*parse_duration("36500d"), std::chrono::hours(24 * 36'500));
  EXPECT_TRUE(mentions(parse_duration("36501d").error().message(), "too long"));
  EXPECT_FALSE(parse_duration("9223372036854775807ms"));
}

TEST(ConfigFile, AnEmptyFileIsTheDefaultBus) {
  BusConfig c = parse_ok("");
  EXPECT_TRUE(c.backends.empty());
  EXPECT_FALSE(c.default_backend);
  EXPECT_EQ(c.options.service_name, "marty-service");
  EXPECT_EQ(c.saga_store.kind, SagaStoreSettings::Kind::memory);
}

TEST(ConfigFile, ReadsTheBusItsBackendsRoutesAndPatterns) {
  BusConfig c = parse_ok(R"(
service: orders
drain_timeout: 10s
consumer_lag_interval: 0ms
backend_circuit_breaker: {failure_threshold: 5, open_for: 2s}
backends:
  nats:
    servers: [nats://a:4222, nats://b:4222]
    jetstream: false
    ack_wait: 45s
    reconnect_buffer_bytes: 4MiB
    tls: {enabled: true, ca_file: /etc/ca.pem}
    streams:
      orders: {subjects: [orders.>], retention: workqueue, storage: memory, max_age: 7d, max_bytes: 1GiB}
  kafka:
    bootstrap_servers: k1:9092,k2:9092
    security_protocol: sasl_ssl
    topic_creation: broker_auto_create
    properties: {compression.type: zstd}
  redis: {url: "redis://r:6379/2", visibility_timeout: 1m}
  rabbitmq: {host: mq, port: 5673, publisher_confirms: false}
  aws_sns:
    region: eu-west-1
    fifo_topics: true
    sqs: {endpoint: "http://localhost:9324", wait_time: 5s}
  aws_sqs: {queue_prefix: shop-, max_receive_count: 0}
  memory: {group_capacity: 100, streams: {audit: {max_messages: 10}}}
default_backend: kafka
routes:
  - {match: "orders.*", backend: nats, patterns: [pub_sub, p2p]}
  - {match: "audit.*", backend: kafka}
patterns:
  req_resp: {timeout: 2s, retry_count: 0}
  streaming: {delivery_guarantee: at_least_once, ordering_enabled: true}
)");
  EXPECT_EQ(c.options.service_name, "orders");
  EXPECT_EQ(c.options.drain_timeout, seconds(10));
  EXPECT_EQ(c.options.consumer_lag_interval, milliseconds(0));
  EXPECT_EQ(c.options.backend_circuit_breaker.failure_threshold, 5u);
  ASSERT_EQ(c.backends.size(), 7u);
  // In the file's order: the bus's fallback preference.
  EXPECT_EQ(c.backends[0].type, MessageBackendType::nats);
  EXPECT_EQ(c.backends[6].type, MessageBackendType::memory);
  EXPECT_EQ(c.backends[0].origin, "test.yaml:8");

  const auto& nats = std::get<nats::NatsConfig>(c.backend(MessageBackendType::nats)->settings);
  EXPECT_EQ(nats.servers, (std::vector<std::string>{"nats://a:4222", "nats://b:4222"}));
  EXPECT_FALSE(nats.jetstream);
  EXPECT_EQ(nats.ack_wait, seconds(45));
  EXPECT_EQ(nats.reconnect_buffer_bytes, 4 << 20);
  EXPECT_TRUE(nats.tls.enabled);
  EXPECT_EQ(nats.tls.ca_file, "/etc/ca.pem");
  const nats::StreamConfig& orders = nats.streams.at("orders");
  EXPECT_EQ(orders.retention, nats::Retention::workqueue);
  EXPECT_EQ(orders.storage, nats::Storage::memory);
  EXPECT_EQ(orders.max_age, std::chrono::hours(24 * 7));
  EXPECT_EQ(orders.max_bytes, std::int64_t{1} << 30);

  const auto& kafka = std::get<kafka::KafkaConfig>(c.backend(MessageBackendType::kafka)->settings);
  EXPECT_EQ(kafka.bootstrap_servers, "k1:9092,k2:9092");
  EXPECT_EQ(kafka.security_protocol, "sasl_ssl");
  EXPECT_EQ(kafka.topic_creation, kafka::KafkaConfig::TopicCreation::broker_auto_create);
  EXPECT_EQ(kafka.properties.at("compression.type"), "zstd");
  const auto& redis = std::get<redis::RedisConfig>(c.backend(MessageBackendType::redis)->settings);
  EXPECT_EQ(redis.url, "redis://r:6379/2");
  EXPECT_EQ(redis.visibility_timeout, std::chrono::minutes(1));
  const auto& rabbit =
      std::get<rabbitmq::RabbitMqConfig>(c.backend(MessageBackendType::rabbitmq)->settings);
  EXPECT_EQ(rabbit.port, 5673);
  EXPECT_FALSE(rabbit.publisher_confirms);
  const auto& sns = std::get<aws::AwsSnsConfig>(c.backend(MessageBackendType::aws_sns)->settings);
  EXPECT_EQ(sns.region, "eu-west-1");
  EXPECT_TRUE(sns.fifo_topics);
  EXPECT_EQ(sns.sqs.endpoint, "http://localhost:9324");
  EXPECT_EQ(sns.sqs.wait_time, seconds(5));
  const auto& sqs = std::get<aws::AwsSqsConfig>(c.backend(MessageBackendType::aws_sqs)->settings);
  EXPECT_EQ(sqs.queue_prefix, "shop-");
  EXPECT_EQ(sqs.max_receive_count, 0);
  const auto& memory =
      std::get<MemoryBackendConfig>(c.backend(MessageBackendType::memory)->settings);
  EXPECT_EQ(memory.group_capacity, 100u);
  EXPECT_EQ(memory.streams.at("audit").max_messages, 10u);

  EXPECT_EQ(c.default_backend, MessageBackendType::kafka);
  ASSERT_EQ(c.routes.size(), 2u);
  EXPECT_EQ(c.routes[0].type_glob, "orders.*");
  EXPECT_EQ(c.routes[0].backend, MessageBackendType::nats);
  EXPECT_EQ(c.routes[0].patterns, (std::set<MessagingPattern>{MessagingPattern::pub_sub,
                                                              MessagingPattern::point_to_point}));
  EXPECT_TRUE(c.routes[1].patterns.empty());
  // A pattern's unset fields keep that pattern's defaults.
  const MessagingPatternConfig& rr = c.patterns.at(MessagingPattern::request_response);
  EXPECT_EQ(rr.timeout, seconds(2));
  EXPECT_EQ(rr.retry_count, 0);
  EXPECT_EQ(rr.dead_letter_enabled,
            default_pattern_config(MessagingPattern::request_response).dead_letter_enabled);
  EXPECT_EQ(c.patterns.at(MessagingPattern::streaming).timeout,
            default_pattern_config(MessagingPattern::streaming).timeout);
  EXPECT_EQ(c.patterns.count(MessagingPattern::pub_sub), 0u);
}

TEST(ConfigFile, ReadsSagaDefinitionsAndTheirStore) {
  BusConfig c = parse_ok(R"(
sagas:
  lease: 30s
  store: {type: sqlite, path: /var/lib/shop/sagas.db, sync_to_disk: true}
  definitions:
    order_flow:
      timeout: 10m
      require_compensations: true
      steps:
        - {name: reserve, service: inventory, action: reserve_stock, compensation: release_stock}
        - service: billing
          action: charge
          compensation: refund
          timeout: 5s
          critical: true
          retry: {max_attempts: 5, initial_backoff: 200ms, multiplier: 3}
)");
  EXPECT_EQ(c.saga_lease, seconds(30));
  EXPECT_EQ(c.saga_store.kind, SagaStoreSettings::Kind::sqlite);
  EXPECT_EQ(c.saga_store.path, "/var/lib/shop/sagas.db");
  EXPECT_TRUE(c.saga_store.sqlite.sync_to_disk);
  ASSERT_EQ(c.sagas.size(), 1u);
  const saga::SagaDefinition& d = c.sagas[0];
  EXPECT_EQ(d.name, "order_flow");
  EXPECT_EQ(d.timeout, std::chrono::minutes(10));
  ASSERT_EQ(d.steps.size(), 2u);
  EXPECT_EQ(d.steps[0].compensation, "release_stock");
  EXPECT_EQ(d.steps[1].name, "charge");  // a step without a name is named by its action
  EXPECT_EQ(d.steps[1].timeout, seconds(5));
  EXPECT_EQ(d.steps[1].retry.max_attempts, 5);
  EXPECT_EQ(d.steps[1].retry.initial_backoff, milliseconds(200));
  EXPECT_DOUBLE_EQ(d.steps[1].retry.multiplier, 3.0);
}

TEST(ConfigFile, ReportsEveryProblemWithFileLineColumnAndKey) {
  const std::string errors = parse_error(R"(service: shop
backends:
  nats:
    severs: [nats://x]
  rabbitmq: {port: 99999999999}
  kafka: {}
  mqtt: {}
default_backend: redis
routes:
  - {backend: nats}
patterns:
  pub_sub: {backoff_jitter: 2, dead_letter_enabled: yes}
  fanout: {}
sagas:
  store: {type: sqlite}
  definitions:
    broken:
      steps:
        - {name: a, service: s}
)");
  for (const char* expected : {
           "11 problems in test.yaml:",
           "test.yaml:4:5: backends.nats: unknown key 'severs' (did you mean 'servers'?)",
           "test.yaml:5:20: backends.rabbitmq.port: 99999999999 is out of range",
           "test.yaml:6:10: backends.kafka: bootstrap_servers is required",
           "test.yaml:7:9: backends: unknown backend",
           "test.yaml:8:18: default_backend: backend 'redis' is not declared under backends",
           "test.yaml:10:5: routes[0]: match is required",
           "test.yaml:12:53: patterns.pub_sub.dead_letter_enabled: 'yes' is not true or false",
           "test.yaml:12:12: patterns.pub_sub: backoff_jitter must be between 0 and 1",
           "test.yaml:15:10: sagas.store: path is required for a sqlite store",
           "test.yaml:18:7: sagas.definitions.broken: saga definition 'broken': step 1 'a' has no "
           "action",
           "test.yaml:13:11: patterns.fanout: unknown messaging pattern 'fanout'",
       }) {
    EXPECT_TRUE(mentions(errors, expected));
  }
}

TEST(ConfigFile, RoutesMaySendThePythonEnvelopeReceiptMayLeaveItAloneAndStartMayWait) {
  BusConfig c = parse_ok(R"(
python_envelope_on_receipt: false
connect_wait: 20s
routes:
  - {match: "legacy.*", backend: memory, format: python_envelope}
  - {match: "*", backend: memory}
)");
  EXPECT_FALSE(c.options.python_envelope_on_receipt);
  EXPECT_EQ(c.options.connect_wait, std::chrono::seconds(20));
  ASSERT_EQ(c.routes.size(), 2u);
  EXPECT_EQ(c.routes[0].format, WireFormat::python_envelope);
  EXPECT_EQ(c.routes[1].format, WireFormat::cloudevents);
  EXPECT_TRUE(parse_ok("routes: []").options.python_envelope_on_receipt);
  EXPECT_TRUE(mentions(parse_error(R"(routes:
  - {match: "*", backend: memory, format: pickle}
)"),
                       "test.yaml:2:43: routes[0].format: unknown wire format 'pickle' (valid: "
                       "cloudevents, python_envelope)"));
}

TEST(ConfigFile, RejectsWrongShapes) {
  EXPECT_TRUE(
      mentions(parse_error("backends: [nats]"), "test.yaml:1:11: backends: expected a mapping"));
  EXPECT_TRUE(mentions(parse_error("backends:\n  nats:\n    servers: {a: b}\n"),
                       "backends.nats.servers: expected a list"));
  EXPECT_TRUE(mentions(parse_error("service: [a, b]\n"), "expected a single value, not a list"));
  EXPECT_TRUE(
      mentions(parse_error("routes:\n  - match: x\n    backend: nats\n    patterns: [pubsub]\n"),
               "routes[0].patterns"));
  EXPECT_TRUE(mentions(parse_error("backends:\n  memory:\n    max_payload_bytes: 10 MiB\n"),
                       "not a byte count"));
  EXPECT_TRUE(mentions(parse_error("a: [unclosed\n"), "test.yaml:2:1:"));
}

TEST(ConfigFile, ReportsADuplicateKeyWhereverItIs) {
  // A YAML parser keeps the first of two equal keys; the second, often the edit meant to win,
  // would be ignored without a word.
  const std::string errors = parse_error(R"(service: a
backends:
  nats:
    servers: [nats://one]
    servers: [nats://two]
routes:
  - {match: "x.*", backend: nats, match: "y.*"}
service: b
)");
  for (const char* expected : {
           "test.yaml:5:5: backends.nats: duplicate key 'servers' (first at line 4)",
           "test.yaml:7:35: routes[0]: duplicate key 'match' (first at line 7)",
           "test.yaml:8:1: duplicate key 'service' (first at line 1)",
       }) {
    EXPECT_TRUE(mentions(errors, expected));
  }
}

TEST(ConfigFile, ReportsEachProblemOnce) {
  // aws_sqs reads its access settings and its queue settings from one mapping: the endpoint
  // used to be read (and reported) by both.
  ::unsetenv("MARTY_CONFIG_TEST_UNSET");
  EXPECT_EQ(parse_error("backends:\n  aws_sqs: {endpoint: \"${MARTY_CONFIG_TEST_UNSET}\"}\n"),
            "test.yaml:2:23: backends.aws_sqs.endpoint: environment variable "
            "MARTY_CONFIG_TEST_UNSET is not set (write ${MARTY_CONFIG_TEST_UNSET:-default} for a "
            "default)");
}

TEST(ConfigFile, RefusesByteCountsOutsideWhatTheSettingHolds) {
  // -1 is NATS's "unlimited"; with a unit it is a typo, not a bigger unlimited.
  EXPECT_EQ(std::get<nats::NatsConfig>(
                parse_ok("backends:\n  nats:\n    streams:\n      s: {max_bytes: -1}\n")
                    .backends.at(0)
                    .settings)
                .streams.at("s")
                .max_bytes,
            -1);
  EXPECT_TRUE(
      mentions(parse_error("backends:\n  nats:\n    streams:\n      s: {max_bytes: -1GiB}\n"),
               "'-1GiB' is not a byte count"));
  EXPECT_TRUE(mentions(parse_error("backends:\n  memory:\n    max_payload_bytes: -1\n"),
                       "must not be negative"));
  // The NATS client keeps its reconnect buffer size in an int: 2GiB would wrap, not be capped.
  EXPECT_TRUE(mentions(parse_error("backends:\n  nats:\n    reconnect_buffer_bytes: 2GiB\n"),
                       "backends.nats.reconnect_buffer_bytes: must be from 0 to 2147483647 bytes"));
  EXPECT_EQ(
      std::get<nats::NatsConfig>(parse_ok("backends:\n  nats:\n    reconnect_buffer_bytes: 1GiB\n")
                                     .backends.at(0)
                                     .settings)
          .reconnect_buffer_bytes,
      1 << 30);
}

TEST(ConfigFile, SubstitutesEnvironmentVariables) {
  ::setenv("MARTY_CONFIG_TEST_URL", "nats://from-env:4222", 1);
  ::setenv("MARTY_CONFIG_TEST_EMPTY", "", 1);
  ::setenv("MARTY_CONFIG_TEST_WAIT", "3s", 1);
  ::unsetenv("MARTY_CONFIG_TEST_UNSET");
  BusConfig c = parse_ok(R"(
service: "${MARTY_CONFIG_TEST_UNSET:-fallback}-svc"
backends:
  nats:
    servers: ["${MARTY_CONFIG_TEST_URL}"]
    password: "${MARTY_CONFIG_TEST_EMPTY:-default-pw}"
    token: "a$$b"
    user: "cost: $5"
    reconnect_wait: ${MARTY_CONFIG_TEST_WAIT}
)");
  EXPECT_EQ(c.options.service_name, "fallback-svc");
  const auto& nats = std::get<nats::NatsConfig>(c.backends.at(0).settings);
  EXPECT_EQ(nats.servers.at(0), "nats://from-env:4222");
  EXPECT_EQ(nats.password, "default-pw");  // empty counts as unset for :-
  EXPECT_EQ(nats.token, "a$b");
  EXPECT_EQ(nats.user, "cost: $5");  // a '$' not followed by '{' or '$' is itself
  EXPECT_EQ(nats.reconnect_wait, seconds(3));

  EXPECT_TRUE(
      mentions(parse_error("service: ${MARTY_CONFIG_TEST_UNSET}\n"),
               "test.yaml:1:10: service: environment variable MARTY_CONFIG_TEST_UNSET is not set"));
  EXPECT_TRUE(
      mentions(parse_error("service: \"${1BAD}\"\n"), "does not name an environment variable"));
  EXPECT_TRUE(mentions(parse_error("service: \"${OPEN\"\n"), "without its closing"));
  // A default is plain text: a reference inside one would be cut at its first '}'.
  EXPECT_TRUE(mentions(parse_error("service: \"${MARTY_CONFIG_TEST_UNSET:-${HOME}}\"\n"),
                       "nests a reference in a default"));
  // A value from the environment may be a secret: errors quote the reference, not the value.
  ::setenv("MARTY_CONFIG_TEST_SECRET", "s3cret", 1);
  const std::string error =
      parse_error("backends:\n  redis:\n    port: ${MARTY_CONFIG_TEST_SECRET}\n");
  EXPECT_TRUE(mentions(error, "'${MARTY_CONFIG_TEST_SECRET}' is not a whole number"));
  EXPECT_EQ(error.find("s3cret"), std::string::npos);
}

TEST(ConfigFile, LoadsFilesAndNamesAMissingOne) {
  auto missing = load_config_file("/nonexistent/bus.yaml");
  ASSERT_FALSE(missing);
  EXPECT_TRUE(missing.error().is(errc::not_found));
  EXPECT_TRUE(mentions(missing.error().message(), "/nonexistent/bus.yaml"));
}

TEST(ConfigBus, BuildsTheBusTheFileDeclares) {
  BusConfig c = parse_ok(R"(
service: shop
backends:
  memory: {}
default_backend: memory
routes: [{match: "audit.*", backend: memory}]
patterns:
  req_resp: {timeout: 1500ms}
sagas:
  definitions:
    one: {steps: [{name: a, service: s, action: a}]}
)");
  asio::io_context io;
  auto bus =
      create_bus(io.get_executor(), c, BackendMakers{{MessageBackendType::memory, memory_maker()}});
  ASSERT_TRUE(bus) << bus.error().message();
  EXPECT_TRUE((*bus)->backend(MessageBackendType::memory));
  EXPECT_EQ((*bus)->pattern_config(MessagingPattern::request_response).timeout, milliseconds(1500));
  auto store = open_saga_store(c);
  ASSERT_TRUE(store);
  auto manager = create_saga_manager(c, *bus, *store);
  ASSERT_TRUE(manager) << manager.error().message();
}

TEST(ConfigBus, NamesABackendTheProgramCannotMake) {
  BusConfig c = parse_ok("backends:\n  kafka:\n    bootstrap_servers: k:9092\n");
  asio::io_context io;
  auto bus =
      create_bus(io.get_executor(), c, BackendMakers{{MessageBackendType::memory, memory_maker()}});
  ASSERT_FALSE(bus);
  EXPECT_TRUE(bus.error().is(errc::unimplemented));
  EXPECT_TRUE(mentions(bus.error().message(), "test.yaml:3: backend 'kafka' is not available"));
}

TEST(ConfigBus, OpensASqliteSagaStoreAndNamesAFileItCannotOpen) {
  BusConfig c = parse_ok("sagas:\n  store: {type: sqlite, path: /nonexistent/dir/sagas.db}\n");
  auto store = open_saga_store(c);
  ASSERT_FALSE(store);
  EXPECT_TRUE(mentions(store.error().message(), "/nonexistent/dir/sagas.db"));
}

}  // namespace
}  // namespace marty::messaging::config
