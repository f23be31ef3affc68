#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>

#include "conformance.hpp"

namespace marty::messaging::conformance {
namespace {

class ReportWriter : public ::testing::EmptyTestEventListener {
 public:
  explicit ReportWriter(std::vector<BackendUnderTest> backends) : backends_(std::move(backends)) {}

  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (!info.value_param()) return;
    const std::string backend = info.value_param();
    const auto* result = info.result();
    Json entry{{"test", info.name()}};
    if (result->Skipped()) {
      entry["status"] = "skipped";
      for (int i = 0; i < result->total_part_count(); ++i) {
        const auto& part = result->GetTestPartResult(i);
        if (part.skipped() && part.message()) entry["reason"] = part.message();
      }
    } else {
      entry["status"] = result->Passed() ? "passed" : "failed";
    }
    results_[backend].push_back(std::move(entry));
  }

  void OnTestProgramEnd(const ::testing::UnitTest&) override {
    const char* dir = std::getenv("MARTY_CONFORMANCE_REPORT_DIR");
    const std::string base = dir && *dir ? dir : ".";
    for (const auto& backend : backends_) {
      auto it = results_.find(backend.name);
      if (it == results_.end()) continue;  // filtered out of this run
      std::size_t passed = 0, failed = 0, skipped = 0;
      for (const auto& r : it->second) {
        const std::string status = r["status"];
        passed += status == "passed";
        failed += status == "failed";
        skipped += status == "skipped";
      }
      auto probe = backend.connect();
      Json report{{"backend", backend.name},
                  {"capabilities", to_json(probe->capabilities())},
                  {"summary", {{"passed", passed}, {"failed", failed}, {"skipped", skipped}}},
                  {"results", it->second}};
      std::ofstream out(base + "/" + backend.name + ".json");
      out << report.dump(2) << "\n";
    }
  }

 private:
  std::vector<BackendUnderTest> backends_;
  std::map<std::string, std::vector<Json>> results_;
};

}  // namespace

void install_report_writer(const std::vector<BackendUnderTest>& backends) {
  ::testing::UnitTest::GetInstance()->listeners().Append(new ReportWriter(backends));
}

int run_broker_suite(int argc, char** argv, const char* url_variable, const char* broker,
                     const std::vector<BackendUnderTest>& backends) {
  ::testing::InitGoogleTest(&argc, argv);
  const char* url = std::getenv(url_variable);
  if (url == nullptr || *url == '\0') {
    std::fprintf(stderr, "%s is not set: start the server with scripts/brokers start %s\n",
                 url_variable, broker);
    return 1;
  }
  install_report_writer(backends);
  return RUN_ALL_TESTS();
}

}  // namespace marty::messaging::conformance
