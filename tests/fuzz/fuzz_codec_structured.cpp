// CloudEvents structured mode: any text is decoded or refused, never a crash; what decodes
// encodes and decodes again to the same message.
#include "fuzz_support.hpp"
#include "marty/messaging/codec.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace marty::messaging;
  auto decoded = codec::decode_structured(fuzz::as_text(data, size));
  if (!decoded) return 0;
  auto again = codec::decode_structured(codec::encode_structured(*decoded));
  fuzz::require_decoded(again);
  fuzz::require_same(*decoded, *again);
  return 0;
}
