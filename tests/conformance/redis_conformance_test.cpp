// The conformance suite against a real redis-server started by scripts/brokers (which exports
// MARTY_REDIS_URL). Without a server this fails: a missing broker is a failure.
#include <cstdlib>

#include "conformance.hpp"
#include "marty/messaging/redis_backend.hpp"

namespace marty::messaging::conformance {
namespace {

std::string server_url() {
  const char* url = std::getenv("MARTY_REDIS_URL");
  return url != nullptr ? url : "";
}

BackendUnderTest redis_backend() {
  BackendUnderTest backend;
  backend.name = "redis";
  backend.type = MessageBackendType::redis;
  backend.connect = [] {
    redis::RedisConfig config;
    config.url = server_url();
    // Short enough that the suite's restart tests do not wait long for reclaimed entries.
    config.visibility_timeout = std::chrono::seconds(2);
    config.reclaim_interval = std::chrono::milliseconds(200);
    return redis::make_backend(config);
  };
  return backend;
}

const std::vector<BackendUnderTest>& backends() {
  static const std::vector<BackendUnderTest> all{redis_backend()};
  return all;
}

INSTANTIATE_TEST_SUITE_P(Redis, Conformance, ::testing::ValuesIn(backends()),
                         [](const auto& param_info) { return param_info.param.name; });

}  // namespace
}  // namespace marty::messaging::conformance

int main(int argc, char** argv) {
  return marty::messaging::conformance::run_broker_suite(argc, argv, "MARTY_REDIS_URL", "redis",
                                                         marty::messaging::conformance::backends());
}
