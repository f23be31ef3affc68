// The saga state machine on a virtual clock: every path, with no broker and no threads.
#include <gtest/gtest.h>

#include "marty/messaging/saga.hpp"

namespace marty::messaging::saga {
namespace {

using namespace std::chrono_literals;

SagaStep step(std::string name, std::string compensation = "undo", bool critical = true) {
  SagaStep s;
  s.name = name;
  s.service = name + "_service";
  s.action = "do_" + name;
  s.compensation = std::move(compensation);
  s.timeout = 1s;
  s.retry.max_attempts = 3;
  s.retry.initial_backoff = 100ms;
  s.retry.max_backoff = 1s;
  s.retry.jitter = 0;
  s.critical = critical;
  return s;
}

SagaDefinition order_saga() {
  SagaDefinition d;
  d.name = "order";
  d.steps = {step("reserve"), step("pay"), step("ship")};
  d.compensation_retry.max_attempts = 2;
  d.compensation_retry.initial_backoff = 50ms;
  d.compensation_retry.jitter = 0;
  return d;
}

class SagaMachineTest : public ::testing::Test {
 protected:
  SagaMachine machine_{order_saga()};
  Clock::time_point now_ = Clock::time_point(1'700'000'000s);
  SagaRecord record_ = machine_.start("s1", Json{{"order", 7}}, now_);

  SagaAction next() { return machine_.next(record_, now_); }
  // Runs the next action, expecting `kind` on `step`, and answers it with `outcome`.
  SagaAction answer(SagaAction::Kind kind, std::size_t step_index, Result<Json> outcome) {
    SagaAction action = next();
    EXPECT_EQ(action.kind, kind);
    EXPECT_EQ(action.step, step_index);
    if (kind == SagaAction::Kind::run_step) {
      machine_.step_finished(record_, action, outcome, now_);
    } else if (kind == SagaAction::Kind::run_compensation) {
      machine_.compensation_finished(record_, action, outcome, now_);
    }
    return action;
  }
  StepState state_of(std::size_t i) const { return record_.steps[i].state; }
};

TEST_F(SagaMachineTest, AllStepsSucceedAndRepliesUpdateTheContext) {
  answer(SagaAction::Kind::run_step, 0, Json{{"context", {{"reservation", "R-1"}}}});
  answer(SagaAction::Kind::run_step, 1, Json{{"paid", true}});
  const SagaAction last = answer(SagaAction::Kind::run_step, 2, Json::object());
  EXPECT_EQ(last.idempotency_key, "s1:ship:1");
  EXPECT_EQ(last.effect_key, "s1:ship");
  EXPECT_EQ(next().kind, SagaAction::Kind::finished);
  EXPECT_EQ(record_.state, SagaState::completed);
  EXPECT_EQ(record_.context["reservation"], "R-1");
  EXPECT_EQ(record_.context["order"], 7);
  for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(state_of(i), StepState::completed);
}

TEST_F(SagaMachineTest, ARejectedStepIsNotRetriedAndCompensatesInReverse) {
  answer(SagaAction::Kind::run_step, 0, Json::object());
  answer(SagaAction::Kind::run_step, 1, Error(errc::failed_precondition, "card declined"));
  EXPECT_EQ(record_.state, SagaState::compensating);
  EXPECT_EQ(record_.steps[1].attempts, 1);
  EXPECT_NE(record_.failure.find("card declined"), std::string::npos);
  const SagaAction undo = answer(SagaAction::Kind::run_compensation, 0, Json::object());
  EXPECT_EQ(undo.idempotency_key, "s1:reserve:compensate:1");
  EXPECT_EQ(next().kind, SagaAction::Kind::finished);
  EXPECT_EQ(record_.state, SagaState::compensated);
  EXPECT_EQ(state_of(0), StepState::compensated);
  EXPECT_EQ(state_of(1), StepState::failed);
  EXPECT_EQ(state_of(2), StepState::pending);
}

TEST_F(SagaMachineTest, TransientFailuresAreRetriedAfterTheBackoff) {
  answer(SagaAction::Kind::run_step, 0, Error(errc::unavailable, "inventory down"));
  SagaAction wait = next();
  ASSERT_EQ(wait.kind, SagaAction::Kind::wait);
  EXPECT_EQ(wait.until, now_ + 100ms);
  now_ += 100ms;
  answer(SagaAction::Kind::run_step, 0, Error(errc::deadline_exceeded, "timed out"));
  wait = next();
  ASSERT_EQ(wait.kind, SagaAction::Kind::wait);
  EXPECT_EQ(wait.until, now_ + 200ms);  // doubled
  now_ += 200ms;
  const SagaAction third = answer(SagaAction::Kind::run_step, 0, Json::object());
  EXPECT_EQ(third.attempt, 3);
  EXPECT_EQ(third.idempotency_key, "s1:reserve:3");
  EXPECT_EQ(state_of(0), StepState::completed);
  EXPECT_EQ(record_.steps[0].attempts, 3);
}

TEST_F(SagaMachineTest, RetriesRunOutThenTheSagaCompensates) {
  answer(SagaAction::Kind::run_step, 0, Json::object());
  for (int attempt = 1; attempt <= 3; ++attempt) {
    answer(SagaAction::Kind::run_step, 1, Error(errc::unavailable, "gateway down"));
    if (attempt < 3) {
      ASSERT_EQ(next().kind, SagaAction::Kind::wait);
      now_ += 1s;
    }
  }
  EXPECT_EQ(record_.state, SagaState::compensating);
  EXPECT_NE(record_.failure.find("after 3 attempt(s)"), std::string::npos);
  answer(SagaAction::Kind::run_compensation, 0, Json::object());
  EXPECT_EQ(next().kind, SagaAction::Kind::finished);
  EXPECT_EQ(record_.state, SagaState::compensated);
}

TEST(SagaRecordTest, AssignRecordCopiesEveryField) {
  SagaRecord from;
  from.id = "a-saga-id-longer-than-the-small-string-buffer";
  from.definition = "order";
  from.state = SagaState::compensating;
  from.context = Json{{"order", 7}, {"items", Json::array({1, 2})}};
  from.steps.resize(2);
  from.steps[1].state = StepState::failed;
  from.steps[1].attempts = 3;
  from.steps[1].last_error = "card declined";
  from.steps[1].finished_at = Clock::time_point(std::chrono::seconds(5));
  from.cursor = 1;
  from.cancel_requested = true;
  from.failure = "step 'pay' failed";
  from.created_at = Clock::time_point(std::chrono::seconds(1));
  from.updated_at = Clock::time_point(std::chrono::seconds(2));
  from.deadline = Clock::time_point(std::chrono::seconds(3));
  from.version = 42;

  SagaRecord into;  // differs in every field
  into.id = "other";
  into.context = Json{{"order", 8}};
  into.steps.resize(5);
  assign_record(into, from);
  EXPECT_EQ(to_json(into), to_json(from));
  EXPECT_EQ(into.cancel_requested, true);
  EXPECT_EQ(into.deadline, from.deadline);

  // The same context is kept; a changed one is copied.
  from.context["order"] = 9;
  ++from.version;
  assign_record(into, from);
  EXPECT_EQ(into.context, from.context);
  EXPECT_EQ(into.version, 43u);
  assign_record(into, into);  // itself: unchanged
  EXPECT_EQ(to_json(into), to_json(from));
}

TEST(SagaMachine, ANonCriticalFailureIsRecordedAndSkipped) {
  SagaDefinition d = order_saga();
  d.steps[1] = step("notify", "", false);
  d.steps[1].retry.max_attempts = 1;
  SagaMachine machine(d);
  const auto now = Clock::time_point(1'700'000'000s);
  SagaRecord record = machine.start("s2", Json::object(), now);
  for (std::size_t i = 0; i < 3; ++i) {
    SagaAction action = machine.next(record, now);
    ASSERT_EQ(action.kind, SagaAction::Kind::run_step);
    ASSERT_EQ(action.step, i);
    machine.step_finished(
        record, action,
        i == 1 ? Result<Json>(Error(errc::unavailable, "mail down")) : Result<Json>(Json::object()),
        now);
  }
  EXPECT_EQ(machine.next(record, now).kind, SagaAction::Kind::finished);
  EXPECT_EQ(record.state, SagaState::completed);
  EXPECT_EQ(record.steps[1].state, StepState::failed);
  EXPECT_NE(record.steps[1].last_error.find("mail down"), std::string::npos);
}

TEST(SagaMachine, TheSagaTimeoutStartsCompensation) {
  SagaDefinition d = order_saga();
  d.timeout = 2s;
  d.steps[1].retry.initial_backoff = 5s;  // the retry would come after the deadline
  d.steps[1].retry.max_backoff = 10s;
  SagaMachine machine(d);
  auto now = Clock::time_point(1'700'000'000s);
  SagaRecord record = machine.start("s3", Json::object(), now);
  SagaAction first = machine.next(record, now);
  machine.step_finished(record, first, Json::object(), now);
  SagaAction second = machine.next(record, now);
  machine.step_finished(record, second, Error(errc::unavailable, "slow"), now);
  // The wait ends at the deadline rather than at the later retry.
  now += 1900ms;
  SagaAction wait = machine.next(record, now);
  ASSERT_EQ(wait.kind, SagaAction::Kind::wait);
  EXPECT_EQ(wait.until, now - 1900ms + 2s);
  now += 100ms;
  SagaAction undo = machine.next(record, now);
  ASSERT_EQ(undo.kind, SagaAction::Kind::run_compensation);
  EXPECT_EQ(undo.step, 0u);
  EXPECT_NE(record.failure.find("timed out"), std::string::npos);
}

TEST_F(SagaMachineTest, CancelDuringAStepCompensatesThatStepToo) {
  answer(SagaAction::Kind::run_step, 0, Json::object());
  SagaAction paying = next();  // in flight
  EXPECT_TRUE(machine_.cancel(record_, now_));
  machine_.step_finished(record_, paying, Json::object(), now_);  // it did go through
  answer(SagaAction::Kind::run_compensation, 1, Json::object());
  answer(SagaAction::Kind::run_compensation, 0, Json::object());
  EXPECT_EQ(next().kind, SagaAction::Kind::finished);
  EXPECT_EQ(record_.state, SagaState::compensated);
  EXPECT_EQ(record_.failure, "cancelled");
  EXPECT_FALSE(machine_.cancel(record_, now_)) << "a finished saga cannot be cancelled";
}

TEST_F(SagaMachineTest, AStepThatTimedOutIsCompensatedItMayHaveTakenEffect) {
  answer(SagaAction::Kind::run_step, 0, Json::object());
  for (int attempt = 1; attempt <= 3; ++attempt) {
    answer(SagaAction::Kind::run_step, 1, Error(errc::deadline_exceeded, "no reply"));
    if (attempt < 3) {
      ASSERT_EQ(next().kind, SagaAction::Kind::wait);
      now_ += 1s;
    }
  }
  ASSERT_EQ(record_.state, SagaState::compensating);
  answer(SagaAction::Kind::run_compensation, 1, Json::object());  // the charge is refunded
  answer(SagaAction::Kind::run_compensation, 0, Json::object());
  EXPECT_EQ(next().kind, SagaAction::Kind::finished);
  EXPECT_EQ(record_.state, SagaState::compensated);
}

TEST_F(SagaMachineTest, AStepNobodyReceivedIsNotCompensated) {
  answer(SagaAction::Kind::run_step, 0, Json::object());
  for (int attempt = 1; attempt <= 3; ++attempt) {
    answer(SagaAction::Kind::run_step, 1, Error(errc::not_found, "no responder"));
    if (attempt < 3) now_ += 1s;
  }
  answer(SagaAction::Kind::run_compensation, 0, Json::object());
  EXPECT_EQ(next().kind, SagaAction::Kind::finished);
  EXPECT_EQ(record_.steps[1].compensation_attempts, 0);
}

TEST_F(SagaMachineTest, ACompensationFailureIsRetriedThenSucceeds) {
  answer(SagaAction::Kind::run_step, 0, Json::object());
  answer(SagaAction::Kind::run_step, 1, Error(errc::invalid_argument, "bad card number"));
  answer(SagaAction::Kind::run_compensation, 0, Error(errc::unavailable, "inventory down"));
  ASSERT_EQ(next().kind, SagaAction::Kind::wait);
  now_ += 50ms;
  const SagaAction again = answer(SagaAction::Kind::run_compensation, 0, Json::object());
  EXPECT_EQ(again.attempt, 2);
  EXPECT_EQ(next().kind, SagaAction::Kind::finished);
  EXPECT_EQ(record_.state, SagaState::compensated);
}

TEST_F(SagaMachineTest, ACompensationThatNeverSucceedsEndsFailedSayingWhichAndWhy) {
  answer(SagaAction::Kind::run_step, 0, Json::object());
  answer(SagaAction::Kind::run_step, 1, Error(errc::failed_precondition, "card declined"));
  answer(SagaAction::Kind::run_compensation, 0, Error(errc::internal, "ledger locked"));
  now_ += 1s;
  answer(SagaAction::Kind::run_compensation, 0, Error(errc::internal, "ledger locked"));
  EXPECT_EQ(next().kind, SagaAction::Kind::finished);
  EXPECT_EQ(record_.state, SagaState::failed);
  EXPECT_EQ(state_of(0), StepState::compensation_failed);
  EXPECT_NE(record_.failure.find("'reserve'"), std::string::npos);
  EXPECT_NE(record_.failure.find("ledger locked"), std::string::npos);
  EXPECT_NE(record_.failure.find("card declined"), std::string::npos);
  EXPECT_NE(record_.failure.find("needs a person"), std::string::npos);
}

TEST_F(SagaMachineTest, AfterACrashTheInFlightAttemptIsSentAgainWithTheSameKey) {
  answer(SagaAction::Kind::run_step, 0, Json::object());
  const SagaAction sent = next();  // written as running, then the process died
  auto restored = record_from_json(to_json(record_));
  ASSERT_TRUE(restored) << restored.error().describe();
  record_ = *restored;
  const SagaAction again = next();
  EXPECT_EQ(again.kind, SagaAction::Kind::run_step);
  EXPECT_EQ(again.idempotency_key, sent.idempotency_key);
  EXPECT_EQ(record_.steps[1].attempts, 1);
}

TEST_F(SagaMachineTest, LateOrRepeatedOutcomesAreIgnored) {
  const SagaAction first = next();
  machine_.step_finished(record_, first, Json::object(), now_);
  const auto version = record_.version;
  machine_.step_finished(record_, first, Error(errc::internal, "late duplicate"), now_);
  EXPECT_EQ(record_.version, version);
  EXPECT_EQ(state_of(0), StepState::completed);
}

TEST(SagaDefinitionTest, BadDefinitionsAreRejectedNamingTheProblem) {
  auto expect_refused = [](SagaDefinition d, std::string_view what) {
    auto valid = validate(d);
    ASSERT_FALSE(valid) << what;
    EXPECT_TRUE(valid.error().is(errc::invalid_argument));
    EXPECT_NE(valid.error().message().find(what), std::string::npos) << valid.error().message();
  };
  SagaDefinition duplicate = order_saga();
  duplicate.steps[2].name = "reserve";
  expect_refused(duplicate, "two steps are named 'reserve'");
  SagaDefinition zero_timeout = order_saga();
  zero_timeout.steps[1].timeout = 0ms;
  expect_refused(zero_timeout, "step 2 'pay': timeout must be positive");
  SagaDefinition missing = order_saga();
  missing.require_compensations = true;
  missing.steps[2].compensation.clear();
  expect_refused(missing, "step 3 'ship' is critical but has no compensation");
  SagaDefinition no_steps;
  no_steps.name = "empty";
  expect_refused(no_steps, "has no steps");
  SagaDefinition no_attempts = order_saga();
  no_attempts.steps[0].retry.max_attempts = 0;
  expect_refused(no_attempts, "max_attempts must be at least 1");
  EXPECT_TRUE(validate(order_saga()));
}

TEST(SagaRecordTest, MalformedStoredRecordsAreDataLossNotACrash) {
  auto bad = record_from_json(Json{{"id", "x"}});
  ASSERT_FALSE(bad);
  EXPECT_TRUE(bad.error().is(errc::data_loss));
  Json wrong_state = to_json(SagaMachine(order_saga()).start("s", Json::object(), Clock::now()));
  wrong_state["state"] = "exploded";
  auto refused = record_from_json(wrong_state);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("exploded"), std::string::npos);
}

}  // namespace
}  // namespace marty::messaging::saga
