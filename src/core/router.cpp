#include "marty/messaging/router.hpp"

#include <algorithm>

#include "marty/messaging/pattern_selector.hpp"
#include "marty/messaging/subject.hpp"

namespace marty::messaging {
namespace {

const Capabilities* find(const BackendTable& backends, MessageBackendType type) {
  for (const auto& [registered, caps] : backends) {
    if (registered == type) return caps;
  }
  return nullptr;
}

bool serves(const Capabilities& caps, const MessagingPatternConfig& config) {
  return caps.supports(config.pattern) && satisfies(caps.delivery, config.delivery_guarantee);
}

std::string why_not(MessageBackendType type, const Capabilities& caps,
                    const MessagingPatternConfig& config) {
  if (!caps.supports(config.pattern)) {
    return std::string(to_string(type)) + " does not support pattern " +
           std::string(to_string(config.pattern));
  }
  return std::string(to_string(type)) + " gives only " + std::string(to_string(caps.delivery)) +
         " but pattern " + std::string(to_string(config.pattern)) + " requires " +
         std::string(to_string(config.delivery_guarantee));
}

std::string registered_list(const BackendTable& backends) {
  std::string names;
  for (const auto& [type, caps] : backends) {
    if (!names.empty()) names += ", ";
    names += to_string(type);
  }
  return names.empty() ? "none" : names;
}

}  // namespace

Result<MessageBackendType> Router::select(std::string_view message_type,
                                          const MessagingPatternConfig& config,
                                          const BackendTable& backends,
                                          std::optional<MessageBackendType> default_backend,
                                          WireFormat* format) const {
  if (format != nullptr) *format = WireFormat::cloudevents;
  for (const Route& route : routes_) {
    if (!subject::glob_matches(route.type_glob, message_type)) continue;
    const Capabilities* caps = find(backends, route.backend);
    if (!caps) {
      return Error(errc::failed_precondition, "route '" + route.type_glob + "' names backend " +
                                                  std::string(to_string(route.backend)) +
                                                  ", which is not registered");
    }
    const bool listed = route.patterns.count(config.pattern) != 0;
    if (route.patterns.empty() && !caps->supports(config.pattern)) continue;
    if (!route.patterns.empty() && !listed) continue;
    if (!serves(*caps, config)) {
      return Error(errc::failed_precondition,
                   "route '" + route.type_glob + "': " + why_not(route.backend, *caps, config));
    }
    if (format != nullptr) *format = route.format;
    return route.backend;
  }
  if (default_backend) {
    const Capabilities* caps = find(backends, *default_backend);
    if (caps && serves(*caps, config)) return *default_backend;
  }
  const MessageBackendType recommended = PatternSelector::recommend_backend(config.pattern);
  if (const Capabilities* caps = find(backends, recommended); caps && serves(*caps, config)) {
    return recommended;
  }
  for (const auto& [type, caps] : backends) {
    if (serves(*caps, config)) return type;
  }
  return Error(errc::failed_precondition,
               "no registered backend serves pattern " + std::string(to_string(config.pattern)) +
                   " with " + std::string(to_string(config.delivery_guarantee)) + " for type '" +
                   std::string(message_type) + "' (registered: " + registered_list(backends) + ")");
}

Result<void> Router::validate(const BackendTable& backends,
                              const std::vector<MessagingPatternConfig>& required) const {
  for (const Route& route : routes_) {
    const Capabilities* caps = find(backends, route.backend);
    if (!caps) {
      return Error(errc::failed_precondition,
                   "route '" + route.type_glob + "' names backend " +
                       std::string(to_string(route.backend)) +
                       ", which is not registered (registered: " + registered_list(backends) + ")");
    }
    for (MessagingPattern pattern : route.patterns) {
      auto config = std::find_if(required.begin(), required.end(),
                                 [&](const auto& c) { return c.pattern == pattern; });
      MessagingPatternConfig wanted =
          config != required.end() ? *config : default_pattern_config(pattern);
      if (!serves(*caps, wanted)) {
        return Error(errc::failed_precondition,
                     "route '" + route.type_glob +
                         "' cannot be served: " + why_not(route.backend, *caps, wanted));
      }
    }
  }
  for (const MessagingPatternConfig& config : required) {
    const bool any = std::any_of(backends.begin(), backends.end(),
                                 [&](const auto& b) { return serves(*b.second, config); });
    if (!any) {
      return Error(errc::failed_precondition,
                   "no registered backend serves pattern " +
                       std::string(to_string(config.pattern)) + " with " +
                       std::string(to_string(config.delivery_guarantee)) +
                       " (registered: " + registered_list(backends) + ")");
    }
  }
  return ok();
}

}  // namespace marty::messaging
