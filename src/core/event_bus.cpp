#include "marty/messaging/event_bus.hpp"

#include "collected_completions.hpp"
#include "dead_letter_admin.hpp"
#include "held_deliveries.hpp"
#include "publisher_state.hpp"
#include "trace_spans.hpp"

#include <algorithm>
#include <deque>
#include <limits>
#include <map>
#include <mutex>
#include <numeric>
#include <unordered_map>

#include <spdlog/spdlog.h>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/post.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include "marty/messaging/codec.hpp"
#include "marty/messaging/detail/async_signal.hpp"
#include "marty/messaging/detail/backoff.hpp"
#include "marty/messaging/detail/circuit_breaker.hpp"
#include "marty/messaging/detail/log.hpp"
#include "marty/messaging/detail/pending_replies.hpp"
#include "marty/messaging/detail/sleep.hpp"
#include "marty/messaging/detail/string_map.hpp"
#include "marty/messaging/detail/sync_handler.hpp"
#include "marty/messaging/memory_backend.hpp"
#include "marty/messaging/subject.hpp"

namespace marty::messaging {
namespace {

using detail::AsyncSignal;
using detail::sleep_for;
using SignalPtr = std::shared_ptr<AsyncSignal>;
using std::chrono::milliseconds;

constexpr milliseconds kBackendCloseGrace{5'000};
constexpr milliseconds kReceiveErrorBackoff{200};

using marty::messaging::detail::logger;

// Settling (ack, nack, term) can fail when the broker connection dropped meanwhile; the broker
// then redelivers, so the failure is reported, not retried.
void warn_if_failed(const Result<void>& result, std::string_view what, const std::string& subject) {
  if (!result) logger().warn("{} on {} failed: {}", what, subject, result.error().describe());
}

Error not_running(std::string_view operation) {
  return Error(errc::failed_precondition,
               std::string(operation) + ": the bus is not running (call start() first)");
}

using headers::kReplyToken;
// A query handler's replies are counted under "reply:<query subject>", not their address.
constexpr std::string_view kRepliesCountedAs = "reply:";
static_assert(kReplyToken == detail::PendingReplies<int>::kTokenHeader);

// A reply waited for by query() over a backend without native request/reply.
struct PendingReply {
  SignalPtr signal = AsyncSignal::create();
  std::optional<Message> reply;
  bool cancelled = false;
};

// The bus's private reply subject on one backend, and the queries waiting on it.
struct ReplyInbox {
  std::string subject;
  std::mutex mutex;
  detail::PendingReplies<PendingReply> pending;  // by reply token
  bool closed = false;

  void cancel_all() {
    std::lock_guard lock(mutex);
    closed = true;
    pending.for_each([](PendingReply& waiter) {
      waiter.cancelled = true;
      waiter.signal->notify();
    });
  }
};

}  // namespace

// One backend subscription and the coroutine that drains it.
struct Worker {
  std::shared_ptr<Backend> backend;
  std::shared_ptr<Subscription> subscription;
  std::string subject;
  std::string replies_counted_as;  // "reply:<subject>": what a query handler's replies count as
  std::string group;  // the consumer group or service; empty for a private subscription
  MessagingPattern pattern = MessagingPattern::pub_sub;
  MessagingPatternConfig config;
  SignalPtr registration_done;  // notified when this worker ends
  std::atomic<bool> finished{false};
  std::shared_ptr<MessagingMetrics> metrics;  // keeps `counters` alive
  MessagingMetrics::SubscriptionCounters* counters = nullptr;
  std::shared_ptr<Tracer> tracer;
  HandlerOptions handler_options;
  std::shared_ptr<detail::CircuitBreaker> breaker;  // null: none (shared by a registration)
  bool unwrap_envelopes = true;                     // EventBusOptions::python_envelope_on_receipt
  std::atomic<bool> closing{false};
  SubscriptionSpec spec;  // what it subscribed to (for consumer_lag)
  // What its handlers hold, released at the drain deadline.
  std::shared_ptr<detail::HeldDeliveries> held = std::make_shared<detail::HeldDeliveries>();
  // Coroutines still running for this worker: its intake loop and, where the group's lag is
  // sampled, the sampler. The worker has finished when both have ended.
  std::atomic<int> tasks{1};
  std::atomic<bool> intake_ended{false};

  // Stops intake: the subscription ends, and a wait for the circuit ends with it.
  void close() {
    closing = true;
    subscription->close();
  }

  // When each message now waiting for a redelivery first failed here, for the dead letter's
  // first-failure time. Best effort: a redelivery that goes to another instance starts afresh
  // there, and the oldest entries are forgotten beyond kMaxTrackedFailures.
  std::mutex failures_mutex;
  std::map<std::string, Clock::time_point, std::less<>> first_failures;  // by message id

  static constexpr std::size_t kMaxTrackedFailures = 10'000;

  void note_failure(std::string_view message_id, Clock::time_point when) {
    std::lock_guard lock(failures_mutex);
    if (first_failures.size() >= kMaxTrackedFailures && !first_failures.contains(message_id)) {
      first_failures.erase(
          std::min_element(first_failures.begin(), first_failures.end(),
                           [](const auto& a, const auto& b) { return a.second < b.second; }));
    }
    first_failures.emplace(std::string(message_id), when);
  }
  // Forgets `message_id` and returns when it first failed (or `otherwise`).
  Clock::time_point take_first_failure(std::string_view message_id, Clock::time_point otherwise) {
    std::lock_guard lock(failures_mutex);
    auto it = first_failures.find(message_id);
    if (it == first_failures.end()) return otherwise;
    const Clock::time_point first = it->second;
    first_failures.erase(it);
    return first;
  }

  void count_delivery(const Delivery& delivery) const {
    counters->delivered.fetch_add(1, std::memory_order_relaxed);
    if (delivery.attempt() > 1) counters->redelivered.fetch_add(1, std::memory_order_relaxed);
  }
  void count(std::atomic<std::uint64_t> MessagingMetrics::SubscriptionCounters::*counter,
             std::uint64_t n = 1) const {
    (counters->*counter).fetch_add(n, std::memory_order_relaxed);
  }
};
using WorkerPtr = std::shared_ptr<Worker>;

struct Registration {
  std::vector<WorkerPtr> workers;
  SignalPtr done = AsyncSignal::create();
};

struct detail::EventBusState {
  enum class State { configuring, starting, running, stopping };

  asio::any_io_executor executor;
  EventBusOptions options;
  mutable std::mutex mutex;
  State state = State::configuring;
  std::vector<std::pair<MessageBackendType, std::shared_ptr<Backend>>> backends;
  std::optional<MessageBackendType> default_backend;
  std::map<MessagingPattern, MessagingPatternConfig> configs;
  std::set<MessagingPattern> configured;  // patterns whose config the user set
  Router router;
  // Backend chosen per (pattern, message type); configuration is frozen while running, so the
  // cache is filled lazily and cleared at start(). Guarded by `mutex`.
  struct Selection {
    MessageBackendType backend;
    WireFormat format;
  };
  mutable std::map<MessagingPattern, detail::StringMap<Selection>> selections;
  std::map<SubscriptionId, std::shared_ptr<Registration>> registrations;
  SubscriptionId next_id = 1;
  std::map<const Backend*, std::shared_ptr<ReplyInbox>> reply_inboxes;
  std::vector<WorkerPtr> inbox_workers;
  SignalPtr worker_finished = AsyncSignal::create();
  std::string instance_id = make_uuid_v7();
  std::shared_ptr<MessagingMetrics> metrics = std::make_shared<MessagingMetrics>();

  // The send circuit of each backend (EventBusOptions::backend_circuit_breaker), made by
  // start() before the bus runs and only read while it runs.
  std::map<const Backend*, std::shared_ptr<detail::CircuitBreaker>> send_circuits;

  detail::CircuitBreaker* send_circuit(const Backend& backend) const {
    if (send_circuits.empty()) return nullptr;
    auto it = send_circuits.find(&backend);
    return it == send_circuits.end() ? nullptr : it->second.get();
  }

  // Why a send to `subject` fails at once: the backend's send circuit is open. Counted.
  std::optional<Error> circuit_refusal(const Backend& backend, detail::CircuitBreaker* circuit,
                                       std::string_view subject) const {
    if (circuit == nullptr) return std::nullopt;
    const auto wait = circuit->admit(SteadyClock::now());
    if (wait <= SteadyClock::duration::zero()) return std::nullopt;
    count_publish(backend, subject, false);
    return Error(errc::unavailable,
                 "not sent to " + std::string(subject) + ": the circuit of backend " +
                     std::string(backend.name()) + " is open after " +
                     std::to_string(options.backend_circuit_breaker.failure_threshold) +
                     " failed send(s) in a row; it is tried again in " +
                     std::to_string(std::chrono::ceil<milliseconds>(wait).count()) + " ms",
                 std::string(backend.name()));
  }

