#pragma once
// Saga steps and definitions shared by the saga tests (and the crash test's child process).
#include <string>

#include "marty/messaging/saga.hpp"

namespace marty::messaging::testing {

/// A critical step of `service` with its compensation, 2 s per attempt, quick retries.
using saga::SagaDefinition;
using saga::SagaStep;

inline SagaStep make_step(std::string name, std::string service, std::string action,
                          std::string compensation, int max_attempts = 3) {
  using namespace std::chrono_literals;
  SagaStep step;
  step.name = std::move(name);
  step.service = std::move(service);
  step.action = std::move(action);
  step.compensation = std::move(compensation);
  step.timeout = 2s;
  step.retry.max_attempts = max_attempts;
  step.retry.initial_backoff = 10ms;
  step.retry.max_backoff = 200ms;
  return step;
}

/// The crash test's checkout: reserve, charge, ship, each on a service of its own.
inline SagaDefinition crash_checkout_saga() {
  using namespace std::chrono_literals;
  SagaDefinition d;
  d.name = "checkout";
  d.steps = {make_step("reserve", "crash_inventory", "reserve", "release", 5),
             make_step("charge", "crash_payment", "charge", "refund", 5),
             make_step("ship", "crash_shipping", "ship", "unship", 5)};
  d.compensation_retry.initial_backoff = 20ms;
  d.compensation_retry.max_backoff = 200ms;
  return d;
}

}  // namespace marty::messaging::testing
