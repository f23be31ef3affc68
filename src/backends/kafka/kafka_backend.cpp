#include "marty/messaging/kafka_backend.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>
#include <asio/post.hpp>
#include <asio/thread_pool.hpp>

#include "kafka_client.hpp"
#include "kafka_wire.hpp"
#include "marty/messaging/dead_letters.hpp"
#include "marty/messaging/detail/async_signal.hpp"
#include "marty/messaging/detail/completion.hpp"
#include "marty/messaging/detail/inbox.hpp"
#include "marty/messaging/detail/log.hpp"
#include "marty/messaging/detail/offload.hpp"
#include "marty/messaging/detail/query_deadline.hpp"
#include "marty/messaging/detail/sleep.hpp"
#include "marty/messaging/subject.hpp"
#include "marty/messaging/wire.hpp"
#include "partition_progress.hpp"

namespace marty::messaging::kafka {
namespace {

using detail::AsyncSignal;
using std::chrono::milliseconds;

using marty::messaging::detail::logger;

// Blocking librdkafka calls (metadata, offsets, topic creation, joining threads) run here, never
// on the bus's executor. Process-wide and never destroyed: a backend may be dropped on one of
// these threads, and a pool cannot join itself.
asio::thread_pool& blocking_pool() {
  static auto* pool = new asio::thread_pool(2);
  return *pool;
}

int timeout_ms(milliseconds duration) {
  return static_cast<int>(std::min<std::int64_t>(duration.count(), INT32_MAX));
}

// ---- The producer ------------------------------------------------------------------------

// Called once with the outcome of one produced record, on the producer's polling thread (or on
// the caller's, when librdkafka refuses the record at once).
using Produced = std::function<void(Result<void>)>;

struct InFlightRecord {
  std::string topic;
  std::shared_ptr<const Payload> value;  // librdkafka points into it until the report
  Produced done;
};

void on_delivery_report(rd_kafka_t*, const rd_kafka_message_t* report, void*) {
  auto* record = static_cast<InFlightRecord*>(report->_private);
  if (record == nullptr) return;
  if (report->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    record->done(ok());
  } else {
    record->done(kafka_error(report->err, "publishing to topic '" + record->topic + "'"));
  }
  delete record;
}

// What the backend and its consumers share: the configuration, the producer, and what is known
// of topics and their readers.
struct Core {
  KafkaConfig config;
  HandlePtr producer;
  std::thread producer_poller;
  std::atomic<bool> stopping{false};

  std::mutex mutex;
  std::map<std::string, int> partitions;  // topics known to exist, with their partition count
  std::set<std::string> read_topics;      // topics a service's group is known to read

  ~Core() { stop_producer(); }

  void start_producer(HandlePtr handle) {
    producer = std::move(handle);
    rd_kafka_t* rk = producer.get();
    producer_poller = std::thread([this, rk] {
      while (!stopping.load()) rd_kafka_poll(rk, 100);
    });
  }

  // The handle itself lives until ~Core: a publish or subscribe still running when the backend
  // closes may call into it (and is refused), never into a freed one.
  void stop_producer() {
    if (stopping.exchange(true)) return;
    if (producer_poller.joinable()) producer_poller.join();
    if (producer) {
      // Whatever is still queued fails its waiters rather than vanishing.
      rd_kafka_purge(producer.get(), RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
      rd_kafka_poll(producer.get(), 0);
    }
  }

  // Hands `record` to the producer. NO_ERROR: `done` will be called with the broker's verdict.
  // Otherwise `done` is not called (QUEUE_FULL: try again once the queue drains).
  // `partition`: RD_KAFKA_PARTITION_UA lets the partitioner choose (by key).
  rd_kafka_resp_err_t produce(const std::string& topic, const Record& record, Produced done,
                              std::int32_t partition = RD_KAFKA_PARTITION_UA) {
    if (stopping.load() || !producer) return RD_KAFKA_RESP_ERR__DESTROY;
    rd_kafka_headers_t* headers = rd_kafka_headers_new(record.headers.size());
    for (const auto& [name, value] : record.headers) {
      rd_kafka_header_add(headers, name.data(), static_cast<ssize_t>(name.size()), value.data(),
                          static_cast<ssize_t>(value.size()));
    }
    auto* in_flight = new InFlightRecord{topic, record.value, std::move(done)};
    const std::string_view value = in_flight->value->bytes();
    const rd_kafka_resp_err_t err = rd_kafka_producev(
        producer.get(), RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_PARTITION(partition),
        RD_KAFKA_V_KEY(record.key.empty() ? nullptr : record.key.data(), record.key.size()),
        RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
        RD_KAFKA_V_MSGFLAGS(0),  // neither copied nor freed: `in_flight` keeps it alive
        RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_OPAQUE(in_flight), RD_KAFKA_V_END);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      rd_kafka_headers_destroy(headers);  // ours again when producev fails
      delete in_flight;
    }
    return err;
  }

  // The partition count of `topic`, creating the topic as the configuration says. Blocking.
  Result<int> ensure_topic(const std::string& topic) {
    {
      std::lock_guard lock(mutex);
      if (auto it = partitions.find(topic); it != partitions.end()) return it->second;
    }
    const auto deadline = SteadyClock::now() + config.request_timeout;
    bool created = false;
    while (true) {
      auto count = partition_count(topic);
      if (count && *count > 0) {
        std::lock_guard lock(mutex);
        partitions[topic] = *count;
        return *count;
      }
      if (!count && !count.error().is(errc::not_found)) return std::move(count).error();
      if (config.topic_creation == KafkaConfig::TopicCreation::none) {
        return kafka_error(errc::not_found,
                           "topic '" + topic + "' does not exist (topic_creation is none)");
      }
      if (config.topic_creation == KafkaConfig::TopicCreation::admin && !created) {
        if (auto made = create_topic(topic); !made) return std::move(made).error();
        created = true;
      }
      if (SteadyClock::now() >= deadline) {
        return kafka_error(errc::deadline_exceeded,
                           "topic '" + topic +
                               "' did not appear in the cluster's metadata within " +
                               std::to_string(config.request_timeout.count()) + " ms");
      }
      std::this_thread::sleep_for(milliseconds(50));
    }
  }

  // not_found while the topic is unknown or has no leaders yet. With broker_auto_create the
  // request itself makes the brokers create it.
  Result<int> partition_count(const std::string& topic) {
    rd_kafka_topic_t* handle = rd_kafka_topic_new(producer.get(), topic.c_str(), nullptr);
    const struct rd_kafka_metadata* metadata = nullptr;
    const rd_kafka_resp_err_t err =
        rd_kafka_metadata(producer.get(), 0, handle, &metadata, timeout_ms(config.request_timeout));
    rd_kafka_topic_destroy(handle);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return kafka_error(err, "reading the metadata of topic '" + topic + "'");
    }
    Result<int> out = kafka_error(errc::not_found, "topic '" + topic + "' is unknown");
    for (int i = 0; i < metadata->topic_cnt; ++i) {
      const auto& t = metadata->topics[i];
      if (topic != t.topic) continue;
      if (t.err == RD_KAFKA_RESP_ERR_NO_ERROR && t.partition_cnt > 0) {
        bool led = true;
        for (int p = 0; p < t.partition_cnt; ++p) led = led && t.partitions[p].leader >= 0;
        if (led) out = t.partition_cnt;
      } else if (t.err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) {
        out = kafka_error(t.err, "reading the metadata of topic '" + topic + "'");
      }
    }
    rd_kafka_metadata_destroy(metadata);
    return out;
  }

