#include "marty/messaging/memory_backend.hpp"

#include <algorithm>
#include <atomic>
#include <deque>
#include <iterator>
#include <mutex>
#include <set>
#include <unordered_map>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/post.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include "marty/messaging/dead_letters.hpp"
#include "marty/messaging/detail/async_signal.hpp"
#include "marty/messaging/detail/spin_mutex.hpp"
#include "marty/messaging/detail/string_map.hpp"
#include "marty/messaging/subject.hpp"

namespace marty::messaging {
namespace {

using detail::AsyncSignal;
using SignalPtr = std::shared_ptr<AsyncSignal>;

constexpr std::string_view kInboxPrefix = "_INBOX.";
constexpr std::size_t kRouteCacheLimit = 10'000;
constexpr std::string_view kName = "memory";
// How long a receiver or a requester watches for what it waits for before it parks.
constexpr std::chrono::microseconds kSpinBeforeParking{100};

Error memory_error(errc code, std::string message) {
  return Error(code, std::move(message), std::string(kName));
}

// A message held by a group: queued, in flight (tag != 0) or waiting for redelivery.
struct Entry {
  std::uint64_t seq = 0;
  std::optional<Message> message;  // empty once settled (a slot waiting to be dropped)
  int deliveries = 0;
  std::uint64_t tag = 0;     // non-zero while handed out; changes on every hand-out
  std::uint64_t holder = 0;  // member holding it while in flight
  SteadyClock::time_point not_before{};
};

// A group's messages in delivery order, in a ring buffer sorted by sequence: appending
// allocates nothing in the steady state, and an entry is found by its index while sequences
// are contiguous (the usual case), by binary search otherwise. Settled entries leave empty
// slots, dropped when they reach the front or, if an old message stays unsettled at the front,
// compacted once they outnumber the live ones, so memory and scans stay proportional to the
// messages held.
//
// Settled messages are not destroyed where they are settled (the consumer's thread) but kept
// in a small batch that a publisher takes and destroys (take_released): their memory was
// allocated by the publisher, and frees on another thread make both threads fight over the
// allocator's arena lock, which measured as the largest cost of the hand-off.
class Entries {
 public:
  void push(std::uint64_t seq, const Message& message) {
    if (count_ == ring_.size()) reshape(std::max(kMinCapacity, ring_.size() * 2));
    Entry& entry = slot(count_);
    entry = Entry{};
    entry.seq = seq;
    entry.message = message;
    ++count_;
    ++live_;
  }
  Entry* find(std::uint64_t seq) {
    if (count_ == 0 || seq < slot(0).seq) return nullptr;
    Entry* entry = nullptr;
    const std::uint64_t guess = seq - slot(0).seq;
    if (guess < count_ && slot(guess).seq == seq) {
      entry = &slot(guess);
    } else {
      std::size_t low = 0, high = count_;  // first slot with seq >= the one sought
      while (low < high) {
        const std::size_t mid = low + (high - low) / 2;
        if (slot(mid).seq < seq) {
          low = mid + 1;
        } else {
          high = mid;
        }
      }
      if (low < count_ && slot(low).seq == seq) entry = &slot(low);
    }
    return entry && entry->message ? entry : nullptr;
  }
  // Removes a held entry. Invalidates references to entries and shifts indices when it returns
  // true (slots moved).
  bool remove(Entry& entry) {
    released_.push_back(std::move(*entry.message));
    entry.message.reset();
    --live_;
    bool moved = false;
    while (count_ != 0 && !slot(0).message) {
      head_ = (head_ + 1) & (ring_.size() - 1);
      --count_;
      moved = true;
    }
    if (count_ - live_ > live_ + kCompactionSlack) {
      reshape(ring_.size());
      moved = true;
    } else if (ring_.size() > kKeptCapacity && count_ < ring_.size() / 8) {
      reshape(ring_.size() / 2);
      moved = true;
    }
    return moved;
  }
  /// Hands the settled messages to `out` (to be destroyed by the caller, outside the broker
  /// lock) once enough have gathered to be worth it.
  void take_released(std::vector<Message>& out) {
    if (released_.size() < kReleaseBatch) return;
    if (out.empty()) {
      out.swap(released_);
    } else {
      std::move(released_.begin(), released_.end(), std::back_inserter(out));
      released_.clear();
    }
  }
  /// Messages held (queued, in flight or delayed).
  std::size_t size() const noexcept { return live_; }
  std::size_t slots() const noexcept { return count_; }
  Entry& slot(std::size_t index) { return ring_[(head_ + index) & (ring_.size() - 1)]; }

 private:
  static constexpr std::size_t kCompactionSlack = 1024;
  static constexpr std::size_t kMinCapacity = 64;
  // A ring shrinks only above this, and only when mostly empty: a consumer settling in batches
  // empties it every batch, and shrinking and growing it again each time cost more than the
  // rest of the hand-off (its entries are a few tens of bytes each).
  static constexpr std::size_t kKeptCapacity = 1024;
  static constexpr std::size_t kReleaseBatch = 64;

