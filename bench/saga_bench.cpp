// Sagas on the embedded backend: 3-step sagas completed per second with the in-memory store
// and with the SQLite store, and the time to recover 10,000 unfinished sagas from SQLite (as a
// successor orchestrator does after a crash), until they have all completed.
// usage: marty_bench_saga [--sagas N] [--recover N] [--runs N] [--sqlite 0|1]
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>

#include <spdlog/spdlog.h>

#include "bench_support.hpp"
#include "marty/messaging.hpp"
#include "marty/messaging/saga_manager.hpp"
#include "marty/messaging/sqlite_saga_store.hpp"

namespace mm = marty::messaging;
namespace saga = marty::messaging::saga;
using namespace std::chrono_literals;
using namespace marty::messaging::bench;

namespace {

struct Options {
  std::size_t sagas = 5'000;
  std::size_t recover = 10'000;
  int runs = 3;
  bool sqlite = true;  // --sqlite 0: the in-memory store only (for profiling)
};

saga::SagaDefinition three_steps() {
  saga::SagaDefinition d;
  d.name = "bench";
  for (const char* name : {"one", "two", "three"}) {
    saga::SagaStep step;
    step.name = name;
    step.service = "bench_participant";
    step.action = std::string("do_") + name;
    step.compensation = std::string("undo_") + name;
    step.timeout = 5s;
    d.steps.push_back(step);
  }
  return d;
}

// An orchestrator bus and a participant bus on one in-process broker.
struct World {
  std::shared_ptr<mm::MemoryBroker> broker = mm::make_memory_broker();
  mm::BlockingEventBus orchestrator, participant_home;
  std::unique_ptr<saga::SagaParticipant> participant;

  World() {
    for (auto* bus : {&orchestrator, &participant_home}) {
      check(bus->bus()
                .register_backend(mm::MessageBackendType::memory, mm::make_memory_backend(broker))
                .has_value(),
            "register");
      check(bus->start().has_value(), "start");
    }
    participant = std::make_unique<saga::SagaParticipant>(participant_home.bus().shared_from_this(),
                                                          "bench_participant", 1'000'000);
    auto done = saga::sync_step_handler(
        [](const saga::SagaStepRequest&) { return mm::Result<mm::Json>(mm::Json::object()); });
    for (const char* name : {"one", "two", "three"}) {
      participant->on_step(std::string("do_") + name, done);
      participant->on_compensation(std::string("undo_") + name, done);
    }
    check(orchestrator.run(participant->start()).has_value(), "participant");
  }

