#include "marty/messaging/backend.hpp"

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>

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

Result<void> Delivery::ack_now() {
  return Error(errc::unimplemented, "this delivery is acknowledged only asynchronously (ack())");
}

asio::awaitable<Result<std::vector<std::unique_ptr<Delivery>>>> Subscription::receive_batch(
    std::size_t /*max*/, std::optional<SteadyClock::time_point> deadline) {
  auto received = co_await receive(deadline);
  if (!received) co_return std::move(received).error();
  std::vector<std::unique_ptr<Delivery>> batch;
  batch.push_back(std::move(*received));
  co_return batch;
}

namespace {

// Publishes `records` one after the other, in order, reporting each as it ends. `backend`
// outlives the call: the sink's owner keeps it (the CompletionSink contract).
asio::awaitable<void> publish_in_order(Backend* backend, std::vector<OutboundRecord> records,
                                       PublishOptions options,
                                       std::shared_ptr<CompletionSink> sink) {
  for (OutboundRecord& record : records) {
    Result<void> result = co_await backend->publish(std::move(record.message), options);
    Completion completion{record.sequence, std::move(result)};  // no co_await in the aggregate
    sink->on_complete(std::span<Completion>(&completion, 1));
  }
}

}  // namespace

void Backend::submit(std::span<OutboundRecord> records, const PublishOptions& options,
                     const std::shared_ptr<CompletionSink>& sink) {
  if (!sink || records.empty()) return;
  std::vector<OutboundRecord> pending;
  pending.reserve(records.size());
  for (const OutboundRecord& record : records) {
    pending.push_back(OutboundRecord{record.message, record.sequence, std::nullopt});
  }
  // Made on the executor's thread (a function, not an awaitable, is spawned): asio's coroutine
  // frames come from a per-thread cache, and submit() may be called from any thread.
  asio::co_spawn(
      sink->executor(),
      [backend = this, pending = std::move(pending), options, sink]() mutable {
        return publish_in_order(backend, std::move(pending), std::move(options), std::move(sink));
      },
      asio::detached);
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
