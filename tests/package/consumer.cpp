// A user's program: an event and a query through the embedded backend, and (when built against
// the installed package with its nats component) a NATS backend made and configured.
#include <cstdio>

#include "marty/messaging.hpp"
#ifdef CONSUMER_USES_NATS
#include "marty/messaging/nats_backend.hpp"
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
  if (!bus.stop()) return 5;
  std::puts("consumer ok");
  return 0;
}
