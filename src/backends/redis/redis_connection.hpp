#pragma once
// One hiredis asynchronous connection driven by an asio io_context, with reconnection.
//
// Why hiredis's async API on asio, and not blocking calls on threads: one connection then
// carries any number of commands in flight (pipelined in order, as Redis answers them), which
// is what publish throughput needs, and a blocked XREADGROUP costs a socket, not a thread.
// Every hiredis call happens on the io_context's single thread (hiredis contexts are not
// thread-safe); callers on other executors get their replies posted back to them.
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>

#include "marty/messaging/result.hpp"

struct redisAsyncContext;

namespace marty::messaging::redis {

inline constexpr std::string_view kBackendName = "redis";

Error redis_error(errc code, std::string message);

/// A Redis reply, owned (hiredis frees its own after the callback returns).
struct Reply {
  enum class Type { nil, status, error, integer, string, array };
  Type type = Type::nil;
  long long integer = 0;
  std::string text;  ///< status, error and string replies
  std::vector<Reply> elements;

  bool is_nil() const noexcept { return type == Type::nil; }
  bool is_error() const noexcept { return type == Type::error; }
  bool is_array() const noexcept { return type == Type::array; }
  /// The error's first word ("NOGROUP", "WRONGPASS"), for error replies.
  std::string_view error_code() const noexcept;
};

using Command = std::vector<std::string>;

/// A command in Redis's wire protocol, formatted by the thread that issues it (so that the io
/// thread, which every connection of a backend may share, only writes bytes).
class FormattedCommand {
 public:
  explicit FormattedCommand(const Command& args);
  FormattedCommand(FormattedCommand&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(other.size_) {}
  FormattedCommand& operator=(FormattedCommand&& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    return *this;
  }
  ~FormattedCommand();
  const char* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }

