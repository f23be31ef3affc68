#include "amqp_connection.hpp"

#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>

#include <spdlog/spdlog.h>
#include "marty/messaging/detail/log.hpp"

namespace marty::messaging::rabbitmq {
namespace {

using marty::messaging::detail::logger;

timeval to_timeval(std::chrono::milliseconds d) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(d.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((d.count() % 1000) * 1000);
  return tv;
}

std::string text_of(amqp_bytes_t bytes) {
  return std::string(static_cast<const char*>(bytes.bytes), bytes.len);
}

errc code_for_reply_code(int code) {
  switch (code) {
    case AMQP_ACCESS_REFUSED:
      return errc::permission_denied;
    case AMQP_NOT_FOUND:
      return errc::not_found;
    case AMQP_PRECONDITION_FAILED:
    case AMQP_RESOURCE_LOCKED:
      return errc::failed_precondition;
    case AMQP_NOT_ALLOWED:
      return errc::permission_denied;
    case AMQP_CONNECTION_FORCED:
      return errc::unavailable;
    default:
      return errc::internal;
  }
}

}  // namespace

Error rabbit_error(errc code, std::string message) {
  return Error(code, std::move(message), std::string(kBackendName));
}

Error rpc_error(const amqp_rpc_reply_t& reply, std::string_view what) {
  switch (reply.reply_type) {
    case AMQP_RESPONSE_LIBRARY_EXCEPTION: {
      const int status = reply.library_error;
      const errc code = status == AMQP_STATUS_TIMEOUT ? errc::deadline_exceeded : errc::unavailable;
      return rabbit_error(code, std::string(what) + ": " + amqp_error_string2(status));
    }
    case AMQP_RESPONSE_SERVER_EXCEPTION:
      if (reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        const auto* close = static_cast<const amqp_connection_close_t*>(reply.reply.decoded);
        return rabbit_error(code_for_reply_code(close->reply_code),
                            std::string(what) + ": the broker closed the connection (" +
                                std::to_string(close->reply_code) + " " +
                                text_of(close->reply_text) + ")");
      }
      if (reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        const auto* close = static_cast<const amqp_channel_close_t*>(reply.reply.decoded);
        return rabbit_error(code_for_reply_code(close->reply_code),
                            std::string(what) + ": the broker closed the channel (" +
                                std::to_string(close->reply_code) + " " +
                                text_of(close->reply_text) + ")");
      }
      return rabbit_error(errc::internal, std::string(what) + ": unexpected broker method");
    case AMQP_RESPONSE_NONE:
      return rabbit_error(errc::internal, std::string(what) + ": no reply");
    case AMQP_RESPONSE_NORMAL:
      break;
  }
  return rabbit_error(errc::internal, std::string(what) + ": failed");
}

AmqpConnection::AmqpConnection(ConnectionSettings settings, std::chrono::milliseconds outage_wait,
                               std::string role, Hooks hooks)
    : settings_(std::move(settings)),
      outage_wait_(outage_wait),
      role_(std::move(role)),
      hooks_(std::move(hooks)) {
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  thread_ = std::thread([this] { run(); });
}

AmqpConnection::~AmqpConnection() {
  close();
  if (thread_.joinable()) thread_.join();
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void AmqpConnection::wake() {
  const std::uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);
}

std::optional<Result<void>> AmqpConnection::first_outcome() const {
  std::lock_guard lock(mutex_);
  return first_outcome_;
}

Result<void> AmqpConnection::wait_ready() {
  std::unique_lock lock(mutex_);
  ready_changed_.wait(lock, [&] { return first_outcome_.has_value(); });
  return *first_outcome_;
}

void AmqpConnection::post(Task task) {
  {
    std::lock_guard lock(mutex_);
    if (!stopping_) {
      tasks_.emplace_back(std::chrono::steady_clock::now(), std::move(task));
      task = nullptr;
    }
  }
  if (task) {
    task(nullptr);  // closed: it will never run
    return;
  }
  wake();
}

void AmqpConnection::expire_tasks(bool all) {
  std::deque<Task> expired;
  {
    std::lock_guard lock(mutex_);
    const auto limit = std::chrono::steady_clock::now() - outage_wait_;
    while (!tasks_.empty() && (all || tasks_.front().first <= limit)) {
      expired.push_back(std::move(tasks_.front().second));
      tasks_.pop_front();
    }
  }
  for (auto& task : expired) task(nullptr);
}

void AmqpConnection::close() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
  }
  wake();
}

bool AmqpConnection::connected() const {
  std::lock_guard lock(mutex_);
  return connected_;
}

