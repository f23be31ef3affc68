#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "marty/messaging/backend.hpp"

/// The RabbitMQ backend (AMQP 0-9-1), on rabbitmq-c. Link `marty::messaging_rabbitmq`.
///
/// Where each kind of message goes (docs/rabbitmq-backend.md has the whole picture):
/// - events: a topic exchange, routing key = subject; one queue per subscriber group (shared by
///   its members), or an exclusive queue for a subscriber on its own.
/// - commands: a durable queue per service and command type; a command no queue takes is an
///   error for its sender (`mandatory`), never a silent loss.
/// - queries: direct reply-to (`amq.rabbitmq.reply-to`) with correlation ids.
/// - bus streams: stream queues (`x-queue-type: stream`), replayable by offset or time.
namespace marty::messaging::rabbitmq {

struct RabbitMqTlsConfig {
  bool enabled = false;
  std::string ca_file;    ///< PEM; empty: the system's roots
  std::string cert_file;  ///< client certificate (PEM), with key_file
  std::string key_file;
  bool verify_peer = true;
  bool verify_hostname = true;
};

/// Connection and topology settings. Validated at connect(): a bad value is
/// `invalid_argument` naming the field.
struct RabbitMqConfig {
  /// "amqp://user:password@host:port/vhost" (or amqps://). When set, it overrides host, port,
  /// vhost, user and password.
  std::string url;
  std::string host = "127.0.0.1";
  int port = 5672;
  std::string vhost = "/";
  std::string user = "guest";
  std::string password = "guest";
  RabbitMqTlsConfig tls;
  /// Seconds between heartbeats; 0: none.
  int heartbeat_seconds = 30;
  std::chrono::milliseconds connect_timeout{5'000};
  /// Pause before reconnecting a lost connection (doubles per failure, up to 16 times this).
  std::chrono::milliseconds reconnect_wait{250};
  /// How long a publish waits for a lost connection to come back before `unavailable`.
  std::chrono::milliseconds outage_wait{5'000};

  /// Unacknowledged messages a consumer may hold (basic.qos).
  int prefetch = 256;
  /// Wait for the broker's confirm of every publish (at-least-once). Off: fire and forget.
  bool publisher_confirms = true;
  /// Exchanges and queues survive a broker restart, and messages are persistent.
  bool durable = true;
  std::string events_exchange = "marty.events";
  std::string commands_exchange = "marty.commands";
  /// Where dead letters and delayed retries are routed (declared by the backend).
  std::string dead_letter_exchange = "marty.dead-letters";
  std::string retry_exchange = "marty.retry";
  /// Longest message a stream queue keeps (x-max-age, e.g. "7D"); empty: no limit.
  std::string stream_max_age;
};

/// A RabbitMQ backend. Thread-safe; each connection it opens runs on a thread of its own.
std::shared_ptr<Backend> make_backend(RabbitMqConfig config);

}  // namespace marty::messaging::rabbitmq
