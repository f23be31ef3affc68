// Dead letters read back, and the bus's list / requeue / purge over every backend that keeps
// them. Backends only read and delete what is stored on deadletter.<subject>; the parsing,
// filtering and the requeue protocol (publish first, then delete: a failure in between leaves
// a copy, never a loss) live here once.
#include "dead_letter_admin.hpp"

#include <algorithm>
#include <charconv>
#include <map>

#include "marty/messaging/detail/json_text.hpp"
#include "marty/messaging/event_bus.hpp"

namespace marty::messaging {
namespace {

std::string header_or_empty(const Message& message, std::string_view name) {
  return std::string(message.header(name).value_or(std::string_view()));
}

std::optional<Clock::time_point> time_header(const Message& message, std::string_view name) {
  const std::string text = header_or_empty(message, name);
  if (text.empty()) return std::nullopt;
  auto parsed = parse_rfc3339(text);
  if (!parsed) return std::nullopt;
  return *parsed;
}

// The pattern a dead letter without a pattern header (one a backend wrote because it could not
// decode the record) was most likely sent under, from the bus's subject layout.
MessagingPattern pattern_by_subject(std::string_view subject, const Backend& backend) {
  if (subject.starts_with("commands.")) return MessagingPattern::point_to_point;
  if (subject.starts_with("events.")) return MessagingPattern::pub_sub;
  return backend.capabilities().supports(MessagingPattern::streaming) ? MessagingPattern::streaming
                                                                      : MessagingPattern::pub_sub;
}

struct Found {
  std::shared_ptr<Backend> backend;
  DeadLetter dead_letter;
};

asio::awaitable<Result<std::vector<Found>>> find(detail::DeadLetterBackends backends,
                                                 DeadLetterFilter filter) {
  if (filter.subject.empty()) {
    co_return Error(errc::invalid_argument,
                    "dead letters: no subject (the subject the messages failed on, "
                    "\"events.order_placed\")");
  }
  if (filter.timeout.count() <= 0) {
    co_return Error(errc::invalid_argument, "dead letters: timeout must be positive");
  }
  const auto deadline = SteadyClock::now() + filter.timeout;
  const std::string stored_on = dead_letter_subject(filter.subject);
  std::vector<Found> found;
  for (const auto& backend : backends) {
    auto read =
        co_await backend->read_dead_letters(stored_on, detail::kDeadLetterScanLimit, deadline);
    if (!read) co_return read.error().with_context("reading dead letters of " + filter.subject);
    for (Message& stored : *read) {
      DeadLetter dead_letter =
          DeadLetter::from_message(std::move(stored), std::string(backend->name()));
      if (dead_letter.subject.empty()) dead_letter.subject = filter.subject;
      if (filter.matches(dead_letter)) found.push_back(Found{backend, std::move(dead_letter)});
    }
  }
  // Oldest failure first across backends (each backend's own order is kept among equals).
  std::stable_sort(found.begin(), found.end(), [](const Found& a, const Found& b) {
    const auto never = Clock::time_point::max();
    return a.dead_letter.last_failure.value_or(never) < b.dead_letter.last_failure.value_or(never);
  });
  if (filter.limit != 0 && found.size() > filter.limit) found.resize(filter.limit);
  co_return found;
}

// Deletes `found` from the backends that keep them; returns how many were deleted.
asio::awaitable<Result<std::size_t>> remove(const std::vector<Found>& found, std::string subject,
                                            SteadyClock::time_point deadline) {
  std::map<Backend*, std::pair<std::shared_ptr<Backend>, std::set<std::string>>> by_backend;
  for (const Found& each : found) {
    auto& entry = by_backend[each.backend.get()];
    entry.first = each.backend;
    entry.second.insert(each.dead_letter.id);
  }
  std::size_t removed = 0;
  for (auto& [raw, entry] : by_backend) {
    (void)raw;
    auto done = co_await entry.first->remove_dead_letters(dead_letter_subject(subject),
                                                          std::move(entry.second), deadline);
    if (!done) co_return done.error();
    removed += *done;
  }
  co_return removed;
}

}  // namespace

std::string dead_letter_id(const Message& stored) {
  std::string id = header_or_empty(stored, headers::kDeadLetterId);
  return id.empty() ? std::string(stored.id()) : id;
}

DeadLetter DeadLetter::from_message(Message stored, std::string backend_name) {
  DeadLetter out;
  out.id = dead_letter_id(stored);
  out.subject = header_or_empty(stored, headers::kDeadLetterSubject);
  if (out.subject.empty() && stored.subject().starts_with("deadletter.")) {
    out.subject = stored.subject().substr(std::string_view("deadletter.").size());
  }
  out.reason = header_or_empty(stored, headers::kDeadLetterReason);
  const std::string attempts = header_or_empty(stored, headers::kDeadLetterAttempts);
  int parsed = 0;
  if (std::from_chars(attempts.data(), attempts.data() + attempts.size(), parsed).ec ==
          std::errc() &&
      parsed > 0) {
    out.attempts = parsed;
  }
  out.group = header_or_empty(stored, headers::kDeadLetterGroup);
  if (auto pattern = parse_pattern(header_or_empty(stored, headers::kDeadLetterPattern))) {
    out.pattern = *pattern;
  }
  out.last_failure = time_header(stored, headers::kDeadLetterTime);
  out.first_failure = time_header(stored, headers::kDeadLetterFirstFailure);
  if (!out.first_failure) out.first_failure = out.last_failure;
  out.backend = std::move(backend_name);
  out.message = std::move(stored);
  return out;
}

Message DeadLetter::original() const {
  Message copy = message;
  copy.set_subject(subject);
  auto& headers = copy.mutable_metadata().headers;
  std::erase_if(headers, [](const auto& header) {
    return header.first.starts_with(headers::kDeadLetterPrefix);
  });
  return copy;
}

bool DeadLetterFilter::matches(const DeadLetter& dead_letter) const {
  if (!ids.empty() && !ids.contains(dead_letter.id)) return false;
  if (!message_id.empty() && dead_letter.message.id() != message_id) return false;
  if (!reason_contains.empty() && dead_letter.reason.find(reason_contains) == std::string::npos) {
    return false;
  }
  if (!group.empty() && dead_letter.group != group) return false;
  if (failed_since || failed_before) {
    if (!dead_letter.last_failure) return false;
    if (failed_since && *dead_letter.last_failure < *failed_since) return false;
    if (failed_before && *dead_letter.last_failure >= *failed_before) return false;
  }
  return true;
}

namespace detail {

Message dead_letter_settlement(const std::string& dead_letter_subject,
                               const std::vector<std::string>& ids) {
  MessageMetadata metadata;
  metadata.message_id = make_uuid_v7();
  metadata.message_type = "marty.dead_letter_settlement";
  metadata.time = Clock::now();
  metadata.headers[std::string(kDeadLetterSettledHeader)] = "true";
  Message record = Message::from_json(Json(ids), std::move(metadata));
  record.set_subject(dead_letter_subject);
  return record;
}

bool is_dead_letter_settlement(const Message& record) {
  return record.header(kDeadLetterSettledHeader).has_value();
}

std::vector<Message> unsettled_dead_letters(std::vector<Message> records) {
  std::set<std::string> settled;
  for (const Message& record : records) {
    if (!is_dead_letter_settlement(record)) continue;
    const Json ids = parse_json_text(record.bytes());
    if (!ids.is_array()) continue;  // not one of ours: settles nothing
    for (const auto& id : ids) {
      if (id.is_string()) settled.insert(id.get<std::string>());
    }
  }
  std::vector<Message> out;
  for (Message& record : records) {
    if (is_dead_letter_settlement(record) || settled.contains(dead_letter_id(record))) continue;
    out.push_back(std::move(record));
  }
  return out;
}

asio::awaitable<Result<std::vector<DeadLetter>>> list_dead_letters(DeadLetterBackends backends,
                                                                   DeadLetterFilter filter) {
  auto found = co_await find(std::move(backends), std::move(filter));
  if (!found) co_return found.error();
  std::vector<DeadLetter> out;
  out.reserve(found->size());
  for (Found& each : *found) out.push_back(std::move(each.dead_letter));
  co_return out;
}

asio::awaitable<Result<std::size_t>> requeue_dead_letters(DeadLetterBackends backends,
                                                          DeadLetterFilter filter,
                                                          DeadLetterPublisher publish) {
  const auto deadline = SteadyClock::now() + filter.timeout;
  const std::string subject = filter.subject;
  auto found = co_await find(std::move(backends), std::move(filter));
  if (!found) co_return found.error();
  // Publish every one, in order, before deleting any: a crash in between leaves copies.
  std::vector<Found> published;
  std::optional<Error> failure;
  for (Found& each : *found) {
    PublishOptions options;
    options.pattern = each.dead_letter.pattern.value_or(pattern_by_subject(subject, *each.backend));
    options.kind = options.pattern == MessagingPattern::streaming ? DestinationKind::stream
                                                                  : DestinationKind::topic;
    options.deadline = deadline;
    // The copy keeps its message id (consumers that handled it already skip it), but a broker
    // that de-duplicates must not drop it: it is a new send, named by its dead letter.
    options.deduplication_id = "requeue:" + each.dead_letter.id;
    Message copy = each.dead_letter.original();
    copy.mutable_metadata().headers[std::string(headers::kRequeuedFrom)] = each.dead_letter.id;
    auto sent = co_await publish(each.backend, std::move(copy), options);
    if (!sent) {
      failure = sent.error().with_context("requeueing dead letter " + each.dead_letter.id);
      break;
    }
    published.push_back(std::move(each));
  }
  auto removed = co_await remove(published, subject, deadline);
  if (!removed) {
    co_return removed.error().with_context(
        "requeued " + std::to_string(published.size()) + " dead letter(s) of " + subject +
        " but could not delete them (they will be listed again)");
  }
  if (failure) {
    co_return failure->with_context("after " + std::to_string(published.size()) +
                                    " dead letter(s) of " + subject + " were requeued");
  }
  co_return published.size();
}

asio::awaitable<Result<std::size_t>> purge_dead_letters(DeadLetterBackends backends,
                                                        DeadLetterFilter filter) {
  const auto deadline = SteadyClock::now() + filter.timeout;
  const std::string subject = filter.subject;
  auto found = co_await find(std::move(backends), std::move(filter));
  if (!found) co_return found.error();
  co_return co_await remove(*found, subject, deadline);
}

}  // namespace detail
}  // namespace marty::messaging
