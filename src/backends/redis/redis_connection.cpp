#include "redis_connection.hpp"

#include "redis_setup.hpp"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <optional>

#include <spdlog/spdlog.h>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/post.hpp>
#include <asio/use_awaitable.hpp>

#include "marty/messaging/detail/async_signal.hpp"
#include "marty/messaging/detail/log.hpp"

namespace marty::messaging::redis {
namespace {

using marty::messaging::detail::logger;

Reply to_reply(const redisReply* r) {
  Reply out;
  switch (r->type) {
    case REDIS_REPLY_STRING:
      out.type = Reply::Type::string;
      out.text.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = Reply::Type::status;
      out.text.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = Reply::Type::error;
      out.text.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = Reply::Type::integer;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = Reply::Type::array;
      out.elements.reserve(r->elements);
      for (std::size_t i = 0; i < r->elements; ++i) out.elements.push_back(to_reply(r->element[i]));
      break;
    default:
      out.type = Reply::Type::nil;
  }
  return out;
}

// Drives a hiredis context's socket with asio: hiredis says when it wants to read or write
// (addRead/addWrite...), asio waits for readiness and calls hiredis back. The socket belongs to
// hiredis (it closes it), so the descriptor is released, never closed, at cleanup.
struct Adapter : std::enable_shared_from_this<Adapter> {
  Adapter(asio::io_context& io, redisAsyncContext* context)
      : socket(io, context->c.fd), ctx(context) {}

  asio::posix::stream_descriptor socket;
  redisAsyncContext* ctx;
  bool alive = true;
  bool reading = false, writing = false;
  bool read_armed = false, write_armed = false;

  void arm_read() {
    if (read_armed || !alive || !reading) return;
    read_armed = true;
    socket.async_wait(asio::posix::stream_descriptor::wait_read,
                      [self = shared_from_this()](const std::error_code& ec) {
                        self->read_armed = false;
                        if (ec || !self->alive || !self->reading) return;
                        redisAsyncHandleRead(self->ctx);  // may free the context (alive = false)
                        self->arm_read();
                      });
  }
  void arm_write() {
    if (write_armed || !alive || !writing) return;
    write_armed = true;
    socket.async_wait(asio::posix::stream_descriptor::wait_write,
                      [self = shared_from_this()](const std::error_code& ec) {
                        self->write_armed = false;
                        if (ec || !self->alive || !self->writing) return;
                        redisAsyncHandleWrite(self->ctx);
                        self->arm_write();
                      });
  }

  static Adapter& of(void* data) { return **static_cast<std::shared_ptr<Adapter>*>(data); }
  static void add_read(void* data) {
    Adapter& a = of(data);
    a.reading = true;
    a.arm_read();
  }
  static void del_read(void* data) { of(data).reading = false; }
  static void add_write(void* data) {
    Adapter& a = of(data);
    a.writing = true;
    a.arm_write();
  }
  static void del_write(void* data) { of(data).writing = false; }
  static void cleanup(void* data) {
    auto* holder = static_cast<std::shared_ptr<Adapter>*>(data);
    Adapter& a = **holder;
    a.alive = false;
    a.reading = a.writing = false;
    std::error_code ignored;
    a.socket.cancel(ignored);
    (void)a.socket.release();
    delete holder;  // pending waits keep the adapter until they complete
  }