  // What waits for `group_id` in `topic`: per partition, the end of the log less the group's
  // committed offset (a group commits where it starts as it is made, so every partition of a
  // live group has one). not_found when the group has committed nothing there. Blocking.
  Result<std::uint64_t> group_lag(const std::string& topic, const std::string& group_id,
                                  SteadyClock::time_point deadline) {
    auto count = partition_count(topic);
    if (!count) {
      if (count.error().is(errc::not_found)) {
        return kafka_error(errc::not_found, "no consumer group '" + group_id + "' (topic '" +
                                                topic + "' does not exist)");
      }
      return std::move(count).error();
    }
    PartitionListPtr wanted(rd_kafka_topic_partition_list_new(*count));
    for (int p = 0; p < *count; ++p) {
      rd_kafka_topic_partition_list_add(wanted.get(), topic.c_str(), p);
    }
    rd_kafka_ListConsumerGroupOffsets_t* request =
        rd_kafka_ListConsumerGroupOffsets_new(group_id.c_str(), wanted.get());
    rd_kafka_queue_t* queue = rd_kafka_queue_new(producer.get());
    rd_kafka_AdminOptions_t* options =
        rd_kafka_AdminOptions_new(producer.get(), RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS);
    char reason[512];
    rd_kafka_AdminOptions_set_request_timeout(options, std::max(1, milliseconds_until(deadline)),
                                              reason, sizeof reason);
    rd_kafka_ListConsumerGroupOffsets(producer.get(), &request, 1, options, queue);
    rd_kafka_event_t* event = rd_kafka_queue_poll(queue, milliseconds_until(deadline) + 1000);
    std::map<int, std::int64_t> committed;
    Result<std::uint64_t> out = std::uint64_t{0};
    if (event == nullptr) {
      out = kafka_error(errc::deadline_exceeded,
                        "reading the offsets of group '" + group_id + "': no answer in time");
    } else if (rd_kafka_event_error(event) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      out = kafka_error(rd_kafka_event_error(event),
                        "reading the offsets of group '" + group_id + "'");
    } else {
      std::size_t groups = 0;
      const rd_kafka_group_result_t** results = rd_kafka_ListConsumerGroupOffsets_result_groups(
          rd_kafka_event_ListConsumerGroupOffsets_result(event), &groups);
      for (std::size_t g = 0; g < groups && out; ++g) {
        if (const rd_kafka_error_t* error = rd_kafka_group_result_error(results[g])) {
          out = kafka_error(rd_kafka_error_code(error),
                            "reading the offsets of group '" + group_id + "'");
          continue;
        }
        const rd_kafka_topic_partition_list_t* list = rd_kafka_group_result_partitions(results[g]);
        for (int i = 0; list != nullptr && i < list->cnt; ++i) {
          if (list->elems[i].err == RD_KAFKA_RESP_ERR_NO_ERROR && list->elems[i].offset >= 0) {
            committed[list->elems[i].partition] = list->elems[i].offset;
          }
        }
      }
    }
    if (event != nullptr) rd_kafka_event_destroy(event);
    rd_kafka_AdminOptions_destroy(options);
    rd_kafka_queue_destroy(queue);
    rd_kafka_ListConsumerGroupOffsets_destroy(request);
    if (!out) return out;
    if (committed.empty()) {
      return kafka_error(errc::not_found, "no consumer group '" + group_id + "' on topic '" +
                                              topic + "' (it has committed nothing there)");
    }
    std::uint64_t lag = 0;
    for (const auto& [partition, offset] : committed) {
      std::int64_t low = 0, high = 0;
      if (rd_kafka_resp_err_t err =
              rd_kafka_query_watermark_offsets(producer.get(), topic.c_str(), partition, &low,
                                               &high, std::max(1, milliseconds_until(deadline)));
          err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        return kafka_error(err,
                           "reading the offsets of " + topic + "/" + std::to_string(partition));
      }
      // A committed offset below the log's start was trimmed away: the group resumes at `low`.
      lag += static_cast<std::uint64_t>(std::max<std::int64_t>(0, high - std::max(offset, low)));
    }
    return lag;
  }

  Result<void> create_topic(const std::string& topic) {
    char reason[512];
    rd_kafka_NewTopic_t* request =
        rd_kafka_NewTopic_new(topic.c_str(), config.topic_partitions,
                              config.topic_replication_factor, reason, sizeof reason);
    if (request == nullptr) {
      return kafka_error(errc::invalid_argument, "creating topic '" + topic + "': " + reason);
    }
    rd_kafka_queue_t* queue = rd_kafka_queue_new(producer.get());
    rd_kafka_AdminOptions_t* options =
        rd_kafka_AdminOptions_new(producer.get(), RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_operation_timeout(options, timeout_ms(config.request_timeout), reason,
                                                sizeof reason);
    rd_kafka_AdminOptions_set_request_timeout(options, timeout_ms(config.request_timeout), reason,
                                              sizeof reason);
    rd_kafka_CreateTopics(producer.get(), &request, 1, options, queue);
    rd_kafka_event_t* event = rd_kafka_queue_poll(queue, timeout_ms(config.request_timeout) + 1000);
    Result<void> out = ok();
    if (event == nullptr) {
      out = kafka_error(errc::deadline_exceeded, "creating topic '" + topic +
                                                     "': the cluster did not answer (does it "
                                                     "have a controller? see topic_creation)");
    } else if (rd_kafka_event_error(event) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      out = kafka_error(rd_kafka_event_error(event), "creating topic '" + topic + "'");
    } else {
      std::size_t count = 0;
      const rd_kafka_topic_result_t** results =
          rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(event), &count);
      for (std::size_t i = 0; i < count; ++i) {
        const rd_kafka_resp_err_t err = rd_kafka_topic_result_error(results[i]);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
          const char* text = rd_kafka_topic_result_error_string(results[i]);
          out = kafka_error(err, "creating topic '" + topic + "'" +
                                     (text != nullptr ? std::string(" (") + text + ")" : ""));
        }
      }
    }
    if (event != nullptr) rd_kafka_event_destroy(event);
    rd_kafka_AdminOptions_destroy(options);
    rd_kafka_queue_destroy(queue);
    rd_kafka_NewTopic_destroy(request);
    return out;
  }

