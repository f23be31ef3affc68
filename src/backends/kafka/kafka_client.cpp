#include "kafka_client.hpp"

#include <algorithm>
#include <cstdint>
#include <string>

#include <spdlog/spdlog.h>

#include "kafka_wire.hpp"
#include "marty/messaging/detail/log.hpp"

namespace marty::messaging::kafka {
namespace {

using marty::messaging::detail::logger;

// librdkafka's syslog levels onto ours. Its errors are mostly a broker that cannot be reached
// for now, which it retries itself: warnings, not errors.
void on_log(const rd_kafka_t* handle, int level, const char* facility, const char* text) {
  const char* client = rd_kafka_name(handle);
  if (level <= 4) {
    logger().warn("kafka {} {}: {}", client, facility, text);
  } else if (level <= 6) {
    logger().info("kafka {} {}: {}", client, facility, text);
  } else {
    logger().debug("kafka {} {}: {}", client, facility, text);
  }
}

void on_error(rd_kafka_t* handle, int err, const char* reason, void*) {
  const auto code = static_cast<rd_kafka_resp_err_t>(err);
  if (code == RD_KAFKA_RESP_ERR__FATAL) {
    char text[512];
    const rd_kafka_resp_err_t cause = rd_kafka_fatal_error(handle, text, sizeof text);
    logger().error("kafka {}: fatal error {}: {}", rd_kafka_name(handle), rd_kafka_err2name(cause),
                   text);
    return;
  }
  // librdkafka has logged the cause already; only "no broker at all" is worth saying again.
  if (code == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
    logger().warn("kafka {}: {}", rd_kafka_name(handle), reason);
  } else {
    logger().debug("kafka {}: {} ({})", rd_kafka_name(handle), reason, rd_kafka_err2name(code));
  }
}

Result<void> set(rd_kafka_conf_t* conf, const std::string& name, const std::string& value) {
  char reason[512];
  if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), reason, sizeof reason) !=
      RD_KAFKA_CONF_OK) {
    return kafka_error(errc::invalid_argument, "property '" + name + "': " + reason);
  }
  return ok();
}

std::string millis(std::chrono::milliseconds duration) {
  return std::to_string(duration.count());
}

}  // namespace

Result<void> validate(const KafkaConfig& c) {
  auto invalid = [](std::string what) { return kafka_error(errc::invalid_argument, what); };
  if (c.bootstrap_servers.find_first_not_of(" ,") == std::string::npos) {
    return invalid("bootstrap_servers is empty: name at least one broker as host:port");
  }
  for (const char* owned : {"enable.auto.commit", "enable.auto.offset.store", "group.id"}) {
    if (c.properties.count(owned) != 0 || c.consumer_properties.count(owned) != 0) {
      return invalid(std::string("property '") + owned +
                     "' is set by the backend itself (offsets are committed once handlers "
                     "succeed; groups come from subscriptions)");
    }
  }
  if (!c.topic_prefix.empty()) {
    if (auto topic = topic_for(c.topic_prefix, "x"); !topic) {
      return invalid("topic_prefix '" + c.topic_prefix + "' has a character Kafka cannot carry");
    }
  }
  if (c.topic_partitions < 1) return invalid("topic_partitions must be at least 1");
  if (c.topic_replication_factor == 0 || c.topic_replication_factor < -1) {
    return invalid("topic_replication_factor must be -1 (the cluster's default) or at least 1");
  }
  if (c.session_timeout.count() < 1) return invalid("session_timeout must be positive");
  if (c.max_in_flight < 1) return invalid("max_in_flight must be at least 1");
  if (c.commit_interval.count() < 1) return invalid("commit_interval must be positive");
  if (c.rebalance_drain.count() < 0) return invalid("rebalance_drain must not be negative");
  if (c.linger.count() < 0) return invalid("linger must not be negative");
  if (c.request_timeout.count() < 1) return invalid("request_timeout must be positive");
  return ok();
}

