// saga list|show|start|resume|orchestrate|cancel: the sagas of the configuration file's store and
// definitions.
#include <algorithm>
#include <iostream>
#include <limits>

#include "cli.hpp"

namespace marty::bus_cli {

namespace {

std::string time_text(const std::optional<saga::Clock::time_point>& time) {
  return time ? format_rfc3339(*time) : std::string("-");
}

const saga::SagaDefinition* definition_of(const config::BusConfig& c, const std::string& name) {
  for (const saga::SagaDefinition& definition : c.sagas) {
    if (definition.name == name) return &definition;
  }
  return nullptr;
}

void print_record(const saga::SagaRecord& record, const config::BusConfig& c, bool json) {
  if (json) {
    std::cout << saga::to_json(record).dump() << "\n";
    return;
  }
  const saga::SagaDefinition* definition = definition_of(c, record.definition);
  std::cout << "saga " << record.id << " (" << record.definition << ")\n"
            << "  state     " << saga::to_string(record.state)
            << (record.cancel_requested ? " (cancel requested)" : "") << "\n"
            << "  created   " << format_rfc3339(record.created_at) << "\n"
            << "  updated   " << format_rfc3339(record.updated_at) << "\n";
  if (record.deadline) std::cout << "  deadline  " << format_rfc3339(*record.deadline) << "\n";
  if (!record.failure.empty()) std::cout << "  failure   " << record.failure << "\n";
  std::cout << "  context   " << record.context.dump() << "\n  steps\n";
  for (std::size_t i = 0; i < record.steps.size(); ++i) {
    const saga::StepRecord& step = record.steps[i];
    const std::string name = definition && i < definition->steps.size()
                                 ? definition->steps[i].name
                                 : "step " + std::to_string(i + 1);
    std::cout << "    " << (i + 1) << ". " << name << ": " << saga::to_string(step.state)
              << "  attempts=" << step.attempts;
    if (step.compensation_attempts > 0)
      std::cout << "  compensations=" << step.compensation_attempts;
    if (step.uncertain) std::cout << "  (uncertain)";
    std::cout << "  started=" << time_text(step.started_at)
              << "  finished=" << time_text(step.finished_at) << "\n";
    if (!step.last_error.empty()) std::cout << "       error: " << step.last_error << "\n";
  }
}

// Exit codes of a saga's end, for scripts: completed 0, compensated `aborted`, failed
// `internal` (it needs a person).
void finish_with(const saga::SagaRecord& record) {
  if (record.state == saga::SagaState::compensated) {
    fail(errc::aborted, "saga " + record.id + " was compensated: " + record.failure);
  }
  if (record.state == saga::SagaState::failed) {
    fail(errc::internal, "saga " + record.id + " failed and needs a person: " + record.failure);
  }
}

// A bus and a saga manager with the file's definitions, for start and cancel.
struct Orchestrator {
  explicit Orchestrator(const GlobalOptions& options) : session(options) {
    store = need(config::open_saga_store(session.configuration()));
    session.start();
    manager =
        need(config::create_saga_manager(session.configuration(), session.shared_bus(), store));
  }
  ~Orchestrator() {
    if (manager) session.bus().run(manager->stop());
  }
  Orchestrator(const Orchestrator&) = delete;
  Orchestrator& operator=(const Orchestrator&) = delete;

  // Drives the saga until it ends, `limit` passes or Ctrl-C. In the latter two cases this
  // orchestrator stops after the step in flight and the saga is reported as stored: ended, or
  // unfinished (deadline_exceeded, or cancelled after Ctrl-C) for an orchestrator to resume.
  // Waits in short slices, because a signal cannot interrupt the bus's own wait.
  saga::SagaRecord wait(const std::string& id, std::chrono::milliseconds limit) {
    std::cerr << "waiting for saga " << id << " to end (at most " << limit.count() / 1000
              << " s)\n";
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (true) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      const auto slice = std::clamp(left, std::chrono::milliseconds(1), kWaitSlice);
      auto status = session.bus().run(manager->wait_for(id, slice));
      if (status) return status->record;
      if (status.error().code() != errc::deadline_exceeded) throw CommandFailed{status.error()};
      const bool interrupted = stop_requested();
      if (!interrupted && std::chrono::steady_clock::now() < deadline) continue;
      std::cerr << (interrupted ? "interrupted" : "--wait has passed")
                << ": stopping after the step in flight\n";
      session.bus().run(manager->stop());
      saga::SagaRecord stored = need(store->load(id));
      if (saga::is_final(stored.state)) return stored;
      const std::string left_as = "saga " + id + " stays in the store, unfinished, for an " +
                                  "orchestrator to resume (or `marty-bus saga cancel " + id + "`)";
      fail(interrupted ? errc::cancelled : errc::deadline_exceeded,
           (interrupted ? "interrupted: " : "it had not ended after --wait: ") + left_as);
    }
  }
  static constexpr std::chrono::milliseconds kWaitSlice{200};

