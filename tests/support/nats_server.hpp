#pragma once
// nats-server processes for tests that need a server of their own (a configuration or a
// restart the shared broker of scripts/brokers cannot offer).
#include <string>
#include <string_view>

#include "marty/messaging/nats_backend.hpp"
#include "server_process.hpp"

namespace marty::messaging::testing {

inline std::string nats_url(int port, std::string_view scheme = "nats",
                            std::string_view host = "127.0.0.1") {
  return std::string(scheme) + "://" + std::string(host) + ":" + std::to_string(port);
}

/// A nats-server with JetStream on a store of its own, for one test.
class PrivateJetStream {
 public:
  PrivateJetStream()
      : port_(free_port()),
        server_({"nats-server", "-a", "127.0.0.1", "-p", std::to_string(port_), "-js", "-sd",
                 store_.path().string()},
                port_) {}
  ServerProcess& server() { return server_; }
  std::string url() const { return nats_url(port_); }
  nats::NatsConfig config() const {
    nats::NatsConfig config;
    config.servers = {url()};
    return config;
  }

 private:
  TempDir store_;
  int port_;
  ServerProcess server_;
};

}  // namespace marty::messaging::testing
