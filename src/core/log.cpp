#include "marty/messaging/detail/log.hpp"

#include <memory>

#include <spdlog/spdlog.h>

namespace marty::messaging::detail {

spdlog::logger& logger() {
  // Looked up once: spdlog::get takes a lock, and logging must stay cheap where it is frequent.
  static const std::shared_ptr<spdlog::logger> named = spdlog::get("marty.messaging");
  return named ? *named : *spdlog::default_logger_raw();
}

}  // namespace marty::messaging::detail
