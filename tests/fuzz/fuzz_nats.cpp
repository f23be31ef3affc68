// What the NATS backend reads: a message (subject and reply lines, header lines "name:value",
// then after an empty line the body) and a JetStream acknowledgement subject (the reply line).
// Decoded or refused, never a crash; what decodes is published (as the backend writes it) and
// decodes again to the same message.
#include "../../src/backends/nats/nats_wire.hpp"
#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace marty::messaging;
  // As in the backend, where a connection has opened the library: nats.c frees some messages
  // through its collector, which only nats_Open sets up.
  static const bool opened = nats_Open(-1) == NATS_OK;
  if (!opened) return 0;
  const std::string_view text = fuzz::as_text(data, size);
  const std::size_t blank = text.find("\n\n");
  const std::string body =
      blank == std::string_view::npos ? "" : std::string(text.substr(blank + 2));
  auto lines = fuzz::split(text.substr(0, blank), '\n');
  const std::string subject = lines.front();
  const std::string reply = lines.size() > 1 ? lines[1] : "";
  (void)nats::parse_ack_subject(reply);
  natsMsg* raw = nullptr;
  if (natsMsg_Create(&raw, subject.c_str(), reply.empty() ? nullptr : reply.c_str(), body.data(),
                     static_cast<int>(body.size())) != NATS_OK) {
    return 0;  // nats.c refuses it (an empty subject): it could never arrive
  }
  nats::NatsMsgPtr msg(raw);
  for (std::size_t i = 2; i < lines.size(); ++i) {
    const std::size_t colon = lines[i].find(':');
    if (colon == std::string::npos || colon == 0) continue;
    (void)natsMsgHeader_Add(msg.get(), lines[i].substr(0, colon).c_str(),
                            lines[i].substr(colon + 1).c_str());
  }
  auto decoded = nats::from_nats(msg.get(), false);
  if (!decoded) return 0;
  auto sent =
      nats::to_nats(*decoded, std::string(decoded->subject()), decoded->metadata().reply_to);
  if (!sent) return 0;  // what NATS cannot carry is refused when sending, by name
  auto again = nats::from_nats(sent->get(), false);
  // nats.c 3.4 may read one header as another whose name it begins ("ce-id" as "ce-iddd");
  // such a message is refused by name rather than misread, on either side.
  if (!again && again.error().message().find("reads as header") != std::string::npos) return 0;
  fuzz::require_decoded(again);
  fuzz::require_same(*decoded, *again);
  return 0;
}
