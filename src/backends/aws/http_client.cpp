#include "http_client.hpp"

#include <curl/curl.h>

#include <atomic>
#include <deque>
#include <mutex>
#include <thread>

#include "marty/messaging/detail/completion.hpp"

namespace marty::messaging::aws {
namespace {

// libcurl's global state, set up once for the process (curl_global_init is not thread-safe).
void init_curl_once() {
  static const bool done = [] { return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK; }();
  (void)done;
}

std::size_t on_body(char* data, std::size_t size, std::size_t count, void* out) {
  static_cast<std::string*>(out)->append(data, size * count);
  return size * count;
}

struct Transfer {
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  std::string url;
  std::string body;
  std::string response;
  char error[CURL_ERROR_SIZE] = {};
  detail::Complete<Result<HttpResponse>> complete;

  ~Transfer() {
    if (headers != nullptr) curl_slist_free_all(headers);
    if (easy != nullptr) curl_easy_cleanup(easy);
  }
};

}  // namespace

struct HttpClient::Impl {
  CURLM* multi = nullptr;
  std::thread thread;
  std::mutex mutex;
  std::deque<std::unique_ptr<Transfer>> incoming;  // handed to the thread
  std::atomic<bool> stopping{false};
  std::chrono::milliseconds connect_timeout{0};

  void run() {
    std::vector<std::unique_ptr<Transfer>> running;
    while (!stopping.load()) {
      {
        std::lock_guard lock(mutex);
        while (!incoming.empty()) {
          std::unique_ptr<Transfer> transfer = std::move(incoming.front());
          incoming.pop_front();
          if (transfer->easy == nullptr ||
              curl_multi_add_handle(multi, transfer->easy) != CURLM_OK) {
            transfer->complete(Error(errc::unavailable,
                                     "POST " + transfer->url + ": libcurl refused the transfer"));
            continue;
          }
          running.push_back(std::move(transfer));
        }
      }
      int active = 0;
      curl_multi_perform(multi, &active);
      int left = 0;
      while (CURLMsg* message = curl_multi_info_read(multi, &left)) {
        if (message->msg != CURLMSG_DONE) continue;
        CURL* easy = message->easy_handle;
        const CURLcode code = message->data.result;
        curl_multi_remove_handle(multi, easy);
        for (auto it = running.begin(); it != running.end(); ++it) {
          if ((*it)->easy != easy) continue;
          finish(**it, code);
          running.erase(it);
          break;
        }
      }
      curl_multi_poll(multi, nullptr, 0, 1000, nullptr);
    }
    for (auto& transfer : running) {
      curl_multi_remove_handle(multi, transfer->easy);
      transfer->complete(Error(errc::cancelled, "the HTTP client closed"));
    }
    std::lock_guard lock(mutex);
    for (auto& transfer : incoming) {
      transfer->complete(Error(errc::cancelled, "the HTTP client closed"));
    }
    incoming.clear();
  }

  static void finish(Transfer& transfer, CURLcode code) {
    if (code != CURLE_OK) {
      const std::string reason =
          transfer.error[0] != '\0' ? transfer.error : curl_easy_strerror(code);
      const errc kind =
          code == CURLE_OPERATION_TIMEDOUT ? errc::deadline_exceeded : errc::unavailable;
      transfer.complete(Error(kind, "POST " + transfer.url + ": " + reason));
      return;
    }
    HttpResponse response;
    curl_easy_getinfo(transfer.easy, CURLINFO_RESPONSE_CODE, &response.status);
    response.body = std::move(transfer.response);
    transfer.complete(std::move(response));
  }
};

HttpClient::HttpClient(std::chrono::milliseconds connect_timeout)
    : impl_(std::make_unique<Impl>()) {
  init_curl_once();
  impl_->multi = curl_multi_init();
  // No cap on connections per host: long polls hold theirs for up to 20 s, and acks and sends
  // must never queue behind them.
  impl_->connect_timeout = connect_timeout;
  Impl* impl = impl_.get();
  impl_->thread = std::thread([impl] { impl->run(); });
}

HttpClient::~HttpClient() {
  close();
  curl_multi_cleanup(impl_->multi);
}

void HttpClient::close() {
  {
    std::lock_guard lock(impl_->mutex);
    if (impl_->stopping.exchange(true)) return;
  }
  curl_multi_wakeup(impl_->multi);
  if (impl_->thread.joinable()) impl_->thread.join();
}

asio::awaitable<Result<HttpResponse>> HttpClient::post(std::string url,
                                                       std::vector<std::string> headers,
                                                       std::string body,
                                                       std::chrono::milliseconds timeout) {
  auto transfer = std::make_unique<Transfer>();
  transfer->easy = curl_easy_init();
  transfer->url = std::move(url);
  transfer->body = std::move(body);
  for (const auto& header : headers)
    transfer->headers = curl_slist_append(transfer->headers, header.c_str());
  CURL* easy = transfer->easy;
  curl_easy_setopt(easy, CURLOPT_URL, transfer->url.c_str());
  curl_easy_setopt(easy, CURLOPT_POST, 1L);
  curl_easy_setopt(easy, CURLOPT_POSTFIELDS, transfer->body.data());
  curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
                   static_cast<curl_off_t>(transfer->body.size()));
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, transfer->headers);
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &on_body);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &transfer->response);
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, transfer->error);
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
  curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(impl_->connect_timeout.count()));
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
  Impl* impl = impl_.get();
  Transfer* raw = transfer.release();
  auto start = [impl, raw](detail::Complete<Result<HttpResponse>> complete) {
    std::unique_ptr<Transfer> owned(raw);
    owned->complete = std::move(complete);
    {
      std::lock_guard lock(impl->mutex);
      if (!impl->stopping.load()) {
        impl->incoming.push_back(std::move(owned));
        owned = nullptr;
      }
    }
    if (owned) {
      owned->complete(Error(errc::cancelled, "the HTTP client is closed"));
      return;
    }
    curl_multi_wakeup(impl->multi);
  };
  co_return co_await detail::await_completion<Result<HttpResponse>>(std::move(start));
}

}  // namespace marty::messaging::aws