  // Moves the held entries, in order, to the front of a new ring of `capacity` (a power of
  // two), dropping empty slots.
  void reshape(std::size_t capacity) {
    std::vector<Entry> ring(capacity);
    std::size_t kept = 0;
    for (std::size_t i = 0; i < count_; ++i) {
      Entry& entry = slot(i);
      if (entry.message) ring[kept++] = std::move(entry);
    }
    ring_ = std::move(ring);
    head_ = 0;
    count_ = kept;
  }

  std::vector<Entry> ring_;  // size is zero or a power of two
  std::size_t head_ = 0;     // index in ring_ of slot(0)
  std::size_t count_ = 0;    // slots in use, empty ones included
  std::size_t live_ = 0;
  std::vector<Message> released_;
};

// Subscribers that share a name (or one group-less subscriber) and the messages they share.
struct Group {
  std::string subject;  // subscription pattern (topics) or stream name
  std::string name;     // empty: private to one subscriber, removed when it closes
  DestinationKind kind = DestinationKind::topic;
  Entries entries;
  std::uint64_t next_seq = 1;  // topics only; streams use the log's sequence
  std::map<std::uint64_t, SignalPtr> members;
  // Keys with messages in flight, and who holds them: per-key order across members.
  detail::StringMap<std::pair<std::uint64_t, int>> key_holders;
  std::vector<SignalPtr> space_waiters;
  // Bumped (under the broker mutex) whenever an entry may have become deliverable; read
  // without the mutex by a receiver deciding whether another look is worth the lock.
  std::atomic<std::uint64_t> version{0};

  void notify_members(std::uint64_t except = 0) {
    version.fetch_add(1, std::memory_order_release);
    for (const auto& [id, signal] : members) {
      if (id != except) signal->notify();
    }
  }
  void notify_space() {
    for (auto& waiter : space_waiters) waiter->notify();
    space_waiters.clear();
  }
  void release_key(std::string_view key) {
    if (key.empty()) return;
    auto it = key_holders.find(key);
    if (it != key_holders.end() && --it->second.second <= 0) key_holders.erase(it);
  }
};
using GroupPtr = std::shared_ptr<Group>;

struct LogEntry {
  std::uint64_t seq;
  Clock::time_point time;
  Message message;
};

struct Stream {
  MemoryStreamLimits limits;
  std::deque<LogEntry> log;
  std::size_t bytes = 0;
  std::uint64_t next_seq = 1;
  std::vector<GroupPtr> groups;

  void trim(Clock::time_point now) {
    auto drop_front = [this] {
      bytes -= log.front().message.bytes().size();
      log.pop_front();
    };
    while (limits.max_messages != 0 && log.size() > limits.max_messages) drop_front();
    while (limits.max_bytes != 0 && bytes > limits.max_bytes && !log.empty()) drop_front();
    if (limits.max_age.count() > 0) {
      while (!log.empty() && log.front().time + limits.max_age < now) drop_front();
    }
  }
};

struct RequestSlot {
  // The connection that asked, which cancels it when closed; only compared, never followed.
  const void* connection = nullptr;
  SignalPtr signal = AsyncSignal::create();
  std::optional<Message> reply;
  bool cancelled = false;
  std::atomic<bool> ended{false};  // reply or cancelled is set: a spinning requester looks here
};

// True if `ready()` turned true within kSpinBeforeParking, yielding to the executor between
// looks (its other handlers run meanwhile). Whoever wakes us is usually on another thread and
// acts within that time, and parking costs both threads a kernel sleep and wake-up, with a
// timer armed and cancelled: several times the spin, and most of a round trip's tail.
template <class Ready>
asio::awaitable<bool> ready_soon(Ready ready) {
  const auto until = SteadyClock::now() + kSpinBeforeParking;
  for (int look = 0;; ++look) {
    if (ready()) co_return true;
    if ((look & 7) == 7 && SteadyClock::now() >= until) co_return false;
    co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
  }
}

class MemorySubscription;

// One backend's view: closing it ends its own subscriptions and requests only.
struct Connection {
  bool closed = false;
  std::vector<std::weak_ptr<MemorySubscription>> subscriptions;
  // Its requests in flight are the broker's inboxes whose slot names it: closing scans them
  // (rare) rather than every request paying for a second index.
};
using ConnectionPtr = std::shared_ptr<Connection>;

}  // namespace

// Everything mutable, behind one mutex. Shared with connections, subscriptions and deliveries,
// which may outlive one another.
class MemoryBroker {
 public:
  explicit MemoryBroker(MemoryBackendConfig c) : config(std::move(c)) {}

