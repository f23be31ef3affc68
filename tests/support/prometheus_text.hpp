#pragma once
// Reads the Prometheus text exposition format (version 0.0.4) strictly, for tests: every line a
// HELP or TYPE comment or a sample; names and label names by the format's grammar; label values
// with only its three escapes; values as numbers or +Inf/-Inf/NaN; each sample after its
// family's TYPE; histogram buckets cumulative, ending with le="+Inf" equal to _count.
#include <cmath>
#include <cstdlib>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace marty::messaging::testing {

struct PromSample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct PromExposition {
  std::vector<PromSample> samples;
  std::map<std::string, std::string> types;  // family -> type
  std::string error;                         // empty: the text is valid

  /// The value of the sample named `name` whose labels include `labels`; nullopt when none.
  std::optional<double> value(const std::string& name,
                              const std::map<std::string, std::string>& labels) const {
    for (const auto& s : samples) {
      if (s.name != name) continue;
      bool all = true;
      for (const auto& [k, v] : labels) {
        auto it = s.labels.find(k);
        if (it == s.labels.end() || it->second != v) all = false;
      }
      if (all) return s.value;
    }
    return std::nullopt;
  }
};

inline PromExposition parse_prometheus_text(const std::string& text) {
  PromExposition out;
  static const std::regex name_re("[a-zA-Z_:][a-zA-Z0-9_:]*");
  static const std::regex label_re("[a-zA-Z_][a-zA-Z0-9_]*");
  static const std::set<std::string> kinds{"counter", "gauge", "histogram", "summary", "untyped"};
  auto fail = [&out](std::size_t line, const std::string& why) {
    if (out.error.empty()) out.error = "line " + std::to_string(line) + ": " + why;
  };
  auto family_of = [&out](const std::string& name) {
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      const std::string s(suffix);
      if (name.size() > s.size() && name.ends_with(s)) {
        const std::string base = name.substr(0, name.size() - s.size());
        if (out.types.count(base) != 0 && out.types[base] == "histogram") return base;
      }
    }
    return name;
  };
  std::istringstream lines(text);
  std::string line;
  std::size_t number = 0;
  if (!text.empty() && text.back() != '\n') fail(0, "the text does not end with a line feed");
  while (std::getline(lines, line)) {
    ++number;
    if (line.empty()) continue;
    if (line[0] == '#') {
      std::istringstream words(line.substr(1));
      std::string keyword, name, rest;
      words >> keyword >> name;
      std::getline(words, rest);
      if (keyword != "HELP" && keyword != "TYPE") continue;  // other comments are allowed
      if (!std::regex_match(name, name_re)) fail(number, "bad metric name '" + name + "'");
      if (keyword == "TYPE") {
        const std::string kind = rest.empty() ? "" : rest.substr(1);
        if (kinds.count(kind) == 0) fail(number, "bad type '" + kind + "'");
        if (out.types.count(name) != 0) fail(number, "a second TYPE for " + name);
        out.types[name] = kind;
      }
      continue;
    }
    PromSample sample;
    std::size_t at = 0;
    while (at < line.size() && line[at] != '{' && line[at] != ' ') ++at;
    sample.name = line.substr(0, at);
    if (!std::regex_match(sample.name, name_re)) fail(number, "bad sample name");
    if (out.types.count(family_of(sample.name)) == 0) fail(number, "a sample before its TYPE");
    if (at < line.size() && line[at] == '{') {
      ++at;
      while (at < line.size() && line[at] != '}') {
        const std::size_t equals = line.find('=', at);
        if (equals == std::string::npos || equals + 1 >= line.size() || line[equals + 1] != '"') {
          fail(number, "bad label");
          break;
        }
        const std::string label = line.substr(at, equals - at);
        if (!std::regex_match(label, label_re)) fail(number, "bad label name '" + label + "'");
        std::string value;
        std::size_t i = equals + 2;
        for (; i < line.size() && line[i] != '"'; ++i) {
          if (line[i] == '\\') {
            if (i + 1 >= line.size()) break;
            const char e = line[++i];
            if (e == 'n') {
              value += '\n';
            } else if (e == '\\' || e == '"') {
              value += e;
            } else {
              fail(number, "bad escape in a label value");
            }
          } else {
            value += line[i];
          }
        }
        if (i >= line.size()) {
          fail(number, "unterminated label value");
          break;
        }
        sample.labels[label] = value;
        at = i + 1;
        if (at < line.size() && line[at] == ',') ++at;
      }
      if (at >= line.size()) {
        fail(number, "unterminated labels");
        continue;
      }
      ++at;  // '}'
    }
    if (at >= line.size() || line[at] != ' ') {
      fail(number, "no value");
      continue;
    }
    const std::string value = line.substr(at + 1);
    if (value == "+Inf") {
      sample.value = INFINITY;
    } else if (value == "-Inf") {
      sample.value = -INFINITY;
    } else if (value == "NaN") {
      sample.value = NAN;
    } else {
      char* end = nullptr;
      sample.value = std::strtod(value.c_str(), &end);
      if (end == value.c_str() || *end != '\0') fail(number, "bad value '" + value + "'");
    }
    out.samples.push_back(std::move(sample));
  }
  // Histograms: per label set, buckets cumulative and the +Inf one equal to _count.
  for (const auto& [family, kind] : out.types) {
    if (kind != "histogram") continue;
    std::map<std::map<std::string, std::string>, std::vector<std::pair<double, double>>> buckets;
    std::map<std::map<std::string, std::string>, double> counts;
    for (const auto& s : out.samples) {
      auto labels = s.labels;
      if (s.name == family + "_bucket") {
        const std::string le = labels["le"];
        labels.erase("le");
        buckets[labels].emplace_back(le == "+Inf" ? INFINITY : std::strtod(le.c_str(), nullptr),
                                     s.value);
      } else if (s.name == family + "_count") {
        counts[labels] = s.value;
      }
    }
    for (const auto& [labels, series] : buckets) {
      for (std::size_t i = 1; i < series.size(); ++i) {
        if (series[i].first <= series[i - 1].first || series[i].second < series[i - 1].second) {
          fail(0, family + ": buckets not cumulative in increasing le");
        }
      }
      if (series.empty() || !std::isinf(series.back().first)) fail(0, family + ": no +Inf");
      if (!series.empty() && counts[labels] != series.back().second) {
        fail(0, family + ": _count differs from the +Inf bucket");
      }
    }
  }
  return out;
}

}  // namespace marty::messaging::testing
