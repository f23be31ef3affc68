#include "marty/messaging/backend.hpp"

namespace marty::messaging {

asio::awaitable<Result<Message>> Backend::request(Message /*message*/,
                                                  std::chrono::milliseconds /*timeout*/) {
  co_return Error(errc::unimplemented, "backend has no native request/reply", std::string(name()));
}

}  // namespace marty::messaging