  detail::SpinMutex mutex;
  const MemoryBackendConfig config;
  std::vector<GroupPtr> topic_groups;
  detail::StringMap<std::vector<GroupPtr>> route_cache;
  std::map<std::string, Stream, std::less<>> streams;
  detail::StringMap<std::shared_ptr<RequestSlot>> inboxes;
  std::uint64_t next_member = 1;
  std::uint64_t next_tag = 1;

  const std::vector<GroupPtr>& topic_targets(std::string_view subject) {
    auto cached = route_cache.find(subject);
    if (cached != route_cache.end()) return cached->second;
    if (route_cache.size() >= kRouteCacheLimit) route_cache.clear();
    std::vector<GroupPtr> targets;
    for (const auto& group : topic_groups) {
      if (subject::matches(group->subject, subject)) targets.push_back(group);
    }
    return route_cache.emplace(std::string(subject), std::move(targets)).first->second;
  }

  Stream& stream(std::string_view name) {
    auto it = streams.find(name);
    if (it != streams.end()) return it->second;
    Stream created;
    auto limits = config.streams.find(std::string(name));
    created.limits = limits != config.streams.end() ? limits->second : config.stream_defaults;
    return streams.emplace(std::string(name), std::move(created)).first->second;
  }

  // Hands up to `max` deliverable entries to `member`, in order, and appends their sequences to
  // `taken`. Keeps per-key order: an entry waits while an earlier entry of its key waits for
  // redelivery, or while another member holds its key. Drops expired entries on the way. Reads
  // the clocks only when an entry has a ttl or a redelivery time (clock reads are costly on
  // virtual machines). One scan for the whole batch.
  void take(Group& group, std::uint64_t member, std::size_t max,
            SteadyClock::time_point& next_ready, std::vector<std::uint64_t>& taken) {
    std::vector<std::string_view> blocked;
    auto is_blocked = [&](std::string_view key) {
      return std::find(blocked.begin(), blocked.end(), key) != blocked.end();
    };
    std::optional<Clock::time_point> wall_now;
    std::optional<SteadyClock::time_point> now;
    Entries& entries = group.entries;
    for (std::size_t i = 0; i < entries.slots(); ++i) {
      Entry& entry = entries.slot(i);
      if (!entry.message || entry.tag != 0) continue;
      if (entry.message->ttl()) {
        if (!wall_now) wall_now = Clock::now();
        if (entry.message->expired(*wall_now)) {
          group.notify_space();
          if (entries.remove(entry)) {  // slots moved: scan again from the front
            i = static_cast<std::size_t>(-1);
            blocked.clear();
          }
          continue;
        }
      }
      const std::string_view key = entry.message->partition_key();
      if (!key.empty()) {
        if (is_blocked(key)) continue;
        auto holder = group.key_holders.find(key);
        if (holder != group.key_holders.end() && holder->second.first != member) {
          blocked.push_back(key);
          continue;
        }
      }
      if (entry.not_before != SteadyClock::time_point{}) {
        if (!now) now = SteadyClock::now();
        if (entry.not_before > *now) {
          next_ready = std::min(next_ready, entry.not_before);
          if (!key.empty()) blocked.push_back(key);
          continue;
        }
      }
      entry.tag = next_tag++;
      entry.holder = member;
      ++entry.deliveries;
      if (!key.empty()) {
        auto found = group.key_holders.find(key);
        auto& holder =
            found != group.key_holders.end()
                ? found->second
                : group.key_holders.emplace(std::string(key), std::pair{member, 0}).first->second;
        holder.first = member;
        ++holder.second;
      }
      taken.push_back(entry.seq);
      if (taken.size() >= max) return;
    }
  }

  void enqueue(Group& group, std::uint64_t seq, const Message& message) {
    group.entries.push(seq, message);
    group.notify_members();
  }

  void remove_group(const GroupPtr& group) {
    if (group->kind == DestinationKind::stream) {
      auto& groups = stream(group->subject).groups;
      groups.erase(std::remove(groups.begin(), groups.end(), group), groups.end());
    } else {
      topic_groups.erase(std::remove(topic_groups.begin(), topic_groups.end(), group),
                         topic_groups.end());
      route_cache.clear();
    }
    group->notify_space();  // publishers waiting on it must re-check their targets
  }
};

namespace {

using State = MemoryBroker;
using StatePtr = std::shared_ptr<MemoryBroker>;

class MemoryDelivery final : public Delivery {
 public:
  MemoryDelivery(StatePtr state, GroupPtr group, std::uint64_t seq, const Entry& entry)
      : Delivery(*entry.message, entry.deliveries,
                 group->kind == DestinationKind::stream ? seq : 0),
        state_(std::move(state)),
        group_(std::move(group)),
        seq_(seq),
        tag_(entry.tag) {}

  ~MemoryDelivery() override {
    if (!settled_) (void)settle(Action::release, std::chrono::milliseconds(0));
  }

