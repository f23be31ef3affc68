#pragma once

#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "marty/messaging/capabilities.hpp"
#include "marty/messaging/pattern_config.hpp"
#include "marty/messaging/types.hpp"

namespace marty::messaging {

/// An explicit routing rule: message types matching `type_glob` ("orders.*") go to `backend`.
struct Route {
  std::string type_glob;
  MessageBackendType backend = MessageBackendType::memory;
  /// The patterns the rule covers. Empty: every pattern the backend supports (other patterns
  /// of matching types fall through to the next rule or the defaults).
  std::set<MessagingPattern> patterns;
  /// How messages sent by this rule are written.
  WireFormat format = WireFormat::cloudevents;
};

/// The registered backends, in registration order, with what each can do.
using BackendTable = std::vector<std::pair<MessageBackendType, const Capabilities*>>;

/// Picks a backend per message type and pattern. Order of precedence:
/// 1. the first route whose glob matches the type and that covers the pattern;
/// 2. the default backend, if one was set and it serves the pattern with the guarantee;
/// 3. PatternSelector::recommend_backend(pattern, "medium"), if registered and capable;
/// 4. the first registered backend that serves the pattern with the guarantee.
/// Not thread-safe for writes; the bus configures it before start() only.
class Router {
 public:
  void add(Route route) { routes_.push_back(std::move(route)); }
  const std::vector<Route>& routes() const noexcept { return routes_; }

  /// `format`, when given, gets the wire format of the rule that chose (cloudevents when no
  /// rule did).
  Result<MessageBackendType> select(std::string_view message_type,
                                    const MessagingPatternConfig& config,
                                    const BackendTable& backends,
                                    std::optional<MessageBackendType> default_backend,
                                    WireFormat* format = nullptr) const;

  /// Checks at start() that every route names a registered backend able to serve each pattern
  /// it lists (with the pattern's guarantee), and that every pattern in `required` has some
  /// backend. The error names the route or pattern and says why.
  Result<void> validate(const BackendTable& backends,
                        const std::vector<MessagingPatternConfig>& required) const;

 private:
  std::vector<Route> routes_;
};

}  // namespace marty::messaging
