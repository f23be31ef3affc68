#pragma once

#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

namespace marty::messaging::testing {

/// A port on loopback that nothing listens on now (the kernel picks it).
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof address;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  }
  ::close(fd);
  return port;
}

/// True when something accepts TCP connections on loopback `port`.
inline bool port_open(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  const bool open = ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
  ::close(fd);
  return open;
}

/// Starts `argv` (argv[0] as a path, or a name found on PATH) in a child process.
inline pid_t spawn(std::vector<std::string> argv) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    std::vector<char*> args;
    for (auto& arg : argv) args.push_back(arg.data());
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    std::perror("execvp");
    ::_exit(127);
  }
  return pid;
}

/// Sends `signal` to `pid` (when running) and reaps it; `pid` becomes -1.
inline void end_process(pid_t& pid, int signal) {
  if (pid <= 0) return;
  ::kill(pid, signal);
  int status = 0;
  ::waitpid(pid, &status, 0);
  pid = -1;
}

/// A private directory, removed with everything in it at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "marty-test-XXXXXX").string();
    path_ = ::mkdtemp(pattern.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

/// A broker server run by a test (for the configurations the shared brokers of scripts/brokers
/// do not have: authentication, TLS, restarts). Stopped when destroyed.
class ServerProcess {
 public:
  /// Starts `argv` (argv[0] found on PATH) and waits until `port` accepts connections.
  ServerProcess(std::vector<std::string> argv, int port) : argv_(std::move(argv)), port_(port) {
    start();
  }
  ~ServerProcess() { stop(SIGTERM); }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  int port() const { return port_; }
  bool running() const { return pid_ > 0; }
  /// The server's process ID (-1 when it is not running), e.g. to SIGSTOP it.
  pid_t pid() const { return pid_; }

  /// Returns false when the server did not open its port within `limit`.
  bool start(std::chrono::seconds limit = std::chrono::seconds(20)) {
    if (pid_ > 0) return true;
    pid_ = spawn(argv_);
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!port_open(port_)) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return true;
  }

  /// Sends `signal` (SIGKILL: a crash) and waits for the process to end.
  void stop(int signal) { end_process(pid_, signal); }

 private:
  std::vector<std::string> argv_;
  int port_;
  pid_t pid_ = -1;
};

/// A program run by a test, to be killed (a crash) or waited for.
class ChildProcess {
 public:
  explicit ChildProcess(std::vector<std::string> argv) : pid_(spawn(std::move(argv))) {}
  ~ChildProcess() { kill(SIGKILL); }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  void kill(int signal) { end_process(pid_, signal); }
  /// The exit code, or -1 when it did not exit within `limit` (or was killed).
  int wait(std::chrono::seconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (pid_ > 0) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      if (std::chrono::steady_clock::now() >= deadline) return -1;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return -1;
  }

 private:
  pid_t pid_ = -1;
};

}  // namespace marty::messaging::testing
