#pragma once
// Our messages as AMQP 0-9-1 messages and back: CloudEvents binary mode with the AMQP
// binding's `cloudEvents:` header prefix, the standard properties filled as well (content
// type, message id, correlation id, reply-to, expiration, priority, timestamp) so that plain
// AMQP clients see what they expect.
#include <amqp.h>

#include <memory>
#include <string>
#include <vector>

#include "marty/messaging/message.hpp"
#include "marty/messaging/result.hpp"

namespace marty::messaging::rabbitmq {

/// Headers of ours next to the CloudEvents attributes.
inline constexpr std::string_view kSubjectHeader = "x-marty-subject";         // the bus subject
inline constexpr std::string_view kAttemptHeader = "x-marty-attempt";         // deliveries so far
inline constexpr std::string_view kPublishTagHeader = "x-marty-publish-tag";  // for returns

/// An AMQP message ready for amqp_basic_publish. Its properties point into the object itself,
/// so it is neither copied nor moved.
class OutgoingMessage {
 public:
  /// Not an aggregate: GCC 12 miscompiles aggregate temporaries passed to coroutines
  /// (docs/decisions/0001).
  struct Extra {
    Extra() {}  // NOLINT(modernize-use-equals-default)
    bool persistent = true;
    std::string reply_to;           ///< overrides the metadata's
    std::string correlation_id;     ///< overrides the metadata's
    int attempt = 0;                ///< 0: not written
    std::uint64_t publish_tag = 0;  ///< 0: not written
    std::string expiration_ms;      ///< overrides the ttl
    bool keep_expiration = true;    ///< false: none (a retry copy waits by its queue's TTL)
  };
  OutgoingMessage(const Message& message, const Extra& extra);
  OutgoingMessage(const OutgoingMessage&) = delete;
  OutgoingMessage& operator=(const OutgoingMessage&) = delete;

  const amqp_basic_properties_t* properties() const noexcept { return &properties_; }
  amqp_bytes_t body() const noexcept;

 private:
  std::vector<std::pair<std::string, std::string>> headers_;
  std::vector<amqp_table_entry_t> entries_;
  std::string content_type_, message_id_, correlation_id_, reply_to_, expiration_, type_;
  std::shared_ptr<const Payload> payload_;
  amqp_basic_properties_t properties_{};
};

/// A delivered AMQP message as ours. `routing_key` is the subject unless the message names its
/// own (x-marty-subject). Messages with CloudEvents headers are decoded from them (a malformed
/// attribute is `invalid_argument` naming it); messages from plain AMQP publishers are taken as
/// they are, typed by their subject.
struct Incoming {
  Message message;
  int attempt = 1;
};
Result<Incoming> decode_amqp(const amqp_message_t& message, const std::string& routing_key,
                             bool redelivered);

/// A string as amqp_bytes_t (borrowed: the string must outlive it).
inline amqp_bytes_t bytes_of(const std::string& text) {
  return amqp_bytes_t{text.size(), const_cast<char*>(text.data())};
}
inline std::string text_of(amqp_bytes_t bytes) {
  return bytes.len == 0 ? std::string()
                        : std::string(static_cast<const char*>(bytes.bytes), bytes.len);
}

}  // namespace marty::messaging::rabbitmq
