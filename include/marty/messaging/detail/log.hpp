#pragma once

namespace spdlog {
class logger;
}

namespace marty::messaging::detail {

/// The logger the library writes to: spdlog's logger registered under the name
/// "marty.messaging" when the application registered one before the library first logged
/// (spdlog::register_logger), else spdlog's default logger. Lines name what they are about
/// (subject, group, backend, message id) and never carry secrets: passwords, tokens and keys
/// are not logged, and URLs are logged through redact_url(). Thread-safe.
spdlog::logger& logger();

}  // namespace marty::messaging::detail
