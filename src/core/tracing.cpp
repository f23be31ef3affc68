#include "marty/messaging/tracing.hpp"

#include <random>

#include <spdlog/spdlog.h>
#include "marty/messaging/detail/log.hpp"

namespace marty::messaging {

namespace {

bool lower_hex(std::string_view text) {
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool all_zero(std::string_view text) {
  return text.find_first_not_of('0') == std::string::npos;
}

// Fills `out` with random lowercase hex digits, never all zero.
void fill_random_hex(char* out, std::size_t digits) {
  thread_local std::mt19937_64 generator{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  do {
    for (std::size_t i = 0; i < digits; i += 16) {
      std::uint64_t bits = generator();
      for (std::size_t j = i; j < std::min(digits, i + 16); ++j, bits >>= 4)
        out[j] = kHex[bits & 15];
    }
  } while (all_zero(std::string_view(out, digits)));
}

std::string random_hex(std::size_t digits) {
  std::string out(digits, '0');
  fill_random_hex(out.data(), digits);
  return out;
}

using marty::messaging::detail::logger;

class LoggingTracer final : public Tracer {
 public:
  bool enabled() const override { return logger().should_log(spdlog::level::debug); }
  void on_span_end(const Span& span) override {
    spdlog::logger& log = logger();
    const auto micros =
        std::chrono::duration_cast<std::chrono::microseconds>(span.end - span.start).count();
    log.debug("span {} trace={} span={} parent={} message={} backend={} {} us{}{}", span.name,
              span.context.trace_id, span.context.span_id,
              span.parent_span_id.empty() ? "-" : span.parent_span_id, span.message_id,
              span.backend, micros, span.ok ? "" : " error: ", span.error);
  }
};

}  // namespace

std::string TraceContext::traceparent() const {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "00-" + trace_id + "-" + span_id + "-";
  out += kHex[flags >> 4];
  out += kHex[flags & 15];
  return out;
}

TraceContext TraceContext::child() const {
  TraceContext next = *this;
  next.span_id = random_hex(16);
  return next;
}

TraceContext TraceContext::root() {
  TraceContext context;
  context.trace_id = random_hex(32);
  context.span_id = random_hex(16);
  context.flags = 1;
  return context;
}

std::optional<TraceContext> TraceContext::parse(std::string_view traceparent,
                                                std::string_view tracestate) {
  // version "-" trace-id "-" parent-id "-" flags: 2+1+32+1+16+1+2 = 55 characters; a later
  // version may append "-" and more.
  if (traceparent.size() < 55) return std::nullopt;
  const std::string_view version = traceparent.substr(0, 2);
  if (!lower_hex(version) || version == "ff") return std::nullopt;
  if (version == "00" && traceparent.size() != 55) return std::nullopt;
  if (traceparent.size() > 55 && traceparent[55] != '-') return std::nullopt;
  if (traceparent[2] != '-' || traceparent[35] != '-' || traceparent[52] != '-') {
    return std::nullopt;
  }
  const std::string_view trace = traceparent.substr(3, 32);
  const std::string_view span = traceparent.substr(36, 16);
  const std::string_view flags = traceparent.substr(53, 2);
  if (!lower_hex(trace) || !lower_hex(span) || !lower_hex(flags)) return std::nullopt;
  if (all_zero(trace) || all_zero(span)) return std::nullopt;
  TraceContext context;
  context.trace_id = std::string(trace);
  context.span_id = std::string(span);
  context.flags = static_cast<std::uint8_t>(std::stoi(std::string(flags), nullptr, 16));
  context.tracestate = std::string(tracestate);
  return context;
}

std::optional<TraceContext> TraceContext::of(const Message& message) {
  const auto parent = message.header(kTraceparentHeader);
  if (!parent) return std::nullopt;
  return parse(*parent, message.header(kTracestateHeader).value_or(std::string_view()));
}

std::shared_ptr<Tracer> make_logging_tracer() {
  return std::make_shared<LoggingTracer>();
}

MessageMetadata caused_by(const Message& cause) {
  MessageMetadata metadata;
  metadata.correlation_id = cause.correlation_id().empty() ? cause.id() : cause.correlation_id();
  metadata.causation_id = cause.id();
  if (auto context = TraceContext::of(cause)) {
    metadata.headers[std::string(kTraceparentHeader)] = context->traceparent();
    if (!context->tracestate.empty()) {
      metadata.headers[std::string(kTracestateHeader)] = context->tracestate;
    }
  }
  return metadata;
}

}  // namespace marty::messaging

namespace marty::messaging::detail {

namespace {

std::optional<Span> start_span(Message& message, std::string_view backend, Span::Kind kind,
                               const std::shared_ptr<Tracer>& tracer) {
  // No span wanted: the message travels as it is, with the context it carries (a handler's
  // message then carries its publisher's, which caused_by() continues).
  if (!tracer || !tracer->enabled()) return std::nullopt;
  Span span;
  span.kind = kind;
  const auto parent = TraceContext::of(message);
  span.context = parent ? parent->child() : TraceContext::root();
  if (parent) span.parent_span_id = parent->span_id;
  span.message_id = message.id();
  span.subject = message.subject();
  span.backend = std::string(backend);
  span.name = (kind == Span::Kind::producer ? "publish " : "process ") + span.subject;
  auto& headers = message.mutable_metadata().headers;
  headers[std::string(kTraceparentHeader)] = span.context.traceparent();
  if (!span.context.tracestate.empty()) {
    headers[std::string(kTracestateHeader)] = span.context.tracestate;
  }
  span.start = std::chrono::system_clock::now();
  return span;
}

}  // namespace

std::optional<Span> start_producer_span(Message& message, std::string_view backend,
                                        const std::shared_ptr<Tracer>& tracer) {
  return start_span(message, backend, Span::Kind::producer, tracer);
}

std::optional<Span> start_consumer_span(Message& message, std::string_view backend,
                                        const std::shared_ptr<Tracer>& tracer) {
  return start_span(message, backend, Span::Kind::consumer, tracer);
}

void end_span(const std::shared_ptr<Tracer>& tracer, std::optional<Span>& span,
              const Error* failure) {
  if (!tracer || !span) return;
  span->end = std::chrono::system_clock::now();
  span->ok = failure == nullptr;
  if (failure != nullptr) span->error = failure->describe();
  tracer->on_span_end(*span);
}

}  // namespace marty::messaging::detail
