// The AWS backends against the emulators that scripts/brokers starts, with the AWS SDK for
// JavaScript doing the same work in the same run as the baseline (tools/aws-emulators/
// sdk-bench.mjs, run with node): publishing events to an SNS topic, sending commands to an SQS
// queue, and consuming a queue. The emulators (single-threaded Node servers sharing the
// machine's two cores) bound every figure; the ratio is what matters. CPU: the client's CPU
// microseconds per message: this process for the bus, the node process (its timed part) for
// the SDK; the emulators are neither.
//
// What the bus sends (sns_backend.cpp, sqs_queues.cpp, aws_wire.cpp): Publish / SendMessage
// (the Query protocol, as SDK 3.445 also speaks for SQS) with the JSON body it serializes from
// the caller's value on each send, and the message attributes ce_specversion, ce_id (a fresh
// UUIDv7), ce_source, ce_type, ce_time (fresh, RFC 3339 with microseconds) and content-type,
// all of type String. Its subscription reads with ReceiveMessage (MaxNumberOfMessages 1 on the
// emulator, WaitTimeSeconds 1, VisibilityTimeout 2, the attributes ApproximateReceiveCount and
// MessageGroupId, every message attribute), one receive in flight, and deletes each message
// without holding up the next receive.
//
// The baselines: the SDK doing the same calls with the same attribute names and sizes (a fresh
// UUID and time per message), serializing the same JSON value per message, with the same number
// of calls in flight (--concurrency for sends, one receive for consuming) and the same receive
// parameters; see sdk-bench.mjs.
// usage: marty_bench_aws [--messages N] [--concurrency N] [--runs N]
#include <cstdio>
#include <cstdlib>
#include <future>
#include <string>

#include "../src/backends/aws/aws_query.hpp"
#include "../src/backends/aws/aws_wire.hpp"
#include "../src/backends/aws/sqs_queues.hpp"
#include "../tests/support/aws_emulators.hpp"
#include "bench_bus.hpp"
#include "marty/messaging/aws_backend.hpp"

namespace mm = marty::messaging;
using namespace marty::messaging::bench;
using mm::aws::QueryClient;

namespace {

struct Options {
  std::size_t messages = 2000;
  std::size_t concurrency = 16;
  int runs = 3;
};

std::string env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') {
    std::fprintf(stderr, "%s is not set: run scripts/brokers start and source its env.sh\n", name);
    std::exit(2);
  }
  return value;
}

std::string unique(const std::string& base) {
  const std::string id = mm::make_uuid_v7();
  return base + "_" + id.substr(id.size() - 12);
}

mm::aws::AwsSnsConfig config() {
  (void)env("MARTY_SNS_ENDPOINT");  // set, or the program ends saying so
  (void)env("MARTY_SQS_ENDPOINT");
  return mm::testing::emulator_sns_config();
}

// A plain Query client, to make the topic and queue both sides use.
struct Plain {
  std::shared_ptr<mm::aws::HttpClient> http =
      std::make_shared<mm::aws::HttpClient>(std::chrono::seconds(2));
  asio::io_context context;

  std::string call(const std::string& endpoint, const char* service, const char* version,
                   std::string action, mm::aws::QueryParameters parameters, const char* field) {
    QueryClient client(http, mm::aws::QueryEndpoint{endpoint, "us-east-1", service, version},
                       mm::aws::Credentials{"test", "test", ""});
    std::promise<mm::Result<mm::aws::XmlElement>> reply;
    asio::co_spawn(
        context,
        [&]() -> asio::awaitable<void> {
          reply.set_value(co_await client.call(action, parameters, std::chrono::seconds(10), 3));
        },
        asio::detached);
    context.restart();
    context.run();
    auto got = reply.get_future().get();
    if (!got) std::fprintf(stderr, "%s\n", got.error().describe().c_str());
    check(got.has_value(), "a plain AWS call");
    return got->text_of(field);
  }
};

// The SDK's run of `mode` on `target` (messages of `type`): messages per second, and the node
// process's CPU per message over its timed part.
Rate sdk_rate(const std::string& mode, const std::string& endpoint, const std::string& target,
              const std::string& type, const Options& options) {
  const std::string command = "node " + std::string(MARTY_SDK_BENCH_SCRIPT) + " " + mode + " '" +
                              endpoint + "' '" + target + "' " + std::to_string(options.messages) +
                              " " + std::to_string(mode == "consume" ? 1 : options.concurrency) +
                              " " + std::to_string(kPayloadBytes) + " '" + type + "'";
  std::string output;
  if (FILE* pipe = ::popen(command.c_str(), "r")) {
    char buffer[4096];
    while (std::size_t n = std::fread(buffer, 1, sizeof(buffer), pipe)) output.append(buffer, n);
    ::pclose(pipe);
  }
  auto parsed = mm::Json::parse(output, nullptr, false);
  if (parsed.is_discarded() || !parsed.contains("seconds") || !parsed.contains("cpu_us")) {
    std::fprintf(stderr, "the SDK run said: %s\n", output.c_str());
    check(false, "the AWS SDK for JavaScript run");
  }
  return {static_cast<double>(options.messages) / parsed["seconds"].get<double>(),
          parsed["cpu_us"].get<double>()};
}

struct Rates {
  Rate bus, sdk;
};

const mm::Json& payload() {
  static const mm::Json prototype{{"p", std::string(kPayloadBytes - 8, 'x')}};
  return prototype;
}

