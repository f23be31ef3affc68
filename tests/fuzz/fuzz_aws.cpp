// What the AWS backends read from SQS: a message's attributes ("name=value" lines) with its body
// after an empty line. Decoded or refused, never a crash; a decoded message sent back as AWS
// carries it decodes to the same message.
#include "../../src/backends/aws/aws_wire.hpp"
#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace marty::messaging;
  const std::string_view text = fuzz::as_text(data, size);
  const std::size_t blank = text.find("\n\n");
  aws::Attributes attributes;
  for (const std::string& line : fuzz::split(text.substr(0, blank), '\n')) {
    const std::size_t equals = line.find('=');
    if (equals != std::string::npos) {
      attributes.emplace_back(line.substr(0, equals), line.substr(equals + 1));
    }
  }
  std::string body = blank == std::string_view::npos ? "" : std::string(text.substr(blank + 2));
  auto decoded = aws::from_aws("events.fuzzed", std::move(body), attributes);
  if (!decoded) return 0;
  auto carried = aws::to_aws(*decoded);
  auto again = aws::from_aws("events.fuzzed", carried.body, carried.attributes);
  fuzz::require_decoded(again);
  fuzz::require_same(*decoded, *again);
  return 0;
}
