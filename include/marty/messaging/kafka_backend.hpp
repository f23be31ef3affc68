#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "marty/messaging/backend.hpp"

/// The Kafka backend, on librdkafka. Link `marty::messaging_kafka`.
///
/// Where each kind of message goes (docs/kafka-backend.md has the whole picture):
/// - every subject is a topic of its own (`topic_prefix` + subject); a message's partition_key
///   is its Kafka key, so messages with one key stay in one partition, in order.
/// - events: one consumer group per subscriber group and subject; a subscriber on its own reads
///   every partition without a group, from the end of the log when it subscribes.
/// - commands and queries: the service's consumer group; query replies come back on the
///   asking bus's reply topic, and queries whose deadline has passed are skipped.
/// - bus streams: topics replayable from the earliest offset, an offset or a time.
/// Messages are CloudEvents in binary mode (`ce_*` headers, the payload as the value).
namespace marty::messaging::kafka {

/// Validated at connect(): a bad value is `invalid_argument` naming the field (or the
/// librdkafka property).
struct KafkaConfig {
  /// "host:port,host:port": where the client finds the cluster.
  std::string bootstrap_servers;
  std::string client_id = "marty-messaging";
  /// librdkafka's `security.protocol`: plaintext, ssl, sasl_plaintext or sasl_ssl.
  std::string security_protocol = "plaintext";
  /// SASL (with sasl_*): mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), user and password.
  std::string sasl_mechanism;
  std::string sasl_username;
  std::string sasl_password;
  /// TLS (with ssl and sasl_ssl): CA bundle, client certificate and key (PEM files).
  std::string ssl_ca_location;
  std::string ssl_certificate_location;
  std::string ssl_key_location;
  std::string ssl_key_password;
  /// Any librdkafka property (https://github.com/confluentinc/librdkafka/blob/master/
  /// CONFIGURATION.md), applied to every client this backend makes after the settings above.
  /// The backend owns offset commits and group names: `enable.auto.commit`,
  /// `enable.auto.offset.store` and `group.id` are refused here.
  std::map<std::string, std::string> properties;
  /// Properties for the producer only, or for the consumers only (applied after `properties`).
  std::map<std::string, std::string> producer_properties;
  std::map<std::string, std::string> consumer_properties;

  /// Prefix of every topic and consumer group ("marty." → topic "marty.events.order_placed").
  std::string topic_prefix;
  /// How missing topics come to exist: created with the partitions and replication below
  /// through the admin API (`admin`), by the brokers' own auto-creation on first use
  /// (`broker_auto_create`: `auto.create.topics.enable` must be on; it is on in librdkafka's
  /// mock cluster, which has no admin API), or not at all (`none`: a missing topic is
  /// `not_found`).
  enum class TopicCreation { admin, broker_auto_create, none };
  TopicCreation topic_creation = TopicCreation::admin;
  int topic_partitions = 6;
  /// -1: the cluster's default.
  int topic_replication_factor = -1;

  /// librdkafka's `session.timeout.ms`: how long a silent group member keeps its partitions.
  std::chrono::milliseconds session_timeout{45'000};
  /// Deliveries one subscription holds unsettled (handed out or waiting for their key); fetching
  /// pauses at this bound and resumes below half of it.
  int max_in_flight = 1'000;
  /// How often a subscription commits the offsets its settled messages have made safe.
  std::chrono::milliseconds commit_interval{200};
  /// How long a consumer losing partitions in a rebalance waits for their in-flight messages
  /// to be settled (and their offsets committed) before it lets them go; what is still
  /// unsettled then is delivered again to the partitions' new owner.
  std::chrono::milliseconds rebalance_drain{5'000};
  /// librdkafka's `linger.ms`: how long the producer gathers messages into a batch.
  std::chrono::milliseconds linger{5};
  /// Time allowed for metadata, topic creation and offset lookups during connect() and
  /// subscribe().
  std::chrono::milliseconds request_timeout{10'000};
};

/// A Kafka backend. Thread-safe. It owns one idempotent producer (acks=all) and one consumer per
/// subscription, each with a thread of its own.
std::shared_ptr<Backend> make_backend(KafkaConfig config);

}  // namespace marty::messaging::kafka
