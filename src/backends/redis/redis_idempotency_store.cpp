#include "marty/messaging/redis_idempotency_store.hpp"

#include "redis_connection.hpp"
#include "redis_setup.hpp"

namespace marty::messaging::redis {
namespace {

// Values: "c:<token>" while claimed, "d:<result>" once done. Each script is atomic on the
// server, so two claims of a free key never both succeed.
constexpr const char* kClaim = R"lua(
local held = redis.call('GET', KEYS[1])
if held then return held end
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
return false
)lua";

constexpr const char* kComplete = R"lua(
local held = redis.call('GET', KEYS[1])
if held and string.sub(held, 1, 2) == 'd:' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
)lua";

constexpr const char* kRelease = R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
)lua";

constexpr std::string_view kClaimed = "c:";
constexpr std::string_view kDone = "d:";

}  // namespace

struct RedisIdempotencyStore::State {
  RedisConfig config;
  ConnectionPtr connection;

  std::string key_of(const std::string& key) const {
    return config.key_prefix + "idempotency:" + key;
  }
  Connection::SteadyClock::time_point deadline() const {
    // A command waits for a lost connection at most outage_wait (the connection's own rule);
    // a sent one gets the connect timeout on top to be answered.
    return Connection::SteadyClock::now() + config.outage_wait + config.connect_timeout;
  }
  // Runs `command`; an error reply is an error naming `what`.
  asio::awaitable<Result<Reply>> run(Command command, std::string what) {
    const auto until = deadline();
    ReplyResult raw = co_await connection->command(command, until);
    co_return checked(std::move(raw), "idempotency store: " + what);
  }
};

RedisIdempotencyStore::RedisIdempotencyStore(std::shared_ptr<State> state)
    : state_(std::move(state)) {}

RedisIdempotencyStore::~RedisIdempotencyStore() {
  state_->connection->close();
}

asio::awaitable<Result<std::shared_ptr<RedisIdempotencyStore>>> RedisIdempotencyStore::connect(
    RedisConfig config) {
  if (auto applied = apply_url(config); !applied) co_return std::move(applied).error();
  if (auto valid = validate(config); !valid) co_return std::move(valid).error();
  auto state = std::make_shared<State>();
  state->config = config;
  state->connection =
      Connection::create(IoPool::instance().next(), connection_options_for(config), "idempotency");
  state->connection->start();
  auto ready = co_await state->connection->wait_ready();
  if (!ready) {
    state->connection->close();
    co_return std::move(ready).error();
  }
  co_return std::shared_ptr<RedisIdempotencyStore>(new RedisIdempotencyStore(state));
}

asio::awaitable<Result<IdempotencyClaim>> RedisIdempotencyStore::claim(
    std::string key, std::chrono::milliseconds lease) {
  if (auto valid = check_idempotency_arguments("claim", key, lease); !valid) {
    co_return std::move(valid).error();
  }
  IdempotencyClaim found;
  found.token = make_uuid_v7();
  const Command command{"EVAL",
                        kClaim,
                        "1",
                        state_->key_of(key),
                        std::string(kClaimed) + found.token,
                        std::to_string(lease.count())};
  std::string what = "claiming '" + key + "'";
  auto reply = co_await state_->run(command, std::move(what));
  if (!reply) co_return std::move(reply).error();
  if (reply->is_nil()) co_return found;
  found.token.clear();
  if (reply->text.starts_with(kDone)) {
    found.status = IdempotencyClaim::Status::done;
    found.result = reply->text.substr(kDone.size());
  } else {
    found.status = IdempotencyClaim::Status::in_progress;
  }
  co_return found;
}

asio::awaitable<Result<void>> RedisIdempotencyStore::complete(std::string key, std::string token,
                                                              std::string result,
                                                              std::chrono::milliseconds keep_for) {
  if (auto valid = check_idempotency_arguments("complete", key, keep_for); !valid) co_return valid;
  (void)token;  // the work was done, whoever holds the key now
  const Command command{"EVAL",
                        kComplete,
                        "1",
                        state_->key_of(key),
                        std::string(kDone) + result,
                        std::to_string(keep_for.count())};
  std::string what = "completing '" + key + "'";
  auto reply = co_await state_->run(command, std::move(what));
  if (!reply) co_return std::move(reply).error();
  co_return ok();
}

asio::awaitable<Result<void>> RedisIdempotencyStore::release(std::string key, std::string token) {
  const Command command{"EVAL", kRelease, "1", state_->key_of(key), std::string(kClaimed) + token};
  std::string what = "releasing '" + key + "'";
  auto reply = co_await state_->run(command, std::move(what));
  if (!reply) co_return std::move(reply).error();
  co_return ok();
}

asio::awaitable<Result<std::optional<std::string>>> RedisIdempotencyStore::find(std::string key) {
  const Command command{"GET", state_->key_of(key)};
  std::string what = "reading '" + key + "'";
  auto reply = co_await state_->run(command, std::move(what));
  if (!reply) co_return std::move(reply).error();
  if (reply->is_nil() || !reply->text.starts_with(kDone)) {
    co_return std::optional<std::string>();
  }
  co_return std::optional<std::string>(reply->text.substr(kDone.size()));
}

}  // namespace marty::messaging::redis