  // Whether the consumer group `group` has ever read `topic` (it commits offsets as soon as it
  // subscribes, so a group that exists has some). Blocking.
  Result<bool> group_reads(const std::string& group, const std::string& topic, int count) {
    {
      std::lock_guard lock(mutex);
      if (read_topics.count(topic) != 0) return true;
    }
    PartitionListPtr list(rd_kafka_topic_partition_list_new(count));
    for (int p = 0; p < count; ++p) rd_kafka_topic_partition_list_add(list.get(), topic.c_str(), p);
    rd_kafka_ListConsumerGroupOffsets_t* request =
        rd_kafka_ListConsumerGroupOffsets_new(group.c_str(), list.get());
    rd_kafka_queue_t* queue = rd_kafka_queue_new(producer.get());
    char reason[512];
    rd_kafka_AdminOptions_t* options =
        rd_kafka_AdminOptions_new(producer.get(), RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS);
    rd_kafka_AdminOptions_set_request_timeout(options, timeout_ms(config.request_timeout), reason,
                                              sizeof reason);
    rd_kafka_ListConsumerGroupOffsets(producer.get(), &request, 1, options, queue);
    rd_kafka_event_t* event = rd_kafka_queue_poll(queue, timeout_ms(config.request_timeout) + 1000);
    Result<bool> out = false;
    if (event == nullptr) {
      out = kafka_error(errc::deadline_exceeded,
                        "reading the offsets of group '" + group + "': no answer");
    } else if (rd_kafka_event_error(event) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      out =
          kafka_error(rd_kafka_event_error(event), "reading the offsets of group '" + group + "'");
    } else {
      std::size_t groups = 0;
      const rd_kafka_group_result_t** results = rd_kafka_ListConsumerGroupOffsets_result_groups(
          rd_kafka_event_ListConsumerGroupOffsets_result(event), &groups);
      for (std::size_t i = 0; i < groups; ++i) {
        const rd_kafka_topic_partition_list_t* offsets =
            rd_kafka_group_result_partitions(results[i]);
        for (int p = 0; offsets != nullptr && p < offsets->cnt; ++p) {
          if (offsets->elems[p].offset >= 0) out = true;
        }
      }
    }
    if (event != nullptr) rd_kafka_event_destroy(event);
    rd_kafka_AdminOptions_destroy(options);
    rd_kafka_queue_destroy(queue);
    rd_kafka_ListConsumerGroupOffsets_destroy(request);
    if (out && *out) {
      std::lock_guard lock(mutex);
      read_topics.insert(topic);
    }
    return out;
  }
};
using CorePtr = std::shared_ptr<Core>;

// What one produce attempt came to: the cluster's answer, or librdkafka's refusal to queue it.
struct ProduceAttempt {
  Result<void> outcome = ok();
  bool queue_full = false;  // refused for a full producer queue: worth another try
};

// Produces `record` and waits for the cluster's acknowledgement (or the deadline). A full
// producer queue is waited out until the deadline.
//
// The start lambda hands its completion to librdkafka, whose delivery report (or the deadline
// timer) may resume this coroutine on another bus thread, freeing its frame, before `produce`
// has even returned. So the lambda owns what it reads (`job`, shared across attempts) rather
// than pointing into this frame, and what the attempt came to travels inside the completion.
asio::awaitable<Result<void>> produce_and_wait(CorePtr core, std::string topic, Record record,
                                               std::int32_t partition,
                                               SteadyClock::time_point deadline, bool wait) {
  struct Job {
    CorePtr core;
    std::string topic;
    Record record;
    std::int32_t partition;
    bool wait;
  };
  auto job = std::make_shared<const Job>(
      Job{std::move(core), std::move(topic), std::move(record), partition, wait});
  while (true) {
    auto start = [job](detail::Complete<ProduceAttempt> complete) {
      Produced done = job->wait ? Produced([complete](Result<void> acknowledged) {
        complete(ProduceAttempt{std::move(acknowledged)});
      })
                                : Produced([](Result<void>) {});
      const rd_kafka_resp_err_t refused =
          job->core->produce(job->topic, job->record, std::move(done), job->partition);
      if (refused != RD_KAFKA_RESP_ERR_NO_ERROR) {
        complete(ProduceAttempt{kafka_error(refused, "publishing to topic '" + job->topic + "'"),
                                refused == RD_KAFKA_RESP_ERR__QUEUE_FULL});
      } else if (!job->wait) {
        complete(ProduceAttempt{});
      }
    };
    ProduceAttempt late{kafka_error(errc::deadline_exceeded,
                                    "the cluster did not acknowledge the message by the deadline "
                                    "(it may still be written)")};
    ProduceAttempt attempt = co_await detail::await_completion<ProduceAttempt>(
        std::move(start), deadline, std::move(late));
    if (attempt.queue_full) {
      if (SteadyClock::now() >= deadline) {
        co_return kafka_error(errc::resource_exhausted,
                              "the producer's queue stayed full until the deadline");
      }
      co_await detail::sleep_for(milliseconds(2));
      continue;
    }
    co_return std::move(attempt.outcome);
  }
}

// ---- Consumers ---------------------------------------------------------------------------

// A fetched record on its way through the subscription.
struct Fetched {
  Message message;
  std::int32_t partition = 0;
  std::int64_t offset = 0;
  std::uint64_t epoch = 0;  // of the partition's assignment it was fetched in
  int attempt = 1;
  std::string key;
};

struct Consumer : std::enable_shared_from_this<Consumer> {
  CorePtr core;
  SubscriptionSpec spec;
  std::string topic;
  std::string group_id;  // empty: reads every partition on its own, commits nothing
  HandlePtr handle;
  std::thread thread;

  std::mutex mutex;
  std::condition_variable changed;  // settlements, assignments, the thread's end
  std::deque<Fetched> ready;        // may go out now
  // Nacked, waiting for their delay (their keys stay held); the consumer's thread moves them to
  // `ready` when due. Kept here rather than in timers so that closing and revocation drop them
  // at once instead of waiting for them.
  std::multimap<SteadyClock::time_point, Fetched> delayed;
  KeyGate<Fetched> gate;  // wait behind another message of their key
  struct Assigned {
    std::uint64_t epoch = 0;
    PartitionProgress progress;
    std::int64_t committed = -1;
    std::size_t outstanding = 0;  // held items of this assignment (what a revocation awaits)
  };
  std::map<std::int32_t, Assigned> assigned;
  std::uint64_t next_epoch = 1;
  std::size_t held = 0;  // fetched and neither settled nor dropped
  bool closed = false;
  bool paused = false;
  bool assignment_seen = false;
  bool finished = false;
  std::atomic<bool> force{false};  // the backend is closing and its deadline has passed
  std::shared_ptr<AsyncSignal> arrived = AsyncSignal::create();

  bool grouped() const noexcept { return !group_id.empty(); }
  std::int64_t start_millis() const {
    return std::chrono::duration_cast<milliseconds>(spec.start.time.time_since_epoch()).count();
  }
  int max_in_flight() const noexcept { return core->config.max_in_flight; }

  bool current(const Fetched& item) const {
    auto it = assigned.find(item.partition);
    return it != assigned.end() && it->second.epoch == item.epoch;
  }

  // With the lock held: `item` is no longer held. Unless `finished_offset`, its offset stays
  // unfinished, so commits never pass it and the partition's next reader gets it again.
  void forget(const Fetched& item, bool finished_offset) {
    --held;
    auto it = assigned.find(item.partition);
    if (it == assigned.end() || it->second.epoch != item.epoch) return;
    --it->second.outstanding;
    if (finished_offset) it->second.progress.finished(item.offset);
  }

