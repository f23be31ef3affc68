#pragma once
// The bus's spans (internal): a span per publish and per handled message, carried from one to
// the next in the messages' `traceparent` headers.
#include <memory>
#include <optional>
#include <string_view>

#include "marty/messaging/result.hpp"
#include "marty/messaging/tracing.hpp"

namespace marty::messaging::detail {

/// Publishing `message` on `backend`: a child span of the trace the message carries (from
/// caused_by(), a reply's request, or the caller), else a new trace; its context is written into
/// the message's headers, so the receiver's span becomes its child.
/// Without an enabled tracer there is no span, and the message is left as it is.
std::optional<Span> start_producer_span(Message& message, std::string_view backend,
                                        const std::shared_ptr<Tracer>& tracer);

/// Handling a delivered `message`: a child span of the one that published it (a new trace when
/// it carries none). The message's headers then carry this span's context, so what the handler
/// publishes with caused_by(message), and a query's reply, are children of it.
/// Without an enabled tracer there is no span, and the message is left as it is.
std::optional<Span> start_consumer_span(Message& message, std::string_view backend,
                                        const std::shared_ptr<Tracer>& tracer);

/// Ends `span` with its outcome and hands it to `tracer` (none: dropped).
void end_span(const std::shared_ptr<Tracer>& tracer, std::optional<Span>& span,
              const Error* failure);

}  // namespace marty::messaging::detail
