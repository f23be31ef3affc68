// The Kafka backend against raw librdkafka on the same cluster, in the same run, 128-byte JSON
// messages, median of alternating runs, with the client CPU per message (both sides in this
// process, librdkafka's threads included).
//
// What the bus sends (kafka_backend.cpp, kafka_wire.cpp; read back with a raw consumer): one
// record per message, no key, the payload as the value, and the CloudEvents binary-mode headers
// ce_specversion, ce_id (a fresh UUIDv7), ce_source, ce_type, ce_time (fresh) and content-type,
// from an idempotent producer (acks=all, linger.ms 5) whose delivery reports are served by a
// polling thread; each publish_event waits for its report, with --window of them in flight.
// Its subscriber is a consumer group member that reads every header of a record, and commits
// the offsets of handled records every 200 ms (asynchronously).
//
// The baselines, each the same work with librdkafka alone:
//   produce, same bytes: rd_kafka_producev with the same six headers (fresh id and time per
//     record) and the same value, on a producer configured like the bus's, with at most
//     --window records unacknowledged (a counting bound released by the delivery reports: when
//     it is full, rd_kafka_poll waits for one); then flush.
//   produce, bare: the value alone, no headers, the same window.
//   end to end: the same produce, read by a consumer group member (joined before the clock
//     starts) that reads every header of each record, stores its offset once read (at least
//     once) and lets librdkafka commit them every 200 ms (auto commit), until the last record.
// The cluster is librdkafka's mock (scripts/brokers): it keeps everything in memory, so the
// absolute figures say nothing about Kafka; the ratios compare the two clients on one cluster.
// usage: marty_bench_kafka [--messages N] [--runs N] [--window N]
//   (MARTY_KAFKA_BOOTSTRAP: the cluster; --window: records in flight on both sides, default 1000)
#include <librdkafka/rdkafka.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "bench_bus.hpp"
#include "bench_support.hpp"
#include "bench_wire.hpp"
#include "marty/messaging/codec.hpp"
#include "marty/messaging/kafka_backend.hpp"

using namespace marty::messaging::bench;
namespace mm = marty::messaging;

namespace {

struct Options {
  std::size_t messages = 50'000;
  int runs = 3;
  /// Records in flight at once (awaiting their delivery report), on both sides.
  std::size_t window = 1'000;
};

/// How often offsets are committed, on both sides (KafkaConfig::commit_interval).
constexpr const char* kCommitIntervalMs = "200";

std::string bootstrap() {
  const char* servers = std::getenv("MARTY_KAFKA_BOOTSTRAP");
  check(servers != nullptr && *servers != '\0', "MARTY_KAFKA_BOOTSTRAP names the cluster");
  return servers;
}

std::string unique(const char* base) {
  const std::string id = mm::make_uuid_v7();
  return std::string(base) + "_" + id.substr(id.size() - 12);
}

enum class Wire { bare, same_bytes };

// ---- raw librdkafka ----

void set(rd_kafka_conf_t* conf, const char* name, const std::string& value) {
  char reason[512];
  if (rd_kafka_conf_set(conf, name, value.c_str(), reason, sizeof reason) != RD_KAFKA_CONF_OK) {
    std::fprintf(stderr, "benchmark failed: %s: %s\n", name, reason);
    std::exit(1);
  }
}

int partitions_of(rd_kafka_t* client, const std::string& topic) {
  for (int attempt = 0; attempt < 100; ++attempt) {
    rd_kafka_topic_t* handle = rd_kafka_topic_new(client, topic.c_str(), nullptr);
    const struct rd_kafka_metadata* metadata = nullptr;
    const auto err = rd_kafka_metadata(client, 0, handle, &metadata, 5000);
    rd_kafka_topic_destroy(handle);
    int count = 0;
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (metadata->topic_cnt == 1 && metadata->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        count = metadata->topics[0].partition_cnt;
      }
      rd_kafka_metadata_destroy(metadata);
    }
    if (count > 0) return count;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  check(false, "the topic exists");
  return 0;
}

std::atomic<std::size_t> raw_acknowledged{0};
std::atomic<bool> raw_failed{false};

void on_raw_report(rd_kafka_t*, const rd_kafka_message_t* report, void*) {
  if (report->err != RD_KAFKA_RESP_ERR_NO_ERROR) raw_failed = true;
  ++raw_acknowledged;
}

/// A consumer group member of `topic`, its partitions assigned (the clock starts after).
rd_kafka_t* raw_group_member(const std::string& topic) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  set(conf, "bootstrap.servers", bootstrap());
  set(conf, "group.id", unique("raw_group"));
  set(conf, "auto.offset.reset", "earliest");  // a new, empty topic: everything produced
  set(conf, "enable.auto.offset.store", "false");
  set(conf, "enable.auto.commit", "true");
  set(conf, "auto.commit.interval.ms", kCommitIntervalMs);
  set(conf, "enable.partition.eof", "false");
  set(conf, "session.timeout.ms", "4000");  // as the bus's consumers are configured here
  set(conf, "heartbeat.interval.ms", "400");
  set(conf, "fetch.wait.max.ms", "10");
  char reason[512];
  rd_kafka_t* consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, reason, sizeof reason);
  check(consumer != nullptr, reason);
  rd_kafka_poll_set_consumer(consumer);
  rd_kafka_topic_partition_list_t* topics = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(topics, topic.c_str(), RD_KAFKA_PARTITION_UA);
  check(rd_kafka_subscribe(consumer, topics) == RD_KAFKA_RESP_ERR_NO_ERROR, "subscribe");
  rd_kafka_topic_partition_list_destroy(topics);
  const auto deadline = Steady::now() + std::chrono::seconds(30);
  while (true) {
    rd_kafka_message_t* none = rd_kafka_consumer_poll(consumer, 100);
    check(none == nullptr, "an empty topic");
    rd_kafka_topic_partition_list_t* assigned = nullptr;
    check(rd_kafka_assignment(consumer, &assigned) == RD_KAFKA_RESP_ERR_NO_ERROR, "assignment");
    const int count = assigned->cnt;
    rd_kafka_topic_partition_list_destroy(assigned);
    if (count > 0) break;
    check(Steady::now() < deadline, "the group member gets its partitions");
  }
  return consumer;
}