  // With the lock held: `item` leaves (settled or dropped); the next of its key may go out.
  // Returns true when something became ready.
  bool release(const Fetched& item, bool finished_offset) {
    forget(item, finished_offset);
    bool promoted = false;
    std::string key = item.key;
    while (auto next = gate.done(key)) {
      if (!closed && current(*next)) {
        ready.push_back(std::move(*next));
        promoted = true;
        break;
      }
      forget(*next, false);  // fetched in an assignment that has ended
      key = next->key;
    }
    return promoted;
  }

  // A settled (acked or termed) item: its offset may be committed.
  void finish(const Fetched& item) {
    bool promoted = false;
    {
      std::lock_guard lock(mutex);
      promoted = release(item, true);
    }
    changed.notify_all();
    if (promoted) arrived->notify();
  }

  // A nacked or abandoned item goes out again first (its key still held), unless the
  // subscription closed or the partition moved on: then the next reader of the partition gets
  // it from the last committed offset.
  void redeliver(Fetched item) {
    bool queued = false;
    bool promoted = false;
    {
      std::lock_guard lock(mutex);
      if (closed || !current(item)) {
        promoted = release(item, false);
      } else {
        ready.push_front(std::move(item));
        queued = true;
      }
    }
    changed.notify_all();
    if (queued || promoted) arrived->notify();
  }

  // A nacked item comes back when `due` (see `delayed`), unless the subscription closed or the
  // partition moved on meanwhile.
  void redeliver_later(Fetched item, SteadyClock::time_point due) {
    bool promoted = false;
    {
      std::lock_guard lock(mutex);
      if (closed || !current(item)) {
        promoted = release(item, false);
      } else {
        delayed.emplace(due, std::move(item));
      }
    }
    changed.notify_all();
    if (promoted) arrived->notify();
  }

  // On the consumer's thread: delayed items whose time has come go out first.
  void release_due() {
    bool queued = false;
    {
      std::lock_guard lock(mutex);
      const auto now = SteadyClock::now();
      while (!delayed.empty() && delayed.begin()->first <= now) {
        ready.push_front(std::move(delayed.begin()->second));
        delayed.erase(delayed.begin());
        queued = true;
      }
    }
    if (queued) arrived->notify();
  }

  // Stops intake: what is fetched but not handed out is dropped (uncommitted, so read again by
  // the group's next reader); what is out may still be settled.
  void close_intake() {
    {
      std::lock_guard lock(mutex);
      if (closed) return;
      closed = true;
      for (const auto& item : ready) forget(item, false);
      ready.clear();
      for (const auto& [due, item] : delayed) forget(item, false);
      delayed.clear();
      gate.remove_waiting_if([](const Fetched&) { return true; },
                             [this](const Fetched& item) { forget(item, false); });
    }
    changed.notify_all();
    arrived->notify();
  }

  // ---- On the consumer's thread ----

  void run() {
    auto last_commit = SteadyClock::now();
    while (true) {
      bool pause = false;
      {
        std::lock_guard lock(mutex);
        if (force.load() || (closed && held == 0)) break;
        pause = closed || held >= static_cast<std::size_t>(max_in_flight());
        if (!pause && paused && held > static_cast<std::size_t>(max_in_flight()) / 2) pause = true;
      }
      set_paused(pause);
      release_due();
      if (rd_kafka_message_t* record = rd_kafka_consumer_poll(handle.get(), 50)) {
        intake(*record);
        rd_kafka_message_destroy(record);
      }
      if (grouped() && SteadyClock::now() - last_commit >= core->config.commit_interval) {
        commit(false);
        last_commit = SteadyClock::now();
      }
    }
    if (grouped()) commit(true);
    // Leaves the group now rather than when the session times out; runs the revocation, which
    // commits what the drain settled.
    if (rd_kafka_resp_err_t err = rd_kafka_consumer_close(handle.get());
        err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      logger().warn("closing the Kafka consumer of {}: {}", topic, rd_kafka_err2str(err));
    }
    handle.reset();
    {
      std::lock_guard lock(mutex);
      finished = true;
    }
    changed.notify_all();
  }

  void set_paused(bool pause) {
    if (pause == paused) return;
    rd_kafka_topic_partition_list_t* current = nullptr;
    if (rd_kafka_assignment(handle.get(), &current) != RD_KAFKA_RESP_ERR_NO_ERROR) return;
    PartitionListPtr list(current);
    if (pause) {
      rd_kafka_pause_partitions(handle.get(), list.get());
    } else {
      rd_kafka_resume_partitions(handle.get(), list.get());
    }
    std::lock_guard lock(mutex);
    paused = pause;
  }

  void intake(const rd_kafka_message_t& record) {
    if (record.err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (record.err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        logger().warn("Kafka consumer of {}: {}", topic, rd_kafka_message_errstr(&record));
      }
      return;
    }
    Fetched item;
    item.partition = record.partition;
    item.offset = record.offset;
    {
      std::lock_guard lock(mutex);
      auto it = assigned.find(record.partition);
      if (closed || it == assigned.end()) return;
      item.epoch = it->second.epoch;
      it->second.progress.fetched(record.offset);
      ++it->second.outstanding;
      ++held;
    }
    // Records without a timestamp (-1) are never taken for older ones.
    if (const std::int64_t stamp = rd_kafka_message_timestamp(&record, nullptr);
        spec.start.kind == StartPosition::Kind::time && stamp >= 0 && stamp < start_millis()) {
      finish(item);  // older than the time the subscription starts at
      return;
    }
    auto decoded = from_record(record, spec.subject);
    if (!decoded) {
      dead_letter(record, std::move(decoded).error(), std::move(item));
      return;
    }
    item.message = std::move(*decoded);
    if (item.message.expired()) {
      finish(item);  // expired (a query nobody waits for any more): skipped, committed
      return;
    }
    item.key = item.message.partition_key();
    bool queued = false;
    {
      std::lock_guard lock(mutex);
      // The subscription may have closed while the record was decoded: close_intake() has
      // dropped what was queued, so this one is dropped too (else it stays held and the close
      // waits for it until its deadline).
      if (closed || !current(item)) {
        forget(item, false);
        return;
      }
      if (gate.offer(item.key, item)) {
        ready.push_back(std::move(item));
        queued = true;
      }
    }
    if (queued) arrived->notify();
  }

