// The conformance suite against a real RabbitMQ node started by scripts/brokers (which exports
// MARTY_RABBITMQ_URL). Without a broker this fails: a missing broker is a failure.
#include <cstdlib>

#include "conformance.hpp"
#include "marty/messaging/rabbitmq_backend.hpp"

namespace marty::messaging::conformance {
namespace {

BackendUnderTest rabbitmq_backend() {
  BackendUnderTest backend;
  backend.name = "rabbitmq";
  backend.type = MessageBackendType::rabbitmq;
  backend.connect = [] {
    rabbitmq::RabbitMqConfig config;
    const char* url = std::getenv("MARTY_RABBITMQ_URL");
    config.url = url != nullptr ? url : "";
    return rabbitmq::make_backend(config);
  };
  return backend;
}

const std::vector<BackendUnderTest>& backends() {
  static const std::vector<BackendUnderTest> all{rabbitmq_backend()};
  return all;
}

INSTANTIATE_TEST_SUITE_P(RabbitMq, Conformance, ::testing::ValuesIn(backends()),
                         [](const auto& param_info) { return param_info.param.name; });

}  // namespace
}  // namespace marty::messaging::conformance

int main(int argc, char** argv) {
  return marty::messaging::conformance::run_broker_suite(
      argc, argv, "MARTY_RABBITMQ_URL", "rabbitmq", marty::messaging::conformance::backends());
}