 private:
  char* data_ = nullptr;
  std::size_t size_ = 0;
};

/// The outcome of one command: a reply (which may be an error reply) or a failure to get one.
using ReplyResult = Result<Reply>;

/// Called once with the outcome, on the connection's io thread.
class ReplyCallback {
 public:
  virtual ~ReplyCallback() = default;
  virtual void operator()(ReplyResult result) = 0;
  /// The command's deadline passed before its reply came (the reply may still come later;
  /// operator() is called for it then). Io thread.
  virtual void expire() {}
};
using ReplyCallbackPtr = std::unique_ptr<ReplyCallback>;

template <class F>
ReplyCallbackPtr make_callback(F f) {
  struct Impl final : ReplyCallback {
    explicit Impl(F function) : f(std::move(function)) {}
    void operator()(ReplyResult result) override { f(std::move(result)); }
    F f;
  };
  return std::make_unique<Impl>(std::move(f));
}

struct ConnectionOptions {
  std::string host;
  int port = 6379;
  int database = 0;
  std::string username;
  std::string password;
  std::string client_name;
  std::chrono::milliseconds connect_timeout{2'000};
  std::chrono::milliseconds reconnect_wait{100};
  std::chrono::milliseconds outage_wait{2'000};
};

/// A connection that reconnects by itself. Commands issued while it is down wait for it (at
/// most `outage_wait`, or their own deadline) and then fail with `unavailable`; a command in
/// flight when the connection drops fails with `unavailable` (it may or may not have run).
///
/// Threading: send(), on_ready and on_push run on the io thread; command() and close() may be
/// called from any thread. Lifetime: held by shared_ptr; close() ends it (it stops
/// reconnecting and fails what is queued), and the last reference frees it on the io thread.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  using SteadyClock = std::chrono::steady_clock;

  static std::shared_ptr<Connection> create(asio::io_context& io, ConnectionOptions options,
                                            std::string role);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  /// Starts connecting (from any thread).
  void start();
  /// Waits until the connection is first ready (connected, authenticated, database selected),
  /// or fails: `unauthenticated` for refused credentials, `unavailable` when the server cannot
  /// be reached within the connect timeout. Later outages are handled by reconnecting.
  asio::awaitable<Result<void>> wait_ready();
  /// Sends a command and resumes the caller, on its own executor, with the reply.
  /// `args` is formatted before this returns, so the caller may keep (and reuse) it.
  asio::awaitable<ReplyResult> command(
      const Command& args, SteadyClock::time_point deadline = SteadyClock::time_point::max());
  /// Io thread only: sends a command; `callback` runs on the io thread.
  void send(FormattedCommand command, ReplyCallbackPtr callback,
            SteadyClock::time_point deadline = SteadyClock::time_point::max());
  /// From any thread: sends a command without waiting for it; `callback` runs on the io thread.
  void post(const Command& args, ReplyCallbackPtr callback,
            SteadyClock::time_point deadline = SteadyClock::time_point::max()) {
    post(FormattedCommand(args), std::move(callback), deadline);
  }
  void post(FormattedCommand command, ReplyCallbackPtr callback, SteadyClock::time_point deadline);
  /// Stops for good: disconnects, fails what is queued with `cancelled`.
  void close();

  /// Io thread: after every (re)connection, before queued commands are sent (resubscribe here).
  std::function<void()> on_ready;
  /// Io thread: each pushed message of a subscribed connection (the whole reply array).
  std::function<void(const Reply&)> on_push;

  /// Io thread only: sends a subscription command whose pushed messages go to on_push.
  void send_subscription(const Command& args);
  void send(const Command& args, ReplyCallbackPtr callback,
            SteadyClock::time_point deadline = SteadyClock::time_point::max()) {
    send(FormattedCommand(args), std::move(callback), deadline);
  }
  bool ready() const noexcept { return state_ == State::ready; }
  const std::string& role() const noexcept { return role_; }
  asio::io_context& io() noexcept { return io_; }

 private:
  enum class State { idle, connecting, ready, waiting, closed };
  struct Waiting {
    FormattedCommand command;
    ReplyCallbackPtr callback;
    SteadyClock::time_point deadline;  // also the command's deadline once sent
    bool subscription = false;
    SteadyClock::time_point reply_deadline = SteadyClock::time_point::max();
  };
  struct Readiness;

  Connection(asio::io_context& io, ConnectionOptions options, std::string role);
  void connect_now();
  void on_connected(int status, const char* error);
  void on_disconnected(int status, const char* error);
  void became_ready();
  void connection_failed(Error error);
  void schedule_reconnect();
  void sweep_waiting();
  void dispatch(FormattedCommand command, ReplyCallbackPtr callback, bool subscription,
                SteadyClock::time_point deadline);
  void expire_overdue();
  void fail_waiting(const Error& error);
  std::string where() const;

  static void connect_callback(const redisAsyncContext* ctx, int status);
  static void disconnect_callback(const redisAsyncContext* ctx, int status);

  asio::io_context& io_;
  ConnectionOptions options_;
  std::string role_;
  State state_ = State::idle;
  redisAsyncContext* ctx_ = nullptr;
  // Counts connection attempts, so a timer of an earlier attempt cannot end a later one.
  std::uint64_t attempt_ = 0;
  int failures_ = 0;
  asio::steady_timer connect_timer_;
  asio::steady_timer retry_timer_;
  asio::steady_timer sweep_timer_;
  bool sweeping_ = false;
  std::deque<Waiting> waiting_;
  std::shared_ptr<Readiness> readiness_;
  // Commands sent and not yet answered, in the order Redis answers them, with their deadlines:
  // a periodic check expires those whose deadline passed (a server that stopped answering).
  std::deque<std::pair<SteadyClock::time_point, ReplyCallback*>> inflight_;
  asio::steady_timer expiry_timer_;
  bool expiry_armed_ = false;
  const std::string description_;  // "Redis at host:port (role)", for messages

 public:
  /// Io thread: hiredis answered the oldest command in flight (called by its reply callback).
  void reply_arrived() {
    if (!inflight_.empty()) inflight_.pop_front();
  }

 private:
  // The holder of this connection's own reference while hiredis may call back into it.
  std::shared_ptr<Connection>* self_ = nullptr;
};
using ConnectionPtr = std::shared_ptr<Connection>;

}  // namespace marty::messaging::redis