  // A record the bus cannot decode goes to the dead-letter topic with the reason; its offset is
  // finished once the dead letter is written (until then it holds back the commits).
  void dead_letter(const rd_kafka_message_t& record, const Error& why, Fetched item) {
    std::string raw = record.payload != nullptr
                          ? std::string(static_cast<const char*>(record.payload), record.len)
                          : std::string();
    Message dead = undecodable_dead_letter(spec.subject, std::move(raw), why.describe());
    auto dead_topic = topic_for(core->config.topic_prefix, dead.subject());
    Result<int> exists =
        dead_topic ? core->ensure_topic(*dead_topic) : Result<int>(dead_topic.error());
    if (!exists) {
      logger().error(
          "cannot dead-letter an undecodable record of {} at {}/{} ({}); it stays "
          "uncommitted",
          topic, record.partition, record.offset, exists.error().describe());
      return;
    }
    logger().warn("an undecodable record of {} at {}/{} goes to {}: {}", topic, record.partition,
                  record.offset, *dead_topic, why.describe());
    auto self = shared_from_this();
    auto moved = std::make_shared<Fetched>(std::move(item));
    Produced done = [self, moved, name = *dead_topic](Result<void> outcome) {
      if (outcome) {
        self->finish(*moved);
      } else {
        logger().error("dead-lettering to {} failed ({}); the record stays uncommitted", name,
                       outcome.error().describe());
      }
    };
    const Record dead_record = to_record(dead);
    for (int tries = 0;; ++tries) {
      const rd_kafka_resp_err_t err = core->produce(*dead_topic, dead_record, done);
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return;
      if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || tries > 1000) {
        logger().error("dead-lettering to {} failed ({}); the record stays uncommitted",
                       *dead_topic, rd_kafka_err2str(err));
        return;
      }
      std::this_thread::sleep_for(milliseconds(5));
    }
  }

  // Commits, for each partition, the oldest offset not yet finished (if it moved).
  void commit(bool wait) {
    PartitionListPtr list(rd_kafka_topic_partition_list_new(4));
    {
      std::lock_guard lock(mutex);
      for (auto& [partition, state] : assigned) {
        auto committable = state.progress.committable();
        if (!committable || *committable <= state.committed) continue;
        rd_kafka_topic_partition_list_add(list.get(), topic.c_str(), partition)->offset =
            *committable;
        state.committed = *committable;
      }
    }
    if (list->cnt == 0) return;
    if (rd_kafka_resp_err_t err = rd_kafka_commit(handle.get(), list.get(), wait ? 0 : 1);
        err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      on_commit_failed(err, *list);
    }
  }

  // A failed commit is made again at the next turn (unless the partitions moved on).
  void on_commit_failed(rd_kafka_resp_err_t err, const rd_kafka_topic_partition_list_t& list) {
    logger().warn("committing offsets of {} failed: {}", topic, rd_kafka_err2str(err));
    std::lock_guard lock(mutex);
    for (int i = 0; i < list.cnt; ++i) {
      if (auto it = assigned.find(list.elems[i].partition); it != assigned.end()) {
        it->second.committed = -1;
      }
    }
  }

  static void on_commit(rd_kafka_t*, rd_kafka_resp_err_t err,
                        rd_kafka_topic_partition_list_t* offsets, void* opaque) {
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR || err == RD_KAFKA_RESP_ERR__NO_OFFSET ||
        offsets == nullptr) {
      return;
    }
    static_cast<Consumer*>(opaque)->on_commit_failed(err, *offsets);
  }

  static void on_rebalance(rd_kafka_t* handle, rd_kafka_resp_err_t err,
                           rd_kafka_topic_partition_list_t* partitions, void* opaque) {
    auto* self = static_cast<Consumer*>(opaque);
    const bool cooperative = std::string_view(rd_kafka_rebalance_protocol(handle)) == "COOPERATIVE";
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
      self->on_assigned(*partitions);
      if (cooperative) {
        if (rd_kafka_error_t* error = rd_kafka_incremental_assign(handle, partitions)) {
          logger().error("{}", kafka_error(error, "assigning partitions").describe());
        }
      } else {
        rd_kafka_assign(handle, partitions);
      }
      bool paused = false;
      {
        std::lock_guard lock(self->mutex);
        paused = self->paused;
      }
      if (paused) rd_kafka_pause_partitions(handle, partitions);
    } else {
      self->on_revoked(*partitions);
      if (cooperative) {
        if (rd_kafka_error_t* error = rd_kafka_incremental_unassign(handle, partitions)) {
          logger().error("{}", kafka_error(error, "giving up partitions").describe());
        }
      } else {
        rd_kafka_assign(handle, nullptr);
      }
    }
  }

  void on_assigned(const rd_kafka_topic_partition_list_t& partitions) {
    {
      std::lock_guard lock(mutex);
      for (int i = 0; i < partitions.cnt; ++i) {
        Assigned fresh;
        fresh.epoch = next_epoch++;
        assigned[partitions.elems[i].partition] = std::move(fresh);
      }
      assignment_seen = true;
    }
    changed.notify_all();
  }

  // Partitions go to another member: what was fetched from them but not handed out is dropped;
  // what is out gets `rebalance_drain` to be settled; then their finished offsets are committed,
  // so the new owner starts exactly after the work that was done.
  void on_revoked(const rd_kafka_topic_partition_list_t& partitions) {
    std::set<std::int32_t> revoked;
    for (int i = 0; i < partitions.cnt; ++i) revoked.insert(partitions.elems[i].partition);
    PartitionListPtr list(rd_kafka_topic_partition_list_new(partitions.cnt));
    bool promoted = false;
    {
      std::unique_lock lock(mutex);
      auto gone = [&revoked](const Fetched& item) { return revoked.count(item.partition) != 0; };
      gate.remove_waiting_if(gone, [this](const Fetched& item) { forget(item, false); });
      std::deque<Fetched> keep;
      std::vector<Fetched> dropped;
      for (auto& item : ready) {
        if (gone(item)) {
          dropped.push_back(std::move(item));
        } else {
          keep.push_back(std::move(item));
        }
      }
      ready.swap(keep);
      for (auto it = delayed.begin(); it != delayed.end();) {
        if (gone(it->second)) {
          dropped.push_back(std::move(it->second));
          it = delayed.erase(it);
        } else {
          ++it;
        }
      }
      for (const auto& item : dropped) promoted = release(item, false) || promoted;
      const auto deadline = SteadyClock::now() + core->config.rebalance_drain;
      changed.wait_until(lock, deadline, [&] {
        if (force.load()) return true;
        for (std::int32_t p : revoked) {
          auto it = assigned.find(p);
          if (it != assigned.end() && it->second.outstanding != 0) return false;
        }
        return true;
      });
      for (std::int32_t p : revoked) {
        auto it = assigned.find(p);
        if (it == assigned.end()) continue;
        auto committable = it->second.progress.committable();
        // Committed even when an earlier commit of the same offset was sent: that one may have
        // been refused (a rebalance is exactly when commits fail).
        if (grouped() && committable) {
          rd_kafka_topic_partition_list_add(list.get(), topic.c_str(), p)->offset = *committable;
        }
        if (it->second.outstanding != 0) {
          logger().warn(
              "partition {} of {} goes to another member with {} messages unsettled; "
              "they will be delivered again",
              p, topic, it->second.outstanding);
        }
        assigned.erase(it);
      }
    }
    if (promoted) arrived->notify();
    if (list->cnt > 0) {
      if (rd_kafka_resp_err_t err = rd_kafka_commit(handle.get(), list.get(), 0);
          err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        logger().warn("committing offsets of {} before a rebalance failed: {}", topic,
                      rd_kafka_err2str(err));
      }
    }
  }
};
using ConsumerPtr = std::shared_ptr<Consumer>;

class KafkaDelivery final : public Delivery {
 public:
  KafkaDelivery(Fetched item, ConsumerPtr consumer, bool stream)
      : Delivery(item.message, item.attempt, stream ? static_cast<std::uint64_t>(item.offset) : 0),
        item_(std::move(item)),
        consumer_(std::move(consumer)) {}
  ~KafkaDelivery() override {
    if (settled_) return;
    ++item_.attempt;
    consumer_->redeliver(std::move(item_));
  }

  asio::awaitable<Result<void>> ack() override { co_return settle(); }
  asio::awaitable<Result<void>> term() override { co_return settle(); }

