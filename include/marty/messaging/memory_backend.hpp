#pragma once

#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <string>

#include "marty/messaging/backend.hpp"

namespace marty::messaging {

/// Retention of one in-memory stream log. Oldest entries go first when any limit is hit.
struct MemoryStreamLimits {
  std::size_t max_messages = 1'000'000;  ///< 0: no count limit
  std::size_t max_bytes = 256u << 20;    ///< payload bytes; 0: no size limit
  std::chrono::seconds max_age{0};       ///< 0: no age limit
};

/// The embedded backend's settings. Every bound is per backend instance.
struct MemoryBackendConfig {
  /// Messages one group (or one group-less subscriber) may hold: queued, in flight and waiting
  /// for redelivery. A publisher finding a target full waits for space until its publish
  /// deadline, then fails with `resource_exhausted`; nothing is dropped silently.
  std::size_t group_capacity = 65'536;
  /// Limits of streams not named in `streams`.
  MemoryStreamLimits stream_defaults;
  /// Per-stream limits by stream name.
  std::map<std::string, MemoryStreamLimits> streams;
  /// Larger payloads are refused with `invalid_argument`. 0: no limit.
  std::size_t max_payload_bytes = 64u << 20;
  /// Serve request() natively (a private inbox per request). When false, the bus's generic
  /// reply-subject request/reply is used instead (as for brokers without native replies).
  bool native_request_reply = true;
};

/// An in-process broker: the subjects, groups and stream logs that memory backends share.
/// Several buses in one process (services of a demo, a test's publisher and consumers) talk to
/// each other by using backends of the same broker. Everything lives in this process:
/// "durable" groups and "persistent" streams last as long as the broker object.
class MemoryBroker;

std::shared_ptr<MemoryBroker> make_memory_broker(MemoryBackendConfig config = {});

/// A connection to `broker`, the embedded backend: all five patterns, NATS-style wildcards,
/// consumer groups, ack/nack with delayed redelivery, per-key order, bounded replayable stream
/// logs, native request/reply, bounded buffers. close() ends this connection's subscriptions
/// and requests only; the broker and other connections go on.
std::shared_ptr<Backend> make_memory_backend(std::shared_ptr<MemoryBroker> broker);

/// A connection to a private broker of its own.
std::shared_ptr<Backend> make_memory_backend(MemoryBackendConfig config = {});

}  // namespace marty::messaging
