#pragma once

#include <functional>
#include <map>
#include <memory>
#include <ostream>
#include <string>

#include <gtest/gtest.h>

#include "marty/messaging.hpp"

namespace marty::messaging::conformance {

/// A backend as the suite sees it. Every backend runs the same tests; a test that needs a
/// capability the backend does not declare is skipped, and the report says why.
struct BackendUnderTest {
  /// Names the report and the test instantiation ("memory", "memory_generic_reply").
  std::string name;
  MessageBackendType type = MessageBackendType::memory;
  /// Called before each test: start from a clean broker state where the backend allows it.
  std::function<void()> reset;
  /// A new backend (connection) to the test's broker; each bus in a test gets its own.
  std::function<std::shared_ptr<Backend>()> connect;
  /// What the backend does but its test environment cannot show (an emulator's gaps), each
  /// with the reason: the tests that need it are skipped, and the report says why. Keys are
  /// the behaviours the suite names: "redelivery" (a nacked or released message comes back).
  std::map<std::string, std::string> environment_cannot_show;
};

inline void PrintTo(const BackendUnderTest& backend, std::ostream* os) {
  *os << backend.name;
}

/// Registers the listener that writes `<dir>/<backend>.json` (the capability report) at the
/// end of the run. `dir` comes from MARTY_CONFORMANCE_REPORT_DIR, else the working directory.
void install_report_writer(const std::vector<BackendUnderTest>& backends);

/// main() of a broker's suite: fails at once when `url_variable` (the broker's address, which
/// scripts/brokers exports) is not set, since a missing broker is a failure; otherwise writes
/// the reports of `backends` and runs every test.
int run_broker_suite(int argc, char** argv, const char* url_variable, const char* broker,
                     const std::vector<BackendUnderTest>& backends);

/// The suite's fixture: each test makes buses ("service instances") on the backend under test.
class Conformance : public ::testing::TestWithParam<BackendUnderTest> {
 protected:
  void SetUp() override;
  /// A started bus whose only backend is a new connection to the test's broker. Retry backoff
  /// is shortened (5..50 ms) so redelivery tests run quickly.
  std::unique_ptr<BlockingEventBus> make_bus(std::string service = "conformance",
                                             std::shared_ptr<Tracer> tracer = nullptr);
  /// A name unique to this test run, so tests on a shared broker never see each other.
  std::string unique(std::string_view base) const { return std::string(base) + "_" + uid_; }
  const Capabilities& caps() const { return caps_; }
  /// Why the test environment cannot show `behaviour`; empty when it can.
  std::string cannot_show(const std::string& behaviour) const {
    const auto& limits = GetParam().environment_cannot_show;
    auto it = limits.find(behaviour);
    return it == limits.end() ? std::string() : it->second;
  }

 private:
  std::string uid_;
  Capabilities caps_;
};

}  // namespace marty::messaging::conformance
