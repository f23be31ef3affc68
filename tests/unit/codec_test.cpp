#include "marty/messaging/codec.hpp"

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

namespace marty::messaging::codec {
namespace {

using namespace std::chrono_literals;

Clock::time_point at(std::string_view text) {
  auto time = parse_rfc3339(text);
  EXPECT_TRUE(time.has_value()) << text;
  return time.value_or(Clock::time_point{});
}

// Every field set, including headers that can and cannot be CloudEvents attribute names.
MessageMetadata full_metadata() {
  MessageMetadata metadata;
  metadata.message_id = "0191f3c4-8d2a-7b3e-9c4d-5e6f7a8b9c0d";
  metadata.message_type = "order_placed";
  metadata.source = "urn:service:orders";
  metadata.time = at("2026-11-26T21:23:31.123456Z");
  metadata.correlation_id = "corr-1";
  metadata.causation_id = "cause-1";
  metadata.reply_to = "replies.client-7";
  metadata.ttl = 30'000ms;
  metadata.priority = 7;
  metadata.partition_key = "customer-42";
  metadata.headers = {{"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
                      {"tracestate", "vendor=value"},
                      {"X-Custom", "custom value"},
                      {"Tenant_ID", "acme"},
                      {"ttl", "a header that shadows a mapped name"},
                      {"empty", ""}};
  return metadata;
}

void expect_same_metadata(const MessageMetadata& actual, const MessageMetadata& expected) {
  EXPECT_EQ(actual.message_id, expected.message_id);
  EXPECT_EQ(actual.message_type, expected.message_type);
  EXPECT_EQ(actual.source, expected.source);
  EXPECT_EQ(actual.time, expected.time);
  EXPECT_EQ(actual.correlation_id, expected.correlation_id);
  EXPECT_EQ(actual.causation_id, expected.causation_id);
  EXPECT_EQ(actual.reply_to, expected.reply_to);
  EXPECT_EQ(actual.content_type, expected.content_type);
  EXPECT_EQ(actual.ttl, expected.ttl);
  EXPECT_EQ(actual.priority, expected.priority);
  EXPECT_EQ(actual.partition_key, expected.partition_key);
  EXPECT_EQ(actual.headers, expected.headers);
}

std::optional<std::string> header_value(const Headers& headers, std::string_view name) {
  for (const auto& [key, value] : headers) {
    if (key == name) return value;
  }
  return std::nullopt;
}

void set_header(Headers& headers, std::string_view name, std::string value) {
  for (auto& [key, old] : headers) {
    if (key == name) {
      old = std::move(value);
      return;
    }
  }
  headers.emplace_back(name, std::move(value));
}

void erase_header(Headers& headers, std::string_view name) {
  std::erase_if(headers, [&](const auto& header) { return header.first == name; });
}

// Asserts `result` failed with invalid_argument and that its message mentions `field`.
template <class T>
void expect_invalid(const Result<T>& result, std::string_view field) {
  ASSERT_FALSE(result.has_value()) << "expected an error mentioning " << field;
  EXPECT_TRUE(result.error().is(errc::invalid_argument)) << result.error().describe();
  EXPECT_NE(result.error().message().find(field), std::string::npos)
      << "\"" << result.error().message() << "\" does not mention " << field;
}

Headers valid_binary_headers() {
  return {{"ce-specversion", "1.0"},
          {"ce-id", "id-1"},
          {"ce-source", "urn:test"},
          {"ce-type", "order_placed"},
          {"content-type", "application/json"}};
}

Json structured_event() {
  return Json{{"specversion", "1.0"},
              {"id", "id-1"},
              {"source", "urn:test"},
              {"type", "order_placed"},
              {"datacontenttype", "application/json"},
              {"data", {{"order", 1}}}};
}

// --- Binary mode ---------------------------------------------------------------------------

TEST(CodecBinaryTest, RoundTripsEveryField) {
  const Message original = Message::from_json({{"order_id", 42}}, full_metadata());
  const BinaryMessage wire = encode_binary(original);
  auto decoded = decode_binary(wire.headers, wire.body);
  ASSERT_TRUE(decoded.has_value()) << decoded.error().describe();
  expect_same_metadata(decoded->metadata(), original.metadata());
  EXPECT_EQ(decoded->bytes(), original.bytes());
}

TEST(CodecBinaryTest, WritesAttributesAsPrefixedHeaders) {
  const Message message = Message::from_json({{"order_id", 42}}, full_metadata());
  const Headers headers = encode_binary(message).headers;
  EXPECT_EQ(header_value(headers, "ce-specversion"), "1.0");
  EXPECT_EQ(header_value(headers, "ce-id"), "0191f3c4-8d2a-7b3e-9c4d-5e6f7a8b9c0d");
  EXPECT_EQ(header_value(headers, "ce-source"), "urn:service:orders");
  EXPECT_EQ(header_value(headers, "ce-type"), "order_placed");
  EXPECT_EQ(header_value(headers, "ce-time"), "2026-11-26T21:23:31.123456Z");
  EXPECT_EQ(header_value(headers, "content-type"), "application/json");
  EXPECT_EQ(header_value(headers, "ce-datacontenttype"), std::nullopt);
  EXPECT_EQ(header_value(headers, "ce-correlationid"), "corr-1");
  EXPECT_EQ(header_value(headers, "ce-causationid"), "cause-1");
  EXPECT_EQ(header_value(headers, "ce-replyto"), "replies.client-7");
  EXPECT_EQ(header_value(headers, "ce-ttl"), "30000");
  EXPECT_EQ(header_value(headers, "ce-priority"), "7");
  EXPECT_EQ(header_value(headers, "ce-partitionkey"), "customer-42");
  // Valid attribute names travel as their own extensions (the distributed-tracing extension).
  EXPECT_EQ(header_value(headers, "ce-traceparent"),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  EXPECT_EQ(header_value(headers, "ce-tracestate"), "vendor=value");
  EXPECT_EQ(header_value(headers, "ce-empty"), "");
  // The rest is packed, so names that are not attribute names or shadow mapped ones survive.
  const auto packed = header_value(headers, "ce-martyheaders");
  ASSERT_TRUE(packed.has_value());
  EXPECT_EQ(Json::parse(*packed), (Json{{"X-Custom", "custom value"},
                                        {"Tenant_ID", "acme"},
                                        {"ttl", "a header that shadows a mapped name"}}));
  EXPECT_EQ(header_value(headers, "ce-X-Custom"), std::nullopt);
}

TEST(CodecBinaryTest, OmitsUnsetOptionalAttributes) {
  MessageMetadata metadata;
  metadata.message_id = "id-1";
  metadata.message_type = "ping";
  const Headers headers = encode_binary(Message::from_bytes("x", metadata)).headers;
  EXPECT_EQ(header_value(headers, "ce-source"), "urn:marty-messaging");
  for (const char* absent : {"ce-time", "ce-correlationid", "ce-causationid", "ce-replyto",
                             "ce-ttl", "ce-priority", "ce-partitionkey", "ce-martyheaders"}) {
    EXPECT_EQ(header_value(headers, absent), std::nullopt) << absent;
  }
  EXPECT_EQ(headers.size(), 5u);  // specversion, id, source, type, content-type
}

TEST(CodecBinaryTest, GeneratesAnIdWhenEmpty) {
  MessageMetadata metadata;
  metadata.message_type = "ping";
  const BinaryMessage wire = encode_binary(Message::from_bytes("x", metadata));
  const auto id = header_value(wire.headers, "ce-id");
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(id->size(), 36u);
  EXPECT_TRUE(decode_binary(wire.headers, wire.body).has_value());
}

TEST(CodecBinaryTest, SharesTheBodyInBothDirections) {
  const Message message = Message::from_bytes(std::string(1024, 'z'), full_metadata());
  const BinaryMessage wire = encode_binary(message);
  EXPECT_EQ(wire.body.get(), message.payload().get());
  auto decoded = decode_binary(wire.headers, wire.body);
  ASSERT_TRUE(decoded.has_value()) << decoded.error().describe();
  EXPECT_EQ(decoded->payload().get(), message.payload().get());
}

TEST(CodecBinaryTest, UsesTheBindingsHeaderNames) {
  const BinaryModeOptions kafka{.attribute_prefix = "ce_", .content_type_header = "content-type"};
  const Message message = Message::from_json({{"k", "v"}}, full_metadata());
  const BinaryMessage wire = encode_binary(message, kafka);
  EXPECT_EQ(header_value(wire.headers, "ce_id"), "0191f3c4-8d2a-7b3e-9c4d-5e6f7a8b9c0d");
  EXPECT_EQ(header_value(wire.headers, "ce-id"), std::nullopt);
  auto decoded = decode_binary(wire.headers, wire.body, kafka);
  ASSERT_TRUE(decoded.has_value()) << decoded.error().describe();
  expect_same_metadata(decoded->metadata(), message.metadata());
  // Read with the wrong prefix, none of the attributes is seen.
  expect_invalid(decode_binary(wire.headers, wire.body), "specversion");
}

TEST(CodecBinaryTest, MatchesHeaderNamesCaseInsensitively) {
  const Headers headers{{"CE-SpecVersion", "1.0"},       {"Ce-Id", "id-1"},
                        {"ce-SOURCE", "urn:test"},       {"ce-type", "t"},
                        {"Content-Type", "text/plain"},  {"Ce-TraceParent", "00-abc"},
                        {"unrelated-header", "ignored"}, {"x-ce-id", "ignored too"}};
  auto decoded = decode_binary(headers, std::make_shared<const Payload>("hi"));
  ASSERT_TRUE(decoded.has_value()) << decoded.error().describe();
  EXPECT_EQ(decoded->id(), "id-1");
  EXPECT_EQ(decoded->metadata().source, "urn:test");
  EXPECT_EQ(decoded->metadata().content_type, "text/plain");
  EXPECT_EQ(decoded->metadata().headers,
            (std::map<std::string, std::string>{{"traceparent", "00-abc"}}));
  EXPECT_EQ(decoded->bytes(), "hi");
}

TEST(CodecBinaryTest, UnknownExtensionsBecomeHeaders) {
  Headers headers = valid_binary_headers();
  headers.emplace_back("ce-dataschema", "urn:schema");
  headers.emplace_back("ce-comexampleext", "value");
  auto decoded = decode_binary(headers, nullptr);
  ASSERT_TRUE(decoded.has_value()) << decoded.error().describe();
  EXPECT_EQ(decoded->metadata().headers,
            (std::map<std::string, std::string>{{"comexampleext", "value"},
                                                {"dataschema", "urn:schema"}}));
  EXPECT_EQ(decoded->bytes(), "");  // a null body reads as empty
}

TEST(CodecBinaryTest, MissingContentTypeStaysEmpty) {
  Headers headers = valid_binary_headers();
  erase_header(headers, "content-type");
  auto decoded = decode_binary(headers, nullptr);
  ASSERT_TRUE(decoded.has_value()) << decoded.error().describe();
  EXPECT_EQ(decoded->metadata().content_type, "");
}

TEST(CodecBinaryTest, RejectsMissingRequiredAttributes) {
  for (const char* name : {"ce-id", "ce-source", "ce-type", "ce-specversion"}) {
    Headers headers = valid_binary_headers();
    erase_header(headers, name);
    SCOPED_TRACE(name);
    expect_invalid(decode_binary(headers, nullptr), name);
  }
  Headers empty_id = valid_binary_headers();
  set_header(empty_id, "ce-id", "");
  expect_invalid(decode_binary(empty_id, nullptr), "ce-id");
}

TEST(CodecBinaryTest, RejectsOtherSpecVersions) {
  Headers headers = valid_binary_headers();
  set_header(headers, "ce-specversion", "0.3");
  const auto decoded = decode_binary(headers, nullptr);
  expect_invalid(decoded, "specversion");
  ASSERT_FALSE(decoded.has_value());
  EXPECT_NE(decoded.error().message().find("0.3"), std::string::npos);
}

TEST(CodecBinaryTest, RejectsNonIntegerPriorityAndTtl) {
  for (const char* value : {"abc", "1.5", "", " 3", "99999999999"}) {
    Headers headers = valid_binary_headers();
    headers.emplace_back("ce-priority", value);
    SCOPED_TRACE(value);
    expect_invalid(decode_binary(headers, nullptr), "priority");
  }
  Headers headers = valid_binary_headers();
  headers.emplace_back("ce-ttl", "30s");
  expect_invalid(decode_binary(headers, nullptr), "ttl");
}

TEST(CodecBinaryTest, RejectsBadTime) {
  Headers headers = valid_binary_headers();
  headers.emplace_back("ce-time", "yesterday");
  expect_invalid(decode_binary(headers, nullptr), "time");
}

TEST(CodecBinaryTest, RejectsMalformedMartyHeaders) {
  for (const char* value : {"not json", "[1,2]", R"({"a":1})"}) {
    Headers headers = valid_binary_headers();
    headers.emplace_back("ce-martyheaders", value);
    SCOPED_TRACE(value);
    expect_invalid(decode_binary(headers, nullptr), "martyheaders");
  }
}

// --- Structured mode -----------------------------------------------------------------------

TEST(CodecStructuredTest, RoundTripsEveryFieldWithJsonData) {
  const Message original =
      Message::from_json({{"order_id", 42}, {"items", {1, 2}}}, full_metadata());
  const std::string text = encode_structured(original);
  const Json event = Json::parse(text);
  EXPECT_EQ(event["data"], (Json{{"order_id", 42}, {"items", {1, 2}}}));
  EXPECT_FALSE(event.contains("data_base64"));
  EXPECT_EQ(event["ttl"], 30000);  // integer extensions are JSON numbers here
  EXPECT_EQ(event["priority"], 7);
  EXPECT_EQ(event["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  EXPECT_TRUE(event["martyheaders"].is_string());

  auto decoded = decode_structured(text);
  ASSERT_TRUE(decoded.has_value()) << decoded.error().describe();
  expect_same_metadata(decoded->metadata(), original.metadata());
  EXPECT_EQ(Json::parse(decoded->bytes()), original.json());
  // The decoder hands over the value it parsed along with the bytes.
  EXPECT_EQ(decoded->json(), original.json());
}

TEST(CodecStructuredTest, BinaryPayloadTravelsAsBase64) {
  MessageMetadata metadata = full_metadata();
  metadata.content_type = "application/octet-stream";
  std::string bytes;
  for (int i = 0; i < 256; ++i) bytes.push_back(static_cast<char>(i));
  // Every length modulo 3, so every padding case is exercised.
  for (std::size_t length : {0u, 1u, 2u, 3u, 4u, 5u, 256u}) {
    SCOPED_TRACE(length);
    const Message original = Message::from_bytes(bytes.substr(0, length), metadata);
    const std::string text = encode_structured(original);
    const Json event = Json::parse(text);
    EXPECT_FALSE(event.contains("data"));
    EXPECT_EQ(event.contains("data_base64"), length > 0);
    auto decoded = decode_structured(text);
    ASSERT_TRUE(decoded.has_value()) << decoded.error().describe();
    expect_same_metadata(decoded->metadata(), metadata);
    EXPECT_EQ(decoded->bytes(), original.bytes());
  }
}

TEST(CodecStructuredTest, EncodesKnownBase64) {
  MessageMetadata metadata = full_metadata();
  metadata.content_type = "text/plain";
  EXPECT_EQ(Json::parse(encode_structured(Message::from_bytes("foobar", metadata)))["data_base64"],
            "Zm9vYmFy");
  EXPECT_EQ(Json::parse(encode_structured(Message::from_bytes("fooba", metadata)))["data_base64"],
            "Zm9vYmE=");
  EXPECT_EQ(Json::parse(encode_structured(Message::from_bytes("foob", metadata)))["data_base64"],
            "Zm9vYg==");
}

TEST(CodecStructuredTest, InvalidJsonUnderJsonContentTypeFallsBackToBase64) {
  const Message original = Message::from_bytes("{not json", full_metadata());
  const Json event = Json::parse(encode_structured(original));
  EXPECT_FALSE(event.contains("data"));
  EXPECT_EQ(event["datacontenttype"], "application/json");
  auto decoded = decode_structured(event.dump());
  ASSERT_TRUE(decoded.has_value()) << decoded.error().describe();
  EXPECT_EQ(decoded->bytes(), "{not json");
}

TEST(CodecStructuredTest, RecognizesJsonMediaTypes) {
  for (const char* type : {"application/json", "application/json; charset=utf-8",
                           "application/vnd.acme+json", "text/json", "Application/JSON"}) {
    MessageMetadata metadata = full_metadata();
    metadata.content_type = type;
    const Json event = Json::parse(encode_structured(Message::from_bytes(R"({"a":1})", metadata)));
    EXPECT_EQ(event["data"], (Json{{"a", 1}})) << type;
  }
}

TEST(CodecStructuredTest, DecodesStringDataUnderNonJsonType) {
  Json event = structured_event();
  event["datacontenttype"] = "text/plain";
  event["data"] = "hello";
  auto decoded = decode_structured(event.dump());
  ASSERT_TRUE(decoded.has_value()) << decoded.error().describe();
  EXPECT_EQ(decoded->bytes(), "hello");
  EXPECT_EQ(decoded->metadata().content_type, "text/plain");
}

TEST(CodecStructuredTest, DataWithoutContentTypeIsJson) {
  Json event = structured_event();
  event.erase("datacontenttype");
  event["data"] = "hello";
  auto decoded = decode_structured(event.dump());
  ASSERT_TRUE(decoded.has_value()) << decoded.error().describe();
  EXPECT_EQ(decoded->metadata().content_type, "application/json");
  EXPECT_EQ(decoded->bytes(), R"("hello")");
}

TEST(CodecStructuredTest, EventWithoutDataHasEmptyPayload) {
  Json event = structured_event();
  event.erase("data");
  auto decoded = decode_structured(event.dump());
  ASSERT_TRUE(decoded.has_value()) << decoded.error().describe();
  EXPECT_EQ(decoded->bytes(), "");
}

TEST(CodecStructuredTest, AcceptsNumbersAndBooleansInExtensions) {
  Json event = structured_event();
  event["ttl"] = 1500;
  event["priority"] = "3";  // a string integer, as some SDKs write it
  event["correlationid"] = 12;
  event["sampled"] = true;
  event["ratio"] = 0.5;
  event["count"] = 4;
  event["nothing"] = nullptr;
  auto decoded = decode_structured(event.dump());
  ASSERT_TRUE(decoded.has_value()) << decoded.error().describe();
  EXPECT_EQ(decoded->metadata().ttl, 1500ms);
  EXPECT_EQ(decoded->metadata().priority, 3);
  EXPECT_EQ(decoded->metadata().correlation_id, "12");
  EXPECT_EQ(
      decoded->metadata().headers,
      (std::map<std::string, std::string>{{"count", "4"}, {"ratio", "0.5"}, {"sampled", "true"}}));
}

TEST(CodecStructuredTest, RejectsNonIntegerPriorityAndTtl) {
  for (const Json& value : {Json(1.5), Json("abc"), Json(true), Json::array()}) {
    Json event = structured_event();
    event["priority"] = value;
    SCOPED_TRACE(value.dump());
    expect_invalid(decode_structured(event.dump()), "priority");
  }
  Json event = structured_event();
  event["ttl"] = "soon";
  expect_invalid(decode_structured(event.dump()), "ttl");
}

TEST(CodecStructuredTest, RejectsMissingOrMistypedRequiredAttributes) {
  for (const char* name : {"id", "source", "type", "specversion"}) {
    Json event = structured_event();
    event.erase(name);
    SCOPED_TRACE(name);
    expect_invalid(decode_structured(event.dump()), name);
  }
  Json event = structured_event();
  event["id"] = 5;
  expect_invalid(decode_structured(event.dump()), "id");
}

TEST(CodecStructuredTest, RejectsOtherSpecVersions) {
  Json event = structured_event();
  event["specversion"] = "0.3";
  const auto decoded = decode_structured(event.dump());
  expect_invalid(decoded, "specversion");
  ASSERT_FALSE(decoded.has_value());
  EXPECT_NE(decoded.error().message().find("0.3"), std::string::npos);
}

TEST(CodecStructuredTest, RejectsBadBase64) {
  for (const char* text : {"not base64!", "Zm9vY", "Zm9v=", "Zm9vYg=", "Zm9vYg===", "Zm 9v"}) {
    Json event = structured_event();
    event.erase("data");
    event["datacontenttype"] = "application/octet-stream";
    event["data_base64"] = text;
    SCOPED_TRACE(text);
    expect_invalid(decode_structured(event.dump()), "data_base64");
  }
  Json event = structured_event();
  event.erase("data");
  event["data_base64"] = 12;
  expect_invalid(decode_structured(event.dump()), "data_base64");
}

TEST(CodecStructuredTest, AcceptsUnpaddedBase64) {
  Json event = structured_event();
  event.erase("data");
  event["datacontenttype"] = "application/octet-stream";
  event["data_base64"] = "Zm9vYg";
  auto decoded = decode_structured(event.dump());
  ASSERT_TRUE(decoded.has_value()) << decoded.error().describe();
  EXPECT_EQ(decoded->bytes(), "foob");
}

TEST(CodecStructuredTest, RejectsDataAndDataBase64Together) {
  Json event = structured_event();
  event["data_base64"] = "Zm9v";
  expect_invalid(decode_structured(event.dump()), "data_base64");
}

TEST(CodecStructuredTest, RejectsMalformedMartyHeaders) {
  Json event = structured_event();
  event["martyheaders"] = "{oops";
  expect_invalid(decode_structured(event.dump()), "martyheaders");
  event["martyheaders"] = Json{{"a", "b"}};  // must be a JSON string holding an object
  expect_invalid(decode_structured(event.dump()), "martyheaders");
}

TEST(CodecStructuredTest, RejectsObjectValuedExtensions) {
  Json event = structured_event();
  event["custom"] = Json{{"nested", true}};
  expect_invalid(decode_structured(event.dump()), "custom");
}

TEST(CodecStructuredTest, RejectsInputThatIsNotAJsonObject) {
  const auto not_json = decode_structured("{\"specversion\": ");
  expect_invalid(not_json, "JSON");
  expect_invalid(decode_structured("[1, 2, 3]"), "object");
  expect_invalid(decode_structured(""), "JSON");
}

// Events in the shape our encoder writes take a fast path; anything else the general parser.
// Both must agree.
TEST(CodecStructuredTest, FastAndGeneralPathsAgree) {
  const std::string plain = R"({"specversion":"1.0","id":"a-1","source":"s","type":"t","ttl":5,)"
                            R"("data":{"k":"}\"{","n":[1,{"x":null}]}})";
  // The same event written by another encoder: spaces, an escape, members in another order.
  const std::string other =
      "{ \"data\" : {\"k\":\"}\\\"{\",\"n\":[1,{\"x\":null}]},\n"
      "  \"type\":\"t\", \"ttl\": 5, \"id\":\"a\\u002d1\", \"source\":\"s\","
      " \"specversion\":\"1.0\" }";
  auto fast = decode_structured(plain);
  auto general = decode_structured(other);
  ASSERT_TRUE(fast.has_value()) << fast.error().describe();
  ASSERT_TRUE(general.has_value()) << general.error().describe();
  expect_same_metadata(fast->metadata(), general->metadata());
  EXPECT_EQ(fast->metadata().ttl, std::chrono::milliseconds(5));
  EXPECT_EQ(fast->json(), general->json());
  EXPECT_EQ(fast->json()["k"], "}\"{");
}

TEST(CodecStructuredTest, FastPathRejectsWhatTheGeneralPathRejects) {
  const std::string head = R"({"specversion":"1.0","id":"a","source":"s","type":"t",)";
  expect_invalid(decode_structured(head + R"("data":{"a":}})"), "JSON");
  expect_invalid(decode_structured(head + R"("data":tru})"), "JSON");
  expect_invalid(decode_structured(head + R"("data":{"a":1}} trailing)"), "JSON");
  expect_invalid(decode_structured(head + R"("data":{"a":1})"), "JSON");
  expect_invalid(decode_structured(head + R"("ttl":1.5,"data":{}})"), "ttl");
  expect_invalid(decode_structured(head + R"("data":{},"data_base64":"AA=="})"), "data");
  expect_invalid(decode_structured(head + R"("ttl":007,"data":{}})"), "JSON");
  // A repeated member: the last one counts, as in the general parser.
  auto repeated = decode_structured(head + R"("type":"u","data":{}})");
  ASSERT_TRUE(repeated.has_value()) << repeated.error().describe();
  EXPECT_EQ(repeated->type(), "u");
}

// --- Envelope ------------------------------------------------------------------------------

// What a service running the Python original sends arrives as its data and metadata.
TEST(CodecEnvelopeTest, AReceivedEnvelopeIsUnwrapped) {
  const std::string body =
      R"({"data":{"order":42},"metadata":{"message_id":"py-1","correlation_id":"c-1",)"
      R"("causation_id":"k-1","timestamp":"2026-12-07T10:00:00.5","ttl":2.5,"priority":4,)"
      R"("content_type":"application/json","headers":{"tenant":"acme"},"routing_key":null,)"
      R"("reply_to":null,"message_type":"order_placed","source":"py"}})";
  MessageMetadata transport;
  transport.headers["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  transport.reply_to = "_inbox.1";
  Message received = Message::from_bytes(body, transport);
  received.set_subject("events.order_placed");
  auto unwrapped = unwrap_envelope(received);
  ASSERT_TRUE(unwrapped.has_value());
  ASSERT_TRUE(*unwrapped) << unwrapped->error().describe();
  const Message& m = **unwrapped;
  EXPECT_EQ(m.json(), (Json{{"order", 42}}));
  EXPECT_EQ(m.id(), "py-1");
  EXPECT_EQ(m.type(), "order_placed");
  EXPECT_EQ(m.subject(), "events.order_placed");
  EXPECT_EQ(m.metadata().correlation_id, "c-1");
  EXPECT_EQ(m.metadata().causation_id, "k-1");
  EXPECT_EQ(m.metadata().priority, 4);
  EXPECT_EQ(m.metadata().ttl, std::chrono::milliseconds(2'500));
  EXPECT_EQ(format_rfc3339(*m.metadata().time), "2026-12-07T10:00:00.500000Z");
  EXPECT_EQ(m.metadata().headers.at("tenant"), "acme");
  EXPECT_EQ(m.metadata().headers.count("traceparent"), 1u);  // the transport's, kept
  EXPECT_EQ(m.metadata().reply_to, "_inbox.1");              // the envelope named none
}

TEST(CodecEnvelopeTest, OnlyAnExactEnvelopeIsTakenForOne) {
  auto received = [](std::string body, std::string content_type = "application/json") {
    MessageMetadata metadata;
    metadata.content_type = std::move(content_type);
    return Message::from_bytes(std::move(body), std::move(metadata));
  };
  // A payload that merely has data and metadata members among others is the user's own.
  EXPECT_FALSE(
      unwrap_envelope(received(R"({"data":1,"metadata":{"message_type":"t"},"more":true})")));
  // Metadata naming neither a type nor an id.
  EXPECT_FALSE(unwrap_envelope(received(R"({"data":1,"metadata":{"priority":1}})")));
  EXPECT_FALSE(unwrap_envelope(received(R"({"data":1,"metadata":{"message_type":""}})")));
  // Not JSON, not an object, or said not to be JSON.
  EXPECT_FALSE(unwrap_envelope(received("metadata")));
  EXPECT_FALSE(unwrap_envelope(received(R"([{"data":1,"metadata":{"message_id":"x"}}])")));
  EXPECT_FALSE(unwrap_envelope(
      received(R"({"data":1,"metadata":{"message_id":"x"}})", "application/octet-stream")));
  // Without a content type it is looked at; a malformed field is an error naming it.
  auto malformed =
      unwrap_envelope(received(R"({"data":1,"metadata":{"message_id":"x","ttl":"a"}})", ""));
  ASSERT_TRUE(malformed.has_value());
  ASSERT_FALSE(*malformed);
  EXPECT_NE(malformed->error().message().find("ttl"), std::string::npos)
      << malformed->error().describe();
}

TEST(CodecEnvelopeTest, WrappingKeepsTheMetadataAndUnwrapsToTheSameMessage) {
  MessageMetadata metadata;
  metadata.message_id = "m-1";
  metadata.message_type = "order_placed";
  metadata.correlation_id = "c-9";
  Message message = Message::from_json({{"order", 1}}, metadata);
  message.set_subject("events.order_placed");
  auto wrapped = wrap_in_envelope(message);
  ASSERT_TRUE(wrapped) << wrapped.error().describe();
  EXPECT_EQ(wrapped->id(), "m-1");
  EXPECT_EQ(wrapped->subject(), "events.order_placed");
  EXPECT_EQ(wrapped->json()["data"], (Json{{"order", 1}}));
  auto again = unwrap_envelope(*wrapped);
  ASSERT_TRUE(again && *again);
  EXPECT_EQ((*again)->id(), "m-1");
  EXPECT_EQ((*again)->metadata().correlation_id, "c-9");
  EXPECT_EQ((*again)->json(), (Json{{"order", 1}}));
  EXPECT_FALSE(wrap_in_envelope(Message::from_bytes("\x01")));  // the envelope needs JSON
}

TEST(CodecEnvelopeTest, RoundTripsEveryField) {
  MessageMetadata metadata = full_metadata();
  metadata.time = at("2026-11-26T21:23:31.123456Z");
  const Message original = Message::from_json({{"order_id", 42}}, metadata);
  auto text = encode_envelope(original);
  ASSERT_TRUE(text.has_value()) << text.error().describe();
  auto decoded = decode_envelope(*text);
  ASSERT_TRUE(decoded.has_value()) << decoded.error().describe();
  expect_same_metadata(decoded->metadata(), original.metadata());
  EXPECT_EQ(decoded->json(), original.json());
}

TEST(CodecEnvelopeTest, WritesWhatPythonWrites) {
  MessageMetadata metadata;
  metadata.message_id = "id-1";
  metadata.message_type = "order_placed";
  metadata.source = "orders";
  metadata.time = at("2026-11-26T21:23:31.123456Z");
  metadata.ttl = 30'000ms;
  metadata.priority = 2;
  metadata.partition_key = "customer-42";
  metadata.headers = {{"tenant", "acme"}};
  auto text = encode_envelope(Message::from_json({{"order_id", 42}}, metadata));
  ASSERT_TRUE(text.has_value()) << text.error().describe();
  // Key order follows the Python original too, so compare the text.
  EXPECT_EQ(*text,
            R"({"data":{"order_id":42},"metadata":{"message_id":"id-1","correlation_id":null,)"
            R"("causation_id":null,"timestamp":"2026-11-26T21:23:31.123456","ttl":30.0,)"
            R"("priority":2,"content_type":"application/json","headers":{"tenant":"acme"},)"
            R"("routing_key":"customer-42","reply_to":null,"message_type":"order_placed",)"
            R"("source":"orders"}})");
}

TEST(CodecEnvelopeTest, TimestampWithoutMicrosecondsHasNoFraction) {
  MessageMetadata metadata;
  metadata.time = at("2026-11-26T21:23:31Z");
  auto text = encode_envelope(Message::from_json(nullptr, metadata));
  ASSERT_TRUE(text.has_value()) << text.error().describe();
  EXPECT_EQ(Json::parse(*text)["metadata"]["timestamp"], "2026-11-26T21:23:31");
  EXPECT_EQ(Json::parse(*text)["metadata"]["ttl"], nullptr);
}

TEST(CodecEnvelopeTest, DecodesAPythonWrittenEnvelope) {
  // As json.dumps() writes it: spaces after separators, naive UTC timestamp, float ttl,
  // non-string header values.
  const std::string_view text = R"({"data": {"order_id": "A-1", "total": 99.5},
    "metadata": {"message_id": "6f1c2e0a-3b7d-4c8e-9a1f-2d3e4f5a6b7c",
    "correlation_id": "corr-9", "causation_id": null,
    "timestamp": "2026-11-26T21:23:31.123456", "ttl": 30.0, "priority": 5,
    "content_type": "application/json",
    "headers": {"tenant": "acme", "retries": 3, "flags": [1, 2], "skip": null},
    "routing_key": null, "reply_to": "replies.abc", "message_type": "order_placed",
    "source": "orders-service"}})";
  auto decoded = decode_envelope(text);
  ASSERT_TRUE(decoded.has_value()) << decoded.error().describe();
  const MessageMetadata& metadata = decoded->metadata();
  EXPECT_EQ(metadata.message_id, "6f1c2e0a-3b7d-4c8e-9a1f-2d3e4f5a6b7c");
  EXPECT_EQ(metadata.correlation_id, "corr-9");
  EXPECT_EQ(metadata.causation_id, "");
  EXPECT_EQ(metadata.time, at("2026-11-26T21:23:31.123456Z"));
  EXPECT_EQ(metadata.ttl, 30'000ms);
  EXPECT_EQ(metadata.priority, 5);
  EXPECT_EQ(metadata.content_type, "application/json");
  EXPECT_EQ(metadata.headers, (std::map<std::string, std::string>{
                                  {"flags", "[1,2]"}, {"retries", "3"}, {"tenant", "acme"}}));
  EXPECT_EQ(metadata.partition_key, "");
  EXPECT_EQ(metadata.reply_to, "replies.abc");
  EXPECT_EQ(metadata.message_type, "order_placed");
  EXPECT_EQ(metadata.source, "orders-service");
  EXPECT_EQ(decoded->json(), (Json{{"order_id", "A-1"}, {"total", 99.5}}));
}

TEST(CodecEnvelopeTest, AcceptsTimestampsWithOffsets) {
  auto decoded =
      decode_envelope(R"({"data": 1, "metadata": {"timestamp": "2026-11-26T22:23:31+01:00"}})");
  ASSERT_TRUE(decoded.has_value()) << decoded.error().describe();
  EXPECT_EQ(decoded->metadata().time, at("2026-11-26T21:23:31Z"));
}

TEST(CodecEnvelopeTest, FillsDefaultsForMissingFields) {
  auto decoded = decode_envelope(R"({"data": null})");
  ASSERT_TRUE(decoded.has_value()) << decoded.error().describe();
  const MessageMetadata& metadata = decoded->metadata();
  EXPECT_EQ(metadata.message_id.size(), 36u);  // a fresh UUIDv7
  EXPECT_EQ(metadata.message_id[14], '7');
  EXPECT_EQ(metadata.message_type, "");  // the bus fills it from the subject
  EXPECT_EQ(metadata.content_type, "application/json");
  EXPECT_FALSE(metadata.time.has_value());
  EXPECT_FALSE(metadata.ttl.has_value());
  EXPECT_EQ(metadata.priority, 0);
  EXPECT_TRUE(metadata.headers.empty());
  EXPECT_EQ(decoded->bytes(), "null");
  EXPECT_TRUE(decoded->json().is_null());
}

TEST(CodecEnvelopeTest, RejectsANonJsonPayload) {
  const auto encoded = encode_envelope(Message::from_bytes("\x01\x02", full_metadata()));
  expect_invalid(encoded, "JSON payload");
}

TEST(CodecEnvelopeTest, RejectsMalformedEnvelopes) {
  expect_invalid(decode_envelope("not json"), "JSON");
  expect_invalid(decode_envelope("[1]"), "object");
  expect_invalid(decode_envelope(R"({"metadata": {}})"), "data");
  expect_invalid(decode_envelope(R"({"data": 1, "metadata": "nope"})"), "metadata");
  expect_invalid(decode_envelope(R"({"data": 1, "metadata": []})"), "metadata");
}

TEST(CodecEnvelopeTest, RejectsWronglyTypedFields) {
  struct Case {
    const char* metadata;
    const char* field;
  };
  for (const Case& c : {
           Case{R"({"priority": "high"})", "metadata.priority must be an integer"},
           Case{R"({"priority": 1.5})", "metadata.priority"},
           Case{R"({"priority": 99999999999})", "metadata.priority"},
           Case{R"({"ttl": "30"})", "metadata.ttl"},
           Case{R"({"ttl": 1e300})", "metadata.ttl"},
           Case{R"({"timestamp": 5})", "metadata.timestamp"},
           Case{R"({"timestamp": "last tuesday"})", "metadata.timestamp"},
           Case{R"({"message_id": 5})", "metadata.message_id"},
           Case{R"({"correlation_id": {}})", "metadata.correlation_id"},
           Case{R"({"routing_key": 1})", "metadata.routing_key"},
           Case{R"({"headers": [1]})", "metadata.headers"},
       }) {
    SCOPED_TRACE(c.metadata);
    expect_invalid(decode_envelope(std::string(R"({"data": 1, "metadata": )") + c.metadata + "}"),
                   c.field);
  }
}

// Found by fuzzing (tests/fuzz): JSON's parser took a NUL byte for the end of the text, so bytes
// after it were silently dropped and structured mode wrote them into `data` as broken JSON.
TEST(CodecJsonTextTest, ANulByteIsNeverTakenForTheEndOfJson) {
  const std::string bytes("{\"a\":1}\0junk", 12);
  auto payload = std::make_shared<const Payload>(bytes);
  auto parsed = payload->json();
  ASSERT_FALSE(parsed);
  EXPECT_NE(parsed.error().message().find("NUL byte at offset 7"), std::string::npos);
  MessageMetadata metadata;
  metadata.message_id = "m";
  metadata.message_type = "t";
  Message message(metadata, payload);  // content type: JSON, which the bytes are not
  auto decoded = decode_structured(encode_structured(message));
  ASSERT_TRUE(decoded) << decoded.error().describe();
  EXPECT_EQ(decoded->bytes(), bytes);  // carried whole, in data_base64
  EXPECT_FALSE(
      decode_structured(std::string("{\"specversion\":\"1.0\",\"id\":\"x\",\"type\":\"t\","
                                    "\"source\":\"s\"}\0",
                                    55)));
  EXPECT_FALSE(decode_envelope(std::string("{\"data\":1}\0", 11)));
}

// Found by fuzzing: a time beyond what the clock holds overflowed instead of being refused.
TEST(CodecJsonTextTest, TimesTheClockCannotHoldAreRefused) {
  EXPECT_TRUE(parse_rfc3339("2261-12-31T23:59:59Z"));
  EXPECT_TRUE(parse_rfc3339("1678-01-01T00:00:00Z"));
  for (const char* text :
       {"9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "2262-05-01T00:00:00Z"}) {
    auto parsed = parse_rfc3339(text);
    ASSERT_FALSE(parsed) << text;
    EXPECT_TRUE(parsed.error().is(errc::invalid_argument));
    EXPECT_NE(parsed.error().message().find("1678 to 2261"), std::string::npos);
  }
}

// Found by fuzzing the RabbitMQ decoder: a plain AMQP message with an empty routing key had an
// empty type, so it could not be published again (dead-lettered, requeued) and came back for
// ever.
TEST(CodecForeignTest, AMessageOnASubjectNamingNoTypeIsUntypedAndCanBeSentAgain) {
  auto body = std::make_shared<const Payload>(std::string("plain"));
  Message message = foreign_message("", body, {{"Content-Type", "text/plain"}});
  EXPECT_EQ(message.type(), kUntypedMessageType);
  EXPECT_EQ(message.metadata().content_type, "text/plain");
  EXPECT_FALSE(message.id().empty());
  auto encoded = encode_binary(message);
  auto again = decode_binary(encoded.headers, encoded.body);
  ASSERT_TRUE(again) << again.error().describe();
  EXPECT_EQ(again->type(), "untyped");
  EXPECT_EQ(foreign_message("events.order_placed", body, {}).type(), "order_placed");
}

TEST(CodecForeignTest, TheContentTypeIsTheMessagesAndNotAlsoAHeader) {
  auto body = std::make_shared<const Payload>(std::string("plain"));
  Message message =
      foreign_message("events.note", body, {{"Content-Type", "text/plain"}, {"x-tenant", "acme"}});
  EXPECT_EQ(message.metadata().content_type, "text/plain");
  EXPECT_EQ(message.metadata().headers.size(), 1u);
  EXPECT_EQ(message.metadata().headers.at("x-tenant"), "acme");
}

}  // namespace
}  // namespace marty::messaging::codec
