#include "redis_setup.hpp"

#include <cctype>
#include <charconv>

#include "marty/messaging/detail/url.hpp"

namespace marty::messaging::redis {

errc code_for_error_reply(std::string_view code) {
  if (code == "NOPERM" || code == "NOAUTH" || code == "WRONGPASS") return errc::permission_denied;
  if (code == "OOM") return errc::resource_exhausted;
  if (code == "LOADING" || code == "BUSY" || code == "READONLY" || code == "MASTERDOWN" ||
      code == "TRYAGAIN" || code == "CLUSTERDOWN") {
    return errc::unavailable;
  }
  if (code == "NOGROUP") return errc::not_found;
  return errc::internal;
}

Result<Reply> checked(ReplyResult result, std::string_view what) {
  if (!result) return std::move(result).error().with_context(what);
  if (result->is_error()) {
    return redis_error(code_for_error_reply(result->error_code()),
                       std::string(what) + ": " + result->text);
  }
  return result;
}

Result<void> apply_url(RedisConfig& config) {
  if (config.url.empty()) return ok();
  auto parts = detail::parse_url(config.url, "RedisConfig.url");
  if (!parts) return std::move(parts).error();
  if (parts->scheme != "redis") {
    return Error(errc::invalid_argument, "RedisConfig.url: must start with redis://");
  }
  config.host = parts->host;
  if (parts->port) config.port = *parts->port;
  if (!parts->user.empty() || parts->password) {
    config.username = parts->user;
    config.password = parts->password.value_or("");
  }
  if (parts->path && !parts->path->empty()) {
    const std::string& db = *parts->path;
    auto [end, ec] = std::from_chars(db.data(), db.data() + db.size(), config.database);
    if (ec != std::errc() || end != db.data() + db.size()) {
      return Error(errc::invalid_argument, "RedisConfig.url: database is not a number");
    }
  }
  return ok();
}

Result<void> validate(const RedisConfig& c) {
  auto bad = [](std::string_view field, std::string why) {
    return Error(errc::invalid_argument, "RedisConfig." + std::string(field) + " " + why);
  };
  if (c.host.empty()) return bad("host", "is empty");
  if (c.port <= 0 || c.port > 65535) return bad("port", "must be 1..65535");
  if (c.database < 0) return bad("database", "must not be negative");
  if (c.connect_timeout.count() <= 0) return bad("connect_timeout", "must be positive");
  if (c.reconnect_wait.count() <= 0) return bad("reconnect_wait", "must be positive");
  if (c.outage_wait.count() < 0) return bad("outage_wait", "must not be negative");
  for (char ch : c.key_prefix) {
    if (std::isspace(static_cast<unsigned char>(ch)) ||
        std::iscntrl(static_cast<unsigned char>(ch))) {
      return bad("key_prefix", "must not contain white space or control characters");
    }
  }
  for (char ch : c.client_name) {
    if (std::isspace(static_cast<unsigned char>(ch)) ||
        std::iscntrl(static_cast<unsigned char>(ch))) {
      return bad("client_name", "must not contain white space or control characters");
    }
  }
  if (c.max_stream_length < 0) return bad("max_stream_length", "must not be negative");
  if (c.visibility_timeout.count() <= 0) return bad("visibility_timeout", "must be positive");
  if (c.reclaim_interval.count() <= 0) return bad("reclaim_interval", "must be positive");
  if (c.max_deliveries < 0) return bad("max_deliveries", "must not be negative");
  if (c.prefetch <= 0) return bad("prefetch", "must be positive");
  if (c.block_timeout.count() <= 0) return bad("block_timeout", "must be positive");
  return ok();
}

ConnectionOptions connection_options_for(const RedisConfig& config) {
  ConnectionOptions options;
  options.host = config.host;
  options.port = config.port;
  options.database = config.database;
  options.username = config.username;
  options.password = config.password;
  options.client_name = config.client_name;
  options.connect_timeout = config.connect_timeout;
  options.reconnect_wait = config.reconnect_wait;
  options.outage_wait = config.outage_wait;
  return options;
}

}  // namespace marty::messaging::redis