  asio::awaitable<Result<void>> ack() override {
    co_return settle(Action::ack, std::chrono::milliseconds(0));
  }
  asio::awaitable<Result<void>> nack(std::chrono::milliseconds delay) override {
    co_return settle(Action::release, delay);
  }
  asio::awaitable<Result<void>> term() override {
    co_return settle(Action::ack, std::chrono::milliseconds(0));
  }
  bool acks_synchronously() const noexcept override { return true; }
  Result<void> ack_now() override { return settle(Action::ack, std::chrono::milliseconds(0)); }

 private:
  enum class Action { ack, release };

  Result<void> settle(Action action, std::chrono::milliseconds delay) {
    std::lock_guard lock(state_->mutex);
    if (settled_) {
      return memory_error(errc::failed_precondition, "delivery was already settled");
    }
    settled_ = true;
    Entry* found = group_->entries.find(seq_);
    if (!found || found->tag != tag_) {
      return memory_error(errc::failed_precondition, "delivery is no longer held by this consumer");
    }
    Entry& entry = *found;
    const std::uint64_t holder = entry.holder;
    group_->release_key(entry.message->partition_key());
    if (action == Action::ack) {
      group_->entries.remove(entry);
      group_->notify_space();
      group_->notify_members(holder);  // a key it held may have blocked other members
    } else {
      entry.tag = 0;
      entry.holder = 0;
      entry.not_before = SteadyClock::now() + delay;
      group_->notify_members();
    }
    return ok();
  }

  StatePtr state_;
  GroupPtr group_;
  std::uint64_t seq_;
  std::uint64_t tag_;
  bool settled_ = false;
};

class MemorySubscription final : public Subscription {
 public:
  MemorySubscription(StatePtr state, ConnectionPtr connection, GroupPtr group, std::uint64_t member,
                     SignalPtr signal)
      : state_(std::move(state)),
        connection_(std::move(connection)),
        group_(std::move(group)),
        member_(member),
        signal_(std::move(signal)) {}
  ~MemorySubscription() override { close(); }

  asio::awaitable<Result<std::unique_ptr<Delivery>>> receive(
      std::optional<SteadyClock::time_point> deadline) override {
    single_.clear();  // kept between calls, so that taking one allocates no vector
    auto taken = co_await take_into(1, deadline, &single_);
    if (!taken) co_return std::move(taken).error();
    co_return std::move(single_.front());
  }

  asio::awaitable<Result<std::vector<std::unique_ptr<Delivery>>>> receive_batch(
      std::size_t max, std::optional<SteadyClock::time_point> deadline) override {
    std::vector<std::unique_ptr<Delivery>> batch;
    auto taken = co_await take_into(max, deadline, &batch);
    if (!taken) co_return std::move(taken).error();
    co_return batch;
  }

  // Waits as receive() does, then appends up to `max` deliverable messages, taken under one
  // lock, to `*batch` (which the caller keeps alive across the wait).
  asio::awaitable<Result<void>> take_into(std::size_t max,
                                          std::optional<SteadyClock::time_point> deadline,
                                          std::vector<std::unique_ptr<Delivery>>* batch) {
    std::uint64_t seen_version = 0;
    while (true) {
      std::optional<SteadyClock::time_point> wake = deadline;
      {
        std::lock_guard lock(state_->mutex);
        if (closed_ || connection_->closed) {
          co_return memory_error(errc::cancelled,
                                 "subscription to '" + group_->subject + "' is closed");
        }
        auto next_ready = SteadyClock::time_point::max();
        seen_version = group_->version.load(std::memory_order_relaxed);
        taken_.clear();
        state_->take(*group_, member_, std::max<std::size_t>(max, 1), next_ready, taken_);
        if (!taken_.empty()) {
          batch->reserve(taken_.size());
          for (const std::uint64_t seq : taken_) {
            batch->push_back(
                std::make_unique<MemoryDelivery>(state_, group_, seq, *group_->entries.find(seq)));
          }
          co_return ok();
        }
        if (next_ready != SteadyClock::time_point::max()) {
          wake = wake ? std::min(*wake, next_ready) : next_ready;
        }
      }
      if (deadline && SteadyClock::now() >= *deadline) {
        co_return memory_error(errc::deadline_exceeded, "no message before the deadline");
      }
      // Before parking, yield to the executor for a few microseconds while watching the
      // group's version, lock-free: a publisher on another thread usually adds the next message
      // within that time, and parking costs both threads a kernel sleep and wake-up.
      const GroupPtr& group = group_;
      if (co_await ready_soon([&group, seen_version] {
            return group->version.load(std::memory_order_acquire) != seen_version;
          })) {
        continue;
      }
      co_await signal_->wait(wake);
    }
  }

  void close() override {
    {
      std::lock_guard lock(state_->mutex);
      close_locked();
    }
    signal_->notify();
  }