  // Kafka has no per-message redelivery: the message waits here, its key held (so later
  // messages of the key wait too, and order holds) and its offset uncommitted, while other keys
  // flow.
  asio::awaitable<Result<void>> nack(milliseconds delay) override {
    if (settled_) co_return already();
    settled_ = true;
    ++item_.attempt;
    if (delay.count() <= 0) {
      consumer_->redeliver(std::move(item_));
      co_return ok();
    }
    consumer_->redeliver_later(std::move(item_), SteadyClock::now() + delay);
    co_return ok();
  }

 private:
  Result<void> settle() {
    if (settled_) return already();
    settled_ = true;
    consumer_->finish(item_);
    return ok();
  }
  static Error already() {
    return kafka_error(errc::failed_precondition, "the delivery was already settled");
  }

  Fetched item_;
  ConsumerPtr consumer_;
  bool settled_ = false;
};

class KafkaSubscription final : public Subscription {
 public:
  explicit KafkaSubscription(ConsumerPtr consumer) : consumer_(std::move(consumer)) {}
  ~KafkaSubscription() override { close(); }

  asio::awaitable<Result<std::unique_ptr<Delivery>>> receive(
      std::optional<SteadyClock::time_point> deadline) override {
    Consumer& c = *consumer_;
    const bool stream = c.spec.kind == DestinationKind::stream;
    auto item = co_await detail::take_next(&c.mutex, &c.ready, &c.closed, c.arrived.get(), deadline,
                                           kBackendName);
    if (!item) co_return std::move(item).error();
    co_return std::unique_ptr<Delivery>(new KafkaDelivery(std::move(*item), consumer_, stream));
  }

  void close() override { consumer_->close_intake(); }

 private:
  ConsumerPtr consumer_;
};

// Where a new reader starts in each partition: the offsets StartPosition names. Blocking.
Result<std::vector<std::int64_t>> start_offsets(rd_kafka_t* handle, const std::string& topic,
                                                int count, const StartPosition& start,
                                                milliseconds timeout) {
  std::vector<std::int64_t> offsets(static_cast<std::size_t>(count));
  std::vector<std::int64_t> low(offsets.size()), high(offsets.size());
  for (int p = 0; p < count; ++p) {
    const auto i = static_cast<std::size_t>(p);
    if (rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(
            handle, topic.c_str(), p, &low[i], &high[i], timeout_ms(timeout));
        err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return kafka_error(err, "reading the offsets of " + topic + "/" + std::to_string(p));
    }
  }
  switch (start.kind) {
    case StartPosition::Kind::new_messages:
      offsets = high;
      break;
    case StartPosition::Kind::earliest:
      offsets = low;
      break;
    case StartPosition::Kind::sequence:
      for (std::size_t i = 0; i < offsets.size(); ++i) {
        offsets[i] = std::clamp(static_cast<std::int64_t>(std::min<std::uint64_t>(
                                    start.sequence, static_cast<std::uint64_t>(INT64_MAX))),
                                low[i], high[i]);
      }
      break;
    case StartPosition::Kind::time: {
      const auto millis = std::chrono::duration_cast<milliseconds>(start.time.time_since_epoch());
      PartitionListPtr list(rd_kafka_topic_partition_list_new(count));
      for (int p = 0; p < count; ++p) {
        rd_kafka_topic_partition_list_add(list.get(), topic.c_str(), p)->offset = millis.count();
      }
      if (rd_kafka_resp_err_t err =
              rd_kafka_offsets_for_times(handle, list.get(), timeout_ms(timeout));
          err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        return kafka_error(err, "finding the offsets of " + topic + " at a time");
      }
      for (int i = 0; i < list->cnt; ++i) {
        const auto& e = list->elems[i];
        const auto p = static_cast<std::size_t>(e.partition);
        // -1 says no record is that late, or (librdkafka's mock cluster) that the broker does
        // not look offsets up by time: reading from the start, the consumer skips what is older.
        offsets[p] = e.offset >= 0 ? e.offset : low[p];
      }
      break;
    }
  }
  return offsets;
}

// Makes the consumer of a subscription and starts its thread. Blocking: it reads offsets and,
// for a group, waits (up to request_timeout) until the group has given it its partitions, so
// that the subscriber is live when subscribe() returns.
Result<ConsumerPtr> open_consumer(CorePtr core, SubscriptionSpec spec) {
  const KafkaConfig& config = core->config;
  auto topic = topic_for(config.topic_prefix, spec.subject);
  if (!topic) return std::move(topic).error();
  if (subject::has_wildcard(spec.subject)) {
    return kafka_error(errc::invalid_argument,
                       "Kafka subscriptions take one subject, not a pattern: " + spec.subject);
  }
  auto count = core->ensure_topic(*topic);
  if (!count) return std::move(count).error();

  auto consumer = std::make_shared<Consumer>();
  consumer->core = core;
  consumer->spec = spec;
  consumer->topic = *topic;
  if (!spec.group.empty())
    consumer->group_id = group_for(config.topic_prefix, spec.group, spec.subject);

  auto conf = make_conf(config, ClientRole::consumer);
  if (!conf) return std::move(conf).error();
  rd_kafka_conf_t* raw = conf->get();
  char reason[512];
  // librdkafka's consumer needs a group id even to read assigned partitions; a reader on its own
  // gets a private one that never joins, commits or reads committed offsets.
  const std::string group_id = consumer->grouped()
                                   ? consumer->group_id
                                   : config.topic_prefix + "marty-reader-" + make_uuid_v7();
  rd_kafka_conf_set(raw, "group.id", group_id.c_str(), reason, sizeof reason);
  rd_kafka_conf_set(raw, "auto.offset.reset",
                    spec.start.kind == StartPosition::Kind::new_messages ? "latest" : "earliest",
                    reason, sizeof reason);
  rd_kafka_conf_set_opaque(raw, consumer.get());
  rd_kafka_conf_set_rebalance_cb(raw, &Consumer::on_rebalance);
  rd_kafka_conf_set_offset_commit_cb(raw, &Consumer::on_commit);
  auto handle = make_client(std::move(*conf), ClientRole::consumer);
  if (!handle) return std::move(handle).error();
  consumer->handle = std::move(*handle);
  rd_kafka_t* rk = consumer->handle.get();
  rd_kafka_poll_set_consumer(rk);

  auto starts = start_offsets(rk, *topic, *count, spec.start, config.request_timeout);
  if (!starts) return std::move(starts).error().with_context("subscribe " + spec.subject);

  if (consumer->grouped()) {
    // A new group starts where the subscription says, not wherever auto.offset.reset would put
    // it once the (slow) join completes: what is published after subscribe() returns is never
    // missed. An existing group keeps its place.
    PartitionListPtr committed(rd_kafka_topic_partition_list_new(*count));
    for (int p = 0; p < *count; ++p) {
      rd_kafka_topic_partition_list_add(committed.get(), topic->c_str(), p);
    }
    if (rd_kafka_resp_err_t err =
            rd_kafka_committed(rk, committed.get(), timeout_ms(config.request_timeout));
        err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return kafka_error(err,
                         "reading the committed offsets of group '" + consumer->group_id + "'");
    }
    PartitionListPtr initial(rd_kafka_topic_partition_list_new(*count));
    for (int i = 0; i < committed->cnt; ++i) {
      const auto& e = committed->elems[i];
      if (e.offset >= 0) continue;
      rd_kafka_topic_partition_list_add(initial.get(), topic->c_str(), e.partition)->offset =
          (*starts)[static_cast<std::size_t>(e.partition)];
    }
    if (initial->cnt > 0) {
      // Refused when another member has joined meanwhile; that member has placed the group.
      if (rd_kafka_resp_err_t err = rd_kafka_commit(rk, initial.get(), 0);
          err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        logger().debug("placing new group {} on {}: {}", consumer->group_id, *topic,
                       rd_kafka_err2str(err));
      }
    }
    PartitionListPtr subscription(rd_kafka_topic_partition_list_new(1));
    rd_kafka_topic_partition_list_add(subscription.get(), topic->c_str(), RD_KAFKA_PARTITION_UA);
    if (rd_kafka_resp_err_t err = rd_kafka_subscribe(rk, subscription.get());
        err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return kafka_error(err, "subscribing to topic '" + *topic + "'");
    }
  } else {
    PartitionListPtr assignment(rd_kafka_topic_partition_list_new(*count));
    for (int p = 0; p < *count; ++p) {
      rd_kafka_topic_partition_list_add(assignment.get(), topic->c_str(), p)->offset =
          (*starts)[static_cast<std::size_t>(p)];
    }
    consumer->on_assigned(*assignment);
    if (rd_kafka_resp_err_t err = rd_kafka_assign(rk, assignment.get());
        err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return kafka_error(err, "reading topic '" + *topic + "'");
    }
  }
  Consumer* raw_consumer = consumer.get();  // the backend joins the thread before letting go
  consumer->thread = std::thread([raw_consumer] { raw_consumer->run(); });
  if (consumer->grouped()) {
    std::unique_lock lock(consumer->mutex);
    if (!consumer->changed.wait_for(lock, config.request_timeout,
                                    [&] { return consumer->assignment_seen; })) {
      logger().info(
          "group {} has not assigned partitions of {} yet; the subscription reads "
          "once it does, from where the group stands",
          consumer->group_id, *topic);
    }
  }
  return consumer;
}

