// pub, send, sub, request and reply: the patterns, from the command line.
#include <atomic>
#include <iostream>
#include <mutex>

#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>

#include "cli.hpp"

namespace marty::bus_cli {

namespace {

// What pub, send and request share: the data and the metadata options.
struct Outgoing {
  std::string type;
  std::string data = "{}";
  std::string key;
  std::string correlation_id;
  std::vector<std::string> headers;

  void add_to(CLI::App& command, const char* type_help) {
    command.add_option("type", type, type_help)->required();
    command.add_option("data", data,
                       "JSON data; @file reads a file, - standard input (default {})");
    command.add_option("-k,--key", key, "partition key: messages with one key stay in order");
    command.add_option("--correlation-id", correlation_id, "correlation id");
    command.add_option("-H,--header", headers, "a header, name=value (repeatable)");
  }

  MessageMetadata metadata() const {
    MessageMetadata m;
    m.partition_key = key;
    m.correlation_id = correlation_id;
    for (const std::string& header : headers) {
      const auto equals = header.find('=');
      if (equals == std::string::npos || equals == 0) {
        fail(errc::invalid_argument, "--header " + header + ": expected name=value");
      }
      m.headers[header.substr(0, equals)] = header.substr(equals + 1);
    }
    return m;
  }
};

// Prints each message whole, one at a time, whichever bus thread delivers it.
class Printer {
 public:
  explicit Printer(bool json) : json_(json) {}
  void print(const std::string& text) {
    std::lock_guard lock(mutex_);
    std::cout << text << std::flush;
  }
  bool json() const { return json_; }

 private:
  bool json_;
  std::mutex mutex_;
};

// "--fail code[:message]" as the error a handler returns.
std::optional<Error> failure_argument(const std::string& text, const char* default_message) {
  if (text.empty()) return std::nullopt;
  const auto colon = text.find(':');
  const std::string name = text.substr(0, colon);
  const errc code = errc_from_string(name);
  if (code == errc::internal && name != "internal") {
    fail(errc::invalid_argument, "--fail " + text + ": '" + name + "' is not an error code");
  }
  return Error(code, colon == std::string::npos ? default_message : text.substr(colon + 1));
}

// Keeps the bus alive while it unsubscribes.
asio::awaitable<Result<void>> unsubscribe(std::shared_ptr<UnifiedEventBus> bus, SubscriptionId id) {
  co_return co_await bus->unsubscribe(id);
}

// Stops a subscription from its own handler, which must not await the unsubscribe (it waits
// for that handler): spawned instead, as soon as both the id and the wish to stop are known.
// Holds the bus weakly: the bus holds the handler that holds this.
class Intake {
 public:
  explicit Intake(const std::shared_ptr<UnifiedEventBus>& bus) : bus_(bus) {}
  void subscribed(SubscriptionId id) {
    std::lock_guard lock(mutex_);
    id_ = id;
    if (stop_) spawn();
  }
  void stop() {
    std::lock_guard lock(mutex_);
    stop_ = true;
    if (id_) spawn();
  }
  /// Waits for a spawned unsubscribe: it lets the last handler's acknowledgement through,
  /// which the bus's stop() would not wait for once the subscription is gone. Its error (the
  /// drain ran out: what the handlers held was released for redelivery), if any.
  Result<void> wait() {
    std::future<Result<void>> done;
    {
      std::lock_guard lock(mutex_);
      done = std::move(done_);
    }
    return done.valid() ? done.get() : ok();
  }

