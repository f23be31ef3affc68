#pragma once

#include <algorithm>
#include <charconv>
#include <optional>
#include <string>
#include <string_view>

#include "marty/messaging/result.hpp"

namespace marty::messaging::detail {

/// A broker URL, "scheme://[user[:password]@]host[:port][/path]", taken apart. User and password
/// are percent-decoded; the path is what follows the first '/' after the host, undecoded.
struct UrlParts {
  std::string scheme;
  std::string user;
  std::optional<std::string> password;
  std::string host;
  std::optional<int> port;
  std::optional<std::string> path;
};

inline std::string percent_decode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size()) {
      int value = 0;
      auto [end, ec] = std::from_chars(text.data() + i + 1, text.data() + i + 3, value, 16);
      if (ec == std::errc() && end == text.data() + i + 3) {
        out.push_back(static_cast<char>(value));
        i += 2;
        continue;
      }
    }
    out.push_back(text[i]);
  }
  return out;
}

/// Parses `url`; an error (invalid_argument) says what is wrong, naming `field` (the config
/// field the URL came from) but never the password.
inline Result<UrlParts> parse_url(std::string_view url, std::string_view field) {
  auto bad = [field](std::string why) {
    return Error(errc::invalid_argument, std::string(field) + ": " + why);
  };
  UrlParts parts;
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos || scheme_end == 0) {
    return bad("must look like scheme://host:port");
  }
  parts.scheme = std::string(url.substr(0, scheme_end));
  std::string_view rest = url.substr(scheme_end + 3);
  const auto slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  if (slash != std::string_view::npos) parts.path = std::string(rest.substr(slash + 1));
  if (const auto at = authority.rfind('@'); at != std::string_view::npos) {
    const std::string_view userinfo = authority.substr(0, at);
    authority.remove_prefix(at + 1);
    const auto colon = userinfo.find(':');
    parts.user = percent_decode(userinfo.substr(0, colon));
    if (colon != std::string_view::npos)
      parts.password = percent_decode(userinfo.substr(colon + 1));
  }
  if (const auto colon = authority.rfind(':'); colon != std::string_view::npos) {
    const std::string_view port = authority.substr(colon + 1);
    int number = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), number);
    if (ec != std::errc() || end != port.data() + port.size()) return bad("port is not a number");
    parts.port = number;
    authority = authority.substr(0, colon);
  }
  if (authority.empty()) return bad("no host");
  parts.host = std::string(authority);
  return parts;
}

/// `url` fit for a log line or an error message: a password (or a token given as the user, as
/// NATS allows) in its user info is replaced by "***". Anything else is kept as it is, so the
/// reader still sees which server and which user.
inline std::string redact_url(std::string_view url) {
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return std::string(url);
  const std::size_t start = scheme_end + 3;
  const std::size_t authority_end = std::min(url.find('/', start), url.size());
  const std::string_view authority = url.substr(start, authority_end - start);
  const auto at = authority.rfind('@');
  if (at == std::string_view::npos) return std::string(url);
  const std::string_view userinfo = authority.substr(0, at);
  const auto colon = userinfo.find(':');
  // "user:password@" keeps the user; a lone "token@" is all secret.
  const std::string kept =
      colon == std::string_view::npos ? "***" : std::string(userinfo.substr(0, colon)) + ":***";
  return std::string(url.substr(0, start)) + kept + std::string(url.substr(start + at));
}

}  // namespace marty::messaging::detail
