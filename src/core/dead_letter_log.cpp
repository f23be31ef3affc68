// Dead letters in a stream that can neither delete one record nor say where it ends, read and
// settled through the Backend interface alone (RabbitMQ streams).
#include "marty/messaging/detail/dead_letter_log.hpp"

namespace marty::messaging::detail {

asio::awaitable<Result<std::vector<Message>>> read_dead_letter_log(
    Backend& backend, std::string dead_letter_subject, std::size_t limit,
    SteadyClock::time_point deadline) {
  PublishOptions options;
  options.kind = DestinationKind::stream;
  options.pattern = MessagingPattern::streaming;
  options.deadline = deadline;
  // The end of the log is wherever this empty settlement lands: read up to it.
  Message end_marker = dead_letter_settlement(dead_letter_subject, {});
  const std::string end_id(end_marker.id());
  auto marked = co_await backend.publish(std::move(end_marker), options);
  if (!marked) co_return marked.error().with_context("marking the end of " + dead_letter_subject);

  SubscriptionSpec spec;
  spec.subject = dead_letter_subject;
  spec.kind = DestinationKind::stream;
  spec.pattern = MessagingPattern::streaming;
  spec.start = StartPosition::earliest();
  auto subscription = co_await backend.subscribe(spec);
  if (!subscription) {
    co_return subscription.error().with_context("reading " + dead_letter_subject);
  }
  std::vector<Message> records;
  Result<void> outcome = ok();
  while (true) {
    auto delivery = co_await (*subscription)->receive(deadline);
    if (!delivery) {
      outcome = delivery.error().with_context("reading " + dead_letter_subject + " to its end (" +
                                              std::to_string(records.size()) + " read)");
      break;
    }
    Message record = (*delivery)->message();
    (void)co_await (*delivery)->ack();  // a private reader: acks only keep its credit flowing
    if (record.id() == end_id) break;
    records.push_back(std::move(record));
  }
  (*subscription)->close();
  if (!outcome) co_return outcome.error();
  auto unsettled = unsettled_dead_letters(std::move(records));
  if (unsettled.size() > limit) unsettled.resize(limit);
  co_return unsettled;
}

asio::awaitable<Result<std::size_t>> settle_dead_letters_in_log(Backend& backend,
                                                                std::string dead_letter_subject,
                                                                std::set<std::string> ids,
                                                                SteadyClock::time_point deadline) {
  auto present = co_await read_dead_letter_log(backend, dead_letter_subject,
                                               std::numeric_limits<std::size_t>::max(), deadline);
  if (!present) co_return present.error();
  std::vector<std::string> settled;
  for (const Message& record : *present) {
    if (std::string id = dead_letter_id(record); ids.contains(id)) settled.push_back(std::move(id));
  }
  if (settled.empty()) co_return std::size_t{0};
  PublishOptions options;
  options.kind = DestinationKind::stream;
  options.pattern = MessagingPattern::streaming;
  options.deadline = deadline;
  auto published =
      co_await backend.publish(dead_letter_settlement(dead_letter_subject, settled), options);
  if (!published) {
    co_return published.error().with_context("settling dead letters of " + dead_letter_subject);
  }
  co_return settled.size();
}

}  // namespace marty::messaging::detail