/// Reads every header of a record, as decoding one does; returns how many there were.
std::size_t read_headers(const rd_kafka_message_t* record) {
  rd_kafka_headers_t* headers = nullptr;
  if (rd_kafka_message_headers(record, &headers) != RD_KAFKA_RESP_ERR_NO_ERROR) return 0;
  const char* name = nullptr;
  const void* value = nullptr;
  std::size_t size = 0;
  std::size_t i = 0;
  while (rd_kafka_header_get_all(headers, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    ++i;
  }
  return i;
}

// With `read`, until a group member has received them all.
Rate raw_run(std::size_t count, std::size_t window, Wire wire, bool read) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  set(conf, "bootstrap.servers", bootstrap());
  set(conf, "enable.idempotence", "true");
  set(conf, "acks", "all");
  set(conf, "linger.ms", "5");
  rd_kafka_conf_set_dr_msg_cb(conf, &on_raw_report);
  char reason[512];
  rd_kafka_t* producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, reason, sizeof reason);
  check(producer != nullptr, reason);
  const std::string topic = "events." + unique("raw_bench");
  (void)partitions_of(producer, topic);  // the mock creates it on first use

  rd_kafka_t* consumer = nullptr;
  std::thread reader;
  Steady::time_point last{};
  if (read) {
    consumer = raw_group_member(topic);
    reader = std::thread([&] {
      std::size_t received = 0;
      while (received < count) {
        rd_kafka_message_t* message = rd_kafka_consumer_poll(consumer, 1000);
        if (message == nullptr) continue;
        if (message->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
          check(message->len == kPayloadBytes, "a record of the benchmark's size");
          check((read_headers(message) != 0) == (wire == Wire::same_bytes), "the headers sent");
          // Handled: its offset may be committed (at least once).
          check(rd_kafka_offset_store(message->rkt, message->partition, message->offset) ==
                    RD_KAFKA_RESP_ERR_NO_ERROR,
                "store the offset");
          ++received;
        }
        rd_kafka_message_destroy(message);
      }
      last = Steady::now();
    });
  }
  raw_acknowledged = 0;
  raw_failed = false;
  CloudEventHeaders headers(topic.substr(7), {"ce_", "content-type"});
  const std::string_view value = prototype().bytes();
  RateMeter meter(count);
  for (std::size_t i = 0; i < count; ++i) {
    // A full window: wait for a delivery report to free a slot.
    while (i - raw_acknowledged.load() >= window) rd_kafka_poll(producer, 100);
    rd_kafka_headers_t* record_headers = nullptr;
    if (wire == Wire::same_bytes) {
      const auto& next = headers.next();
      record_headers = rd_kafka_headers_new(next.size());
      for (const auto& [name, text] : next) {
        rd_kafka_header_add(record_headers, name.data(), static_cast<ssize_t>(name.size()),
                            text.data(), static_cast<ssize_t>(text.size()));
      }
    }
    const auto err =
        rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(topic.c_str()),
                          RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
                          RD_KAFKA_V_MSGFLAGS(0),  // the value outlives the run: not copied
                          RD_KAFKA_V_HEADERS(record_headers), RD_KAFKA_V_END);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR && record_headers != nullptr) {
      rd_kafka_headers_destroy(record_headers);  // ours again when producev fails
    }
    check(err == RD_KAFKA_RESP_ERR_NO_ERROR, "producev");
    rd_kafka_poll(producer, 0);  // delivery reports that came meanwhile
  }
  check(rd_kafka_flush(producer, 60'000) == RD_KAFKA_RESP_ERR_NO_ERROR, "flush");
  check(!raw_failed && raw_acknowledged == count, "every record acknowledged");
  if (read) {
    reader.join();
  } else {
    last = Steady::now();
  }
  const Rate rate = meter.stop(last);
  if (read) {
    rd_kafka_consumer_close(consumer);
    rd_kafka_destroy(consumer);
  }
  rd_kafka_destroy(producer);
  return rate;
}

// ---- the bus ----

mm::kafka::KafkaConfig bus_config() {
  mm::kafka::KafkaConfig config;
  config.bootstrap_servers = bootstrap();
  config.topic_creation = mm::kafka::KafkaConfig::TopicCreation::broker_auto_create;
  config.session_timeout = std::chrono::milliseconds(4'000);
  config.consumer_properties["fetch.wait.max.ms"] = "10";
  return config;
}

Rate bus_run(std::size_t count, std::size_t window, bool read) {
  const std::string type = unique("bus_bench");
  auto producer =
      started_bus(mm::MessageBackendType::kafka, mm::kafka::make_backend(bus_config()), false);
  std::unique_ptr<mm::BlockingEventBus> consumer;
  std::atomic<std::size_t> received{0};
  std::promise<Steady::time_point> done;
  auto finished = done.get_future();
  if (read) {
    consumer =
        started_bus(mm::MessageBackendType::kafka, mm::kafka::make_backend(bus_config()), false);
    auto handler = mm::sync_handler([&](const mm::Message&) -> mm::Result<void> {
      if (received.fetch_add(1) + 1 == count) done.set_value(Steady::now());
      return mm::ok();
    });
    check(consumer->subscribe_to_events({type}, handler, "bench_readers").has_value(),
          "subscribe_to_events");
  } else {
    // The topic exists before the clock starts, as the raw run's does.
    check(producer->publish_event(type, mm::Json{{"warm", true}}).has_value(), "first publish");
  }
  RateMeter meter(count);
  publish_concurrently(*producer, count, window, [&]() -> asio::awaitable<mm::Result<void>> {
    mm::Message message = prototype();
    co_return co_await producer->bus().publish_event(type, std::move(message));
  });
  Steady::time_point last = Steady::now();
  if (read) {
    check(finished.wait_for(std::chrono::seconds(300)) == std::future_status::ready,
          "the handler received everything");
    last = finished.get();
  }
  return meter.stop(last);
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  const bool parsed =
      parse_flags(argc, argv,
                  {{"--messages", [&](std::uint64_t v) { options.messages = v; }},
                   {"--runs", [&](std::uint64_t v) { options.runs = static_cast<int>(v); }},
                   {"--window", [&](std::uint64_t v) { options.window = v; }}},
                  "marty_bench_kafka [--messages N] [--runs N] [--window N]");
  if (!parsed) return 2;
  check(options.messages > 0 && options.runs > 0 && options.window > 0, "counts above zero");
  std::printf(
      "Kafka benchmark against librdkafka's mock cluster (in memory: the absolute figures "
      "are not Kafka's)\nat %s: %zu-byte messages, %zu in flight, median of %d alternating runs; "
      "CPU: client CPU microseconds per message (every thread of this process)\n\n",
      bootstrap().c_str(), kPayloadBytes, options.window, options.runs);
  struct Measure {
    const char* name;
    Wire wire;
    bool read;
    std::vector<Rate> raw, bus;
  };
  std::vector<Measure> measures{
      {"produce (acks=all), same bytes", Wire::same_bytes, false, {}, {}},
      {"produce (acks=all), raw bare (no headers)", Wire::bare, false, {}, {}},
      {"end to end (group, commits), same bytes", Wire::same_bytes, true, {}, {}},
      {"end to end (group, commits), raw bare", Wire::bare, true, {}, {}}};
  for (int run = 0; run < options.runs; ++run) {
    for (auto& m : measures) {
      m.raw.push_back(raw_run(options.messages, options.window, m.wire, m.read));
      // The bus sends the same way in both rows: measured once per kind.
      if (m.wire == Wire::same_bytes) {
        m.bus.push_back(bus_run(options.messages, options.window, m.read));
      }
    }
  }
  measures[1].bus = measures[0].bus;
  measures[3].bus = measures[2].bus;
  std::printf(
      "| measure                                    | raw msg/s | raw CPU | bus msg/s | bus CPU | "
      "bus/raw |\n");
  std::printf(
      "|--------------------------------------------|----------:|--------:|----------:|--------:|"
      "--------:|\n");
  for (const auto& m : measures) {
    const Rate raw = median_rate(m.raw), bus = median_rate(m.bus);
    std::printf("| %-42s | %9.0f | %7.2f | %9.0f | %7.2f | %7.2f |\n", m.name, raw.per_second,
                raw.cpu_us, bus.per_second, bus.cpu_us, bus.per_second / raw.per_second);
  }
  std::printf(
      "\nCPU: client CPU microseconds per message. bus/raw: the medians' ratio (above 1: the bus "
      "is faster). Raw bare rows send no CloudEvents headers (what they cost); the others do the "
      "same work as the bus.\n\n");
  print_result("kafka.produce.vs_raw_same_bytes", median_rate(measures[0].bus).per_second,
               median_rate(measures[0].raw).per_second);
  print_result("kafka.end_to_end.vs_raw_same_bytes", median_rate(measures[2].bus).per_second,
               median_rate(measures[2].raw).per_second);
  return 0;
}
