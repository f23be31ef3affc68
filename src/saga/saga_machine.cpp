#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <optional>
#include <set>

#include "marty/messaging/detail/backoff.hpp"
#include "marty/messaging/detail/concat.hpp"
#include "marty/messaging/saga.hpp"

namespace marty::messaging::saga {
namespace {

Error bad_definition(const std::string& definition, const std::string& what) {
  return Error(errc::invalid_argument, "saga definition '" + definition + "': " + what);
}

// A failure worth trying again: the participant was unreachable, slow or temporarily unable.
// A rejection (bad input, a rule of the business such as a declined card) is final.
bool retryable(const Error& error) {
  return !(error.is(errc::invalid_argument) || error.is(errc::failed_precondition) ||
           error.is(errc::permission_denied) || error.is(errc::unauthenticated) ||
           error.is(errc::already_exists) || error.is(errc::unimplemented) ||
           error.is(errc::data_loss));
}

std::int64_t to_ms(Clock::time_point t) {
  return std::chrono::duration_cast<milliseconds>(t.time_since_epoch()).count();
}
Clock::time_point from_ms(std::int64_t ms) {
  return Clock::time_point(milliseconds(ms));
}

Result<void> validate_retry(const std::string& definition, const std::string& where,
                            const RetryPolicy& policy) {
  if (policy.max_attempts < 1) {
    return bad_definition(definition, where + ": max_attempts must be at least 1");
  }
  if (policy.initial_backoff.count() < 0 || policy.max_backoff < policy.initial_backoff) {
    return bad_definition(definition, where + ": backoff must satisfy 0 <= initial <= max");
  }
  if (policy.multiplier < 1.0 || policy.jitter < 0.0 || policy.jitter > 1.0) {
    return bad_definition(definition, where + ": multiplier must be >= 1 and jitter in [0, 1]");
  }
  return ok();
}

}  // namespace

milliseconds RetryPolicy::backoff_after(int attempt) const {
  return detail::exponential_backoff(initial_backoff, multiplier, max_backoff, attempt);
}

Result<void> validate(const SagaDefinition& definition) {
  const std::string& name = definition.name;
  if (name.empty()) return Error(errc::invalid_argument, "saga definition has no name");
  if (definition.steps.empty()) return bad_definition(name, "has no steps");
  if (definition.timeout.count() < 0) return bad_definition(name, "timeout must not be negative");
  if (auto valid = validate_retry(name, "compensation_retry", definition.compensation_retry);
      !valid) {
    return valid;
  }
  std::set<std::string> seen;
  for (std::size_t i = 0; i < definition.steps.size(); ++i) {
    const SagaStep& step = definition.steps[i];
    const std::string where = "step " + std::to_string(i + 1) +
                              (step.name.empty() ? std::string() : " '" + step.name + "'");
    if (step.name.empty()) return bad_definition(name, where + " has no name");
    if (!seen.insert(step.name).second) {
      return bad_definition(name, "two steps are named '" + step.name + "'");
    }
    if (step.service.empty()) return bad_definition(name, where + " has no service");
    if (step.action.empty()) return bad_definition(name, where + " has no action");
    if (step.timeout.count() <= 0)
      return bad_definition(name, where + ": timeout must be positive");
    if (definition.require_compensations && step.critical && step.compensation.empty()) {
      return bad_definition(name, where + " is critical but has no compensation");
    }
    if (auto valid = validate_retry(name, where, step.retry); !valid) return valid;
  }
  return ok();
}

std::string_view to_string(SagaState state) noexcept {
  switch (state) {
    case SagaState::running:
      return "running";
    case SagaState::compensating:
      return "compensating";
    case SagaState::completed:
      return "completed";
    case SagaState::compensated:
      return "compensated";
    case SagaState::failed:
      return "failed";
  }
  return "unknown";
}

bool is_final(SagaState state) noexcept {
  return state == SagaState::completed || state == SagaState::compensated ||
         state == SagaState::failed;
}

std::string_view to_string(StepState state) noexcept {
  switch (state) {
    case StepState::pending:
      return "pending";
    case StepState::running:
      return "running";
    case StepState::completed:
      return "completed";
    case StepState::failed:
      return "failed";
    case StepState::compensating:
      return "compensating";
    case StepState::compensated:
      return "compensated";
    case StepState::compensation_failed:
      return "compensation_failed";
  }
  return "unknown";
}

SagaRecord SagaMachine::start(std::string id, Json context, Clock::time_point now) const {
  SagaRecord record;
  record.id = std::move(id);
  record.definition = definition_.name;
  record.context = context.is_object() ? std::move(context) : Json::object();
  record.steps.resize(definition_.steps.size());
  record.created_at = now;
  record.updated_at = now;
  if (definition_.timeout.count() > 0) record.deadline = now + definition_.timeout;
  record.version = 1;
  return record;
}

Clock::time_point SagaMachine::retry_time(const RetryPolicy& policy, int attempt,
                                          const std::string& key, Clock::time_point now) const {
  // Jitter without a random source, so the machine stays deterministic and testable: a
  // fraction of the backoff derived from the saga, step and attempt.
  return now + detail::jittered(policy.backoff_after(attempt), policy.jitter, key);
}

void SagaMachine::begin_compensation(SagaRecord& record, std::string reason,
                                     Clock::time_point now) const {
  record.state = SagaState::compensating;
  record.failure = std::move(reason);
  record.cursor = std::min(record.cursor, record.steps.size() - 1);
  record.updated_at = now;
}

SagaAction SagaMachine::next(SagaRecord& record, Clock::time_point now) const {
  auto keys = [&](SagaAction& action, bool compensation) {
    // Each key made in one allocation: they are made for every step a saga takes.
    const std::string_view step = definition_.steps[action.step].name;
    const std::string_view suffix = compensation ? ":compensate" : "";
    action.effect_key = detail::concat({record.id, ":", step, suffix});
    action.idempotency_key =
        detail::concat({action.effect_key, ":", std::to_string(action.attempt)});
  };
  SagaAction action;
  if (is_final(record.state)) return action;

  if (record.state == SagaState::running) {
    if (record.cancel_requested) {
      begin_compensation(record, "cancelled", now);
    } else if (record.deadline && now >= *record.deadline) {
      begin_compensation(
          record, "saga timed out after " + std::to_string(definition_.timeout.count()) + " ms",
          now);
    }
  }

  if (record.state == SagaState::running) {
    while (record.cursor < record.steps.size()) {
      const StepState state = record.steps[record.cursor].state;
      if (state != StepState::completed && state != StepState::failed) break;
      ++record.cursor;  // done, or a non-critical failure recorded and skipped
    }
    if (record.cursor == record.steps.size()) {
      record.state = SagaState::completed;
      record.updated_at = now;
      ++record.version;
      return action;
    }
    StepRecord& step = record.steps[record.cursor];
    action.step = record.cursor;
    if (step.state == StepState::running) {
      // Sent before a crash, outcome unknown: send the same attempt again (participants
      // de-duplicate by its key).
      action.kind = SagaAction::Kind::run_step;
      action.attempt = step.attempts;
      keys(action, false);
      return action;
    }
    if (step.retry_at && now < *step.retry_at) {
      action.kind = SagaAction::Kind::wait;
      action.until = record.deadline ? std::min(*step.retry_at, *record.deadline) : *step.retry_at;
      return action;
    }
    step.state = StepState::running;
    step.retry_at.reset();
    ++step.attempts;
    if (!step.started_at) step.started_at = now;
    record.updated_at = now;
    ++record.version;
    action.kind = SagaAction::Kind::run_step;
    action.attempt = step.attempts;
    keys(action, false);
    return action;
  }

  // Compensating: from the cursor backwards, undo what may have taken effect.
  for (std::size_t i = record.cursor + 1; i-- > 0;) {
    record.cursor = i;
    StepRecord& step = record.steps[i];
    const SagaStep& definition = definition_.steps[i];
    // A step still `running` was in flight when the saga stopped (a crash, then a timeout):
    // it may have taken effect, so it is compensated too.
    const bool took_effect =
        step.state == StepState::completed || step.state == StepState::running ||
        step.state == StepState::compensating ||
        (step.uncertain && (step.state == StepState::pending || step.state == StepState::failed));
    if (!took_effect) continue;
    if (definition.compensation.empty()) {
      step.state = StepState::compensated;  // nothing to undo
      continue;
    }
    action.step = i;
    if (step.state == StepState::compensating && !step.retry_at) {
      action.kind = SagaAction::Kind::run_compensation;  // in flight before a crash: again
      action.attempt = step.compensation_attempts;
      keys(action, true);
      return action;
    }
    if (step.retry_at && now < *step.retry_at) {
      action.kind = SagaAction::Kind::wait;
      action.until = *step.retry_at;
      return action;
    }
    step.state = StepState::compensating;
    step.retry_at.reset();
    ++step.compensation_attempts;
    record.updated_at = now;
    ++record.version;
    action.kind = SagaAction::Kind::run_compensation;
    action.attempt = step.compensation_attempts;
    keys(action, true);
    return action;
  }
  record.state = SagaState::compensated;
  record.updated_at = now;
  ++record.version;
  return action;
}

void SagaMachine::step_finished(SagaRecord& record, const SagaAction& action,
                                const Result<Json>& outcome, Clock::time_point now) const {
  if (action.step >= record.steps.size()) return;
  StepRecord& step = record.steps[action.step];
  if (step.state != StepState::running || step.attempts != action.attempt) return;  // stale
  const SagaStep& definition = definition_.steps[action.step];
  record.updated_at = now;
  ++record.version;
  if (outcome) {
    step.state = StepState::completed;
    step.finished_at = now;
    step.last_error.clear();
    const Json& reply = *outcome;
    if (reply.is_object() && reply.contains("context") && reply["context"].is_object()) {
      record.context.update(reply["context"]);
    }
    record.cursor = action.step + 1;
    return;
  }
  step.last_error = outcome.error().describe();
  // No answer is not a no: after a timeout the participant may have done the step. (An error
  // it replied with, or one that kept the request from going out, is a definite "not done".)
  if (outcome.error().is(errc::deadline_exceeded) || outcome.error().is(errc::cancelled)) {
    step.uncertain = true;
  }
  if (retryable(outcome.error()) && step.attempts < definition.retry.max_attempts) {
    step.state = StepState::pending;
    step.retry_at = retry_time(definition.retry, step.attempts, action.idempotency_key, now);
    return;
  }
  step.state = StepState::failed;
  step.finished_at = now;
  if (definition.critical) {
    begin_compensation(record,
                       "step '" + definition.name + "' failed after " +
                           std::to_string(step.attempts) + " attempt(s): " + step.last_error,
                       now);
  } else {
    record.cursor = action.step + 1;  // recorded; the saga goes on
  }
}

void SagaMachine::compensation_finished(SagaRecord& record, const SagaAction& action,
                                        const Result<Json>& outcome, Clock::time_point now) const {
  if (action.step >= record.steps.size() || record.state != SagaState::compensating) return;
  StepRecord& step = record.steps[action.step];
  if (step.state != StepState::compensating || step.compensation_attempts != action.attempt) {
    return;  // stale
  }
  record.updated_at = now;
  ++record.version;
  if (outcome) {
    step.state = StepState::compensated;
    step.finished_at = now;
    step.retry_at.reset();
    return;
  }
  step.last_error = outcome.error().describe();
  const RetryPolicy& policy = definition_.compensation_retry;
  if (step.compensation_attempts < policy.max_attempts) {
    step.retry_at = retry_time(policy, step.compensation_attempts, action.idempotency_key, now);
    return;
  }
  step.state = StepState::compensation_failed;
  step.finished_at = now;
  record.state = SagaState::failed;
  record.failure = "compensation of step '" + definition_.steps[action.step].name +
                   "' failed after " + std::to_string(step.compensation_attempts) +
                   " attempt(s): " + step.last_error + " (saga stopped " +
                   (record.failure.empty() ? std::string("compensating")
                                           : "compensating because: " + record.failure) +
                   "); it needs a person";
}

bool SagaMachine::cancel(SagaRecord& record, Clock::time_point now) const {
  if (is_final(record.state)) return false;
  if (record.state == SagaState::running && !record.cancel_requested) {
    record.cancel_requested = true;
    record.updated_at = now;
    ++record.version;
  }
  return true;
}

void assign_record(SagaRecord& into, const SagaRecord& from) {
  if (&into == &from) return;
  // Every member, by name: a member added to SagaRecord breaks this binding until it is
  // assigned here too.
  const auto& [id, definition, state, context, steps, cursor, cancel_requested, failure, created_at,
               updated_at, deadline, version] = from;
  into.id = id;
  into.definition = definition;
  into.state = state;
  if (into.context != context) into.context = context;
  into.steps = steps;
  into.cursor = cursor;
  into.cancel_requested = cancel_requested;
  into.failure = failure;
  into.created_at = created_at;
  into.updated_at = updated_at;
  into.deadline = deadline;
  into.version = version;
}

Json to_json(const SagaRecord& record) {
  Json steps = Json::array();
  for (const StepRecord& step : record.steps) {
    Json s{{"state", std::string(to_string(step.state))},
           {"attempts", step.attempts},
           {"compensation_attempts", step.compensation_attempts},
           {"last_error", step.last_error},
           {"uncertain", step.uncertain}};
    if (step.started_at) s["started_at"] = to_ms(*step.started_at);
    if (step.finished_at) s["finished_at"] = to_ms(*step.finished_at);
    if (step.retry_at) s["retry_at"] = to_ms(*step.retry_at);
    steps.push_back(std::move(s));
  }
  Json out{{"id", record.id},
           {"definition", record.definition},
           {"state", std::string(to_string(record.state))},
           {"context", record.context},
           {"steps", std::move(steps)},
           {"cursor", record.cursor},
           {"cancel_requested", record.cancel_requested},
           {"failure", record.failure},
           {"created_at", to_ms(record.created_at)},
           {"updated_at", to_ms(record.updated_at)},
           {"version", record.version}};
  if (record.deadline) out["deadline"] = to_ms(*record.deadline);
  return out;
}

namespace {

// The value among `values` whose to_string() is `name`.
template <class State>
std::optional<State> from_name(std::string_view name, std::initializer_list<State> values) {
  for (State value : values) {
    if (to_string(value) == name) return value;
  }
  return std::nullopt;
}

}  // namespace

Result<SagaRecord> record_from_json(const Json& json) {
  auto bad = [](const std::string& what) {
    return Error(errc::data_loss, "stored saga record: " + what);
  };
  try {
    SagaRecord record;
    record.id = json.at("id").get<std::string>();
    record.definition = json.at("definition").get<std::string>();
    const std::string state = json.at("state").get<std::string>();
    auto saga_state =
        from_name(state, {SagaState::running, SagaState::compensating, SagaState::completed,
                          SagaState::compensated, SagaState::failed});
    if (!saga_state) return bad("unknown state '" + state + "'");
    record.state = *saga_state;
    record.context = json.at("context");
    for (const Json& s : json.at("steps")) {
      StepRecord step;
      const std::string step_state = s.at("state").get<std::string>();
      auto parsed =
          from_name(step_state, {StepState::pending, StepState::running, StepState::completed,
                                 StepState::failed, StepState::compensating, StepState::compensated,
                                 StepState::compensation_failed});
      if (!parsed) return bad("unknown step state '" + step_state + "'");
      step.state = *parsed;
      step.attempts = s.at("attempts").get<int>();
      step.compensation_attempts = s.at("compensation_attempts").get<int>();
      step.last_error = s.at("last_error").get<std::string>();
      step.uncertain = s.value("uncertain", false);
      if (s.contains("started_at")) step.started_at = from_ms(s["started_at"].get<std::int64_t>());
      if (s.contains("finished_at")) {
        step.finished_at = from_ms(s["finished_at"].get<std::int64_t>());
      }
      if (s.contains("retry_at")) step.retry_at = from_ms(s["retry_at"].get<std::int64_t>());
      record.steps.push_back(std::move(step));
    }
    record.cursor = json.at("cursor").get<std::size_t>();
    record.cancel_requested = json.at("cancel_requested").get<bool>();
    record.failure = json.at("failure").get<std::string>();
    record.created_at = from_ms(json.at("created_at").get<std::int64_t>());
    record.updated_at = from_ms(json.at("updated_at").get<std::int64_t>());
    record.version = json.at("version").get<std::uint64_t>();
    if (json.contains("deadline")) record.deadline = from_ms(json["deadline"].get<std::int64_t>());
    if (record.steps.empty() || record.cursor >= record.steps.size() + 1) {
      return bad("saga " + record.id + " has no steps or a cursor out of range");
    }
    return record;
  } catch (const Json::exception& e) {
    return bad(std::string("malformed: ") + e.what());
  }
}

}  // namespace marty::messaging::saga
