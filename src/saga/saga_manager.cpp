#include "marty/messaging/saga_manager.hpp"

#include <deque>
#include <unordered_map>

#include <spdlog/spdlog.h>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include "marty/messaging/detail/async_signal.hpp"

namespace marty::messaging::saga {
namespace {

using detail::AsyncSignal;
using std::chrono::milliseconds;

// How long a runner waits before writing again after the store refused a write: acting on a
// transition that is not stored would break recovery, so it never goes on without it.
constexpr milliseconds kStoreRetry{500};
constexpr milliseconds kPollInterval{2};

spdlog::logger& logger() {
  static const std::shared_ptr<spdlog::logger> named = spdlog::get("marty.messaging");
  return named ? *named : *spdlog::default_logger_raw();
}

asio::awaitable<void> sleep_for(milliseconds duration) {
  asio::steady_timer timer(co_await asio::this_coro::executor, duration);
  std::error_code ignored;
  co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
}

SteadyClock::time_point steady_from(Clock::time_point at) {
  const auto left = at - Clock::now();
  return SteadyClock::now() + std::chrono::duration_cast<SteadyClock::duration>(left);
}

}  // namespace

// A saga being driven by this manager.
struct DistributedSagaManager::Running {
  std::shared_ptr<SagaMachine> machine;
  SagaRecord record;              // guarded by the manager's mutex
  Clock::time_point lease_until;  // used by the runner only
  std::shared_ptr<AsyncSignal> wake = AsyncSignal::create();
  bool stop = false;
};

DistributedSagaManager::DistributedSagaManager(std::shared_ptr<UnifiedEventBus> bus,
                                               std::shared_ptr<SagaStore> store,
                                               SagaManagerOptions options)
    : bus_(std::move(bus)), store_(std::move(store)), options_(std::move(options)) {}

DistributedSagaManager::~DistributedSagaManager() = default;

std::shared_ptr<DistributedSagaManager> create_distributed_saga_manager(
    std::shared_ptr<UnifiedEventBus> bus, std::shared_ptr<SagaStore> store,
    SagaManagerOptions options) {
  return std::make_shared<DistributedSagaManager>(std::move(bus), std::move(store),
                                                  std::move(options));
}

std::shared_ptr<DistributedSagaManager> create_distributed_saga_manager(
    std::shared_ptr<UnifiedEventBus> bus, std::shared_ptr<SagaStore> store) {
  return create_distributed_saga_manager(std::move(bus), std::move(store), SagaManagerOptions());
}

Result<void> DistributedSagaManager::register_saga_definition(SagaDefinition definition) {
  if (auto valid = validate(definition); !valid) return valid;
  std::lock_guard lock(mutex_);
  const std::string name = definition.name;
  if (definitions_.count(name) != 0) {
    return Error(errc::invalid_argument, "saga definition '" + name + "' is registered already");
  }
  definitions_.emplace(name, std::make_shared<SagaMachine>(std::move(definition)));
  return ok();
}

Result<void> DistributedSagaManager::launch(SagaRecord record) {
  auto running = std::make_shared<Running>();
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return Error(errc::failed_precondition, "the saga manager is stopping");
    auto definition = definitions_.find(record.definition);
    if (definition == definitions_.end()) {
      return Error(errc::not_found,
                   "saga definition '" + record.definition + "' is not registered");
    }
    if (running_.count(record.id) != 0) return ok();  // driven already
    running->machine = definition->second;
  }
  running->lease_until = Clock::now() + options_.lease;
  auto leased = store_->acquire_lease(record.id, owner_, running->lease_until);
  if (!leased) return leased.error().with_context("taking the lease of saga " + record.id);
  if (!*leased) {
    return Error(errc::aborted, "saga " + record.id + " is driven by another orchestrator");
  }
  {
    std::lock_guard lock(mutex_);
    if (running_.count(record.id) != 0) return ok();
    running->record = std::move(record);
    running_.emplace(running->record.id, running);
  }
  asio::co_spawn(bus_->get_executor(), drive(running), asio::detached);
  return ok();
}

asio::awaitable<Result<std::string>> DistributedSagaManager::create_and_start_saga(std::string name,
                                                                                   Json context) {
  std::shared_ptr<SagaMachine> machine;
  {
    std::lock_guard lock(mutex_);
    auto it = definitions_.find(name);
    if (it == definitions_.end()) {
      co_return Error(errc::not_found, "create_and_start_saga: no saga definition '" + name + "'");
    }
    machine = it->second;
  }
  if (!context.is_object() && !context.is_null()) {
    co_return Error(errc::invalid_argument, "create_and_start_saga: the context must be an object");
  }
  SagaRecord record = machine->start(make_uuid_v7(), std::move(context), Clock::now());
  if (auto saved = store_->save(record); !saved) {
    co_return saved.error().with_context("create_and_start_saga: storing the new saga");
  }
  event("started", record, Json{{"context", record.context}});
  const std::string id = record.id;
  if (auto launched = launch(std::move(record)); !launched) co_return launched.error();
  co_return id;
}

