// An orchestrator process for the saga crash test: sagas on NATS, records in SQLite.
//   saga_crash_child start  NATS_URL DB COUNT   stores and starts COUNT checkout sagas, then
//                                               drives them until killed (or all are done)
//   saga_crash_child resume NATS_URL DB         resumes every unfinished saga until none is
//                                               left (leases of a killed orchestrator expire
//                                               after 1 s); exits 0 when all are final
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "../support/saga_definitions.hpp"
#include "marty/messaging.hpp"
#include "marty/messaging/nats_backend.hpp"
#include "marty/messaging/saga_manager.hpp"
#include "marty/messaging/sqlite_saga_store.hpp"

namespace mm = marty::messaging;
namespace saga = marty::messaging::saga;
using namespace std::chrono_literals;

namespace {

int fail(const char* what, const mm::Error& error) {
  std::fprintf(stderr, "saga_crash_child: %s: %s\n", what, error.describe().c_str());
  return 2;
}

std::size_t unfinished(saga::SagaStore& store) {
  saga::SagaFilter filter;
  filter.unfinished_only = true;
  filter.limit = 1'000'000;
  auto listed = store.list(filter);
  return listed ? listed->size() : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: saga_crash_child start|resume NATS_URL DB [COUNT]\n");
    return 2;
  }
  const std::string mode = argv[1];
  auto store = saga::SqliteSagaStore::open(argv[3]);
  if (!store) return fail("open store", store.error());
  mm::BlockingEventBus bus;
  mm::nats::NatsConfig config;
  config.servers = {argv[2]};
  if (auto registered =
          bus.bus().register_backend(mm::MessageBackendType::nats, mm::nats::make_backend(config));
      !registered) {
    return fail("register", registered.error());
  }
  if (auto started = bus.start(); !started) return fail("start", started.error());
  saga::SagaManagerOptions options;
  options.lease = 1s;
  options.publish_events = false;
  auto manager =
      saga::create_distributed_saga_manager(bus.bus().shared_from_this(), *store, options);
  if (auto registered = manager->register_saga_definition(mm::testing::crash_checkout_saga());
      !registered) {
    return fail("register definition", registered.error());
  }
  if (mode == "start") {
    const int count = argc > 4 ? std::atoi(argv[4]) : 100;
    for (int i = 0; i < count; ++i) {
      mm::Json context{{"order", i}, {"amount", i % 4 == 3 ? 1500 : 100}};
      auto id = bus.run(manager->create_and_start_saga("checkout", std::move(context)));
      if (!id) return fail("create_and_start_saga", id.error());
    }
    std::printf("started %d sagas\n", count);
    std::fflush(stdout);
    while (unfinished(**store) > 0) std::this_thread::sleep_for(20ms);
    return 0;
  }
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (unfinished(**store) > 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      std::fprintf(stderr, "saga_crash_child: %zu sagas still unfinished\n", unfinished(**store));
      return 1;
    }
    auto resumed = bus.run(manager->resume_unfinished());
    if (!resumed) return fail("resume_unfinished", resumed.error());
    std::this_thread::sleep_for(200ms);
  }
  bus.run(manager->stop());
  return 0;
}