 private:
 public:
  // The connection is going away: like a broker that loses a consumer's connection, put the
  // deliveries this member still holds back in the group. A late settle of one of them fails
  // with failed_precondition; the message goes to another member.
  void abandon() {
    {
      std::lock_guard lock(state_->mutex);
      close_locked();
      bool released = false;
      for (std::size_t i = 0; i < group_->entries.slots(); ++i) {
        Entry& entry = group_->entries.slot(i);
        if (!entry.message || entry.tag == 0 || entry.holder != member_) continue;
        group_->release_key(entry.message->partition_key());
        entry.tag = 0;
        entry.holder = 0;
        released = true;
      }
      if (released) group_->notify_members();
    }
    signal_->notify();
  }

 private:
  StatePtr state_;
  ConnectionPtr connection_;
  GroupPtr group_;
  std::uint64_t member_;
  SignalPtr signal_;
  bool closed_ = false;                            // guarded by state_->mutex
  std::vector<std::uint64_t> taken_;               // take_into's scratch (one receive at a time)
  std::vector<std::unique_ptr<Delivery>> single_;  // receive()'s, reused

  void close_locked() {
    if (closed_) return;
    closed_ = true;
    group_->members.erase(member_);
    if (group_->name.empty()) {
      state_->remove_group(group_);
    } else {
      group_->notify_members();  // entries only this member could take are free again
    }
  }
};

class MemoryBackend final : public Backend {
 public:
  explicit MemoryBackend(StatePtr broker)
      : state_(std::move(broker)), connection_(std::make_shared<Connection>()) {
    capabilities_.patterns = {MessagingPattern::pub_sub, MessagingPattern::point_to_point,
                              MessagingPattern::request_response, MessagingPattern::streaming,
                              MessagingPattern::broadcast};
    capabilities_.delivery = DeliveryGuarantee::at_least_once;
    capabilities_.ordering = Ordering::per_key;
    capabilities_.persistent_replay = true;
    capabilities_.durable_groups = true;
    capabilities_.consumer_groups = true;
    capabilities_.native_request_reply = state_->config.native_request_reply;
    capabilities_.delayed_redelivery = true;
    capabilities_.native_dead_letter = false;
    capabilities_.inspectable_dead_letters = true;
    capabilities_.consumer_lag = true;
    capabilities_.headers = true;
    capabilities_.wildcard_subscriptions = true;
    capabilities_.max_payload_bytes = state_->config.max_payload_bytes;
  }

  ~MemoryBackend() override { shut_down(); }

  std::string_view name() const noexcept override { return kName; }
  const Capabilities& capabilities() const noexcept override { return capabilities_; }

  asio::awaitable<Result<void>> connect() override {
    std::lock_guard lock(state_->mutex);
    connection_->closed = false;
    co_return ok();
  }

  asio::awaitable<Result<void>> publish(Message message, PublishOptions options) override {
    if (auto refused = refusal(message)) co_return std::move(*refused);
    if (message.subject().starts_with(kInboxPrefix)) co_return deliver_reply(std::move(message));
    SignalPtr space;
    while (true) {
      {
        // Settled messages the targets gathered, destroyed here after the lock is released
        // (declared first, so destroyed last): see Entries.
        std::vector<Message> released;
        std::lock_guard lock(state_->mutex);
        auto enqueued = enqueue_locked(message, options, released, &space);
        if (!enqueued) co_return std::move(enqueued).error();
        if (*enqueued) co_return ok();
      }
      if (!co_await space->wait(options.deadline)) {
        co_return memory_error(errc::resource_exhausted,
                               "subscribers of '" + std::string(message.subject()) + "' hold " +
                                   std::to_string(state_->config.group_capacity) +
                                   " messages (group_capacity) and are not keeping up");
      }
    }
  }

  // Every record under one lock. A record whose targets are full waits for room, and so does
  // every later record of the same sink (in order, through publish()), until none waits.
  void submit(std::span<OutboundRecord> records, const PublishOptions& options,
              const std::shared_ptr<CompletionSink>& sink) override {
    std::shared_ptr<WaitingRecords> start_draining;
    {
      std::vector<Message> released;  // destroyed after the lock is released: see Entries
      std::lock_guard lock(state_->mutex);
      auto queued = sink ? waiting_.find(sink.get()) : waiting_.end();
      for (OutboundRecord& record : records) {
        if (queued != waiting_.end()) {  // behind one that waits: wait in line
          queued->second->push_back({{record.message, record.sequence, std::nullopt}, options});
          continue;
        }
        if (auto refused = refusal(record.message)) {
          record.outcome = std::move(*refused);
          continue;
        }
        if (record.message.subject().starts_with(kInboxPrefix)) {
          record.outcome = deliver_reply_locked(record.message);
          continue;
        }
        auto enqueued = enqueue_locked(record.message, options, released, nullptr);
        if (enqueued && !*enqueued) {
          if (!sink) return;  // the caller cannot wait: this record and the rest stay untaken
          start_draining = std::make_shared<WaitingRecords>();
          queued = waiting_.emplace(sink.get(), start_draining).first;
          queued->second->push_back({{record.message, record.sequence, std::nullopt}, options});
          continue;
        }
        record.outcome = enqueued ? ok() : Result<void>(std::move(enqueued).error());
      }
    }
    if (!start_draining) return;
    // Spawned as a function, so that the coroutine is made on the executor's thread.
    asio::co_spawn(
        sink->executor(),
        [this, sink, queue = std::move(start_draining)]() { return drain(sink, queue); },
        asio::detached);
  }

