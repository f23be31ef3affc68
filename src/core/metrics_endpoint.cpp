#include "marty/messaging/metrics_endpoint.hpp"

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>
#include <asio/read_until.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/streambuf.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

namespace marty::messaging {

using asio::ip::tcp;

struct MetricsEndpoint::State {
  tcp::acceptor acceptor;
  std::function<std::string()> text;
  std::uint16_t port = 0;

  State(asio::any_io_executor executor, std::function<std::string()> body)
      : acceptor(std::move(executor)), text(std::move(body)) {}
};

namespace {

constexpr std::size_t kMaxRequestBytes = 8192;

std::string response(const char* status, const char* content_type, const std::string& body) {
  return std::string("HTTP/1.1 ") + status + "\r\nContent-Type: " + content_type +
         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" +
         body;
}

// Answers one request on `socket`, then closes it. A client that sends nothing for 10 s is
// dropped, so a stuck scraper cannot hold a connection open for ever.
asio::awaitable<void> answer(std::shared_ptr<MetricsEndpoint::State> state, tcp::socket socket) {
  asio::steady_timer timeout(socket.get_executor(), std::chrono::seconds(10));
  timeout.async_wait([&socket](const std::error_code& error) {
    if (!error) {
      std::error_code ignored;
      socket.close(ignored);
    }
  });
  asio::streambuf request(kMaxRequestBytes);
  std::error_code error;
  co_await asio::async_read_until(socket, request, "\r\n\r\n",
                                  asio::redirect_error(asio::use_awaitable, error));
  std::string reply;
  if (error) {
    reply = response("400 Bad Request", "text/plain", "a request line and headers, please\n");
  } else {
    std::string line(asio::buffers_begin(request.data()), asio::buffers_end(request.data()));
    line = line.substr(0, line.find("\r\n"));
    const std::size_t first = line.find(' ');
    const std::size_t second = first == std::string::npos ? first : line.find(' ', first + 1);
    const std::string method = line.substr(0, first);
    const std::string path =
        first == std::string::npos ? "" : line.substr(first + 1, second - first - 1);
    if (second == std::string::npos || !line.substr(second + 1).starts_with("HTTP/1.")) {
      reply = response("400 Bad Request", "text/plain", "not an HTTP/1.x request line\n");
    } else if (method != "GET") {
      reply = response("405 Method Not Allowed", "text/plain", "GET only\n");
    } else if (path != "/metrics" && !path.starts_with("/metrics?")) {
      reply = response("404 Not Found", "text/plain", "the metrics are at /metrics\n");
    } else {
      reply = response("200 OK", "text/plain; version=0.0.4; charset=utf-8", state->text());
    }
  }
  co_await asio::async_write(socket, asio::buffer(reply),
                             asio::redirect_error(asio::use_awaitable, error));
  timeout.cancel();
  socket.shutdown(tcp::socket::shutdown_both, error);
  socket.close(error);
}

asio::awaitable<void> accept_loop(std::shared_ptr<MetricsEndpoint::State> state) {
  while (state->acceptor.is_open()) {
    std::error_code error;
    tcp::socket socket =
        co_await state->acceptor.async_accept(asio::redirect_error(asio::use_awaitable, error));
    if (error == asio::error::operation_aborted || !state->acceptor.is_open()) break;
    if (error) continue;  // a connection that failed before it was accepted
    asio::co_spawn(state->acceptor.get_executor(), answer(state, std::move(socket)),
                   asio::detached);
  }
}

}  // namespace

Result<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::start(asio::any_io_executor executor,
                                                                const std::string& address,
                                                                std::uint16_t port,
                                                                std::function<std::string()> text) {
  std::error_code error;
  const auto ip = asio::ip::make_address(address, error);
  if (error) {
    return Error(errc::invalid_argument, "MetricsEndpoint: '" + address + "' is not an address");
  }
  auto state = std::make_shared<State>(executor, std::move(text));
  const tcp::endpoint where(ip, port);
  const std::string named = address + ":" + std::to_string(port);
  state->acceptor.open(where.protocol(), error);
  if (!error) state->acceptor.set_option(tcp::acceptor::reuse_address(true), error);
  if (!error) state->acceptor.bind(where, error);
  if (!error) state->acceptor.listen(asio::socket_base::max_listen_connections, error);
  if (error) {
    return Error(errc::unavailable,
                 "MetricsEndpoint: cannot listen on " + named + ": " + error.message());
  }
  state->port = state->acceptor.local_endpoint().port();
  asio::co_spawn(executor, accept_loop(state), asio::detached);
  return std::unique_ptr<MetricsEndpoint>(new MetricsEndpoint(std::move(state)));
}

MetricsEndpoint::MetricsEndpoint(std::shared_ptr<State> state) : state_(std::move(state)) {}

MetricsEndpoint::~MetricsEndpoint() {
  stop();
}

std::uint16_t MetricsEndpoint::port() const noexcept {
  return state_->port;
}

void MetricsEndpoint::stop() {
  // Closed on its executor: the accept loop runs there.
  asio::post(state_->acceptor.get_executor(), [state = state_] {
    std::error_code ignored;
    state->acceptor.close(ignored);
  });
}

}  // namespace marty::messaging
