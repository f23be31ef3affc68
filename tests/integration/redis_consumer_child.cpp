// A service instance for the Redis crash test: takes `work` commands for SERVICE and never
// finishes one (it is killed mid-handler). It writes READY_FILE once subscribed and
// TAKEN_FILE when its handler holds a command.
//   redis_consumer_child REDIS_URL SERVICE READY_FILE TAKEN_FILE
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

#include "marty/messaging.hpp"
#include "marty/messaging/redis_backend.hpp"

namespace mm = marty::messaging;
using namespace std::chrono_literals;

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: redis_consumer_child REDIS_URL SERVICE READY_FILE TAKEN_FILE\n");
    return 2;
  }
  const std::string taken_file = argv[4];
  mm::EventBusOptions options;
  options.service_name = argv[2];
  mm::BlockingEventBus bus(options);
  mm::redis::RedisConfig config;
  config.url = argv[1];
  (void)bus.bus().register_backend(mm::MessageBackendType::redis, mm::redis::make_backend(config));
  if (auto started = bus.start(); !started) {
    std::fprintf(stderr, "redis_consumer_child: %s\n", started.error().describe().c_str());
    return 2;
  }
  auto hang = mm::sync_handler([taken_file](const mm::Message&) -> mm::Result<void> {
    std::ofstream(taken_file) << "taken\n";
    while (true) std::this_thread::sleep_for(1s);
  });
  if (auto handled = bus.handle_commands({"work"}, hang, argv[2]); !handled) {
    std::fprintf(stderr, "redis_consumer_child: %s\n", handled.error().describe().c_str());
    return 2;
  }
  std::ofstream(argv[3]) << "ready\n";
  while (true) std::this_thread::sleep_for(1s);
}
