// The order flow of a small shop, on the embedded backend: four services, each with its own bus,
// talking through one in-process broker. Shows a query, commands, events, a stream batch and a
// compensation (a declined payment releases the stock reserved for it); then the same checkout
// as a saga, whose orchestrator compensates the declined order by itself.
#include <unistd.h>

#include <cstdio>
#include <map>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include "marty/messaging.hpp"
#include "marty/messaging/saga_manager.hpp"

namespace mm = marty::messaging;
using namespace std::chrono_literals;
using asio::awaitable;

namespace {

const bool kColour = isatty(STDOUT_FILENO) != 0;

// One line per thing that happened: who, which way, what.
void say(const char* service, const char* arrow, const std::string& text) {
  const char* colour = "";
  if (kColour) {
    static const std::map<std::string, const char*> colours{{"orders", "\033[36m"},
                                                            {"inventory", "\033[33m"},
                                                            {"payment", "\033[35m"},
                                                            {"analytics", "\033[32m"}};
    auto it = colours.find(service);
    colour = it != colours.end() ? it->second : "";
  }
  std::printf("  %s%-10s%s %s %s\n", colour, service, kColour ? "\033[0m" : "", arrow,
              text.c_str());
  if (!kColour) std::fflush(stdout);
}

void fail(const char* what, const mm::Error& error) {
  std::fprintf(stderr, "demo failed: %s: %s\n", what, error.describe().c_str());
  std::exit(1);
}

awaitable<void> sleep_for(std::chrono::milliseconds duration) {
  asio::steady_timer timer(co_await asio::this_coro::executor, duration);
  co_await timer.async_wait(asio::use_awaitable);
}

struct Shop {
  std::map<std::string, int> stock{{"LAPTOP-15", 3}, {"DOCK-USB-C", 10}};
  std::map<std::string, std::string> order_state;  // order id -> placed/confirmed/cancelled
  std::size_t activity_seen = 0;
  std::size_t activity_published = 0;
};

std::shared_ptr<mm::UnifiedEventBus> service_bus(asio::io_context& io, const char* name,
                                                 const std::shared_ptr<mm::MemoryBroker>& broker) {
  mm::EventBusOptions options;
  options.service_name = name;
  auto bus = mm::create_unified_event_bus(io.get_executor(), options);
  if (auto registered =
          bus->register_backend(mm::MessageBackendType::memory, mm::make_memory_backend(broker));
      !registered) {
    fail("register_backend", registered.error());
  }
  return bus;
}

awaitable<void> record_activity(mm::UnifiedEventBus& bus, Shop& shop, std::string order_id,
                                std::string what) {
  ++shop.activity_published;
  std::vector<mm::Json> events{mm::Json{{"order", order_id}, {"what", what}}};
  auto appended = co_await bus.stream_events("order-activity", std::move(events), order_id);
  if (!appended) fail("stream_events", appended.error());
}

awaitable<void> run_inventory(mm::UnifiedEventBus& bus, Shop& shop) {
  auto stock_query = [&shop](mm::Message q) -> awaitable<mm::Result<mm::Json>> {
    const std::string sku = q.json()["sku"];
    auto it = shop.stock.find(sku);
    if (it == shop.stock.end()) co_return mm::Error(mm::errc::not_found, "unknown sku " + sku);
    say("inventory", "<-",
        "query check_stock " + sku + ": " + std::to_string(it->second) + " in stock");
    co_return mm::Json{{"sku", sku}, {"available", it->second}};
  };
  auto reservations = [&shop](mm::Message c) -> awaitable<mm::Result<void>> {
    const std::string sku = c.json()["sku"];
    const int qty = c.json()["qty"];
    if (c.type() == "reserve_stock") {
      shop.stock[sku] -= qty;
      say("inventory", "<-",
          "command reserve_stock " + sku + " x" + std::to_string(qty) + " for " +
              c.json()["order"].get<std::string>() + " (" + std::to_string(shop.stock[sku]) +
              " left)");
    } else {
      shop.stock[sku] += qty;
      say("inventory", "<-",
          "command release_stock " + sku + " x" + std::to_string(qty) + " (compensation; " +
              std::to_string(shop.stock[sku]) + " left)");
    }
    co_return mm::ok();
  };
  std::vector<std::string> queries{"check_stock"};
  if (auto r = co_await bus.handle_queries(queries, stock_query, "inventory"); !r) {
    fail("handle_queries", r.error());
  }
  std::vector<std::string> commands{"reserve_stock", "release_stock"};
  if (auto r = co_await bus.handle_commands(commands, reservations, "inventory"); !r) {
    fail("handle_commands", r.error());
  }
}

awaitable<void> run_payment(mm::UnifiedEventBus& bus) {
  auto charge = [&bus](mm::Message c) -> awaitable<mm::Result<void>> {
    const mm::Json& order = c.json();
    const double amount = order["amount"];
    const std::string id = order["order"];
    mm::MessageMetadata md;
    md.correlation_id = id;
    md.causation_id = c.id();
    if (amount > 1000.0) {
      say("payment", "<-", "command process_payment " + id + ": card declined (limit 1000.00)");
      mm::Json failed{{"order", id}, {"reason", "card declined"}};
      auto sent = co_await bus.publish_event("payment_failed", std::move(failed), md);
      if (!sent) co_return sent.error();
      co_return mm::ok();
    }
    say("payment", "<-", "command process_payment " + id + ": charged " + order["amount"].dump());
    mm::Json completed{{"order", id}};
    co_return co_await bus.publish_event("payment_completed", std::move(completed), md);
  };
  std::vector<std::string> commands{"process_payment"};
  if (auto r = co_await bus.handle_commands(commands, charge, "payment"); !r) {
    fail("handle_commands", r.error());
  }
}

awaitable<void> run_analytics(mm::UnifiedEventBus& bus, Shop& shop) {
  auto batch = [&shop](std::vector<mm::Message> messages) -> awaitable<mm::Result<void>> {
    std::string line = "stream batch of " + std::to_string(messages.size()) + ":";
    for (const auto& m : messages) {
      line +=
          " " + m.json()["order"].get<std::string>() + "/" + m.json()["what"].get<std::string>();
    }
    say("analytics", "<=", line);
    shop.activity_seen += messages.size();
    co_return mm::ok();
  };
  mm::StreamOptions options;
  options.batch_size = 4;
  options.max_wait = 150ms;
  options.start = mm::StartPosition::earliest();
  if (auto r = co_await bus.process_stream("order-activity", batch, "analytics", options); !r) {
    fail("process_stream", r.error());
  }
}

awaitable<void> run_orders(mm::UnifiedEventBus& bus, Shop& shop) {
  auto outcomes = [&bus, &shop](mm::Message event) -> awaitable<mm::Result<void>> {
    const std::string id = event.json()["order"];
    if (event.type() == "payment_completed") {
      say("orders", "<-", "event payment_completed " + id + " -> order confirmed");
      shop.order_state[id] = "confirmed";
      co_await record_activity(bus, shop, id, "confirmed");
      mm::Json confirmed{{"order", id}};
      co_return co_await bus.publish_event("order_confirmed", std::move(confirmed));
    }
    say("orders", "<-",
        "event payment_failed " + id + " (" + event.json()["reason"].get<std::string>() +
            "): compensating");
    // Compensation: undo the reservation made for this order, then cancel it.
    mm::Json release{{"order", id}, {"sku", "LAPTOP-15"}, {"qty", 1}};
    auto released = co_await bus.send_command("release_stock", std::move(release), "inventory");
    if (!released) co_return released.error();
    shop.order_state[id] = "cancelled";
    co_await record_activity(bus, shop, id, "cancelled");
    mm::Json cancelled{{"order", id}};
    co_return co_await bus.publish_event("order_cancelled", std::move(cancelled));
  };
  std::vector<std::string> events{"payment_completed", "payment_failed"};
  if (auto r = co_await bus.subscribe_to_events(events, outcomes, "orders"); !r) {
    fail("subscribe_to_events", r.error());
  }
}

awaitable<void> place_order(mm::UnifiedEventBus& orders, Shop& shop, std::string id,
                            double amount) {
  std::printf("\nOrder %s: 1 x LAPTOP-15 for %.2f\n", id.c_str(), amount);
  say("orders", "->", "query inventory.check_stock LAPTOP-15");
  mm::Json wanted{{"sku", "LAPTOP-15"}};
  auto stock = co_await orders.query("check_stock", std::move(wanted), "inventory", 2s);
  if (!stock) fail("query check_stock", stock.error());
  if ((*stock)["available"].get<int>() < 1) {
    say("orders", "  ", "out of stock");
    co_return;
  }
  shop.order_state[id] = "placed";
  mm::Json order{{"order", id}, {"amount", amount}};
  auto placed = co_await orders.publish_event("order_placed", std::move(order));
  if (!placed) fail("publish_event", placed.error());
  say("orders", "->", "event order_placed " + id);
  co_await record_activity(orders, shop, id, "placed");
  say("orders", "->", "command inventory.reserve_stock");
  mm::Json reservation{{"order", id}, {"sku", "LAPTOP-15"}, {"qty", 1}};
  auto reserved =
      co_await orders.send_command("reserve_stock", std::move(reservation), "inventory");
  if (!reserved) fail("send_command reserve_stock", reserved.error());
  say("orders", "->", "command payment.process_payment");
  mm::Json payment{{"order", id}, {"amount", amount}};
  auto charged = co_await orders.send_command("process_payment", std::move(payment), "payment");
  if (!charged) fail("send_command process_payment", charged.error());
  // Wait for the payment outcome (delivered to the orders service as an event).
  for (int i = 0; i < 500 && shop.order_state[id] == "placed"; ++i) co_await sleep_for(10ms);
}

mm::saga::SagaDefinition checkout_saga() {
  auto step = [](const char* name, const char* service, const char* action,
                 const char* compensation) {
    mm::saga::SagaStep s;
    s.name = name;
    s.service = service;
    s.action = action;
    s.compensation = compensation;
    s.timeout = 2s;
    return s;
  };
  const auto hold = step("hold", "inventory", "hold_stock", "release_hold");
  const auto charge = step("charge", "payment", "charge_card", "refund_card");
  mm::saga::SagaDefinition saga;
  saga.name = "checkout";
  saga.steps = {hold, charge};
  saga.require_compensations = true;
  return saga;
}

// The checkout as a saga: the orchestrator (on the orders service's bus) holds stock, then
// charges the card; when the charge is declined it releases the hold by itself.
awaitable<bool> run_checkout_saga(std::shared_ptr<mm::UnifiedEventBus> orders,
                                  std::shared_ptr<mm::UnifiedEventBus> inventory,
                                  std::shared_ptr<mm::UnifiedEventBus> payment, Shop& shop) {
  using mm::saga::SagaStepRequest;
  std::printf("\nThe same checkout as a saga (steps: hold stock, charge card)\n");
  auto manager = mm::saga::create_distributed_saga_manager(
      orders, std::make_shared<mm::saga::InMemorySagaStore>());
  if (auto registered = manager->register_saga_definition(checkout_saga()); !registered) {
    fail("register_saga_definition", registered.error());
  }
  mm::saga::SagaParticipant stock(inventory, "inventory");
  stock.on_step(
      "hold_stock", mm::saga::sync_step_handler([&shop](const SagaStepRequest& r) {
        --shop.stock["LAPTOP-15"];
        say("inventory", "<=",
            "saga step hold_stock " + r.context["order"].get<std::string>() + " (" +
                std::to_string(shop.stock["LAPTOP-15"]) + " left)");
        return mm::Result<mm::Json>(mm::Json{{"context", {{"hold", "H-" + r.saga_id.substr(30)}}}});
      }));
  stock.on_compensation(
      "release_hold", mm::saga::sync_step_handler([&shop](const SagaStepRequest& r) {
        ++shop.stock["LAPTOP-15"];
        say("inventory", "<=",
            "saga compensation release_hold " + r.context["order"].get<std::string>() + " (" +
                std::to_string(shop.stock["LAPTOP-15"]) + " left)");
        return mm::Result<mm::Json>(mm::Json::object());
      }));
  mm::saga::SagaParticipant card(payment, "payment");
  card.on_step(
      "charge_card", mm::saga::sync_step_handler([](const SagaStepRequest& r) {
        const double amount = r.context["amount"].get<double>();
        const std::string order = r.context["order"].get<std::string>();
        if (amount > 1000) {
          say("payment", "<=", "saga step charge_card " + order + ": declined (limit 1000.00)");
          return mm::Result<mm::Json>(mm::Error(mm::errc::failed_precondition, "card declined"));
        }
        say("payment", "<=", "saga step charge_card " + order + ": approved");
        return mm::Result<mm::Json>(mm::Json::object());
      }));
  card.on_compensation(
      "refund_card", mm::saga::sync_step_handler([](const SagaStepRequest& r) {
        say("payment",
            "<=", "saga compensation refund_card " + r.context["order"].get<std::string>());
        return mm::Result<mm::Json>(mm::Json::object());
      }));
  for (auto* participant : {&stock, &card}) {
    if (auto started = co_await participant->start(); !started)
      fail("participant", started.error());
  }
  const int stock_before = shop.stock["LAPTOP-15"];
  std::map<std::string, std::string> outcome;
  for (const auto& [order, amount] : {std::pair<std::string, double>{"S-2001", 899.0},
                                      std::pair<std::string, double>{"S-2002", 1499.0}}) {
    say("orders", "->", "start saga checkout for " + order);
    mm::Json context{{"order", order}, {"amount", amount}};
    auto id = co_await manager->create_and_start_saga("checkout", std::move(context));
    if (!id) fail("create_and_start_saga", id.error());
    auto status = co_await manager->wait_for(*id, 10s);
    if (!status) fail("wait_for", status.error());
    const auto& record = status->record;
    std::string line = "saga " + order + ": " + std::string(mm::saga::to_string(record.state));
    if (!record.failure.empty()) line += " (" + record.failure + ")";
    say("orders", "<-", line);
    outcome[order] = std::string(mm::saga::to_string(record.state));
  }
  co_await manager->stop();
  co_return outcome["S-2001"] == "completed" && outcome["S-2002"] == "compensated" &&
      shop.stock["LAPTOP-15"] == stock_before - 1;
}

awaitable<void> demo(asio::io_context& io) {
  auto broker = mm::make_memory_broker();
  Shop shop;
  auto orders = service_bus(io, "orders", broker);
  auto inventory = service_bus(io, "inventory", broker);
  auto payment = service_bus(io, "payment", broker);
  auto analytics = service_bus(io, "analytics", broker);
  for (auto* bus : {orders.get(), inventory.get(), payment.get(), analytics.get()}) {
    if (auto started = co_await bus->start(); !started) fail("start", started.error());
  }
  std::printf("Marty Messaging demo: 4 services on the embedded backend (no broker needed)\n");
  co_await run_inventory(*inventory, shop);
  co_await run_payment(*payment);
  co_await run_analytics(*analytics, shop);
  co_await run_orders(*orders, shop);

  co_await place_order(*orders, shop, "A-1001", 899.00);
  co_await place_order(*orders, shop, "A-1002", 1499.00);

  // Let the analytics batch flush (size 4, or 150 ms after its first message).
  for (int i = 0; i < 500 && shop.activity_seen < shop.activity_published; ++i) {
    co_await sleep_for(10ms);
  }
  std::printf("\nOutcome\n");
  for (const auto& [id, state] : shop.order_state)
    std::printf("  %s: %s\n", id.c_str(), state.c_str());
  std::printf(
      "  LAPTOP-15 stock: %d (started at 3; the declined order's reservation was released)\n",
      shop.stock["LAPTOP-15"]);
  std::printf("  analytics saw %zu of %zu stream events\n", shop.activity_seen,
              shop.activity_published);
  bool as_expected = shop.order_state["A-1001"] == "confirmed" &&
                     shop.order_state["A-1002"] == "cancelled" && shop.stock["LAPTOP-15"] == 2 &&
                     shop.activity_seen == shop.activity_published;
  const bool saga_as_expected = co_await run_checkout_saga(orders, inventory, payment, shop);
  as_expected = as_expected && saga_as_expected;
  std::printf("  LAPTOP-15 stock after the sagas: %d (one held for S-2001; S-2002's released)\n",
              shop.stock["LAPTOP-15"]);
  for (auto* bus : {orders.get(), inventory.get(), payment.get(), analytics.get()}) {
    if (auto stopped = co_await bus->stop(2s); !stopped) fail("stop", stopped.error());
  }
  std::printf("\n%s\n", as_expected ? "Demo finished: every step happened as expected."
                                    : "Demo finished, but something did not happen as expected.");
  if (!as_expected) std::exit(1);
}

}  // namespace

int main() {
  asio::io_context io;
  asio::co_spawn(io, demo(io), [](std::exception_ptr error) {
    if (error) std::rethrow_exception(error);
  });
  io.run();
}
