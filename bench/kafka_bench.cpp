// The Kafka backend against raw librdkafka on the same cluster, in the same run, 128-byte
// messages:
//   produce: N messages written with an idempotent producer (acks=all), from the first produce
//     until the last acknowledgement (the bus: publish_event with a window of publishes in
//     flight; raw: producev in a loop, then flush).
//   end to end: the same, with a reader that was placed at the end of the topic beforehand,
//     until it has received the last message (the bus: an event handler in a consumer group;
//     raw: a consumer assigned every partition, no group).
// The cluster is librdkafka's mock (scripts/brokers): it keeps everything in memory, so the
// absolute figures say nothing about Kafka; the ratios compare the two clients on one cluster.
// usage: marty_bench_kafka [--messages N] [--runs N] [--window N]
//   (MARTY_KAFKA_BOOTSTRAP: the cluster; --window: the bus's publishes in flight, default 1000)
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
#include "marty/messaging/kafka_backend.hpp"

using namespace marty::messaging::bench;
namespace mm = marty::messaging;

namespace {

struct Options {
  std::size_t messages = 50'000;
  int runs = 3;
  /// Publishes in flight at once through the bus (the raw producer has no such limit).
  std::size_t window = 1'000;
};

std::string bootstrap() {
  const char* servers = std::getenv("MARTY_KAFKA_BOOTSTRAP");
  check(servers != nullptr && *servers != '\0', "MARTY_KAFKA_BOOTSTRAP names the cluster");
  return servers;
}

std::string unique(const char* base) {
  const std::string id = mm::make_uuid_v7();
  return std::string(base) + "_" + id.substr(id.size() - 12);
}

double seconds(Steady::duration d) {
  return std::chrono::duration<double>(d).count();
}

// ---- raw librdkafka ----

rd_kafka_t* raw_client(rd_kafka_type_t type) {
  char reason[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  auto set = [&](const char* name, const char* value) {
    check(rd_kafka_conf_set(conf, name, value, reason, sizeof reason) == RD_KAFKA_CONF_OK, name);
  };
  set("bootstrap.servers", bootstrap().c_str());
  if (type == RD_KAFKA_PRODUCER) {
    set("enable.idempotence", "true");
    set("acks", "all");
    set("linger.ms", "5");
  } else {
    set("group.id", unique("raw_reader").c_str());
    set("enable.auto.commit", "false");
    set("fetch.wait.max.ms", "10");
  }
  rd_kafka_t* client = rd_kafka_new(type, conf, reason, sizeof reason);
  check(client != nullptr, reason);
  return client;
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

// Messages per second; with `read`, until a reader placed at the end has received them all.
double raw_run(std::size_t count, bool read) {
  char reason[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  for (auto [name, value] : {std::pair{"enable.idempotence", "true"}, std::pair{"acks", "all"},
                             std::pair{"linger.ms", "5"}}) {
    check(rd_kafka_conf_set(conf, name, value, reason, sizeof reason) == RD_KAFKA_CONF_OK, name);
  }
  check(rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap().c_str(), reason, sizeof reason) ==
            RD_KAFKA_CONF_OK,
        "bootstrap.servers");
  rd_kafka_conf_set_dr_msg_cb(conf, &on_raw_report);
  rd_kafka_t* producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, reason, sizeof reason);
  check(producer != nullptr, reason);
  const std::string topic = unique("raw_bench");
  const int partitions = partitions_of(producer, topic);  // the mock creates it on first use

  rd_kafka_t* consumer = nullptr;
  std::thread reader;
  Steady::time_point last{};
  if (read) {
    consumer = raw_client(RD_KAFKA_CONSUMER);
    rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(partitions);
    for (int p = 0; p < partitions; ++p) {
      rd_kafka_topic_partition_list_add(list, topic.c_str(), p)->offset = RD_KAFKA_OFFSET_END;
    }
    check(rd_kafka_assign(consumer, list) == RD_KAFKA_RESP_ERR_NO_ERROR, "assign");
    rd_kafka_topic_partition_list_destroy(list);
    // The reader must stand at the end before the first produce: wait for its first fetch.
    rd_kafka_message_t* none = rd_kafka_consumer_poll(consumer, 1000);
    check(none == nullptr, "an empty topic");
    reader = std::thread([&] {
      std::size_t received = 0;
      while (received < count) {
        rd_kafka_message_t* message = rd_kafka_consumer_poll(consumer, 1000);
        if (message == nullptr) continue;
        if (message->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
          check(message->len == kPayloadBytes, "a message of the benchmark's size");
          ++received;
        }
        rd_kafka_message_destroy(message);
      }
      last = Steady::now();
    });
  }
  raw_acknowledged = 0;
  const std::string payload(kPayloadBytes, 'x');
  const auto start = Steady::now();
  for (std::size_t i = 0; i < count; ++i) {
    while (true) {
      const auto err =
          rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(topic.c_str()),
                            RD_KAFKA_V_VALUE(const_cast<char*>(payload.data()), payload.size()),
                            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR) break;
      check(err == RD_KAFKA_RESP_ERR__QUEUE_FULL, "producev");
      rd_kafka_poll(producer, 1);
    }
    rd_kafka_poll(producer, 0);
  }
  check(rd_kafka_flush(producer, 60'000) == RD_KAFKA_RESP_ERR_NO_ERROR, "flush");
  check(!raw_failed && raw_acknowledged == count, "every message acknowledged");
  if (!read) last = Steady::now();
  if (read) {
    reader.join();
    rd_kafka_consumer_close(consumer);
    rd_kafka_destroy(consumer);
  }
  rd_kafka_destroy(producer);
  return static_cast<double>(count) / seconds(last - start);
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

double bus_run(std::size_t count, std::size_t window, bool read) {
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
  const mm::Json prototype{{"p", std::string(kPayloadBytes - 8, 'x')}};
  const auto start = Steady::now();
  publish_concurrently(*producer, count, window, [&]() -> asio::awaitable<mm::Result<void>> {
    mm::Json data = prototype;
    co_return co_await producer->bus().publish_event(type, std::move(data));
  });
  Steady::time_point last = Steady::now();
  if (read) {
    check(finished.wait_for(std::chrono::seconds(300)) == std::future_status::ready,
          "the handler received everything");
    last = finished.get();
  }
  return static_cast<double>(count) / seconds(last - start);
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
      "are not Kafka's)\nat %s: %zu-byte messages, median of %d runs\n\n",
      bootstrap().c_str(), kPayloadBytes, options.runs);
  struct Measure {
    const char* name;
    bool read;
    std::vector<double> raw, bus, ratios;
  };
  std::vector<Measure> measures{{"produce, acks=all, idempotent", false, {}, {}, {}},
                                {"produce and consume, end to end", true, {}, {}, {}}};
  for (int run = 0; run < options.runs; ++run) {
    for (auto& m : measures) {
      m.raw.push_back(raw_run(options.messages, m.read));
      m.bus.push_back(bus_run(options.messages, options.window, m.read));
      m.ratios.push_back(m.bus.back() / m.raw.back());
    }
  }
  std::printf("| measure (msg/s)                 | raw librdkafka |     bus | bus/raw |\n");
  std::printf("|---------------------------------|---------------:|--------:|--------:|\n");
  for (const auto& m : measures) {
    std::printf("| %-31s | %14.0f | %7.0f | %6.2fx |\n", m.name, median(m.raw), median(m.bus),
                median(m.ratios));
  }
  std::printf(
      "\nbus/raw is the median of the per-run ratios (each run measures both back to back).\n");
  return 0;
}
