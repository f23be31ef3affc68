// The Python original's {"data", "metadata"} envelope: decoded or refused, never a crash; what
// decodes encodes and decodes again to the same message.
#include "fuzz_support.hpp"
#include "marty/messaging/codec.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace marty::messaging;
  auto decoded = codec::decode_envelope(fuzz::as_text(data, size));
  if (!decoded) return 0;
  auto encoded = codec::encode_envelope(*decoded);
  if (!encoded) return 0;  // a payload the envelope cannot carry is refused, not mangled
  auto again = codec::decode_envelope(*encoded);
  fuzz::require_decoded(again);
  fuzz::require_same(*decoded, *again);
  return 0;
}
