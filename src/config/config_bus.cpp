// Building a bus, a saga store and a saga manager from what a configuration file declares.
#include <charconv>

#include "marty/messaging/config.hpp"

namespace marty::messaging::config {

BackendMaker memory_maker() {
  return [](const BackendSettings& s) {
    return make_memory_backend(std::get<MemoryBackendConfig>(s.settings));
  };
}

Result<std::shared_ptr<UnifiedEventBus>> create_bus(asio::any_io_executor executor,
                                                    const BusConfig& config,
                                                    const BackendMakers& makers) {
  auto bus = create_unified_event_bus(std::move(executor), config.options);
  if (auto configured = configure_bus(*bus, config, makers); !configured) {
    return configured.error();
  }
  return bus;
}

Result<void> configure_bus(UnifiedEventBus& bus, const BusConfig& config,
                           const BackendMakers& makers) {
  for (const BackendSettings& settings : config.backends) {
    auto maker = makers.find(settings.type);
    if (maker == makers.end() || !maker->second) {
      return Error(errc::unimplemented,
                   settings.origin + ": backend '" + std::string(to_string(settings.type)) +
                       "' is not available in this program (built without its client library)");
    }
    if (auto registered = bus.register_backend(settings.type, maker->second(settings));
        !registered) {
      return registered.error().with_context(settings.origin);
    }
  }
  // The embedded backend needs no settings: a file (or `marty-bus -b memory`) may name it in
  // default_backend or a route without declaring it, and gets its defaults.
  bool names_memory = config.default_backend == MessageBackendType::memory;
  for (const Route& route : config.routes)
    names_memory |= route.backend == MessageBackendType::memory;
  if (names_memory && !config.backend(MessageBackendType::memory)) {
    if (auto registered = bus.register_backend(MessageBackendType::memory, make_memory_backend());
        !registered) {
      return registered.error();
    }
  }
  if (config.default_backend) {
    if (auto set = bus.set_default_backend(*config.default_backend); !set) return set.error();
  }
  for (const Route& route : config.routes) {
    if (auto routed = bus.route(route.type_glob, route.backend, route.patterns, route.format);
        !routed) {
      return routed.error().with_context(config.source);
    }
  }
  for (const auto& [pattern, settings] : config.patterns) {
    if (auto updated = bus.update_pattern_config(pattern, settings); !updated) {
      return updated.error().with_context(config.source);
    }
  }
  return ok();
}

Result<std::shared_ptr<saga::SagaStore>> open_saga_store(const BusConfig& config) {
  const SagaStoreSettings& settings = config.saga_store;
  if (settings.kind == SagaStoreSettings::Kind::memory) {
    return std::shared_ptr<saga::SagaStore>(std::make_shared<saga::InMemorySagaStore>());
  }
  auto store = saga::SqliteSagaStore::open(settings.path, settings.sqlite);
  if (!store) return store.error();
  return std::shared_ptr<saga::SagaStore>(std::move(*store));
}

Result<std::shared_ptr<saga::DistributedSagaManager>> create_saga_manager(
    const BusConfig& config, std::shared_ptr<UnifiedEventBus> bus,
    std::shared_ptr<saga::SagaStore> store) {
  saga::SagaManagerOptions options;
  options.lease = config.saga_lease;
  auto manager = saga::create_distributed_saga_manager(std::move(bus), std::move(store), options);
  for (const saga::SagaDefinition& definition : config.sagas) {
    if (auto registered = manager->register_saga_definition(definition); !registered) {
      return registered.error().with_context(config.source);
    }
  }
  return manager;
}

Result<std::chrono::milliseconds> parse_duration(std::string_view text) {
  std::int64_t count = 0;
  const char* begin = text.data();
  const char* end = begin + text.size();
  auto [stop, error] = std::from_chars(begin, end, count);
  if (error != std::errc() || stop == begin || count < 0) {
    return Error(errc::invalid_argument, "'" + std::string(text) +
                                             "' is not a duration (a whole number with a unit: "
                                             "250ms, 30s, 5m, 2h, 7d)");
  }
  const std::string_view unit(stop, static_cast<std::size_t>(end - stop));
  static const std::pair<std::string_view, std::int64_t> kUnits[] = {
      {"ms", 1}, {"s", 1'000}, {"m", 60'000}, {"h", 3'600'000}, {"d", 86'400'000}};
  // Deadlines are computed as now + duration on clocks counting nanoseconds in 64 bits (about
  // 292 years), so a longer duration would overflow there: a century is the limit.
  constexpr std::int64_t kLongestMs = 36'500LL * 86'400'000;
  for (const auto& [name, factor] : kUnits) {
    if (name != unit) continue;
    if (count > kLongestMs / factor) {
      return Error(errc::invalid_argument,
                   "'" + std::string(text) + "' is too long a duration (at most 36500d)");
    }
    return std::chrono::milliseconds(count * factor);
  }
  if (unit.empty()) {
    return Error(errc::invalid_argument,
                 "'" + std::string(text) + "' needs a unit (ms, s, m, h or d)");
  }
  return Error(errc::invalid_argument, "'" + std::string(text) + "' has an unknown unit '" +
                                           std::string(unit) + "' (ms, s, m, h or d)");
}

}  // namespace marty::messaging::config
