#pragma once
// What the raw baselines need to send the bus's own bytes: its payload, its default source, its
// time text and its CloudEvents binary-mode headers, with a fresh id and time per message.
#include <chrono>
#include <string>
#include <vector>

#include <asio/awaitable.hpp>

#include "bench_support.hpp"
#include "marty/messaging.hpp"

namespace marty::messaging::bench {

/// The payload of every measure: a 128-byte JSON object, serialized once.
inline const Message& prototype() {
  static const Message message =
      Message::from_json(Json{{"p", std::string(kPayloadBytes - 8, 'x')}});
  return message;
}

/// The bus's default `source` (EventBusOptions::service_name).
inline const std::string& bus_source() {
  static const std::string source = EventBusOptions().service_name;
  return source;
}

/// RFC 3339 UTC with microseconds, as the bus writes a message's time; the text up to the
/// second is made once a second, the microseconds written in place.
class TimeText {
 public:
  const std::string& now() {
    const auto micros =
        std::chrono::duration_cast<std::chrono::microseconds>(Clock::now().time_since_epoch())
            .count();
    if (micros / 1'000'000 != second_) {
      second_ = micros / 1'000'000;
      text_ = format_rfc3339(Clock::time_point(std::chrono::seconds(second_)));
    }
    auto fraction = micros % 1'000'000;
    char* digits = text_.data() + text_.size() - 7;  // "...SS.ffffffZ"
    for (int i = 5; i >= 0; --i, fraction /= 10) digits[i] = static_cast<char>('0' + fraction % 10);
    return text_;
  }
  /// The whole seconds of the last now().
  long long seconds() const { return second_; }

 private:
  long long second_ = -1;
  std::string text_;
};

/// The binary-mode headers the bus writes on a message of `type` (NATS `ce-*`, Kafka `ce_*`
/// with `options`), in its order, with the id and time made fresh for each message (next()).
class CloudEventHeaders {
 public:
  explicit CloudEventHeaders(const std::string& type, const codec::BinaryModeOptions& options = {})
      : id_name_(options.attribute_prefix + "id"), time_name_(options.attribute_prefix + "time") {
    Message message = prototype();
    auto& metadata = message.mutable_metadata();
    metadata.message_type = type;
    metadata.source = bus_source();
    metadata.message_id = make_uuid_v7();
    metadata.time = Clock::now();
    headers_ = codec::encode_binary(message, options).headers;
  }
  const codec::Headers& next() {
    for (auto& [name, value] : headers_) {
      if (name == id_name_) {
        value = make_uuid_v7();
        id_ = &value;
      } else if (name == time_name_) {
        value = time_.now();
      }
    }
    return headers_;
  }
  /// The id of the last next().
  const std::string& id() const { return *id_; }

 private:
  std::string id_name_, time_name_;
  codec::Headers headers_;
  const std::string* id_ = nullptr;
  TimeText time_;
};

/// Asks `count` queries "ping" of `service` one at a time (and 10% more first, to warm up),
/// each with a 128-byte JSON body, and appends each round trip's microseconds to `*micros`.
inline asio::awaitable<Result<void>> ask_round_trips(UnifiedEventBus* bus, std::string service,
                                                     std::size_t count,
                                                     std::vector<double>* micros) {
  const std::string padding(kPayloadBytes - 16, 'x');
  for (std::size_t i = 0; i < count + count / 10; ++i) {
    Json request{{"n", i}, {"p", padding}};
    const auto start = Steady::now();
    auto reply =
        co_await bus->query("ping", std::move(request), service, std::chrono::milliseconds(2'000));
    if (!reply) co_return reply.error();
    if (i >= count / 10) micros->push_back(seconds_since(start) * 1e6);
  }
  co_return ok();
}

}  // namespace marty::messaging::bench
