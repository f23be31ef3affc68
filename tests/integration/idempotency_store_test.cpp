// One contract, every idempotency store: the memory one, SQLite (a file), and Redis (the shared
// server of scripts/brokers, MARTY_REDIS_URL).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>

#include "../support/test_loop.hpp"
#include "marty/messaging/idempotency.hpp"
#include "marty/messaging/redis_idempotency_store.hpp"
#include "marty/messaging/sqlite_idempotency_store.hpp"

namespace marty::messaging {
namespace {

using namespace std::chrono_literals;
using Status = IdempotencyClaim::Status;
using testing::TestLoop;

std::string redis_url() {
  const char* url = std::getenv("MARTY_REDIS_URL");
  return url != nullptr ? url : "";
}

std::filesystem::path temp_file(const std::string& name) {
  return std::filesystem::temp_directory_path() /
         ("marty-idempotency-" + name + "-" + make_uuid_v7() + ".db");
}

// A database file with its WAL files.
void remove_database(const std::filesystem::path& path) {
  std::error_code ignored;
  for (const char* suffix : {"", "-wal", "-shm"}) {
    std::filesystem::remove(path.string() + suffix, ignored);
  }
}

class StoreTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const std::string& kind = GetParam();
    if (kind == "memory") {
      store_ = make_memory_idempotency_store();
    } else if (kind == "sqlite") {
      path_ = temp_file("contract");
      auto opened = SqliteIdempotencyStore::open(path_.string());
      ASSERT_TRUE(opened) << opened.error().describe();
      store_ = *opened;
    } else {
      ASSERT_FALSE(redis_url().empty()) << "MARTY_REDIS_URL is not set (scripts/brokers)";
      redis::RedisConfig config;
      config.url = redis_url();
      config.key_prefix = "marty-test-" + make_uuid_v7() + ":";
      auto connected = loop_.run(redis::RedisIdempotencyStore::connect(config));
      ASSERT_TRUE(connected) << connected.error().describe();
      store_ = *connected;
    }
  }
  void TearDown() override {
    store_.reset();
    if (!path_.empty()) remove_database(path_);
  }

  Result<IdempotencyClaim> claim(const std::string& key, std::chrono::milliseconds lease = 60s) {
    return loop_.run(store_->claim(key, lease));
  }
  Result<void> complete(const std::string& key, const std::string& token, const std::string& result,
                        std::chrono::milliseconds keep_for = 1h) {
    return loop_.run(store_->complete(key, token, result, keep_for));
  }
  Result<void> release(const std::string& key, const std::string& token) {
    return loop_.run(store_->release(key, token));
  }
  Result<std::optional<std::string>> find(const std::string& key) {
    return loop_.run(store_->find(key));
  }

  TestLoop loop_;
  std::shared_ptr<IdempotencyStore> store_;
  std::filesystem::path path_;
};

TEST_P(StoreTest, FirstClaimWinsAndOthersSeeItInProgress) {
  auto first = claim("orders/1");
  ASSERT_TRUE(first) << first.error().describe();
  EXPECT_EQ(first->status, Status::claimed);
  EXPECT_FALSE(first->token.empty());
  auto second = claim("orders/1");
  ASSERT_TRUE(second) << second.error().describe();
  EXPECT_EQ(second->status, Status::in_progress);
  EXPECT_TRUE(second->token.empty());
  auto other = claim("orders/2");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, Status::claimed);
  EXPECT_NE(other->token, first->token);
}

TEST_P(StoreTest, CompletedKeyIsDoneWithItsFirstResult) {
  auto first = claim("k");
  ASSERT_TRUE(first);
  EXPECT_FALSE(find("k")->has_value());  // claimed is not done
  ASSERT_TRUE(complete("k", first->token, R"({"receipt":7})"));
  auto again = claim("k");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, Status::done);
  EXPECT_EQ(again->result, R"({"receipt":7})");
  ASSERT_TRUE(complete("k", first->token, "other"));  // a second completion keeps the first
  EXPECT_EQ(find("k")->value_or("?"), R"({"receipt":7})");
  ASSERT_TRUE(complete("never-claimed", "", ""));  // the work was done: remembered anyway
  EXPECT_EQ(claim("never-claimed")->status, Status::done);
}

