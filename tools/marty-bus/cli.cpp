#include "cli.hpp"

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>
#include <sstream>

namespace marty::bus_cli {

int exit_code(const Error& error) {
  const int code = error.code().value();
  if (error.code().category() == messaging_category() && code > 0 && code < 64) return code;
  return static_cast<int>(errc::internal);
}

config::BusConfig load_configuration(const GlobalOptions& options) {
  config::BusConfig configuration;
  if (!options.config_path.empty()) {
    configuration = need(config::load_config_file(options.config_path));
  } else {
    configuration.source = "(no configuration file)";
  }
  if (!options.service.empty()) configuration.options.service_name = options.service;
  if (!options.backend.empty()) {
    const MessageBackendType type = need(parse_backend_type(options.backend));
    if (type != MessageBackendType::memory && !configuration.backend(type)) {
      fail(errc::invalid_argument, "--backend " + options.backend + ": " + configuration.source +
                                       " declares no such backend");
    }
    // Everything to that backend: the file's routes would send some types elsewhere.
    configuration.routes.clear();
    configuration.default_backend = type;
  }
  // Without a file, a command-line tool waits a moment for what is in flight, not the service
  // default; a file's drain_timeout (stated or default) is the one its services use, kept.
  if (options.config_path.empty()) configuration.options.drain_timeout = std::chrono::seconds(5);
  configuration.options.tracer = nullptr;
  return configuration;
}

config::BackendMakers linked_makers() {
  config::BackendMakers makers;
  makers.emplace(MessageBackendType::memory, config::memory_maker());
#ifdef MARTY_BUS_HAS_NATS
  makers.emplace(MessageBackendType::nats, config::nats_maker());
#endif
#ifdef MARTY_BUS_HAS_KAFKA
  makers.emplace(MessageBackendType::kafka, config::kafka_maker());
#endif
#ifdef MARTY_BUS_HAS_RABBITMQ
  makers.emplace(MessageBackendType::rabbitmq, config::rabbitmq_maker());
#endif
#ifdef MARTY_BUS_HAS_REDIS
  makers.emplace(MessageBackendType::redis, config::redis_maker());
#endif
#ifdef MARTY_BUS_HAS_AWS
  makers.emplace(MessageBackendType::aws_sns, config::aws_sns_maker());
  makers.emplace(MessageBackendType::aws_sqs, config::aws_sqs_maker());
#endif
  return makers;
}

Session::Session(const GlobalOptions& options)
    : options_(options), config_(load_configuration(options)) {
  // Two threads: a handler printing to a slow terminal does not hold up acks and replies.
  bus_ = std::make_unique<BlockingEventBus>(config_.options, 2);
  need(config::configure_bus(bus_->bus(), config_, linked_makers()));
}

Session::~Session() {
  if (bus_ && bus_->bus().running()) stop();
}

void Session::start() {
  need(run(bus_->bus().start(), "while connecting to the backends"));
}

void Session::stop() {
  if (auto stopped = run(bus_->bus().stop(), "while draining"); !stopped) {
    std::cerr << "marty-bus: " << stopped.error().describe() << "\n";
  }
}

namespace {

// How many SIGINT/SIGTERM the program has taken: a first one ends a command's wait, a later one
// the operation or drain after it (wait_until_ready).
std::atomic<int> signals_received{0};

sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

// Takes a pending stop signal, waiting at most `patience` for one; true when it took one.
bool take_signal(const timespec& patience) {
  const sigset_t set = stop_signals();
  if (sigtimedwait(&set, nullptr, &patience) <= 0) return false;
  ++signals_received;
  return true;
}

}  // namespace

void block_stop_signals() {
  const sigset_t set = stop_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

bool wait_until(const std::function<bool()>& done, std::optional<std::chrono::milliseconds> limit) {
  const auto deadline = limit ? std::chrono::steady_clock::now() + *limit
                              : std::chrono::steady_clock::time_point::max();
  while (!done()) {
    if (signals_received.load() > 0 || std::chrono::steady_clock::now() >= deadline) return false;
    if (take_signal(timespec{0, 50'000'000})) return done();  // 50 ms: how soon done() is noticed
  }
  return true;
}

bool wait_until_ready(const std::function<bool(std::chrono::milliseconds)>& ready) {
  const int before = signals_received.load();
  while (!ready(std::chrono::milliseconds(20))) {  // 20 ms: how soon a signal is noticed
    (void)take_signal(timespec{0, 0});
    if (signals_received.load() != before) return false;
  }
  return true;
}

namespace {
std::function<void()> interruption_report;
}  // namespace

void on_interruption(std::function<void()> report) {
  interruption_report = std::move(report);
}

void exit_interrupted(const std::string& what) {
  if (interruption_report) interruption_report();
  std::cout.flush();
  std::fflush(stdout);
  std::cerr << "marty-bus: " << to_string(errc::cancelled) << ": interrupted " << what << std::endl;
  std::_Exit(static_cast<int>(errc::cancelled));
}

bool stop_requested() {
  (void)take_signal(timespec{0, 0});
  return signals_received.load() > 0;
}

Json json_argument(const std::string& text, const std::string& what) {
  std::string content = text;
  if (text == "-") {
    std::ostringstream in;
    in << std::cin.rdbuf();
    content = in.str();
  } else if (!text.empty() && text[0] == '@') {
    std::ifstream file(text.substr(1), std::ios::binary);
    if (!file) fail(errc::not_found, what + ": cannot read " + text.substr(1));
    std::ostringstream in;
    in << file.rdbuf();
    content = in.str();
  }
  Json value = Json::parse(content, nullptr, false);
  if (value.is_discarded()) {
    fail(errc::invalid_argument,
         what + " is not JSON: " + (content.size() > 80 ? content.substr(0, 80) + "..." : content));
  }
  return value;
}

std::chrono::milliseconds duration_argument(const std::string& text, const std::string& what) {
  auto parsed = config::parse_duration(text);
  if (!parsed) fail(errc::invalid_argument, what + ": " + parsed.error().message());
  return *parsed;
}

Json message_json(const Message& message) {
  const MessageMetadata& m = message.metadata();
  Json out = {{"subject", message.subject()}, {"type", m.message_type}, {"id", m.message_id}};
  if (m.time) out["time"] = format_rfc3339(*m.time);
  if (!m.source.empty()) out["source"] = m.source;
  if (!m.correlation_id.empty()) out["correlation_id"] = m.correlation_id;
  if (!m.causation_id.empty()) out["causation_id"] = m.causation_id;
  if (!m.partition_key.empty()) out["partition_key"] = m.partition_key;
  if (!m.headers.empty()) out["headers"] = m.headers;
  if (auto data = message.try_json(); data) {
    out["data"] = data->get();
  } else {
    out["content_type"] = m.content_type;
    out["data_bytes"] = std::string(message.bytes());
  }
  return out;
}

std::string render_message(const Message& message, bool json) {
  // A raw payload need not be UTF-8: shown with U+FFFD for what is not, rather than thrown on.
  if (json)
    return message_json(message).dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
  const MessageMetadata& m = message.metadata();
  std::string text = (m.time ? format_rfc3339(*m.time) : std::string("-")) + "  " +
                     std::string(message.subject()) + "  id=" + m.message_id;
  if (!m.source.empty()) text += "  source=" + m.source;
  if (!m.partition_key.empty()) text += "  key=" + m.partition_key;
  if (!m.correlation_id.empty()) text += "  correlation=" + m.correlation_id;
  text += "\n";
  for (const auto& [name, value] : m.headers) text += "  " + name + ": " + value + "\n";
  if (auto data = message.try_json(); data) {
    text += "  " + data->get().dump() + "\n";
  } else {
    text += "  (" + m.content_type + ", " + std::to_string(message.bytes().size()) + " bytes) " +
            std::string(message.bytes().substr(0, 200)) + "\n";
  }
  return text;
}

}  // namespace marty::bus_cli
