#pragma once

// An HTTP/1.1 server on 127.0.0.1 that answers each request with the next of a script of
// replies (the last one repeats) and records what it was sent: for testing how a client
// handles replies a real service gives only under load or misconfiguration (throttling, access
// denied). One connection at a time, closed after each reply. Runs on a thread of its own.
#include <atomic>
#include <cctype>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read.hpp>
#include <asio/read_until.hpp>
#include <asio/streambuf.hpp>
#include <asio/write.hpp>

namespace marty::messaging::testing {

class ScriptedHttpServer {
 public:
  struct Reply {
    int status = 200;
    std::string body;
  };
  struct Request {
    std::string head;  // request line and headers
    std::string body;
  };

  explicit ScriptedHttpServer(std::vector<Reply> script)
      : script_(std::move(script)),
        acceptor_(io_, {asio::ip::make_address("127.0.0.1"), 0}),
        thread_([this] { serve(); }) {}
  ~ScriptedHttpServer() {
    // A connection of our own wakes the blocking accept, which then sees `stopping_`.
    stopping_ = true;
    asio::io_context io;
    asio::ip::tcp::socket wake(io);
    std::error_code ignored;
    wake.connect(acceptor_.local_endpoint(), ignored);
    thread_.join();
  }
  ScriptedHttpServer(const ScriptedHttpServer&) = delete;
  ScriptedHttpServer& operator=(const ScriptedHttpServer&) = delete;

  std::string url() const {
    return "http://127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port());
  }

  std::vector<Request> requests() const {
    std::lock_guard lock(mutex_);
    return requests_;
  }

 private:
  void serve() {
    while (true) {
      asio::ip::tcp::socket socket(io_);
      std::error_code error;
      acceptor_.accept(socket, error);
      if (stopping_) return;
      if (error) continue;
      asio::streambuf buffer;
      const std::size_t head_size = asio::read_until(socket, buffer, "\r\n\r\n", error);
      if (error) continue;
      Request request;
      request.head.assign(asio::buffers_begin(buffer.data()),
                          asio::buffers_begin(buffer.data()) + static_cast<long>(head_size));
      buffer.consume(head_size);
      std::size_t length = 0;
      if (auto at = lowercase(request.head).find("content-length:"); at != std::string::npos) {
        length = std::stoul(request.head.substr(at + 15));
      }
      if (buffer.size() < length)
        asio::read(socket, buffer, asio::transfer_exactly(length - buffer.size()), error);
      request.body.assign(asio::buffers_begin(buffer.data()), asio::buffers_end(buffer.data()));
      Reply reply;
      {
        std::lock_guard lock(mutex_);
        reply = script_[std::min(requests_.size(), script_.size() - 1)];
        requests_.push_back(std::move(request));
      }
      const std::string text = "HTTP/1.1 " + std::to_string(reply.status) +
                               " Scripted\r\nContent-Type: text/xml\r\nContent-Length: " +
                               std::to_string(reply.body.size()) + "\r\nConnection: close\r\n\r\n" +
                               reply.body;
      asio::write(socket, asio::buffer(text), error);
      socket.shutdown(asio::ip::tcp::socket::shutdown_both, error);
    }
  }

  static std::string lowercase(std::string text) {
    for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return text;
  }

  std::atomic<bool> stopping_{false};
  std::vector<Reply> script_;
  mutable std::mutex mutex_;
  std::vector<Request> requests_;
  asio::io_context io_;
  asio::ip::tcp::acceptor acceptor_;
  std::thread thread_;  // last: starts once the rest is made
};

}  // namespace marty::messaging::testing
