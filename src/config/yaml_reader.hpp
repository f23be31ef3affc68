#pragma once
// Reading YAML into settings structs with errors that say where: every problem is collected as
// "file:line:column: key.path: what", keys nobody read are reported as unknown (with the
// closest known key), and scalars go through environment substitution first.
//
// Not thread-safe; one Reader per file being read.

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <yaml-cpp/yaml.h>

namespace marty::messaging::config::detail {

/// The problems found in one file.
class Problems {
 public:
  explicit Problems(std::string source) : source_(std::move(source)) {}
  void add(const YAML::Mark& mark, std::string_view path, std::string_view what);
  bool empty() const noexcept { return list_.empty(); }
  /// One problem per line, in the file's order, after "N problems in FILE:" when there are
  /// several.
  std::string joined() const;
  const std::string& source() const noexcept { return source_; }
  /// "file:line" of `mark`.
  std::string where(const YAML::Mark& mark) const;

 private:
  struct Problem {
    int line = -1, column = -1;
    std::string text;
  };
  std::string source_;
  std::vector<Problem> list_;
};

/// A scalar after `${NAME}` / `${NAME:-default}` / `$$` substitution. `from_environment`: the
/// text named a variable, so the value is not to be repeated in errors (it may be a secret).
struct Scalar {
  std::string value;
  std::string written;  ///< as in the file
  bool from_environment = false;
  /// How to quote it in an error: the value, or what the file wrote when it came from the
  /// environment.
  std::string shown() const;
};

/// Substitutes environment references in `text`; false with `why` on an unset variable or a
/// malformed reference.
bool substitute_environment(std::string_view text, std::string& out, bool& used, std::string& why);

/// Reports every key that appears twice in one mapping, anywhere under `node` (YAML parsers keep
/// the first silently, so the second, usually the intended one, would be ignored).
void report_duplicate_keys(const YAML::Node& node, const std::string& path, Problems& problems);

/// One YAML node being read, with its key path. A mapping's keys are claimed as they are read;
/// finish() reports the unclaimed ones.
class Node {
 public:
  Node(YAML::Node node, std::string path, Problems& problems)
      : node_(std::move(node)), path_(std::move(path)), problems_(&problems) {}

  const YAML::Node& yaml() const noexcept { return node_; }
  const std::string& path() const noexcept { return path_; }
  Problems& problems() const noexcept { return *problems_; }
  void problem(std::string_view what) const { problems_->add(node_.Mark(), path_, what); }

  /// False (with a problem) unless it is a mapping; an empty or null node counts as an empty
  /// mapping.
  bool expect_map() const;
  bool expect_list() const;
  bool is_null() const { return !node_ || node_.IsNull(); }

  /// The child `key` of a mapping, claimed; absent: a null Node.
  Node child(std::string_view key);
  bool has(std::string_view key) const {
    const YAML::Node& map = node_;
    return map.IsMap() && map[std::string(key)];
  }
  /// Each entry of a mapping (keys in file order) or list (keys "0", "1"...).
  std::vector<std::pair<std::string, Node>> entries() const;
  /// Reports every key not claimed.
  void finish() const;

  /// Reads the scalar; false (with a problem) when it is not one or substitution fails.
  bool scalar(Scalar& out) const;

  // Typed reads of this node. Each returns false after reporting a problem; `out` is left as it
  // was then.
  bool get(std::string& out) const;
  bool get(bool& out) const;
  bool get(int& out) const;
  bool get(std::int64_t& out) const;
  bool get(std::size_t& out) const;
  bool get(double& out) const;
  bool get(std::chrono::milliseconds& out) const;
  bool get(std::chrono::seconds& out) const;
  bool get(std::vector<std::string>& out) const;
  bool get(std::map<std::string, std::string>& out) const;
  /// A byte count: a whole number, optionally with B, KiB, MiB or GiB (or kB, MB, GB).
  bool get_bytes(std::size_t& out) const;
  bool get_bytes(std::int64_t& out) const;
  /// One of `names`.
  template <class Enum>
  bool get_enum(Enum& out, std::initializer_list<std::pair<std::string_view, Enum>> names) const {
    Scalar text;
    if (!scalar(text)) return false;
    std::string valid;
    for (const auto& [name, value] : names) {
      if (name == text.value) {
        out = value;
        return true;
      }
      valid += (valid.empty() ? "" : ", ") + std::string(name);
    }
    problem("'" + text.shown() + "' is not one of " + valid);
    return false;
  }

  /// Reads child `key` into `out` when present.
  template <class T>
  void read(std::string_view key, T& out) {
    Node value = child(key);
    if (!value.is_null()) value.get(out);
  }
  void read_bytes(std::string_view key, std::size_t& out) {
    Node value = child(key);
    if (!value.is_null()) value.get_bytes(out);
  }
  void read_bytes(std::string_view key, std::int64_t& out) {
    Node value = child(key);
    if (!value.is_null()) value.get_bytes(out);
  }
  template <class Enum>
  void read_enum(std::string_view key, Enum& out,
                 std::initializer_list<std::pair<std::string_view, Enum>> names) {
    Node value = child(key);
    if (!value.is_null()) value.get_enum(out, names);
  }

 private:
  bool whole_number(std::int64_t& out, std::int64_t min, std::int64_t max) const;

  YAML::Node node_;
  std::string path_;
  Problems* problems_;
  std::set<std::string> claimed_;
};

}  // namespace marty::messaging::config::detail
