#include "marty/messaging/publisher.hpp"

#include <utility>

#include "marty/messaging/codec.hpp"
#include "publisher_state.hpp"
#include "trace_spans.hpp"

namespace marty::messaging {

namespace detail {

Result<Message> for_the_wire(Message message, WireFormat format) {
  if (format != WireFormat::python_envelope) return message;
  return codec::wrap_in_envelope(message);
}

PublisherState::PublisherState(PublisherRoute route, PublisherOptions options)
    : route_(std::move(route)), options_(options) {}

Result<void> PublisherState::prepare(Message& message, std::optional<Span>& span) const {
  // Filled only where empty (the type aside), so preparing a message again is harmless.
  const std::string_view type = route_.keep_own_type && !message.type().empty()
                                    ? message.type()
                                    : std::string_view(route_.message_type);
  message.stamp(type, route_.source, route_.subject);
  span = start_producer_span(message, route_.backend->name(), route_.tracer);
  auto wire = for_the_wire(std::move(message), route_.format);
  if (!wire) return std::move(wire).error();
  message = std::move(*wire);
  return ok();
}

bool PublisherState::fits(std::size_t count, std::size_t bytes) const {
  if (in_flight_ == 0 && count == 1) return true;  // one message larger than the byte bound
  return in_flight_ + count <= options_.max_in_flight &&
         in_flight_bytes_ + bytes <= options_.max_in_flight_bytes;
}

Error PublisherState::window_full(std::size_t count) const {
  return Error(errc::resource_exhausted,
               "publisher of " + route_.subject + ": " + std::to_string(count) +
                   " more send(s) do not fit in its window (" + std::to_string(in_flight_) +
                   " of " + std::to_string(options_.max_in_flight) + " sends, " +
                   std::to_string(in_flight_bytes_) + " of " +
                   std::to_string(options_.max_in_flight_bytes) +
                   " bytes awaiting confirmation): confirm, flush or use send_when_room()",
               std::string(route_.backend->name()));
}

Result<std::uint64_t> PublisherState::send(std::span<Message> messages) {
  if (messages.empty()) {
    return Error(errc::invalid_argument, "publisher of " + route_.subject + ": an empty batch");
  }
  std::size_t bytes = 0;
  for (const Message& message : messages) bytes += message.bytes().size();
  std::uint64_t first = 0;
  {
    std::lock_guard lock(mutex_);
    if (!fits(messages.size(), bytes)) return window_full(messages.size());
    first = next_sequence_;
    next_sequence_ += messages.size();
    for (const Message& message : messages) slots_.push_back(Slot{message.bytes().size()});
    in_flight_ += messages.size();
    in_flight_bytes_ += bytes;
  }
  // Taken: from here on, every sequence ends through on_complete(). One message (the common
  // case) allocates nothing here: its record and completion live on the stack.
  std::optional<OutboundRecord> single;
  std::vector<OutboundRecord> many;
  if (messages.size() > 1) many.reserve(messages.size());
  std::size_t taken = 0;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    std::optional<Span> span;
    const std::uint64_t sequence = first + i;
    if (auto prepared = prepare(messages[i], span); !prepared) {
      Completion refused{sequence, std::move(prepared).error()};
      on_complete(std::span<Completion>(&refused, 1));
      continue;
    }
    if (span) {
      std::lock_guard lock(mutex_);
      spans_.emplace(sequence, std::move(*span));
    }
    OutboundRecord record{std::move(messages[i]), sequence, std::nullopt};
    if (messages.size() == 1) {
      single.emplace(std::move(record));
    } else {
      many.push_back(std::move(record));
    }
    ++taken;
  }
  if (taken == 0) return first;
  const std::span<OutboundRecord> records =
      single ? std::span<OutboundRecord>(&*single, 1) : std::span<OutboundRecord>(many);
  PublishOptions options = route_.options;
  options.deadline = SteadyClock::now() + route_.timeout;
  route_.backend->submit(records, options, shared_from_this());
  if (records.size() == 1) {
    if (records[0].outcome) {
      Completion done{records[0].sequence, std::move(*records[0].outcome)};
      on_complete(std::span<Completion>(&done, 1));
    }
    return first;
  }
  std::vector<Completion> at_once;
  for (OutboundRecord& record : records) {
    if (record.outcome) at_once.push_back(Completion{record.sequence, std::move(*record.outcome)});
  }
  if (!at_once.empty()) on_complete(at_once);
  return first;
}

asio::awaitable<Result<std::uint64_t>> PublisherState::send_when_room(Message message) {
  const auto deadline = SteadyClock::now() + route_.timeout;
  const std::size_t bytes = message.bytes().size();
  while (true) {
    Message copy = message;  // send() takes it only when it fits
    auto sent = send(std::span<Message>(&copy, 1));
    if (sent || !sent.error().is(errc::resource_exhausted)) co_return sent;
    auto room = AsyncSignal::create();
    {
      std::lock_guard lock(mutex_);
      if (fits(1, bytes)) continue;
      waiters_.push_back(room);
    }
    if (!co_await room->wait(deadline)) {
      std::lock_guard lock(mutex_);
      if (!fits(1, bytes)) co_return window_full(1);
    }
  }
}

Result<void> PublisherState::outcome_of(std::uint64_t sequence) const {
  auto failed = failures_.find(sequence);
  if (failed == failures_.end()) return ok();
  return failed->second;
}

asio::awaitable<Result<void>> PublisherState::confirmed(std::uint64_t sequence) {
  std::shared_ptr<AsyncSignal> changed;
  while (true) {
    {
      std::lock_guard lock(mutex_);
      if (sequence == 0 || sequence >= next_sequence_) {
        co_return Error(errc::invalid_argument, "publisher of " + route_.subject +
                                                    ": no send numbered " +
                                                    std::to_string(sequence) + " yet");
      }
      if (sequence < base_ || slots_[sequence - base_].done) co_return outcome_of(sequence);
      if (!changed) changed = AsyncSignal::create();
      waiters_.push_back(changed);
    }
    co_await changed->wait();
  }
}

asio::awaitable<Result<void>> PublisherState::flush() {
  std::shared_ptr<AsyncSignal> changed;
  while (true) {
    {
      std::lock_guard lock(mutex_);
      if (in_flight_ == 0) {
        if (failed_since_flush_ == 0) co_return ok();
        Error first = std::move(*first_failure_since_flush_);
        const std::size_t failed = failed_since_flush_;
        failed_since_flush_ = 0;
        first_failure_since_flush_.reset();
        co_return first.with_context(std::to_string(failed) + " send(s) to " + route_.subject +
                                     " failed since the last flush; the first");
      }
      if (!changed) changed = AsyncSignal::create();
      waiters_.push_back(changed);
    }
    co_await changed->wait();
  }
}

void PublisherState::set_callback(Publisher::ConfirmCallback callback) {
  auto shared =
      callback ? std::make_shared<Publisher::ConfirmCallback>(std::move(callback)) : nullptr;
  std::lock_guard lock(mutex_);
  callback_ = std::move(shared);
}

std::size_t PublisherState::in_flight() const {
  std::lock_guard lock(mutex_);
  return in_flight_;
}

void PublisherState::on_complete(std::span<Completion> completions) {
  std::vector<Span> ended;
  std::vector<std::shared_ptr<AsyncSignal>> waiters;
  std::shared_ptr<Publisher::ConfirmCallback> callback;
  std::uint64_t published = 0, failed = 0;
  {
    std::lock_guard lock(mutex_);
    for (Completion& completion : completions) {
      const std::uint64_t sequence = completion.sequence;
      if (sequence < base_ || sequence >= next_sequence_) continue;
      Slot& slot = slots_[sequence - base_];
      if (slot.done) continue;  // a backend must not complete twice; ignore it if it does
      slot.done = true;
      --in_flight_;
      in_flight_bytes_ -= slot.bytes;
      if (completion.result) {
        ++published;
      } else {
        ++failed;
        ++failed_since_flush_;
        if (!first_failure_since_flush_) first_failure_since_flush_ = completion.result.error();
        if (failures_.size() >= kKeptFailures) failures_.erase(failures_.begin());
        failures_.emplace(sequence, completion.result.error());
      }
      if (!spans_.empty()) {
        if (auto span = spans_.find(sequence); span != spans_.end()) {
          ended.push_back(std::move(span->second));
          spans_.erase(span);
          ended.back().ok = completion.result.has_value();
          if (!completion.result) ended.back().error = completion.result.error().describe();
        }
      }
    }
    while (!slots_.empty() && slots_.front().done) {
      slots_.pop_front();
      ++base_;
    }
    waiters.swap(waiters_);
    callback = callback_;
  }
  if (published != 0) route_.counters->published.fetch_add(published, std::memory_order_relaxed);
  if (failed != 0) route_.counters->failed.fetch_add(failed, std::memory_order_relaxed);
  for (Span& span : ended) {
    span.end = std::chrono::system_clock::now();
    route_.tracer->on_span_end(span);
  }
  if (callback) {
    // Runs of consecutive sequences with the same outcome, each told once.
    std::size_t i = 0;
    while (i < completions.size()) {
      std::size_t j = i + 1;
      while (j < completions.size() && completions[i].result && completions[j].result &&
             completions[j].sequence == completions[j - 1].sequence + 1) {
        ++j;
      }
      (*callback)(completions[i].sequence, completions[j - 1].sequence, completions[i].result);
      i = j;
    }
  }
  for (const auto& waiter : waiters) waiter->notify();
}

}  // namespace detail

Publisher::Publisher(std::shared_ptr<detail::PublisherState> state) : state_(std::move(state)) {}
Publisher::~Publisher() = default;

Result<std::uint64_t> Publisher::send(Message message) {
  return state_->send(std::span<Message>(&message, 1));
}

Result<std::uint64_t> Publisher::send(Json data) {
  return send(Message::from_json(std::move(data)));
}

Result<std::uint64_t> Publisher::send_batch(std::vector<Message> messages) {
  auto first = state_->send(std::span<Message>(messages));
  if (!first) return first;
  return *first + messages.size() - 1;
}

asio::awaitable<Result<std::uint64_t>> Publisher::send_when_room(Message message) {
  return state_->send_when_room(std::move(message));
}

asio::awaitable<Result<void>> Publisher::confirmed(std::uint64_t sequence) {
  return state_->confirmed(sequence);
}

asio::awaitable<Result<void>> Publisher::flush() {
  return state_->flush();
}

void Publisher::on_confirm(ConfirmCallback callback) {
  state_->set_callback(std::move(callback));
}

std::size_t Publisher::in_flight() const {
  return state_->in_flight();
}

const std::string& Publisher::subject() const {
  return state_->subject();
}

}  // namespace marty::messaging