  static void attach(asio::io_context& io, redisAsyncContext* context) {
    auto* holder = new std::shared_ptr<Adapter>(std::make_shared<Adapter>(io, context));
    context->ev.data = holder;
    context->ev.addRead = add_read;
    context->ev.delRead = del_read;
    context->ev.addWrite = add_write;
    context->ev.delWrite = del_write;
    context->ev.cleanup = cleanup;
  }
};

// hiredis's reply callback for ordinary commands: `privdata` is the caller's ReplyCallback.
// A null reply means the connection went (or was closed) before the reply came.
void on_reply(redisAsyncContext* ctx, void* reply, void* privdata) {
  std::unique_ptr<ReplyCallback> callback(static_cast<ReplyCallback*>(privdata));
  if (ctx->data != nullptr) static_cast<Connection*>(ctx->data)->reply_arrived();
  if (reply == nullptr) {
    if (ctx->data == nullptr) {
      (*callback)(Error(errc::cancelled, "the Redis connection was closed", "redis"));
    } else {
      const std::string cause = ctx->errstr[0] != '\0' ? ctx->errstr : "connection lost";
      (*callback)(Error(errc::unavailable,
                        "the Redis connection dropped before the reply (the command may or may "
                        "not have run): " +
                            cause,
                        "redis"));
    }
    return;
  }
  (*callback)(to_reply(static_cast<redisReply*>(reply)));
}

}  // namespace

Error redis_error(errc code, std::string message) {
  return Error(code, std::move(message), std::string(kBackendName));
}

FormattedCommand::FormattedCommand(const Command& args) {
  std::vector<const char*> argv;
  std::vector<std::size_t> lengths;
  argv.reserve(args.size());
  lengths.reserve(args.size());
  for (const auto& a : args) {
    argv.push_back(a.data());
    lengths.push_back(a.size());
  }
  const int length =
      redisFormatCommandArgv(&data_, static_cast<int>(argv.size()), argv.data(), lengths.data());
  if (length < 0) throw std::bad_alloc();
  size_ = static_cast<std::size_t>(length);
}

FormattedCommand::~FormattedCommand() {
  if (data_ != nullptr) redisFreeCommand(data_);
}

std::string_view Reply::error_code() const noexcept {
  std::string_view t = text;
  return t.substr(0, t.find(' '));
}

// The outcome of the first connection attempt, for wait_ready().
struct Connection::Readiness {
  std::mutex mutex;
  std::optional<Result<void>> outcome;
  std::shared_ptr<detail::AsyncSignal> signal = detail::AsyncSignal::create();

