// The conformance suite on the embedded backend, twice: with its native request/reply, and with
// the bus's generic reply-subject request/reply (the path brokers without native replies use).
#include "conformance.hpp"

namespace marty::messaging::conformance {
namespace {

BackendUnderTest memory_backend(std::string name, bool native_request_reply) {
  // Each test gets a fresh broker; every bus in the test connects to that one.
  auto broker = std::make_shared<std::shared_ptr<MemoryBroker>>();
  MemoryBackendConfig config;
  config.native_request_reply = native_request_reply;
  BackendUnderTest backend;
  backend.name = std::move(name);
  backend.type = MessageBackendType::memory;
  backend.reset = [broker, config] { *broker = make_memory_broker(config); };
  backend.connect = [broker, config] {
    if (!*broker) *broker = make_memory_broker(config);
    return make_memory_backend(*broker);
  };
  return backend;
}

const std::vector<BackendUnderTest>& backends() {
  static const std::vector<BackendUnderTest> all{memory_backend("memory", true),
                                                 memory_backend("memory_generic_reply", false)};
  return all;
}

INSTANTIATE_TEST_SUITE_P(Memory, Conformance, ::testing::ValuesIn(backends()),
                         [](const auto& param_info) { return param_info.param.name; });

}  // namespace
}  // namespace marty::messaging::conformance

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  marty::messaging::conformance::install_report_writer(marty::messaging::conformance::backends());
  return RUN_ALL_TESTS();
}
