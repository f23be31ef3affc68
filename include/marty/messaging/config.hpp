#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <asio/any_io_executor.hpp>

#include "marty/messaging/aws_backend.hpp"
#include "marty/messaging/event_bus.hpp"
#include "marty/messaging/kafka_backend.hpp"
#include "marty/messaging/memory_backend.hpp"
#include "marty/messaging/nats_backend.hpp"
#include "marty/messaging/rabbitmq_backend.hpp"
#include "marty/messaging/redis_backend.hpp"
#include "marty/messaging/saga.hpp"
#include "marty/messaging/saga_manager.hpp"
#include "marty/messaging/saga_store.hpp"
#include "marty/messaging/sqlite_saga_store.hpp"

/// Configuration files: a bus, its backends, routes, pattern configs, saga definitions and saga
/// store, declared in YAML (docs/configuration.md has every key). Link `marty::messaging_config`.
///
/// Reading a file checks everything that can be checked without a broker: every key is known
/// (a misspelt key is an error, with a suggestion), every value has its type and unit, every
/// route names a declared backend, every saga definition is valid. All problems are reported
/// at once, each as "file:line:column: key.path: what is wrong". Values may name environment
/// variables: `${NAME}` (an error when unset), `${NAME:-default}` (when unset or empty), `$$`
/// for a literal `$`. A value read from the environment is never repeated in an error.
namespace marty::messaging::config {

/// One backend's settings, as its own library takes them.
using BackendSettingsVariant =
    std::variant<MemoryBackendConfig, nats::NatsConfig, kafka::KafkaConfig,
                 rabbitmq::RabbitMqConfig, redis::RedisConfig, aws::AwsSnsConfig,
                 aws::AwsSqsConfig>;

struct BackendSettings {
  MessageBackendType type = MessageBackendType::memory;
  BackendSettingsVariant settings;
  /// Where it was declared ("bus.yaml:12"), for errors found later (at connect).
  std::string origin;
};

struct SagaStoreSettings {
  enum class Kind { memory, sqlite };
  Kind kind = Kind::memory;
  /// SQLite: the database file.
  std::string path;
  saga::SqliteSagaStoreOptions sqlite;
};

/// Everything a configuration file declares.
struct BusConfig {
  /// The file it was read from ("<string>" for parse_config without a name).
  std::string source;
  /// Service name, drain timeout, consumer lag interval, backend circuit breaker.
  EventBusOptions options;
  /// In the file's order, which is the bus's fallback preference.
  std::vector<BackendSettings> backends;
  std::optional<MessageBackendType> default_backend;
  std::vector<Route> routes;
  /// Only the patterns the file configures; the others keep default_pattern_config().
  std::map<MessagingPattern, MessagingPatternConfig> patterns;
  SagaStoreSettings saga_store;
  /// How long an orchestrator's claim on a saga lasts without renewal.
  std::chrono::milliseconds saga_lease{15'000};
  std::vector<saga::SagaDefinition> sagas;

  /// The settings of `type`, or null when the file does not declare it.
  const BackendSettings* backend(MessageBackendType type) const;
};

/// Reads and checks a configuration file. `not_found` when it cannot be read; `invalid_argument`
/// listing every problem otherwise.
Result<BusConfig> load_config_file(const std::string& path);
/// The same from text; `source_name` stands for the file in errors.
Result<BusConfig> parse_config(std::string_view yaml_text, std::string source_name = "<string>");

/// Makes a backend of one type from its settings. A program links only the backend libraries
/// it uses, so it says which it can make: add the makers of the backends it links, e.g.
/// `factories.emplace(MessageBackendType::nats, nats_maker())`.
using BackendMaker = std::function<std::shared_ptr<Backend>(const BackendSettings&)>;
using BackendMakers = std::map<MessageBackendType, BackendMaker>;

/// The memory backend's maker; always available. The others are inline, so that a program
/// that does not call one does not need that backend's library.
BackendMaker memory_maker();
/// The maker of a backend made by `make` from settings of type `Settings`.
template <class Settings, std::shared_ptr<Backend> (*make)(Settings)>
BackendMaker maker_of() {
  return [](const BackendSettings& s) { return make(std::get<Settings>(s.settings)); };
}
inline BackendMaker nats_maker() {
  return maker_of<nats::NatsConfig, nats::make_backend>();
}
inline BackendMaker kafka_maker() {
  return maker_of<kafka::KafkaConfig, kafka::make_backend>();
}
inline BackendMaker rabbitmq_maker() {
  return maker_of<rabbitmq::RabbitMqConfig, rabbitmq::make_backend>();
}
inline BackendMaker redis_maker() {
  return maker_of<redis::RedisConfig, redis::make_backend>();
}
inline BackendMaker aws_sns_maker() {
  return maker_of<aws::AwsSnsConfig, aws::make_sns_backend>();
}
inline BackendMaker aws_sqs_maker() {
  return maker_of<aws::AwsSqsConfig, aws::make_sqs_backend>();
}

/// A bus configured as the file says (not started): its backends registered in the file's
/// order, the default backend, routes and pattern configs. `unimplemented` naming the backend
/// and where it was declared when `makers` has no maker for it. With no backend declared, the
/// bus runs on the embedded memory backend.
Result<std::shared_ptr<UnifiedEventBus>> create_bus(asio::any_io_executor executor,
                                                    const BusConfig& config,
                                                    const BackendMakers& makers);
/// The same on a bus made elsewhere (a BlockingEventBus's, made with `config.options`), before
/// its start().
Result<void> configure_bus(UnifiedEventBus& bus, const BusConfig& config,
                           const BackendMakers& makers);

/// The saga store the file declares (memory when it declares none). Needs marty_messaging_sqlite
/// for `sqlite`, which this library links.
Result<std::shared_ptr<saga::SagaStore>> open_saga_store(const BusConfig& config);

/// A saga manager on `bus` and `store` with every saga definition of the file registered.
Result<std::shared_ptr<saga::DistributedSagaManager>> create_saga_manager(
    const BusConfig& config, std::shared_ptr<UnifiedEventBus> bus,
    std::shared_ptr<saga::SagaStore> store);

/// Parses a duration as configuration files write it: a whole number with a unit, "250ms",
/// "30s", "5m", "2h", "7d". `invalid_argument` naming what is wrong.
Result<std::chrono::milliseconds> parse_duration(std::string_view text);

}  // namespace marty::messaging::config