  // An at-least-once send refused for want of the broker (`unavailable`: the broker is down
  // or restarting) rides through the outage: it is sent again, the same message with the
  // same id, with backoff until its deadline, so that a broker or consumer de-duplicating by
  // id keeps one copy. So is one whose acknowledgement did not come in time (it may have been
  // lost with the connection) on a broker that drops a repeated id itself (JetStream). Not
  // at most once, without a deadline, or with a send circuit (whose point is to fail at once).
  static bool may_resend(const PublishOptions& publish_options,
                         const detail::CircuitBreaker* circuit) {
    return circuit == nullptr && publish_options.guarantee != DeliveryGuarantee::at_most_once &&
           publish_options.deadline != SteadyClock::time_point::max();
  }
  static bool worth_resending(const Backend& backend, const Error& error) {
    return error.is(errc::unavailable) ||
           (backend.capabilities().deduplicates_by_id && error.is(errc::deadline_exceeded));
  }
  static constexpr milliseconds kFirstResendPause{100};
  static constexpr milliseconds kLongestResendPause{2'000};

  // A send has ended: its span, its count, its circuit.
  void sent(const Backend& backend, std::string_view subject, std::optional<Span>& span,
            detail::CircuitBreaker* circuit, const Result<void>& published) const {
    detail::end_span(options_tracer(), span, published ? nullptr : &published.error());
    count_publish(backend, subject, published.has_value());
    if (circuit != nullptr) record_send(*circuit, backend, published);
  }

  // Publishes `message` as the bus's producer span, counted, through the backend's circuit.
  // `counted_as`: the subject its metrics are counted under, when not its own (a reply's
  // address is new for every query: counting by it would grow the metrics without bound); it
  // outlives the call.
  asio::awaitable<Result<void>> publish_traced(std::shared_ptr<Backend> backend, Message message,
                                               PublishOptions publish_options,
                                               const std::string* counted_as = nullptr) const {
    detail::CircuitBreaker* circuit = send_circuit(*backend);
    if (auto refused = circuit_refusal(
            *backend, circuit, counted_as ? std::string_view(*counted_as) : message.subject())) {
      co_return *refused;
    }
    auto span = detail::start_producer_span(message, backend->name(), options_tracer());
    // A backend that can take the message at once (the memory backend) does so through
    // submit(), with no coroutine of its own; the others are awaited through publish().
    OutboundRecord record{std::move(message), 0, std::nullopt};
    const std::string_view subject = record.message.subject();  // record.message is not changed
    const std::string_view counted = counted_as ? std::string_view(*counted_as) : subject;
    backend->submit(std::span<OutboundRecord>(&record, 1), publish_options, nullptr);
    Result<void> published = ok();
    if (record.outcome) {
      published = std::move(*record.outcome);
    } else {
      published = co_await backend->publish(record.message, publish_options);
    }
    if (!published && may_resend(publish_options, circuit) &&
        worth_resending(*backend, published.error())) {
      published = co_await resend(*backend, record.message, publish_options, std::move(published));
    }
    sent(*backend, counted, span, circuit, published);
    co_return published;
  }

  // Sends `message` again, with growing pauses, while the backend refuses it for want of the
  // broker and the deadline allows; returns the last outcome. Its own coroutine: its locals
  // kept out of publish_traced's frame keep that frame within asio's per-thread recycling
  // (1,020 bytes), so that a send that needs no resend allocates no frame.
  asio::awaitable<Result<void>> resend(Backend& backend, const Message& message,
                                       const PublishOptions& publish_options,
                                       Result<void> published) const {
    milliseconds pause = kFirstResendPause;
    while (!published && worth_resending(backend, published.error()) &&
           SteadyClock::now() + pause < publish_options.deadline) {
      logger().debug("send on {} refused ({}); again in {} ms", message.subject(),
                     published.error().describe(), pause.count());
      co_await sleep_for(pause);
      pause = std::min(pause * 2, kLongestResendPause);
      published = co_await backend.publish(message, publish_options);
    }
    co_return published;
  }

  // publish_traced for many messages at once: one submit() of them all (the memory backend
  // takes them under one lock), their confirmations awaited together, those refused for want
  // of the broker sent again together. Returns each message's outcome, in order.
  asio::awaitable<std::vector<Result<void>>> publish_batch_traced(
      std::shared_ptr<Backend> backend, std::vector<Message> messages,
      PublishOptions publish_options) const {
    std::vector<Result<void>> outcomes(messages.size(), ok());
    if (messages.empty()) co_return outcomes;
    detail::CircuitBreaker* circuit = send_circuit(*backend);
    if (auto refused = circuit_refusal(*backend, circuit, messages.front().subject())) {
      for (std::size_t i = 1; i < messages.size(); ++i)
        count_publish(*backend, messages[i].subject(), false);
      std::fill(outcomes.begin(), outcomes.end(), Result<void>(*refused));
      co_return outcomes;
    }
    std::vector<std::optional<Span>> spans;
    spans.reserve(messages.size());
    for (Message& message : messages) {
      spans.push_back(detail::start_producer_span(message, backend->name(), options_tracer()));
    }
    std::vector<std::size_t> pending(messages.size());
    std::iota(pending.begin(), pending.end(), std::size_t{0});
    const bool resend = may_resend(publish_options, circuit);
    milliseconds pause = kFirstResendPause;
    while (true) {
      std::vector<OutboundRecord> records;
      records.reserve(pending.size());
      for (const std::size_t index : pending) {
        records.push_back(OutboundRecord{messages[index], index, std::nullopt});
      }
      backend->submit(records, publish_options, nullptr);
      std::vector<OutboundRecord> waiting;
      for (OutboundRecord& record : records) {
        if (record.outcome) {
          outcomes[record.sequence] = std::move(*record.outcome);
        } else {
          waiting.push_back(std::move(record));
        }
      }
      if (!waiting.empty()) {
        auto completions = std::make_shared<detail::CollectedCompletions>(executor, waiting.size());
        backend->submit(waiting, publish_options, completions);
        for (Completion& completion : co_await completions->all()) {
          outcomes[completion.sequence] = std::move(completion.result);
        }
      }
      std::vector<std::size_t> again;
      for (const std::size_t index : pending) {
        if (!outcomes[index] && worth_resending(*backend, outcomes[index].error())) {
          again.push_back(index);
        }
      }
      if (!resend || again.empty() || SteadyClock::now() + pause >= publish_options.deadline) {
        break;
      }
      logger().debug("{} send(s) on {} refused ({}); again in {} ms", again.size(),
                     messages.front().subject(), outcomes[again.front()].error().describe(),
                     pause.count());
      co_await sleep_for(pause);
      pause = std::min(pause * 2, kLongestResendPause);
      pending = std::move(again);
    }
    for (std::size_t i = 0; i < messages.size(); ++i) {
      sent(*backend, messages[i].subject(), spans[i], circuit, outcomes[i]);
    }
    co_return outcomes;
  }

  void record_send(detail::CircuitBreaker& circuit, const Backend& backend,
                   const Result<void>& published) const {
    if (published) {
      circuit.record(true, SteadyClock::now());
    } else if (published.error().is(errc::unavailable) ||
               published.error().is(errc::deadline_exceeded)) {
      if (circuit.record(false, SteadyClock::now())) {
        logger().warn(
            "circuit of backend {} opened: {} send(s) in a row failed, last: {}; sends "
            "fail at once for {} ms",
            backend.name(), options.backend_circuit_breaker.failure_threshold,
            published.error().describe(), circuit.open_for().count());
      }
    } else {
      circuit.record_neutral();
    }
  }
  const std::shared_ptr<Tracer>& options_tracer() const { return options.tracer; }

  // Counts one publish (or its failure) of `subject` on `backend`.
  void count_publish(const Backend& backend, std::string_view subject, bool published) const {
    auto& counters = metrics->publisher(backend.name(), subject);
    (published ? counters.published : counters.failed).fetch_add(1, std::memory_order_relaxed);
  }

  WorkerPtr make_worker(std::shared_ptr<Backend> backend,
                        std::shared_ptr<Subscription> subscription, std::string subject,
                        const std::string& group) const {
    auto worker = std::make_shared<Worker>();
    worker->counters = &metrics->subscription(backend->name(), subject, group);
    worker->metrics = metrics;
    worker->tracer = options.tracer;
    worker->backend = std::move(backend);
    worker->subscription = std::move(subscription);
    worker->subject = std::move(subject);
    worker->replies_counted_as = std::string(kRepliesCountedAs) + worker->subject;
    worker->group = group;
    worker->unwrap_envelopes = options.python_envelope_on_receipt;
    return worker;
  }

  EventBusState(asio::any_io_executor ex, EventBusOptions opts)
      : executor(std::move(ex)), options(std::move(opts)) {
    for (MessagingPattern pattern : kAllPatterns)
      configs[pattern] = default_pattern_config(pattern);
  }

  BackendTable table() const {
    BackendTable out;
    for (const auto& [type, backend] : backends) out.emplace_back(type, &backend->capabilities());
    return out;
  }

  std::shared_ptr<Backend> find_backend(MessageBackendType type) const {
    for (const auto& [known, backend] : backends) {
      if (known == type) return backend;
    }
    return nullptr;
  }

  struct Target {
    std::shared_ptr<Backend> backend;
    // Points into `configs`, which does not change while the bus runs (configuration is
    // refused after start()); a target is used only during one operation.
    const MessagingPatternConfig* pattern_config;
    WireFormat format = WireFormat::cloudevents;  // of the route that chose the backend
    const MessagingPatternConfig& config() const { return *pattern_config; }

    // `message` as this route writes it (wrapped in the Python envelope, or as it is).
    Result<Message> for_the_wire(Message message) const {
      return detail::for_the_wire(std::move(message), format);
    }
  };

  enum class Use { send, subscribe };

  // Resolves the backend for a message. Sending is allowed while stop() drains, so that
  // handlers finishing their work can still publish and query; subscribing is not. For sends,
  // the type is validated (naming it `what`) when it is first seen: a cached type was valid.
  Result<Target> target(std::string_view operation, std::string_view message_type,
                        MessagingPattern pattern, Use use = Use::send,
                        std::string_view what = "message type") const {
    std::lock_guard lock(mutex);
    const bool open = state == State::running || (use == Use::send && state == State::stopping);
    if (!open) return not_running(operation);
    const MessagingPatternConfig& config = configs.at(pattern);
    auto& cache = selections[pattern];
    if (auto hit = cache.find(message_type); hit != cache.end()) {
      return Target{find_backend(hit->second.backend), &config, hit->second.format};
    }
    if (use == Use::send) {
      if (auto valid = subject::validate_name(message_type, what); !valid) {
        return std::move(valid).error();
      }
    }
    WireFormat format = WireFormat::cloudevents;
    auto type = router.select(message_type, config, table(), default_backend, &format);
    if (!type) return std::move(type).error();
    if (cache.size() >= 10'000) cache.clear();  // types are open-ended; keep the cache bounded
    cache.emplace(std::string(message_type), Selection{*type, format});
    return Target{find_backend(*type), &config, format};
  }

  // A Publisher on the route `message_type` takes for `pattern`, sending on `subject`.
  Result<std::shared_ptr<Publisher>> make_publisher(std::string_view operation,
                                                    std::string_view message_type,
                                                    MessagingPattern pattern, std::string_view what,
                                                    std::string subject,
                                                    PublisherOptions publisher_options) const;

  void stamp(Message& message, std::string_view type, std::string_view subject,
             bool correlate = false) const {
    message.stamp(type, options.service_name, subject, correlate);
  }
  void stamp(Message& message, std::string_view type, const subject::Pieces& subject,
             bool correlate = false) const {
    message.stamp(type, options.service_name, subject, correlate);
  }

  std::shared_ptr<ReplyInbox> inbox_for(const Backend* backend) const {
    std::lock_guard lock(mutex);
    auto it = reply_inboxes.find(backend);
    return it == reply_inboxes.end() ? nullptr : it->second;
  }

  // The worker's intake loop has ended (the sampler notices and ends too).
  void worker_ended(Worker& worker) {
    worker.intake_ended = true;
    task_ended(worker);
  }
  void task_ended(Worker& worker) {
    if (worker.tasks.fetch_sub(1) != 1) return;
    worker.finished = true;
    if (worker.registration_done) worker.registration_done->notify();
    worker_finished->notify();
  }
};

namespace {

using Impl = detail::EventBusState;
using ImplPtr = std::shared_ptr<Impl>;

// What to do with a message whose handling failed: retry later, or dead-letter it. A message
// no handler could take at all (undecodable, a query without a reply address) is
// `unhandleable`: dead-lettered even where the pattern's dead letters are off, since dropping it
// would lose it silently.
asio::awaitable<void> settle_failure(WorkerPtr worker, Delivery& delivery, Error error,
                                     bool unhandleable = false) {
  const MessagingPatternConfig& config = worker->config;
  const bool bad_message = error.is(errc::invalid_argument) || error.is(errc::data_loss);
  const int attempt = delivery.attempt();
  const Clock::time_point now = Clock::now();
  if (!bad_message && attempt <= config.retry_count) {
    worker->note_failure(delivery.message().id(), now);
    const milliseconds delay =
        detail::jittered(config.backoff_for(attempt), config.backoff_jitter,
                         std::string(delivery.message().id()) + "/" + std::to_string(attempt));
    logger().debug("handler for {} failed (attempt {}), redelivery in {} ms: {}", worker->subject,
                   attempt, delay.count(), error.describe());
    auto nacked = co_await delivery.nack(delay);
    warn_if_failed(nacked, "nack", worker->subject);
    worker->count(&MessagingMetrics::SubscriptionCounters::nacked);
    co_return;
  }
  if (config.dead_letter_enabled || unhandleable) {
    Message dead = delivery.message();
    mark_dead_letter(dead, delivery.message().subject(), error.describe(), attempt);
    auto& headers = dead.mutable_metadata().headers;
    headers[std::string(headers::kDeadLetterTime)] = format_rfc3339(now);
    headers[std::string(headers::kDeadLetterFirstFailure)] =
        format_rfc3339(worker->take_first_failure(delivery.message().id(), now));
    headers[std::string(headers::kDeadLetterPattern)] = std::string(to_string(worker->pattern));
    if (!worker->group.empty()) headers[std::string(headers::kDeadLetterGroup)] = worker->group;
    PublishOptions options;
    // A stream keeps dead letters until someone reads them; a topic would drop them.
    options.kind = worker->backend->capabilities().supports(MessagingPattern::streaming)
                       ? DestinationKind::stream
                       : DestinationKind::topic;
    options.pattern = options.kind == DestinationKind::stream ? MessagingPattern::streaming
                                                              : MessagingPattern::pub_sub;
    options.deadline = SteadyClock::now() + config.timeout;
    auto published = co_await worker->backend->publish(std::move(dead), options);
    if (!published) {
      logger().error("cannot dead-letter a message from {} ({}); it stays for redelivery: {}",
                     worker->subject, error.describe(), published.error().describe());
      auto nacked = co_await delivery.nack(config.max_backoff);
      warn_if_failed(nacked, "nack", worker->subject);
      worker->count(&MessagingMetrics::SubscriptionCounters::nacked);
      co_return;
    }
    worker->count(&MessagingMetrics::SubscriptionCounters::dead_lettered);
    logger().warn("message {} from {} dead-lettered to {} after {} attempt(s): {}",
                  delivery.message().id(), worker->subject,
                  dead_letter_subject(delivery.message().subject()), attempt, error.describe());
  } else {
    logger().error("message {} from {} dropped after {} attempt(s) (dead letters disabled): {}",
                   delivery.message().id(), worker->subject, attempt, error.describe());
  }
  auto termed = co_await delivery.term();
  warn_if_failed(termed, "term", worker->subject);
}

// Receives the next delivery; returns null when the subscription is closed. Transient errors
// are logged and retried after a pause, so a flapping broker never ends a subscription.
// A poison delivery (undecodable) never reaches a handler: it is dead-lettered here, the one
// path for every backend. Returns null when it was one.
// Wraps a received delivery for its handler (held until settled, see HeldDeliveries), out of
// the Python original's envelope where it came in one. Sets `poison` when no handler can take
// it: the backend could not decode it, or its envelope is malformed.
std::unique_ptr<Delivery> hold_delivery(Worker& worker, std::unique_ptr<Delivery> received,
                                        std::optional<Error>& poison) {
  // The Python original's envelope is unwrapped here, once for every backend; a malformed one
  // is a poison message like any the backend could not decode.
  std::optional<Message> unwrapped;
  if (const Error* undecodable = received->decode_error()) {
    poison = *undecodable;
  } else if (worker.unwrap_envelopes) {
    if (auto envelope = codec::unwrap_envelope(received->message())) {
      if (*envelope) {
        unwrapped = std::move(**envelope);
      } else {
        poison = std::move(*envelope).error();
      }
    }
  }
  return worker.held->hold(std::move(received), std::move(unwrapped));
}

// Dead-letters a poison delivery (see hold_delivery), the same way for every backend.
asio::awaitable<void> dead_letter_poison(WorkerPtr worker, std::unique_ptr<Delivery> delivery,
                                         Error why) {
  worker->count_delivery(*delivery);
  // The same reason text as a handler's failure would give; data_loss: never retried.
  Error poison = why.is(errc::data_loss) || why.is(errc::invalid_argument)
                     ? std::move(why)
                     : Error(errc::data_loss, "undecodable message: " + why.describe());
  co_await settle_failure(worker, *delivery, std::move(poison), true);
}

asio::awaitable<std::unique_ptr<Delivery>> next_delivery(WorkerPtr worker) {
  while (true) {
    auto received = co_await worker->subscription->receive();
    if (received) {
      std::optional<Error> poison;
      auto delivery = hold_delivery(*worker, std::move(*received), poison);
      if (!poison) co_return delivery;
      co_await dead_letter_poison(worker, std::move(delivery), std::move(*poison));
      continue;
    }
    if (received.error().is(errc::cancelled)) co_return nullptr;
    logger().warn("receive on {} failed, retrying: {}", worker->subject,
                  received.error().describe());
    co_await sleep_for(kReceiveErrorBackoff);
  }
}

// Gives back, for redelivery now, what the unfinished workers' handlers hold (the drain
// deadline passed). Returns how many messages.
asio::awaitable<std::size_t> release_unfinished(std::vector<WorkerPtr> workers) {
  std::size_t released = 0;
  for (const WorkerPtr& worker : workers) {
    if (worker->finished) continue;
    const std::size_t count = co_await worker->held->release_all();
    if (count != 0) {
      logger().warn(
          "{} message(s) of {} released for redelivery: their handlers were still "
          "running at the drain deadline",
          count, worker->subject);
    }
    released += count;
  }
  co_return released;
}

// The Error a handler's exception stands for; call it from a catch (...) block. A
// MessagingException keeps its code (Message::json() on a non-JSON payload is invalid_argument,
// so the message is dead-lettered at once); anything else is internal.
Error error_from_handler_exception() {
  try {
    throw;
  } catch (const MessagingException& e) {
    return e.error();
  } catch (const std::exception& e) {
    return Error(errc::internal, std::string("handler threw: ") + e.what());
  } catch (...) {
    return Error(errc::internal, "handler threw a non-standard exception");
  }
}

// Calls a handler (returning awaitable<Result<R>>); an exception becomes its Error.
template <class R, class Fn, class Arg>
asio::awaitable<Result<R>> call_handler(Fn& handler, Arg argument) {
  try {
    co_return co_await handler(std::move(argument));
  } catch (...) {
    co_return error_from_handler_exception();
  }
}

// A handler call racing its timeout (HandlerOptions::timeout). The call runs as a coroutine of
// its own on a strand, so that the timeout can cancel it from the strand (asio's cancellation
// signals are not thread-safe); `done` wakes the waiter when it ends.
template <class R>
struct TimedCall {
  std::mutex mutex;
  std::optional<Result<R>> outcome;
  SignalPtr done = AsyncSignal::create();
  asio::cancellation_signal cancel;
};

template <class R, class Handler>
asio::awaitable<void> run_timed_call(std::shared_ptr<Handler> handler, Message message,
                                     std::shared_ptr<TimedCall<R>> call) {
  Result<R> outcome = co_await call_handler<R>(*handler, std::move(message));
  {
    std::lock_guard lock(call->mutex);
    call->outcome = std::move(outcome);
  }
  call->done->notify();
}

// Calls `handler` (a MessageHandler, R = void, or a QueryHandler, R = Json) with `timeout`.
template <class R, class Handler>
asio::awaitable<Result<R>> call_with_timeout(std::shared_ptr<Handler> handler, Message message,
                                             milliseconds timeout, std::string subject) {
  auto call = std::make_shared<TimedCall<R>>();
  auto strand = asio::make_strand(co_await asio::this_coro::executor);
  auto slot = asio::bind_cancellation_slot(call->cancel.slot(), asio::detached);
  asio::co_spawn(strand, run_timed_call<R>(std::move(handler), std::move(message), call),
                 std::move(slot));
  const auto deadline = SteadyClock::now() + timeout;
  while (true) {
    {
      std::lock_guard lock(call->mutex);
      if (call->outcome) co_return std::move(*call->outcome);
    }
    if (!co_await call->done->wait(deadline)) break;
  }
  {
    std::lock_guard lock(call->mutex);
    if (call->outcome) co_return std::move(*call->outcome);
  }
  asio::post(strand, [call] { call->cancel.emit(asio::cancellation_type::terminal); });
  co_return Error(errc::deadline_exceeded, "the handler for " + subject + " ran longer than its " +
                                               std::to_string(timeout.count()) +
                                               " ms timeout and was cancelled");
}

// Waits while the worker's circuit is open (in short steps, so that closing is noticed).
asio::awaitable<void> wait_for_circuit(WorkerPtr worker) {
  constexpr SteadyClock::duration kStep = milliseconds(50);
  while (!worker->closing) {
    const auto wait = worker->breaker->admit(SteadyClock::now());
    if (wait <= SteadyClock::duration::zero()) co_return;
    co_await sleep_for(std::chrono::duration_cast<milliseconds>(std::min(wait, kStep)) +
                       milliseconds(1));
  }
}

// Tells the worker's circuit breaker how a handler call ended.
template <class R>
void record_for_circuit(const Worker& worker, const Result<R>& outcome) {
  if (!worker.breaker) return;
  if (outcome) {
    worker.breaker->record(true, SteadyClock::now());
  } else if (outcome.error().is(errc::invalid_argument) || outcome.error().is(errc::data_loss)) {
    worker.breaker->record_neutral();  // the message is bad, not what the handler depends on
  } else if (worker.breaker->record(false, SteadyClock::now())) {
    logger().warn(
        "circuit of the handler for {} opened: it failed {} time(s) in a row, last: {}; "
        "no deliveries taken for {} ms",
        worker.subject, worker.handler_options.circuit_breaker.failure_threshold,
        outcome.error().describe(), worker.breaker->open_for().count());
  }
}

// Handles one delivery and settles it: ack on success, else retry or dead-letter.
asio::awaitable<void> handle_delivery(WorkerPtr worker, std::shared_ptr<MessageHandler> handler,
                                      std::unique_ptr<Delivery> delivery) {
  worker->count_delivery(*delivery);
  Result<void> outcome;
  Message message = delivery->message();
  auto span = detail::start_consumer_span(message, worker->backend->name(), worker->tracer);
  const auto started = SteadyClock::now();
  const milliseconds timeout = worker->handler_options.timeout;
  if (timeout.count() > 0) {
    outcome =
        co_await call_with_timeout<void>(handler, std::move(message), timeout, worker->subject);
  } else {
    try {
      outcome = co_await (*handler)(std::move(message));
    } catch (...) {
      outcome = error_from_handler_exception();
    }
  }
  worker->counters->observe_handler(SteadyClock::now() - started);
  detail::end_span(worker->tracer, span, outcome ? nullptr : &outcome.error());
  record_for_circuit(*worker, outcome);
  if (outcome) {
    if (delivery->attempt() > 1) (void)worker->take_first_failure(delivery->message().id(), {});
    auto acked = co_await delivery->ack();
    warn_if_failed(acked, "ack", worker->subject);
    worker->count(&MessagingMetrics::SubscriptionCounters::acked);
  } else {
    co_await settle_failure(worker, *delivery, std::move(outcome).error());
  }
}

// Handler calls of one worker running at once (HandlerOptions::concurrency), and the
// deliveries waiting behind another of their partition key (ordered_by_key). Used on the
// bus's executor only, under `mutex` (the executor may have several threads).
struct InFlight {
  std::mutex mutex;
  std::size_t count = 0;  // received and not yet settled, waiting ones included
  std::unordered_map<std::string, std::deque<std::unique_ptr<Delivery>>> waiting;  // by busy key
  SignalPtr settled = AsyncSignal::create();  // the worker's loop waits on it
};

// Handles one delivery and settles it (handle_delivery for messages, handle_query for queries).
using DeliveryHandler = std::function<asio::awaitable<void>(WorkerPtr, std::unique_ptr<Delivery>)>;

// Handles `delivery`, then the deliveries that waited behind it for its key, one by one.
asio::awaitable<void> handle_key_in_order(WorkerPtr worker, std::shared_ptr<DeliveryHandler> handle,
                                          std::shared_ptr<InFlight> in_flight,
                                          std::unique_ptr<Delivery> delivery, std::string key) {
  while (delivery) {
    co_await (*handle)(worker, std::move(delivery));
    {
      std::lock_guard lock(in_flight->mutex);
      --in_flight->count;
      if (!key.empty()) {
        auto queue = in_flight->waiting.find(key);
        if (queue->second.empty()) {
          in_flight->waiting.erase(queue);
        } else {
          delivery = std::move(queue->second.front());
          queue->second.pop_front();
        }
      }
    }
    in_flight->settled->notify();
  }
}

// Receives, and hands each delivery to a coroutine of its own while fewer than `concurrency`
// are unsettled; a delivery whose key is busy waits for it. After the subscription closes,
// waits until every delivery taken is settled (stop() drains through this).
asio::awaitable<void> run_concurrent_worker(ImplPtr impl, WorkerPtr worker,
                                            std::shared_ptr<DeliveryHandler> handle) {
  const std::size_t limit = std::max<std::size_t>(1, worker->handler_options.concurrency);
  const bool ordered = worker->handler_options.ordered_by_key;
  auto in_flight = std::make_shared<InFlight>();
  auto executor = co_await asio::this_coro::executor;
  while (true) {
    while (true) {
      {
        std::lock_guard lock(in_flight->mutex);
        if (in_flight->count < limit) break;
      }
      co_await in_flight->settled->wait();
    }
    if (worker->breaker) co_await wait_for_circuit(worker);
    std::unique_ptr<Delivery> delivery = co_await next_delivery(worker);
    if (!delivery) break;
    std::string key = ordered ? std::string(delivery->message().partition_key()) : std::string();
    {
      std::lock_guard lock(in_flight->mutex);
      ++in_flight->count;
      if (!key.empty()) {
        auto placed = in_flight->waiting.try_emplace(key);
        if (!placed.second) {  // the key is busy: this one waits behind it
          placed.first->second.push_back(std::move(delivery));
          continue;
        }
      }
    }
    asio::co_spawn(
        executor,
        handle_key_in_order(worker, handle, in_flight, std::move(delivery), std::move(key)),
        asio::detached);
  }
  while (true) {
    {
      std::lock_guard lock(in_flight->mutex);
      if (in_flight->count == 0) break;
    }
    co_await in_flight->settled->wait();
  }
  impl->worker_ended(*worker);
}

// Deliveries a sequential worker takes at once: enough to spread the cost of a wake-up and a
// lock over many messages, few enough that a batch is handled in well under a millisecond.
constexpr std::size_t kReceiveBatch = 64;

// Calls a synchronous handler (sync_handler) on one delivery, directly: no coroutine frame.
// Traced, timed and counted as handle_delivery does.
Result<void> call_synchronously(const Worker& worker, const detail::SyncMessageCall& call,
                                const Delivery& delivery) {
  worker.count_delivery(delivery);
  // A span writes its context into the message's headers: a copy then (sharing the payload).
  std::optional<Message> traced;
  std::optional<Span> span;
  if (worker.tracer) {
    traced = delivery.message();
    span = detail::start_consumer_span(*traced, worker.backend->name(), worker.tracer);
  }
  const auto started = SteadyClock::now();
  Result<void> outcome;
  try {
    outcome = call.fn(traced ? *traced : delivery.message());
  } catch (...) {
    outcome = error_from_handler_exception();
  }
  worker.counters->observe_handler(SteadyClock::now() - started);
  detail::end_span(worker.tracer, span, outcome ? nullptr : &outcome.error());
  record_for_circuit(worker, outcome);
  return outcome;
}

// The hot path: receive, handle and settle in order, with no timeout. A synchronous handler
// takes deliveries in batches: it is called directly in a loop (no coroutine frame per message)
// and its successes are acked without a coroutine where the backend settles synchronously. A
// coroutine handler, which may suspend for long, takes one delivery at a time, so that it never
// holds back messages other members of its group could handle; so does any handler behind a
// circuit breaker, so that an opening circuit stops intake before the next message.
asio::awaitable<void> run_sequential_worker(ImplPtr impl, WorkerPtr worker,
                                            std::shared_ptr<DeliveryHandler> handle,
                                            const detail::SyncMessageCall* sync) {
  const std::size_t batch_size = sync != nullptr && !worker->breaker ? kReceiveBatch : 1;
  while (true) {
    if (worker->breaker) co_await wait_for_circuit(worker);
    auto received = co_await worker->subscription->receive_batch(batch_size);
    if (!received) {
      if (received.error().is(errc::cancelled)) break;
      logger().warn("receive on {} failed, retrying: {}", worker->subject,
                    received.error().describe());
      co_await sleep_for(kReceiveErrorBackoff);
      continue;
    }
    for (auto& raw : *received) {
      // Stopping: what this batch has not started goes back at once, unsettled (destroyed with
      // the batch), for another instance to take, rather than waiting for the drain deadline.
      if (worker->closing) break;
      std::optional<Error> poison;
      std::unique_ptr<Delivery> delivery = hold_delivery(*worker, std::move(raw), poison);
      if (poison) {
        co_await dead_letter_poison(worker, std::move(delivery), std::move(*poison));
        continue;
      }
      if (sync == nullptr) {
        co_await (*handle)(worker, std::move(delivery));
        continue;
      }
      Result<void> outcome = call_synchronously(*worker, *sync, *delivery);
      if (!outcome) {
        co_await settle_failure(worker, *delivery, std::move(outcome).error());
        continue;
      }
      if (delivery->attempt() > 1) (void)worker->take_first_failure(delivery->message().id(), {});
      Result<void> acked;
      if (delivery->acks_synchronously()) {
        acked = delivery->ack_now();
      } else {
        acked = co_await delivery->ack();
      }
      warn_if_failed(acked, "ack", worker->subject);
      worker->count(&MessagingMetrics::SubscriptionCounters::acked);
    }
  }
  impl->worker_ended(*worker);
}

// Runs a worker of events, commands or queries as its HandlerOptions say.
// `sync`: the synchronous handler behind `handle`, if it is one (called directly on the
// sequential path); it lives as long as `handle`.
asio::awaitable<void> run_delivery_worker(ImplPtr impl, WorkerPtr worker,
                                          std::shared_ptr<DeliveryHandler> handle,
                                          const detail::SyncMessageCall* sync) {
  if (worker->handler_options.concurrency > 1 || worker->handler_options.timeout.count() > 0) {
    co_await run_concurrent_worker(std::move(impl), std::move(worker), std::move(handle));
  } else {
    co_await run_sequential_worker(std::move(impl), std::move(worker), std::move(handle), sync);
  }
}

// The reply of this service (`source`: the responder, not the asker) to `request`, sealed
// (stamped: a new id, now, the request's type) for its reply subject.
Message make_reply(const Message& request, Result<Json> outcome, const std::string& source) {
  MessageMetadata metadata;
  metadata.correlation_id =
      request.correlation_id().empty() ? request.id() : request.correlation_id();
  metadata.causation_id = request.id();
  for (std::string_view carried : {kTraceparentHeader, kTracestateHeader, kReplyToken}) {
    if (auto value = request.header(carried)) metadata.headers.emplace(carried, *value);
  }
  auto stamped = [&](Message reply) {
    reply.stamp(request.type(), source, request.reply_to());
    return reply;
  };
  if (outcome) {
    metadata.headers[std::string(headers::kReplyStatus)] = "ok";
    return stamped(Message::from_json(std::move(*outcome), std::move(metadata)));
  }
  const Error& error = outcome.error();
  const std::string code = error.code().category() == messaging_category()
                               ? std::string(to_string(static_cast<errc>(error.code().value())))
                               : "internal";
  metadata.headers[std::string(headers::kReplyStatus)] = "error";
  metadata.headers[std::string(headers::kErrorCode)] = code;
  return stamped(Message::from_json(Json{{"error", {{"code", code}, {"message", error.message()}}}},
                                    std::move(metadata)));
}

// Answers one query and acknowledges it (a failed handler's error is the reply: a query is
// never retried, its caller waits).
asio::awaitable<void> handle_query(ImplPtr impl, WorkerPtr worker,
                                   std::shared_ptr<QueryHandler> handler,
                                   std::unique_ptr<Delivery> delivery) {
  worker->count_delivery(*delivery);
  const Message& request = delivery->message();
  if (request.reply_to().empty()) {
    co_await settle_failure(worker, *delivery,
                            Error(errc::invalid_argument, "query has no reply_to address"), true);
    co_return;
  }
  Message traced = request;
  auto span = detail::start_consumer_span(traced, worker->backend->name(), worker->tracer);
  const auto started = SteadyClock::now();
  const milliseconds timeout = worker->handler_options.timeout;
  Result<Json> outcome = Error(errc::internal, "not called");
  if (timeout.count() > 0) {
    outcome = co_await call_with_timeout<Json>(handler, traced, timeout, worker->subject);
  } else {
    outcome = co_await call_handler<Json>(*handler, traced);
  }
  worker->counters->observe_handler(SteadyClock::now() - started);
  detail::end_span(worker->tracer, span, outcome ? nullptr : &outcome.error());
  record_for_circuit(*worker, outcome);
  // The reply joins the trace as a child of the handling span.
  Message reply = make_reply(traced, std::move(outcome), impl->options.service_name);
  if (delivery->wire_format() == WireFormat::python_envelope) {  // answered as it was asked
    if (auto wrapped = codec::wrap_in_envelope(reply); wrapped) reply = std::move(*wrapped);
  }
  PublishOptions options;
  options.pattern = MessagingPattern::request_response;
  options.deadline = SteadyClock::now() + worker->config.timeout;
  auto sent = co_await impl->publish_traced(worker->backend, std::move(reply), options,
                                            &worker->replies_counted_as);
  if (!sent) {
    // The caller will see its deadline pass; redelivering would run the handler again.
    logger().error("reply to {} on {} failed: {}", request.id(), worker->subject,
                   sent.error().describe());
  }
  auto acked = co_await delivery->ack();
  warn_if_failed(acked, "ack", worker->subject);
  worker->count(&MessagingMetrics::SubscriptionCounters::acked);
}

asio::awaitable<void> run_batch_worker(ImplPtr impl, WorkerPtr worker,
                                       std::shared_ptr<BatchProcessor> processor,
                                       StreamOptions options) {
  bool closing = false;
  while (!closing) {
    std::vector<std::unique_ptr<Delivery>> batch;
    auto first = co_await next_delivery(worker);
    if (!first) break;
    batch.push_back(std::move(first));
    const auto deadline = SteadyClock::now() + options.max_wait;
    while (batch.size() < options.batch_size) {
      auto next =
          co_await worker->subscription->receive_batch(options.batch_size - batch.size(), deadline);
      if (next) {
        for (auto& received : *next) {
          std::optional<Error> poison;
          auto delivery = hold_delivery(*worker, std::move(received), poison);
          if (!poison) {
            batch.push_back(std::move(delivery));
          } else {
            co_await dead_letter_poison(worker, std::move(delivery), std::move(*poison));
          }
        }
        continue;
      }
      // Closed while collecting: hand over what we hold (that is the drain), then end.
      closing = next.error().is(errc::cancelled);
      if (!closing && !next.error().is(errc::deadline_exceeded)) {
        logger().warn("receive on {} failed: {}", worker->subject, next.error().describe());
      }
      break;
    }
    std::vector<Message> messages;
    messages.reserve(batch.size());
    for (const auto& delivery : batch) {
      worker->count_delivery(*delivery);
      messages.push_back(delivery->message());
    }
    const auto started = SteadyClock::now();
    auto outcome = co_await call_handler<void>(*processor, std::move(messages));
    worker->counters->observe_handler(SteadyClock::now() - started);
    for (auto& delivery : batch) {
      if (outcome) {
        auto acked = co_await delivery->ack();
        warn_if_failed(acked, "ack", worker->subject);
        worker->count(&MessagingMetrics::SubscriptionCounters::acked);
      } else {
        co_await settle_failure(worker, *delivery, outcome.error());
      }
    }
  }
  impl->worker_ended(*worker);
}

asio::awaitable<void> run_reply_worker(ImplPtr impl, WorkerPtr worker,
                                       std::shared_ptr<ReplyInbox> inbox) {
  while (auto delivery = co_await next_delivery(worker)) {
    worker->count_delivery(*delivery);
    {
      std::lock_guard lock(inbox->mutex);
      if (auto waiter = inbox->pending.find(delivery->message()); waiter && !waiter->reply) {
        waiter->reply = delivery->message();
        waiter->signal->notify();
      } else if (!waiter) {
        // Usually a late reply to a query that timed out; dropped, as on NATS.
        logger().debug("reply {} on {} matches no waiting query (correlation id '{}')",
                       delivery->message().id(), worker->subject,
                       delivery->message().correlation_id());
      }
    }
    auto acked = co_await delivery->ack();
    warn_if_failed(acked, "ack", worker->subject);
    worker->count(&MessagingMetrics::SubscriptionCounters::acked);
  }
  impl->worker_ended(*worker);
}

// query() over a backend without native request/reply: publish with reply_to set to the bus's
// inbox on that backend and a fresh token, and wait for the reply carrying the token. (The
// token is ours, never the caller's message id, which callers may reuse.)
asio::awaitable<Result<Message>> request_via_inbox(std::shared_ptr<Backend> backend,
                                                   std::shared_ptr<ReplyInbox> inbox,
                                                   Message message, milliseconds timeout,
                                                   WireFormat format) {
  const auto deadline = SteadyClock::now() + timeout;
  auto waiter = std::make_shared<PendingReply>();
  const std::string token = make_uuid_v7();
  {
    std::lock_guard lock(inbox->mutex);
    if (inbox->closed) co_return Error(errc::cancelled, "the bus is stopping");
    inbox->pending.add(token, message, waiter);
  }
  message.mutable_metadata().reply_to = inbox->subject;
  message.mutable_metadata().headers[std::string(kReplyToken)] = token;
  if (format == WireFormat::python_envelope) {
    auto wrapped = codec::wrap_in_envelope(message);
    if (!wrapped) {
      std::lock_guard lock(inbox->mutex);
      inbox->pending.erase(token);
      co_return std::move(wrapped).error();
    }
    message = std::move(*wrapped);
  }
  const std::string subject(message.subject());
  PublishOptions options;
  options.pattern = MessagingPattern::request_response;
  options.require_receiver = true;
  options.deadline = deadline;
  auto published = co_await backend->publish(std::move(message), options);
  while (published) {
    {
      std::lock_guard lock(inbox->mutex);
      if (waiter->reply || waiter->cancelled) break;
    }
    if (!co_await waiter->signal->wait(deadline)) break;
  }
  std::lock_guard lock(inbox->mutex);
  inbox->pending.erase(token);
  if (!published) co_return std::move(published).error();
  if (waiter->reply) co_return std::move(*waiter->reply);
  if (waiter->cancelled) co_return Error(errc::cancelled, "the bus stopped while waiting");
  co_return Error(errc::deadline_exceeded, "no reply on '" + subject + "' within " +
                                               std::to_string(timeout.count()) + " ms");
}

Result<void> validate_names(const std::vector<std::string>& names, std::string_view what,
                            bool allow_wildcards) {
  if (names.empty()) return Error(errc::invalid_argument, "no " + std::string(what) + " given");
  for (const auto& name : names) {
    auto valid = allow_wildcards ? subject::validate_pattern(name, what)
                                 : subject::validate_name(name, what);
    if (!valid) return valid;
  }
  return ok();
}

}  // namespace

UnifiedEventBus::UnifiedEventBus(asio::any_io_executor executor, EventBusOptions options)
    : impl_(std::make_shared<detail::EventBusState>(executor, std::move(options))),
      executor_(executor) {}

UnifiedEventBus::~UnifiedEventBus() {
  // Never block in a destructor: close intake so workers end; they hold the Impl alive.
  std::vector<std::shared_ptr<Subscription>> open;
  std::vector<std::shared_ptr<ReplyInbox>> inboxes;
  {
    std::lock_guard lock(impl_->mutex);
    for (auto& [id, registration] : impl_->registrations) {
      for (auto& worker : registration->workers) open.push_back(worker->subscription);
    }
    for (auto& worker : impl_->inbox_workers) open.push_back(worker->subscription);
    for (auto& [backend, inbox] : impl_->reply_inboxes) inboxes.push_back(inbox);
  }
  for (auto& subscription : open) subscription->close();
  for (auto& inbox : inboxes) inbox->cancel_all();
}

std::shared_ptr<UnifiedEventBus> create_unified_event_bus(asio::any_io_executor executor,
                                                          EventBusOptions options) {
  return std::make_shared<UnifiedEventBus>(std::move(executor), std::move(options));
}

Result<void> UnifiedEventBus::register_backend(MessageBackendType type,
                                               std::shared_ptr<Backend> backend) {
  if (!backend) return Error(errc::invalid_argument, "register_backend: backend is null");
  std::lock_guard lock(impl_->mutex);
  if (impl_->state != Impl::State::configuring) {
    return Error(errc::failed_precondition, "register_backend: only before start()");
  }
  for (auto& [known, registered] : impl_->backends) {
    if (known == type) {
      registered = std::move(backend);
      return ok();
    }
  }
  impl_->backends.emplace_back(type, std::move(backend));
  return ok();
}

Result<void> UnifiedEventBus::set_default_backend(MessageBackendType type) {
  std::lock_guard lock(impl_->mutex);
  if (!impl_->find_backend(type)) {
    return Error(errc::not_found, "set_default_backend: backend " + std::string(to_string(type)) +
                                      " is not registered");
  }
  impl_->default_backend = type;
  return ok();
}

Result<void> UnifiedEventBus::update_pattern_config(MessagingPattern pattern,
                                                    MessagingPatternConfig config) {
  if (config.retry_count < 0) {
    return Error(errc::invalid_argument, "update_pattern_config: retry_count must be >= 0");
  }
  if (config.initial_backoff.count() < 0 || config.max_backoff < config.initial_backoff) {
    return Error(errc::invalid_argument,
                 "update_pattern_config: backoff must satisfy 0 <= initial_backoff <= max_backoff");
  }
  if (!(config.backoff_multiplier >= 1.0) || !(config.backoff_jitter >= 0.0) ||
      !(config.backoff_jitter <= 1.0)) {
    return Error(errc::invalid_argument,
                 "update_pattern_config: backoff_multiplier must be >= 1 and backoff_jitter in "
                 "[0, 1]");
  }
  if (config.timeout.count() <= 0) {
    return Error(errc::invalid_argument, "update_pattern_config: timeout must be positive");
  }
  config.pattern = pattern;
  std::lock_guard lock(impl_->mutex);
  if (impl_->state != Impl::State::configuring) {
    return Error(errc::failed_precondition, "update_pattern_config: only before start()");
  }
  impl_->configs[pattern] = std::move(config);
  impl_->configured.insert(pattern);
  return ok();
}

Result<void> UnifiedEventBus::route(std::string type_glob, MessageBackendType backend,
                                    std::set<MessagingPattern> patterns, WireFormat format) {
  if (type_glob.empty()) return Error(errc::invalid_argument, "route: type glob is empty");
  std::lock_guard lock(impl_->mutex);
  if (impl_->state != Impl::State::configuring) {
    return Error(errc::failed_precondition, "route: only before start()");
  }
  impl_->router.add(Route{std::move(type_glob), backend, std::move(patterns), format});
  return ok();
}

MessagingPatternConfig UnifiedEventBus::pattern_config(MessagingPattern pattern) const {
  std::lock_guard lock(impl_->mutex);
  return impl_->configs.at(pattern);
}

Result<MessageBackendType> UnifiedEventBus::backend_for(std::string_view message_type,
                                                        MessagingPattern pattern) const {
  std::lock_guard lock(impl_->mutex);
  return impl_->router.select(message_type, impl_->configs.at(pattern), impl_->table(),
                              impl_->default_backend);
}

MessagingMetrics& UnifiedEventBus::metrics() const noexcept {
  return *impl_->metrics;
}

std::shared_ptr<Backend> UnifiedEventBus::backend(MessageBackendType type) const {
  std::lock_guard lock(impl_->mutex);
  return impl_->find_backend(type);
}

bool UnifiedEventBus::running() const noexcept {
  std::lock_guard lock(impl_->mutex);
  return impl_->state == Impl::State::running;
}

asio::awaitable<Result<void>> UnifiedEventBus::start() {
  ImplPtr impl = impl_;
  std::vector<std::pair<MessageBackendType, std::shared_ptr<Backend>>> backends;
  {
    std::lock_guard lock(impl->mutex);
    if (impl->state != Impl::State::configuring) {
      co_return Error(errc::failed_precondition, "start: the bus is already started");
    }
    if (const auto& breaker = impl->options.backend_circuit_breaker;
        breaker.failure_threshold > 0 && breaker.open_for.count() <= 0) {
      co_return Error(errc::invalid_argument,
                      "start: EventBusOptions.backend_circuit_breaker.open_for must be positive");
    }
    if (impl->backends.empty()) {
      impl->backends.emplace_back(MessageBackendType::memory, make_memory_backend());
    }
    std::vector<MessagingPatternConfig> required;
    for (MessagingPattern pattern : impl->configured) required.push_back(impl->configs[pattern]);
    if (auto valid = impl->router.validate(impl->table(), required); !valid) {
      co_return std::move(valid).error().with_context("start");
    }
    impl->state = Impl::State::starting;
    impl->selections.clear();
    backends = impl->backends;
  }
  std::vector<std::shared_ptr<Backend>> connected;
  Result<void> outcome;
  // No structured bindings across a co_await: GCC 12 keeps them off the coroutine frame, and
  // after a real suspension they name freed memory (docs/decisions/0001).
  for (std::size_t i = 0; i < backends.size(); ++i) {
    const MessageBackendType type = backends[i].first;
    std::shared_ptr<Backend> backend = backends[i].second;
    // A broker that is down or still starting may come within connect_wait: tried again with
    // backoff while the failure says it may pass (retryable), never past the wait.
    const auto give_up = SteadyClock::now() + impl->options.connect_wait;
    milliseconds pause{100};
    auto result = co_await backend->connect();
    while (!result && result.error().retryable() && SteadyClock::now() + pause < give_up) {
      logger().info("start: backend {} is not there yet ({}); trying again in {} ms",
                    to_string(type), result.error().describe(), pause.count());
      co_await sleep_for(pause);
      pause = std::min(pause * 2, milliseconds(2'000));
      result = co_await backend->connect();
    }
    if (!result) {
      outcome = std::move(result).error().with_context(
          "start: backend " + std::string(to_string(type)) + " failed to connect");
      break;
    }
    connected.push_back(backend);
  }
  // Each backend without native request/reply gets a private reply subject for query().
  for (auto& backend : connected) {
    if (!outcome) break;
    const auto& caps = backend->capabilities();
    if (caps.native_request_reply || !caps.supports(MessagingPattern::request_response)) continue;
    auto inbox = std::make_shared<ReplyInbox>();
    inbox->subject = "_replies." + impl->instance_id + "." + std::string(backend->name());
    SubscriptionSpec spec;
    spec.subject = inbox->subject;
    spec.pattern = MessagingPattern::request_response;
    // A reply is useful only to the caller waiting for it now: at most once.
    spec.guarantee = DeliveryGuarantee::at_most_once;
    auto subscription = co_await backend->subscribe(spec);
    if (!subscription) {
      outcome = std::move(subscription)
                    .error()
                    .with_context("start: reply subject on " + std::string(backend->name()));
      break;
    }
    auto worker = impl->make_worker(backend, std::move(*subscription), inbox->subject, "");
    {
      std::lock_guard lock(impl->mutex);
      worker->config = impl->configs[MessagingPattern::request_response];
      impl->reply_inboxes[backend.get()] = inbox;
      impl->inbox_workers.push_back(worker);
    }
    asio::co_spawn(impl->executor, run_reply_worker(impl, worker, inbox), asio::detached);
  }
  if (!outcome) {
    std::vector<WorkerPtr> workers;
    {
      std::lock_guard lock(impl->mutex);
      workers = std::move(impl->inbox_workers);
      impl->inbox_workers.clear();
      impl->reply_inboxes.clear();
    }
    for (auto& worker : workers) worker->close();
    const auto deadline = SteadyClock::now() + kBackendCloseGrace;
    for (auto& backend : connected) {
      auto closed = co_await backend->close(deadline);
      warn_if_failed(closed, "close after a failed start", std::string(backend->name()));
    }
    std::lock_guard lock(impl->mutex);
    impl->state = Impl::State::configuring;
    co_return outcome;
  }
  std::lock_guard lock(impl->mutex);
  impl->send_circuits.clear();
  if (const auto& breaker = impl->options.backend_circuit_breaker; breaker.failure_threshold > 0) {
    for (const auto& backend : connected) {
      impl->send_circuits[backend.get()] =
          std::make_shared<detail::CircuitBreaker>(breaker.failure_threshold, breaker.open_for);
    }
  }
  impl->state = Impl::State::running;
  co_return ok();
}

asio::awaitable<Result<void>> UnifiedEventBus::stop(std::optional<milliseconds> drain_timeout) {
  ImplPtr impl = impl_;
  std::vector<WorkerPtr> workers;
  std::vector<std::shared_ptr<ReplyInbox>> inboxes;
  std::vector<std::shared_ptr<Backend>> backends;
  {
    std::lock_guard lock(impl->mutex);
    if (impl->state != Impl::State::running) {
      co_return Error(errc::failed_precondition, "stop: the bus is not running");
    }
    impl->state = Impl::State::stopping;
    for (auto& [id, registration] : impl->registrations) {
      workers.insert(workers.end(), registration->workers.begin(), registration->workers.end());
    }
    impl->registrations.clear();
    workers.insert(workers.end(), impl->inbox_workers.begin(), impl->inbox_workers.end());
    impl->inbox_workers.clear();
    for (auto& [backend, inbox] : impl->reply_inboxes) inboxes.push_back(inbox);
    impl->reply_inboxes.clear();
    for (auto& [type, backend] : impl->backends) backends.push_back(backend);
  }
  for (auto& worker : workers) worker->close();
  for (auto& inbox : inboxes) inbox->cancel_all();

  const auto deadline = SteadyClock::now() + drain_timeout.value_or(impl->options.drain_timeout);
  std::size_t still_running = 0;
  while (true) {
    still_running = static_cast<std::size_t>(std::count_if(
        workers.begin(), workers.end(), [](const WorkerPtr& w) { return !w->finished.load(); }));
    if (still_running == 0) break;
    if (!co_await impl->worker_finished->wait(deadline)) break;
  }
  std::size_t released = 0;
  if (still_running != 0) released = co_await release_unfinished(workers);
  const auto close_deadline = std::max(deadline, SteadyClock::now() + kBackendCloseGrace);
  Result<void> outcome;
  for (auto& backend : backends) {
    auto closed = co_await backend->close(close_deadline);
    if (!closed && outcome) outcome = std::move(closed).error().with_context("stop: close");
  }
  {
    std::lock_guard lock(impl->mutex);
    impl->state = Impl::State::configuring;
  }
  if (still_running != 0) {
    co_return Error(errc::deadline_exceeded,
                    "stop: handlers of " + std::to_string(still_running) +
                        " subscription(s) still running at the drain deadline; the " +
                        std::to_string(released) +
                        " message(s) they held were released for redelivery");
  }
  co_return outcome;
}

asio::awaitable<Result<void>> UnifiedEventBus::publish_event(std::string event_type, Json data,
                                                             MessageMetadata metadata) {
  co_return co_await publish_event(std::move(event_type),
                                   Message::from_json(std::move(data), std::move(metadata)));
}

asio::awaitable<Result<void>> UnifiedEventBus::publish_event(std::string event_type,
                                                             Message message) {
  auto target = impl_->target("publish_event", event_type, MessagingPattern::pub_sub,
                              Impl::Use::send, "event type");
  if (!target) co_return std::move(target).error();
  impl_->stamp(message, event_type, subject::event_pieces(event_type));
  PublishOptions options;
  options.pattern = MessagingPattern::pub_sub;
  options.guarantee = target->config().delivery_guarantee;
  options.deadline = SteadyClock::now() + target->config().timeout;
  auto wire = target->for_the_wire(std::move(message));
  if (!wire) co_return wire.error().with_context("publish_event " + event_type);
  auto published = co_await impl_->publish_traced(target->backend, std::move(*wire), options);
  if (!published) co_return published.error().with_context("publish_event " + event_type);
  co_return ok();
}

asio::awaitable<Result<void>> UnifiedEventBus::send_command(std::string command_type, Json data,
                                                            std::string target_service,
                                                            MessageMetadata metadata) {
  if (auto valid = subject::validate_name(target_service, "target service"); !valid) {
    co_return valid;
  }
  auto target = impl_->target("send_command", command_type, MessagingPattern::point_to_point,
                              Impl::Use::send, "command type");
  if (!target) co_return std::move(target).error();
  Message message = Message::from_json(std::move(data), std::move(metadata));
  impl_->stamp(message, command_type, subject::command_pieces(target_service, command_type));
  PublishOptions options;
  options.pattern = MessagingPattern::point_to_point;
  options.guarantee = target->config().delivery_guarantee;
  options.require_receiver = true;
  options.deadline = SteadyClock::now() + target->config().timeout;
  // Made only for an error: a string per command costs an allocation.
  auto context = [&] { return "send_command " + command_type + " to " + target_service; };
  auto wire = target->for_the_wire(std::move(message));
  if (!wire) co_return wire.error().with_context(context());
  auto published = co_await impl_->publish_traced(target->backend, std::move(*wire), options);
  if (!published) co_return published.error().with_context(context());
  co_return ok();
}

asio::awaitable<Result<Json>> UnifiedEventBus::query(std::string query_type, Json data,
                                                     std::string target_service,
                                                     std::optional<milliseconds> timeout,
                                                     MessageMetadata metadata) {
  if (auto valid = subject::validate_name(target_service, "target service"); !valid) {
    co_return std::move(valid).error();
  }
  if (timeout && timeout->count() <= 0) {
    co_return Error(errc::invalid_argument, "query: timeout must be positive");
  }
  auto target = impl_->target("query", query_type, MessagingPattern::request_response,
                              Impl::Use::send, "query type");
  if (!target) co_return std::move(target).error();
  Message message = Message::from_json(std::move(data), std::move(metadata));
  impl_->stamp(message, query_type, subject::query_pieces(target_service, query_type),
               /*correlate=*/true);
  const std::string subject(message.subject());
  const milliseconds wait = timeout.value_or(target->config().timeout);
  // Made only for an error: a string per query costs an allocation.
  auto context = [&] { return "query " + query_type + " to " + target_service; };

  // The query's span lasts until its reply (or failure): the round trip.
  auto span =
      detail::start_producer_span(message, target->backend->name(), impl_->options_tracer());
  Result<Message> reply = Error(errc::internal, "unreachable");
  if (target->backend->capabilities().native_request_reply) {
    auto wire = target->for_the_wire(std::move(message));
    if (!wire) co_return wire.error().with_context(context());
    reply = co_await target->backend->request(std::move(*wire), wait);
  } else {
    auto inbox = impl_->inbox_for(target->backend.get());
    if (!inbox) co_return Error(errc::failed_precondition, context() + ": no reply subject");
    reply = co_await request_via_inbox(target->backend, inbox, std::move(message), wait,
                                       target->format);
  }
  detail::end_span(impl_->options_tracer(), span, reply ? nullptr : &reply.error());
  // A query that went out and was not answered in time still counts as published.
  impl_->count_publish(*target->backend, subject,
                       reply.has_value() || reply.error().is(errc::deadline_exceeded));
  if (!reply) co_return reply.error().with_context(context());
  if (impl_->options.python_envelope_on_receipt) {  // a Python responder's (the inbox unwraps)
    if (auto envelope = codec::unwrap_envelope(*reply); envelope) {
      if (!*envelope) co_return envelope->error().with_context(context() + ": reply");
      reply = std::move(**envelope);
    }
  }
  if (reply->header(headers::kReplyStatus) == "error") {
    const auto code = reply->header(headers::kErrorCode);
    std::string message_text = "the handler failed";
    if (auto body = reply->try_json(); body && body->get().contains("error")) {
      message_text = body->get()["error"].value("message", message_text);
    }
    co_return Error(errc_from_string(code ? std::string(*code) : "internal"), message_text)
        .with_context(context());
  }
  auto body = reply->try_json();
  if (!body) co_return body.error().with_context(context() + ": reply");
  co_return body->get();
}

asio::awaitable<Result<void>> UnifiedEventBus::stream_events(std::string stream,
                                                             std::vector<Json> events,
                                                             std::string partition_key) {
  std::vector<Message> messages;
  messages.reserve(events.size());
  for (auto& event : events) {
    MessageMetadata metadata;
    metadata.partition_key = partition_key;
    messages.push_back(Message::from_json(std::move(event), std::move(metadata)));
  }
  co_return co_await stream_events(std::move(stream), std::move(messages));
}

asio::awaitable<Result<void>> UnifiedEventBus::stream_events(std::string stream,
                                                             std::vector<Message> events) {
  auto target = impl_->target("stream_events", stream, MessagingPattern::streaming, Impl::Use::send,
                              "stream name");
  if (!target) co_return std::move(target).error();
  if (events.empty()) co_return ok();
  const std::size_t count = events.size();
  std::vector<Message> wire;
  wire.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    Message& message = events[i];
    impl_->stamp(message, message.type().empty() ? std::string_view(stream) : message.type(),
                 stream);
    auto written = target->for_the_wire(std::move(message));
    if (!written) {  // nothing sent: a batch goes whole or not at all
      co_return written.error().with_context("stream_events " + stream + ": event " +
                                             std::to_string(i + 1) + " of " +
                                             std::to_string(count) + " (none appended)");
    }
    wire.push_back(std::move(*written));
  }
  PublishOptions options;
  options.kind = DestinationKind::stream;
  options.pattern = MessagingPattern::streaming;
  options.guarantee = target->config().delivery_guarantee;
  options.deadline = SteadyClock::now() + target->config().timeout;
  auto outcomes = co_await impl_->publish_batch_traced(target->backend, std::move(wire), options);
  // Appended in order up to the first failure (later ones may have been appended too, where
  // the backend pipelines: the error says which failed first).
  for (std::size_t i = 0; i < outcomes.size(); ++i) {
    if (outcomes[i]) continue;
    co_return outcomes[i].error().with_context(
        "stream_events " + stream + ": event " + std::to_string(i + 1) + " of " +
        std::to_string(count) + " (" + std::to_string(i) + " appended before it)");
  }
  co_return ok();
}

Result<std::shared_ptr<Publisher>> detail::EventBusState::make_publisher(
    std::string_view operation, std::string_view message_type, MessagingPattern pattern,
    std::string_view what, std::string subject, PublisherOptions publisher_options) const {
  if (publisher_options.max_in_flight == 0 || publisher_options.max_in_flight_bytes == 0) {
    return Error(errc::invalid_argument,
                 std::string(operation) +
                     ": PublisherOptions.max_in_flight and max_in_flight_bytes must be positive");
  }
  if (publisher_options.timeout.count() < 0) {
    return Error(errc::invalid_argument,
                 std::string(operation) + ": PublisherOptions.timeout must not be negative");
  }
  auto target = this->target(operation, message_type, pattern, Use::send, what);
  if (!target) return std::move(target).error();
  detail::PublisherRoute route;
  route.backend = target->backend;
  route.executor = executor;
  route.subject = std::move(subject);
  route.message_type = std::string(message_type);
  route.keep_own_type = pattern == MessagingPattern::streaming;
  route.source = options.service_name;
  route.options.pattern = pattern;
  route.options.kind =
      pattern == MessagingPattern::streaming ? DestinationKind::stream : DestinationKind::topic;
  route.options.guarantee = target->config().delivery_guarantee;
  route.options.require_receiver = pattern == MessagingPattern::point_to_point;
  route.timeout =
      publisher_options.timeout.count() > 0 ? publisher_options.timeout : target->config().timeout;
  route.format = target->format;
  route.tracer = options.tracer;
  route.metrics = metrics;
  route.counters = &metrics->publisher(target->backend->name(), route.subject);
  return std::make_shared<Publisher>(
      std::make_shared<detail::PublisherState>(std::move(route), publisher_options));
}

Result<std::shared_ptr<Publisher>> UnifiedEventBus::publisher(std::string event_type,
                                                              PublisherOptions options) {
  return impl_->make_publisher("publisher", event_type, MessagingPattern::pub_sub, "event type",
                               subject::for_event(event_type), options);
}

Result<std::shared_ptr<Publisher>> UnifiedEventBus::command_publisher(std::string command_type,
                                                                      std::string target_service,
                                                                      PublisherOptions options) {
  if (auto valid = subject::validate_name(target_service, "target service"); !valid) {
    return std::move(valid).error();
  }
  return impl_->make_publisher("command_publisher", command_type, MessagingPattern::point_to_point,
                               "command type", subject::for_command(target_service, command_type),
                               options);
}

Result<std::shared_ptr<Publisher>> UnifiedEventBus::stream_publisher(std::string stream,
                                                                     PublisherOptions options) {
  return impl_->make_publisher("stream_publisher", stream, MessagingPattern::streaming,
                               "stream name", stream, options);
}

namespace {

// Subscribes one worker per subject; closes the ones already made if a later one fails.
asio::awaitable<Result<std::shared_ptr<Registration>>> open_workers(
    ImplPtr impl, std::vector<std::pair<std::string, std::string>> subjects_and_types,
    MessagingPattern pattern, std::string group, DestinationKind kind, StartPosition start) {
  auto registration = std::make_shared<Registration>();
  for (std::size_t i = 0; i < subjects_and_types.size(); ++i) {  // no structured bindings: above
    const std::string& subject_name = subjects_and_types[i].first;
    const std::string& type = subjects_and_types[i].second;
    auto target = impl->target("subscribe", type, pattern, Impl::Use::subscribe);
    Result<std::shared_ptr<Subscription>> subscription = Error(errc::internal, "not subscribed");
    if (target) {
      SubscriptionSpec spec;
      spec.subject = subject_name;
      spec.group = group;
      spec.kind = kind;
      spec.pattern = pattern;
      spec.guarantee = target->config().delivery_guarantee;
      spec.start = start;
      if (subject::has_wildcard(subject_name) &&
          !target->backend->capabilities().wildcard_subscriptions) {
        subscription =
            Error(errc::invalid_argument, "backend " + std::string(target->backend->name()) +
                                              " does not support wildcard subscriptions");
      } else {
        subscription = co_await target->backend->subscribe(spec);
      }
    }
    if (!target || !subscription) {
      for (auto& worker : registration->workers) worker->close();
      Error error = target ? std::move(subscription).error() : std::move(target).error();
      co_return error.with_context("subscribe " + subject_name);
    }
    auto worker = impl->make_worker(target->backend, std::move(*subscription), subject_name, group);
    worker->spec.subject = subject_name;
    worker->spec.group = group;
    worker->spec.kind = kind;
    worker->spec.pattern = pattern;
    worker->spec.guarantee = target->config().delivery_guarantee;
    worker->pattern = pattern;
    worker->config = target->config();
    worker->registration_done = registration->done;
    registration->workers.push_back(std::move(worker));
  }
  co_return registration;
}

// Records the registration if the bus is still running (stop() may have begun while the
// subscriptions were being opened); otherwise closes them. Workers start only once recorded,
// so stop() always sees and drains every worker that runs.
Result<SubscriptionId> add_registration(Impl& impl,
                                        const std::shared_ptr<Registration>& registration) {
  {
    std::lock_guard lock(impl.mutex);
    if (impl.state == Impl::State::running) {
      const SubscriptionId id = impl.next_id++;
      impl.registrations.emplace(id, registration);
      return id;
    }
  }
  for (auto& worker : registration->workers) worker->close();
  return not_running("subscribe");
}

}  // namespace

namespace {

using Subjects = std::vector<std::pair<std::string, std::string>>;  // (subject, message type)

// Samples the worker's group lag into its gauge every `interval` until its intake ends. A
// failed sample keeps the last value (the broker may be briefly away; said once per outage at
// warn); a backend that turns out unable to tell stops the sampling.
asio::awaitable<void> sample_consumer_lag(ImplPtr impl, WorkerPtr worker, milliseconds interval) {
  constexpr milliseconds kStep{50};
  auto next = SteadyClock::now();
  bool failing = false;  // the last sample failed: the gauge shows an older value
  while (!worker->closing && !worker->intake_ended) {
    if (SteadyClock::now() < next) {
      co_await sleep_for(kStep);
      continue;
    }
    next = SteadyClock::now() + interval;
    const auto deadline = SteadyClock::now() + std::min(interval, milliseconds(2'000));
    auto lag = co_await worker->backend->consumer_lag(worker->spec, deadline);
    if (lag) {
      worker->counters->lag.store(static_cast<std::int64_t>(std::min<std::uint64_t>(
          *lag, static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))));
      if (failing) {
        logger().info("consumer lag of {} on {} (group {}) sampled again", worker->subject,
                      worker->backend->name(), worker->group);
      }
      failing = false;
    } else if (lag.error().is(errc::unimplemented)) {
      break;
    } else {
      // Said once per outage, so a gauge that stopped moving is never a silent one.
      if (!failing) {
        logger().warn(
            "consumer lag of {} on {} (group {}) not sampled, the gauge keeps its last value: {}",
            worker->subject, worker->backend->name(), worker->group, lag.error().describe());
      }
      failing = true;
    }
  }
  impl->task_ended(*worker);
}

using WorkerRunner = std::function<asio::awaitable<void>(WorkerPtr)>;

// What every registration does once its arguments are checked: one worker per subject, the
// registration recorded (only while running), then `run` started on each worker.
asio::awaitable<Result<SubscriptionId>> register_workers(ImplPtr impl, Subjects subjects,
                                                         MessagingPattern pattern,
                                                         std::string group, DestinationKind kind,
                                                         StartPosition start, WorkerRunner run) {
  auto registration =
      co_await open_workers(impl, std::move(subjects), pattern, std::move(group), kind, start);
  if (!registration) co_return std::move(registration).error();
  auto id = add_registration(*impl, *registration);
  if (!id) co_return id;
  const milliseconds lag_interval = impl->options.consumer_lag_interval;
  for (auto& worker : (*registration)->workers) {
    if (lag_interval.count() > 0 && !worker->group.empty() &&
        worker->backend->capabilities().consumer_lag &&
        worker->spec.guarantee != DeliveryGuarantee::at_most_once &&
        worker->spec.pattern != MessagingPattern::request_response) {
      worker->tasks.fetch_add(1);
      asio::co_spawn(impl->executor, sample_consumer_lag(impl, worker, lag_interval),
                     asio::detached);
    }
    asio::co_spawn(impl->executor, run(worker), asio::detached);
  }
  co_return id;
}

// Subjects of commands or queries of one service, after checking the names.
Result<Subjects> service_subjects(const std::vector<std::string>& types, std::string_view what,
                                  const std::string& service,
                                  std::string (*subject_of)(std::string_view, std::string_view)) {
  if (auto valid = validate_names(types, what, true); !valid) return std::move(valid).error();
  if (auto valid = subject::validate_name(service, "service name"); !valid) {
    return std::move(valid).error();
  }
  Subjects subjects;
  for (const auto& type : types) subjects.emplace_back(subject_of(service, type), type);
  return subjects;
}

}  // namespace

namespace {

Result<void> check_handler_options(std::string_view operation, const HandlerOptions& options) {
  if (options.concurrency < 1 || options.concurrency > 65'536) {
    return Error(errc::invalid_argument, std::string(operation) +
                                             ": HandlerOptions.concurrency must be 1..65536, not " +
                                             std::to_string(options.concurrency));
  }
  if (options.timeout.count() < 0) {
    return Error(errc::invalid_argument,
                 std::string(operation) + ": HandlerOptions.timeout must not be negative");
  }
  if (options.circuit_breaker.failure_threshold > 0 &&
      options.circuit_breaker.open_for.count() <= 0) {
    return Error(
        errc::invalid_argument,
        std::string(operation) + ": HandlerOptions.circuit_breaker.open_for must be positive");
  }
  return ok();
}

// Runs each worker of a registration with `handle`, as `options` say (one circuit breaker
// shared by the registration's subjects).
WorkerRunner delivery_runner(const ImplPtr& impl, DeliveryHandler handle, HandlerOptions options,
                             const detail::SyncMessageCall* sync = nullptr) {
  auto shared = std::make_shared<DeliveryHandler>(std::move(handle));
  std::shared_ptr<detail::CircuitBreaker> breaker;
  if (options.circuit_breaker.failure_threshold > 0) {
    breaker = std::make_shared<detail::CircuitBreaker>(options.circuit_breaker.failure_threshold,
                                                       options.circuit_breaker.open_for);
  }
  return [impl, shared, options, breaker, sync](WorkerPtr worker) {
    worker->handler_options = options;
    worker->breaker = breaker;
    return run_delivery_worker(impl, std::move(worker), shared, sync);
  };
}

WorkerRunner message_runner(const ImplPtr& impl, MessageHandler handler, HandlerOptions options) {
  auto shared = std::make_shared<MessageHandler>(std::move(handler));
  // Lives in *shared, which `handle` keeps alive as long as the workers run.
  const detail::SyncMessageCall* sync = shared->target<detail::SyncMessageCall>();
  DeliveryHandler handle = [shared](WorkerPtr worker, std::unique_ptr<Delivery> delivery) {
    return handle_delivery(std::move(worker), shared, std::move(delivery));
  };
  return delivery_runner(impl, std::move(handle), std::move(options), sync);
}

}  // namespace

asio::awaitable<Result<SubscriptionId>> UnifiedEventBus::subscribe_to_events(
    std::vector<std::string> event_types, MessageHandler handler, std::string consumer_group) {
  co_return co_await subscribe_to_events(std::move(event_types), std::move(handler),
                                         std::move(consumer_group), HandlerOptions());
}

asio::awaitable<Result<SubscriptionId>> UnifiedEventBus::subscribe_to_events(
    std::vector<std::string> event_types, MessageHandler handler, std::string consumer_group,
    HandlerOptions options) {
  if (!handler) co_return Error(errc::invalid_argument, "subscribe_to_events: handler is empty");
  if (auto valid = check_handler_options("subscribe_to_events", options); !valid) {
    co_return std::move(valid).error();
  }
  if (auto valid = validate_names(event_types, "event type", true); !valid) {
    co_return std::move(valid).error();
  }
  if (!consumer_group.empty()) {
    if (auto valid = subject::validate_name(consumer_group, "consumer group"); !valid) {
      co_return std::move(valid).error();
    }
  }
  Subjects subjects;
  for (auto& type : event_types) subjects.emplace_back(subject::for_event(type), type);
  WorkerRunner run = message_runner(impl_, std::move(handler), std::move(options));
  co_return co_await register_workers(impl_, std::move(subjects), MessagingPattern::pub_sub,
                                      std::move(consumer_group), DestinationKind::topic,
                                      StartPosition(), std::move(run));
}

asio::awaitable<Result<SubscriptionId>> UnifiedEventBus::handle_commands(
    std::vector<std::string> command_types, MessageHandler handler, std::string service_name) {
  co_return co_await handle_commands(std::move(command_types), std::move(handler),
                                     std::move(service_name), HandlerOptions());
}

asio::awaitable<Result<SubscriptionId>> UnifiedEventBus::handle_commands(
    std::vector<std::string> command_types, MessageHandler handler, std::string service_name,
    HandlerOptions options) {
  if (!handler) co_return Error(errc::invalid_argument, "handle_commands: handler is empty");
  if (auto valid = check_handler_options("handle_commands", options); !valid) {
    co_return std::move(valid).error();
  }
  auto subjects =
      service_subjects(command_types, "command type", service_name, &subject::for_command);
  if (!subjects) co_return std::move(subjects).error();
  WorkerRunner run = message_runner(impl_, std::move(handler), std::move(options));
  co_return co_await register_workers(impl_, std::move(*subjects), MessagingPattern::point_to_point,
                                      std::move(service_name), DestinationKind::topic,
                                      StartPosition(), std::move(run));
}

asio::awaitable<Result<SubscriptionId>> UnifiedEventBus::handle_queries(
    std::vector<std::string> query_types, QueryHandler handler, std::string service_name) {
  co_return co_await handle_queries(std::move(query_types), std::move(handler),
                                    std::move(service_name), HandlerOptions());
}

asio::awaitable<Result<SubscriptionId>> UnifiedEventBus::handle_queries(
    std::vector<std::string> query_types, QueryHandler handler, std::string service_name,
    HandlerOptions options) {
  if (!handler) co_return Error(errc::invalid_argument, "handle_queries: handler is empty");
  if (auto valid = check_handler_options("handle_queries", options); !valid) {
    co_return std::move(valid).error();
  }
  auto subjects = service_subjects(query_types, "query type", service_name, &subject::for_query);
  if (!subjects) co_return std::move(subjects).error();
  auto shared = std::make_shared<QueryHandler>(std::move(handler));
  DeliveryHandler handle = [impl = impl_, shared](WorkerPtr worker,
                                                  std::unique_ptr<Delivery> delivery) {
    return handle_query(impl, std::move(worker), shared, std::move(delivery));
  };
  WorkerRunner run = delivery_runner(impl_, std::move(handle), std::move(options));
  co_return co_await register_workers(impl_, std::move(*subjects),
                                      MessagingPattern::request_response, std::move(service_name),
                                      DestinationKind::topic, StartPosition(), std::move(run));
}

asio::awaitable<Result<SubscriptionId>> UnifiedEventBus::process_stream(std::string stream,
                                                                        BatchProcessor processor,
                                                                        std::string consumer_group,
                                                                        StreamOptions options) {
  if (!processor) co_return Error(errc::invalid_argument, "process_stream: processor is empty");
  if (auto valid = subject::validate_name(stream, "stream name"); !valid) {
    co_return std::move(valid).error();
  }
  if (auto valid = subject::validate_name(consumer_group, "consumer group"); !valid) {
    co_return std::move(valid).error();
  }
  if (options.batch_size == 0) {
    co_return Error(errc::invalid_argument, "process_stream: batch_size must be at least 1");
  }
  if (options.max_wait.count() <= 0) {
    co_return Error(errc::invalid_argument, "process_stream: max_wait must be positive");
  }
  Subjects subjects{{stream, stream}};
  auto shared = std::make_shared<BatchProcessor>(std::move(processor));
  WorkerRunner run = [impl = impl_, shared, options](WorkerPtr worker) {
    return run_batch_worker(impl, std::move(worker), shared, options);
  };
  co_return co_await register_workers(impl_, std::move(subjects), MessagingPattern::streaming,
                                      std::move(consumer_group), DestinationKind::stream,
                                      options.start, std::move(run));
}

asio::awaitable<Result<void>> UnifiedEventBus::unsubscribe(SubscriptionId id) {
  std::shared_ptr<Registration> registration;
  milliseconds drain{};
  {
    std::lock_guard lock(impl_->mutex);
    auto it = impl_->registrations.find(id);
    if (it == impl_->registrations.end()) {
      co_return Error(errc::not_found, "unsubscribe: no subscription " + std::to_string(id));
    }
    registration = std::move(it->second);
    impl_->registrations.erase(it);
    drain = impl_->options.drain_timeout;
  }
  for (auto& worker : registration->workers) worker->close();
  const auto deadline = SteadyClock::now() + drain;
  while (!std::all_of(registration->workers.begin(), registration->workers.end(),
                      [](const WorkerPtr& w) { return w->finished.load(); })) {
    if (!co_await registration->done->wait(deadline)) {
      const std::size_t released = co_await release_unfinished(registration->workers);
      co_return Error(errc::deadline_exceeded,
                      "unsubscribe: handlers still running at the drain deadline; the " +
                          std::to_string(released) +
                          " message(s) they held were released for redelivery");
    }
  }
  co_return ok();
}

namespace {

// The running bus's backends that keep dead letters, each once; `not_running` otherwise.
Result<detail::DeadLetterBackends> dead_letter_backends(Impl& impl, std::string_view operation) {
  std::lock_guard lock(impl.mutex);
  if (impl.state != Impl::State::running) return not_running(operation);
  detail::DeadLetterBackends out;
  for (const auto& [type, backend] : impl.backends) {
    (void)type;
    if (backend->capabilities().inspectable_dead_letters &&
        std::find(out.begin(), out.end(), backend) == out.end()) {
      out.push_back(backend);
    }
  }
  if (out.empty()) {
    return Error(errc::unimplemented,
                 std::string(operation) + ": no backend of this bus can list its dead letters");
  }
  return out;
}

}  // namespace

asio::awaitable<Result<std::vector<DeadLetter>>> UnifiedEventBus::list_dead_letters(
    DeadLetterFilter filter) {
  auto backends = dead_letter_backends(*impl_, "list_dead_letters");
  if (!backends) co_return backends.error();
  co_return co_await detail::list_dead_letters(std::move(*backends), std::move(filter));
}

asio::awaitable<Result<std::size_t>> UnifiedEventBus::requeue_dead_letters(
    DeadLetterFilter filter) {
  auto backends = dead_letter_backends(*impl_, "requeue_dead_letters");
  if (!backends) co_return backends.error();
  ImplPtr impl = impl_;
  detail::DeadLetterPublisher publish = [impl](std::shared_ptr<Backend> backend, Message message,
                                               PublishOptions options) {
    return impl->publish_traced(std::move(backend), std::move(message), options);
  };
  co_return co_await detail::requeue_dead_letters(std::move(*backends), std::move(filter),
                                                  std::move(publish));
}

asio::awaitable<Result<std::uint64_t>> UnifiedEventBus::consumer_lag(std::string subject_name,
                                                                     std::string group) {
  constexpr std::string_view kOperation = "consumer_lag";
  if (auto valid = subject::validate_name(subject_name, "subject"); !valid) {
    co_return std::move(valid).error().with_context(kOperation);
  }
  if (auto valid = subject::validate_name(group, "consumer group"); !valid) {
    co_return std::move(valid).error().with_context(kOperation);
  }
  SubscriptionSpec spec;
  spec.subject = subject_name;
  spec.group = group;
  if (subject_name.starts_with("events.")) {
    spec.pattern = MessagingPattern::pub_sub;
  } else if (subject_name.starts_with("commands.")) {
    spec.pattern = MessagingPattern::point_to_point;
  } else if (subject_name.starts_with("queries.")) {
    co_return Error(errc::invalid_argument,
                    "consumer_lag: " + subject_name +
                        " is a query subject; queries wait for no consumer group");
  } else {
    spec.pattern = MessagingPattern::streaming;
    spec.kind = DestinationKind::stream;
  }
  auto target =
      impl_->target(kOperation, subject::type_of(subject_name), spec.pattern, Impl::Use::subscribe);
  if (!target) co_return std::move(target).error();
  spec.guarantee = target->config().delivery_guarantee;
  if (!target->backend->capabilities().consumer_lag) {
    co_return Error(errc::unimplemented, "consumer_lag: backend " +
                                             std::string(target->backend->name()) +
                                             " cannot tell a consumer group's lag");
  }
  const auto deadline = SteadyClock::now() + target->config().timeout;
  auto lag = co_await target->backend->consumer_lag(std::move(spec), deadline);
  if (!lag) co_return std::move(lag).error().with_context("consumer_lag " + subject_name);
  co_return *lag;
}

asio::awaitable<Result<std::size_t>> UnifiedEventBus::purge_dead_letters(DeadLetterFilter filter) {
  auto backends = dead_letter_backends(*impl_, "purge_dead_letters");
  if (!backends) co_return backends.error();
  co_return co_await detail::purge_dead_letters(std::move(*backends), std::move(filter));
}

}  // namespace marty::messaging
