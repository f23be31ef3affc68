// The conformance suite against librdkafka's mock cluster, run as a process of its own by
// scripts/brokers (which exports MARTY_KAFKA_BOOTSTRAP) and reached over TCP like a real
// cluster. Without it this fails: a missing broker is a failure.
#include <cstdlib>

#include "conformance.hpp"
#include "marty/messaging/kafka_backend.hpp"

namespace marty::messaging::conformance {
namespace {

std::string bootstrap() {
  const char* servers = std::getenv("MARTY_KAFKA_BOOTSTRAP");
  return servers != nullptr ? servers : "";
}

BackendUnderTest kafka_backend() {
  BackendUnderTest backend;
  backend.name = "kafka";
  backend.type = MessageBackendType::kafka;
  backend.connect = [] {
    kafka::KafkaConfig config;
    config.bootstrap_servers = bootstrap();
    // The mock cluster has no admin API for topics; it creates them on first use.
    config.topic_creation = kafka::KafkaConfig::TopicCreation::broker_auto_create;
    // The mock waits about a session timeout before it rebalances a group a member left.
    config.session_timeout = std::chrono::milliseconds(4'000);
    // The mock answers an empty fetch only after fetch.wait.max.ms (500 ms by default), where a
    // real broker answers as soon as a record arrives: every hop would wait for it.
    config.consumer_properties["fetch.wait.max.ms"] = "10";
    return kafka::make_backend(config);
  };
  return backend;
}

const std::vector<BackendUnderTest>& backends() {
  static const std::vector<BackendUnderTest> all{kafka_backend()};
  return all;
}

INSTANTIATE_TEST_SUITE_P(Kafka, Conformance, ::testing::ValuesIn(backends()),
                         [](const auto& param_info) { return param_info.param.name; });

}  // namespace
}  // namespace marty::messaging::conformance

int main(int argc, char** argv) {
  return marty::messaging::conformance::run_broker_suite(
      argc, argv, "MARTY_KAFKA_BOOTSTRAP", "kafka", marty::messaging::conformance::backends());
}
