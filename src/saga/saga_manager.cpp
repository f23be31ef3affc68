#include "marty/messaging/saga_manager.hpp"

#include <deque>
#include <exception>
#include <optional>
#include <unordered_map>

#include <spdlog/spdlog.h>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include "marty/messaging/detail/async_signal.hpp"
#include "marty/messaging/detail/concat.hpp"
#include "marty/messaging/detail/json_writer.hpp"
#include "marty/messaging/detail/log.hpp"
#include "marty/messaging/detail/sleep.hpp"

namespace marty::messaging::saga {
namespace {

using detail::AsyncSignal;
using detail::sleep_for;
using std::chrono::milliseconds;

// How long a runner waits before writing again after the store refused a write: acting on a
// transition that is not stored would break recovery, so it never goes on without it.
constexpr milliseconds kStoreRetry{500};
constexpr milliseconds kPollInterval{2};

using marty::messaging::detail::logger;

SteadyClock::time_point steady_from(Clock::time_point at) {
  const auto left = at - Clock::now();
  return SteadyClock::now() + std::chrono::duration_cast<SteadyClock::duration>(left);
}

}  // namespace

// A saga being driven by this manager.
struct DistributedSagaManager::Running {
  std::shared_ptr<SagaMachine> machine;
  SagaRecord record;  // guarded by the manager's mutex
  std::shared_ptr<AsyncSignal> wake = AsyncSignal::create();
  bool stop = false;              // guarded by the manager's mutex
  bool lease_lost = false;        // guarded by the manager's mutex
  bool finished = false;          // guarded by the manager's mutex
  Clock::time_point lease_until;  // guarded by the manager's mutex
  // The runner's own: what the store holds.
  std::uint64_t saved_version = 0;
  SagaState saved_state = SagaState::running;
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

Result<void> DistributedSagaManager::launch(SagaRecord record, bool fresh, bool cancel) {
  auto running = std::make_shared<Running>();
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return Error(errc::failed_precondition, "the saga manager is stopping");
    auto definition = definitions_.find(record.definition);
    if (definition == definitions_.end()) {
      return Error(errc::not_found,
                   "saga definition '" + record.definition + "' is not registered");
    }
    if (auto driven = running_.find(record.id); driven != running_.end()) {
      if (cancel && !driven->second->machine->cancel(driven->second->record, Clock::now())) {
        return Error(errc::failed_precondition, "saga " + record.id + " has ended");
      }
      if (cancel) driven->second->wake->notify();
      return ok();
    }
    running->machine = definition->second;
  }
  running->lease_until = Clock::now() + options_.lease;
  auto leased = store_->acquire_lease(record.id, owner_, running->lease_until);
  if (!leased) return leased.error().with_context("taking the lease of saga " + record.id);
  if (!*leased) {
    return Error(errc::aborted, "saga " + record.id + " is driven by another orchestrator");
  }
  // Now that it is ours, the freshest record: the list it came from may predate another
  // orchestrator's last writes.
  if (!fresh) {
    if (auto stored = store_->load(record.id); stored) record = std::move(*stored);
  }
  running->saved_version = record.version;
  running->saved_state = record.state;
  // Decided before the runner takes a step: a saga taken over to be cancelled never moves on.
  if (is_final(record.state) || (cancel && !running->machine->cancel(record, Clock::now()))) {
    // A release that fails costs only time: the lease expires after its length.
    (void)store_->release_lease(record.id, owner_);
    return Error(errc::failed_precondition,
                 "saga " + record.id + " has ended (" + std::string(to_string(record.state)) + ")");
  }
  // A cancel made here is stored before the runner starts (below), from a copy: once
  // registered, the record is the runner's and other threads', behind the mutex.
  std::optional<SagaRecord> cancelled;
  if (record.version != running->saved_version) cancelled = record;
  {
    std::lock_guard lock(mutex_);
    if (auto driven = running_.find(record.id); driven != running_.end()) {
      // Another launch of this manager took it meanwhile: a cancel goes to that runner.
      if (cancel && driven->second->machine->cancel(driven->second->record, Clock::now())) {
        driven->second->wake->notify();
      }
      return ok();
    }
    running_.emplace(record.id, running);
    running->record = std::move(record);  // moved, not copied: the launch's common case
  }
  if (cancelled) {
    // Stored first: a manager stopped at once still leaves the saga cancelled for whoever
    // resumes it, instead of running on.
    if (auto saved = store_->save(*cancelled); !saved) {
      {
        std::lock_guard lock(mutex_);
        running_.erase(cancelled->id);
      }
      (void)store_->release_lease(cancelled->id, owner_);
      return saved.error().with_context("storing the cancel of saga " + cancelled->id);
    }
    running->saved_version = cancelled->version;
  }
  auto self = shared_from_this();
  asio::co_spawn(bus_->get_executor(), drive(self, running), asio::detached);
  bool start_keeper = false;
  {
    std::lock_guard lock(mutex_);
    start_keeper = !keeper_running_;
    keeper_running_ = true;
  }
  if (start_keeper) {
    asio::co_spawn(bus_->get_executor(), keep_leases(weak_from_this()), asio::detached);
  }
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
  {
    // Refused before anything is stored: a saga stored but not started would run later
    // (resume_unfinished) after its caller was told it failed.
    std::lock_guard lock(mutex_);
    if (stopping_) {
      co_return Error(errc::failed_precondition, "create_and_start_saga: the manager is stopping");
    }
  }
  SagaRecord record = machine->start(make_uuid_v7(), std::move(context), Clock::now());
  if (auto saved = store_->save(record); !saved) {
    co_return saved.error().with_context("create_and_start_saga: storing the new saga");
  }
  if (options_.publish_events) {                // (not even the copy of the context otherwise)
    Json started{{"context", record.context}};  // named: no braced lists inside co_await (GCC 12)
    co_await event("started", record, std::move(started));
  }
  const std::string id = record.id;
  if (auto launched = launch(std::move(record), true); !launched) co_return launched.error();
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
  if (!running) {  // a saga of the store: take it over, cancelled
    auto stored = store_->load(saga_id);
    if (!stored) return stored.error().with_context("cancel_saga");
    if (auto launched = launch(std::move(*stored), false, true); !launched) {
      return launched.error().with_context("cancel_saga");
    }
    return ok();
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

Result<void> DistributedSagaManager::resume_saga(const std::string& saga_id) {
  auto stored = store_->load(saga_id);
  if (!stored) return stored.error().with_context("resume_saga");
  if (auto launched = launch(std::move(*stored), false); !launched) {
    return launched.error().with_context("resume_saga");
  }
  return ok();
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
    {
      std::lock_guard lock(mutex_);
      if (running_.contains(id)) continue;  // driven here already: not counted again
    }
    if (auto launched = launch(std::move(record), false); !launched) {
      // aborted: another orchestrator drives it; failed_precondition: it ended meanwhile.
      if (!launched.error().is(errc::aborted) && !launched.error().is(errc::failed_precondition)) {
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

// Published in order, by the saga's runner: its events arrive in the order things happened.
// An event that cannot be published does not stop the saga; it is logged.
asio::awaitable<void> DistributedSagaManager::event(std::string type, SagaRecord record,
                                                    Json details) {
  if (!options_.publish_events) co_return;
  details["saga_id"] = record.id;
  details["saga"] = record.definition;
  details["state"] = std::string(to_string(record.state));
  MessageMetadata metadata;
  metadata.correlation_id = record.id;
  metadata.partition_key = record.id;
  std::string event_type = "saga." + type;
  auto published =
      co_await bus_->publish_event(event_type, std::move(details), std::move(metadata));
  if (!published) {
    logger().warn("saga event {} not published: {}", event_type, published.error().describe());
  }
}

// One coroutine per manager renews the leases of every saga it drives, every third of the
// lease's length (so also while a step takes longer than the lease). A failed renewal is
// retried while the lease still holds; a lease is lost only when it ran out or another
// orchestrator holds it, and then that saga's runner stops. Holds the manager only weakly.
asio::awaitable<void> DistributedSagaManager::keep_leases(
    std::weak_ptr<DistributedSagaManager> weak) {
  while (true) {
    milliseconds period{0};
    {
      auto self = weak.lock();
      if (!self) co_return;
      period = std::max(milliseconds(1), self->options_.lease / 3);
    }
    co_await sleep_for(period);
    auto self = weak.lock();
    if (!self) co_return;
    std::vector<std::shared_ptr<Running>> driven;
    {
      std::lock_guard lock(self->mutex_);
      if (self->running_.empty() && self->stopping_) {
        self->keeper_running_ = false;
        co_return;
      }
      for (const auto& entry : self->running_) driven.push_back(entry.second);
    }
    for (const auto& running : driven) self->renew(*running);
  }
}

void DistributedSagaManager::renew(Running& running) {
  std::string id;
  {
    std::lock_guard lock(mutex_);
    if (running.finished || running.lease_lost) return;
    // Only leases with less than half their length left: most sagas end before they need it,
    // and each renewal is a store transaction.
    if (running.lease_until - Clock::now() > options_.lease / 2) return;
    id = running.record.id;
  }
  const auto until = Clock::now() + options_.lease;
  auto renewed = store_->acquire_lease(id, owner_, until);
  std::lock_guard lock(mutex_);
  if (renewed && *renewed) {
    running.lease_until = until;
    return;
  }
  if (!renewed && Clock::now() < running.lease_until) {
    logger().warn("saga {}: renewing the lease failed, retrying: {}", id,
                  renewed.error().describe());
    return;
  }
  logger().warn("saga {}: lease lost ({}); this orchestrator stops driving it", id,
                renewed ? "another orchestrator holds it" : renewed.error().describe());
  running.lease_lost = true;
  running.wake->notify();
}

// Not a coroutine: the request is made from the record here, so no copy of the record travels
// with the query.
asio::awaitable<Result<Json>> DistributedSagaManager::send(const SagaMachine& machine,
                                                           const SagaRecord& record,
                                                           const SagaAction& action) {
  const SagaStep& step = machine.definition().steps[action.step];
  const bool compensation = action.kind == SagaAction::Kind::run_compensation;
  // Built field by field: a braced list makes and destroys a temporary array per field (10
  // allocations more per request, a third of a saga's).
  Json request(Json::value_t::object);
  auto& fields = request.get_ref<Json::object_t&>();
  fields.emplace("saga_id", record.id);
  fields.emplace("saga", record.definition);
  fields.emplace("step", step.name);
  fields.emplace("attempt", action.attempt);
  fields.emplace("compensation", compensation);
  fields.emplace("idempotency_key", action.idempotency_key);
  fields.emplace("effect_key", action.effect_key);
  fields.emplace("context", record.context);
  milliseconds timeout = step.timeout;
  if (!compensation && record.deadline) {
    const auto left = std::chrono::duration_cast<milliseconds>(*record.deadline - Clock::now());
    timeout = std::max(milliseconds(1), std::min(timeout, left));
  }
  MessageMetadata metadata;
  metadata.correlation_id = record.id;
  return bus_->query(compensation ? step.compensation : step.action, std::move(request),
                     step.service, timeout, std::move(metadata));
}

// True when the store has `snapshot`: it had it, or took it now. Not a coroutine: a store that
// takes a record at once costs no coroutine frame. Otherwise persist() decides (and retries).
bool DistributedSagaManager::stored_at_once(Running& running, const SagaRecord& snapshot) {
  {
    std::lock_guard lock(mutex_);
    if (running.lease_lost) return false;
  }
  if (snapshot.version == running.saved_version) return true;
  if (!store_->save(snapshot)) return false;
  running.saved_version = snapshot.version;
  return true;
}

// Stores `snapshot` unless the store has it already. False when this runner must stop (a
// newer writer, or the lease is gone); transient store errors are retried.
asio::awaitable<bool> DistributedSagaManager::persist(std::shared_ptr<Running> running,
                                                      const SagaRecord& snapshot) {
  while (true) {
    {
      std::lock_guard lock(mutex_);
      if (running->lease_lost) co_return false;
    }
    if (snapshot.version == running->saved_version) co_return true;
    auto saved = store_->save(snapshot);
    if (saved) {
      running->saved_version = snapshot.version;
      co_return true;
    }
    if (saved.error().is(errc::aborted)) {  // a newer writer: this runner is out of date
      logger().warn("saga {}: {}; this orchestrator stops driving it", snapshot.id,
                    saved.error().describe());
      co_return false;
    }
    logger().error("saga {}: storing a transition failed, retrying: {}", snapshot.id,
                   saved.error().describe());
    co_await sleep_for(kStoreRetry);
  }
}

asio::awaitable<void> DistributedSagaManager::drive(std::shared_ptr<DistributedSagaManager> self,
                                                    std::shared_ptr<Running> running) {
  (void)self;  // held so that the manager outlives this coroutine
  const SagaDefinition& definition = running->machine->definition();
  bool owner = true;  // false once the lease is lost or a newer writer took over
  const bool events = options_.publish_events;
  // Outside the loop: each copy into it reuses the strings and the step list it has.
  SagaRecord snapshot;
  while (true) {
    SagaAction action;
    {
      std::lock_guard lock(mutex_);
      if (running->lease_lost) {
        owner = false;
        break;
      }
      action = running->machine->next(running->record, Clock::now());
      // A stopping manager takes no further step, but a saga whose last step is done is
      // stored as ended rather than left for a successor to find unfinished.
      if (running->stop && action.kind != SagaAction::Kind::finished) break;
      assign_record(snapshot, running->record);
    }
    // (Each call copies the record: only when there is something to store or to publish.)
    if (!stored_at_once(*running, snapshot) && !co_await persist(running, snapshot)) {
      owner = false;
      break;
    }
    if (events && running->saved_state == SagaState::running &&
        snapshot.state == SagaState::compensating) {
      Json reason{{"reason", snapshot.failure}};
      co_await event(snapshot.cancel_requested ? "cancelled" : "compensating", snapshot,
                     std::move(reason));
    }
    running->saved_state = snapshot.state;
    if (action.kind == SagaAction::Kind::finished) {
      if (events) {
        Json outcome{{"context", snapshot.context}, {"failure", snapshot.failure}};
        co_await event(std::string(to_string(snapshot.state)), snapshot, std::move(outcome));
      }
      break;
    }
    if (action.kind == SagaAction::Kind::wait) {
      co_await running->wake->wait(steady_from(action.until));
      continue;
    }
    const bool compensation = action.kind == SagaAction::Kind::run_compensation;
    const std::string step_name = definition.steps[action.step].name;
    if (events && !compensation) {
      Json started{{"step", step_name}, {"attempt", action.attempt}};
      co_await event("step_started", snapshot, std::move(started));
    }
    Result<Json> outcome = co_await send(*running->machine, snapshot, action);
    if (!outcome && !bus_->running()) {
      // The local bus stopped under the saga: not the participant's answer. The saga stays as
      // stored (the attempt in flight), for resume_unfinished() after a restart.
      logger().info("saga {}: the bus stopped; leaving the saga for a later resume", snapshot.id);
      break;
    }
    {
      std::lock_guard lock(mutex_);
      if (compensation) {
        running->machine->compensation_finished(running->record, action, outcome, Clock::now());
      } else {
        running->machine->step_finished(running->record, action, outcome, Clock::now());
      }
      assign_record(snapshot, running->record);
    }
    // Stored at once, so that an outcome is not lost when the process dies before the next
    // decision.
    if (!stored_at_once(*running, snapshot) && !co_await persist(running, snapshot)) {
      owner = false;
      break;
    }
    if (!events) continue;
    Json details{{"step", step_name}, {"attempt", action.attempt}};
    if (!outcome) {
      details["error"] = outcome.error().describe();
      co_await event(compensation ? "compensation_failed" : "step_failed", snapshot,
                     std::move(details));
    } else {
      co_await event(compensation ? "step_compensated" : "step_completed", snapshot,
                     std::move(details));
    }
  }
  {
    std::lock_guard lock(mutex_);
    running->finished = true;
    running_.erase(running->record.id);
  }
  if (owner) {
    if (auto released = store_->release_lease(running->record.id, owner_); !released) {
      logger().warn("saga {}: releasing the lease failed: {}", running->record.id,
                    released.error().describe());
    }
  }
}

// ---- participants ----

struct SagaParticipant::State {
  std::mutex mutex;
  // By query type; shared, so that a request takes one without copying its std::function.
  std::map<std::string, std::shared_ptr<const StepHandler>, std::less<>> handlers;
  std::string service;
  std::shared_ptr<IdempotencyStore> applied;  // effect key -> the first success's reply
  std::chrono::milliseconds keep_for{0};

  // "<service>/<effect key><suffix>", made in one allocation.
  std::string key_of(std::string_view effect_key, std::string_view suffix = {}) const {
    return detail::concat({service, "/", effect_key, suffix});
  }
};

namespace {
constexpr std::string_view kCompensateSuffix = ":compensate";
// How long an effect being applied holds its claim: a repeat meanwhile is refused (`aborted`),
// and a participant that crashed while applying it lets the next attempt apply it after this.
constexpr std::chrono::milliseconds kEffectLease{60'000};
}  // namespace

SagaParticipant::SagaParticipant(std::shared_ptr<UnifiedEventBus> bus, std::string service,
                                 std::size_t max_remembered)
    : SagaParticipant(std::move(bus), std::move(service),
                      make_memory_idempotency_store(std::max<std::size_t>(1, max_remembered))) {}

SagaParticipant::SagaParticipant(std::shared_ptr<UnifiedEventBus> bus, std::string service,
                                 std::shared_ptr<IdempotencyStore> store,
                                 std::chrono::milliseconds keep_for)
    : bus_(std::move(bus)), service_(std::move(service)), state_(std::make_shared<State>()) {
  state_->service = service_;
  state_->applied = store ? std::move(store) : make_memory_idempotency_store();
  state_->keep_for = keep_for.count() > 0 ? keep_for : std::chrono::hours(24 * 7);
}

void SagaParticipant::on_step(std::string action, StepHandler handler) {
  std::lock_guard lock(state_->mutex);
  state_->handlers.insert_or_assign(std::move(action),
                                    std::make_shared<const StepHandler>(std::move(handler)));
}

void SagaParticipant::on_compensation(std::string compensation, StepHandler handler) {
  // Handled like a step; the request itself says it is a compensation (its effect key too).
  on_step(std::move(compensation), std::move(handler));
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
    if (auto context = json.find("context"); context != json.end()) {
      request.context = *context;
    } else {
      request.context = Json(Json::value_t::object);
    }
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
    if (!request->effect_key.starts_with(request->saga_id + ":")) {
      co_return Error(errc::invalid_argument,
                      "saga step request: effect_key '" + request->effect_key +
                          "' does not belong to saga '" + request->saga_id + "'");
    }
    std::shared_ptr<const StepHandler> handler;
    {
      std::lock_guard lock(state->mutex);
      auto it = state->handlers.find(message.type());
      if (it == state->handlers.end()) {
        co_return Error(errc::unimplemented,
                        "no saga handler for '" + std::string(message.type()) + "'");
      }
      handler = it->second;
    }
    // A step whose compensation already ran here must not take effect after it (a late resend
    // of the step): it would never be undone.
    if (!request->compensation) {
      std::string marker = state->key_of(request->effect_key, kCompensateSuffix);
      auto compensated = co_await state->applied->find(std::move(marker));
      if (!compensated) co_return compensated.error().with_context("saga participant");
      if (*compensated) {
        co_return Error(errc::failed_precondition, "step '" + request->step + "' of saga " +
                                                       request->saga_id +
                                                       " was compensated already; not applied");
      }
    }
    const std::string key = state->key_of(request->effect_key);
    auto claimed = co_await state->applied->claim(key, kEffectLease);
    if (!claimed) co_return claimed.error().with_context("saga participant");
    if (claimed->status == IdempotencyClaim::Status::done) {
      // Applied already: the same reply, nothing done again.
      try {
        co_return Json::parse(claimed->result);
      } catch (const Json::exception& e) {
        co_return Error(errc::data_loss, "saga participant: the stored reply of '" + key +
                                             "' is not JSON: " + e.what());
      }
    }
    if (claimed->status == IdempotencyClaim::Status::in_progress) {
      co_return Error(errc::aborted, "saga participant: '" + key +
                                         "' is being applied by an earlier delivery; try again");
    }
    const std::string token = claimed->token;
    Result<Json> outcome;
    std::exception_ptr thrown;
    try {
      outcome = co_await (*handler)(std::move(*request));
    } catch (...) {
      thrown = std::current_exception();
    }
    if (thrown || !outcome) {
      (void)co_await state->applied->release(key, token);  // a retry applies it again
      if (thrown) std::rethrow_exception(thrown);
      co_return outcome;
    }
    auto completed = co_await state->applied->complete(
        key, token, marty::messaging::detail::write_json(*outcome), state->keep_for);
    if (!completed) {
      logger().error(
          "saga participant: recording '{}' as applied failed ({}); a resend after "
          "{} ms would apply it again",
          key, completed.error().describe(), kEffectLease.count());
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
