#pragma once
// What every marty-bus command shares: the global options, the configured bus, waiting for
// Ctrl-C, exit codes and output.

#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>
#include <asio/co_spawn.hpp>
#include <asio/use_future.hpp>

#include "marty/messaging.hpp"
#include "marty/messaging/config.hpp"

namespace marty::bus_cli {

using namespace marty::messaging;  // NOLINT(google-build-using-namespace): a program, not a header
                                   // of the library

struct GlobalOptions {
  std::string config_path;  ///< empty: no file, the embedded memory backend
  std::string backend;      ///< sends everything to this backend of the file
  std::string service;      ///< overrides the file's service name
  std::string log_level = "warn";
  bool json = false;  ///< machine-readable output
};

/// Thrown by commands to end the program with an error's exit code; main() prints it.
struct CommandFailed {
  Error error;
};

/// The value, or CommandFailed.
template <class T>
T need(Result<T> result) {
  if (!result) throw CommandFailed{result.error()};
  return std::move(*result);
}
inline void need(Result<void> result) {
  if (!result) throw CommandFailed{result.error()};
}
[[noreturn]] inline void fail(errc code, std::string message) {
  throw CommandFailed{Error(code, std::move(message))};
}

/// The exit code for an error: its errc number (1..16, see error.hpp); usage errors are 2.
int exit_code(const Error& error);

/// The file's configuration (or the default one: the memory backend) with the command line's
/// overrides applied.
config::BusConfig load_configuration(const GlobalOptions& options);
/// The makers of every backend this program was built with.
config::BackendMakers linked_makers();

/// A configured bus with the threads that run it. Not started until start().
class Session {
 public:
  explicit Session(const GlobalOptions& options);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  /// Connects every backend; Ctrl-C while connecting ends the program (see run()).
  void start();
  /// Drains and stops; the error of a late drain is reported, not thrown. A Ctrl-C during the
  /// drain (after the one that may have ended the command) ends the program (see run()).
  void stop();
  /// Runs a bus operation on the bus's threads and returns its result. A SIGINT or SIGTERM
  /// arriving meanwhile ends the program at once with `cancelled` (exit 1), after a line saying
  /// "interrupted <what>": the operation is abandoned, not undone (a message may or may not
  /// have been sent), as after a crash. Not by unwinding: the bus does not track an operation in
  /// flight, so destroying it under one would be a use after free.
  template <class T>
  Result<T> run(asio::awaitable<Result<T>> operation, const std::string& what);
  BlockingEventBus& bus() noexcept { return *bus_; }
  std::shared_ptr<UnifiedEventBus> shared_bus() { return bus_->bus().shared_from_this(); }
  const config::BusConfig& configuration() const noexcept { return config_; }
  const GlobalOptions& options() const noexcept { return options_; }

 private:
  GlobalOptions options_;
  config::BusConfig config_;
  std::unique_ptr<BlockingEventBus> bus_;
};

/// Waits for `ready` (polled every few milliseconds, so a quick operation costs no more);
/// false when a SIGINT or SIGTERM arrives meanwhile (one that arrived before does not count).
bool wait_until_ready(const std::function<bool(std::chrono::milliseconds)>& ready);
/// Flushes standard output, says "interrupted <what>" ("while connecting", "during send") and
/// ends the process with `cancelled` without running destructors; the report set with
/// on_interruption() runs first.
[[noreturn]] void exit_interrupted(const std::string& what);
/// What exit_interrupted() prints before it ends the program (pub: how many it published).
/// Called on the thread that waited; it must not wait for the bus.
void on_interruption(std::function<void()> report);

template <class T>
Result<T> Session::run(asio::awaitable<Result<T>> operation, const std::string& what) {
  auto result = asio::co_spawn(bus_->context(), std::move(operation), asio::use_future);
  const bool ready = wait_until_ready([&](std::chrono::milliseconds patience) {
    return result.wait_for(patience) == std::future_status::ready;
  });
  if (!ready) exit_interrupted(what);
  return result.get();
}

/// Blocks SIGINT and SIGTERM in every thread (call before any thread starts), so that
/// wait_until() receives them instead of the process dying mid-message.
void block_stop_signals();
/// Waits until `done()` is true, `limit` passes, or SIGINT/SIGTERM arrives. True when done().
/// A signal is remembered: stop_requested() says so afterwards, and later waits end at once.
bool wait_until(const std::function<bool()>& done, std::optional<std::chrono::milliseconds> limit);
/// True once SIGINT or SIGTERM has arrived (polled without waiting).
bool stop_requested();

/// JSON from a command-line argument: the text itself, "@file" for a file's contents, "-" for
/// standard input. `invalid_argument` naming `what` when it is not JSON.
Json json_argument(const std::string& text, const std::string& what);
/// A duration argument ("5s"); `invalid_argument` naming `what`.
std::chrono::milliseconds duration_argument(const std::string& text, const std::string& what);

/// A message as marty-bus prints it: readable lines, or one JSON object per line.
std::string render_message(const Message& message, bool json);
/// The message as a JSON object (subject, type, id, time, source, ids, key, headers, data).
Json message_json(const Message& message);

// Commands, each registering its subcommand on `app`.
void add_messaging_commands(CLI::App& app, GlobalOptions& options);
void add_backends_command(CLI::App& app, GlobalOptions& options);
void add_bench_command(CLI::App& app, GlobalOptions& options);
void add_saga_commands(CLI::App& app, GlobalOptions& options);
void add_dlq_commands(CLI::App& app, GlobalOptions& options);
void add_config_commands(CLI::App& app, GlobalOptions& options);

}  // namespace marty::bus_cli
