#pragma once
// RabbitMQ nodes for tests that need a broker of their own (a restart, a crash, or users, vhosts
// and permissions the shared broker of scripts/brokers must not see changed).
//
// A node runs through the unwrapped scripts of /usr/lib/rabbitmq/bin (the /usr/sbin ones switch
// to the rabbitmq user and its /var/lib/rabbitmq), as whoever runs the test, with everything in
// a directory of its own: configuration, Erlang cookie ($HOME), data, logs. It listens on
// loopback only, on free ports, and has an epmd of its own on a free port. Starting takes about
// 10 s (the Erlang VM boots, then RabbitMQ).
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "server_process.hpp"

extern char** environ;

namespace marty::messaging::testing {

inline const std::filesystem::path kRabbitMqBin = "/usr/lib/rabbitmq/bin";

/// amqp://USER:PASSWORD@127.0.0.1:PORT/VHOST, the vhost percent-encoded ("/", the default
/// vhost, is an empty path).
inline std::string rabbitmq_url(int port, std::string_view user = "guest",
                                std::string_view password = "guest", std::string_view vhost = "/") {
  std::string path;
  if (vhost != "/") {
    constexpr char kHex[] = "0123456789ABCDEF";
    for (const unsigned char c : vhost) {
      if (std::isalnum(c) != 0 || c == '-' || c == '.' || c == '_' || c == '~') {
        path += static_cast<char>(c);
      } else {
        path += {'%', kHex[c >> 4], kHex[c & 15]};
      }
    }
  }
  return "amqp://" + std::string(user) + ":" + std::string(password) +
         "@127.0.0.1:" + std::to_string(port) + "/" + path;
}

namespace detail {

/// The applications `rabbit` needs, itself included, as directories of `plugins` (read from the
/// `applications` of their .app files); empty when the directory does not look as expected.
inline std::vector<std::filesystem::path> rabbitmq_core_apps(const std::filesystem::path& plugins) {
  namespace fs = std::filesystem;
  auto directory_of = [&](const std::string& app) {
    fs::path found;  // the newest version ("app-1.2.3"), should there be more than one
    std::error_code error;
    for (const auto& entry : fs::directory_iterator(plugins, error)) {
      const std::string name = entry.path().filename().string();
      if (name.size() > app.size() + 1 && name.compare(0, app.size() + 1, app + "-") == 0 &&
          std::isdigit(static_cast<unsigned char>(name[app.size() + 1])) && entry.is_directory() &&
          (found.empty() || found.filename().string() < name)) {
        found = entry.path();
      }
    }
    return found;
  };
  std::vector<fs::path> apps;
  std::set<std::string> seen;
  std::vector<std::string> queue{"rabbit"};
  while (!queue.empty()) {
    const std::string app = queue.back();
    queue.pop_back();
    if (!seen.insert(app).second) continue;
    const fs::path directory = directory_of(app);
    if (directory.empty()) {
      if (app == "rabbit") return {};
      continue;  // an Erlang/OTP application
    }
    std::ifstream file(directory / "ebin" / (app + ".app"));
    if (!file) return {};
    std::string text{std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
    text.erase(std::remove_if(text.begin(), text.end(),
                              [](unsigned char c) { return std::isspace(c) != 0; }),
               text.end());
    const auto start = text.find("{applications,[");
    if (start == std::string::npos) return {};
    const auto first = start + std::string_view("{applications,[").size();
    const auto end = text.find(']', first);
    if (end == std::string::npos) return {};
    std::stringstream list(text.substr(first, end - first));
    for (std::string dependency; std::getline(list, dependency, ',');) {
      if (!dependency.empty()) queue.push_back(dependency);
    }
    apps.push_back(directory);
  }
  return apps;
}

/// The process IDs of the process group `group`, read from /proc.
inline std::vector<pid_t> process_group(pid_t group) {
  std::vector<pid_t> members;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", error)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    std::ifstream file(entry.path() / "stat");
    std::string stat{std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
    // pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
    const auto paren = stat.rfind(')');
    if (paren == std::string::npos) continue;
    std::istringstream rest(stat.substr(paren + 1));
    char state = 0;
    pid_t parent = 0, process_group_id = 0;
    rest >> state >> parent >> process_group_id;
    if (process_group_id == group) members.push_back(std::stoi(name));
  }
  return members;
}

/// True when `pid` has ended: gone, or a zombie nobody reaped yet whose threads have all ended
/// (a multi-threaded process is a zombie as soon as its first thread ends, while the others may
/// still hold its sockets and files).
inline bool process_ended(pid_t pid) {
  const std::filesystem::path proc = "/proc/" + std::to_string(pid);
  std::ifstream file(proc / "stat");
  std::string stat{std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
  const auto paren = stat.rfind(')');
  if (paren == std::string::npos || paren + 2 >= stat.size()) return true;
  const char state = stat[paren + 2];
  if (state != 'Z' && state != 'X') return false;
  std::error_code error;
  const auto threads = std::distance(std::filesystem::directory_iterator(proc / "task", error),
                                     std::filesystem::directory_iterator());
  return threads <= 1;
}

}  // namespace detail

struct PrivateRabbitMqOptions {
  /// More lines for rabbitmq.conf, after the defaults (loopback_users = none, console log at
  /// warning level), e.g. "heartbeat = 5\n" or "default_user = alice\ndefault_pass = secret\n".
  std::string extra_config;
};

/// A RabbitMQ node for one test, on free ports (AMQP, Erlang distribution, epmd), with its
/// configuration, data and logs in a directory of its own. A restart keeps the ports and the
/// directory, so durable queues and persistent messages are there again. The guest user
/// (password guest) may connect.
class PrivateRabbitMq {
 public:
  explicit PrivateRabbitMq(PrivateRabbitMqOptions options = {}) {
    std::set<int> ports;
    while (ports.size() < 3) ports.insert(free_port());
    auto port = ports.begin();
    port_ = *port++;
    dist_port_ = *port++;
    epmd_port_ = *port;
    configure(options);
    start();
  }
  /// Stops the node at once (it and its data go), and its epmd.
  ~PrivateRabbitMq() {
    stop(SIGKILL);
    // epmd refuses while the node is registered, which it may be for a moment after the VM
    // ended; it answers -names as long as it runs.
    const std::string epmd_port = std::to_string(epmd_port_);
    for (int attempt = 0; attempt < 200; ++attempt) {
      if (run({"epmd", "-port", epmd_port, "-kill"}, "/dev/null") == 0 ||
          run({"epmd", "-port", epmd_port, "-names"}, "/dev/null") != 0) {
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
  }
  PrivateRabbitMq(const PrivateRabbitMq&) = delete;
  PrivateRabbitMq& operator=(const PrivateRabbitMq&) = delete;

  int port() const { return port_; }
  /// amqp://guest:guest@127.0.0.1:PORT/ (the default vhost).
  std::string url() const { return rabbitmq_url(port_); }
  std::string url(std::string_view user, std::string_view password,
                  std::string_view vhost = "/") const {
    return rabbitmq_url(port_, user, password, vhost);
  }
  /// The node's directory: configuration, Erlang cookie, data (mnesia) and logs.
  const std::filesystem::path& dir() const { return dir_.path(); }
  bool running() const { return pid_ > 0; }

  /// Starts the node (a no-op when it runs) and waits until it serves: the AMQP port is open
  /// and `rabbitmqctl await_startup` says it booted. False when it did not within `limit`.
  bool start(std::chrono::seconds limit = std::chrono::seconds(90)) {
    if (pid_ > 0) return true;
    std::filesystem::remove(dir() / "rabbit.pid");
    pid_ = launch(kRabbitMqBin / "rabbitmq-server", {}, dir() / "node.log");
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!port_open(port_)) {
      int status = 0;
      if (pid_ <= 0 || ::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    const auto left = std::chrono::duration_cast<std::chrono::seconds>(
        deadline - std::chrono::steady_clock::now());
    const long wait = std::max<long>(5, static_cast<long>(left.count()));
    const bool booted = ctl({"-q", "await_startup", "--timeout", std::to_string(wait)}) == 0;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {  // it ended while booting
      pid_ = -1;
      return false;
    }
    return booted;
  }

  /// Stops the node and waits until it has ended. SIGTERM: a clean shutdown (about 2-3 s; after
  /// 60 s, SIGKILL); SIGKILL: a crash, the node and its helper processes killed at once.
  void stop(int signal = SIGTERM) {
    if (pid_ <= 0) return;
    std::vector<pid_t> members = detail::process_group(pid_);
    if (signal == SIGKILL) {
      ::kill(-pid_, SIGKILL);
    } else {
      // The wrapper script passes the signal on to the VM and waits for it.
      ::kill(pid_, signal);
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      int status = 0;
      while (::waitpid(pid_, &status, WNOHANG) == 0) {
        if (std::chrono::steady_clock::now() >= deadline) {
          members = detail::process_group(pid_);
          ::kill(-pid_, SIGKILL);
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    // The VM, a grandchild, is reaped by someone else: wait until it has ended and its listener
    // is gone, so that a start right after finds the ports free (and does not take the old
    // listener for the new node's).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    auto ended = [&] {
      return std::all_of(members.begin(), members.end(), detail::process_ended) &&
             !port_open(port_);
    };
    while (!ended() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  /// stop(signal), then start() on the same ports and directory.
  bool restart(int signal = SIGTERM) {
    stop(signal);
    return start();
  }

  /// Runs rabbitmqctl against the node (e.g. {"add_user", "alice", "secret"},
  /// {"set_permissions", "-p", "/", "alice", ".*", ".*", ".*"}, {"add_vhost", "v1"},
  /// {"delete_user", "alice"}) and returns its exit code (-1: it did not exit normally). Its
  /// output goes to log(). About 1 s per call.
  int ctl(std::vector<std::string> args) const {
    return run_path(kRabbitMqBin / "rabbitmqctl", std::move(args), dir() / "ctl.log");
  }

  /// What the node and rabbitmqctl printed, for the message of a failing test.
  std::string log() const {
    auto read = [](const std::filesystem::path& path) {
      std::ifstream file(path);
      return std::string{std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
    };
    return read(dir() / "node.log") + "\n--- rabbitmqctl ---\n" + read(dir() / "ctl.log");
  }

 private:
  void configure(const PrivateRabbitMqOptions& options) {
    const std::filesystem::path d = dir();
    std::ofstream(d / "rabbitmq-env.conf");  // read instead of /etc/rabbitmq/rabbitmq-env.conf
    std::ofstream(d / "enabled_plugins") << "[].\n";
    std::ofstream(d / "rabbitmq.conf") << "loopback_users = none\nlog.console.level = warning\n"
                                       << options.extra_config << "\n";
    const std::string s = d.string();
    env_ = {"HOME=" + s,  // the Erlang cookie: $HOME/.erlang.cookie, for the node and the CLI
            "RABBITMQ_NODENAME=marty-" + std::to_string(port_) + "@localhost",
            "RABBITMQ_NODE_IP_ADDRESS=127.0.0.1", "RABBITMQ_NODE_PORT=" + std::to_string(port_),
            "RABBITMQ_DIST_PORT=" + std::to_string(dist_port_),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}",
            // The command-line tools take a port the kernel picks, not one of 35672-35682.
            "RABBITMQ_CTL_DIST_PORT_MIN=0", "RABBITMQ_CTL_DIST_PORT_MAX=0",
            "ERL_EPMD_ADDRESS=127.0.0.1", "ERL_EPMD_PORT=" + std::to_string(epmd_port_),
            "RABBITMQ_CONF_ENV_FILE=" + s + "/rabbitmq-env.conf",
            "RABBITMQ_CONFIG_FILE=" + s + "/rabbitmq",  // rabbitmq.conf
            "RABBITMQ_ADVANCED_CONFIG_FILE=" + s + "/advanced.config",
            "RABBITMQ_ENABLED_PLUGINS_FILE=" + s + "/enabled_plugins",
            "RABBITMQ_MNESIA_BASE=" + s + "/mnesia", "RABBITMQ_LOG_BASE=" + s + "/log",
            "RABBITMQ_LOGS=-", "RABBITMQ_PID_FILE=" + s + "/rabbit.pid"};
    // A plugins directory with only what `rabbit` needs: the node boots 1-2 s sooner.
    std::error_code error;
    for (const auto& entry : std::filesystem::directory_iterator("/usr/lib/rabbitmq/lib", error)) {
      const auto apps = detail::rabbitmq_core_apps(entry.path() / "plugins");
      if (apps.empty()) continue;
      std::filesystem::create_directories(d / "plugins");
      for (const auto& app : apps) {
        std::filesystem::create_directory_symlink(app, d / "plugins" / app.filename(), error);
      }
      env_.push_back("RABBITMQ_PLUGINS_DIR=" + s + "/plugins");
      break;
    }
    // Everything else from the test's environment, but what would point the node elsewhere.
    for (char** variable = environ; *variable != nullptr; ++variable) {
      const std::string_view entry(*variable);
      const std::string_view name = entry.substr(0, entry.find('='));
      const bool ours =
          name == "HOME" || name.rfind("RABBITMQ_", 0) == 0 || name.rfind("ERL_", 0) == 0;
      if (!ours) env_.emplace_back(entry);
    }
  }

  /// Starts `program` with `args` and the node's environment, in a process group of its own,
  /// its output appended to `output`; the process ID (-1: fork failed).
  pid_t launch(const std::filesystem::path& program, std::vector<std::string> args,
               const std::filesystem::path& output) const {
    args.insert(args.begin(), program.string());
    std::vector<char*> argv;
    for (auto& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    std::vector<std::string> env = env_;
    std::vector<char*> envp;
    for (auto& variable : env) envp.push_back(variable.data());
    envp.push_back(nullptr);
    const std::string out = output.string();
    const pid_t pid = ::fork();
    if (pid == 0) {  // only async-signal-safe calls from here on
      ::setpgid(0, 0);
      const int in = ::open("/dev/null", O_RDONLY);
      const int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (in >= 0) ::dup2(in, 0);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      if (argv[0][0] == '/') {
        ::execve(argv[0], argv.data(), envp.data());
      } else {
        ::execvpe(argv[0], argv.data(), envp.data());
      }
      ::_exit(127);
    }
    if (pid > 0) ::setpgid(pid, pid);
    return pid;
  }

  /// Runs a program to its end; its exit code (-1: it did not exit normally).
  int run_path(const std::filesystem::path& program, std::vector<std::string> args,
               const std::filesystem::path& output) const {
    const pid_t pid = launch(program, std::move(args), output);
    if (pid <= 0) return -1;
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  int run(std::vector<std::string> argv, const std::filesystem::path& output) const {
    const std::string program = argv.front();
    argv.erase(argv.begin());
    return run_path(program, std::move(argv), output);
  }

  TempDir dir_;
  int port_ = 0;
  int dist_port_ = 0;
  int epmd_port_ = 0;
  std::vector<std::string> env_;  // NAME=VALUE, for the node and rabbitmqctl
  pid_t pid_ = -1;
};

}  // namespace marty::messaging::testing
