// What the Redis backend reads: a Stream entry's fields (NUL-separated here) and a pub/sub
// channel payload. Decoded or refused, never a crash; a decoded entry written back as an entry
// decodes to the same message.
#include "../../src/backends/redis/redis_wire.hpp"
#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace marty::messaging;
  const std::string_view text = fuzz::as_text(data, size);
  const std::string subject = "events.fuzzed";
  if (auto entry = redis::decode_entry(fuzz::split(text, '\0'), subject); entry) {
    auto again = redis::decode_entry(redis::entry_fields(*entry), subject);
    fuzz::require_decoded(again);
    fuzz::require_same(*entry, *again);
  }
  if (auto pushed = redis::decode_channel_payload(std::string(text), subject); pushed) {
    auto again = redis::decode_channel_payload(redis::channel_payload(*pushed), subject);
    fuzz::require_decoded(again);
    fuzz::require_same(*pushed, *again);
  }
  return 0;
}
