// marty-kafka-mock: a Kafka cluster for tests, librdkafka's mock cluster run as a process of its
// own and reached over TCP like a real one (there is no Kafka broker package on Debian 12).
//
// usage: marty-kafka-mock [--brokers N] [--bootstrap-file FILE] [--control] [TOPIC:PARTITIONS...]
//   Prints the bootstrap servers on stdout (and writes them to FILE, atomically, once the
//   cluster listens), pre-creates the topics given, and runs until SIGTERM or SIGINT.
//   With --control it also reads commands on stdin, one per line, answering "ok" or "error: ...":
//     down ID           takes broker ID (1..N) down (its connections drop, it refuses new ones)
//     up ID             brings it back
//     rtt ID MS         delays the broker's responses by MS milliseconds
//     topic NAME PARTS  creates a topic
//     quit              stops the cluster
//   End of input with --control stops the cluster too (the test that drove it is gone).
//
// The mock keeps each partition's log in memory (at most about 5 MiB or 100,000 message sets),
// supports idempotent producers and consumer groups, and not CreateTopics through the admin
// API: topics are auto-created (4 partitions) or made here.
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

std::atomic<bool> running{true};

void on_signal(int) {
  running = false;
}

int usage(const char* why) {
  std::fprintf(stderr,
               "marty-kafka-mock: %s\n"
               "usage: marty-kafka-mock [--brokers N] [--bootstrap-file FILE] [--control] "
               "[TOPIC:PARTITIONS...]\n",
               why);
  return 2;
}

bool parse_int(const std::string& text, int& out) {
  char* end = nullptr;
  const long value = std::strtol(text.c_str(), &end, 10);
  if (end == text.c_str() || *end != '\0' || value < 0 || value > 1'000'000) return false;
  out = static_cast<int>(value);
  return true;
}

// Runs one control command; returns the answer line.
std::string run_command(rd_kafka_mock_cluster_t* cluster, int brokers, const std::string& line) {
  std::istringstream in(line);
  std::string verb;
  in >> verb;
  auto broker_id = [&](int& id) {
    std::string text;
    in >> text;
    return parse_int(text, id) && id >= 1 && id <= brokers;
  };
  int id = 0;
  rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
  if (verb == "down" || verb == "up") {
    if (!broker_id(id)) return "error: broker id must be 1.." + std::to_string(brokers);
    err = verb == "down" ? rd_kafka_mock_broker_set_down(cluster, id)
                         : rd_kafka_mock_broker_set_up(cluster, id);
  } else if (verb == "rtt") {
    std::string ms_text;
    int ms = 0;
    if (!broker_id(id)) return "error: broker id must be 1.." + std::to_string(brokers);
    in >> ms_text;
    if (!parse_int(ms_text, ms)) return "error: rtt needs milliseconds";
    err = rd_kafka_mock_broker_set_rtt(cluster, id, ms);
  } else if (verb == "topic") {
    std::string name, parts_text;
    int parts = 0;
    in >> name >> parts_text;
    if (name.empty() || !parse_int(parts_text, parts) || parts < 1) {
      return "error: topic needs a name and a partition count";
    }
    err = rd_kafka_mock_topic_create(cluster, name.c_str(), parts, brokers < 3 ? brokers : 3);
  } else if (verb == "quit") {
    running = false;
  } else {
    return "error: unknown command '" + verb + "' (down, up, rtt, topic, quit)";
  }
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) return std::string("error: ") + rd_kafka_err2str(err);
  return "ok";
}

}  // namespace

int main(int argc, char** argv) {
  int brokers = 3;
  std::string bootstrap_file;
  bool control = false;
  std::vector<std::pair<std::string, int>> topics;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--brokers" && i + 1 < argc) {
      if (!parse_int(argv[++i], brokers) || brokers < 1) return usage("--brokers needs N >= 1");
    } else if (arg == "--bootstrap-file" && i + 1 < argc) {
      bootstrap_file = argv[++i];
    } else if (arg == "--control") {
      control = true;
    } else if (arg.find(':') != std::string::npos && arg[0] != '-') {
      int parts = 0;
      if (!parse_int(arg.substr(arg.find(':') + 1), parts) || parts < 1) {
        return usage(("bad topic '" + arg + "' (NAME:PARTITIONS)").c_str());
      }
      topics.emplace_back(arg.substr(0, arg.find(':')), parts);
    } else {
      return usage(("unknown argument '" + arg + "'").c_str());
    }
  }

  char error[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "log_level", "3", error, sizeof error);
  // The mock cluster lives inside a client handle; this one is never used to produce.
  rd_kafka_t* handle = rd_kafka_new(RD_KAFKA_PRODUCER, conf, error, sizeof error);
  if (handle == nullptr) {
    std::fprintf(stderr, "marty-kafka-mock: %s\n", error);
    return 1;
  }
  rd_kafka_mock_cluster_t* cluster = rd_kafka_mock_cluster_new(handle, brokers);
  if (cluster == nullptr) {
    std::fprintf(stderr, "marty-kafka-mock: the mock cluster could not be created\n");
    rd_kafka_destroy(handle);
    return 1;
  }
  for (const auto& [name, parts] : topics) {
    const rd_kafka_resp_err_t err =
        rd_kafka_mock_topic_create(cluster, name.c_str(), parts, brokers < 3 ? brokers : 3);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      std::fprintf(stderr, "marty-kafka-mock: topic %s: %s\n", name.c_str(), rd_kafka_err2str(err));
    }
  }
  const std::string bootstraps = rd_kafka_mock_cluster_bootstraps(cluster);
  if (!bootstrap_file.empty()) {
    // Written to a temporary name and renamed, so a reader never sees half a line.
    const std::string partial = bootstrap_file + ".partial";
    std::ofstream(partial) << bootstraps << "\n";
    if (std::rename(partial.c_str(), bootstrap_file.c_str()) != 0) {
      std::fprintf(stderr, "marty-kafka-mock: cannot write %s\n", bootstrap_file.c_str());
    }
  }
  std::printf("%s\n", bootstraps.c_str());
  std::fflush(stdout);

  struct sigaction action {};
  action.sa_handler = on_signal;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);

  if (control) {
    // Commands come from the test that started us; its end (EOF) ends the cluster.
    std::thread([cluster, brokers] {
      std::string line;
      while (running && std::getline(std::cin, line)) {
        if (line.empty()) continue;
        if (!running) break;
        std::printf("%s\n", run_command(cluster, brokers, line).c_str());
        std::fflush(stdout);
      }
      running = false;
    }).detach();
  }
  while (running) ::usleep(50'000);
  rd_kafka_mock_cluster_destroy(cluster);
  rd_kafka_destroy(handle);
  return 0;
}
