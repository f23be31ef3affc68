// The SQLite saga store on real database files: records, versions, leases shared by two
// connections (as by two processes), persistence across reopening, and bad files.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "marty/messaging/blocking_event_bus.hpp"
#include "marty/messaging/saga_manager.hpp"
#include "marty/messaging/sqlite_idempotency_store.hpp"
#include "marty/messaging/sqlite_saga_store.hpp"

namespace marty::messaging::saga {
namespace {

using namespace std::chrono_literals;

class SqliteSagaStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "marty-sagas-XXXXXX").string();
    dir_ = ::mkdtemp(pattern.data());
    path_ = (dir_ / "sagas.db").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::shared_ptr<SqliteSagaStore> open() {
    auto store = SqliteSagaStore::open(path_);
    EXPECT_TRUE(store) << store.error().describe();
    return store ? *store : nullptr;
  }

  static SagaRecord record(std::string id, SagaState state = SagaState::running) {
    SagaRecord r;
    r.id = std::move(id);
    r.definition = "checkout";
    r.state = state;
    r.context = Json{{"order", 7}};
    r.steps.resize(2);
    r.steps[0].state = StepState::completed;
    r.steps[0].attempts = 2;
    r.steps[0].last_error = "unavailable: once";
    r.created_at = Clock::now();
    r.updated_at = r.created_at;
    r.version = 3;
    return r;
  }

  std::filesystem::path dir_;
  std::string path_;
};

TEST_F(SqliteSagaStoreTest, RecordsSurviveReopeningTheFile) {
  {
    auto store = open();
    ASSERT_TRUE(store->save(record("a")));
    ASSERT_TRUE(store->save(record("b", SagaState::completed)));
  }
  auto store = open();
  auto a = store->load("a");
  ASSERT_TRUE(a) << a.error().describe();
  EXPECT_EQ(a->context["order"], 7);
  EXPECT_EQ(a->steps[0].attempts, 2);
  EXPECT_EQ(a->steps[0].last_error, "unavailable: once");
  SagaFilter unfinished;
  unfinished.unfinished_only = true;
  auto listed = store->list(unfinished);
  ASSERT_TRUE(listed);
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].id, "a");
  SagaFilter completed;
  completed.state = SagaState::completed;
  EXPECT_EQ(store->list(completed)->size(), 1u);
  auto missing = store->load("nope");
  ASSERT_FALSE(missing);
  EXPECT_TRUE(missing.error().is(errc::not_found));
}

TEST_F(SqliteSagaStoreTest, AnOlderVersionDoesNotOverwriteANewerOne) {
  auto first = open();
  auto second = open();  // another process's connection
  SagaRecord r = record("s");
  r.version = 5;
  ASSERT_TRUE(first->save(r));
  r.version = 4;
  auto stale = second->save(r);
  ASSERT_FALSE(stale);
  EXPECT_TRUE(stale.error().is(errc::aborted)) << stale.error().describe();
  r.version = 6;
  EXPECT_TRUE(second->save(r));
  EXPECT_EQ(first->load("s")->version, 6u);
}

TEST_F(SqliteSagaStoreTest, OneLeaseHolderAcrossConnections) {
  auto first = open();
  auto second = open();
  const auto now = Clock::now();
  EXPECT_TRUE(*first->acquire_lease("s", "orchestrator-1", now + 10s));
  EXPECT_FALSE(*second->acquire_lease("s", "orchestrator-2", now + 10s));
  EXPECT_TRUE(*first->acquire_lease("s", "orchestrator-1", now + 20s));
  ASSERT_TRUE(first->release_lease("s", "orchestrator-1"));
  EXPECT_TRUE(*second->acquire_lease("s", "orchestrator-2", now + 10s));
  EXPECT_TRUE(*first->acquire_lease("t", "orchestrator-1", now - 1s));
  EXPECT_TRUE(*second->acquire_lease("t", "orchestrator-2", now + 10s)) << "expired";
}

TEST_F(SqliteSagaStoreTest, AFileThatIsNotADatabaseIsAClearError) {
  {
    std::ofstream junk(path_);
    junk << "this is not a database, just text long enough to have a header...............";
  }
  auto store = SqliteSagaStore::open(path_);
  ASSERT_FALSE(store);
  EXPECT_NE(store.error().message().find(path_), std::string::npos) << store.error().describe();
  auto nowhere = SqliteSagaStore::open((dir_ / "missing" / "sagas.db").string());
  ASSERT_FALSE(nowhere);
  EXPECT_TRUE(nowhere.error().is(errc::permission_denied)) << nowhere.error().describe();
}

// A participant whose memory of applied effects is on disk applies a step once even when the
// orchestrator resends it after the participant restarted.
TEST_F(SqliteSagaStoreTest, AParticipantRemembersAppliedStepsAcrossARestart) {
  const std::string store_path = (dir_ / "effects.db").string();
  int applied = 0;  // the handler runs on the participant's bus; read after the queries
  auto shipping = [&](std::shared_ptr<IdempotencyStore> store) {
    auto bus = std::make_unique<BlockingEventBus>();
    EXPECT_TRUE(bus->start());
    auto participant = std::make_unique<SagaParticipant>(bus->bus().shared_from_this(), "shipping",
                                                         std::move(store));
    participant->on_step("ship_order", sync_step_handler([&](const SagaStepRequest& request) {
                           ++applied;
                           return Result<Json>(Json{{"parcel", "P-" + request.saga_id}});
                         }));
    EXPECT_TRUE(bus->run(participant->start()));
    return std::make_pair(std::move(bus), std::move(participant));
  };
  Json request{{"saga_id", "s-1"},         {"saga", "place_order"},
               {"step", "ship"},           {"attempt", 1},
               {"compensation", false},    {"idempotency_key", "s-1:ship:1"},
               {"effect_key", "s-1:ship"}, {"context", Json::object()}};
  {
    auto store = SqliteIdempotencyStore::open(store_path);
    ASSERT_TRUE(store) << store.error().describe();
    auto [bus, participant] = shipping(*store);
    auto reply = bus->query("ship_order", request, "shipping", 5s);
    ASSERT_TRUE(reply) << reply.error().describe();
    EXPECT_EQ((*reply)["parcel"], "P-s-1");
    ASSERT_TRUE(bus->stop());
  }
  auto reopened = SqliteIdempotencyStore::open(store_path);
  ASSERT_TRUE(reopened) << reopened.error().describe();
  auto [bus, participant] = shipping(*reopened);
  request["attempt"] = 2;
  request["idempotency_key"] = "s-1:ship:2";
  auto reply = bus->query("ship_order", request, "shipping", 5s);
  ASSERT_TRUE(reply) << reply.error().describe();
  EXPECT_EQ((*reply)["parcel"], "P-s-1");  // the first application's reply
  ASSERT_TRUE(bus->stop());
  EXPECT_EQ(applied, 1);
}

}  // namespace
}  // namespace marty::messaging::saga
