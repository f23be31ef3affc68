#include "yaml_reader.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "marty/messaging/config.hpp"

namespace marty::messaging::config::detail {

namespace {

// Edit distance, for "did you mean": keys are short, so the quadratic table is fine.
std::size_t distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// A whole number at the start of `text`, and what follows it.
bool leading_number(std::string_view text, std::int64_t& value, std::string_view& rest) {
  const char* end = text.data() + text.size();
  auto [stop, error] = std::from_chars(text.data(), end, value);
  if (error != std::errc() || stop == text.data()) return false;
  rest = std::string_view(stop, static_cast<std::size_t>(end - stop));
  return true;
}

bool valid_variable_name(std::string_view name) {
  if (name.empty() || std::isdigit(static_cast<unsigned char>(name[0]))) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
  });
}

}  // namespace

void Problems::add(const YAML::Mark& mark, std::string_view path, std::string_view what) {
  std::string line = source_;
  if (!mark.is_null()) {
    line += ":" + std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1);
  }
  line += ": ";
  if (!path.empty()) line += std::string(path) + ": ";
  line += what;
  list_.push_back(Problem{mark.line, mark.column, std::move(line)});
}

std::string Problems::joined() const {
  std::vector<Problem> sorted = list_;
  std::stable_sort(sorted.begin(), sorted.end(), [](const Problem& a, const Problem& b) {
    return std::pair(a.line, a.column) < std::pair(b.line, b.column);
  });
  std::string text;
  if (sorted.size() > 1) text = std::to_string(sorted.size()) + " problems in " + source_ + ":";
  for (const Problem& problem : sorted) text += (text.empty() ? "" : "\n") + problem.text;
  return text;
}

std::string Problems::where(const YAML::Mark& mark) const {
  return mark.is_null() ? source_ : source_ + ":" + std::to_string(mark.line + 1);
}

std::string Scalar::shown() const {
  return from_environment ? written : value;
}

bool substitute_environment(std::string_view text, std::string& out, bool& used, std::string& why) {
  out.clear();
  used = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '$' || i + 1 == text.size()) {
      out += text[i];
      continue;
    }
    if (text[i + 1] == '$') {  // "$$": a literal '$'
      out += '$';
      ++i;
      continue;
    }
    if (text[i + 1] != '{') {
      out += text[i];
      continue;
    }
    const std::size_t close = text.find('}', i + 2);
    if (close == std::string_view::npos) {
      why = "'${' without its closing '}' (write $$ for a literal $)";
      return false;
    }
    std::string_view reference = text.substr(i + 2, close - i - 2);
    if (reference.find("${") != std::string_view::npos) {
      why = "'${" + std::string(reference) +
            "}}' nests a reference in a default, which is not supported (a default is text)";
      return false;
    }
    std::string_view name = reference;
    std::optional<std::string_view> fallback;
    if (const std::size_t dash = reference.find(":-"); dash != std::string_view::npos) {
      name = reference.substr(0, dash);
      fallback = reference.substr(dash + 2);
    }
    if (!valid_variable_name(name)) {
      why = "'${" + std::string(reference) + "}' does not name an environment variable";
      return false;
    }
    const char* value = std::getenv(std::string(name).c_str());
    if (fallback && (value == nullptr || *value == '\0')) {
      out += *fallback;
    } else if (value == nullptr) {
      why = "environment variable " + std::string(name) + " is not set (write ${" +
            std::string(name) + ":-default} for a default)";
      return false;
    } else {
      out += value;
    }
    used = true;
    i = close;
  }
  return true;
}

namespace {

void find_duplicate_keys(const YAML::Node& node, const std::string& path, Problems& problems,
                         int depth) {
  // Anchors let a document refer to a node many times; a depth limit keeps a pathological one
  // from recursing without end.
  if (!node || depth > 64) return;
  const auto below = [&](const std::string& key) { return path.empty() ? key : path + "." + key; };
  if (node.IsMap()) {
    std::map<std::string, YAML::Mark> seen;
    for (const auto& entry : node) {
      if (entry.first.IsScalar()) {
        const std::string& key = entry.first.Scalar();
        if (auto [first, fresh] = seen.emplace(key, entry.first.Mark()); !fresh) {
          problems.add(entry.first.Mark(), path,
                       "duplicate key '" + key + "' (first at line " +
                           std::to_string(first->second.line + 1) + ")");
        }
        find_duplicate_keys(entry.second, below(key), problems, depth + 1);
      }
    }
  } else if (node.IsSequence()) {
    std::size_t index = 0;
    for (const auto& entry : node) {
      find_duplicate_keys(entry, path + "[" + std::to_string(index++) + "]", problems, depth + 1);
    }
  }
}

}  // namespace

