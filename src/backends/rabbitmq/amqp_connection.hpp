#pragma once
// One rabbitmq-c connection on a thread of its own, reconnecting by itself.
//
// rabbitmq-c is a blocking, single-threaded client: every call on a connection must come from
// one thread. So each AmqpConnection owns a thread that connects, logs in, opens its channels,
// then loops: it runs the tasks other threads queue for it (publishes, acks, declarations) and
// reads the frames the broker sends (deliveries, confirms, returns). A task queue woken through
// an eventfd keeps the thread asleep in poll() when there is nothing to do.
#include <amqp.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "marty/messaging/rabbitmq_backend.hpp"
#include "marty/messaging/result.hpp"

namespace marty::messaging::rabbitmq {

inline constexpr std::string_view kBackendName = "rabbitmq";
/// Channel 1 carries the connection's traffic; channel 2 its declarations, so that their
/// replies never interleave with deliveries and confirms.
inline constexpr amqp_channel_t kTrafficChannel = 1;
inline constexpr amqp_channel_t kTopologyChannel = 2;

Error rabbit_error(errc code, std::string message);
/// The error of a failed rabbitmq-c RPC (a broker's connection.close or channel.close, or a
/// library error), naming `what`.
Error rpc_error(const amqp_rpc_reply_t& reply, std::string_view what);

/// Settings derived from RabbitMqConfig (after the URL is applied).
struct ConnectionSettings {
  std::string host;
  int port = 5672;
  std::string vhost;
  std::string user;
  std::string password;
  RabbitMqTlsConfig tls;
  int heartbeat_seconds = 30;
  std::chrono::milliseconds connect_timeout{5'000};
  std::chrono::milliseconds reconnect_wait{250};
};

/// Opens a connection with `settings` and logs in, with channels 1 and 2 open; `role` names it
/// in errors. Blocking. The caller owns the result (amqp_connection_close, then
/// amqp_destroy_connection) and uses it from one thread.
Result<amqp_connection_state_t> open_amqp_connection(const ConnectionSettings& settings,
                                                     std::string_view role);

/// Threading: every callback runs on the connection's thread; post() and close() may be called
/// from any thread. Lifetime: close() stops the thread (joined by the destructor, which must
/// not run on that thread).
class AmqpConnection {
 public:
  struct Hooks {
    /// After every (re)connection, with channels 1 and 2 open: declare, consume, confirm.select.
    /// An error fails the connection attempt (the first one's error goes to wait_ready()).
    std::function<Result<void>(amqp_connection_state_t)> on_connected;
    /// Every frame that arrives on channel 1 outside an RPC (deliveries, confirms, returns,
    /// channel.close). The handler reads a message's content with amqp_read_message. It returns
    /// false when the connection is no longer usable (a closed channel): it is then reopened.
    std::function<bool(amqp_connection_state_t, const amqp_frame_t&)> on_frame;
    /// The connection is closing (close() was called), after the last tasks ran and before
    /// connection.close is sent: the last word (acknowledgements still batched).
    std::function<void(amqp_connection_state_t)> before_close;
    /// The connection was lost (or closed): fail what waits for it.
    std::function<void(const Error&)> on_lost;
  };

  AmqpConnection(ConnectionSettings settings, std::chrono::milliseconds outage_wait,
                 std::string role, Hooks hooks);
  ~AmqpConnection();
  AmqpConnection(const AmqpConnection&) = delete;
  AmqpConnection& operator=(const AmqpConnection&) = delete;

  /// Blocks until the first connection attempt succeeded or failed (the caller is not the
  /// connection's thread). Later losses are handled by reconnecting.
  Result<void> wait_ready();
  /// The first attempt's outcome, if it has one yet (never blocks).
  std::optional<Result<void>> first_outcome() const;
  /// Runs `task` on the connection's thread while it is connected. A task queued while the
  /// connection is down waits for it at most `outage_wait`; a task that cannot run (that wait
  /// passed, or the connection was closed) is called with a null connection, once.
  using Task = std::function<void(amqp_connection_state_t)>;
  void post(Task task);
  /// Stops: closes the connection politely and ends the thread.
  void close();
  bool connected() const;
  const std::string& role() const noexcept { return role_; }

 private:
  void run();
  void serve(amqp_connection_state_t conn);
  void wake();

  void expire_tasks(bool all);

  ConnectionSettings settings_;
  std::chrono::milliseconds outage_wait_;
  std::string role_;
  Hooks hooks_;
  int wake_fd_ = -1;
  mutable std::mutex mutex_;
  std::condition_variable ready_changed_;
  std::optional<Result<void>> first_outcome_;
  bool stopping_ = false;
  bool connected_ = false;
  bool ever_connected_ = false;
  std::deque<std::pair<std::chrono::steady_clock::time_point, Task>> tasks_;
  std::thread thread_;
};

}  // namespace marty::messaging::rabbitmq
