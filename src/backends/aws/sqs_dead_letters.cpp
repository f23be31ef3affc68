// Dead letters on SQS (both AWS backends keep them in the queue of deadletter.<subject>).
//
// SQS cannot read a queue without receiving from it, so a scan receives every message with a
// visibility timeout that covers the scan, then makes the ones it keeps visible again at once
// (and deletes the ones it removes). While a scan runs, the messages it holds are invisible to
// another scan; the queue has no redrive policy, so receiving never moves them elsewhere.
#include <algorithm>
#include <limits>

#include <spdlog/spdlog.h>

#include "aws_wire.hpp"
#include "marty/messaging/dead_letters.hpp"
#include "sqs_backend.hpp"

namespace marty::messaging::aws {
namespace {

using std::chrono::milliseconds;

// Long enough for a scan of the largest queue we read (kDeadLetterScanLimit at ten a call).
constexpr int kScanVisibilitySeconds = 300;
constexpr int kReceiveBatch = 10;  // SQS's maximum per ReceiveMessage

struct Held {
  std::string receipt;
  Message message;
};

// Makes the messages of `receipts` visible again (a failure only delays them: it is logged).
asio::awaitable<void> release(SqsQueues& queues, std::string url,
                              std::vector<std::string> receipts) {
  for (auto& receipt : receipts) {
    QueryParameters parameters{
        {"QueueUrl", url}, {"ReceiptHandle", std::move(receipt)}, {"VisibilityTimeout", "0"}};
    co_await queues.call_logged("ChangeMessageVisibility", std::move(parameters),
                                "the message is hidden from readers for a few minutes");
  }
}

std::vector<std::string> receipts_of(std::vector<Held> held) {
  std::vector<std::string> out;
  out.reserve(held.size());
  for (Held& each : held) out.push_back(std::move(each.receipt));
  return out;
}

// Receives up to `limit` of our messages from the queue at `url`; what is not ours is made
// visible again and logged. The caller makes visible or deletes every message returned.
asio::awaitable<Result<std::vector<Held>>> receive_all(SqsQueues& queues, std::string url,
                                                       std::string subject, std::size_t limit,
                                                       SteadyClock::time_point deadline) {
  std::vector<Held> held;
  std::vector<std::string> not_ours;
  while (held.size() < limit && SteadyClock::now() < deadline) {
    const auto wanted = std::min<std::size_t>(kReceiveBatch, limit - held.size());
    // A one-second wait makes SQS look at all of its servers (a short poll samples a few),
    // so an empty reply means an empty queue.
    QueryParameters parameters{{"QueueUrl", url},
                               {"MaxNumberOfMessages", std::to_string(wanted)},
                               {"WaitTimeSeconds", "1"},
                               {"VisibilityTimeout", std::to_string(kScanVisibilitySeconds)},
                               {"MessageAttributeName.1", "All"}};
    auto reply = co_await queues.call("ReceiveMessage", std::move(parameters));
    if (!reply) {
      co_await release(queues, url, std::move(not_ours));
      co_await release(queues, url, receipts_of(std::move(held)));
      co_return std::move(reply).error().with_context("reading dead letters from " + url);
    }
    const auto messages = reply->find_all("Message");
    if (messages.empty()) break;
    for (const XmlElement* message : messages) {
      Attributes attributes;
      for (const XmlElement* attribute : message->find_all("MessageAttribute")) {
        attributes.emplace_back(attribute->text_of("Name"), attribute->text_of("StringValue"));
      }
      auto decoded = from_aws(subject, message->text_of("Body"), attributes);
      if (!decoded) {
        logger().warn("a message in {} is not ours, passed over: {}", url,
                      decoded.error().describe());
        not_ours.push_back(message->text_of("ReceiptHandle"));
        continue;
      }
      held.push_back(Held{message->text_of("ReceiptHandle"), std::move(*decoded)});
    }
  }
  co_await release(queues, url, std::move(not_ours));
  co_return held;
}

}  // namespace

asio::awaitable<Result<std::vector<Message>>> SqsBackend::read_dead_letters(
    std::string dead_letter_subject, std::size_t limit, SteadyClock::time_point deadline) {
  if (auto usable = check_usable(); !usable) co_return std::move(usable).error();
  std::vector<Message> out;
  auto url = co_await queues_->queue_url(dead_letter_subject, false, false);
  if (!url) {
    if (url.error().is(errc::not_found)) co_return out;  // nothing was ever dead-lettered
    co_return std::move(url).error();
  }
  auto held = co_await receive_all(*queues_, *url, dead_letter_subject, limit, deadline);
  if (!held) co_return std::move(held).error();
  for (const Held& each : *held) out.push_back(each.message);
  co_await release(*queues_, *url, receipts_of(std::move(*held)));
  co_return out;
}

asio::awaitable<Result<std::size_t>> SqsBackend::remove_dead_letters(
    std::string dead_letter_subject, std::set<std::string> ids, SteadyClock::time_point deadline) {
  if (auto usable = check_usable(); !usable) co_return std::move(usable).error();
  auto url = co_await queues_->queue_url(dead_letter_subject, false, false);
  if (!url) {
    if (url.error().is(errc::not_found)) co_return std::size_t{0};
    co_return std::move(url).error();
  }
  auto held = co_await receive_all(*queues_, *url, dead_letter_subject,
                                   std::numeric_limits<std::size_t>::max(), deadline);
  if (!held) co_return std::move(held).error();
  std::vector<Held> kept;
  std::size_t removed = 0;
  std::optional<Error> failure;
  for (Held& each : *held) {
    if (failure || !ids.contains(dead_letter_id(each.message))) {
      kept.push_back(std::move(each));
      continue;
    }
    QueryParameters parameters{{"QueueUrl", *url}, {"ReceiptHandle", each.receipt}};
    auto deleted = co_await queues_->call("DeleteMessage", std::move(parameters));
    if (deleted) {
      ++removed;
    } else {
      failure = std::move(deleted).error();
      kept.push_back(std::move(each));
    }
  }
  co_await release(*queues_, *url, receipts_of(std::move(kept)));
  if (failure) {
    co_return failure->with_context("deleting dead letters of " + dead_letter_subject + " (" +
                                    std::to_string(removed) + " deleted)");
  }
  co_return removed;
}

}  // namespace marty::messaging::aws