void report_duplicate_keys(const YAML::Node& node, const std::string& path, Problems& problems) {
  find_duplicate_keys(node, path, problems, 0);
}

bool Node::expect_map() const {
  if (is_null() || node_.IsMap()) return true;
  problem("expected a mapping (key: value lines)");
  return false;
}

bool Node::expect_list() const {
  if (is_null() || node_.IsSequence()) return true;
  problem("expected a list");
  return false;
}

Node Node::child(std::string_view key) {
  claimed_.insert(std::string(key));
  const std::string path = path_.empty() ? std::string(key) : path_ + "." + std::string(key);
  if (!node_ || !node_.IsMap()) return Node(YAML::Node(), path, *problems_);
  const YAML::Node& map = node_;  // const: a missing key must not be inserted
  return Node(map[std::string(key)], path, *problems_);
}

std::vector<std::pair<std::string, Node>> Node::entries() const {
  std::vector<std::pair<std::string, Node>> out;
  if (!node_) return out;
  if (node_.IsMap()) {
    for (const auto& entry : node_) {
      const std::string key = entry.first.IsScalar() ? entry.first.Scalar() : std::string("?");
      out.emplace_back(key,
                       Node(entry.second, path_.empty() ? key : path_ + "." + key, *problems_));
    }
  } else if (node_.IsSequence()) {
    std::size_t index = 0;
    for (const auto& entry : node_) {
      out.emplace_back(std::to_string(index),
                       Node(entry, path_ + "[" + std::to_string(index) + "]", *problems_));
      ++index;
    }
  }
  return out;
}

void Node::finish() const {
  if (!node_ || !node_.IsMap()) return;
  for (const auto& entry : node_) {
    const std::string key = entry.first.IsScalar() ? entry.first.Scalar() : std::string();
    if (claimed_.count(key) != 0) continue;
    std::string what = "unknown key '" + key + "'";
    std::string best;
    std::size_t best_distance = 3;  // suggest only near misses
    for (const std::string& known : claimed_) {
      if (const std::size_t d = distance(key, known); d < best_distance) {
        best_distance = d;
        best = known;
      }
    }
    if (!best.empty()) {
      what += " (did you mean '" + best + "'?)";
    } else {
      std::string known;
      for (const std::string& name : claimed_) known += (known.empty() ? "" : ", ") + name;
      what += " (known: " + known + ")";
    }
    problems_->add(entry.first.Mark(), path_, what);
  }
}

bool Node::scalar(Scalar& out) const {
  if (!node_ || !node_.IsScalar()) {
    problem(node_ && node_.IsSequence() ? "expected a single value, not a list"
            : node_ && node_.IsMap()    ? "expected a single value, not a mapping"
                                        : "expected a value");
    return false;
  }
  out.written = node_.Scalar();
  std::string why;
  if (!substitute_environment(out.written, out.value, out.from_environment, why)) {
    problem(why);
    return false;
  }
  return true;
}

bool Node::get(std::string& out) const {
  Scalar text;
  if (!scalar(text)) return false;
  out = std::move(text.value);
  return true;
}

bool Node::get(bool& out) const {
  Scalar text;
  if (!scalar(text)) return false;
  // YAML 1.2's booleans only: "yes"/"no"/"on" are strings there, and a typo should not flip a
  // switch silently.
  if (text.value == "true") {
    out = true;
  } else if (text.value == "false") {
    out = false;
  } else {
    problem("'" + text.shown() + "' is not true or false");
    return false;
  }
  return true;
}

bool Node::whole_number(std::int64_t& out, std::int64_t min, std::int64_t max) const {
  Scalar text;
  if (!scalar(text)) return false;
  std::int64_t value = 0;
  std::string_view unit;
  if (!leading_number(text.value, value, unit) || !unit.empty()) {
    problem("'" + text.shown() + "' is not a whole number");
    return false;
  }
  if (value < min || value > max) {
    problem(text.from_environment ? "'" + text.shown() + "' is out of range (" +
                                        std::to_string(min) + ".." + std::to_string(max) + ")"
                                  : std::to_string(value) + " is out of range (" +
                                        std::to_string(min) + ".." + std::to_string(max) + ")");
    return false;
  }
  out = value;
  return true;
}