Result<SagaStatus> DistributedSagaManager::get_saga_status(const std::string& saga_id) {
  SagaStatus status;
  std::shared_ptr<SagaMachine> machine;
  {
    std::lock_guard lock(mutex_);
    if (auto it = running_.find(saga_id); it != running_.end()) {
      status.record = it->second->record;
      machine = it->second->machine;
    }
  }
  if (!machine) {
    auto stored = store_->load(saga_id);
    if (!stored) return stored.error().with_context("get_saga_status");
    status.record = std::move(*stored);
    std::lock_guard lock(mutex_);
    if (auto it = definitions_.find(status.record.definition); it != definitions_.end()) {
      machine = it->second;
    }
  }
  if (machine) {
    for (const SagaStep& step : machine->definition().steps) status.step_names.push_back(step.name);
  }
  return status;
}

Result<void> DistributedSagaManager::cancel_saga(const std::string& saga_id) {
  std::shared_ptr<Running> running;
  {
    std::lock_guard lock(mutex_);
    auto it = running_.find(saga_id);
    if (it != running_.end()) {
      running = it->second;
      if (!running->machine->cancel(running->record, Clock::now())) {
        return Error(errc::failed_precondition, "cancel_saga: saga " + saga_id + " has ended");
      }
    }
  }
  if (!running) {
    auto stored = store_->load(saga_id);
    if (!stored) return stored.error().with_context("cancel_saga");
    if (is_final(stored->state)) {
      return Error(errc::failed_precondition, "cancel_saga: saga " + saga_id + " has ended (" +
                                                  std::string(to_string(stored->state)) + ")");
    }
    return Error(errc::not_found,
                 "cancel_saga: saga " + saga_id + " is not run by this manager (resume it first)");
  }
  running->wake->notify();  // cuts a retry wait short; a step in flight finishes first
  return ok();
}

Result<std::vector<SagaRecord>> DistributedSagaManager::list_sagas(SagaFilter filter) {
  return store_->list(filter);
}

Result<std::vector<SagaRecord>> DistributedSagaManager::list_sagas() {
  return list_sagas(SagaFilter());
}

asio::awaitable<Result<std::size_t>> DistributedSagaManager::resume_unfinished() {
  SagaFilter filter;
  filter.unfinished_only = true;
  filter.limit = static_cast<std::size_t>(-1);
  auto unfinished = store_->list(filter);
  if (!unfinished) co_return unfinished.error().with_context("resume_unfinished");
  std::size_t resumed = 0;
  for (SagaRecord& record : *unfinished) {
    const std::string id = record.id;
    if (auto launched = launch(std::move(record)); !launched) {
      if (!launched.error().is(errc::aborted)) {  // aborted: another orchestrator drives it
        logger().warn("saga {} not resumed: {}", id, launched.error().describe());
      }
      continue;
    }
    ++resumed;
  }
  co_return resumed;
}

asio::awaitable<void> DistributedSagaManager::stop() {
  std::vector<std::shared_ptr<Running>> all;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    for (auto& entry : running_) all.push_back(entry.second);
  }
  for (auto& running : all) {
    {
      std::lock_guard lock(mutex_);
      running->stop = true;
    }
    running->wake->notify();
  }
  while (true) {
    {
      std::lock_guard lock(mutex_);
      if (running_.empty()) break;
    }
    co_await sleep_for(kPollInterval);
  }
}

asio::awaitable<Result<SagaStatus>> DistributedSagaManager::wait_for(std::string saga_id,
                                                                     milliseconds limit) {
  const auto deadline = SteadyClock::now() + limit;
  while (true) {
    auto status = get_saga_status(saga_id);
    if (!status) co_return status;
    if (is_final(status->record.state)) co_return status;
    if (SteadyClock::now() >= deadline) {
      co_return Error(errc::deadline_exceeded, "saga " + saga_id + " is still " +
                                                   std::string(to_string(status->record.state)));
    }
    co_await sleep_for(kPollInterval);
  }
}

