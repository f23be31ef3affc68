#pragma once
// A Kafka cluster of a test's own: tools/kafka-mock-cluster (librdkafka's mock cluster in a
// process of its own, reached over TCP), driven through its --control protocol on stdin, so a
// test can take brokers down and bring them back.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <stdexcept>
#include <string>

namespace marty::messaging::testing {

class KafkaCluster {
 public:
  /// Starts `tool` with `brokers` brokers; throws when it does not come up.
  KafkaCluster(const std::string& tool, int brokers) {
    int to_child[2];
    int from_child[2];
    if (::pipe(to_child) != 0 || ::pipe(from_child) != 0) throw std::runtime_error("pipe");
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(to_child[0], STDIN_FILENO);
      ::dup2(from_child[1], STDOUT_FILENO);
      ::close(to_child[1]);
      ::close(from_child[0]);
      const std::string count = std::to_string(brokers);
      ::execl(tool.c_str(), tool.c_str(), "--brokers", count.c_str(), "--control",
              static_cast<char*>(nullptr));
      std::perror("execl");
      ::_exit(127);
    }
    ::close(to_child[0]);
    ::close(from_child[1]);
    commands_ = ::fdopen(to_child[1], "w");
    answers_ = ::fdopen(from_child[0], "r");
    bootstrap_ = read_line();
    if (bootstrap_.empty()) throw std::runtime_error("the mock cluster did not start");
  }
  ~KafkaCluster() {
    if (commands_ != nullptr) std::fclose(commands_);  // end of input stops it
    if (answers_ != nullptr) std::fclose(answers_);
    if (pid_ > 0) {
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
  }
  KafkaCluster(const KafkaCluster&) = delete;
  KafkaCluster& operator=(const KafkaCluster&) = delete;

  const std::string& bootstrap() const { return bootstrap_; }

  /// Sends one control command ("down 1", "up 1", "topic NAME 3"); returns the tool's answer.
  std::string command(const std::string& line) {
    std::fprintf(commands_, "%s\n", line.c_str());
    std::fflush(commands_);
    return read_line();
  }

 private:
  std::string read_line() {
    char buffer[4096];
    if (std::fgets(buffer, sizeof buffer, answers_) == nullptr) return {};
    std::string line(buffer);
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
    return line;
  }

  pid_t pid_ = -1;
  std::FILE* commands_ = nullptr;
  std::FILE* answers_ = nullptr;
  std::string bootstrap_;
};

}  // namespace marty::messaging::testing