TEST_P(StoreTest, ReleaseFreesTheKeyOnlyForItsOwnToken) {
  auto first = claim("k");
  ASSERT_TRUE(first);
  ASSERT_TRUE(release("k", "not-the-token"));
  EXPECT_EQ(claim("k")->status, Status::in_progress);
  ASSERT_TRUE(release("k", first->token));
  auto again = claim("k");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, Status::claimed);
  ASSERT_TRUE(complete("k", again->token, "r"));
  ASSERT_TRUE(release("k", again->token));  // a done key is not released
  EXPECT_EQ(claim("k")->status, Status::done);
}

TEST_P(StoreTest, LeaseAndKeepForExpire) {
  ASSERT_EQ(claim("crashed", 150ms)->status, Status::claimed);
  auto done = claim("remembered");
  ASSERT_TRUE(complete("remembered", done->token, "r", 150ms));
  EXPECT_EQ(claim("crashed", 150ms)->status, Status::in_progress);
  EXPECT_EQ(claim("remembered")->status, Status::done);
  std::this_thread::sleep_for(400ms);
  EXPECT_EQ(claim("crashed")->status, Status::claimed);  // its holder never came back
  EXPECT_EQ(claim("remembered")->status, Status::claimed);
}

TEST_P(StoreTest, ConcurrentClaimsHaveOneWinner) {
  constexpr int kClaimers = 16;
  for (int round = 0; round < 5; ++round) {
    const std::string key = "race-" + std::to_string(round);
    std::atomic<int> claimed{0}, busy{0}, failed{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < kClaimers; ++i) {
      threads.emplace_back([&] {
        TestLoop own;  // each claimer on its own thread and executor
        auto got = own.run(store_->claim(key, 60s));
        if (!got) {
          ++failed;
        } else if (got->status == Status::claimed) {
          ++claimed;
        } else if (got->status == Status::in_progress) {
          ++busy;
        }
      });
    }
    for (auto& thread : threads) thread.join();
    EXPECT_EQ(failed.load(), 0);
    EXPECT_EQ(claimed.load(), 1) << key;
    EXPECT_EQ(busy.load(), kClaimers - 1) << key;
  }
}

TEST_P(StoreTest, BadArgumentsAreRefusedNamingWhatIsWrong) {
  auto empty = claim("");
  ASSERT_FALSE(empty);
  EXPECT_TRUE(empty.error().is(errc::invalid_argument));
  EXPECT_NE(empty.error().message().find("key is empty"), std::string::npos);
  auto no_lease = claim("k", 0ms);
  ASSERT_FALSE(no_lease);
  EXPECT_TRUE(no_lease.error().is(errc::invalid_argument));
  EXPECT_NE(no_lease.error().message().find("claim of 'k'"), std::string::npos);
  auto no_keep = complete("k", "t", "r", -5ms);
  ASSERT_FALSE(no_keep);
  EXPECT_TRUE(no_keep.error().is(errc::invalid_argument));
  EXPECT_EQ(claim("k")->status, Status::claimed);  // nothing was stored by the refusals
}

INSTANTIATE_TEST_SUITE_P(Stores, StoreTest, ::testing::Values("memory", "sqlite", "redis"),
                         [](const auto& param_info) { return param_info.param; });

TEST(MemoryIdempotencyStore, BoundForgetsDoneKeysClosestToExpiryButNeverClaims) {
  TestLoop loop;
  auto store = make_memory_idempotency_store(3);
  auto held = loop.run(store->claim("held", 60s));
  ASSERT_EQ(held->status, Status::claimed);
  for (int i = 0; i < 4; ++i) {
    const std::string key = "done-" + std::to_string(i);
    auto claimed = loop.run(store->claim(key, 60s));
    // Later keys are kept longer, so the earliest are forgotten first.
    ASSERT_TRUE(loop.run(store->complete(key, claimed->token, "", std::chrono::hours(1 + i))));
  }
  EXPECT_EQ(loop.run(store->claim("held", 60s))->status, Status::in_progress);
  EXPECT_EQ(loop.run(store->claim("done-3", 60s))->status, Status::done);
  EXPECT_EQ(loop.run(store->claim("done-2", 60s))->status, Status::done);
  EXPECT_EQ(loop.run(store->claim("done-0", 60s))->status, Status::claimed);  // forgotten
}