void DistributedSagaManager::event(const std::string& type, const SagaRecord& record,
                                   Json details) {
  if (!options_.publish_events) return;
  details["saga_id"] = record.id;
  details["saga"] = record.definition;
  details["state"] = std::string(to_string(record.state));
  MessageMetadata metadata;
  metadata.correlation_id = record.id;
  metadata.partition_key = record.id;  // a saga's events in order where the backend keeps it
  // Fire and forget: an event that cannot be published must not stop the saga. It is logged.
  auto publish = [](std::shared_ptr<UnifiedEventBus> bus, std::string event_type, Json data,
                    MessageMetadata md) -> asio::awaitable<void> {
    auto published = co_await bus->publish_event(event_type, std::move(data), std::move(md));
    if (!published) {
      logger().warn("saga event {} not published: {}", event_type, published.error().describe());
    }
  };
  asio::co_spawn(bus_->get_executor(),
                 publish(bus_, "saga." + type, std::move(details), std::move(metadata)),
                 asio::detached);
}

asio::awaitable<Result<Json>> DistributedSagaManager::send(std::shared_ptr<SagaMachine> machine,
                                                           SagaRecord record, SagaAction action) {
  const SagaStep& step = machine->definition().steps[action.step];
  const bool compensation = action.kind == SagaAction::Kind::run_compensation;
  Json request{{"saga_id", record.id},
               {"saga", record.definition},
               {"step", step.name},
               {"attempt", action.attempt},
               {"compensation", compensation},
               {"idempotency_key", action.idempotency_key},
               {"effect_key", action.effect_key},
               {"context", record.context}};
  milliseconds timeout = step.timeout;
  if (!compensation && record.deadline) {
    const auto left = std::chrono::duration_cast<milliseconds>(*record.deadline - Clock::now());
    timeout = std::max(milliseconds(1), std::min(timeout, left));
  }
  MessageMetadata metadata;
  metadata.correlation_id = record.id;
  std::string query_type = compensation ? step.compensation : step.action;
  std::string service = step.service;
  co_return co_await bus_->query(std::move(query_type), std::move(request), std::move(service),
                                 timeout, std::move(metadata));
}

asio::awaitable<void> DistributedSagaManager::drive(std::shared_ptr<Running> running) {
  auto self = shared_from_this();  // the manager outlives its runners
  const SagaDefinition& definition = running->machine->definition();
  bool leased = true;
  while (true) {
    // Renew the lease while at least half of it is left; without it, stop.
    if (Clock::now() + options_.lease / 2 > running->lease_until) {
      const auto until = Clock::now() + options_.lease;
      auto renewed = store_->acquire_lease(running->record.id, owner_, until);
      if (!renewed || !*renewed) {
        logger().warn("saga {}: lease lost ({}); another orchestrator carries on",
                      running->record.id, renewed ? "taken over" : renewed.error().describe());
        leased = false;
        break;
      }
      running->lease_until = until;
    }
    SagaAction action;
    SagaRecord snapshot;
    bool became_compensating = false;
    {
      std::lock_guard lock(mutex_);
      if (running->stop) break;
      const SagaState before = running->record.state;
      action = running->machine->next(running->record, Clock::now());
      became_compensating =
          before == SagaState::running && running->record.state == SagaState::compensating;
      snapshot = running->record;
    }
    if (auto saved = store_->save(snapshot); !saved) {
      if (saved.error().is(errc::aborted)) {  // a newer writer: this runner is out of date
        logger().warn("saga {}: {}; stopping this runner", snapshot.id, saved.error().describe());
        break;
      }
      logger().error("saga {}: storing a transition failed, retrying: {}", snapshot.id,
                     saved.error().describe());
      co_await sleep_for(kStoreRetry);
      continue;  // the machine re-derives the same action from the record
    }
    if (became_compensating) {
      event(snapshot.failure == "cancelled" ? "cancelled" : "compensating", snapshot,
            Json{{"reason", snapshot.failure}});
    }
    if (action.kind == SagaAction::Kind::finished) {
      event(std::string(to_string(snapshot.state)), snapshot,
            Json{{"context", snapshot.context}, {"failure", snapshot.failure}});
      break;
    }
    if (action.kind == SagaAction::Kind::wait) {
      // Wake up in time to renew the lease during long waits.
      const auto until = std::min(action.until, running->lease_until - options_.lease / 2);
      co_await running->wake->wait(steady_from(until));
      continue;
    }
    const bool compensation = action.kind == SagaAction::Kind::run_compensation;
    const std::string step_name = definition.steps[action.step].name;
    if (!compensation) {
      event("step_started", snapshot, Json{{"step", step_name}, {"attempt", action.attempt}});
    }
    Result<Json> outcome = co_await send(running->machine, snapshot, action);
    {
      std::lock_guard lock(mutex_);
      if (compensation) {
        running->machine->compensation_finished(running->record, action, outcome, Clock::now());
      } else {
        running->machine->step_finished(running->record, action, outcome, Clock::now());
      }
      snapshot = running->record;
    }
    // Written here as well as at the top of the loop, so that an outcome is not lost when the
    // process dies before the next decision.
    if (auto saved = store_->save(snapshot); !saved) {
      logger().error("saga {}: storing an outcome failed: {}", snapshot.id,
                     saved.error().describe());
    }
    Json details{{"step", step_name}, {"attempt", action.attempt}};
    if (!outcome) {
      details["error"] = outcome.error().describe();
      event(compensation ? "compensation_failed" : "step_failed", snapshot, std::move(details));
    } else {
      event(compensation ? "step_compensated" : "step_completed", snapshot, std::move(details));
    }
  }
  if (leased) {
    if (auto released = store_->release_lease(running->record.id, owner_); !released) {
      logger().warn("saga {}: releasing the lease failed: {}", running->record.id,
                    released.error().describe());
    }
  }
  std::lock_guard lock(mutex_);
  running_.erase(running->record.id);
}

