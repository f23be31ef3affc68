// CloudEvents binary mode as every broker binding uses it: the input is header lines
// ("name:value") then, after an empty line, the body. Decoded or refused, never a crash; what
// decodes encodes and decodes again to the same message.
#include "fuzz_support.hpp"
#include "marty/messaging/codec.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace marty::messaging;
  const std::string_view text = fuzz::as_text(data, size);
  const std::size_t blank = text.find("\n\n");
  const std::string_view head = text.substr(0, blank);
  const std::string body =
      blank == std::string_view::npos ? "" : std::string(text.substr(blank + 2));
  codec::Headers headers;
  for (const std::string& line : fuzz::split(head, '\n')) {
    const std::size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    headers.emplace_back(line.substr(0, colon), line.substr(colon + 1));
  }
  auto decoded = codec::decode_binary(headers, std::make_shared<const Payload>(body));
  if (!decoded) return 0;
  auto encoded = codec::encode_binary(*decoded);
  auto again = codec::decode_binary(encoded.headers, encoded.body);
  fuzz::require_decoded(again);
  fuzz::require_same(*decoded, *again);
  return 0;
}
