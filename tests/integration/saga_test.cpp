// Sagas over the bus on the embedded backend: an orchestrator and three participant services,
// each with a bus of its own on one in-process broker.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>

#include "../support/saga_definitions.hpp"
#include "../support/test_loop.hpp"
#include "marty/messaging.hpp"
#include "marty/messaging/saga_manager.hpp"

namespace marty::messaging::saga {
namespace {

using namespace std::chrono_literals;
using testing::eventually;

using testing::make_step;

SagaDefinition order_saga() {
  SagaDefinition saga;
  saga.name = "place_order";
  saga.steps = {make_step("reserve", "inventory", "reserve_stock", "release_stock"),
                make_step("pay", "payment", "charge_card", "refund_card"),
                make_step("ship", "shipping", "ship_order", "cancel_shipment")};
  saga.compensation_retry.initial_backoff = 10ms;
  saga.compensation_retry.max_backoff = 50ms;
  return saga;
}

// Counts what each participant really applied (after its de-duplication).
struct Ledger {
  std::mutex mutex;
  std::map<std::string, int> applied;  // "<action>:<saga id>" -> times
  void add(const std::string& action, const std::string& saga) {
    std::lock_guard lock(mutex);
    ++applied[action + ":" + saga];
  }
  int count(const std::string& action, const std::string& saga) {
    std::lock_guard lock(mutex);
    return applied[action + ":" + saga];
  }
};

class SagaIntegration : public ::testing::Test {
 protected:
  void SetUp() override {
    for (auto* bus : {&orchestrator_, &inventory_, &payment_, &shipping_, &observer_}) {
      ASSERT_TRUE(
          bus->bus().register_backend(MessageBackendType::memory, make_memory_backend(broker_)));
      ASSERT_TRUE(bus->start());
    }
    start_participants();
    auto recorder = sync_handler([this](const Message& m) -> Result<void> {
      std::lock_guard lock(events_mutex_);
      events_.push_back(std::string(m.type()) + ":" + m.metadata().correlation_id);
      return ok();
    });
    ASSERT_TRUE(observer_.subscribe_to_events({"saga.>"}, recorder));
    manager_ = make_manager();
  }

  // The buses stop before the members their handlers use (declared after them) are destroyed.
  void TearDown() override {
    if (manager_) orchestrator_.run(manager_->stop());
    for (auto* bus : {&observer_, &orchestrator_, &inventory_, &payment_, &shipping_}) {
      (void)bus->stop(1s);
    }
  }