// ---- participants ----

struct SagaParticipant::State {
  std::mutex mutex;
  std::map<std::string, StepHandler> handlers;  // by query type
  std::set<std::string> compensations;
  std::unordered_map<std::string, Json> applied;  // effect key -> first success's reply
  std::deque<std::string> order;                  // oldest first, to bound `applied`
  std::size_t max_remembered = 0;
};

SagaParticipant::SagaParticipant(std::shared_ptr<UnifiedEventBus> bus, std::string service,
                                 std::size_t max_remembered)
    : bus_(std::move(bus)), service_(std::move(service)), state_(std::make_shared<State>()) {
  state_->max_remembered = std::max<std::size_t>(1, max_remembered);
}

void SagaParticipant::on_step(std::string action, StepHandler handler) {
  std::lock_guard lock(state_->mutex);
  state_->handlers.insert_or_assign(std::move(action), std::move(handler));
}

void SagaParticipant::on_compensation(std::string compensation, StepHandler handler) {
  std::lock_guard lock(state_->mutex);
  state_->compensations.insert(compensation);
  state_->handlers.insert_or_assign(std::move(compensation), std::move(handler));
}

namespace {

Result<SagaStepRequest> parse_request(const Message& message) {
  auto body = message.try_json();
  if (!body) return body.error();
  const Json& json = body->get();
  try {
    SagaStepRequest request;
    request.saga_id = json.at("saga_id").get<std::string>();
    request.saga = json.at("saga").get<std::string>();
    request.step = json.at("step").get<std::string>();
    request.attempt = json.at("attempt").get<int>();
    request.compensation = json.at("compensation").get<bool>();
    request.idempotency_key = json.at("idempotency_key").get<std::string>();
    request.effect_key = json.at("effect_key").get<std::string>();
    request.context = json.value("context", Json::object());
    return request;
  } catch (const Json::exception& e) {
    return Error(errc::invalid_argument, std::string("not a saga step request: ") + e.what());
  }
}

}  // namespace

asio::awaitable<Result<SubscriptionId>> SagaParticipant::start() {
  std::vector<std::string> types;
  {
    std::lock_guard lock(state_->mutex);
    for (const auto& entry : state_->handlers) types.push_back(entry.first);
  }
  if (types.empty()) {
    co_return Error(errc::invalid_argument, "SagaParticipant " + service_ + ": no handlers");
  }
  auto state = state_;
  QueryHandler handle = [state](Message message) -> asio::awaitable<Result<Json>> {
    auto request = parse_request(message);
    if (!request) co_return request.error();
    StepHandler handler;
    {
      std::lock_guard lock(state->mutex);
      if (auto done = state->applied.find(request->effect_key); done != state->applied.end()) {
        co_return done->second;  // applied already: the same reply, nothing done again
      }
      auto it = state->handlers.find(message.type());
      if (it == state->handlers.end()) {
        co_return Error(errc::unimplemented, "no saga handler for '" + message.type() + "'");
      }
      handler = it->second;
    }
    const std::string effect_key = request->effect_key;
    Result<Json> outcome = co_await handler(std::move(*request));
    if (outcome) {
      std::lock_guard lock(state->mutex);
      // Two deliveries of one effect may race here (an attempt resent while the first still
      // runs): the first success is what the saga sees.
      if (auto done = state->applied.find(effect_key); done != state->applied.end()) {
        co_return done->second;
      }
      state->applied.emplace(effect_key, *outcome);
      state->order.push_back(effect_key);
      while (state->order.size() > state->max_remembered) {
        state->applied.erase(state->order.front());
        state->order.pop_front();
      }
    }
    co_return outcome;
  };
  co_return co_await bus_->handle_queries(std::move(types), std::move(handle), service_);
}

SagaParticipant::StepHandler sync_step_handler(
    std::function<Result<Json>(const SagaStepRequest&)> fn) {
  return [fn = std::move(fn)](SagaStepRequest request) -> asio::awaitable<Result<Json>> {
    co_return fn(request);
  };
}

}  // namespace marty::messaging::saga