  Session session;
  std::shared_ptr<saga::SagaStore> store;
  std::shared_ptr<saga::DistributedSagaManager> manager;
};

// The ids of the store's unfinished sagas, oldest first (the order they are resumed in).
std::vector<std::string> unfinished_ids(saga::SagaStore& store) {
  saga::SagaFilter filter;
  filter.unfinished_only = true;
  filter.limit = std::numeric_limits<std::size_t>::max();
  std::vector<std::string> ids;
  for (const saga::SagaRecord& record : need(store.list(filter))) ids.push_back(record.id);
  std::reverse(ids.begin(), ids.end());
  return ids;
}

}  // namespace

void add_saga_commands(CLI::App& app, GlobalOptions& options) {
  auto* saga_command = app.add_subcommand(
      "saga", "sagas in the configured store: list, show, start, resume, orchestrate, cancel");
  saga_command->require_subcommand(1);
  {
    auto* command = saga_command->add_subcommand("list", "sagas, newest first");
    auto state = std::make_shared<std::string>();
    auto definition = std::make_shared<std::string>();
    auto unfinished = std::make_shared<bool>(false);
    auto limit = std::make_shared<std::size_t>(50);
    command->add_option("--state", *state, "only sagas in this state")
        ->check(CLI::IsMember({"running", "compensating", "completed", "compensated", "failed"}));
    command->add_option("--definition", *definition, "only sagas of this definition");
    command->add_flag("--unfinished", *unfinished, "only sagas still running or compensating");
    command->add_option("--limit", *limit, "at most this many (default 50)");
    command->callback([&options, state, definition, unfinished, limit] {
      const config::BusConfig c = load_configuration(options);
      auto store = need(config::open_saga_store(c));
      saga::SagaFilter filter;
      for (saga::SagaState s :
           {saga::SagaState::running, saga::SagaState::compensating, saga::SagaState::completed,
            saga::SagaState::compensated, saga::SagaState::failed}) {
        if (saga::to_string(s) == *state) filter.state = s;
      }
      filter.definition = *definition;
      filter.unfinished_only = *unfinished;
      filter.limit = *limit;
      auto records = need(store->list(filter));
      for (const saga::SagaRecord& r : records) {
        if (options.json) {
          std::cout << saga::to_json(r).dump() << "\n";
          continue;
        }
        std::size_t done = 0;
        for (const auto& step : r.steps) done += step.state == saga::StepState::completed ? 1 : 0;
        std::cout << r.id << "  " << r.definition << "  " << saga::to_string(r.state) << "  steps "
                  << done << "/" << r.steps.size() << "  updated " << format_rfc3339(r.updated_at)
                  << (r.failure.empty() ? "" : "  (" + r.failure + ")") << "\n";
      }
      if (!options.json) std::cout << records.size() << " saga(s)\n";
    });
  }
  {
    auto* command =
        saga_command->add_subcommand("show", "one saga: its state, steps, attempts and errors");
    auto id = std::make_shared<std::string>();
    command->add_option("id", *id, "the saga's id")->required();
    command->callback([&options, id] {
      const config::BusConfig c = load_configuration(options);
      auto store = need(config::open_saga_store(c));
      print_record(need(store->load(*id)), c, options.json);
    });
  }
  {
    auto* command = saga_command->add_subcommand(
        "start", "start a saga of the file's definitions and drive it to its end");
    auto name = std::make_shared<std::string>();
    auto context = std::make_shared<std::string>("{}");
    auto wait = std::make_shared<std::string>("5m");
    command->add_option("definition", *name, "the saga definition (sagas.definitions in the file)")
        ->required();
    command->add_option("context", *context, "the saga's context (JSON; @file, -)");
    command->add_option("--wait", *wait,
                        "how long to drive it (default 5m); after that it stays in the store, "
                        "unfinished, for an orchestrator to resume");
    command->callback([&options, name, context, wait] {
      Json data = json_argument(*context, "context");
      const auto limit = duration_argument(*wait, "--wait");
      Orchestrator orchestrator(options);
      const std::string id = need(orchestrator.session.run(
          orchestrator.manager->create_and_start_saga(*name, std::move(data)),
          "during saga start"));
      std::cerr << "started saga " << id << "\n";
      const saga::SagaRecord record = orchestrator.wait(id, limit);
      print_record(record, orchestrator.session.configuration(), options.json);
      finish_with(record);
    });
  }
  {
    auto* command = saga_command->add_subcommand(
        "resume", "take over an unfinished saga (or all of them) and drive it to its end");
    auto id = std::make_shared<std::string>();
    auto all = std::make_shared<bool>(false);
    auto wait = std::make_shared<std::string>("5m");
    command->add_option("id", *id, "the saga's id");
    command->add_flag("--all", *all, "every unfinished saga whose definition the file has");
    command->add_option("--wait", *wait,
                        "how long to drive them (default 5m); after that they stay in the "
                        "store, unfinished");
    command->callback([&options, id, all, wait] {
      if (id->empty() == !*all) fail(errc::invalid_argument, "saga resume: give an id or --all");
      const auto limit = duration_argument(*wait, "--wait");
      const auto deadline = std::chrono::steady_clock::now() + limit;
      Orchestrator orchestrator(options);
      // Refused while another orchestrator's lease on it lasts (`aborted`), for an unknown id
      // or definition (`not_found`) and for an ended saga (`failed_precondition`): with --all
      // such a saga is said and left alone, given by id it is the command's error.
      std::vector<std::string> ids;
      for (const std::string& one :
           *all ? unfinished_ids(*orchestrator.store) : std::vector<std::string>{*id}) {
        auto taken = orchestrator.manager->resume_saga(one);
        if (taken) {
          ids.push_back(one);
        } else if (*all) {
          std::cerr << "left saga " << one << " alone: " << taken.error().describe() << "\n";
        } else {
          throw CommandFailed{std::move(taken).error()};
        }
      }
      if (*all) std::cerr << "resumed " << ids.size() << " saga(s)\n";
      std::optional<saga::SagaRecord> worst;
      for (const std::string& one : ids) {
        const auto left = std::max(std::chrono::milliseconds(1),
                                   std::chrono::duration_cast<std::chrono::milliseconds>(
                                       deadline - std::chrono::steady_clock::now()));
        const saga::SagaRecord record = orchestrator.wait(one, left);
        print_record(record, orchestrator.session.configuration(), options.json);
        if (record.state != saga::SagaState::completed && !worst) worst = record;
      }
      if (worst) finish_with(*worst);
    });
  }
  {
    auto* command = saga_command->add_subcommand(
        "orchestrate",
        "run as the sagas' orchestrator until Ctrl-C: resume every unfinished saga now and "
        "again every --every (after a crash of the one that drove it)");
    auto every = std::make_shared<std::string>("30s");
    command->add_option("--every", *every, "how often to look for unfinished sagas (default 30s)");
    command->callback([&options, every] {
      const auto interval = duration_argument(*every, "--every");
      Orchestrator orchestrator(options);
      std::cerr << "orchestrating the sagas of " << orchestrator.session.configuration().source
                << " (Ctrl-C to stop)\n";
      while (!stop_requested()) {
        const std::size_t taken = need(orchestrator.session.run(
            orchestrator.manager->resume_unfinished(), "while resuming sagas"));
        if (taken > 0) {
          std::cout << "resumed " << taken << " saga(s)" << std::endl;
        }
        (void)wait_until([] { return false; }, interval);  // ends at once on Ctrl-C
      }
      std::cerr << "stopping: sagas in flight stay in the store after their current step\n";
    });
  }
  {
    auto* command = saga_command->add_subcommand(
        "cancel", "cancel a saga: what it completed is compensated, last first");
    auto id = std::make_shared<std::string>();
    auto wait = std::make_shared<std::string>("5m");
    command->add_option("id", *id, "the saga's id")->required();
    command->add_option("--wait", *wait, "how long to drive the compensation (default 5m)");
    command->callback([&options, id, wait] {
      const auto limit = duration_argument(*wait, "--wait");
      Orchestrator orchestrator(options);
      // Takes the saga over, cancelled before any step of it runs here (refused while another
      // orchestrator's lease on it lasts).
      need(orchestrator.manager->cancel_saga(*id));
      const saga::SagaRecord record = orchestrator.wait(*id, limit);
      print_record(record, orchestrator.session.configuration(), options.json);
      if (record.state == saga::SagaState::failed) finish_with(record);
    });
  }
}

}  // namespace marty::bus_cli
