#pragma once

// librdkafka handles and their configuration: what the producer and the consumers share.
#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "marty/messaging/kafka_backend.hpp"
#include "marty/messaging/message.hpp"
#include "marty/messaging/result.hpp"

namespace marty::messaging::kafka {

struct HandleDeleter {
  void operator()(rd_kafka_t* handle) const noexcept { rd_kafka_destroy(handle); }
};
using HandlePtr = std::unique_ptr<rd_kafka_t, HandleDeleter>;

struct ConfDeleter {
  void operator()(rd_kafka_conf_t* conf) const noexcept { rd_kafka_conf_destroy(conf); }
};
using ConfPtr = std::unique_ptr<rd_kafka_conf_t, ConfDeleter>;

struct PartitionListDeleter {
  void operator()(rd_kafka_topic_partition_list_t* list) const noexcept {
    rd_kafka_topic_partition_list_destroy(list);
  }
};
using PartitionListPtr = std::unique_ptr<rd_kafka_topic_partition_list_t, PartitionListDeleter>;

/// Checks the settings librdkafka does not check itself (it checks every property when a
/// client is made). `invalid_argument` naming the field.
Result<void> validate(const KafkaConfig& config);

enum class ClientRole { producer, consumer };

/// A client configuration: connection and security settings, what `role` needs (idempotence
/// and acks=all for the producer; manual offset commits for consumers), then the user's
/// properties. librdkafka's logs go to our logger. A property librdkafka refuses is
/// `invalid_argument` naming it.
Result<ConfPtr> make_conf(const KafkaConfig& config, ClientRole role);

/// Milliseconds left until `deadline` as librdkafka's timeouts take them (0 once it passed).
inline int milliseconds_until(std::chrono::steady_clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  return static_cast<int>(std::clamp<std::int64_t>(left.count(), 0, INT32_MAX));
}

/// A client made from `conf` (which it takes). `invalid_argument` with librdkafka's reason.
Result<HandlePtr> make_client(ConfPtr conf, ClientRole role);

/// Every record of `topic` (`partitions` partitions), from the earliest to the end as it is at
/// the call, decoded as messages of `subject`; records that do not decode are logged and passed
/// over. Reads with a consumer of its own that joins no group and commits nothing. Blocking;
/// `deadline_exceeded` if the end is not reached by `deadline`.
Result<std::vector<Message>> read_whole_topic(const KafkaConfig& config, const std::string& topic,
                                              int partitions, std::string_view subject,
                                              std::chrono::steady_clock::time_point deadline);

}  // namespace marty::messaging::kafka
