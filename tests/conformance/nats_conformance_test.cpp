// The conformance suite against a real nats-server with JetStream, started by scripts/brokers
// (which exports MARTY_NATS_URL), twice: with JetStream (the default) and core NATS only.
// Without a server this fails: a missing broker is a failure.
#include <cstdio>
#include <cstdlib>

#include "conformance.hpp"
#include "marty/messaging/nats_backend.hpp"

namespace marty::messaging::conformance {
namespace {

std::string server_url() {
  const char* url = std::getenv("MARTY_NATS_URL");
  return url != nullptr ? url : "";
}

// `jetstream` false: core NATS only (at-most-once, no streams), the backend's other mode.
BackendUnderTest nats_backend(std::string name, bool jetstream) {
  BackendUnderTest backend;
  backend.name = std::move(name);
  backend.type = MessageBackendType::nats;
  backend.connect = [jetstream] {
    nats::NatsConfig config;
    config.servers = {server_url()};
    config.jetstream = jetstream;
    config.ack_wait = std::chrono::seconds(5);
    return nats::make_backend(config);
  };
  return backend;
}

const std::vector<BackendUnderTest>& backends() {
  static const std::vector<BackendUnderTest> all{nats_backend("nats", true),
                                                 nats_backend("nats_core", false)};
  return all;
}

INSTANTIATE_TEST_SUITE_P(Nats, Conformance, ::testing::ValuesIn(backends()),
                         [](const auto& param_info) { return param_info.param.name; });

}  // namespace
}  // namespace marty::messaging::conformance

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (marty::messaging::conformance::server_url().empty()) {
    std::fprintf(stderr,
                 "MARTY_NATS_URL is not set: start the server with scripts/brokers start nats\n");
    return 1;
  }
  marty::messaging::conformance::install_report_writer(marty::messaging::conformance::backends());
  return RUN_ALL_TESTS();
}