 private:
  void spawn() {
    if (auto bus = bus_.lock()) {
      done_ = asio::co_spawn(bus->get_executor(), unsubscribe(bus, *id_), asio::use_future);
    }
  }
  std::weak_ptr<UnifiedEventBus> bus_;
  std::mutex mutex_;
  std::optional<SubscriptionId> id_;
  bool stop_ = false;
  std::future<Result<void>> done_;
};

std::optional<std::chrono::milliseconds> optional_duration(const std::string& text,
                                                           const std::string& what) {
  if (text.empty()) return std::nullopt;
  return duration_argument(text, what);
}

}  // namespace

void add_messaging_commands(CLI::App& app, GlobalOptions& options) {
  {
    auto* command =
        app.add_subcommand("pub", "publish an event (pub/sub: every subscriber group gets it)");
    auto outgoing = std::make_shared<Outgoing>();
    auto count = std::make_shared<std::size_t>(1);
    outgoing->add_to(*command, "event type (subject events.<type>)");
    command->add_option("-n,--count", *count, "publish it this many times")
        ->check(CLI::PositiveNumber);
    command->callback([&options, outgoing, count] {
      Json data = json_argument(outgoing->data, "data");
      const MessageMetadata metadata = outgoing->metadata();
      Session session(options);
      std::vector<std::string> published;  // the ids of the events the broker acknowledged
      // Says how far pub got on every exit (done, failed, interrupted): how many, and with
      // --json which. The one in flight at a failure or interruption may be published too.
      auto report = [&options, outgoing, count, &published] {
        if (options.json) {
          std::cout << Json{{"type", outgoing->type},
                            {"published", published.size()},
                            {"of", *count},
                            {"ids", published}}
                           .dump()
                    << std::endl;
        } else if (published.size() == *count) {
          std::cout << "published " << *count << " event(s) " << outgoing->type << std::endl;
        } else {
          std::cout << "published " << published.size() << " of " << *count << " event(s) "
                    << outgoing->type << std::endl;
        }
      };
      on_interruption(report);
      try {
        session.start();
        for (std::size_t i = 0; i < *count; ++i) {
          const std::string progress = "during pub, after " + std::to_string(i) + " of " +
                                       std::to_string(*count) + " event(s) were published";
          // Between publishes too: a healthy broker answers each too quickly for the wait.
          if (stop_requested()) exit_interrupted(progress);
          MessageMetadata one = metadata;
          one.message_id = make_uuid_v7();  // ours, so that it can be reported
          auto sent = session.run(session.bus().bus().publish_event(outgoing->type, data, one),
                                  progress + " (the one in flight may be too)");
          if (!sent) throw CommandFailed{std::move(sent).error().with_context(progress)};
          published.push_back(std::move(one.message_id));
        }
      } catch (const CommandFailed&) {
        report();
        throw;
      }
      session.stop();
      report();
    });
  }
  {
    auto* command =
        app.add_subcommand("send", "send a command to one instance of a service (point-to-point)");
    auto outgoing = std::make_shared<Outgoing>();
    auto service = std::make_shared<std::string>();
    outgoing->add_to(*command, "command type (subject commands.<service>.<type>)");
    command->add_option("-s,--to", *service, "the service that handles it")->required();
    command->callback([&options, outgoing, service] {
      Json data = json_argument(outgoing->data, "data");
      Session session(options);
      session.start();
      need(session.run(session.bus().bus().send_command(outgoing->type, std::move(data), *service,
                                                        outgoing->metadata()),
                       "during send"));
      session.stop();
      if (!options.json)
        std::cout << "sent command " << outgoing->type << " to " << *service << "\n";
    });
  }
  {
    auto* command = app.add_subcommand("request", "ask a service a query and print its reply");
    auto outgoing = std::make_shared<Outgoing>();
    auto service = std::make_shared<std::string>();
    auto timeout = std::make_shared<std::string>();
    outgoing->add_to(*command, "query type (subject queries.<service>.<type>)");
    command->add_option("-s,--to", *service, "the service that answers it")->required();
    command->add_option("-t,--timeout", *timeout,
                        "how long to wait for the reply (default: the pattern's, 30s)");
    command->callback([&options, outgoing, service, timeout] {
      Json data = json_argument(outgoing->data, "data");
      const auto limit = optional_duration(*timeout, "--timeout");
      Session session(options);
      session.start();
      Json reply =
          need(session.run(session.bus().bus().query(outgoing->type, std::move(data), *service,
                                                     limit, outgoing->metadata()),
                           "during request"));
      session.stop();
      std::cout << (options.json ? reply.dump() : reply.dump(2)) << "\n";
    });
  }
  {
    auto* command =
        app.add_subcommand("sub", "print events as they arrive (until Ctrl-C, --count or --for)");
    auto types = std::make_shared<std::vector<std::string>>();
    auto group = std::make_shared<std::string>();
    auto count = std::make_shared<std::size_t>(0);
    auto for_how_long = std::make_shared<std::string>();
    command
        ->add_option("types", *types, "event types; * and > wildcards where the backend has them")
        ->required();
    command->add_option(
        "-g,--group", *group,
        "consumer group: its members share the events (durable where the backend keeps groups)");
    command->add_option("-n,--count", *count, "exit after this many events");
    command->add_option("--for", *for_how_long, "exit after this long (5s, 2m)");
    auto failure = std::make_shared<std::string>();
    command->add_option("--fail", *failure,
                        "fail every event with this error, code[:message], so that it is retried "
                        "and dead-lettered (testing retry and dead-letter settings)");
    command->callback([&options, types, group, count, for_how_long, failure] {
      const auto limit = optional_duration(*for_how_long, "--for");
      const std::optional<Error> refusal =
          failure_argument(*failure, "failed by marty-bus sub --fail");
      Session session(options);
      session.start();
      auto printer = std::make_shared<Printer>(options.json);
      auto received = std::make_shared<std::atomic<std::size_t>>(0);
      auto intake = std::make_shared<Intake>(session.shared_bus());
      const std::size_t wanted = *count;
      const SubscriptionId id = need(session.bus().subscribe_to_events(
          *types,
          sync_handler(
              [printer, received, intake, wanted, refusal](const Message& message) -> Result<void> {
                // One atomic step, so that subjects handled at once cannot both take the last.
                const std::size_t number = received->fetch_add(1) + 1;
                if (wanted != 0 && number > wanted) {
                  // Delivered before intake stopped: refused, so it stays with the broker for
                  // another member of the group (the refusal counts as an attempt).
                  return Error(errc::cancelled, "marty-bus sub: received what it asked for");
                }
                if (number == wanted) intake->stop();
                printer->print(render_message(message, printer->json()));
                if (refusal) return *refusal;
                return ok();
              }),
          *group));
      intake->subscribed(id);
      // On standard error, also with --json: a script waits for it to know the subscription
      // is in place, and standard output stays one JSON object per line.
      std::cerr << "listening on " << types->size() << " event type(s)\n";
      wait_until([&] { return wanted != 0 && received->load() >= wanted; }, limit);
      if (auto stopped = intake->wait(); !stopped) {
        std::cerr << "marty-bus: " << stopped.error().describe() << "\n";
      }
      session.stop();
      // Ctrl-C is how a tail ends: not a failure, even short of --count.
      if (wanted != 0 && received->load() < wanted && !stop_requested()) {
        fail(errc::deadline_exceeded, "received " + std::to_string(received->load()) + " of " +
                                          std::to_string(wanted) + " event(s)");
      }
    });
  }
  {
    auto* command = app.add_subcommand(
        "reply", "answer queries (a responder for testing; saga steps are queries too)");
    auto types = std::make_shared<std::vector<std::string>>();
    auto service = std::make_shared<std::string>();
    auto answer = std::make_shared<std::string>();
    auto failure = std::make_shared<std::string>();
    auto delay = std::make_shared<std::string>();
    auto count = std::make_shared<std::size_t>(0);
    auto for_how_long = std::make_shared<std::string>();
    command->add_option("types", *types, "query types to answer")->required();
    command->add_option("-s,--as", *service, "the service answering them")->required();
    command->add_option("-r,--reply", *answer,
                        "the reply (JSON; @file, -); default: the query's data");
    command->add_option(
        "--fail", *failure,
        "answer with this error instead: code[:message] (e.g. not_found:no such order)");
    command->add_option("--delay", *delay, "answer after this long (250ms, 3s)");
    command->add_option("-n,--count", *count, "exit after answering this many");
    command->add_option("--for", *for_how_long, "exit after this long");
    command->callback([&options, types, service, answer, failure, delay, count, for_how_long] {
      const auto limit = optional_duration(*for_how_long, "--for");
      std::optional<Json> fixed;
      if (!answer->empty()) fixed = json_argument(*answer, "--reply");
      const std::optional<Error> refusal = failure_argument(*failure, "refused by marty-bus reply");
      const std::chrono::milliseconds pause =
          delay->empty() ? std::chrono::milliseconds(0) : duration_argument(*delay, "--delay");
      Session session(options);
      session.start();
      auto printer = std::make_shared<Printer>(options.json);
      auto answered = std::make_shared<std::atomic<std::size_t>>(0);
      QueryHandler handler = [printer, answered, fixed, refusal,
                              pause](Message query) -> asio::awaitable<Result<Json>> {
        printer->print(render_message(query, printer->json()));
        if (pause.count() > 0) {  // a timer, not a sleep: other queries are answered meanwhile
          auto executor = co_await asio::this_coro::executor;
          asio::steady_timer timer(executor, pause);
          co_await timer.async_wait(asio::use_awaitable);
        }
        answered->fetch_add(1);
        if (refusal) co_return *refusal;
        if (fixed) co_return *fixed;
        auto data = query.try_json();
        if (!data) co_return data.error();
        co_return data->get();
      };
      HandlerOptions concurrent;
      concurrent.concurrency = 16;
      need(session.bus().handle_queries(*types, handler, *service, concurrent));
      std::cerr << "answering " << types->size() << " query type(s) as " << *service << "\n";
      const std::size_t wanted = *count;
      wait_until([&] { return wanted != 0 && answered->load() >= wanted; }, limit);
      session.stop();
    });
  }
}

}  // namespace marty::bus_cli
