// The README's first example, compiled and run by the tests so that it stays true.
#include <cstdio>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>

#include "marty/messaging.hpp"

namespace mm = marty::messaging;
using namespace std::chrono_literals;

asio::awaitable<void> shop(mm::UnifiedEventBus& bus) {
  // Queries: the handler's value is the reply; its error reaches the caller as that error.
  std::vector<std::string> queries{"check_stock"};
  auto handled = co_await bus.handle_queries(
      queries,
      [](mm::Message q) -> asio::awaitable<mm::Result<mm::Json>> {
        co_return mm::Json{{"sku", q.json()["sku"]}, {"available", 3}};
      },
      "inventory");
  if (!handled) std::puts(handled.error().describe().c_str());

  mm::Json event{{"user_id", "123"}};
  if (auto sent = co_await bus.publish_event("user_registered", std::move(event)); !sent) {
    std::puts(sent.error().describe().c_str());
  }
  mm::Json sku{{"sku", "A-1"}};
  auto stock = co_await bus.query("check_stock", std::move(sku), "inventory", 2s);
  std::printf("stock: %s\n", stock ? stock->dump().c_str() : stock.error().describe().c_str());
}

int main() {
  asio::io_context io;
  auto bus = mm::create_unified_event_bus(io.get_executor());  // memory backend by default
  int status = 1;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        if (auto started = co_await bus->start(); !started) co_return;  // says what and why
        co_await shop(*bus);
        if (auto stopped = co_await bus->stop(); stopped) status = 0;
      },
      asio::detached);
  io.run();
  return status;
}
