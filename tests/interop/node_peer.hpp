#pragma once

// A foreign peer for the interop tests: a script in tests/interop run by Node.js with a broker's
// own JavaScript client (pinned in tests/interop/package.json, installed by scripts/js-deps.sh
// into MARTY_INTEROP_NODE_PATH). It prints one JSON object per line on stdout, each with an
// "event" member ("ready", "received", "answered", ...); the test waits for those lines.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

extern char** environ;

namespace marty::messaging::testing {

/// Where the peers' npm packages are; empty when scripts/js-deps.sh has not run.
inline std::string interop_node_path() {
  const char* path = std::getenv("MARTY_INTEROP_NODE_PATH");
  return path != nullptr ? path : "";
}

class NodePeer {
 public:
  /// Starts `node tests/interop/<script> args...` in the background.
  NodePeer(const std::string& script, const std::vector<std::string>& args) {
    char pattern[] = "/tmp/marty-peer-XXXXXX";
    dir_ = ::mkdtemp(pattern);
    std::vector<std::string> argv{"node", "--unhandled-rejections=strict",
                                  std::string(MARTY_INTEROP_DIR) + "/" + script};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> raw;
    for (auto& arg : argv) raw.push_back(arg.data());
    raw.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, (dir_ / "out").c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&actions, 2, (dir_ / "err").c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    if (::posix_spawnp(&pid_, "node", &actions, nullptr, raw.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
  }
  NodePeer(const NodePeer&) = delete;
  NodePeer& operator=(const NodePeer&) = delete;
  ~NodePeer() {
    if (pid_ > 0 && !exit_code_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  bool started() const { return pid_ > 0; }

  /// Every JSON line printed so far (lines that are not JSON are skipped).
  std::vector<nlohmann::json> lines() const {
    std::vector<nlohmann::json> out;
    std::ifstream file(dir_ / "out");
    for (std::string line; std::getline(file, line);) {
      auto parsed = nlohmann::json::parse(line, nullptr, false);
      if (!parsed.is_discarded()) out.push_back(std::move(parsed));
    }
    return out;
  }

  /// The first line whose "event" is `event`, waiting up to `limit` for it; nullopt when it
  /// did not come (the peer ended or the time passed).
  std::optional<nlohmann::json> wait_for(
      std::string_view event, std::chrono::milliseconds limit = std::chrono::seconds(20)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (true) {
      for (auto& line : lines()) {
        if (line.is_object() && line.value("event", "") == event) return line;
      }
      if (finished() || std::chrono::steady_clock::now() >= deadline) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  /// Waits for the peer to end; its exit code, or -1 when it was still running at `limit` (it
  /// is then killed).
  int wait(std::chrono::milliseconds limit = std::chrono::seconds(30)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!finished()) {
      if (std::chrono::steady_clock::now() >= deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        exit_code_ = -1;
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return *exit_code_;
  }

  /// What it printed, for failure messages.
  std::string transcript() const {
    auto read = [](const std::filesystem::path& path) {
      std::ifstream file(path);
      std::stringstream text;
      text << file.rdbuf();
      return text.str();
    };
    return "stdout:\n" + read(dir_ / "out") + "stderr:\n" + read(dir_ / "err");
  }

 private:
  bool finished() {
    if (exit_code_) return true;
    if (pid_ <= 0) {
      exit_code_ = 127;
      return true;
    }
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return true;
    }
    return false;
  }

  std::filesystem::path dir_;
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
};

}  // namespace marty::messaging::testing
