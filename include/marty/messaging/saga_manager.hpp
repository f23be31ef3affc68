#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include <asio/awaitable.hpp>

#include "marty/messaging/event_bus.hpp"
#include "marty/messaging/idempotency.hpp"
#include "marty/messaging/saga.hpp"
#include "marty/messaging/saga_store.hpp"

/// Running sagas over the bus: the orchestrator side (DistributedSagaManager) and the
/// participants' side (SagaParticipant).
///
/// A forward step is the query `queries.<service>.<action>`, a compensation the query
/// `queries.<service>.<compensation>`; both carry a JSON object:
///   {"saga_id", "saga", "step", "attempt", "compensation": bool,
///    "idempotency_key": "<saga>:<step>[:compensate]:<attempt>",
///    "effect_key": "<saga>:<step>[:compensate]", "context": {...}}
/// and the saga id as correlation id. A step's reply may carry {"context": {...}}, merged into
/// the saga's context for later steps. The orchestrator publishes, in order, `saga.started`,
/// `saga.step_started`, `saga.step_completed`, `saga.step_failed`, `saga.compensating` (or
/// `saga.cancelled`), `saga.step_compensated`, `saga.compensation_failed`, `saga.completed`,
/// `saga.compensated` and `saga.failed` events (on `events.saga.*`) with the saga id as
/// correlation id.
namespace marty::messaging::saga {

/// What get_saga_status() returns: the stored record with the definition's step names.
struct SagaStatus {
  SagaStatus() {}  // NOLINT(modernize-use-equals-default): not an aggregate (GCC 12)
  SagaRecord record;
  std::vector<std::string> step_names;
  bool cancelled() const { return record.cancel_requested; }
};

struct SagaManagerOptions {
  SagaManagerOptions() {}  // NOLINT(modernize-use-equals-default): not an aggregate (GCC 12)
  /// Publish the saga.* events.
  bool publish_events = true;
  /// How long this manager's claim on a saga lasts in the store without renewal (it renews
  /// while driving). After a crash, another manager can take the saga over once it expires.
  std::chrono::milliseconds lease{15'000};
};

/// Registers saga definitions and runs sagas over a bus, writing every transition to a store.
/// Thread-safety: every member may be called from any thread; sagas run on the bus's executor.
/// Lifetime: keep the manager (a shared_ptr) alive while sagas run; stop() ends their runners
/// (the sagas stay in the store, unfinished, for resume_unfinished()).
class DistributedSagaManager : public std::enable_shared_from_this<DistributedSagaManager> {
 public:
  DistributedSagaManager(std::shared_ptr<UnifiedEventBus> bus, std::shared_ptr<SagaStore> store,
                         SagaManagerOptions options);
  ~DistributedSagaManager();

  /// `invalid_argument` for a bad definition (see validate()) or a name already registered.
  Result<void> register_saga_definition(SagaDefinition definition);

  /// Stores a new saga and starts it; returns its id (a UUIDv7) once stored, not once done.
  asio::awaitable<Result<std::string>> create_and_start_saga(std::string name, Json context);

  /// The saga's state, each step's state, attempts, errors and times; also for finished sagas.
  Result<SagaStatus> get_saga_status(const std::string& saga_id);

  /// Stops forward progress; the completed steps are compensated. A saga of the store that no
  /// orchestrator drives (its lease is free: its orchestrator died or gave up) is taken over,
  /// cancelled before this manager takes any step of it. `failed_precondition` when the saga
  /// has ended already, `not_found` for an unknown id or an unregistered definition, `aborted`
  /// while another orchestrator's lease on it lasts (cancel it there).
  Result<void> cancel_saga(const std::string& saga_id);

  Result<std::vector<SagaRecord>> list_sagas(SagaFilter filter);
  Result<std::vector<SagaRecord>> list_sagas();  ///< all, newest first (up to 1,000)

  /// Starts a runner for every unfinished saga in the store whose definition is registered
  /// (after a restart), but those another orchestrator's lease holds; returns how many it took
  /// over (not counting those it drives already, so that an orchestrator may call it again and
  /// again). Retry waits resume from their stored times.
  asio::awaitable<Result<std::size_t>> resume_unfinished();

  /// Starts a runner for one unfinished saga of the store (an operator's tool taking a saga
  /// over, to cancel it). `not_found` for an unknown id or an unregistered definition,
  /// `failed_precondition` when it has ended, `aborted` while another orchestrator's lease on
  /// it lasts. Nothing happens when this manager drives it already.
  Result<void> resume_saga(const std::string& saga_id);

  /// Ends the runners after their current action (a saga that action ended is stored as ended);
  /// waits for them. Unfinished sagas stay in the store, to be resumed.
  asio::awaitable<void> stop();

  /// Resumes when the saga reaches a final state (or `limit` passes: `deadline_exceeded`).
  asio::awaitable<Result<SagaStatus>> wait_for(std::string saga_id,
                                               std::chrono::milliseconds limit);