Result<amqp_connection_state_t> open_amqp_connection(const ConnectionSettings& settings,
                                                     std::string_view role) {
  const std::string where = "RabbitMQ at " + settings.host + ":" + std::to_string(settings.port) +
                            " (" + std::string(role) + ")";
  amqp_connection_state_t conn = amqp_new_connection();
  auto fail = [&](Error error) {
    amqp_destroy_connection(conn);
    return error;
  };
  amqp_socket_t* socket =
      settings.tls.enabled ? amqp_ssl_socket_new(conn) : amqp_tcp_socket_new(conn);
  if (socket == nullptr) return fail(rabbit_error(errc::internal, where + ": no socket"));
  if (settings.tls.enabled) {
    const auto& tls = settings.tls;
    if (!tls.ca_file.empty() &&
        amqp_ssl_socket_set_cacert(socket, tls.ca_file.c_str()) != AMQP_STATUS_OK) {
      return fail(rabbit_error(errc::invalid_argument,
                               "RabbitMqConfig.tls.ca_file '" + tls.ca_file + "' cannot be read"));
    }
    if (!tls.cert_file.empty() && amqp_ssl_socket_set_key(socket, tls.cert_file.c_str(),
                                                          tls.key_file.c_str()) != AMQP_STATUS_OK) {
      return fail(rabbit_error(errc::invalid_argument,
                               "RabbitMqConfig.tls.cert_file/key_file cannot be read"));
    }
    amqp_ssl_socket_set_verify_peer(socket, tls.verify_peer ? 1 : 0);
    amqp_ssl_socket_set_verify_hostname(socket, tls.verify_hostname ? 1 : 0);
  }
  timeval timeout = to_timeval(settings.connect_timeout);
  (void)amqp_set_handshake_timeout(conn, &timeout);
  const int opened =
      amqp_socket_open_noblock(socket, settings.host.c_str(), settings.port, &timeout);
  if (opened != AMQP_STATUS_OK) {
    return fail(rabbit_error(errc::unavailable,
                             "cannot connect to " + where + ": " + amqp_error_string2(opened)));
  }
  const amqp_rpc_reply_t login =
      amqp_login(conn, settings.vhost.c_str(), 0, 131072, settings.heartbeat_seconds,
                 AMQP_SASL_METHOD_PLAIN, settings.user.c_str(), settings.password.c_str());
  if (login.reply_type != AMQP_RESPONSE_NORMAL) {
    Error error = rpc_error(login, "logging in to " + where + " as '" + settings.user +
                                       "' on vhost '" + settings.vhost + "'");
    if (login.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
        login.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
      const auto* close = static_cast<const amqp_connection_close_t*>(login.reply.decoded);
      if (close->reply_code == AMQP_ACCESS_REFUSED) {
        error = rabbit_error(errc::unauthenticated, where + " refused the user '" + settings.user +
                                                        "' (" + text_of(close->reply_text) + ")");
      } else if (close->reply_code == AMQP_NOT_ALLOWED) {
        error = rabbit_error(errc::not_found, where + " refused the vhost '" + settings.vhost +
                                                  "' (" + text_of(close->reply_text) + ")");
      }
    }
    return fail(std::move(error));
  }
  // A reply the broker does not send within the handshake timeout is a dead connection.
  (void)amqp_set_rpc_timeout(conn, &timeout);
  for (amqp_channel_t channel : {kTrafficChannel, kTopologyChannel}) {
    amqp_channel_open(conn, channel);
    const amqp_rpc_reply_t reply = amqp_get_rpc_reply(conn);
    if (reply.reply_type != AMQP_RESPONSE_NORMAL) {
      return fail(rpc_error(reply, "opening a channel on " + where));
    }
  }
  return conn;
}

