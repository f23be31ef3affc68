#pragma once
// What the NATS backend shares between its files: nats.c status codes as our errors, and our
// messages as nats.c messages (CloudEvents binary mode in NATS headers) and back.
#include <nats/nats.h>

#include <memory>
#include <string>
#include <string_view>

#include "marty/messaging/message.hpp"
#include "marty/messaging/result.hpp"

namespace marty::messaging::nats {

inline constexpr std::string_view kBackendName = "nats";

/// An error for a failed nats.c call: our code for `status`, `what` failed, and nats.c's own
/// text (its last error on this thread, which names the cause better than the status).
Error status_error(natsStatus status, std::string_view what, int jetstream_code = 0);

/// Deletes a nats.c message when the owner goes.
struct NatsMsgDeleter {
  void operator()(natsMsg* msg) const noexcept { natsMsg_Destroy(msg); }
};
using NatsMsgPtr = std::unique_ptr<natsMsg, NatsMsgDeleter>;

/// `message` as a nats.c message on `subject` (with `reply`, the reply subject, unless
/// empty): CloudEvents attributes as `ce-*` headers, the payload as the body.
/// `invalid_argument` for what NATS cannot carry.
Result<NatsMsgPtr> to_nats(const Message& message, const std::string& subject,
                           const std::string& reply = {});

/// A received nats.c message as ours. Messages with CloudEvents headers are decoded from them
/// (a malformed attribute is `invalid_argument` naming it); messages from plain NATS
/// publishers (no `ce-specversion`) are taken as they are, typed by their subject. The subject
/// is the NATS subject; `reply_to` is the message's reply subject unless `jetstream`, where
/// the reply subject is the server's acknowledgement address, not a reply address.
Result<Message> from_nats(natsMsg* msg, bool jetstream);

/// Where a JetStream message stands, from its acknowledgement subject
/// ("$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>").
struct JetStreamInfo {
  int delivered = 1;
  std::uint64_t stream_sequence = 0;
  std::int64_t timestamp_ns = 0;  ///< when the stream stored it (UTC, since the epoch)
};
std::optional<JetStreamInfo> parse_ack_subject(std::string_view reply);

}  // namespace marty::messaging::nats
