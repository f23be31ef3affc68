#pragma once
// The saga of the crash test, shared by the orchestrator child and the test's participants.
#include "marty/messaging/saga.hpp"

namespace crash_test {

inline marty::messaging::saga::SagaDefinition checkout_saga() {
  using namespace std::chrono_literals;
  namespace saga = marty::messaging::saga;
  auto step = [](std::string name, std::string service, std::string action,
                 std::string compensation) {
    saga::SagaStep s;
    s.name = std::move(name);
    s.service = std::move(service);
    s.action = std::move(action);
    s.compensation = std::move(compensation);
    s.timeout = 2s;
    s.retry.max_attempts = 5;
    s.retry.initial_backoff = 20ms;
    s.retry.max_backoff = 200ms;
    return s;
  };
  saga::SagaDefinition d;
  d.name = "checkout";
  d.steps = {step("reserve", "crash_inventory", "reserve", "release"),
             step("charge", "crash_payment", "charge", "refund"),
             step("ship", "crash_shipping", "ship", "unship")};
  d.compensation_retry.initial_backoff = 20ms;
  d.compensation_retry.max_backoff = 200ms;
  return d;
}

}  // namespace crash_test