  asio::awaitable<Result<std::shared_ptr<Subscription>>> subscribe(SubscriptionSpec spec) override {
    std::lock_guard lock(state_->mutex);
    if (connection_->closed) co_return memory_error(errc::unavailable, "backend is closed");
    GroupPtr group;
    if (spec.kind == DestinationKind::stream) {
      if (subject::has_wildcard(spec.subject)) {
        co_return memory_error(errc::invalid_argument,
                               "stream name '" + spec.subject + "' cannot contain wildcards");
      }
      Stream& stream = state_->stream(spec.subject);
      group = find_group(stream.groups, spec);
      if (!group) {
        group = make_group(spec);
        replay(stream, *group, spec.start);
        stream.groups.push_back(group);
      }
    } else {
      group = find_group(state_->topic_groups, spec);
      if (!group) {
        group = make_group(spec);
        state_->topic_groups.push_back(group);
        state_->route_cache.clear();
      }
    }
    const std::uint64_t member = state_->next_member++;
    auto signal = AsyncSignal::create();
    group->members.emplace(member, signal);
    auto subscription =
        std::make_shared<MemorySubscription>(state_, connection_, group, member, signal);
    auto& subscriptions = connection_->subscriptions;
    std::erase_if(subscriptions, [](const auto& weak) { return weak.expired(); });
    subscriptions.push_back(subscription);
    co_return std::shared_ptr<Subscription>(std::move(subscription));
  }

  asio::awaitable<Result<Message>> request(Message message,
                                           std::chrono::milliseconds timeout) override {
    if (!state_->config.native_request_reply) {
      co_return memory_error(errc::unimplemented, "native request/reply is disabled");
    }
    const auto deadline = SteadyClock::now() + timeout;
    std::string inbox(kInboxPrefix.size() + 36, '\0');  // the prefix and a UUIDv7, one allocation
    kInboxPrefix.copy(inbox.data(), kInboxPrefix.size());
    detail::write_uuid_v7(inbox.data() + kInboxPrefix.size(), Clock::now());
    auto slot = std::make_shared<RequestSlot>();
    slot->connection = connection_.get();
    {
      std::lock_guard lock(state_->mutex);
      if (connection_->closed) co_return memory_error(errc::unavailable, "backend is closed");
      state_->inboxes.emplace(inbox, slot);
    }
    const std::string subject(message.subject());
    message.set_reply_to(inbox);
    PublishOptions options;
    options.pattern = MessagingPattern::request_response;
    options.require_receiver = true;
    options.deadline = deadline;
    auto published = co_await publish(std::move(message), options);
    if (!published) {
      forget(inbox);
      co_return std::move(published).error();
    }
    // The responder usually answers within the spin; only then is a timer armed. One request
    // of this backend spins at a time: with many in flight the thread has other work, and
    // spinning ones would only take turns with it.
    bool answered_soon = false;
    if (spinning_requests_.fetch_add(1, std::memory_order_relaxed) == 0) {
      answered_soon =
          co_await ready_soon([&slot] { return slot->ended.load(std::memory_order_acquire); });
    }
    spinning_requests_.fetch_sub(1, std::memory_order_relaxed);
    while (!answered_soon) {
      {
        std::lock_guard lock(state_->mutex);
        if (slot->reply || slot->cancelled) break;
      }
      if (!co_await slot->signal->wait(deadline)) break;
    }
    std::lock_guard lock(state_->mutex);
    forget_locked(inbox);
    // A reply may have landed between the deadline and the removal of the inbox.
    if (slot->reply) co_return std::move(*slot->reply);
    if (slot->cancelled) {
      co_return memory_error(errc::cancelled, "backend closed while waiting for a reply");
    }
    co_return memory_error(errc::deadline_exceeded, "no reply on '" + subject + "' within " +
                                                        std::to_string(timeout.count()) + " ms");
  }