  void resolve(Result<void> result) {
    {
      std::lock_guard lock(mutex);
      if (outcome) return;
      outcome = std::move(result);
    }
    signal->notify();
  }
};

// Subscription pushes: `privdata` is the Connection, which outlives its context.
static void on_push_reply(redisAsyncContext* ctx, void* reply, void* privdata) {
  if (reply == nullptr || ctx->data == nullptr) return;
  auto* connection = static_cast<Connection*>(privdata);
  if (connection->on_push) connection->on_push(to_reply(static_cast<redisReply*>(reply)));
}

std::shared_ptr<Connection> Connection::create(asio::io_context& io, ConnectionOptions options,
                                               std::string role) {
  return std::shared_ptr<Connection>(new Connection(io, std::move(options), std::move(role)));
}

Connection::Connection(asio::io_context& io, ConnectionOptions options, std::string role)
    : io_(io),
      options_(std::move(options)),
      role_(std::move(role)),
      connect_timer_(io),
      retry_timer_(io),
      sweep_timer_(io),
      readiness_(std::make_shared<Readiness>()),
      expiry_timer_(io),
      description_("Redis at " + options_.host + ":" + std::to_string(options_.port) + " (" +
                   role_ + ")") {}

Connection::~Connection() = default;

std::string Connection::where() const {
  return description_;
}

void Connection::start() {
  asio::post(io_, [self = shared_from_this()] {
    if (self->state_ == State::idle) self->connect_now();
  });
}

void Connection::connect_now() {
  state_ = State::connecting;
  const std::uint64_t attempt = ++attempt_;
  redisAsyncContext* ctx = redisAsyncConnect(options_.host.c_str(), options_.port);
  if (ctx == nullptr || ctx->err != 0) {
    Error error = redis_error(errc::unavailable, "cannot connect to " + where() + ": " +
                                                     (ctx ? ctx->errstr : "out of memory"));
    if (ctx != nullptr) redisAsyncFree(ctx);
    connection_failed(std::move(error));
    return;
  }
  ctx_ = ctx;
  ctx->data = this;
  inflight_.clear();
  // A server that vanishes without closing the connection (a crashed host, a cut network) is
  // noticed by TCP keepalive rather than never.
  (void)redisEnableKeepAlive(&ctx->c);
  // hiredis calls back into this connection until its context is gone: keep it alive so long.
  if (self_ == nullptr) self_ = new std::shared_ptr<Connection>(shared_from_this());
  Adapter::attach(io_, ctx);
  redisAsyncSetConnectCallback(ctx, &Connection::connect_callback);
  redisAsyncSetDisconnectCallback(ctx, &Connection::disconnect_callback);

  // The handshake is pipelined behind the TCP connect; the last step makes the connection ready.
  std::vector<Command> handshake;
  if (!options_.password.empty()) {
    handshake.push_back(options_.username.empty()
                            ? Command{"AUTH", options_.password}
                            : Command{"AUTH", options_.username, options_.password});
  }
  if (options_.database != 0) handshake.push_back({"SELECT", std::to_string(options_.database)});
  if (!options_.client_name.empty()) {
    handshake.push_back({"CLIENT", "SETNAME", options_.client_name + "-" + role_});
  }
  handshake.push_back({"PING"});
  for (std::size_t i = 0; i < handshake.size(); ++i) {
    const bool last = i + 1 == handshake.size();
    std::string step = handshake[i][0];
    dispatch(FormattedCommand(handshake[i]),
             make_callback([this, attempt, last, step](ReplyResult result) {
               if (attempt != attempt_ || state_ != State::connecting) return;
               if (!result) return;  // the connection failed: its callbacks say why
               if (result->is_error()) {
                 const std::string_view code = result->error_code();
                 const bool auth = code == "WRONGPASS" || code == "NOAUTH" || code == "NOPERM" ||
                                   (step == "AUTH" && code == "ERR");
                 // A server loading its data set (LOADING), busy or a read-only replica for
                 // now is there and will serve: retryable, like a refused connection.
                 const errc kind = auth ? errc::unauthenticated
                                   : code_for_error_reply(code) == errc::unavailable
                                       ? errc::unavailable
                                       : errc::failed_precondition;
                 Error error =
                     redis_error(kind, where() + " refused " + step + ": " + result->text);
                 redisAsyncContext* c = ctx_;
                 ctx_ = nullptr;
                 c->data = nullptr;
                 redisAsyncFree(c);
                 connection_failed(std::move(error));
                 return;
               }
               if (last) became_ready();
             }),
             false, SteadyClock::time_point::max());
  }

  connect_timer_.expires_after(options_.connect_timeout);
  connect_timer_.async_wait([self = shared_from_this(), attempt](const std::error_code& ec) {
    if (ec || attempt != self->attempt_ || self->state_ != State::connecting) return;
    redisAsyncContext* c = self->ctx_;
    self->ctx_ = nullptr;
    if (c != nullptr) {
      c->data = nullptr;
      redisAsyncFree(c);
    }
    self->connection_failed(redis_error(
        errc::unavailable, "cannot connect to " + self->where() + ": no answer within " +
                               std::to_string(self->options_.connect_timeout.count()) + " ms"));
  });
}

void Connection::connect_callback(const redisAsyncContext* ctx, int status) {
  auto* self = static_cast<Connection*>(ctx->data);
  if (self != nullptr) self->on_connected(status, ctx->errstr);
}

void Connection::disconnect_callback(const redisAsyncContext* ctx, int status) {
  auto* self = static_cast<Connection*>(ctx->data);
  if (self != nullptr) self->on_disconnected(status, ctx->errstr);
}

void Connection::on_connected(int status, const char* error) {
  if (status == REDIS_OK) return;  // the handshake's replies take it from here
  // hiredis frees the context after this callback, without a disconnect callback.
  ctx_ = nullptr;
  connection_failed(redis_error(
      errc::unavailable, "cannot connect to " + where() + ": " + std::string(error ? error : "")));
}

void Connection::on_disconnected(int status, const char* error) {
  ctx_ = nullptr;  // hiredis frees it after this callback
  if (state_ == State::closed) return;
  const bool was_ready = state_ == State::ready;
  if (was_ready) {
    logger().warn("{} lost its connection ({}); reconnecting", where(),
                  status == REDIS_OK ? "closed" : std::string(error ? error : "error"));
  }
  if (!was_ready) {
    // Dropped during the handshake (a server shutting down, a proxy refusing us): a failed
    // attempt, which wait_ready() must hear about.
    connection_failed(
        redis_error(errc::unavailable, where() + " closed the connection during the handshake: " +
                                           std::string(error != nullptr ? error : "")));
    return;
  }
  state_ = State::waiting;
  schedule_reconnect();
}

void Connection::became_ready() {
  connect_timer_.cancel();
  if (failures_ > 0) logger().info("{} reconnected", where());
  state_ = State::ready;
  failures_ = 0;
  readiness_->resolve(ok());
  if (on_ready) on_ready();
  auto queued = std::move(waiting_);
  waiting_.clear();
  for (auto& w : queued) {
    dispatch(std::move(w.command), std::move(w.callback), w.subscription, w.reply_deadline);
  }
}

void Connection::connection_failed(Error error) {
  if (state_ == State::closed) return;
  if (failures_ == 0 || failures_ % 50 == 0) logger().warn("{}", error.describe());
  readiness_->resolve(error);
  state_ = State::waiting;
  schedule_reconnect();
}

void Connection::schedule_reconnect() {
  ++failures_;
  const auto wait = options_.reconnect_wait * (1 << std::min(failures_ - 1, 4));
  const std::uint64_t attempt = attempt_;
  retry_timer_.expires_after(wait);
  retry_timer_.async_wait([self = shared_from_this(), attempt](const std::error_code& ec) {
    if (ec || self->state_ != State::waiting || attempt != self->attempt_) return;
    self->connect_now();
  });
  // Without a context hiredis no longer calls back: the connection no longer holds itself.
  if (ctx_ == nullptr && self_ != nullptr) {
    auto* holder = self_;
    self_ = nullptr;
    // Deleted after this call returns: the timers above hold their own references.
    asio::post(io_, [holder] { delete holder; });
  }
}

void Connection::send(FormattedCommand command, ReplyCallbackPtr callback,
                      SteadyClock::time_point deadline) {
  if (state_ == State::closed) {
    (*callback)(redis_error(errc::cancelled, where() + " is closed"));
    return;
  }
  if (state_ == State::ready) {
    dispatch(std::move(command), std::move(callback), false, deadline);
    return;
  }
  const auto bound = SteadyClock::now() + options_.outage_wait;
  waiting_.push_back(
      {std::move(command), std::move(callback), std::min(deadline, bound), false, deadline});
  if (!sweeping_) sweep_waiting();
}

void Connection::post(FormattedCommand command, ReplyCallbackPtr callback,
                      SteadyClock::time_point deadline) {
  if (io_.get_executor().running_in_this_thread()) {
    send(std::move(command), std::move(callback), deadline);
    return;
  }
  asio::post(
      io_, [self = shared_from_this(), command = std::move(command), callback = std::move(callback),
            deadline]() mutable { self->send(std::move(command), std::move(callback), deadline); });
}

void Connection::send_subscription(const Command& args) {
  // While down, the subscriptions are renewed by on_ready when the connection is back.
  if (state_ == State::ready) {
    dispatch(FormattedCommand(args), nullptr, true, SteadyClock::time_point::max());
  }
}

void Connection::sweep_waiting() {
  const auto now = SteadyClock::now();
  while (!waiting_.empty() && state_ != State::ready) {
    auto it = std::find_if(waiting_.begin(), waiting_.end(),
                           [now](const Waiting& w) { return w.deadline <= now; });
    if (it == waiting_.end()) break;
    auto callback = std::move(it->callback);
    waiting_.erase(it);
    (*callback)(
        redis_error(errc::unavailable, where() + " is unreachable; gave up waiting for it"));
  }
  sweeping_ = !waiting_.empty();
  if (!sweeping_) return;
  sweep_timer_.expires_after(std::chrono::milliseconds(20));
  sweep_timer_.async_wait([self = shared_from_this()](const std::error_code& ec) {
    if (!ec) self->sweep_waiting();
  });
}

void Connection::dispatch(FormattedCommand command, ReplyCallbackPtr callback, bool subscription,
                          SteadyClock::time_point deadline) {
  int status = REDIS_ERR;
  if (ctx_ != nullptr) {
    if (subscription) {
      status =
          redisAsyncFormattedCommand(ctx_, on_push_reply, this, command.data(), command.size());
    } else {
      status = redisAsyncFormattedCommand(ctx_, on_reply, callback.get(), command.data(),
                                          command.size());
      if (status == REDIS_OK) {
        inflight_.emplace_back(deadline, callback.get());
        (void)callback.release();  // hiredis calls it back exactly once
        if (deadline != SteadyClock::time_point::max() && !expiry_armed_) expire_overdue();
      }
    }
  }
  if (status != REDIS_OK && callback) {
    (*callback)(redis_error(errc::unavailable, where() + " could not send a command"));
  }
}

void Connection::expire_overdue() {
  const auto now = SteadyClock::now();
  bool finite = false;
  for (auto& entry : inflight_) {
    if (entry.first <= now) {
      entry.second->expire();
      entry.first = SteadyClock::time_point::max();  // expired once
    } else if (entry.first != SteadyClock::time_point::max()) {
      finite = true;
    }
  }
  expiry_armed_ = finite;
  if (!finite) return;
  expiry_timer_.expires_after(std::chrono::milliseconds(50));
  expiry_timer_.async_wait([self = shared_from_this()](const std::error_code& ec) {
    if (!ec) self->expire_overdue();
  });
}

void Connection::fail_waiting(const Error& error) {
  auto queued = std::move(waiting_);
  waiting_.clear();
  for (auto& w : queued) {
    if (w.callback) (*w.callback)(error);
  }
}

void Connection::close() {
  asio::post(io_, [self = shared_from_this()] {
    if (self->state_ == State::closed) return;
    self->state_ = State::closed;
    self->readiness_->resolve(redis_error(errc::cancelled, self->where() + " was closed"));
    self->connect_timer_.cancel();
    self->retry_timer_.cancel();
    self->sweep_timer_.cancel();
    self->expiry_timer_.cancel();
    self->inflight_.clear();
    self->fail_waiting(redis_error(errc::cancelled, self->where() + " was closed"));
    if (redisAsyncContext* c = self->ctx_) {
      self->ctx_ = nullptr;
      c->data = nullptr;  // callbacks now see a closed connection (cancelled)
      redisAsyncFree(c);
    }
    if (self->self_ != nullptr) {
      auto* holder = self->self_;
      self->self_ = nullptr;
      asio::post(self->io_, [holder] { delete holder; });
    }
  });
}

asio::awaitable<Result<void>> Connection::wait_ready() {
  auto readiness = readiness_;
  while (true) {
    {
      std::lock_guard lock(readiness->mutex);
      if (readiness->outcome) co_return *readiness->outcome;
    }
    co_await readiness->signal->wait();
  }
}

asio::awaitable<ReplyResult> Connection::command(const Command& args,
                                                 SteadyClock::time_point deadline) {
  // A reply that has not come by the deadline (a server that stopped answering without closing
  // the connection) resumes the caller with `deadline_exceeded`; the late reply is dropped.
  auto initiate = [self = shared_from_this(), formatted = FormattedCommand(args),
                   deadline](auto handler) mutable {
    using Handler = decltype(handler);
    struct Resume final : ReplyCallback {
      // `where` is the connection's own description: expire() is only called by the connection.
      Resume(Handler h, const std::string* w) : handler(std::move(h)), where(w) {}
      void operator()(ReplyResult result) override { finish(std::move(result)); }
      void expire() override {
        finish(redis_error(errc::deadline_exceeded, "no reply from " + *where +
                                                        " before the deadline (the command may "
                                                        "or may not have run)"));
      }
      void finish(ReplyResult result) {
        if (!handler) return;
        auto executor = asio::get_associated_executor(*handler);
        asio::post(executor, [h = std::move(*handler), result = std::move(result)]() mutable {
          std::move(h)(std::move(result));
        });
        handler.reset();
      }
      std::optional<Handler> handler;
      const std::string* where;
    };
    self->post(std::move(formatted),
               std::make_unique<Resume>(std::move(handler), &self->description_), deadline);
  };
  return asio::async_initiate<const asio::use_awaitable_t<>&, void(ReplyResult)>(
      std::move(initiate), asio::use_awaitable);
}

}  // namespace marty::messaging::redis
