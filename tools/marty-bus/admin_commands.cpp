// backends, dlq and config: what an operator asks of the bus itself.
#include <iomanip>
#include <iostream>
#include <sstream>

#include "cli.hpp"

namespace marty::bus_cli {

namespace {

std::string yes_no(bool value) {
  return value ? "yes" : "no";
}

// Rows are capabilities, columns backends: seven backends fit a terminal that way round.
void print_capability_table(const std::vector<std::pair<std::string, const Capabilities*>>& columns,
                            const std::vector<std::string>& status) {
  std::vector<std::pair<std::string, std::function<std::string(const Capabilities&)>>> rows = {
      {"pub_sub",
       [](const Capabilities& c) { return yes_no(c.supports(MessagingPattern::pub_sub)); }},
      {"p2p",
       [](const Capabilities& c) { return yes_no(c.supports(MessagingPattern::point_to_point)); }},
      {"req_resp",
       [](const Capabilities& c) {
         return yes_no(c.supports(MessagingPattern::request_response));
       }},
      {"streaming",
       [](const Capabilities& c) { return yes_no(c.supports(MessagingPattern::streaming)); }},
      {"broadcast",
       [](const Capabilities& c) { return yes_no(c.supports(MessagingPattern::broadcast)); }},
      {"delivery", [](const Capabilities& c) { return std::string(to_string(c.delivery)); }},
      {"ordering", [](const Capabilities& c) { return std::string(to_string(c.ordering)); }},
      {"replay", [](const Capabilities& c) { return yes_no(c.persistent_replay); }},
      {"consumer groups", [](const Capabilities& c) { return yes_no(c.consumer_groups); }},
      {"durable groups", [](const Capabilities& c) { return yes_no(c.durable_groups); }},
      {"native request/reply",
       [](const Capabilities& c) { return yes_no(c.native_request_reply); }},
      {"delayed redelivery", [](const Capabilities& c) { return yes_no(c.delayed_redelivery); }},
      {"native dead letters", [](const Capabilities& c) { return yes_no(c.native_dead_letter); }},
      {"dead-letter admin",
       [](const Capabilities& c) { return yes_no(c.inspectable_dead_letters); }},
      {"headers", [](const Capabilities& c) { return yes_no(c.headers); }},
      {"wildcards", [](const Capabilities& c) { return yes_no(c.wildcard_subscriptions); }},
      {"dedup by id", [](const Capabilities& c) { return yes_no(c.deduplicates_by_id); }},
      {"consumer lag", [](const Capabilities& c) { return yes_no(c.consumer_lag); }},
      {"max payload", [](const Capabilities& c) {
         return c.max_payload_bytes == 0 ? std::string("-") : std::to_string(c.max_payload_bytes);
       }}};
  std::size_t label_width = 0;
  for (const auto& row : rows) label_width = std::max(label_width, row.first.size());
  std::vector<std::size_t> widths;
  for (std::size_t i = 0; i < columns.size(); ++i) {
    std::size_t width = std::max<std::size_t>(columns[i].first.size(), 13);
    if (!status.empty()) width = std::max(width, status[i].size());
    widths.push_back(width);
  }
  auto line = [&](const std::string& label, auto cell) {
    std::cout << std::left << std::setw(static_cast<int>(label_width)) << label;
    for (std::size_t i = 0; i < columns.size(); ++i) {
      std::cout << "  " << std::setw(static_cast<int>(widths[i])) << cell(i);
    }
    std::cout << "\n";
  };
  line("", [&](std::size_t i) { return columns[i].first; });
  if (!status.empty()) line("connection", [&](std::size_t i) { return status[i]; });
  for (const auto& [label, value] : rows) {
    line(label, [&](std::size_t i) { return value(*columns[i].second); });
  }
}

DeadLetterFilter dead_letter_filter(const std::string& subject, const std::vector<std::string>& ids,
                                    const std::string& group, const std::string& reason,
                                    std::size_t limit) {
  DeadLetterFilter filter(subject);
  filter.ids.insert(ids.begin(), ids.end());
  filter.group = group;
  filter.reason_contains = reason;
  filter.limit = limit;
  return filter;
}

Json dead_letter_json(const DeadLetter& letter) {
  Json out = {{"id", letter.id},
              {"subject", letter.subject},
              {"reason", letter.reason},
              {"attempts", letter.attempts},
              {"backend", letter.backend}};
  if (!letter.group.empty()) out["group"] = letter.group;
  if (letter.pattern) out["pattern"] = std::string(to_string(*letter.pattern));
  if (letter.first_failure) out["first_failure"] = format_rfc3339(*letter.first_failure);
  if (letter.last_failure) out["last_failure"] = format_rfc3339(*letter.last_failure);
  out["message"] = message_json(letter.original());
  return out;
}

}  // namespace

void add_backends_command(CLI::App& app, GlobalOptions& options) {
  auto* command = app.add_subcommand("backends", "the configured backends and what each can do");
  auto connect = std::make_shared<bool>(false);
  command->add_flag(
      "--connect", *connect,
      "also connect to each, then disconnect (config check --connect also checks the routes)");
  command->callback([&options, connect] {
    Session session(options);
    const config::BusConfig& configuration = session.configuration();
    std::vector<std::pair<std::string, std::shared_ptr<Backend>>> backends;
    for (const config::BackendSettings& settings : configuration.backends) {
      backends.emplace_back(std::string(to_string(settings.type)),
                            session.bus().bus().backend(settings.type));
    }
    if (backends.empty()) {  // the bus's own default
      backends.emplace_back("memory", make_memory_backend());
    }
    // Each backend connected on its own, so that every one gets a verdict.
    std::vector<std::string> status;
    std::optional<Error> first_failure;
    if (*connect) {
      for (auto& [name, backend] : backends) {
        auto connected = session.run(backend->connect(), "while connecting to " + name);
        if (connected) {
          status.push_back("ok");
          (void)session.bus().run(backend->close(SteadyClock::now() + std::chrono::seconds(5)));
        } else {
          status.push_back("FAILED");
          std::cerr << "marty-bus: " << name << ": " << connected.error().describe() << "\n";
          if (!first_failure) first_failure = connected.error();
        }
      }
    }
    if (options.json) {
      for (std::size_t i = 0; i < backends.size(); ++i) {
        Json line = {{"backend", backends[i].first},
                     {"capabilities", to_json(backends[i].second->capabilities())}};
        if (!status.empty()) line["connection"] = status[i];
        std::cout << line.dump() << "\n";
      }
      if (first_failure) throw CommandFailed{*first_failure};
      return;
    }
    std::vector<std::pair<std::string, const Capabilities*>> columns;
    for (const auto& [name, backend] : backends)
      columns.emplace_back(name, &backend->capabilities());
    print_capability_table(columns, status);
    if (first_failure) throw CommandFailed{*first_failure};
  });
}

void add_dlq_commands(CLI::App& app, GlobalOptions& options) {
  auto* dlq = app.add_subcommand("dlq", "dead letters: list, requeue, purge");
  dlq->require_subcommand(1);
  struct Selection {
    std::string subject;
    std::vector<std::string> ids;
    std::string group;
    std::string reason;
    std::size_t limit = 0;
    bool all = false;
  };
  auto add_selection = [](CLI::App& command, Selection& s, bool destructive) {
    command
        .add_option(
            "subject", s.subject,
            "the subject the messages failed on (events.order_placed, commands.billing.charge)")
        ->required();
    command.add_option("--id", s.ids, "only this dead letter (repeatable)");
    command.add_option("-g,--group", s.group,
                       "only those a handler of this group or service gave up on");
    command.add_option("--reason", s.reason, "only those whose reason contains this text");
    command.add_option("--limit", s.limit, "at most this many, oldest first");
    if (destructive)
      command.add_flag("--all", s.all, "every dead letter that matches (without --id)");
  };
  {
    auto* command = dlq->add_subcommand("list", "the dead letters of a subject, oldest first");
    auto s = std::make_shared<Selection>();
    add_selection(*command, *s, false);
    command->callback([&options, s] {
      Session session(options);
      session.start();
      auto letters = need(session.bus().list_dead_letters(
          dead_letter_filter(s->subject, s->ids, s->group, s->reason, s->limit)));
      session.stop();
      for (const DeadLetter& letter : letters) {
        if (options.json) {
          std::cout << dead_letter_json(letter).dump(-1, ' ', false, Json::error_handler_t::replace)
                    << "\n";
          continue;
        }
        std::cout << letter.id << "  " << letter.subject << "  attempts=" << letter.attempts
                  << (letter.group.empty() ? "" : "  group=" + letter.group)
                  << (letter.last_failure ? "  failed=" + format_rfc3339(*letter.last_failure) : "")
                  << "  [" << letter.backend << "]\n  reason: " << letter.reason << "\n"
                  << render_message(letter.original(), false);
      }
      if (!options.json) std::cout << letters.size() << " dead letter(s)\n";
    });
  }
  auto destructive = [&](const char* name, const char* help, bool requeue) {
    auto* command = dlq->add_subcommand(name, help);
    auto s = std::make_shared<Selection>();
    add_selection(*command, *s, true);
    command->callback([&options, s, requeue, name] {
      if (s->ids.empty() && !s->all) {
        fail(errc::invalid_argument,
             std::string("dlq ") + name + ": say which dead letters, with --id or --all");
      }
      Session session(options);
      session.start();
      auto filter = dead_letter_filter(s->subject, s->ids, s->group, s->reason, s->limit);
      // Interrupted, each letter is either handled or still listed, but one being requeued
      // may have been published again and still be listed.
      const std::size_t done = need(
          requeue
              ? session.run(session.bus().bus().requeue_dead_letters(filter), "during dlq requeue")
              : session.run(session.bus().bus().purge_dead_letters(filter), "during dlq purge"));
      session.stop();
      if (options.json) {
        std::cout << Json{{requeue ? "requeued" : "purged", done}}.dump() << "\n";
      } else {
        std::cout << (requeue ? "requeued " : "purged ") << done << " dead letter(s)\n";
      }
    });
  };
  destructive("requeue", "publish dead letters again as first published, then remove them", true);
  destructive("purge", "delete dead letters for good", false);
}

void add_config_commands(CLI::App& app, GlobalOptions& options) {
  auto* config_command = app.add_subcommand("config", "configuration files");
  config_command->require_subcommand(1);
  auto* check =
      config_command->add_subcommand("check", "read a configuration file and report every problem");
  auto file = std::make_shared<std::string>();
  auto connect = std::make_shared<bool>(false);
  check->add_option("file", *file, "the file (default: --config)");
  check->add_flag("--connect", *connect,
                  "also connect to every backend and check the routes against them");
  check->callback([&options, file, connect] {
    GlobalOptions checked = options;
    if (!file->empty()) checked.config_path = *file;
    if (checked.config_path.empty()) fail(errc::invalid_argument, "config check: no file given");
    // Reads and checks; throws listing every problem.
    const config::BusConfig c = load_configuration(checked);
    // A file may be meant for a service built with backends this marty-bus lacks: its settings
    // are checked all the same, only assembling the bus needs every backend.
    std::vector<std::string> unavailable;
    const config::BackendMakers makers = linked_makers();
    for (const auto& b : c.backends) {
      if (makers.count(b.type) == 0) unavailable.emplace_back(to_string(b.type));
    }
    if (unavailable.empty() || *connect) {
      Session session(checked);  // assembles the bus: its routes and pattern configs
      if (*connect) {
        session.start();
        session.stop();
      }
    }
    std::string backends;
    for (const auto& b : c.backends)
      backends += (backends.empty() ? "" : ", ") + std::string(to_string(b.type));
    if (options.json) {
      Json out = {{"file", c.source},
                  {"ok", true},
                  {"backends", Json::array()},
                  {"routes", c.routes.size()},
                  {"sagas", c.sagas.size()},
                  {"connected", *connect},
                  {"not_in_this_build", unavailable}};
      for (const auto& b : c.backends) out["backends"].push_back(std::string(to_string(b.type)));
      std::cout << out.dump() << "\n";
      return;
    }
    std::cout << c.source << ": ok\n"
              << "  service        " << c.options.service_name << "\n"
              << "  backends       " << (backends.empty() ? "(none: memory)" : backends) << "\n"
              << "  default        "
              << (c.default_backend ? std::string(to_string(*c.default_backend))
                                    : "(by capability)")
              << "\n"
              << "  routes         " << c.routes.size() << "\n"
              << "  patterns set   " << c.patterns.size() << "\n"
              << "  sagas          " << c.sagas.size() << ", store "
              << (c.saga_store.kind == config::SagaStoreSettings::Kind::sqlite
                      ? "sqlite " + c.saga_store.path
                      : std::string("memory"))
              << "\n";
    if (!unavailable.empty()) {
      std::string names;
      for (const auto& name : unavailable) names += (names.empty() ? "" : ", ") + name;
      std::cout << "  not built in   " << names
                << " (their settings are checked; the routes and pattern configs against the "
                   "backends only by a marty-bus built with them)\n";
    }
    if (*connect) std::cout << "  connected to every backend; routes served\n";
  });
}

}  // namespace marty::bus_cli