  asio::awaitable<Result<std::vector<Message>>> read_dead_letters(
      std::string dead_letter_subject, std::size_t limit,
      SteadyClock::time_point /*deadline*/) override {
    std::vector<Message> out;
    std::lock_guard lock(state_->mutex);
    auto it = state_->streams.find(dead_letter_subject);
    if (it == state_->streams.end()) co_return out;
    it->second.trim(Clock::now());
    for (const LogEntry& entry : it->second.log) {
      if (out.size() >= limit) break;
      out.push_back(entry.message);
    }
    co_return out;
  }

  asio::awaitable<Result<std::size_t>> remove_dead_letters(
      std::string dead_letter_subject, std::set<std::string> ids,
      SteadyClock::time_point /*deadline*/) override {
    std::vector<Message> removed;  // destroyed after the lock is released (see Entries)
    std::lock_guard lock(state_->mutex);
    auto it = state_->streams.find(dead_letter_subject);
    if (it == state_->streams.end()) co_return std::size_t{0};
    Stream& stream = it->second;
    std::deque<LogEntry> kept;
    for (LogEntry& entry : stream.log) {
      if (ids.contains(dead_letter_id(entry.message))) {
        stream.bytes -= entry.message.bytes().size();
        removed.push_back(std::move(entry.message));
      } else {
        kept.push_back(std::move(entry));
      }
    }
    stream.log = std::move(kept);
    co_return removed.size();
  }

  // A group holds exactly its unacknowledged messages (queued, in flight or delayed).
  asio::awaitable<Result<std::uint64_t>> consumer_lag(
      SubscriptionSpec spec, SteadyClock::time_point /*deadline*/) override {
    std::lock_guard lock(state_->mutex);
    const std::vector<GroupPtr>* groups = &state_->topic_groups;
    if (spec.kind == DestinationKind::stream) {
      auto stream = state_->streams.find(spec.subject);
      if (stream == state_->streams.end()) groups = nullptr;
      if (groups) groups = &stream->second.groups;
    }
    if (groups) {
      for (const GroupPtr& group : *groups) {
        if (group->subject == spec.subject && group->name == spec.group) {
          co_return static_cast<std::uint64_t>(group->entries.size());
        }
      }
    }
    co_return Error(errc::not_found, "no consumer group " + spec.group + " on " + spec.subject,
                    "memory");
  }

  asio::awaitable<Result<void>> close(SteadyClock::time_point /*deadline*/) override {
    // Publishes complete synchronously here, so there is nothing left to flush.
    shut_down();
    co_return ok();
  }

 private:
  // Records of one sink waiting for room, in order, with the options they were submitted with.
  using WaitingRecords = std::deque<std::pair<OutboundRecord, PublishOptions>>;

  // Publishes a sink's waiting records one by one, each once there is room (or failing at its
  // deadline), until none is left. `this` lives until the last record is reported: the sink's
  // owner keeps the backend until its records are complete, so nothing of `this` is touched
  // after the last report.
  asio::awaitable<void> drain(std::shared_ptr<CompletionSink> sink,
                              std::shared_ptr<WaitingRecords> queue) {
    while (true) {
      Message message;
      PublishOptions options;
      std::uint64_t sequence = 0;
      {
        std::lock_guard lock(state_->mutex);
        message = queue->front().first.message;
        options = queue->front().second;
        sequence = queue->front().first.sequence;
      }
      Result<void> result = co_await publish(std::move(message), options);
      bool last = false;
      {
        std::lock_guard lock(state_->mutex);
        queue->pop_front();
        last = queue->empty();
        if (last) waiting_.erase(sink.get());  // later records of the sink go straight in
      }
      Completion completion{sequence, std::move(result)};
      sink->on_complete(std::span<Completion>(&completion, 1));
      if (last) co_return;
    }
  }

  // Why `message` cannot be published at all, if it cannot.
  std::optional<Error> refusal(const Message& message) const {
    const std::size_t limit = state_->config.max_payload_bytes;
    if (limit != 0 && message.bytes().size() > limit) {
      return memory_error(errc::invalid_argument,
                          "payload of " + std::to_string(message.bytes().size()) +
                              " bytes exceeds max_payload_bytes " + std::to_string(limit));
    }
    return std::nullopt;
  }

