#pragma once
// A TCP forwarder on loopback that records what clients send through it to a real server, so a
// test can read the requests a backend puts on the wire (the server still answers them).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace marty::messaging::testing {

class RecordingProxy {
 public:
  /// Forwards to 127.0.0.1:`target_port`; listens on a free loopback port.
  explicit RecordingProxy(int target_port) : target_port_(target_port) {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    if (::bind(listener_, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
        ::listen(listener_, 16) != 0 ||
        ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      throw std::runtime_error("RecordingProxy: cannot listen on loopback");
    }
    port_ = ntohs(address.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~RecordingProxy() {
    stopping_ = true;
    acceptor_.join();
    ::close(listener_);
    for (auto& t : pumps_) t.join();
  }
  RecordingProxy(const RecordingProxy&) = delete;
  RecordingProxy& operator=(const RecordingProxy&) = delete;

  int port() const { return port_; }

  /// The form parameters of every HTTP request sent so far, in order (URL-decoded).
  std::vector<std::map<std::string, std::string>> form_requests() const {
    std::vector<std::map<std::string, std::string>> requests;
    std::lock_guard lock(mutex_);
    for (const std::string& stream : sent_) {
      std::size_t at = 0;
      while ((at = stream.find("POST ", at)) != std::string::npos) {
        const std::size_t head_end = stream.find("\r\n\r\n", at);
        if (head_end == std::string::npos) break;
        const std::string head = stream.substr(at, head_end - at);
        std::size_t length = 0;
        for (const char* name : {"Content-Length: ", "content-length: "}) {
          if (auto p = head.find(name); p != std::string::npos) {
            length = std::stoul(head.substr(p + std::string(name).size()));
          }
        }
        requests.push_back(parse_form(stream.substr(head_end + 4, length)));
        at = head_end + 4 + length;
      }
    }
    return requests;
  }

  /// The requests of one action ("Publish", "CreateTopic"...).
  std::vector<std::map<std::string, std::string>> requests_of(const std::string& action) const {
    std::vector<std::map<std::string, std::string>> found;
    for (auto& request : form_requests()) {
      if (request["Action"] == action) found.push_back(request);
    }
    return found;
  }

 private:
  static std::string decode(const std::string& text) {
    std::string out;
    for (std::size_t i = 0; i < text.size(); ++i) {
      if (text[i] == '+') {
        out += ' ';
      } else if (text[i] == '%' && i + 2 < text.size()) {
        out += static_cast<char>(std::stoi(text.substr(i + 1, 2), nullptr, 16));
        i += 2;
      } else {
        out += text[i];
      }
    }
    return out;
  }
  static std::map<std::string, std::string> parse_form(const std::string& body) {
    std::map<std::string, std::string> form;
    std::size_t start = 0;
    while (start <= body.size()) {
      std::size_t end = body.find('&', start);
      if (end == std::string::npos) end = body.size();
      const std::string pair = body.substr(start, end - start);
      const std::size_t equals = pair.find('=');
      if (!pair.empty()) {
        form[decode(pair.substr(0, equals))] =
            equals == std::string::npos ? "" : decode(pair.substr(equals + 1));
      }
      start = end + 1;
    }
    return form;
  }

  void accept_loop() {
    while (!stopping_) {
      pollfd waiting{listener_, POLLIN, 0};
      if (::poll(&waiting, 1, 50) <= 0) continue;
      const int client = ::accept(listener_, nullptr, nullptr);
      if (client < 0) continue;
      const int server = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in address{};
      address.sin_family = AF_INET;
      address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      address.sin_port = htons(static_cast<std::uint16_t>(target_port_));
      if (::connect(server, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
        ::close(client);
        ::close(server);
        continue;
      }
      std::size_t index = 0;
      {
        std::lock_guard lock(mutex_);
        index = sent_.size();
        sent_.emplace_back();
      }
      pumps_.emplace_back([this, client, server, index] { pump(client, server, index); });
    }
  }

  // Forwards both ways until either side closes; records the client's bytes.
  void pump(int client, int server, std::size_t index) {
    char buffer[16384];
    pollfd both[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
    while (!stopping_) {
      if (::poll(both, 2, 50) <= 0) continue;
      bool open = true;
      for (int side = 0; side < 2 && open; ++side) {
        if (both[side].revents == 0) continue;
        const ssize_t n = ::read(both[side].fd, buffer, sizeof(buffer));
        if (n <= 0) {
          open = false;
          break;
        }
        if (side == 0) {
          std::lock_guard lock(mutex_);
          sent_[index].append(buffer, static_cast<std::size_t>(n));
        }
        const int to = side == 0 ? server : client;
        for (ssize_t written = 0; written < n;) {
          const ssize_t w = ::write(to, buffer + written, static_cast<std::size_t>(n - written));
          if (w <= 0) {
            open = false;
            break;
          }
          written += w;
        }
      }
      if (!open) break;
    }
    ::close(client);
    ::close(server);
  }

  int target_port_;
  int listener_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  std::vector<std::thread> pumps_;  // touched by the acceptor thread only, joined after it
  mutable std::mutex mutex_;
  std::vector<std::string> sent_;  // per connection
};

}  // namespace marty::messaging::testing
