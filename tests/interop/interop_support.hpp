#pragma once

// What the interop tests share: unique names, a handler that records what it is given, and the
// check that the peers' packages are installed.
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../support/test_loop.hpp"
#include "marty/messaging.hpp"
#include "node_peer.hpp"

namespace marty::messaging::testing {

inline std::string unique_name(std::string_view base) {
  const std::string id = make_uuid_v7();
  return std::string(base) + "_" + id.substr(id.size() - 12);
}

inline std::string env_or_empty(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? value : "";
}

/// A started bus on `backend` alone, sending everything in `format`.
inline std::unique_ptr<BlockingEventBus> started_bus(MessageBackendType type,
                                                     std::shared_ptr<Backend> backend,
                                                     WireFormat format = WireFormat::cloudevents) {
  auto bus = std::make_unique<BlockingEventBus>();
  EXPECT_TRUE(bus->bus().register_backend(type, std::move(backend)));
  EXPECT_TRUE(bus->bus().route("*", type, {}, format));
  auto started = bus->start();
  EXPECT_TRUE(started) << started.error().describe();
  return bus;
}

/// Records the messages a handler is given.
class Received {
 public:
  MessageHandler handler() {
    return sync_handler([this](const Message& message) -> Result<void> {
      std::lock_guard lock(mutex_);
      messages_.push_back(message);
      return ok();
    });
  }
  bool wait_for(std::size_t count, std::chrono::milliseconds limit = std::chrono::seconds(20)) {
    return eventually(
        [&] {
          std::lock_guard lock(mutex_);
          return messages_.size() >= count;
        },
        limit);
  }
  std::vector<Message> messages() {
    std::lock_guard lock(mutex_);
    return messages_;
  }

 private:
  std::mutex mutex_;
  std::vector<Message> messages_;
};

/// One broker as the interop tests see it: how to make a bus on it, and which peer script
/// speaks for the broker's own client. Each check below is one direction of the contract of
/// docs/wire-format.md ("Talking to the bus from another client"), driving the peer with the
/// commands every peer takes (tests/interop/peer.mjs); each returns what the peer printed, for
/// the broker's own further checks.
struct InteropTarget {
  std::string script;   // "nats_peer.mjs"
  std::string address;  // the broker's URL or bootstrap list
  MessageBackendType type = MessageBackendType::memory;
  std::function<std::shared_ptr<Backend>()> make_backend;
  bool listener_reads_from_start = false;  // may start after we publish (Kafka: it joins slowly)
  std::chrono::milliseconds patience = std::chrono::seconds(20);
  bool commands_only = false;  // no events (SQS): the checks send commands instead

