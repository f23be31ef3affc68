// marty-bus: publish, subscribe, query, answer, benchmark, and look after sagas and dead letters
// on any backend of a configuration file. docs/cli.md is its manual.
#include <iostream>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "cli.hpp"

int main(int argc, char** argv) {
  using namespace marty::bus_cli;  // NOLINT(google-build-using-namespace)
  block_stop_signals();

  CLI::App app{"marty-bus: one event bus over many brokers, from the command line", "marty-bus"};
  app.require_subcommand(1);
  app.fallthrough();
  GlobalOptions options;
  app.add_option("-c,--config", options.config_path,
                 "configuration file (YAML; docs/configuration.md); without one, the embedded "
                 "memory backend")
      ->envname("MARTY_BUS_CONFIG");
  app.add_option("-b,--backend", options.backend,
                 "send everything to this backend of the file (memory, nats, kafka, rabbitmq, "
                 "redis, aws_sns, aws_sqs), ignoring its routes");
  app.add_option("--service", options.service, "this program's service name (default: the file's)");
  app.add_option("--log-level", options.log_level,
                 "trace, debug, info, warn (default), error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}))
      ->each([](const std::string& level) { spdlog::set_level(spdlog::level::from_str(level)); });
  app.add_flag("--json", options.json, "machine-readable output: JSON, one object per line");

  add_messaging_commands(app, options);
  add_backends_command(app, options);
  add_bench_command(app, options);
  add_saga_commands(app, options);
  add_dlq_commands(app, options);
  add_config_commands(app, options);

  // Logs go to standard error: standard output carries what the commands print.
  spdlog::set_default_logger(spdlog::stderr_color_mt("marty-bus"));
  spdlog::set_level(spdlog::level::warn);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  } catch (const CommandFailed& failure) {
    std::cerr << "marty-bus: " << failure.error.describe() << "\n";
    return exit_code(failure.error);
  } catch (const marty::messaging::MessagingException& e) {
    std::cerr << "marty-bus: " << e.error().describe() << "\n";
    return exit_code(e.error());
  } catch (const std::exception& e) {  // a bug of ours: said, not a crash
    std::cerr << "marty-bus: internal: " << e.what() << "\n";
    return static_cast<int>(marty::messaging::errc::internal);
  }
  return 0;
}
