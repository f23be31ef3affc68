#include "marty/messaging/blocking_event_bus.hpp"

#include "marty/messaging/detail/sync_handler.hpp"

namespace marty::messaging {

MessageHandler sync_handler(std::function<Result<void>(const Message&)> fn) {
  return detail::SyncMessageCall{std::move(fn)};
}

QueryHandler sync_query_handler(std::function<Result<Json>(const Message&)> fn) {
  return [fn = std::move(fn)](Message message) -> asio::awaitable<Result<Json>> {
    co_return fn(message);
  };
}

BatchProcessor sync_batch_processor(std::function<Result<void>(const std::vector<Message>&)> fn) {
  return [fn = std::move(fn)](std::vector<Message> batch) -> asio::awaitable<Result<void>> {
    co_return fn(batch);
  };
}

BlockingEventBus::BlockingEventBus(EventBusOptions options, std::size_t threads)
    : work_(asio::make_work_guard(io_)),
      bus_(create_unified_event_bus(io_.get_executor(), std::move(options))) {
  if (threads == 0) threads = 1;
  for (std::size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { io_.run(); });
}

BlockingEventBus::~BlockingEventBus() {
  if (bus_->running()) (void)stop();
  bus_.reset();
  work_.reset();
  io_.stop();
  for (auto& thread : threads_) thread.join();
}

}  // namespace marty::messaging
