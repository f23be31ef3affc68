#pragma once
// The Lua scripts that send commands and queries (internal to the Redis backend; the Redis
// bench's raw baseline runs the same query script, so that both sides do the same work). Each
// runs atomically on the server, so a check and the append it guards cannot be split by another
// client; each is sent as kAppend followed by its body.
#include <string>
#include <string_view>

namespace marty::messaging::redis::scripts {

// Appends the fields ARGV[from..] to `key`, trimmed to about `maxlen` entries (0: untrimmed).
inline constexpr std::string_view kAppend = R"lua(
local function append(key, maxlen, from)
  if tonumber(maxlen) > 0 then
    return redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', unpack(ARGV, from))
  end
  return redis.call('XADD', key, '*', unpack(ARGV, from))
end
)lua";

// An at-least-once event: appended to its Stream when a consumer group reads it (the Stream
// exists only while groups do), and published on its channel for pub/sub and wildcard
// subscribers. KEYS: stream. ARGV: channel, maxlen, channel payload, fields...
inline constexpr std::string_view kPublishEventScript = R"lua(
local appended = 0
if redis.call('EXISTS', KEYS[1]) == 1 then
  append(KEYS[1], ARGV[2], 4)
  appended = 1
end
redis.call('PUBLISH', ARGV[1], ARGV[3])
return appended
)lua";

// A command: appended only when a consumer group (a service) will take it. nil otherwise.
// KEYS: stream. ARGV: maxlen, fields...
inline constexpr std::string_view kSendCommandScript = R"lua(
if redis.call('EXISTS', KEYS[1]) == 0 or #redis.call('XINFO', 'GROUPS', KEYS[1]) == 0 then
  return false
end
return append(KEYS[1], ARGV[1], 2)
)lua";

// A query: appended only when a responder looks live, nil otherwise. A group is live when one
// of its consumers touched the Stream within the last ARGV[2] ms (the bus's readers block for
// at most block_timeout at a time and reclaim in between), or when it has read every entry and
// holds none longer than that: a reader blocked in XREADGROUP, as Redis documents responders,
// is otherwise invisible on Redis 7.0, which neither refreshes a consumer's idle time on a
// blocking read that returns nothing nor makes the consumer before its first entry. The cost:
// the first query after the last responder stopped waits for its deadline (it stays unread, so
// the next one is refused at once). KEYS: stream. ARGV: maxlen, liveness ms, fields...
inline constexpr std::string_view kSendQueryScript = R"lua(
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local live = false
local limit = tonumber(ARGV[2])
local last_id = nil
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local fields = {}
  for i = 1, #group, 2 do fields[group[i]] = group[i + 1] end
  for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], fields['name'])) do
    for i = 1, #consumer, 2 do
      if consumer[i] == 'idle' and consumer[i + 1] < limit then live = true end
    end
  end
  if not live then
    if last_id == nil then
      local info = redis.call('XINFO', 'STREAM', KEYS[1])
      for i = 1, #info, 2 do
        if info[i] == 'last-generated-id' then last_id = info[i + 1] end
      end
    end
    if fields['last-delivered-id'] == last_id and
       #redis.call('XPENDING', KEYS[1], fields['name'], 'IDLE', limit, '-', '+', 1) == 0 then
      live = true
    end
  end
  if live then break end
end
if not live then return false end
return append(KEYS[1], ARGV[1], 3)
)lua";

/// The query script as the backend loads it: kAppend, then kSendQueryScript.
inline std::string query_script() {
  return std::string(kAppend) + std::string(kSendQueryScript);
}

}  // namespace marty::messaging::redis::scripts