// Ends a consumer's thread: waits until it has drained (or `deadline`), then makes it stop.
// Blocking. True when it drained in time.
bool stop_consumer(Consumer& consumer, SteadyClock::time_point deadline) {
  consumer.close_intake();
  bool drained = true;
  {
    std::unique_lock lock(consumer.mutex);
    drained = consumer.changed.wait_until(lock, deadline, [&] { return consumer.finished; });
  }
  if (!drained) {
    consumer.force = true;
    consumer.changed.notify_all();
  }
  if (consumer.thread.joinable()) consumer.thread.join();
  return drained;
}

// ---- The backend ---------------------------------------------------------------------------

class KafkaBackend final : public Backend {
 public:
  explicit KafkaBackend(KafkaConfig config) : core_(std::make_shared<Core>()) {
    core_->config = std::move(config);
    caps_.patterns = {MessagingPattern::pub_sub, MessagingPattern::point_to_point,
                      MessagingPattern::request_response, MessagingPattern::streaming,
                      MessagingPattern::broadcast};
    caps_.delivery = DeliveryGuarantee::at_least_once;
    caps_.ordering = Ordering::per_key;
    caps_.persistent_replay = true;
    caps_.durable_groups = true;
    caps_.consumer_groups = true;
    caps_.native_request_reply = false;
    caps_.delayed_redelivery = true;
    caps_.native_dead_letter = false;
    caps_.inspectable_dead_letters = true;
    caps_.consumer_lag = true;  // the log's end less the group's committed offsets
    caps_.headers = true;
    caps_.wildcard_subscriptions = false;
    caps_.max_payload_bytes = 1'000'000;  // the brokers' default message.max.bytes
  }
  ~KafkaBackend() override { (void)shutdown(SteadyClock::now() + std::chrono::seconds(1)); }

  std::string_view name() const noexcept override { return kBackendName; }
  const Capabilities& capabilities() const noexcept override { return caps_; }