  std::shared_ptr<saga::DistributedSagaManager> manager(std::shared_ptr<saga::SagaStore> store) {
    saga::SagaManagerOptions options;
    options.publish_events = false;  // measures the orchestration, not event fan-out
    auto m = saga::create_distributed_saga_manager(orchestrator.bus().shared_from_this(),
                                                   std::move(store), options);
    check(m->register_saga_definition(three_steps()).has_value(), "definition");
    return m;
  }
};

std::size_t unfinished(saga::SagaStore& store) {
  saga::SagaFilter filter;
  filter.unfinished_only = true;
  filter.limit = 1'000'000;
  auto listed = store.list(filter);
  check(listed.has_value(), "list");
  return listed->size();
}

// Starts `count` sagas as fast as the manager takes them and returns completions per second.
double sagas_per_second(std::shared_ptr<saga::SagaStore> store, std::size_t count) {
  World world;
  auto manager = world.manager(store);
  std::vector<std::string> ids;
  ids.reserve(count);
  const auto start = Steady::now();
  auto start_all = [&]() -> asio::awaitable<mm::Result<void>> {
    for (std::size_t i = 0; i < count; ++i) {
      mm::Json context{{"n", i}};
      auto id = co_await manager->create_and_start_saga("bench", std::move(context));
      if (!id) co_return id.error();
      ids.push_back(*id);
    }
    co_return mm::ok();
  };
  check(world.orchestrator.run(start_all()).has_value(), "start sagas");
  for (const auto& id : ids) {
    auto status = world.orchestrator.run(manager->wait_for(id, 120s));
    check(status.has_value() && status->record.state == saga::SagaState::completed, "completed");
  }
  const double rate = static_cast<double>(count) / seconds_since(start);
  world.orchestrator.run(manager->stop());
  return rate;
}

// Stores `count` sagas that a crashed orchestrator left unfinished, then times a successor:
// resume_unfinished() and every saga completed.
std::pair<double, double> recovery_seconds(const std::string& path, std::size_t count) {
  auto store = saga::SqliteSagaStore::open(path);
  check(store.has_value(), "open store");
  saga::SagaMachine machine(three_steps());
  for (std::size_t i = 0; i < count; ++i) {
    saga::SagaRecord record =
        machine.start(mm::make_uuid_v7(), mm::Json{{"n", i}}, saga::Clock::now());
    check((*store)->save(record).has_value(), "save");
  }
  World world;
  auto manager = world.manager(*store);
  const auto start = Steady::now();
  auto resumed = world.orchestrator.run(manager->resume_unfinished());
  check(resumed.has_value() && *resumed == count, "resume");
  const double resume_time = seconds_since(start);
  // Polled rarely: listing 10,000 records competes with the orchestrator for the CPU.
  while (unfinished(**store) > 0) std::this_thread::sleep_for(250ms);
  const double all_done = seconds_since(start);
  world.orchestrator.run(manager->stop());
  return {resume_time, all_done};
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  const bool parsed =
      parse_flags(argc, argv,
                  {{"--sagas", [&](std::uint64_t v) { options.sagas = v; }},
                   {"--recover", [&](std::uint64_t v) { options.recover = v; }},
                   {"--runs", [&](std::uint64_t v) { options.runs = static_cast<int>(v); }},
                   {"--sqlite", [&](std::uint64_t v) { options.sqlite = v != 0; }}},
                  "marty_bench_saga [--sagas N] [--recover N] [--runs N] [--sqlite 0|1]");
  if (!parsed) return 2;
  spdlog::set_level(spdlog::level::warn);
  const auto dir =
      std::filesystem::temp_directory_path() / ("marty-saga-bench-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::printf(
      "saga benchmark: 3-step sagas on the embedded backend, %zu sagas per run, median of "
      "%d runs\n\n",
      options.sagas, options.runs);
  std::vector<double> memory_rates, sqlite_rates;
  for (int run = 0; run < options.runs; ++run) {
    memory_rates.push_back(
        sagas_per_second(std::make_shared<saga::InMemorySagaStore>(), options.sagas));
    if (!options.sqlite) continue;
    const auto path = (dir / ("rate-" + std::to_string(run) + ".db")).string();
    auto store = saga::SqliteSagaStore::open(path);
    check(store.has_value(), "open store");
    sqlite_rates.push_back(sagas_per_second(*store, options.sagas));
  }
  if (!options.sqlite) {
    std::filesystem::remove_all(dir);
    std::printf("sagas/s, in-memory store: %.0f\n", median(memory_rates));
    return 0;
  }
  const auto [resume_s, done_s] = recovery_seconds((dir / "recover.db").string(), options.recover);
  std::filesystem::remove_all(dir);
  std::printf("| measure                                   | value      | target   |\n");
  std::printf("|-------------------------------------------|-----------:|---------:|\n");
  std::printf("| sagas/s, in-memory store                  | %10.0f | >= 5,000 |\n",
              median(memory_rates));
  std::printf("| sagas/s, SQLite store (WAL, NORMAL sync)  | %10.0f | >= 1,000 |\n",
              median(sqlite_rates));
  std::printf("| recover %zu sagas: resumed, s          | %10.2f |          |\n", options.recover,
              resume_s);
  std::printf("| recover %zu sagas: all completed, s    | %10.2f |   <= 10  |\n", options.recover,
              done_s);
  // The baseline is the figure issue 4 asked for (5,000 sagas/s); the target is 3x it.
  std::printf("\n");
  print_result("saga.memory.per_second", median(memory_rates), 5'000);
  return 0;
}
