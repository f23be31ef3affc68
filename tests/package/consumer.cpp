// A user's program: an event and a query through the embedded backend, and (when built against
// the installed package with its nats and config components) a NATS backend made and configured,
// in code and from a configuration file.
#include <cstdio>

#include "marty/messaging.hpp"
#ifdef CONSUMER_USES_NATS
#include "marty/messaging/nats_backend.hpp"
#endif
#ifdef CONSUMER_USES_CONFIG
#include "marty/messaging/config.hpp"
#endif

namespace mm = marty::messaging;

int main() {
  mm::BlockingEventBus bus;
  if (!bus.start()) return 1;
  auto answer = mm::sync_query_handler([](const mm::Message& m) -> mm::Result<mm::Json> {
    return mm::Json{{"echo", m.json()["text"]}};
  });
  if (!bus.handle_queries({"echo"}, answer, "echoer")) return 2;
  auto reply = bus.query("echo", {{"text", "hello"}}, "echoer", std::chrono::seconds(5));
  if (!reply || (*reply)["echo"] != "hello") return 3;
#ifdef CONSUMER_USES_NATS
  mm::nats::NatsConfig config;
  config.servers = {"nats://127.0.0.1:4222"};
  if (!mm::nats::make_backend(config)) return 4;
#endif
#ifdef CONSUMER_USES_CONFIG
  auto file = mm::config::parse_config(
      "service: consumer\nbackends:\n  nats: {servers: [\"nats://127.0.0.1:4222\"]}\n",
      "consumer.yaml");
  if (!file || !file->backend(mm::MessageBackendType::nats)) return 6;
  mm::BlockingEventBus configured;
  const mm::config::BackendMakers makers{{mm::MessageBackendType::nats, mm::config::nats_maker()}};
  if (!mm::config::configure_bus(configured.bus(), *file, makers)) return 7;
  auto bad = mm::config::parse_config("backends: {nats: {severs: []}}\n", "bad.yaml");
  if (bad || bad.error().message().find("bad.yaml:1:") == std::string::npos) return 8;
#endif
  if (!bus.stop()) return 5;
  std::puts("consumer ok");
  return 0;
}