TEST(SqliteIdempotencyStore, KeysSurviveReopeningAndAreSharedByConnections) {
  TestLoop loop;
  const auto path = temp_file("shared");
  {
    auto first = SqliteIdempotencyStore::open(path.string());
    ASSERT_TRUE(first) << first.error().describe();
    auto second = SqliteIdempotencyStore::open(path.string());  // another process, say
    ASSERT_TRUE(second) << second.error().describe();
    auto claimed = loop.run((*first)->claim("k", 60s));
    ASSERT_EQ(claimed->status, Status::claimed);
    EXPECT_EQ(loop.run((*second)->claim("k", 60s))->status, Status::in_progress);
    ASSERT_TRUE(loop.run((*first)->complete("k", claimed->token, "receipt", 1h)));
    auto expiring = loop.run((*first)->claim("short", 60s));
    ASSERT_TRUE(loop.run((*first)->complete("short", expiring->token, "", 1ms)));
  }
  std::this_thread::sleep_for(20ms);
  auto reopened = SqliteIdempotencyStore::open(path.string());
  ASSERT_TRUE(reopened) << reopened.error().describe();
  auto again = loop.run((*reopened)->claim("k", 60s));
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, Status::done);
  EXPECT_EQ(again->result, "receipt");
  auto purged = (*reopened)->purge_expired();
  ASSERT_TRUE(purged) << purged.error().describe();
  EXPECT_EQ(*purged, 1u);
  reopened->reset();
  remove_database(path);
}

TEST(SqliteIdempotencyStore, UnopenableFileIsNamedInTheError) {
  auto opened = SqliteIdempotencyStore::open("/nonexistent-dir/store.db");
  ASSERT_FALSE(opened);
  EXPECT_NE(opened.error().message().find("/nonexistent-dir/store.db"), std::string::npos)
      << opened.error().describe();
}

TEST(RedisIdempotencyStore, UnreachableServerIsUnavailableAndBadConfigIsNamed) {
  TestLoop loop;
  redis::RedisConfig config;
  config.host = "127.0.0.1";
  config.port = 1;  // nothing listens there
  config.connect_timeout = 500ms;
  auto unreachable = loop.run(redis::RedisIdempotencyStore::connect(config));
  ASSERT_FALSE(unreachable);
  EXPECT_TRUE(unreachable.error().is(errc::unavailable)) << unreachable.error().describe();
  config.port = 70000;
  auto bad = loop.run(redis::RedisIdempotencyStore::connect(config));
  ASSERT_FALSE(bad);
  EXPECT_TRUE(bad.error().is(errc::invalid_argument));
  EXPECT_NE(bad.error().message().find("RedisConfig.port"), std::string::npos);
}

TEST(RedisIdempotencyStore, KeysLiveUnderThePrefixWithTheirExpiry) {
  ASSERT_FALSE(redis_url().empty()) << "MARTY_REDIS_URL is not set (scripts/brokers)";
  TestLoop loop;
  redis::RedisConfig config;
  config.url = redis_url();
  config.key_prefix = "marty-test-" + make_uuid_v7() + ":";
  auto store = loop.run(redis::RedisIdempotencyStore::connect(config));
  ASSERT_TRUE(store) << store.error().describe();
  // A second store, as another instance of the service would have, sees the same keys.
  auto other = loop.run(redis::RedisIdempotencyStore::connect(config));
  ASSERT_TRUE(other) << other.error().describe();
  auto claimed = loop.run((*store)->claim("billing/42", 60s));
  ASSERT_EQ(claimed->status, Status::claimed);
  EXPECT_EQ(loop.run((*other)->claim("billing/42", 60s))->status, Status::in_progress);
  ASSERT_TRUE(loop.run((*store)->complete("billing/42", claimed->token, "ok", 1h)));
  auto seen = loop.run((*other)->claim("billing/42", 60s));
  EXPECT_EQ(seen->status, Status::done);
  EXPECT_EQ(seen->result, "ok");
}

}  // namespace
}  // namespace marty::messaging
