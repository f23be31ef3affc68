#pragma once

#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/use_future.hpp>

#include "marty/messaging/event_bus.hpp"

namespace marty::messaging {

/// Adapts a plain function into a MessageHandler (it runs on the bus's thread, so keep it short).
MessageHandler sync_handler(std::function<Result<void>(const Message&)> fn);
/// Adapts a plain function into a QueryHandler.
QueryHandler sync_query_handler(std::function<Result<Json>(const Message&)> fn);
/// Adapts a plain function into a BatchProcessor.
BatchProcessor sync_batch_processor(std::function<Result<void>(const std::vector<Message>&)> fn);

/// The same calls as UnifiedEventBus without coroutines, for scripts, tools and tests. It owns
/// an io_context and the threads that run it; handlers run on those threads.
///
/// Never call a blocking method from inside a handler: the handler's thread would wait for
/// itself. Thread-safety: every method may be called from any other thread.
class BlockingEventBus {
 public:
  explicit BlockingEventBus(EventBusOptions options = {}, std::size_t threads = 1);
  /// Stops the bus (if running) and joins the threads.
  ~BlockingEventBus();
  BlockingEventBus(const BlockingEventBus&) = delete;
  BlockingEventBus& operator=(const BlockingEventBus&) = delete;

  /// The wrapped bus, for configuration calls and for co_spawn.
  UnifiedEventBus& bus() noexcept { return *bus_; }
  asio::io_context& context() noexcept { return io_; }

  /// Runs any bus operation on the bus's executor and waits for its result.
  template <class T>
  T run(asio::awaitable<T> operation) {
    return asio::co_spawn(io_, std::move(operation), asio::use_future).get();
  }

  Result<void> start() { return run(bus_->start()); }
  Result<void> stop(std::optional<std::chrono::milliseconds> drain = {}) {
    return run(bus_->stop(drain));
  }
  Result<void> publish_event(std::string type, Json data, MessageMetadata metadata = {}) {
    return run(bus_->publish_event(std::move(type), std::move(data), std::move(metadata)));
  }
  Result<void> send_command(std::string type, Json data, std::string service,
                            MessageMetadata metadata = {}) {
    return run(bus_->send_command(std::move(type), std::move(data), std::move(service),
                                  std::move(metadata)));
  }
  Result<Json> query(std::string type, Json data, std::string service,
                     std::optional<std::chrono::milliseconds> timeout = {}) {
    return run(bus_->query(std::move(type), std::move(data), std::move(service), timeout));
  }
  Result<void> stream_events(std::string stream, std::vector<Json> events,
                             std::string partition_key = {}) {
    return run(bus_->stream_events(std::move(stream), std::move(events), std::move(partition_key)));
  }
  Result<SubscriptionId> subscribe_to_events(std::vector<std::string> types, MessageHandler handler,
                                             std::string group = {}) {
    return run(bus_->subscribe_to_events(std::move(types), std::move(handler), std::move(group)));
  }
  Result<SubscriptionId> subscribe_to_events(std::vector<std::string> types, MessageHandler handler,
                                             std::string group, HandlerOptions options) {
    return run(bus_->subscribe_to_events(std::move(types), std::move(handler), std::move(group),
                                         std::move(options)));
  }
  Result<SubscriptionId> handle_commands(std::vector<std::string> types, MessageHandler handler,
                                         std::string service) {
    return run(bus_->handle_commands(std::move(types), std::move(handler), std::move(service)));
  }
  Result<SubscriptionId> handle_commands(std::vector<std::string> types, MessageHandler handler,
                                         std::string service, HandlerOptions options) {
    return run(bus_->handle_commands(std::move(types), std::move(handler), std::move(service),
                                     std::move(options)));
  }
  Result<SubscriptionId> handle_queries(std::vector<std::string> types, QueryHandler handler,
                                        std::string service) {
    return run(bus_->handle_queries(std::move(types), std::move(handler), std::move(service)));
  }
  Result<SubscriptionId> handle_queries(std::vector<std::string> types, QueryHandler handler,
                                        std::string service, HandlerOptions options) {
    return run(bus_->handle_queries(std::move(types), std::move(handler), std::move(service),
                                    std::move(options)));
  }
  Result<SubscriptionId> process_stream(std::string stream, BatchProcessor processor,
                                        std::string group, StreamOptions options = {}) {
    return run(
        bus_->process_stream(std::move(stream), std::move(processor), std::move(group), options));
  }
  Result<void> unsubscribe(SubscriptionId id) { return run(bus_->unsubscribe(id)); }
  Result<std::vector<DeadLetter>> list_dead_letters(DeadLetterFilter filter) {
    return run(bus_->list_dead_letters(std::move(filter)));
  }
  Result<std::size_t> requeue_dead_letters(DeadLetterFilter filter) {
    return run(bus_->requeue_dead_letters(std::move(filter)));
  }
  Result<std::size_t> purge_dead_letters(DeadLetterFilter filter) {
    return run(bus_->purge_dead_letters(std::move(filter)));
  }
  Result<std::uint64_t> consumer_lag(std::string subject, std::string group) {
    return run(bus_->consumer_lag(std::move(subject), std::move(group)));
  }

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::shared_ptr<UnifiedEventBus> bus_;
  std::vector<std::thread> threads_;
};

}  // namespace marty::messaging
