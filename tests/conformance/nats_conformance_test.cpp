// The conformance suite against a real nats-server with JetStream, started by scripts/brokers
// (which exports MARTY_NATS_URL), twice: with JetStream (the default) and core NATS only.
// Without a server this fails: a missing broker is a failure.
#include <cstdlib>

#include <filesystem>

#include "../support/server_process.hpp"
#include "conformance.hpp"
#include "marty/messaging/nats_backend.hpp"

namespace marty::messaging::conformance {
namespace {

std::string server_url() {
  const char* url = std::getenv("MARTY_NATS_URL");
  return url != nullptr ? url : "";
}

enum class Mode { jetstream, core, work_queue_commands };

// The work-queue mode lays out streams differently (events and commands in separate streams),
// which one server cannot hold next to the default layout: it gets a server of its own.
std::string private_server_url() {
  static const int port = testing::free_port();
  static const std::string store = [] {
    std::string pattern = (std::filesystem::temp_directory_path() / "marty-wq-XXXXXX").string();
    return std::string(::mkdtemp(pattern.data()));
  }();
  static testing::ServerProcess server(
      {"nats-server", "-a", "127.0.0.1", "-p", std::to_string(port), "-js", "-sd", store}, port);
  return "nats://127.0.0.1:" + std::to_string(port);
}

// The backend's modes: JetStream (the default); core NATS only (at-most-once, no streams);
// JetStream with commands in a work-queue stream of their own.
BackendUnderTest nats_backend(std::string name, Mode mode) {
  BackendUnderTest backend;
  backend.name = std::move(name);
  backend.type = MessageBackendType::nats;
  backend.connect = [mode] {
    nats::NatsConfig config;
    config.servers = {server_url()};
    config.jetstream = mode != Mode::core;
    if (mode == Mode::work_queue_commands) {
      config.servers = {private_server_url()};
      config.topic_stream = "MARTY_EVENTS";
      config.topic_subjects = {"events.>"};
      config.command_stream = "MARTY_COMMANDS";
    }
    config.ack_wait = std::chrono::seconds(5);
    return nats::make_backend(config);
  };
  return backend;
}

const std::vector<BackendUnderTest>& backends() {
  static const std::vector<BackendUnderTest> all{
      nats_backend("nats", Mode::jetstream), nats_backend("nats_core", Mode::core),
      nats_backend("nats_work_queue_commands", Mode::work_queue_commands)};
  return all;
}

INSTANTIATE_TEST_SUITE_P(Nats, Conformance, ::testing::ValuesIn(backends()),
                         [](const auto& param_info) { return param_info.param.name; });

}  // namespace
}  // namespace marty::messaging::conformance

int main(int argc, char** argv) {
  return marty::messaging::conformance::run_broker_suite(argc, argv, "MARTY_NATS_URL", "nats",
                                                         marty::messaging::conformance::backends());
}
