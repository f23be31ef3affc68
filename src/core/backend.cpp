#include "marty/messaging/backend.hpp"

#include "marty/messaging/subject.hpp"

namespace marty::messaging {

Message undecodable_message(std::string_view subject, std::string raw) {
  MessageMetadata metadata;
  metadata.message_id = make_uuid_v7();
  metadata.message_type = subject::type_of(subject);
  metadata.time = Clock::now();
  metadata.content_type = "application/octet-stream";
  return Message(std::move(metadata), std::make_shared<const Payload>(std::move(raw)),
                 std::string(subject));
}

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
