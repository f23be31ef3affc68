#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "marty/messaging/backend.hpp"

/// The Redis backend (pub/sub and Streams), on hiredis. Link `marty::messaging_redis`.
///
/// Where each kind of message goes (docs/redis-backend.md has the whole picture):
/// - events: at-least-once subscribers read a Stream per subject with one consumer group per
///   subscriber group; at-most-once and wildcard subscribers listen on a pub/sub channel.
///   An at-least-once publish appends to the Stream (when a group reads it) and publishes on the
///   channel, in one script; an at-most-once publish only publishes.
/// - commands and queries: a Stream per subject, one consumer group per service.
/// - query replies: the bus's private reply channel (pub/sub).
/// - bus streams: a Stream per stream name, replayable from an entry ID or a time.
namespace marty::messaging::redis {

/// Connection and behaviour settings. Validated at connect(): a bad value is
/// `invalid_argument` naming the field.
struct RedisConfig {
  /// "redis://[user:password@]host[:port][/database]". When set, it overrides host, port,
  /// database, username and password.
  std::string url;
  std::string host = "127.0.0.1";
  int port = 6379;
  int database = 0;
  /// ACL user; empty: the `default` user (AUTH with the password alone).
  std::string username;
  std::string password;
  /// Connection name shown by CLIENT LIST.
  std::string client_name = "marty-messaging";
  /// Time allowed to open a connection (TCP and AUTH) before it counts as failed.
  std::chrono::milliseconds connect_timeout{2'000};
  /// Pause between reconnection attempts after a connection is lost (it doubles per failed
  /// attempt, up to 16 times this).
  std::chrono::milliseconds reconnect_wait{100};
  /// How long a publish waits for a lost connection to come back before it fails with
  /// `unavailable` (bounded further by the publish's own deadline). Never dropped silently.
  std::chrono::milliseconds outage_wait{2'000};

  /// Prefix of every key and channel this backend uses ("marty:events.order_placed").
  std::string key_prefix = "marty:";
  /// Approximate MAXLEN applied at every append (XADD MAXLEN ~ n); 0: no trimming. A consumer
  /// group further behind than this loses the oldest entries, and says so in the log.
  std::int64_t max_stream_length = 1'000'000;

  /// How long an entry may stay pending with a consumer before live consumers of its group
  /// reclaim it (XAUTOCLAIM): the time a crashed consumer's messages wait.
  std::chrono::milliseconds visibility_timeout{30'000};
  /// How often each stream subscription looks for entries to reclaim.
  std::chrono::milliseconds reclaim_interval{1'000};
  /// Deliveries of one entry after which the backend moves it to the dead-letter stream itself
  /// (a message that kills its consumer every time never reaches the bus's retry policy).
  /// 0: no limit.
  int max_deliveries = 16;
  /// Entries a stream subscription holds unsettled; it reads no more until some are settled.
  int prefetch = 256;
  /// How long one blocking read waits on the server (XREADGROUP BLOCK) before it is reissued.
  std::chrono::milliseconds block_timeout{1'000};
};

/// A Redis backend. Thread-safe; each backend owns its connections and one I/O thread.
std::shared_ptr<Backend> make_backend(RedisConfig config);

/// A stream entry ID ("1700000000000-3") as the 64-bit `Delivery::sequence()`: milliseconds
/// in the high 42 bits, the sequence in the low 22. StartPosition::from_sequence takes the same
/// number. IDs outside that range (sequence ≥ 2^22 within one millisecond) are clamped.
std::uint64_t sequence_from_entry_id(std::string_view id);
std::string entry_id_from_sequence(std::uint64_t sequence);

}  // namespace marty::messaging::redis