Result<ConfPtr> make_conf(const KafkaConfig& c, ClientRole role) {
  ConfPtr conf(rd_kafka_conf_new());
  std::vector<std::pair<std::string, std::string>> settings{
      {"bootstrap.servers", c.bootstrap_servers},
      {"client.id", c.client_id},
      {"security.protocol", c.security_protocol},
      {"allow.auto.create.topics",
       c.topic_creation == KafkaConfig::TopicCreation::broker_auto_create ? "true" : "false"},
  };
  for (const auto& [name, value] :
       {std::pair{"sasl.mechanisms", &c.sasl_mechanism},
        std::pair{"sasl.username", &c.sasl_username}, std::pair{"sasl.password", &c.sasl_password},
        std::pair{"ssl.ca.location", &c.ssl_ca_location},
        std::pair{"ssl.certificate.location", &c.ssl_certificate_location},
        std::pair{"ssl.key.location", &c.ssl_key_location},
        std::pair{"ssl.key.password", &c.ssl_key_password}}) {
    if (!value->empty()) settings.emplace_back(name, *value);
  }
  if (role == ClientRole::producer) {
    settings.insert(
        settings.end(),
        {{"enable.idempotence", "true"}, {"acks", "all"}, {"linger.ms", millis(c.linger)}});
  } else {
    // Heartbeats well inside the session, so that members learn of a rebalance quickly.
    const auto heartbeat = std::clamp(c.session_timeout / 10, std::chrono::milliseconds(100),
                                      std::chrono::milliseconds(3'000));
    settings.insert(settings.end(), {{"enable.auto.commit", "false"},
                                     {"enable.auto.offset.store", "false"},
                                     {"enable.partition.eof", "false"},
                                     {"session.timeout.ms", millis(c.session_timeout)},
                                     {"heartbeat.interval.ms", millis(heartbeat)}});
  }
  for (const auto& [name, value] : settings) {
    if (auto done = set(conf.get(), name, value); !done) return std::move(done).error();
  }
  for (const auto* properties :
       {&c.properties,
        role == ClientRole::producer ? &c.producer_properties : &c.consumer_properties}) {
    for (const auto& [name, value] : *properties) {
      if (auto done = set(conf.get(), name, value); !done) return std::move(done).error();
    }
  }
  rd_kafka_conf_set_log_cb(conf.get(), &on_log);
  rd_kafka_conf_set_error_cb(conf.get(), &on_error);
  return conf;
}

Result<HandlePtr> make_client(ConfPtr conf, ClientRole role) {
  char reason[512];
  rd_kafka_t* handle =
      rd_kafka_new(role == ClientRole::producer ? RD_KAFKA_PRODUCER : RD_KAFKA_CONSUMER, conf.get(),
                   reason, sizeof reason);
  if (handle == nullptr) {
    return kafka_error(errc::invalid_argument, std::string("cannot make a client: ") + reason);
  }
  (void)conf.release();  // the client owns it now
  return HandlePtr(handle);
}

Result<std::vector<Message>> read_whole_topic(const KafkaConfig& config, const std::string& topic,
                                              int partitions, std::string_view subject,
                                              std::chrono::steady_clock::time_point deadline) {
  using std::chrono::steady_clock;
  // Each wait is bounded by a minute as well, however far the deadline.
  auto left_ms = [deadline] { return std::min(milliseconds_until(deadline), 60'000); };
  auto conf = make_conf(config, ClientRole::consumer);
  if (!conf) return std::move(conf).error();
  char reason[512];
  const std::string group = config.topic_prefix + "marty-reader-" + make_uuid_v7();
  rd_kafka_conf_set(conf->get(), "group.id", group.c_str(), reason, sizeof reason);
  auto handle = make_client(std::move(*conf), ClientRole::consumer);
  if (!handle) return std::move(handle).error();
  rd_kafka_t* rk = handle->get();
  rd_kafka_poll_set_consumer(rk);

  // Where each partition ends now: what is appended later is not waited for.
  std::vector<std::int64_t> ends(static_cast<std::size_t>(partitions), 0);
  PartitionListPtr assignment(rd_kafka_topic_partition_list_new(partitions));
  std::size_t unfinished = 0;
  for (int p = 0; p < partitions; ++p) {
    std::int64_t low = 0;
    std::int64_t high = 0;
    const auto err = rd_kafka_query_watermark_offsets(rk, topic.c_str(), p, &low, &high, left_ms());
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return kafka_error(err, "reading the end of " + topic + "/" + std::to_string(p));
    }
    if (high <= low) continue;
    ends[static_cast<std::size_t>(p)] = high;
    rd_kafka_topic_partition_list_add(assignment.get(), topic.c_str(), p)->offset = low;
    ++unfinished;
  }
  std::vector<Message> out;
  if (unfinished == 0) return out;
  if (auto err = rd_kafka_assign(rk, assignment.get()); err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return kafka_error(err, "assigning the partitions of " + topic);
  }
  while (unfinished > 0) {
    if (steady_clock::now() >= deadline) {
      (void)rd_kafka_assign(rk, nullptr);
      return kafka_error(errc::deadline_exceeded,
                         "reading " + topic + ": " + std::to_string(unfinished) +
                             " partition(s) not read to their end by the deadline");
    }
    rd_kafka_message_t* record = rd_kafka_consumer_poll(rk, std::min(100, left_ms()));
    if (record == nullptr) continue;
    std::unique_ptr<rd_kafka_message_t, void (*)(rd_kafka_message_t*)> owned(
        record, &rd_kafka_message_destroy);
    if (record->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (record->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        logger().warn("reading {}: {}", topic, rd_kafka_err2str(record->err));
      }
      continue;
    }
    const auto p = static_cast<std::size_t>(record->partition);
    if (p >= ends.size() || record->offset >= ends[p]) continue;
    auto message = from_record(*record, subject);
    if (message) {
      out.push_back(std::move(*message));
    } else {
      logger().warn("record {}/{} of {} is not a message, passed over: {}", record->partition,
                    record->offset, topic, message.error().describe());
    }
    if (record->offset + 1 >= ends[p]) --unfinished;
  }
  (void)rd_kafka_assign(rk, nullptr);
  rd_kafka_consumer_close(rk);
  return out;
}

}  // namespace marty::messaging::kafka
