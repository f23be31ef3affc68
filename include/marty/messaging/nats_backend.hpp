#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "marty/messaging/backend.hpp"

/// The NATS backend (core NATS and JetStream), on nats.c. Link `marty::messaging_nats`.
namespace marty::messaging::nats {

enum class Retention { limits, interest, workqueue };
enum class Storage { file, memory };

/// A JetStream stream. Streams named in NatsConfig::streams are created (or checked) at
/// connect(); other streams the bus writes to are created on first use with `stream_defaults`.
struct StreamConfig {
  /// Subjects it captures. Empty: the bus stream's own name (a stream `orders` captures the
  /// subject `orders`).
  std::vector<std::string> subjects;
  Retention retention = Retention::limits;
  Storage storage = Storage::file;
  std::int64_t max_messages = -1;   ///< -1: unlimited
  std::int64_t max_bytes = -1;      ///< -1: unlimited
  std::chrono::seconds max_age{0};  ///< 0: unlimited
  int replicas = 1;
  /// Window in which a repeated Nats-Msg-Id (our message_id) is dropped as a duplicate.
  std::chrono::seconds duplicate_window{120};
};

struct TlsConfig {
  bool enabled = false;
  std::string ca_file;    ///< PEM; empty: the system's roots
  std::string cert_file;  ///< client certificate (PEM), with key_file
  std::string key_file;
  bool verify_hostname = true;  ///< also check the server's name against its certificate
};

/// Connection and provisioning settings. Validated at connect(): a bad value is
/// `invalid_argument` naming the field.
struct NatsConfig {
  /// Server URLs, "nats://host:port" (or "tls://..."); at least one.
  std::vector<std::string> servers{"nats://127.0.0.1:4222"};
  /// Connection name shown by the server's monitoring.
  std::string name = "marty-messaging";
  std::string user;
  std::string password;
  std::string token;
  /// A .creds file (JWT and NKey seed), for servers in operator mode.
  std::string credentials_file;
  TlsConfig tls;
  std::chrono::milliseconds connect_timeout{2'000};
  /// -1: reconnect forever.
  int max_reconnect_attempts = -1;
  std::chrono::milliseconds reconnect_wait{250};
  /// Bytes of publishes buffered while reconnecting; beyond it a publish fails with
  /// `unavailable` (never dropped silently).
  int reconnect_buffer_bytes = 8 << 20;

  /// Use JetStream: events and commands become at-least-once (captured by `topic_stream`),
  /// streams and dead letters become JetStream streams. Off: core NATS only, at-most-once.
  bool jetstream = true;
  /// The stream that captures events and commands for at-least-once delivery. Interest
  /// retention: a message is kept until every consumer (subscriber group) has acknowledged it,
  /// and events nobody listens to are not kept.
  std::string topic_stream = "MARTY_TOPICS";
  std::vector<std::string> topic_subjects{"events.>", "commands.>"};
  Storage topic_storage = Storage::file;
  /// Non-empty: commands (`commands.>`) get a stream of their own, with work-queue retention
  /// (a command is removed as soon as its service acknowledges it, and each command subject has
  /// exactly one consumer group). `topic_subjects` must then leave commands out.
  std::string command_stream;
  /// Streams created or checked at connect(), by bus stream name.
  std::map<std::string, StreamConfig> streams;
  /// Settings of streams created on first use.
  StreamConfig stream_defaults;
  /// Unacknowledged messages a consumer may hold; the server sends no more until some are
  /// settled (this is the backpressure between the server and a slow handler).
  int max_ack_pending = 1'000;
  /// How long the server waits for an ack before redelivering.
  std::chrono::milliseconds ack_wait{30'000};
  /// How long a JetStream publish waits for the server's acknowledgement.
  std::chrono::milliseconds publish_timeout{5'000};
  /// Threads that run nats.c's blocking calls (JetStream publishes, requests, management).
  int blocking_threads = 4;
};

/// A NATS backend. Thread-safe; each backend owns one connection.
std::shared_ptr<Backend> make_backend(NatsConfig config);

/// The JetStream stream name for a bus stream or group: NATS names allow no '.', '*', '>' or
/// white space, so those become '_', and a short hash of the original keeps distinct names
/// distinct ("a.b" and "a_b" do not collide).
std::string jetstream_name(std::string_view name);

}  // namespace marty::messaging::nats
