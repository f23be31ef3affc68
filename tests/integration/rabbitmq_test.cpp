// The RabbitMQ backend against real RabbitMQ nodes: bad configuration, wrong credentials and a
// missing vhost, commands nobody takes, poison and undecodable messages, and a broker restart.
// The shared node of scripts/brokers (MARTY_RABBITMQ_URL) serves the tests that need no node of
// their own.
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <set>
#include <thread>

#include "../support/backend_checks.hpp"
#include "../support/certificates.hpp"
#include "../support/rabbitmq_server.hpp"
#include "../support/test_loop.hpp"
#include "marty/messaging.hpp"
#include "marty/messaging/rabbitmq_backend.hpp"

namespace marty::messaging {
namespace {

using namespace std::chrono_literals;
using testing::eventually;
using testing::free_port;
using testing::TestLoop;

std::string shared_url() {
  const char* url = std::getenv("MARTY_RABBITMQ_URL");
  return url != nullptr ? url : "";
}

std::string unique(std::string_view base) {
  const std::string id = make_uuid_v7();
  return std::string(base) + "_" + id.substr(id.size() - 12);
}

// The port of an amqp://user:password@host:port/ URL.
int port_of(const std::string& url) {
  const auto colon = url.rfind(':');
  return std::stoi(url.substr(colon + 1, url.find('/', colon) - colon - 1));
}

rabbitmq::RabbitMqConfig config_for(std::string url) {
  rabbitmq::RabbitMqConfig config;
  config.url = std::move(url);
  return config;
}

std::unique_ptr<BlockingEventBus> rabbit_bus(rabbitmq::RabbitMqConfig config,
                                             std::string service = "rabbitmq-test") {
  EventBusOptions options;
  options.service_name = std::move(service);
  options.drain_timeout = 5s;
  auto bus = std::make_unique<BlockingEventBus>(options);
  EXPECT_TRUE(bus->bus().register_backend(MessageBackendType::rabbitmq,
                                          rabbitmq::make_backend(std::move(config))));
  auto started = bus->start();
  EXPECT_TRUE(started) << started.error().describe();
  return bus;
}

Result<void> connect_with(rabbitmq::RabbitMqConfig config) {
  return testing::connect_result(rabbitmq::make_backend(std::move(config)));
}

void expect_invalid(rabbitmq::RabbitMqConfig config, std::string_view field) {
  testing::expect_invalid_config(rabbitmq::make_backend(std::move(config)), field);
}

using Seen = testing::NumbersSeen;

// Reads a dead-letter stream from its start.
class DeadLetters {
 public:
  DeadLetters(BlockingEventBus& bus, const std::string& subject) {
    StreamOptions options;
    options.start = StartPosition::earliest();
    options.max_wait = 20ms;
    auto reader = sync_batch_processor([this](const std::vector<Message>& batch) {
      std::lock_guard lock(mutex_);
      for (const auto& m : batch) messages_.push_back(m);
      return ok();
    });
    EXPECT_TRUE(bus.process_stream(dead_letter_subject(subject), reader, unique("dead")));
  }
  std::vector<Message> snapshot() const {
    std::lock_guard lock(mutex_);
    return messages_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<Message> messages_;
};

TEST(RabbitMqConfig, BadValuesAreRefusedNamingTheField) {
  expect_invalid(config_for("http://localhost"), "url");
  expect_invalid(config_for("amqp://guest:guest@localhost:notaport/"), "port");
  rabbitmq::RabbitMqConfig no_prefetch;
  no_prefetch.prefetch = 0;
  expect_invalid(no_prefetch, "prefetch");
  rabbitmq::RabbitMqConfig reserved;
  reserved.events_exchange = "amq.topic";
  expect_invalid(reserved, "events_exchange");
  rabbitmq::RabbitMqConfig half_tls;
  half_tls.tls.enabled = true;
  half_tls.tls.cert_file = "client.pem";
  expect_invalid(half_tls, "tls.key_file");
}

TEST(RabbitMqConnect, NoBrokerIsUnavailableNotAHang) {
  rabbitmq::RabbitMqConfig config;
  config.port = free_port();
  const auto start = SteadyClock::now();
  const auto result = connect_with(config);
  ASSERT_FALSE(result);
  EXPECT_TRUE(result.error().is(errc::unavailable)) << result.error().describe();
  EXPECT_LT(SteadyClock::now() - start, 10s);
}

TEST(RabbitMqAuth, WrongPasswordAndMissingVhost) {
  ASSERT_FALSE(shared_url().empty()) << "MARTY_RABBITMQ_URL is not set";
  const int port = port_of(shared_url());
  const std::string base = "amqp://guest:";
  auto refused =
      connect_with(config_for(base + "not-the-password@127.0.0.1:" + std::to_string(port) + "/"));
  ASSERT_FALSE(refused);
  EXPECT_TRUE(refused.error().is(errc::unauthenticated)) << refused.error().describe();
  EXPECT_EQ(refused.error().describe().find("not-the-password"), std::string::npos)
      << "a secret appears in the error: " << refused.error().describe();

  auto no_vhost =
      connect_with(config_for(base + "guest@127.0.0.1:" + std::to_string(port) + "/no-such-vhost"));
  ASSERT_FALSE(no_vhost);
  EXPECT_NE(no_vhost.error().describe().find("no-such-vhost"), std::string::npos)
      << no_vhost.error().describe();
  EXPECT_FALSE(no_vhost.error().is(errc::unavailable)) << no_vhost.error().describe();
}

// A command no service's queue takes comes back (mandatory): the sender gets not_found.
TEST(RabbitMqCommands, NobodysCommandIsAnErrorNotALoss) {
  ASSERT_FALSE(shared_url().empty()) << "MARTY_RABBITMQ_URL is not set";
  auto bus = rabbit_bus(config_for(shared_url()));
  auto sent = bus->send_command("ship", {{"n", 1}}, unique("nobody"));
  ASSERT_FALSE(sent);
  EXPECT_TRUE(sent.error().is(errc::not_found)) << sent.error().describe();
}

// A handler that refuses a message as bad input: it goes to the dead letters with the reason,
// once, and the consumer goes on. A message that is not even decodable goes there too.
TEST(RabbitMqBadInput, PoisonAndUndecodableMessagesAreDeadLettered) {
  ASSERT_FALSE(shared_url().empty()) << "MARTY_RABBITMQ_URL is not set";
  const std::string service = unique("billing");
  std::atomic<int> calls{0};
  Seen good;
  auto consumer = rabbit_bus(config_for(shared_url()), service);
  auto handler = sync_handler([&](const Message& m) -> Result<void> {
    ++calls;
    if (m.json()["n"] == 13) return Error(errc::invalid_argument, "amount is negative");
    good.add(m.json()["n"].get<int>());
    return ok();
  });
  ASSERT_TRUE(consumer->handle_commands({"charge"}, handler, service));
  const std::string subject = "commands." + service + ".charge";
  DeadLetters dead(*consumer, subject);

  // An AMQP publisher that sends CloudEvents attributes without an id.
  {
    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t* socket = amqp_tcp_socket_new(conn);
    ASSERT_EQ(amqp_socket_open(socket, "127.0.0.1", port_of(shared_url())), AMQP_STATUS_OK);
    ASSERT_EQ(
        amqp_login(conn, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest").reply_type,
        AMQP_RESPONSE_NORMAL);
    amqp_channel_open(conn, 1);
    ASSERT_EQ(amqp_get_rpc_reply(conn).reply_type, AMQP_RESPONSE_NORMAL);
    amqp_table_entry_t entry{};
    entry.key = amqp_cstring_bytes("cloudEvents:specversion");
    entry.value.kind = AMQP_FIELD_KIND_UTF8;
    entry.value.value.bytes = amqp_cstring_bytes("1.0");
    amqp_basic_properties_t props{};
    props._flags = AMQP_BASIC_HEADERS_FLAG;
    props.headers = amqp_table_t{1, &entry};
    ASSERT_EQ(amqp_basic_publish(conn, 1, amqp_cstring_bytes("marty.commands"),
                                 amqp_cstring_bytes(subject.c_str()), 0, 0, &props,
                                 amqp_cstring_bytes("{\"n\":99}")),
              AMQP_STATUS_OK);
    amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
  }
  auto sender = rabbit_bus(config_for(shared_url()), "orders");
  ASSERT_TRUE(sender->send_command("charge", {{"n", 13}}, service));
  ASSERT_TRUE(sender->send_command("charge", {{"n", 14}}, service));
  ASSERT_TRUE(eventually([&] { return good.distinct() == 1; }));
  ASSERT_TRUE(eventually([&] { return dead.snapshot().size() == 2; }))
      << "dead letters: " << dead.snapshot().size();
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(calls.load(), 2) << "the poison message is not retried; the undecodable one never "
                                "reaches the handler";
  std::vector<std::string> reasons;
  for (const auto& m : dead.snapshot()) {
    reasons.push_back(m.metadata().headers.at(std::string(headers::kDeadLetterReason)));
    EXPECT_EQ(m.metadata().headers.at(std::string(headers::kDeadLetterSubject)), subject);
  }
  std::sort(reasons.begin(), reasons.end());
  EXPECT_NE(reasons[0].find("amount is negative"), std::string::npos) << reasons[0];
  EXPECT_NE(reasons[1].find("id"), std::string::npos) << reasons[1];
}

// TLS with client certificates: the broker verifies the client, the client the broker.
TEST(RabbitMqTls, ServerAndClientCertificates) {
  testing::TempDir dir;
  ASSERT_TRUE(testing::make_certificates(dir.path()))
      << "openssl failed; see " << dir.path() / "openssl.log";
  const auto file = [&](const char* name) { return (dir.path() / name).string(); };
  const int tls_port = free_port();
  testing::PrivateRabbitMqOptions options;
  options.extra_config = "listeners.ssl.default = 127.0.0.1:" + std::to_string(tls_port) +
                         "\nssl_options.cacertfile = " + file("ca.pem") +
                         "\nssl_options.certfile = " + file("server.pem") +
                         "\nssl_options.keyfile = " + file("server.key") +
                         "\nssl_options.verify = verify_peer"
                         "\nssl_options.fail_if_no_peer_cert = true\n";
  testing::PrivateRabbitMq broker(options);
  ASSERT_TRUE(broker.running()) << broker.log();
  ASSERT_TRUE(eventually([&] { return testing::port_open(tls_port); }, 20s)) << broker.log();

  auto config = config_for("amqps://guest:guest@localhost:" + std::to_string(tls_port) + "/");
  config.tls.ca_file = file("ca.pem");
  config.tls.cert_file = file("client.pem");
  config.tls.key_file = file("client.key");
  auto accepted = connect_with(config);
  EXPECT_TRUE(accepted) << accepted.error().describe();

  // Messages flow over it.
  Seen seen;
  auto bus = rabbit_bus(config, "tls");
  ASSERT_TRUE(bus->subscribe_to_events({"secured"}, seen.handler(), "tls_readers"));
  ASSERT_TRUE(bus->publish_event("secured", {{"n", 1}}));
  EXPECT_TRUE(eventually([&] { return seen.distinct() == 1; }));

  // Without a client certificate the broker refuses the handshake.
  auto anonymous = config;
  anonymous.tls.cert_file.clear();
  anonymous.tls.key_file.clear();
  EXPECT_FALSE(connect_with(anonymous));
  // A client that does not trust the broker's CA refuses the broker.
  auto untrusting = config;
  untrusting.tls.ca_file = file("client.pem");
  EXPECT_FALSE(connect_with(untrusting));
}

// A broker restart: durable queues and persistent messages survive, nothing confirmed is lost,
// and the running buses reconnect and resume consuming by themselves.
TEST(RabbitMqRestart, NothingConfirmedIsLostAndTheBusRecovers) {
  testing::PrivateRabbitMq broker;
  ASSERT_TRUE(broker.running());
  auto config = config_for(broker.url());
  config.outage_wait = 30s;
  const std::string service = "restart_" + unique("svc");
  Seen seen;
  auto sender = rabbit_bus(config, "orders");
  {
    // The service's queue exists (durable) from its first subscription on.
    auto first = rabbit_bus(config, service);
    ASSERT_TRUE(first->handle_commands({"pack"}, seen.handler(), service));
    ASSERT_TRUE(first->stop());
  }
  for (int n = 0; n < 20; ++n) {
    auto sent = sender->send_command("pack", {{"n", n}}, service);
    ASSERT_TRUE(sent) << sent.error().describe();
  }
  ASSERT_TRUE(broker.restart(SIGKILL));
  // The sender reconnects by itself: commands sent after the restart get through too.
  for (int n = 20; n < 25; ++n) {
    auto sent = sender->send_command("pack", {{"n", n}}, service);
    ASSERT_TRUE(sent) << sent.error().describe();
  }
  auto consumer = rabbit_bus(config, service);
  ASSERT_TRUE(consumer->handle_commands({"pack"}, seen.handler(), service));
  ASSERT_TRUE(eventually([&] { return seen.distinct() == 25; }, 30s))
      << "after the restart " << seen.distinct() << " of 25 were handled";
  // A consuming bus that lives through a second restart resumes by itself.
  ASSERT_TRUE(broker.restart(SIGTERM));
  for (int n = 25; n < 30; ++n) {
    auto sent = sender->send_command("pack", {{"n", n}}, service);
    ASSERT_TRUE(sent) << sent.error().describe();
  }
  ASSERT_TRUE(eventually([&] { return seen.distinct() == 30; }, 30s))
      << "after the second restart " << seen.distinct() << " of 30 were handled";
}

// A broker SIGKILLed and restarted under a running sender: every send rides through (a send
// in flight when the connection dropped, or made while it was down, failed with `unavailable`
// at once), and every one confirmed reaches the service.
TEST(RabbitMqRestart, SendersRideThroughABrokerRestart) {
  testing::PrivateRabbitMq broker;
  ASSERT_TRUE(broker.running());
  auto config = config_for(broker.url());
  config.outage_wait = 2s;
  const std::string service = "ride_" + unique("svc");
  Seen seen;
  auto sender = rabbit_bus(config, "orders");
  {
    auto first = rabbit_bus(config, service);  // the service's durable queue, from now on
    ASSERT_TRUE(first->handle_commands({"pack"}, seen.handler(), service));
    ASSERT_TRUE(first->stop());
  }
  std::atomic<bool> stop{false};
  std::mutex mutex;
  std::set<int> confirmed;
  std::vector<std::string> failures;
  std::thread sending([&] {
    for (int n = 0; !stop; ++n) {
      auto sent = sender->send_command("pack", {{"n", n}}, service);
      std::lock_guard lock(mutex);
      if (sent) {
        confirmed.insert(n);
      } else {
        failures.push_back(sent.error().describe());
      }
      std::this_thread::sleep_for(10ms);
    }
  });
  std::this_thread::sleep_for(500ms);
  ASSERT_TRUE(broker.restart(SIGKILL));
  std::this_thread::sleep_for(1s);
  stop = true;
  sending.join();
  auto consumer = rabbit_bus(config, service);
  ASSERT_TRUE(consumer->handle_commands({"pack"}, seen.handler(), service));
  std::lock_guard lock(mutex);
  // The outage (a restart, some seconds) is far shorter than a send's deadline (60 s).
  EXPECT_TRUE(failures.empty()) << failures.size() << " failed, first: " << failures.front();
  ASSERT_GT(confirmed.size(), 20u);
  EXPECT_TRUE(eventually(
      [&] {
        for (int n : confirmed) {
          if (!seen.numbers().contains(n)) return false;
        }
        return true;
      },
      30s))
      << seen.distinct() << " of the " << confirmed.size() << " confirmed were handled";
}

}  // namespace
}  // namespace marty::messaging