void AmqpConnection::run() {
  int failures = 0;
  while (true) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) break;
    }
    auto opened = open_amqp_connection(settings_, role_);
    Result<void> setup = ok();
    if (opened && hooks_.on_connected) {
      setup = hooks_.on_connected(*opened);
      if (!setup) {
        amqp_connection_close(*opened, AMQP_REPLY_SUCCESS);
        amqp_destroy_connection(*opened);
      }
    }
    const Result<void> outcome = !opened ? Result<void>(opened.error()) : setup;
    {
      std::lock_guard lock(mutex_);
      if (!first_outcome_) first_outcome_ = outcome;
      connected_ = outcome.has_value();
    }
    ready_changed_.notify_all();
    if (outcome) {
      {
        std::lock_guard lock(mutex_);
        ever_connected_ = true;
      }
      if (failures > 0) logger().info("RabbitMQ connection ({}) re-established", role_);
      failures = 0;
      serve(*opened);
      {
        std::lock_guard lock(mutex_);
        connected_ = false;
      }
      continue;
    }
    if (failures == 0 || failures % 50 == 0) logger().warn("{}", outcome.error().describe());
    if (hooks_.on_lost) hooks_.on_lost(outcome.error());
    // After a failed first attempt nobody is kept waiting (connect() reports it); later, work
    // waits for the connection up to the outage wait.
    bool first = false;
    {
      std::lock_guard lock(mutex_);
      first = !ever_connected_;
    }
    expire_tasks(first);
    ++failures;
    const auto wait = std::min<std::chrono::milliseconds>(
        settings_.reconnect_wait * (1 << std::min(failures - 1, 4)),
        outage_wait_ / 2 + std::chrono::milliseconds(1));
    // Sleeps, but wakes for close().
    pollfd fd{wake_fd_, POLLIN, 0};
    (void)::poll(&fd, 1, static_cast<int>(wait.count()));
    std::uint64_t drained = 0;
    (void)!::read(wake_fd_, &drained, sizeof drained);
  }
  // Stopped: whatever is still queued will never run (the outcome is settled first: expired
  // tasks may read it).
  {
    std::lock_guard lock(mutex_);
    if (!first_outcome_) first_outcome_ = rabbit_error(errc::cancelled, "closed");
  }
  ready_changed_.notify_all();
  expire_tasks(true);
  if (hooks_.on_lost) hooks_.on_lost(rabbit_error(errc::cancelled, "the connection was closed"));
}

void AmqpConnection::serve(amqp_connection_state_t conn) {
  const int socket_fd = amqp_get_sockfd(conn);
  Error lost = rabbit_error(errc::unavailable, "the RabbitMQ connection was lost");
  bool stopping = false;
  while (true) {
    std::deque<std::pair<std::chrono::steady_clock::time_point, Task>> tasks;
    {
      std::lock_guard lock(mutex_);
      tasks.swap(tasks_);
      stopping = stopping_;
    }
    for (auto& task : tasks) task.second(conn);
    if (stopping) break;
    // Frames rabbitmq-c already holds first; otherwise wait for the socket or a task.
    if (!amqp_frames_enqueued(conn) && !amqp_data_in_buffer(conn)) {
      pollfd fds[2] = {{socket_fd, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
      // Wakes at least every second so that heartbeats are sent and checked.
      // Readable or not, the zero-timeout read below also sends a heartbeat that is due.
      (void)::poll(fds, 2, 1000);
      if (fds[1].revents & POLLIN) {
        std::uint64_t drained = 0;
        (void)!::read(wake_fd_, &drained, sizeof drained);
      }
    }
    timeval zero{};
    amqp_frame_t frame;
    const int status = amqp_simple_wait_frame_noblock(conn, &frame, &zero);
    if (status == AMQP_STATUS_TIMEOUT) continue;
    if (status != AMQP_STATUS_OK) {
      lost = rabbit_error(errc::unavailable, std::string("the RabbitMQ connection (") + role_ +
                                                 ") was lost: " + amqp_error_string2(status));
      break;
    }
    if (frame.frame_type == AMQP_FRAME_METHOD &&
        frame.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
      const auto* close = static_cast<const amqp_connection_close_t*>(frame.payload.method.decoded);
      lost = rabbit_error(errc::unavailable, "the broker closed the connection (" + role_ +
                                                 "): " + std::to_string(close->reply_code) + " " +
                                                 text_of(close->reply_text));
      amqp_connection_close_ok_t close_ok{};
      amqp_send_method(conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &close_ok);
      break;
    }
    if (frame.channel == kTrafficChannel && hooks_.on_frame && !hooks_.on_frame(conn, frame)) {
      lost = rabbit_error(errc::unavailable, "the RabbitMQ channel (" + role_ + ") closed");
      break;
    }
    amqp_maybe_release_buffers(conn);
  }
  if (stopping) {
    // Tasks the last ones posted (an ack flush) are refused once stopping: this is their turn.
    if (hooks_.before_close) hooks_.before_close(conn);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
  } else {
    logger().warn("{}; reconnecting", lost.describe());
  }
  amqp_destroy_connection(conn);
  if (hooks_.on_lost) hooks_.on_lost(stopping ? rabbit_error(errc::cancelled, "closed") : lost);
}

}  // namespace marty::messaging::rabbitmq