  std::unique_ptr<BlockingEventBus> make_bus(WireFormat format = WireFormat::cloudevents) const {
    return started_bus(type, make_backend(), format);
  }
};

/// What a foreign subscriber of `subject` (the peer's `listen`) received of what `publish` sent.
/// It listens before the publish, or after it where it reads from the start (Kafka: joining a
/// group takes seconds, and the publish must not race it). nullopt, with a test failure, when
/// nothing came.
inline std::optional<nlohmann::json> peer_receives(const InteropTarget& target,
                                                   const std::string& subject,
                                                   const std::function<void()>& publish) {
  std::unique_ptr<NodePeer> peer;
  auto listen = [&] {
    peer = std::make_unique<NodePeer>(
        target.script, std::vector<std::string>{"listen", target.address, subject, "1"});
  };
  if (!target.listener_reads_from_start) {
    listen();
    if (!peer->wait_for("ready", target.patience)) {
      ADD_FAILURE() << peer->transcript();
      return std::nullopt;
    }
  }
  publish();
  if (target.listener_reads_from_start) listen();
  auto got = peer->wait_for("received", target.patience);
  if (!got) ADD_FAILURE() << peer->transcript();
  return got;
}

/// A foreign subscriber reads our event: id, type, correlation id and data, validated as a
/// CloudEvent by the CloudEvents SDK.
inline nlohmann::json check_they_read_our_events(const InteropTarget& target) {
  const std::string type = unique_name("parcel_sent");
  auto bus = target.make_bus();
  MessageMetadata sent;
  sent.message_id = make_uuid_v7();
  sent.correlation_id = "order-7";
  auto got = peer_receives(target, "events." + type, [&] {
    EXPECT_TRUE(bus->publish_event(type, {{"parcel", 7}}, sent));
  });
  if (!got) return {};
  const auto& event = (*got)["cloudevent"];
  EXPECT_EQ(event["id"], sent.message_id);
  EXPECT_EQ(event["type"], type);
  EXPECT_EQ(event["correlationid"], "order-7");
  EXPECT_EQ(event["data"], (Json{{"parcel", 7}}));
  return *got;
}

/// We read a foreign publisher's event: its id, type, correlation id and data.
inline void check_we_read_their_events(const InteropTarget& target) {
  const std::string type = unique_name("parcel_lost");
  Received received;
  auto bus = target.make_bus();
  ASSERT_TRUE(bus->subscribe_to_events({type}, received.handler(), "claims"));
  NodePeer peer(target.script,
                {"publish", target.address, "events." + type, type, R"({"parcel":8})"});
  auto published = peer.wait_for("published", target.patience);
  ASSERT_TRUE(published) << peer.transcript();
  ASSERT_TRUE(received.wait_for(1, target.patience));
  const Message got = received.messages().front();
  EXPECT_EQ(got.id(), (*published)["id"]);
  EXPECT_EQ(got.type(), type);
  EXPECT_EQ(got.metadata().correlation_id, "corr-" + type);
  EXPECT_EQ(got.json(), (Json{{"parcel", 8}}));
}

/// A foreign responder answers our queries, copying what the contract says and nothing of the
/// bus's own headers. `before_first` runs once it is ready (Redis: outwait the liveness window).
inline void check_they_answer_our_queries(const InteropTarget& target, int queries = 1,
                                          const std::function<void()>& before_first = {}) {
  const std::string service = unique_name("stock");
  auto bus = target.make_bus();
  NodePeer responder(target.script, {"respond", target.address, "queries." + service + ".level",
                                     service, std::to_string(queries)});
  ASSERT_TRUE(responder.wait_for("ready", target.patience)) << responder.transcript();
  if (before_first) before_first();
  for (int sku = 1; sku <= queries; ++sku) {
    auto reply = bus->query("level", {{"sku", sku}}, service, target.patience);
    ASSERT_TRUE(reply) << reply.error().describe() << "\n" << responder.transcript();
    EXPECT_EQ((*reply)["asked"], (Json{{"sku", sku}}));
    EXPECT_TRUE(reply->contains("answered_by")) << reply->dump();
  }
  EXPECT_EQ(responder.wait(), 0) << responder.transcript();
}

/// Our responder answers a foreign asker: the answer, with the asker's correlation id.
inline nlohmann::json check_we_answer_their_queries(const InteropTarget& target) {
  const std::string service = unique_name("pricing");
  auto bus = target.make_bus();
  auto handler = sync_query_handler([](const Message& query) -> Result<Json> {
    return Json{{"price", query.json()["sku"].get<int>() * 10}};
  });
  EXPECT_TRUE(bus->handle_queries({"price"}, handler, service));
  NodePeer asker(target.script,
                 {"ask", target.address, "queries." + service + ".price", "price", R"({"sku":4})"});
  auto reply = asker.wait_for("reply", target.patience);
  EXPECT_TRUE(reply) << asker.transcript();
  if (!reply) return {};
  EXPECT_EQ((*reply)["cloudevent"]["data"], (Json{{"price", 40}}));
  EXPECT_EQ((*reply)["cloudevent"]["correlationid"], (*reply)["correlation"]);
  // The responder's own name, not the asker's source copied back.
  EXPECT_EQ((*reply)["cloudevent"]["source"], EventBusOptions().service_name);
  return *reply;
}

/// A service still running the Python original sends its `{"data", "metadata"}` envelope as
/// the whole body: the handler sees the envelope's data and metadata, not the envelope.
inline void check_we_read_python_envelopes(const InteropTarget& target) {
  const std::string type = unique_name("py_order");
  const std::string service = unique_name("py_shop");
  Received received;
  auto bus = target.make_bus();
  std::string subject;
  if (target.commands_only) {
    ASSERT_TRUE(bus->handle_commands({type}, received.handler(), service));
    subject = "commands." + service + "." + type;
  } else {
    ASSERT_TRUE(bus->subscribe_to_events({type}, received.handler(), "py_readers"));
    subject = "events." + type;
  }
  NodePeer peer(target.script,
                {"publish-envelope", target.address, subject, type, R"({"order":42})"});
  auto published = peer.wait_for("published", target.patience);
  ASSERT_TRUE(published) << peer.transcript();
  ASSERT_TRUE(received.wait_for(1, target.patience));
  const Message got = received.messages().front();
  const MessageMetadata& m = got.metadata();
  EXPECT_EQ(got.json(), (Json{{"order", 42}})) << got.bytes();
  EXPECT_EQ(got.id(), (*published)["id"]);
  EXPECT_EQ(got.type(), type);
  EXPECT_EQ(m.correlation_id, "corr-py");
  EXPECT_EQ(m.causation_id, "cause-py");
  EXPECT_EQ(m.source, "python-service");
  EXPECT_EQ(m.priority, 3);
  EXPECT_EQ(m.ttl, std::chrono::milliseconds(30'000));
  ASSERT_TRUE(m.time.has_value());
  EXPECT_EQ(format_rfc3339(*m.time), "2026-12-07T10:00:00.123456Z");
  EXPECT_EQ(m.headers.count("tenant") ? m.headers.at("tenant") : "", "acme");
}

/// A route in WireFormat::python_envelope sends what a Python service reads: the envelope as
/// the body (the CloudEvents attributes travel beside it, which it ignores).
inline void check_they_read_our_python_envelopes(const InteropTarget& target) {
  const std::string type = unique_name("py_parcel");
  const std::string service = unique_name("py_depot");
  auto bus = target.make_bus(WireFormat::python_envelope);
  const std::string subject =
      target.commands_only ? "commands." + service + "." + type : "events." + type;
  MessageMetadata sent;
  sent.message_id = make_uuid_v7();
  sent.correlation_id = "order-9";
  auto got = peer_receives(target, subject, [&] {
    auto published = target.commands_only ? bus->send_command(type, {{"parcel", 9}}, service, sent)
                                          : bus->publish_event(type, {{"parcel", 9}}, sent);
    EXPECT_TRUE(published) << published.error().describe();
  });
  ASSERT_TRUE(got);
  const nlohmann::json envelope = (*got)["cloudevent"].value("data", nlohmann::json());
  ASSERT_TRUE(envelope.is_object() && envelope.contains("metadata")) << got->dump();
  EXPECT_EQ(envelope["data"], (Json{{"parcel", 9}})) << envelope.dump();
  EXPECT_EQ(envelope["metadata"]["message_id"], sent.message_id) << envelope.dump();
  EXPECT_EQ(envelope["metadata"]["message_type"], type) << envelope.dump();
  EXPECT_EQ(envelope["metadata"]["correlation_id"], "order-9") << envelope.dump();
}

/// The bus's own reply headers as a foreign client sees them: inside `martyheaders`.
inline nlohmann::json marty_headers_of(const nlohmann::json& cloudevent) {
  return nlohmann::json::parse(cloudevent.value("martyheaders", "{}"));
}

}  // namespace marty::messaging::testing

/// Fails the test at once when the peers' npm packages or the broker's address are missing:
/// under ./run test a missing peer is a failure, never a skip.
#define REQUIRE_INTEROP(broker_env)                                                          \
  do {                                                                                       \
    ASSERT_FALSE(::marty::messaging::testing::interop_node_path().empty())                   \
        << "MARTY_INTEROP_NODE_PATH is not set (source <(scripts/js-deps.sh))";              \
    ASSERT_FALSE(::marty::messaging::testing::env_or_empty(broker_env).empty())              \
        << broker_env << " is not set (scripts/brokers start; source build/brokers/env.sh)"; \
  } while (false)
