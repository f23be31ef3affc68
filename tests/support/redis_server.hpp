#pragma once
// redis-server processes for tests that need a server of their own (a configuration, a restart
// or a crash the shared broker of scripts/brokers cannot offer).
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "server_process.hpp"

namespace marty::messaging::testing {

inline std::string redis_url(int port) {
  return "redis://127.0.0.1:" + std::to_string(port);
}

/// True when the redis-server on loopback `port` serves commands: it answers PING with anything
/// but LOADING (a server that wants a password answers NOAUTH, which counts as serving).
inline bool redis_serving(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  timeval limit{};
  limit.tv_sec = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  std::string reply;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
      ::send(fd, "PING\r\n", 6, MSG_NOSIGNAL) == 6) {
    char buffer[128];
    const ssize_t length = ::recv(fd, buffer, sizeof buffer, 0);
    if (length > 0) reply.assign(buffer, static_cast<std::size_t>(length));
  }
  ::close(fd);
  return !reply.empty() && reply.rfind("-LOADING", 0) != 0;
}

struct PrivateRedisOptions {
  /// The append-only file on, written through at every write (appendfsync always): a restart,
  /// even after SIGKILL, keeps everything the server acknowledged. Off: a restart starts empty.
  bool append_only = false;
  /// More redis-server arguments, after the defaults (a later value of a setting wins), e.g.
  /// {"--requirepass", "secret"} or {"--user", "alice", "on", ">secret", "~*", "&*", "+@all"}.
  std::vector<std::string> extra_args;
};

/// A redis-server for one test, on a free port, with its data directory (and log) in a
/// directory of its own. A restart keeps the port and the directory, so the append-only file
/// (when on) is read back. No RDB snapshots, ever.
class PrivateRedis {
 public:
  explicit PrivateRedis(PrivateRedisOptions options = {})
      : port_(free_port()), server_(arguments(options), port_) {
    wait_serving(std::chrono::seconds(20));
  }

  ServerProcess& server() { return server_; }
  int port() const { return port_; }
  std::string url() const { return redis_url(port_); }
  /// The data directory (--dir); the append-only files are in its `appendonlydir`.
  const std::filesystem::path& dir() const { return dir_.path(); }

  /// Starts the server again (a no-op when it runs) and waits until it serves commands, the
  /// append-only file loaded. False when it did not within `limit`.
  bool start(std::chrono::seconds limit = std::chrono::seconds(20)) {
    return server_.start(limit) && wait_serving(limit);
  }
  /// Sends `signal` (SIGKILL: a crash) and waits for the process to end.
  void stop(int signal = SIGTERM) { server_.stop(signal); }
  /// stop(signal), then start() on the same port and data directory.
  bool restart(int signal = SIGTERM) {
    stop(signal);
    return start();
  }

  /// What the server logged, for the message of a failing test.
  std::string log() const {
    std::ifstream file(dir_.path() / "redis.log");
    return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
  }

 private:
  std::vector<std::string> arguments(const PrivateRedisOptions& options) const {
    const std::string dir = dir_.path().string();
    std::vector<std::string> argv{"redis-server", "--bind", "127.0.0.1", "--port",
                                  std::to_string(port_)};
    argv.insert(argv.end(), {"--dir", dir, "--logfile", dir + "/redis.log", "--daemonize", "no"});
    argv.insert(argv.end(), {"--save", "", "--appendonly", options.append_only ? "yes" : "no"});
    if (options.append_only) {
      argv.insert(argv.end(), {"--appendfsync", "always"});
    }
    argv.insert(argv.end(), options.extra_args.begin(), options.extra_args.end());
    return argv;
  }

  bool wait_serving(std::chrono::seconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (server_.running() && !redis_serving(port_)) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return server_.running();
  }

  TempDir dir_;  // before server_: its arguments name the directory
  int port_;
  ServerProcess server_;
};

}  // namespace marty::messaging::testing