 private:
  struct Running;
  asio::awaitable<void> drive(std::shared_ptr<DistributedSagaManager> self,
                              std::shared_ptr<Running> running);
  static asio::awaitable<void> keep_leases(std::weak_ptr<DistributedSagaManager> weak);
  void renew(Running& running);
  bool stored_at_once(Running& running, const SagaRecord& snapshot);
  // `snapshot` is the caller's, which awaits the call at once (it outlives the coroutine).
  asio::awaitable<bool> persist(std::shared_ptr<Running> running, const SagaRecord& snapshot);
  asio::awaitable<Result<Json>> send(const SagaMachine& machine, const SagaRecord& record,
                                     const SagaAction& action);
  asio::awaitable<void> event(std::string type, SagaRecord record, Json details);
  /// `fresh`: just created and stored by this manager (no need to reload it). `cancel`: cancel
  /// it before its runner starts. `failed_precondition` when it has ended.
  Result<void> launch(SagaRecord record, bool fresh, bool cancel = false);

  std::shared_ptr<UnifiedEventBus> bus_;
  std::shared_ptr<SagaStore> store_;
  SagaManagerOptions options_;
  std::mutex mutex_;
  std::map<std::string, std::shared_ptr<SagaMachine>> definitions_;
  // Hashed: ids are UUIDv7s, whose shared time prefix makes ordered comparisons long.
  std::unordered_map<std::string, std::shared_ptr<Running>> running_;
  bool stopping_ = false;
  bool keeper_running_ = false;               // the lease keeper coroutine
  const std::string owner_ = make_uuid_v7();  // this manager, as a lease holder
};

/// The Python original's name for the saga runner; here one class registers definitions and
/// drives the sagas.
using EnhancedSagaOrchestrator = DistributedSagaManager;

/// Overloads rather than a defaulted options argument: GCC 12 can leave a defaulted class
/// argument unconstructed when the call is made inside a coroutine (docs/decisions/0001).
std::shared_ptr<DistributedSagaManager> create_distributed_saga_manager(
    std::shared_ptr<UnifiedEventBus> bus, std::shared_ptr<SagaStore> store,
    SagaManagerOptions options);
std::shared_ptr<DistributedSagaManager> create_distributed_saga_manager(
    std::shared_ptr<UnifiedEventBus> bus, std::shared_ptr<SagaStore> store);

/// What a participant's handler gets for a step or compensation.
struct SagaStepRequest {
  SagaStepRequest() {}  // NOLINT(modernize-use-equals-default): not an aggregate (GCC 12)
  std::string saga_id;
  std::string saga;
  std::string step;
  int attempt = 0;
  bool compensation = false;
  std::string idempotency_key;
  std::string effect_key;
  Json context;
};

/// The participants' side: a service registers what it does for saga steps and how it undoes
/// it; each effect (a step, or its compensation) is applied once per saga even when the
/// orchestrator sends it again (a retry after a lost reply, a resend after a crash): a repeat
/// gets the first success's reply. Failures are not remembered, so a retry runs again; a
/// repeat arriving while the first is still being applied fails with `aborted` (the
/// orchestrator's retry policy sends it again).
///
/// The memory of applied effects is an IdempotencyStore (keys "<service>/<effect key>"). By
/// default it is this process's, bounded to `max_remembered` effects (oldest first), and does
/// not survive a restart; give a SQLite or Redis store to have it survive restarts, or be
/// shared by every instance of the service.
class SagaParticipant {
 public:
  using StepHandler = std::function<asio::awaitable<Result<Json>>(SagaStepRequest)>;

  SagaParticipant(std::shared_ptr<UnifiedEventBus> bus, std::string service,
                  std::size_t max_remembered = 100'000);
  /// With `store` remembering applied effects for `keep_for` (make it longer than a saga can
  /// take to finish, compensation included).
  SagaParticipant(std::shared_ptr<UnifiedEventBus> bus, std::string service,
                  std::shared_ptr<IdempotencyStore> store,
                  std::chrono::milliseconds keep_for = std::chrono::hours(24 * 7));

  /// Handles the query `queries.<service>.<action>`.
  void on_step(std::string action, StepHandler handler);
  /// Handles the query `queries.<service>.<compensation>`. A compensation must succeed when
  /// there is nothing to undo (the step never took effect).
  void on_compensation(std::string compensation, StepHandler handler);

  /// Registers the handlers with the bus (call after the bus started).
  asio::awaitable<Result<SubscriptionId>> start();

 private:
  struct State;
  std::shared_ptr<UnifiedEventBus> bus_;
  std::string service_;
  std::shared_ptr<State> state_;
};

/// Adapts a plain function into a SagaParticipant::StepHandler.
SagaParticipant::StepHandler sync_step_handler(
    std::function<Result<Json>(const SagaStepRequest&)> fn);

}  // namespace marty::messaging::saga
