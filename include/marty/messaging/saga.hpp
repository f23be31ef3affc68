#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "marty/messaging/message.hpp"
#include "marty/messaging/result.hpp"

/// Sagas as data: definitions, the state a saga is in, and the I/O-free state machine that
/// decides what happens next. The async runner (DistributedSagaManager) and the participants'
/// helper (SagaParticipant) are in saga_manager.hpp.
namespace marty::messaging::saga {

using Clock = std::chrono::system_clock;
using std::chrono::milliseconds;

/// How a failed step (or compensation) is tried again: `max_attempts` in all, waiting
/// `initial_backoff` doubling (times `multiplier`) up to `max_backoff`, each wait shortened by
/// up to `jitter` (0..1) of itself at random so that many sagas do not retry in step.
struct RetryPolicy {
  RetryPolicy() {}  // NOLINT(modernize-use-equals-default): not an aggregate (GCC 12)
  int max_attempts = 3;
  milliseconds initial_backoff{100};
  milliseconds max_backoff{10'000};
  double multiplier = 2.0;
  double jitter = 0.2;

  /// The wait before attempt `attempt + 1` after attempt `attempt` failed, before jitter.
  milliseconds backoff_after(int attempt) const;
};

/// One step: a query `action` to `service` (on `queries.<service>.<action>`); if the saga must
/// be undone after this step completed, the query `compensation` to the same service.
struct SagaStep {
  SagaStep() {}  // NOLINT(modernize-use-equals-default)
  std::string name;
  std::string service;
  std::string action;
  /// Empty: nothing to undo (a read, a notification).
  std::string compensation;
  /// How long one attempt may take before it counts as failed.
  milliseconds timeout{30'000};
  RetryPolicy retry;
  /// A non-critical step that fails is recorded and skipped; the saga goes on.
  bool critical = true;
};

/// A saga: its steps in order, and how long the whole saga may take (0: no limit).
struct SagaDefinition {
  SagaDefinition() {}  // NOLINT(modernize-use-equals-default)
  std::string name;
  std::vector<SagaStep> steps;
  milliseconds timeout{0};
  /// Compensations are retried like steps, but until acknowledged: after this many attempts a
  /// saga whose compensation keeps failing ends `failed` (it needs a person).
  RetryPolicy compensation_retry = [] {
    RetryPolicy policy;
    policy.max_attempts = 10;
    return policy;
  }();
  /// Refuse a critical step without a compensation (steps before a failure must be undoable).
  bool require_compensations = false;
};

/// `invalid_argument` naming the problem: no name or steps, a duplicate step name, a step
/// without service or action, a non-positive timeout, a retry policy of no attempts, a missing
/// compensation when `require_compensations`.
Result<void> validate(const SagaDefinition& definition);

enum class SagaState {
  running,       ///< steps are being executed
  compensating,  ///< undoing the completed steps, last first
  completed,     ///< every critical step succeeded
  compensated,   ///< failed, cancelled or timed out, and every completed step was undone
  failed,        ///< a compensation could not be done: a person must look (see `failure`)
};
std::string_view to_string(SagaState state) noexcept;
bool is_final(SagaState state) noexcept;

enum class StepState {
  pending,
  running,
  completed,
  failed,  ///< gave up (a critical failure starts compensation; a non-critical is skipped)
  compensating,
  compensated,
  compensation_failed,
};
std::string_view to_string(StepState state) noexcept;

struct StepRecord {
  StepRecord() {}  // NOLINT(modernize-use-equals-default): not an aggregate (GCC 12)
  StepState state = StepState::pending;
  int attempts = 0;               ///< forward attempts made
  int compensation_attempts = 0;  ///< compensation attempts made
  std::string last_error;
  std::optional<Clock::time_point> started_at;
  std::optional<Clock::time_point> finished_at;
  /// While waiting to retry: when the next attempt may start.
  std::optional<Clock::time_point> retry_at;
  /// An attempt ended without a definite answer (a timeout, a lost connection): the step may
  /// have taken effect, so it is compensated if the saga is undone, even if it never completed.
  bool uncertain = false;
};

/// Everything about one saga; what the store keeps. A saga is driven only from this record, so
/// a process that loads it after a crash carries on from where it was written.
struct SagaRecord {
  SagaRecord() {}  // NOLINT(modernize-use-equals-default): not an aggregate (GCC 12)
  std::string id;
  std::string definition;
  SagaState state = SagaState::running;
  Json context = Json(Json::value_t::object);
  std::vector<StepRecord> steps;
  /// The step being executed (forward) or compensated (backward).
  std::size_t cursor = 0;
  bool cancel_requested = false;
  /// Why the saga is compensating or failed ("step payment: card declined", "cancelled").
  std::string failure;
  Clock::time_point created_at{};
  Clock::time_point updated_at{};
  std::optional<Clock::time_point> deadline;  ///< the saga-level timeout, when there is one
  /// Bumped on every change; stores refuse a write based on an older version.
  std::uint64_t version = 0;
};

/// Makes `into` equal to `from`, reusing what `into` holds: the context is copied only when it
/// differs (a step seldom changes it, and copying a JSON object is most of a record's copy).
/// For runners and stores that keep a copy of a record they update often.
void assign_record(SagaRecord& into, const SagaRecord& from);

Json to_json(const SagaRecord& record);
Result<SagaRecord> record_from_json(const Json& json);

/// What the runner must do next for a saga.
struct SagaAction {
  SagaAction() {}  // NOLINT(modernize-use-equals-default): not an aggregate (GCC 12)
  enum class Kind {
    run_step,          ///< send step `step`'s action (attempt `attempt`)
    run_compensation,  ///< send step `step`'s compensation (attempt `attempt`)
    wait,              ///< nothing until `until` (a retry backoff)
    finished,          ///< the saga reached a final state
  };
  Kind kind = Kind::finished;
  std::size_t step = 0;
  int attempt = 0;
  Clock::time_point until{};
  /// "<saga id>:<step>:<attempt>" (compensations: "<saga id>:<step>:compensate:<attempt>").
  std::string idempotency_key;
  /// Identifies the step's effect across attempts, for participants that must apply it once:
  /// "<saga id>:<step>" or "<saga id>:<step>:compensate".
  std::string effect_key;
};

/// The saga's rules, with no I/O and no clock of its own: every call is given `now`.
/// Thread-safety: none needed; it holds only the definition.
class SagaMachine {
 public:
  explicit SagaMachine(SagaDefinition definition) : definition_(std::move(definition)) {}
  const SagaDefinition& definition() const noexcept { return definition_; }

  /// A new saga's record.
  SagaRecord start(std::string id, Json context, Clock::time_point now) const;

  /// Decides the next action and records it (a step or compensation about to run becomes
  /// `running`/`compensating` with its attempt counted). Write the record before acting.
  SagaAction next(SagaRecord& record, Clock::time_point now) const;

  /// The outcome of the step action `action` (a reply, or an error). A reply object's
  /// "context" member is merged into the saga's context.
  void step_finished(SagaRecord& record, const SagaAction& action, const Result<Json>& outcome,
                     Clock::time_point now) const;
  /// The outcome of the compensation `action`.
  void compensation_finished(SagaRecord& record, const SagaAction& action,
                             const Result<Json>& outcome, Clock::time_point now) const;

  /// Stops forward progress: the saga compensates what completed. No effect on final sagas.
  /// Returns false when the saga had already ended.
  bool cancel(SagaRecord& record, Clock::time_point now) const;

 private:
  void begin_compensation(SagaRecord& record, std::string reason, Clock::time_point now) const;
  Clock::time_point retry_time(const RetryPolicy& policy, int attempt, const std::string& key,
                               Clock::time_point now) const;

  SagaDefinition definition_;
};

}  // namespace marty::messaging::saga
