#pragma once
// What the broker benchmarks share on the bus's side: a started bus on one backend, and
// publishing from many coroutines at once.
#include <atomic>
#include <cstdio>
#include <future>
#include <memory>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>

#include "bench_support.hpp"
#include "marty/messaging.hpp"

namespace marty::messaging::bench {

/// A started bus whose only backend is `backend`. `at_most_once_events`: events use an
/// at-most-once pattern config (pub/sub transports; without it a bus refuses the route of a
/// backend that only delivers at most once).
inline std::unique_ptr<BlockingEventBus> started_bus(MessageBackendType type,
                                                     std::shared_ptr<Backend> backend,
                                                     bool at_most_once_events) {
  auto bus = std::make_unique<BlockingEventBus>();
  check(bus->bus().register_backend(type, std::move(backend)).has_value(), "register");
  if (at_most_once_events) {
    auto pubsub = default_pattern_config(MessagingPattern::pub_sub);
    pubsub.delivery_guarantee = DeliveryGuarantee::at_most_once;
    check(bus->bus().update_pattern_config(MessagingPattern::pub_sub, pubsub).has_value(),
          "pattern config");
  }
  auto started = bus->start();
  if (!started) std::fprintf(stderr, "%s\n", started.error().describe().c_str());
  check(started.has_value(), "start");
  return bus;
}

/// Runs `publish_one` (a callable returning asio::awaitable<Result<void>>) `count` times in
/// all from `concurrency` coroutines on the bus's executor, and returns when all are done. A
/// publish that waits for the broker's reply would measure round trips if run one at a time;
/// `concurrency` in flight is the raw clients' pipelining window.
template <class PublishOne>
void publish_concurrently(BlockingEventBus& bus, std::size_t count, std::size_t concurrency,
                          PublishOne publish_one) {
  std::atomic<std::size_t> next{0};
  std::atomic<std::size_t> finished_workers{0};
  std::atomic<bool> failed{false};
  std::promise<void> all_done;
  auto worker = [&]() -> asio::awaitable<void> {
    while (next.fetch_add(1) < count) {
      Result<void> published = co_await publish_one();
      if (!published) {
        std::fprintf(stderr, "%s\n", published.error().describe().c_str());
        failed = true;
        break;
      }
    }
    if (finished_workers.fetch_add(1) + 1 == concurrency) all_done.set_value();
  };
  auto done = all_done.get_future();
  for (std::size_t i = 0; i < concurrency; ++i) {
    asio::co_spawn(bus.context(), worker(), asio::detached);
  }
  done.wait();
  check(!failed, "publish");
}

}  // namespace marty::messaging::bench
