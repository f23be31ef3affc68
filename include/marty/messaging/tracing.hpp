#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "marty/messaging/message.hpp"
#include "marty/messaging/types.hpp"

namespace marty::messaging {

/// W3C Trace Context (https://www.w3.org/TR/trace-context/): which trace a message belongs to
/// and which span sent it, carried in the `traceparent` and `tracestate` headers on every
/// backend.
struct TraceContext {
  std::string trace_id;    ///< 32 lowercase hex digits, not all zero
  std::string span_id;     ///< 16 lowercase hex digits, not all zero
  std::uint8_t flags = 0;  ///< bit 0: sampled. Kept as received, sampled or not.
  std::string tracestate;  ///< vendor data, passed on untouched

  /// "00-<trace_id>-<span_id>-<flags>".
  std::string traceparent() const;
  /// A new span of the same trace (a fresh span id; flags and tracestate kept).
  TraceContext child() const;
  /// A new trace: random ids, sampled.
  static TraceContext root();
  /// Parses a `traceparent` header: version 00 exactly, or a later version's first four fields
  /// (as the specification asks); nullopt for anything malformed, ids of zeros included.
  static std::optional<TraceContext> parse(std::string_view traceparent,
                                           std::string_view tracestate = {});
  /// The context a message carries in its headers, if any.
  static std::optional<TraceContext> of(const Message& message);
};

inline constexpr std::string_view kTraceparentHeader = "traceparent";
inline constexpr std::string_view kTracestateHeader = "tracestate";

/// One unit of work the bus did for a message: publishing it (producer) or handling it
/// (consumer). `parent_span_id` is empty for a trace's first span.
struct Span {
  enum class Kind { producer, consumer };
  Kind kind = Kind::producer;
  std::string name;  ///< "publish events.order_placed", "process commands.billing.charge"
  TraceContext context;
  std::string parent_span_id;
  std::string message_id;
  std::string subject;
  std::string backend;
  std::chrono::system_clock::time_point start;
  std::chrono::system_clock::time_point end;
  bool ok = true;
  std::string error;  ///< why it failed, when it did
};

/// Receives every span the bus ends. Plug in an exporter (OpenTelemetry, Zipkin...) by
/// implementing it. Thread-safety: called from the bus's executor threads, concurrently.
class Tracer {
 public:
  virtual ~Tracer() = default;
  virtual void on_span_end(const Span& span) = 0;
  /// Whether spans are wanted now. When not, the bus makes none and adds no context (that
  /// costs a fifth of the embedded backend's throughput); it passes on the context messages
  /// carry, and caused_by() continues it, so traces started elsewhere never break.
  virtual bool enabled() const { return true; }
};

/// The default tracer: each span as one debug line on the "marty.messaging" logger (or
/// spdlog's default), with trace and span ids, parent, duration and outcome; enabled while that
/// logger logs at debug level.
std::shared_ptr<Tracer> make_logging_tracer();

/// Metadata for a message caused by `cause` (published by its handler): the same correlation
/// id (the cause's, or the cause's id when it has none), the cause's id as causation id, and the
/// cause's trace context, so the new message's spans join the trace as children of the span
/// that handled `cause`.
MessageMetadata caused_by(const Message& cause);

}  // namespace marty::messaging
