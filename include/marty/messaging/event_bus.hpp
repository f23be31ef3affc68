#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>

#include "marty/messaging/backend.hpp"
#include "marty/messaging/dead_letters.hpp"
#include "marty/messaging/message.hpp"
#include "marty/messaging/metrics.hpp"
#include "marty/messaging/pattern_config.hpp"
#include "marty/messaging/publisher.hpp"
#include "marty/messaging/router.hpp"
#include "marty/messaging/tracing.hpp"
#include "marty/messaging/types.hpp"
#include "marty/messaging/wire.hpp"

namespace marty::messaging {

/// Identifies a registration made by subscribe_to_events, handle_commands, handle_queries or
/// process_stream; pass it to unsubscribe().
using SubscriptionId = std::uint64_t;

namespace detail {
struct EventBusState;
}  // namespace detail

/// Handles an event or a command. Success acks the message; an error or an exception nacks it,
/// and it is delivered again after the pattern's backoff, up to its retry_count; then it is
/// dead-lettered. An `invalid_argument` or `data_loss` error means the message itself is bad:
/// it is dead-lettered at once, without retries.
using MessageHandler = std::function<asio::awaitable<Result<void>>(Message)>;
/// Handles a query: the value is the reply; an error (or exception) reaches the caller as an
/// error with the same code and message.
using QueryHandler = std::function<asio::awaitable<Result<Json>>(Message)>;
/// Processes a batch of stream messages in order. Success acks the whole batch; failure nacks it.
using BatchProcessor = std::function<asio::awaitable<Result<void>>(std::vector<Message>)>;

struct EventBusOptions {
  /// This service's name: the `source` of what it publishes.
  std::string service_name = "marty-service";
  /// How long stop() waits for in-flight handlers when called without a timeout.
  std::chrono::milliseconds drain_timeout{30'000};
  /// Receives the bus's spans (publishing, handling). The default logs each at debug level;
  /// null drops them. Trace context travels in the messages either way.
  std::shared_ptr<Tracer> tracer = make_logging_tracer();
  /// A circuit breaker per backend for sending (events, commands, queries, streams, requeues):
  /// after `failure_threshold` sends in a row fail for want of the broker (`unavailable`,
  /// `deadline_exceeded`), sends to that backend fail at once with `unavailable` for
  /// `open_for` instead of each waiting out its timeout; then one send probes, and its success
  /// closes the circuit. Other errors (a bad message, no receiver) count neither way.
  /// failure_threshold 0 (the default): no breaker.
  struct BackendCircuitBreaker {
    std::size_t failure_threshold = 0;
    std::chrono::milliseconds open_for{5'000};
  } backend_circuit_breaker;
  /// How often each running subscription of a consumer group samples the group's lag
  /// (Backend::consumer_lag) into the `marty_consumer_lag_messages` gauge, on backends with
  /// capabilities().consumer_lag. Each sample is one small request to the broker. 0: never.
  std::chrono::milliseconds consumer_lag_interval{10'000};
  /// How long start() keeps trying a backend whose connection fails for a reason that may pass
  /// (a retryable error: the broker is down, restarting or still loading), with backoff from
  /// 100 ms to 2 s, before it gives up. 0 (the default): the first failure fails start().
  std::chrono::milliseconds connect_wait{0};
  /// Received messages whose payload is the Python original's `{"data", "metadata"}` envelope
  /// (a JSON object with exactly those members, naming a message_type or message_id) are
  /// unwrapped: the handler sees the envelope's data, id, type, correlation and causation ids,
  /// time, ttl, priority and headers, and a query is answered in the envelope. Off: such
  /// payloads reach handlers as they are. (Sending in the envelope is per route: route().)
  bool python_envelope_on_receipt = true;
};

/// Not an aggregate on purpose (GCC 12 coroutine bug; see MessageMetadata).
struct StreamOptions {
  StreamOptions() {}  // NOLINT(modernize-use-equals-default)
  StreamOptions(std::size_t batch, std::chrono::milliseconds wait, StartPosition from)
      : batch_size(batch), max_wait(wait), start(from) {}

  /// A batch is handed over when it holds this many messages...
  std::size_t batch_size = 100;
  /// ...or when its first message has waited this long, whichever comes first.
  std::chrono::milliseconds max_wait{1'000};
  /// Where a new consumer group starts (an existing group resumes where it stopped).
  StartPosition start = StartPosition::new_messages();
};

/// How a registration runs its handler. Not an aggregate on purpose (GCC 12 coroutine bug; see
/// MessageMetadata).
struct HandlerOptions {
  HandlerOptions() {}  // NOLINT(modernize-use-equals-default)

  /// Handler calls in flight at once, per subscribed subject. 1: one at a time, in delivery
  /// order. More: a slow message no longer holds back the others (the broker's prefetch bounds
  /// how many it hands out at once).
  std::size_t concurrency = 1;
  /// With concurrency above 1: messages with the same `partition_key` are still handled one at
  /// a time, in the order they were delivered (messages without a key are not held back).
  bool ordered_by_key = true;
  /// A handler call still running after this fails with `deadline_exceeded` (so its message
  /// is retried, then dead-lettered, like any failure) and is cancelled: its next wait on an
  /// asio operation ends with `operation_aborted`. A handler that blocks without waiting
  /// cannot be stopped; it runs on, and its outcome is ignored. 0: no limit.
  std::chrono::milliseconds timeout{0};
  /// Stops taking messages while what the handler depends on is down, instead of burning
  /// every message's retries against it. After `failure_threshold` failed calls in a row (a
  /// bad message, `invalid_argument` or `data_loss`, does not count) the circuit opens: no
  /// deliveries are taken for `open_for` (they wait at the broker, their attempts untouched);
  /// then one is let through, and its success closes the circuit, its failure opens it again.
  /// One circuit per registration, shared by its subjects. failure_threshold 0: no breaker.
  struct CircuitBreaker {
    std::size_t failure_threshold = 0;
    std::chrono::milliseconds open_for{30'000};
  } circuit_breaker;
};

/// The one API for every pattern, over any registered backends.
///
/// Lifecycle: configure (register_backend, set_default_backend, route, update_pattern_config),
/// then start(); publish and subscribe; then stop(). Configuration after start() fails with
/// `failed_precondition`, as does messaging before start() or after stop().
///
/// Threading: every member may be called from any thread. Handlers run on the bus's executor,
/// never on a client library's thread; a subscription runs one handler call at a time, so
/// messages of a key are handled in order. The handler object lives until its last call ends.
///
/// A handler must not await stop() or the unsubscribe() of its own subscription: both wait for
/// that very handler, so they would return `deadline_exceeded` only after the drain timeout.
/// co_spawn them instead. While stop() drains, handlers may still publish, send and query.
class UnifiedEventBus : public std::enable_shared_from_this<UnifiedEventBus> {
 public:
  /// Use create_unified_event_bus().
  UnifiedEventBus(asio::any_io_executor executor, EventBusOptions options);
  ~UnifiedEventBus();
  UnifiedEventBus(const UnifiedEventBus&) = delete;
  UnifiedEventBus& operator=(const UnifiedEventBus&) = delete;

  // ---- configuration (before start) ----

  /// Adds or replaces the backend of `type`. Registration order is the fallback preference.
  Result<void> register_backend(MessageBackendType type, std::shared_ptr<Backend> backend);
  /// Preferred backend when no route matches; `not_found` when `type` is not registered.
  Result<void> set_default_backend(MessageBackendType type);
  /// Replaces a pattern's config; start() refuses a config no registered backend can serve.
  Result<void> update_pattern_config(MessagingPattern pattern, MessagingPatternConfig config);
  /// Routes message types matching `type_glob` ("orders.*") to `backend`; with
  /// WireFormat::python_envelope, what this route sends is wrapped in the Python original's
  /// envelope, for consumers that are Python services.
  Result<void> route(std::string type_glob, MessageBackendType backend,
                     std::set<MessagingPattern> patterns = {},
                     WireFormat format = WireFormat::cloudevents);

  MessagingPatternConfig pattern_config(MessagingPattern pattern) const;
  /// The backend a message of this type and pattern goes to (after start()).
  Result<MessageBackendType> backend_for(std::string_view message_type,
                                         MessagingPattern pattern) const;
  /// The backend registered for `type`, or null.
  std::shared_ptr<Backend> backend(MessageBackendType type) const;
  /// What this bus has counted (prometheus_text() for a scrape). Lives as long as the bus.
  MessagingMetrics& metrics() const noexcept;

  // ---- lifecycle ----

  /// Registers the embedded memory backend if none was registered, connects every backend,
  /// and checks routes. Fails, naming the backend or route and why, if any of that fails
  /// (backends already connected are closed again).
  asio::awaitable<Result<void>> start();
  /// Stops intake on every subscription, waits for in-flight handlers up to `drain_timeout`,
  /// then closes the backends (flushing publishes). `deadline_exceeded` if handlers were still
  /// running at the deadline (their messages stay unacknowledged, so they are redelivered).
  asio::awaitable<Result<void>> stop(std::optional<std::chrono::milliseconds> drain_timeout = {});
  bool running() const noexcept;

  // ---- sending ----

  /// Fan-out on `events.<event_type>`. `metadata` is optional; message_type, message_id, time
  /// and source are filled in when empty.
  asio::awaitable<Result<void>> publish_event(std::string event_type, Json data,
                                              MessageMetadata metadata = {});
  /// Same, with a prepared message (raw bytes allowed).
  asio::awaitable<Result<void>> publish_event(std::string event_type, Message message);
  /// Point-to-point on `commands.<service>.<type>`: one instance of the service handles it.
  /// `not_found` when no instance of the service listens (where the backend can tell).
  asio::awaitable<Result<void>> send_command(std::string command_type, Json data,
                                             std::string target_service,
                                             MessageMetadata metadata = {});
  /// Request/response on `queries.<service>.<type>`. Returns the handler's value; the
  /// handler's error with its code; or `deadline_exceeded` when no reply comes within
  /// `timeout` (default: the request_response pattern's timeout).
  asio::awaitable<Result<Json>> query(std::string query_type, Json data, std::string target_service,
                                      std::optional<std::chrono::milliseconds> timeout = {},
                                      MessageMetadata metadata = {});
  /// Appends events to a stream, in order, each with `partition_key` (when non-empty), as one
  /// batch awaiting one confirmation. On failure, the error says how many of the batch were
  /// confirmed appended and the first failure (events after a failed one may still have been
  /// appended where the backend pipelines them).
  asio::awaitable<Result<void>> stream_events(std::string stream, std::vector<Json> events,
                                              std::string partition_key = {});
  asio::awaitable<Result<void>> stream_events(std::string stream, std::vector<Message> events);

  // ---- sending many, without waiting for each (see Publisher) ----

  /// A Publisher of events of `event_type` (on `events.<event_type>`), routed as publish_event
  /// would route them. Only while the bus runs; `failed_precondition` before start().
  Result<std::shared_ptr<Publisher>> publisher(std::string event_type,
                                               PublisherOptions options = {});
  /// A Publisher of commands of `command_type` to `target_service`, as send_command sends
  /// them (`not_found` in a send's confirmation when no instance of the service listens).
  Result<std::shared_ptr<Publisher>> command_publisher(std::string command_type,
                                                       std::string target_service,
                                                       PublisherOptions options = {});
  /// A Publisher appending to `stream`, as stream_events appends (a message's own type is
  /// kept; the stream's name is the type of one without).
  Result<std::shared_ptr<Publisher>> stream_publisher(std::string stream,
                                                      PublisherOptions options = {});

  // ---- receiving ----

  /// Handles `events.<type>` for each type (wildcards `*` and `>` allowed where the backend
  /// supports them). With a consumer group, members of the group share the events.
  asio::awaitable<Result<SubscriptionId>> subscribe_to_events(std::vector<std::string> event_types,
                                                              MessageHandler handler,
                                                              std::string consumer_group = {});
  /// Same, with concurrency, per-key order and a timeout (HandlerOptions).
  asio::awaitable<Result<SubscriptionId>> subscribe_to_events(std::vector<std::string> event_types,
                                                              MessageHandler handler,
                                                              std::string consumer_group,
                                                              HandlerOptions options);
  /// Handles `commands.<service>.<type>`; instances of one service compete for commands.
  asio::awaitable<Result<SubscriptionId>> handle_commands(std::vector<std::string> command_types,
                                                          MessageHandler handler,
                                                          std::string service_name);
  asio::awaitable<Result<SubscriptionId>> handle_commands(std::vector<std::string> command_types,
                                                          MessageHandler handler,
                                                          std::string service_name,
                                                          HandlerOptions options);
  /// Answers `queries.<service>.<type>`; instances of one service share the queries.
  asio::awaitable<Result<SubscriptionId>> handle_queries(std::vector<std::string> query_types,
                                                         QueryHandler handler,
                                                         std::string service_name);
  /// Same, with HandlerOptions: queries answered concurrently, a timeout (the reply is then
  /// `deadline_exceeded`), a circuit breaker (an open circuit takes no queries: they wait at the
  /// broker, and their callers' deadlines may pass).
  asio::awaitable<Result<SubscriptionId>> handle_queries(std::vector<std::string> query_types,
                                                         QueryHandler handler,
                                                         std::string service_name,
                                                         HandlerOptions options);
  /// Consumes a stream in batches as consumer group `consumer_group`.
  asio::awaitable<Result<SubscriptionId>> process_stream(std::string stream,
                                                         BatchProcessor processor,
                                                         std::string consumer_group,
                                                         StreamOptions options = {});
  /// Stops a registration: no new messages; waits for its in-flight handler calls.
  asio::awaitable<Result<void>> unsubscribe(SubscriptionId id);

  // ---- dead letters (backends with capabilities().inspectable_dead_letters) ----

  /// The dead letters of `filter.subject` that match the filter, oldest first, from every
  /// backend of the bus that keeps them. `invalid_argument` without a subject.
  asio::awaitable<Result<std::vector<DeadLetter>>> list_dead_letters(DeadLetterFilter filter);
  /// Publishes each matching dead letter again, as it was first published (DeadLetter::original,
  /// on the backend that kept it), then removes it: at least once, never lost. Returns how
  /// many were requeued; an error says how many were requeued before it.
  asio::awaitable<Result<std::size_t>> requeue_dead_letters(DeadLetterFilter filter);
  /// Deletes the matching dead letters for good; returns how many.
  asio::awaitable<Result<std::size_t>> purge_dead_letters(DeadLetterFilter filter);

  // ---- consumer lag (backends with capabilities().consumer_lag) ----

  /// How many messages wait for consumer group `group` on `subject` ("events.<type>" with the
  /// group's name, "commands.<service>.<type>" with the service's, or a stream's name): stored
  /// for the group and not yet acknowledged by it (RabbitMQ: not yet delivered), whether or not
  /// a member is running, on the backend the subject's type is routed to. `not_found` when the
  /// group does not exist there; `unimplemented` when that backend cannot tell;
  /// `invalid_argument` for a query subject, a wildcard or an empty group.
  asio::awaitable<Result<std::uint64_t>> consumer_lag(std::string subject, std::string group);

  asio::any_io_executor get_executor() const { return executor_; }

 private:
  std::shared_ptr<detail::EventBusState> impl_;
  asio::any_io_executor executor_;
};

/// Creates a bus whose handlers run on `executor`. With no backend registered before start(),
/// it runs on the embedded memory backend.
std::shared_ptr<UnifiedEventBus> create_unified_event_bus(asio::any_io_executor executor,
                                                          EventBusOptions options = {});

}  // namespace marty::messaging