// Events published to an SNS topic, `concurrency` in flight on both sides.
Rates publish_events(const Options& options) {
  Rates rates;
  const std::string type = unique("bench_event");
  const std::string subject = mm::subject::for_event(type);
  Plain plain;
  const std::string topic =
      plain.call(env("MARTY_SNS_ENDPOINT"), "sns", "2010-03-31", "CreateTopic",
                 {{"Name", mm::aws::aws_name_for("", subject, 256, false)}}, "TopicArn");
  rates.sdk = sdk_rate("publish", env("MARTY_SNS_ENDPOINT"), topic, type, options);
  auto bus =
      started_bus(mm::MessageBackendType::aws_sns, mm::aws::make_sns_backend(config()), false);
  check(bus->publish_event(type, payload()).has_value(), "first publish (makes nothing new)");
  RateMeter meter(options.messages);
  publish_concurrently(*bus, options.messages, options.concurrency,
                       [&]() -> asio::awaitable<mm::Result<void>> {
                         mm::Json data = payload();
                         co_return co_await bus->bus().publish_event(type, std::move(data));
                       });
  rates.bus = meter.stop();
  return rates;
}

// Commands sent to an SQS queue, `concurrency` in flight; then the queue consumed (one receive
// in flight, as a subscription reads), each side draining what it sent.
std::pair<Rates, Rates> commands(const Options& options) {
  Rates send, consume;
  const std::string service = unique("bench_service");
  const std::string subject = mm::subject::for_command(service, "work");
  Plain plain;
  const std::string queue = plain.call(
      env("MARTY_SQS_ENDPOINT"), "sqs", "2012-11-05", "CreateQueue",
      {{"QueueName", mm::aws::aws_name_for("", subject, mm::aws::kQueueNameRoom, false)}},
      "QueueUrl");
  send.sdk = sdk_rate("send", env("MARTY_SQS_ENDPOINT"), queue, "work", options);
  consume.sdk = sdk_rate("consume", env("MARTY_SQS_ENDPOINT"), queue, "work", options);

  auto bus =
      started_bus(mm::MessageBackendType::aws_sns, mm::aws::make_sns_backend(config()), false);
  RateMeter send_meter(options.messages);
  publish_concurrently(
      *bus, options.messages, options.concurrency, [&]() -> asio::awaitable<mm::Result<void>> {
        mm::Json data = payload();
        co_return co_await bus->bus().send_command("work", std::move(data), service);
      });
  send.bus = send_meter.stop();

  std::atomic<std::size_t> received{0};
  std::promise<Steady::time_point> done;
  auto handler = mm::sync_handler([&](const mm::Message&) -> mm::Result<void> {
    if (received.fetch_add(1) + 1 == options.messages) done.set_value(Steady::now());
    return mm::ok();
  });
  RateMeter consume_meter(options.messages);
  check(bus->handle_commands({"work"}, handler, service).has_value(), "handle_commands");
  auto finished = done.get_future();
  check(finished.wait_for(std::chrono::seconds(600)) == std::future_status::ready,
        "the handler received everything");
  consume.bus = consume_meter.stop(finished.get());
  return {send, consume};
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  const bool parsed =
      parse_flags(argc, argv,
                  {{"--messages", [&](std::uint64_t v) { options.messages = v; }},
                   {"--concurrency", [&](std::uint64_t v) { options.concurrency = v; }},
                   {"--runs", [&](std::uint64_t v) { options.runs = static_cast<int>(v); }}},
                  "marty_bench_aws [--messages N] [--concurrency N] [--runs N]");
  if (!parsed) return 2;
  check(options.messages > 0 && options.runs > 0 && options.concurrency > 0, "counts above zero");
  (void)env("MARTY_AWS_EMULATORS_DIR");
  std::printf(
      "AWS benchmark against the emulators (SNS %s, SQS %s): %zu messages of %zu bytes, %zu in "
      "flight, median of %d runs\n\n",
      env("MARTY_SNS_ENDPOINT").c_str(), env("MARTY_SQS_ENDPOINT").c_str(), options.messages,
      kPayloadBytes, options.concurrency, options.runs);
  std::vector<Rate> bus[3], sdk[3];
  for (int run = 0; run < options.runs; ++run) {
    const Rates published = publish_events(options);
    const auto [sent, consumed] = commands(options);
    const Rates all[3] = {published, sent, consumed};
    for (int i = 0; i < 3; ++i) {
      bus[i].push_back(all[i].bus);
      sdk[i].push_back(all[i].sdk);
    }
  }
  const char* names[3] = {"events published to SNS", "commands sent to SQS",
                          "a queue consumed (one receive in flight)"};
  std::printf(
      "| measure                                  | SDK msg/s | SDK CPU | bus msg/s | bus CPU | "
      "bus/SDK |\n");
  std::printf(
      "|------------------------------------------|----------:|--------:|----------:|--------:|"
      "--------:|\n");
  Rate b[3], s[3];
  for (int i = 0; i < 3; ++i) {
    b[i] = median_rate(bus[i]);
    s[i] = median_rate(sdk[i]);
    std::printf("| %-40s | %9.0f | %7.1f | %9.0f | %7.1f | %7.2f |\n", names[i], s[i].per_second,
                s[i].cpu_us, b[i].per_second, b[i].cpu_us, b[i].per_second / s[i].per_second);
  }
  std::printf(
      "\nCPU: client CPU microseconds per message (the SDK's: its node process). bus/SDK: the "
      "medians' ratio (above 1: the bus is faster). The emulators bound both sides: they are "
      "single-threaded Node servers on the same cores.\n\n");
  print_result("aws.sns.publish.vs_sdk", b[0].per_second, s[0].per_second);
  print_result("aws.sqs.send.vs_sdk", b[1].per_second, s[1].per_second);
  print_result("aws.sqs.consume.vs_sdk", b[2].per_second, s[2].per_second);
  return 0;
}
