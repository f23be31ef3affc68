#include "marty/messaging/backend.hpp"

namespace marty::messaging {

asio::awaitable<Result<Message>> Backend::request(Message /*message*/,
                                                  std::chrono::milliseconds /*timeout*/) {
  co_return Error(errc::unimplemented, "backend has no native request/reply", std::string(name()));
}

asio::awaitable<Result<std::vector<Message>>> Backend::read_dead_letters(
    std::string /*dead_letter_subject*/, std::size_t /*limit*/,
    SteadyClock::time_point /*deadline*/) {
  co_return Error(errc::unimplemented, "backend cannot list its dead letters", std::string(name()));
}

asio::awaitable<Result<std::size_t>> Backend::remove_dead_letters(
    std::string /*dead_letter_subject*/, std::set<std::string> /*ids*/,
    SteadyClock::time_point /*deadline*/) {
  co_return Error(errc::unimplemented, "backend cannot remove its dead letters",
                  std::string(name()));
}

asio::awaitable<Result<std::uint64_t>> Backend::consumer_lag(SubscriptionSpec /*spec*/,
                                                             SteadyClock::time_point /*deadline*/) {
  co_return Error(errc::unimplemented, "backend cannot tell a consumer group's lag",
                  std::string(name()));
}

}  // namespace marty::messaging
