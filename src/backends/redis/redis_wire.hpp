#pragma once
// Our messages in Redis, and back: Stream entries carry CloudEvents binary mode (one field per
// attribute, the payload in `data`); pub/sub messages carry structured CloudEvents JSON.
#include <string>
#include <string_view>
#include <vector>

#include "marty/messaging/message.hpp"
#include "marty/messaging/result.hpp"

namespace marty::messaging::redis {

/// The field of a Stream entry that holds the payload.
inline constexpr std::string_view kDataField = "data";

/// `message` as a Stream entry's fields, flattened: name, value, name, value...
std::vector<std::string> entry_fields(const Message& message);

/// A Stream entry (flattened fields) as a message on `subject`. An entry without its
/// CloudEvents attributes or its `data` field, or with a malformed attribute, is
/// `invalid_argument` naming what was wrong.
Result<Message> decode_entry(const std::vector<std::string>& fields, const std::string& subject);

/// What a pub/sub channel carries for `message`.
std::string channel_payload(const Message& message);
/// A pub/sub message as ours: structured CloudEvents when it is one, else a message from a
/// plain Redis publisher, typed by its subject (`invalid_argument` only for a CloudEvent with
/// a malformed attribute).
Result<Message> decode_channel_payload(std::string payload, const std::string& subject);

/// The PSUBSCRIBE glob for a subject pattern with `*`/`>` wildcards. Redis globs match across
/// dots, so the glob is wider than the pattern: receivers still check subject::matches.
std::string glob_for(std::string_view prefix, std::string_view pattern);

}  // namespace marty::messaging::redis
