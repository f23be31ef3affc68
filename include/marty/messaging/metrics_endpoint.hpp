#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <asio/any_io_executor.hpp>

#include "marty/messaging/result.hpp"

namespace marty::messaging {

/// A small HTTP/1.1 server for Prometheus to scrape: `GET /metrics` answers `text()` as
/// `text/plain; version=0.0.4`; any other path is 404, anything that is not a GET 405, a
/// malformed or oversized request 400. One request per connection.
///
///   auto endpoint = MetricsEndpoint::start(executor, "0.0.0.0", 9464,
///                                          [bus] { return bus->metrics().prometheus_text(); });
///
/// Thread-safety: `text` is called on `executor`; stop() and the destructor may be called from
/// any thread (the destructor stops).
class MetricsEndpoint {
 public:
  /// Listens on `address`:`port` (port 0: a free one, see port()). `unavailable` naming the
  /// address when it cannot listen there; `invalid_argument` for an address that is not one.
  static Result<std::unique_ptr<MetricsEndpoint>> start(asio::any_io_executor executor,
                                                        const std::string& address,
                                                        std::uint16_t port,
                                                        std::function<std::string()> text);
  ~MetricsEndpoint();
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  std::uint16_t port() const noexcept;
  /// Stops listening; requests being answered finish.
  void stop();

  struct State;

 private:
  explicit MetricsEndpoint(std::shared_ptr<State> state);
  std::shared_ptr<State> state_;
};

}  // namespace marty::messaging
