// What the RabbitMQ backend reads: a delivered AMQP message. The input is "routing key" and
// property lines ("content_type:...", "message_id:...", "correlation_id:...", "reply_to:..."),
// then header lines ("h:name=value", "n:name=123" for a number, "b:name=1" for a boolean),
// then, after an empty line, the body. Decoded or refused, never a crash; what decodes is
// published (as the backend writes it) and decodes again to the same message.
#include <charconv>
#include <deque>

#include "../../src/backends/rabbitmq/rabbitmq_wire.hpp"
#include "fuzz_support.hpp"

namespace {

using namespace marty::messaging;

void require_same_incoming(const rabbitmq::Incoming& a, const rabbitmq::Incoming& b) {
  fuzz::require_same(a.message, b.message);
  if (a.message.subject() != b.message.subject() ||
      a.message.metadata().reply_to != b.message.metadata().reply_to) {
    std::fprintf(stderr, "round trip changed the subject or reply_to\n");
    std::abort();
  }
}

amqp_message_t from_properties(const amqp_basic_properties_t& properties, amqp_bytes_t body) {
  amqp_message_t message{};
  message.properties = properties;
  message.body = body;
  return message;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = fuzz::as_text(data, size);
  const std::size_t blank = text.find("\n\n");
  const std::string body =
      blank == std::string_view::npos ? "" : std::string(text.substr(blank + 2));
  const auto lines = fuzz::split(text.substr(0, blank), '\n');
  const std::string routing_key = lines.front();
  std::deque<std::string> texts;  // stable addresses for the borrowed bytes
  std::vector<amqp_table_entry_t> entries;
  amqp_basic_properties_t properties{};
  for (std::size_t i = 1; i < lines.size(); ++i) {
    const std::string& line = lines[i];
    const std::size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string kind = line.substr(0, colon);
    const std::string& value = texts.emplace_back(line.substr(colon + 1));
    auto set = [&](amqp_flags_t flag, amqp_bytes_t& field) {
      properties._flags |= flag;
      field = rabbitmq::bytes_of(value);
    };
    if (kind == "content_type") set(AMQP_BASIC_CONTENT_TYPE_FLAG, properties.content_type);
    if (kind == "message_id") set(AMQP_BASIC_MESSAGE_ID_FLAG, properties.message_id);
    if (kind == "correlation_id") set(AMQP_BASIC_CORRELATION_ID_FLAG, properties.correlation_id);
    if (kind == "reply_to") set(AMQP_BASIC_REPLY_TO_FLAG, properties.reply_to);
    if (kind != "h" && kind != "n" && kind != "b") continue;
    const std::size_t equals = value.find('=');
    if (equals == std::string::npos) continue;
    const std::string& name = texts.emplace_back(value.substr(0, equals));
    const std::string& field = texts.emplace_back(value.substr(equals + 1));
    amqp_table_entry_t entry{};
    entry.key = rabbitmq::bytes_of(name);
    if (kind == "h") {
      entry.value.kind = AMQP_FIELD_KIND_UTF8;
      entry.value.value.bytes = rabbitmq::bytes_of(field);
    } else if (kind == "n") {
      std::int64_t number = 0;
      std::from_chars(field.data(), field.data() + field.size(), number);
      entry.value.kind = AMQP_FIELD_KIND_I64;
      entry.value.value.i64 = number;
    } else {
      entry.value.kind = AMQP_FIELD_KIND_BOOLEAN;
      entry.value.value.boolean = field == "1" ? 1 : 0;
    }
    entries.push_back(entry);
  }
  if (!entries.empty()) {
    properties._flags |= AMQP_BASIC_HEADERS_FLAG;
    properties.headers = amqp_table_t{static_cast<int>(entries.size()), entries.data()};
  }
  auto decoded = rabbitmq::decode_amqp(from_properties(properties, rabbitmq::bytes_of(body)),
                                       routing_key, false);
  if (!decoded) return 0;
  rabbitmq::OutgoingMessage::Extra extra;
  rabbitmq::OutgoingMessage outgoing(decoded->message, extra);
  auto again = rabbitmq::decode_amqp(from_properties(*outgoing.properties(), outgoing.body()),
                                     std::string(decoded->message.subject()), false);
  fuzz::require_decoded(again);
  require_same_incoming(*decoded, *again);
  return 0;
}