bool Node::get(int& out) const {
  std::int64_t value = 0;
  if (!whole_number(value, std::numeric_limits<int>::min(), std::numeric_limits<int>::max())) {
    return false;
  }
  out = static_cast<int>(value);
  return true;
}

bool Node::get(std::int64_t& out) const {
  return whole_number(out, std::numeric_limits<std::int64_t>::min(),
                      std::numeric_limits<std::int64_t>::max());
}

bool Node::get(std::size_t& out) const {
  std::int64_t value = 0;
  if (!whole_number(value, 0, std::numeric_limits<std::int64_t>::max())) return false;
  out = static_cast<std::size_t>(value);
  return true;
}

bool Node::get(double& out) const {
  Scalar text;
  if (!scalar(text)) return false;
  char* stop = nullptr;
  const double value = std::strtod(text.value.c_str(), &stop);
  if (text.value.empty() || stop != text.value.c_str() + text.value.size() ||
      !std::isfinite(value)) {
    problem("'" + text.shown() + "' is not a number");
    return false;
  }
  out = value;
  return true;
}

bool Node::get(std::chrono::milliseconds& out) const {
  Scalar text;
  if (!scalar(text)) return false;
  auto parsed = parse_duration(text.value);
  if (!parsed) {
    // The parser's message quotes the value; one from the environment is never repeated.
    problem(text.from_environment
                ? "'" + text.shown() + "' is not a duration like 250ms, 30s, 5m, 2h or 7d"
                : parsed.error().message());
    return false;
  }
  out = *parsed;
  return true;
}

bool Node::get(std::chrono::seconds& out) const {
  std::chrono::milliseconds value{};
  if (!get(value)) return false;
  if (value.count() % 1000 != 0) {
    problem("must be whole seconds");
    return false;
  }
  out = std::chrono::duration_cast<std::chrono::seconds>(value);
  return true;
}

bool Node::get(std::vector<std::string>& out) const {
  std::vector<std::string> values;
  if (node_ && node_.IsScalar()) {  // a single value stands for a list of one
    std::string value;
    if (!get(value)) return false;
    out = {std::move(value)};
    return true;
  }
  if (!expect_list()) return false;
  bool good = true;
  for (auto& [index, entry] : entries()) {
    std::string value;
    good = entry.get(value) && good;
    values.push_back(std::move(value));
  }
  if (good) out = std::move(values);
  return good;
}

bool Node::get(std::map<std::string, std::string>& out) const {
  if (!expect_map()) return false;
  std::map<std::string, std::string> values;
  bool good = true;
  for (auto& [key, entry] : entries()) {
    std::string value;
    good = entry.get(value) && good;
    values[key] = std::move(value);
  }
  if (good) out = std::move(values);
  return good;
}

bool Node::get_bytes(std::int64_t& out) const {
  Scalar text;
  if (!scalar(text)) return false;
  std::int64_t value = 0;
  std::string_view unit;
  const bool number = leading_number(text.value, value, unit);
  static const std::pair<std::string_view, std::int64_t> kUnits[] = {{"", 1},
                                                                     {"B", 1},
                                                                     {"KiB", 1LL << 10},
                                                                     {"MiB", 1LL << 20},
                                                                     {"GiB", 1LL << 30},
                                                                     {"kB", 1'000},
                                                                     {"MB", 1'000'000},
                                                                     {"GB", 1'000'000'000}};
  const auto* match = std::find_if(std::begin(kUnits), std::end(kUnits),
                                   [&](const auto& u) { return u.first == unit; });
  // -1 alone is the "unlimited" some settings take; -1GiB is a mistake, not a larger unlimited.
  if (!number || match == std::end(kUnits) || value < -1 || (value == -1 && !unit.empty())) {
    problem("'" + text.shown() + "' is not a byte count (a whole number, optionally with B, KiB, " +
            "MiB, GiB, kB, MB or GB)");
    return false;
  }
  if (value > 0 && value > std::numeric_limits<std::int64_t>::max() / match->second) {
    problem("'" + text.shown() + "' is too large");
    return false;
  }
  out = value * match->second;
  return true;
}

bool Node::get_bytes(std::size_t& out) const {
  std::int64_t value = 0;
  if (!get_bytes(value)) return false;
  if (value < 0) {
    problem("must not be negative");
    return false;
  }
  out = static_cast<std::size_t>(value);
  return true;
}

}  // namespace marty::messaging::config::detail