  std::shared_ptr<DistributedSagaManager> make_manager(
      std::chrono::milliseconds lease = std::chrono::milliseconds(15'000)) {
    SagaManagerOptions options;
    options.lease = lease;
    auto manager =
        create_distributed_saga_manager(orchestrator_.bus().shared_from_this(), store_, options);
    EXPECT_TRUE(manager->register_saga_definition(order_saga()));
    return manager;
  }

  void start_participants() {
    auto record = [this](const char* action) {
      return sync_step_handler([this, action](const SagaStepRequest& r) -> Result<Json> {
        ledger_.add(action, r.saga_id);
        return Json::object();
      });
    };
    inventory_participant_.on_step(
        "reserve_stock", sync_step_handler([this](const SagaStepRequest& r) -> Result<Json> {
          ledger_.add("reserve_stock", r.saga_id);
          return Json{{"context", {{"reservation", "R-" + r.context["order"].dump()}}}};
        }));
    inventory_participant_.on_compensation("release_stock", record("release_stock"));
    payment_participant_.on_step(
        "charge_card", sync_step_handler([this](const SagaStepRequest& r) -> Result<Json> {
          if (slow_payment_) std::this_thread::sleep_for(300ms);
          if (payment_outages_ > 0) {
            --payment_outages_;
            return Error(errc::unavailable, "payment gateway down");
          }
          if (r.context["amount"].get<int>() > 1000) {
            return Error(errc::failed_precondition, "card declined (limit 1000)");
          }
          ledger_.add("charge_card", r.saga_id);
          return Json{{"context", {{"charge", "C-1"}}}};
        }));
    payment_participant_.on_compensation("refund_card", record("refund_card"));
    shipping_participant_.on_step("ship_order", record("ship_order"));
    shipping_participant_.on_compensation("cancel_shipment", record("cancel_shipment"));
    for (auto* participant :
         {&inventory_participant_, &payment_participant_, &shipping_participant_}) {
      auto started = orchestrator_.run(participant->start());
      ASSERT_TRUE(started) << started.error().describe();
    }
  }

  std::string start_saga(Json context) {
    auto id = orchestrator_.run(manager_->create_and_start_saga("place_order", std::move(context)));
    EXPECT_TRUE(id) << id.error().describe();
    return id ? *id : std::string();
  }

  // True once the saga's payment step is in flight (with slow_payment_, for 300 ms).
  bool paying(const std::string& id) {
    return eventually([&] {
      auto status = manager_->get_saga_status(id);
      return status && status->record.steps[1].state == StepState::running;
    });
  }

  SagaStatus finish(const std::string& id) {
    auto status = orchestrator_.run(manager_->wait_for(id, 10s));
    EXPECT_TRUE(status) << status.error().describe();
    return status ? *status : SagaStatus();
  }

  std::vector<std::string> events_of(const std::string& id) {
    std::lock_guard lock(events_mutex_);
    std::vector<std::string> out;
    for (const auto& e : events_) {
      if (e.ends_with(":" + id)) out.push_back(e.substr(0, e.size() - id.size() - 1));
    }
    return out;
  }

  std::shared_ptr<MemoryBroker> broker_ = make_memory_broker();
  std::shared_ptr<InMemorySagaStore> store_ = std::make_shared<InMemorySagaStore>();
  BlockingEventBus orchestrator_, inventory_, payment_, shipping_, observer_;
  SagaParticipant inventory_participant_{inventory_.bus().shared_from_this(), "inventory"};
  SagaParticipant payment_participant_{payment_.bus().shared_from_this(), "payment"};
  SagaParticipant shipping_participant_{shipping_.bus().shared_from_this(), "shipping"};
  std::shared_ptr<DistributedSagaManager> manager_;
  Ledger ledger_;
  std::atomic<bool> slow_payment_{false};
  std::atomic<int> payment_outages_{0};
  std::mutex events_mutex_;
  std::vector<std::string> events_;
};

TEST_F(SagaIntegration, AnOrderSagaCompletesAndRepliesFeedLaterSteps) {
  const std::string id = start_saga({{"order", 1001}, {"amount", 250}});
  const SagaStatus status = finish(id);
  EXPECT_EQ(status.record.state, SagaState::completed);
  EXPECT_EQ(status.record.context["reservation"], "R-1001");
  EXPECT_EQ(status.record.context["charge"], "C-1");
  ASSERT_EQ(status.step_names, (std::vector<std::string>{"reserve", "pay", "ship"}));
  for (const auto& step : status.record.steps) {
    EXPECT_EQ(step.state, StepState::completed);
    EXPECT_EQ(step.attempts, 1);
    EXPECT_TRUE(step.started_at && step.finished_at);
  }
  EXPECT_EQ(ledger_.count("ship_order", id), 1);
  ASSERT_TRUE(eventually([&] { return events_of(id).size() >= 8; }));
  const auto events = events_of(id);
  EXPECT_EQ(events.front(), "saga.started");
  EXPECT_EQ(events.back(), "saga.completed");
}

TEST_F(SagaIntegration, ADeclinedPaymentCompensatesTheReservation) {
  const std::string id = start_saga({{"order", 1002}, {"amount", 1499}});
  const SagaStatus status = finish(id);
  EXPECT_EQ(status.record.state, SagaState::compensated);
  EXPECT_NE(status.record.failure.find("card declined"), std::string::npos);
  EXPECT_EQ(status.record.steps[0].state, StepState::compensated);
  EXPECT_EQ(status.record.steps[1].state, StepState::failed);
  EXPECT_EQ(status.record.steps[1].attempts, 1) << "a declined card is not retried";
  EXPECT_EQ(status.record.steps[2].state, StepState::pending);
  EXPECT_EQ(ledger_.count("release_stock", id), 1);
  EXPECT_EQ(ledger_.count("refund_card", id), 0);
  ASSERT_TRUE(eventually([&] {
    const auto events = events_of(id);
    return !events.empty() && events.back() == "saga.compensated";
  }));
}

TEST_F(SagaIntegration, AnOutageIsRetriedAndTheSagaStillCompletes) {
  payment_outages_ = 2;
  const std::string id = start_saga({{"order", 1003}, {"amount", 10}});
  const SagaStatus status = finish(id);
  EXPECT_EQ(status.record.state, SagaState::completed);
  EXPECT_EQ(status.record.steps[1].attempts, 3);
  EXPECT_EQ(ledger_.count("charge_card", id), 1);
}

TEST_F(SagaIntegration, CancelDuringAStepUndoesWhatWasDone) {
  slow_payment_ = true;
  const std::string id = start_saga({{"order", 1004}, {"amount", 10}});
  ASSERT_TRUE(paying(id));
  ASSERT_TRUE(manager_->cancel_saga(id));
  const SagaStatus status = finish(id);
  EXPECT_EQ(status.record.state, SagaState::compensated);
  EXPECT_TRUE(status.cancelled());
  EXPECT_EQ(ledger_.count("refund_card", id), 1) << "the charge went through, so it is refunded";
  EXPECT_EQ(ledger_.count("release_stock", id), 1);
  EXPECT_EQ(ledger_.count("ship_order", id), 0);
  auto again = manager_->cancel_saga(id);
  ASSERT_FALSE(again);
  EXPECT_TRUE(again.error().is(errc::failed_precondition));
}

TEST_F(SagaIntegration, AParticipantAppliesAResentStepOnce) {
  Json request{{"saga_id", "manual-1"},
               {"saga", "place_order"},
               {"step", "ship"},
               {"attempt", 1},
               {"compensation", false},
               {"idempotency_key", "manual-1:ship:1"},
               {"effect_key", "manual-1:ship"},
               {"context", Json::object()}};
  ASSERT_TRUE(orchestrator_.query("ship_order", request, "shipping", 2s));
  request["attempt"] = 2;
  request["idempotency_key"] = "manual-1:ship:2";
  ASSERT_TRUE(orchestrator_.query("ship_order", request, "shipping", 2s));
  EXPECT_EQ(ledger_.count("ship_order", "manual-1"), 1);
  // Once compensated, a late resend of the step is refused rather than applied.
  Json undo = request;
  undo["compensation"] = true;
  undo["effect_key"] = "manual-1:ship:compensate";
  undo["idempotency_key"] = "manual-1:ship:compensate:1";
  ASSERT_TRUE(orchestrator_.query("cancel_shipment", undo, "shipping", 2s));
  Json late = request;
  late["saga_id"] = "manual-2";
  late["effect_key"] = "manual-2:ship";
  Json late_undo = undo;
  late_undo["saga_id"] = "manual-2";
  late_undo["effect_key"] = "manual-2:ship:compensate";
  ASSERT_TRUE(orchestrator_.query("cancel_shipment", late_undo, "shipping", 2s));
  auto refused = orchestrator_.query("ship_order", late, "shipping", 2s);
  ASSERT_FALSE(refused);
  EXPECT_TRUE(refused.error().is(errc::failed_precondition)) << refused.error().describe();
  EXPECT_EQ(ledger_.count("ship_order", "manual-2"), 0);
  Json foreign = request;
  foreign["effect_key"] = "someone-else:ship";
  auto mismatched = orchestrator_.query("ship_order", foreign, "shipping", 2s);
  ASSERT_FALSE(mismatched);
  EXPECT_TRUE(mismatched.error().is(errc::invalid_argument));
  auto malformed = orchestrator_.query("ship_order", Json{{"nope", 1}}, "shipping", 2s);
  ASSERT_FALSE(malformed);
  EXPECT_TRUE(malformed.error().is(errc::invalid_argument)) << malformed.error().describe();
}

TEST_F(SagaIntegration, AnotherManagerOnTheSameStoreResumesUnfinishedSagas) {
  slow_payment_ = true;
  const std::string id = start_saga({{"order", 1005}, {"amount", 10}});
  ASSERT_TRUE(paying(id));
  orchestrator_.run(manager_->stop());  // this orchestrator goes away mid-saga
  slow_payment_ = false;
  auto stored = store_->load(id);
  ASSERT_TRUE(stored);
  EXPECT_FALSE(is_final(stored->state));

  manager_ = make_manager();
  auto resumed = orchestrator_.run(manager_->resume_unfinished());
  ASSERT_TRUE(resumed) << resumed.error().describe();
  EXPECT_EQ(*resumed, 1u);
  const SagaStatus status = finish(id);
  EXPECT_EQ(status.record.state, SagaState::completed);
  EXPECT_EQ(ledger_.count("charge_card", id), 1) << "the resent payment was applied once";
  EXPECT_EQ(ledger_.count("ship_order", id), 1);
}

TEST_F(SagaIntegration, TwoManagersOnOneStoreNeverDriveTheSameSaga) {
  slow_payment_ = true;
  const std::string id = start_saga({{"order", 1006}, {"amount", 10}});
  ASSERT_TRUE(paying(id));
  auto second = make_manager();
  auto resumed = orchestrator_.run(second->resume_unfinished());
  ASSERT_TRUE(resumed);
  EXPECT_EQ(*resumed, 0u) << "the first manager holds the saga's lease";
  slow_payment_ = false;
  EXPECT_EQ(finish(id).record.state, SagaState::completed);
  EXPECT_EQ(ledger_.count("charge_card", id), 1);
  EXPECT_EQ(ledger_.count("ship_order", id), 1);
}

TEST_F(SagaIntegration, TheLeaseIsRenewedWhileAStepTakesLongerThanIt) {
  manager_ = make_manager(120ms);  // the payment takes 300 ms
  slow_payment_ = true;
  const std::string id = start_saga({{"order", 1007}, {"amount", 10}});
  ASSERT_TRUE(paying(id));
  std::this_thread::sleep_for(200ms);  // past the lease's first expiry
  auto second = make_manager(120ms);
  auto resumed = orchestrator_.run(second->resume_unfinished());
  ASSERT_TRUE(resumed);
  EXPECT_EQ(*resumed, 0u) << "the first manager renewed its lease during the step";
  EXPECT_EQ(finish(id).record.state, SagaState::completed);
  EXPECT_EQ(ledger_.count("charge_card", id), 1);
}

// What `marty-bus saga cancel` does: another orchestrator takes a saga over to cancel it.
TEST_F(SagaIntegration, AnOperatorTakesOverAndCancelsASagaNobodyDrives) {
  slow_payment_ = true;
  const std::string id = start_saga({{"order", 1008}, {"amount", 10}});
  ASSERT_TRUE(paying(id));
  auto operator_manager = make_manager();
  auto refused = operator_manager->cancel_saga(id);
  ASSERT_FALSE(refused);
  EXPECT_TRUE(refused.error().is(errc::aborted)) << "the first manager holds the lease";
  auto unknown = operator_manager->cancel_saga("no-such-saga");
  ASSERT_FALSE(unknown);
  EXPECT_TRUE(unknown.error().is(errc::not_found)) << unknown.error().describe();

  orchestrator_.run(manager_->stop());  // its orchestrator went away after the payment
  ASSERT_FALSE(is_final(store_->load(id)->state));
  manager_ = operator_manager;
  ASSERT_TRUE(manager_->cancel_saga(id));
  const SagaStatus status = finish(id);
  EXPECT_EQ(status.record.state, SagaState::compensated);
  EXPECT_TRUE(status.cancelled());
  EXPECT_EQ(ledger_.count("ship_order", id), 0) << "cancelled before it took another step";
  EXPECT_EQ(ledger_.count("refund_card", id), ledger_.count("charge_card", id));
  EXPECT_EQ(ledger_.count("release_stock", id), 1);
  for (auto ended : {manager_->cancel_saga(id), manager_->resume_saga(id)}) {
    ASSERT_FALSE(ended);
    EXPECT_TRUE(ended.error().is(errc::failed_precondition)) << ended.error().describe();
  }
}

TEST_F(SagaIntegration, ACancelIsStoredBeforeTheManagerTakingOverTakesAStep) {
  slow_payment_ = true;
  const std::string id = start_saga({{"order", 1009}, {"amount", 10}});
  ASSERT_TRUE(paying(id));
  orchestrator_.run(manager_->stop());
  manager_ = make_manager();
  ASSERT_TRUE(manager_->cancel_saga(id));
  orchestrator_.run(manager_->stop());  // at once: its runner has had no time for a step
  EXPECT_TRUE(store_->load(id)->cancel_requested) << "the cancel outlives the manager taking it";
  manager_ = make_manager();
  ASSERT_TRUE(orchestrator_.run(manager_->resume_unfinished()));
  const SagaStatus status = finish(id);
  EXPECT_EQ(status.record.state, SagaState::compensated);
  EXPECT_TRUE(status.cancelled());
  EXPECT_EQ(ledger_.count("ship_order", id), 0);
}

TEST_F(SagaIntegration, AStoppingManagerStoresNoNewSaga) {
  orchestrator_.run(manager_->stop());
  auto refused = orchestrator_.run(manager_->create_and_start_saga("place_order", Json::object()));
  ASSERT_FALSE(refused);
  EXPECT_TRUE(refused.error().is(errc::failed_precondition));
  EXPECT_TRUE(manager_->list_sagas()->empty()) << "nothing was stored for a later resume";
}

TEST(SagaStoreTest, ALeaseIsHeldUntilItExpiresOrIsReleased) {
  InMemorySagaStore store;
  const auto now = Clock::now();
  EXPECT_TRUE(*store.acquire_lease("s", "a", now + 10s));
  EXPECT_FALSE(*store.acquire_lease("s", "b", now + 10s));
  EXPECT_TRUE(*store.acquire_lease("s", "a", now + 20s)) << "the holder renews";
  ASSERT_TRUE(store.release_lease("s", "b"));
  EXPECT_FALSE(*store.acquire_lease("s", "b", now + 10s)) << "only the holder releases";
  ASSERT_TRUE(store.release_lease("s", "a"));
  EXPECT_TRUE(*store.acquire_lease("s", "b", now + 10s));
  EXPECT_TRUE(*store.acquire_lease("t", "a", now - 1s));
  EXPECT_TRUE(*store.acquire_lease("t", "b", now + 10s)) << "an expired lease is free";
}

TEST(SagaStoreTest, AnOlderVersionDoesNotOverwriteANewerOne) {
  InMemorySagaStore store;
  SagaRecord record = SagaMachine(order_saga()).start("s", Json::object(), Clock::now());
  record.version = 5;
  ASSERT_TRUE(store.save(record));
  record.version = 4;
  auto stale = store.save(record);
  ASSERT_FALSE(stale);
  EXPECT_TRUE(stale.error().is(errc::aborted));
  record.version = 5;
  EXPECT_FALSE(store.save(record)) << "a second writer from the same version is refused too";
}

TEST_F(SagaIntegration, UnknownSagasAndDefinitionsAreClearErrors) {
  auto unknown = orchestrator_.run(manager_->create_and_start_saga("no_such_saga", Json::object()));
  ASSERT_FALSE(unknown);
  EXPECT_TRUE(unknown.error().is(errc::not_found));
  EXPECT_FALSE(manager_->get_saga_status("nope"));
  auto twice = manager_->register_saga_definition(order_saga());
  ASSERT_FALSE(twice);
  EXPECT_TRUE(twice.error().is(errc::invalid_argument));
  SagaFilter completed;
  completed.state = SagaState::completed;
  auto listed = manager_->list_sagas(completed);
  ASSERT_TRUE(listed);
}

}  // namespace
}  // namespace marty::messaging::saga