  asio::awaitable<Result<void>> connect() override {
    {
      std::lock_guard lock(mutex_);
      if (connected_) co_return ok();
      if (connecting_ || closed_) {
        co_return kafka_error(errc::failed_precondition, connecting_
                                                             ? "connect() is already running"
                                                             : "the backend is closed");
      }
      connecting_ = true;
    }
    Core* core = core_.get();
    auto work = [core]() -> Result<void> {
      if (auto valid = validate(core->config); !valid) return valid;
      auto conf = make_conf(core->config, ClientRole::producer);
      if (!conf) return std::move(conf).error();
      rd_kafka_conf_set_dr_msg_cb(conf->get(), &on_delivery_report);
      auto producer = make_client(std::move(*conf), ClientRole::producer);
      if (!producer) return std::move(producer).error();
      // Reachable at all? (librdkafka would otherwise retry quietly for ever.)
      const struct rd_kafka_metadata* metadata = nullptr;
      const rd_kafka_resp_err_t err = rd_kafka_metadata(producer->get(), 0, nullptr, &metadata,
                                                        timeout_ms(core->config.request_timeout));
      if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        return kafka_error(err,
                           "cannot reach the Kafka cluster at " + core->config.bootstrap_servers);
      }
      rd_kafka_metadata_destroy(metadata);
      core->start_producer(std::move(*producer));
      return ok();
    };
    auto connected = co_await detail::offload(blocking_pool(), std::move(work));
    std::lock_guard lock(mutex_);
    connecting_ = false;
    if (connected) connected_ = true;
    co_return connected;
  }

  asio::awaitable<Result<void>> publish(Message message, PublishOptions options) override {
    if (auto usable = check_usable(); !usable) co_return usable;
    auto topic = topic_for(core_->config.topic_prefix, message.subject());
    if (!topic) co_return std::move(topic).error();
    Core* core = core_.get();
    int count = 0;
    {
      std::lock_guard lock(core->mutex);
      if (auto it = core->partitions.find(*topic); it != core->partitions.end()) count = it->second;
    }
    if (count == 0) {
      const std::string name = *topic;
      auto work = [core, name] { return core->ensure_topic(name); };
      auto exists = co_await detail::offload(blocking_pool(), std::move(work));
      if (!exists) co_return std::move(exists).error();
      count = *exists;
    }
    if (options.require_receiver) {
      const std::string service = service_of(message.subject());
      if (!service.empty()) {
        const std::string group = group_for(core->config.topic_prefix, service, message.subject());
        const std::string name = *topic;
        auto work = [core, group, name, count] { return core->group_reads(group, name, count); };
        auto read = co_await detail::offload(blocking_pool(), std::move(work));
        if (!read) co_return std::move(read).error();
        if (!*read) {
          co_return kafka_error(errc::not_found, "no consumer group of service '" + service +
                                                     "' reads '" + std::string(message.subject()) +
                                                     "'");
        }
      }
    }
    // The responder skips a query nobody waits for any more.
    detail::carry_query_deadline(message, options);
    Record record = to_record(message);
    const bool wait = options.guarantee != DeliveryGuarantee::at_most_once;
    // A bus stream is one log in order: what has no key goes to its first partition (keyed
    // records spread by key, in order per key).
    const std::int32_t partition =
        options.kind == DestinationKind::stream && record.key.empty() ? 0 : RD_KAFKA_PARTITION_UA;
    co_return co_await produce_and_wait(core_, std::move(*topic), std::move(record), partition,
                                        options.deadline, wait);
  }

  asio::awaitable<Result<std::shared_ptr<Subscription>>> subscribe(SubscriptionSpec spec) override {
    if (auto usable = check_usable(); !usable) co_return std::move(usable).error();
    CorePtr core = core_;
    auto work = [core, spec] { return open_consumer(core, spec); };
    auto consumer = co_await detail::offload(blocking_pool(), std::move(work));
    if (!consumer) co_return std::move(consumer).error().with_context("subscribe " + spec.subject);
    {
      std::lock_guard lock(mutex_);
      if (!closed_) {
        prune_finished();
        consumers_.push_back(*consumer);
        co_return std::shared_ptr<Subscription>(std::make_shared<KafkaSubscription>(*consumer));
      }
    }
    ConsumerPtr orphan = *consumer;
    auto stop = [orphan] { return stop_consumer(*orphan, SteadyClock::now()); };
    (void)co_await detail::offload(blocking_pool(), std::move(stop));
    co_return kafka_error(errc::failed_precondition, "the backend is closed");
  }

  // Kafka cannot delete one record, so a dead letter is removed by appending a settlement
  // record (detail::dead_letter_settlement: header marty-dead-letter-settled, payload: the JSON
  // array of the ids it settles) to the same topic; reading skips settled dead letters and
  // settlement records. The records themselves go when the topic's retention removes them.
  asio::awaitable<Result<std::vector<Message>>> read_dead_letters(
      std::string dead_letter_subject, std::size_t limit,
      SteadyClock::time_point deadline) override {
    auto all = co_await read_unsettled(dead_letter_subject, deadline);
    if (!all) co_return std::move(all).error();
    if (all->size() > limit) all->resize(limit);
    co_return std::move(*all);
  }

  asio::awaitable<Result<std::uint64_t>> consumer_lag(SubscriptionSpec spec,
                                                      SteadyClock::time_point deadline) override {
    if (auto usable = check_usable(); !usable) co_return std::move(usable).error();
    auto topic = topic_for(core_->config.topic_prefix, spec.subject);
    if (!topic) co_return std::move(topic).error();
    CorePtr core = core_;
    const std::string name = *topic;
    const std::string group_id = group_for(core_->config.topic_prefix, spec.group, spec.subject);
    auto work = [core, name, group_id, deadline]() -> Result<std::uint64_t> {
      return core->group_lag(name, group_id, deadline);
    };
    co_return co_await detail::offload(blocking_pool(), std::move(work));
  }

  asio::awaitable<Result<std::size_t>> remove_dead_letters(
      std::string dead_letter_subject, std::set<std::string> ids,
      SteadyClock::time_point deadline) override {
    auto present = co_await read_unsettled(dead_letter_subject, deadline);
    if (!present) co_return std::move(present).error();
    std::vector<std::string> settled;
    for (const Message& message : *present) {
      if (std::string id = dead_letter_id(message); ids.contains(id)) {
        settled.push_back(std::move(id));
      }
    }
    if (settled.empty()) co_return std::size_t{0};
    Message settlement = detail::dead_letter_settlement(dead_letter_subject, settled);
    PublishOptions options;
    options.kind = DestinationKind::stream;
    options.pattern = MessagingPattern::streaming;
    options.deadline = deadline;
    auto published = co_await publish(std::move(settlement), options);
    if (!published) {
      co_return std::move(published).error().with_context("settling dead letters of " +
                                                          dead_letter_subject);
    }
    co_return settled.size();
  }

  asio::awaitable<Result<void>> close(SteadyClock::time_point deadline) override {
    auto work = [this, deadline] { return shutdown(deadline); };
    co_return co_await detail::offload(blocking_pool(), std::move(work));
  }

 private:
  Result<void> check_usable() {
    std::lock_guard lock(mutex_);
    if (closed_) return kafka_error(errc::failed_precondition, "the backend is closed");
    if (!connected_) return kafka_error(errc::failed_precondition, "connect() has not succeeded");
    return ok();
  }

  // The dead letters on `dead_letter_subject` that no settlement record names, oldest first
  // per partition.
  asio::awaitable<Result<std::vector<Message>>> read_unsettled(std::string dead_letter_subject,
                                                               SteadyClock::time_point deadline) {
    if (auto usable = check_usable(); !usable) co_return std::move(usable).error();
    auto topic = topic_for(core_->config.topic_prefix, dead_letter_subject);
    if (!topic) co_return std::move(topic).error();
    CorePtr core = core_;
    const std::string name = *topic;
    auto work = [core, name, dead_letter_subject, deadline]() -> Result<std::vector<Message>> {
      auto partitions = core->ensure_topic(name);
      if (!partitions) return std::move(partitions).error();
      return read_whole_topic(core->config, name, *partitions, dead_letter_subject, deadline);
    };
    auto records = co_await detail::offload(blocking_pool(), std::move(work));
    if (!records) co_return std::move(records).error();
    co_return detail::unsettled_dead_letters(std::move(*records));
  }

  // Drains and stops the consumers, then flushes the producer; by `deadline`. Blocking.
  Result<void> shutdown(SteadyClock::time_point deadline) {
    std::vector<ConsumerPtr> consumers;
    {
      std::lock_guard lock(mutex_);
      if (closed_) return ok();
      closed_ = true;
      consumers.swap(consumers_);
    }
    for (auto& consumer : consumers) consumer->close_intake();
    bool drained = true;
    for (auto& consumer : consumers) drained = stop_consumer(*consumer, deadline) && drained;
    bool flushed = true;
    if (core_->producer) {
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - SteadyClock::now());
      flushed = rd_kafka_flush(core_->producer.get(), std::max(0, timeout_ms(left))) ==
                RD_KAFKA_RESP_ERR_NO_ERROR;
    }
    core_->stop_producer();
    if (!flushed) {
      return kafka_error(errc::deadline_exceeded,
                         "messages were still unacknowledged at the close deadline");
    }
    if (!drained) {
      return kafka_error(errc::deadline_exceeded,
                         "deliveries were still unsettled at the close deadline; they will be "
                         "delivered again");
    }
    return ok();
  }

  // With mutex_ held: forgets consumers whose subscription closed and whose thread has ended.
  void prune_finished() {
    std::erase_if(consumers_, [](const ConsumerPtr& consumer) {
      {
        std::lock_guard lock(consumer->mutex);
        if (!consumer->finished) return false;
      }
      if (consumer->thread.joinable()) consumer->thread.join();  // it has returned already
      return true;
    });
  }

  CorePtr core_;
  Capabilities caps_;
  std::mutex mutex_;
  bool connecting_ = false;
  bool connected_ = false;
  bool closed_ = false;
  std::vector<ConsumerPtr> consumers_;
};

}  // namespace

std::shared_ptr<Backend> make_backend(KafkaConfig config) {
  return std::make_shared<KafkaBackend>(std::move(config));
}

}  // namespace marty::messaging::kafka