  // Under state_->mutex: appends `message` to every target. False when a target is full: then
  // nothing was appended, and `space` (when given) is registered to be told when there is room.
  // Errors: the backend is closed; nobody can receive a message that requires a receiver.
  Result<bool> enqueue_locked(const Message& message, const PublishOptions& options,
                              std::vector<Message>& released, SignalPtr* space) {
    if (connection_->closed) return memory_error(errc::unavailable, "backend is closed");
    const bool is_stream = options.kind == DestinationKind::stream;
    Stream* stream = is_stream ? &state_->stream(message.subject()) : nullptr;
    const std::vector<GroupPtr>& targets =
        is_stream ? stream->groups : state_->topic_targets(message.subject());
    // A query must reach someone running now; a command may wait in a durable group for the
    // next instance of its service.
    if (options.require_receiver) {
      const bool live_only = options.pattern == MessagingPattern::request_response;
      const bool reachable = std::any_of(targets.begin(), targets.end(), [&](const GroupPtr& g) {
        return !live_only || !g->members.empty();
      });
      if (!reachable) {
        return memory_error(errc::not_found,
                            "no consumer for '" + std::string(message.subject()) + "'");
      }
    }
    const auto full = std::find_if(targets.begin(), targets.end(), [&](const GroupPtr& g) {
      return g->entries.size() >= state_->config.group_capacity;
    });
    if (full != targets.end()) {
      if (space != nullptr) {
        if (!*space) *space = AsyncSignal::create();
        (*full)->space_waiters.push_back(*space);
      }
      return false;
    }
    if (is_stream) {
      const auto now = Clock::now();
      const std::uint64_t seq = stream->next_seq++;
      stream->bytes += message.bytes().size();
      stream->log.push_back(LogEntry{seq, now, message});
      stream->trim(now);
      for (const auto& group : targets) state_->enqueue(*group, seq, message);
    } else {
      for (const auto& group : targets) state_->enqueue(*group, group->next_seq++, message);
    }
    for (const auto& group : targets) group->entries.take_released(released);
    return true;
  }

  Result<void> deliver_reply(Message message) {
    std::lock_guard lock(state_->mutex);
    return deliver_reply_locked(message);
  }
  Result<void> deliver_reply_locked(const Message& message) {
    auto it = state_->inboxes.find(message.subject());
    // No inbox: the requester gave up (deadline); a late reply goes nowhere, as on NATS.
    if (it != state_->inboxes.end() && !it->second->reply) {
      it->second->reply = message;
      it->second->ended.store(true, std::memory_order_release);
      it->second->signal->notify();
    }
    return ok();
  }

  void forget(const std::string& inbox) {
    std::lock_guard lock(state_->mutex);
    forget_locked(inbox);
  }

  void forget_locked(const std::string& inbox) { state_->inboxes.erase(inbox); }

  // Ends this connection: its subscriptions close (waking their receivers) and its pending
  // requests are cancelled. The broker and other connections are untouched.
  void shut_down() {
    std::vector<std::shared_ptr<MemorySubscription>> open;
    {
      std::lock_guard lock(state_->mutex);
      connection_->closed = true;
      for (auto& weak : connection_->subscriptions) {
        if (auto subscription = weak.lock()) open.push_back(std::move(subscription));
      }
      connection_->subscriptions.clear();
      for (const auto& [inbox, slot] : state_->inboxes) {
        if (slot->connection != connection_.get()) continue;
        slot->cancelled = true;
        slot->ended.store(true, std::memory_order_release);
        slot->signal->notify();
      }
    }
    for (auto& subscription : open) subscription->abandon();
  }

  static GroupPtr find_group(const std::vector<GroupPtr>& groups, const SubscriptionSpec& spec) {
    if (spec.group.empty()) return nullptr;
    for (const auto& group : groups) {
      if (group->name == spec.group && group->subject == spec.subject) return group;
    }
    return nullptr;
  }

  static GroupPtr make_group(const SubscriptionSpec& spec) {
    auto group = std::make_shared<Group>();
    group->subject = spec.subject;
    group->name = spec.group;
    group->kind = spec.kind;
    return group;
  }

  static void replay(Stream& stream, Group& group, const StartPosition& start) {
    stream.trim(Clock::now());
    for (const LogEntry& entry : stream.log) {
      bool wanted = false;
      switch (start.kind) {
        case StartPosition::Kind::new_messages:
          wanted = false;
          break;
        case StartPosition::Kind::earliest:
          wanted = true;
          break;
        case StartPosition::Kind::sequence:
          wanted = entry.seq >= start.sequence;
          break;
        case StartPosition::Kind::time:
          wanted = entry.time >= start.time;
          break;
      }
      if (wanted) group.entries.push(entry.seq, entry.message);
    }
  }

  StatePtr state_;
  ConnectionPtr connection_;
  Capabilities capabilities_;
  std::atomic<int> spinning_requests_{0};  // requests at the spin (only the first spins)
  // Sinks with records waiting for room (see submit()). Guarded by state_->mutex.
  std::unordered_map<const CompletionSink*, std::shared_ptr<WaitingRecords>> waiting_;
};

}  // namespace

std::shared_ptr<MemoryBroker> make_memory_broker(MemoryBackendConfig config) {
  return std::make_shared<MemoryBroker>(std::move(config));
}

std::shared_ptr<Backend> make_memory_backend(std::shared_ptr<MemoryBroker> broker) {
  return std::make_shared<MemoryBackend>(std::move(broker));
}

std::shared_ptr<Backend> make_memory_backend(MemoryBackendConfig config) {
  return make_memory_backend(make_memory_broker(std::move(config)));
}

}  // namespace marty::messaging
