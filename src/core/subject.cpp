#include "marty/messaging/subject.hpp"

#include "marty/messaging/detail/concat.hpp"

namespace marty::messaging::subject {
namespace {

// Calls fn(token) for each dot-separated token; stops early when fn returns false.
template <class Fn>
bool for_each_token(std::string_view text, Fn&& fn) {
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = text.find('.', start);
    const std::string_view token =
        text.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    const bool last = dot == std::string_view::npos;
    if (!fn(token, last)) return false;
    if (last) return true;
    start = dot + 1;
  }
}

Result<void> validate(std::string_view text, std::string_view what, bool allow_wildcards) {
  auto bad = [&](std::string_view why) {
    return Error(errc::invalid_argument,
                 std::string(what) + " '" + std::string(text) + "' " + std::string(why));
  };
  if (text.empty()) return Error(errc::invalid_argument, std::string(what) + " is empty");
  if (text.size() > 255) return bad("is longer than 255 characters");
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) return bad("contains whitespace or a control character");
  }
  std::string_view problem;
  for_each_token(text, [&](std::string_view token, bool last) {
    if (token.empty()) {
      problem = "has an empty token (leading, trailing or double dot)";
      return false;
    }
    const bool star = token == "*";
    const bool tail = token == ">";
    if ((star || (tail && last)) && allow_wildcards) return true;
    if (token.find_first_of("*>") != std::string_view::npos) {
      problem = allow_wildcards ? "uses '*' or '>' inside a token ('>' only as the last token)"
                                : "contains a wildcard ('*' or '>')";
      return false;
    }
    return true;
  });
  if (!problem.empty()) return bad(problem);
  return ok();
}

}  // namespace

std::size_t Pieces::size() const noexcept {
  std::size_t total = 0;
  for (std::size_t i = 0; i < count; ++i) total += pieces[i].size();
  return total;
}

std::string Pieces::joined() const {
  return detail::concat(std::span<const std::string_view>(pieces.data(), count));
}

Pieces event_pieces(std::string_view event_type) noexcept {
  return Pieces{{"events.", event_type}, 2};
}
Pieces command_pieces(std::string_view service, std::string_view command_type) noexcept {
  return Pieces{{"commands.", service, ".", command_type}, 4};
}
Pieces query_pieces(std::string_view service, std::string_view query_type) noexcept {
  return Pieces{{"queries.", service, ".", query_type}, 4};
}

std::string for_event(std::string_view event_type) {
  return event_pieces(event_type).joined();
}
std::string for_command(std::string_view service, std::string_view command_type) {
  return command_pieces(service, command_type).joined();
}
std::string for_query(std::string_view service, std::string_view query_type) {
  return query_pieces(service, query_type).joined();
}

Result<void> validate_name(std::string_view name, std::string_view what) {
  return validate(name, what, false);
}
Result<void> validate_pattern(std::string_view pattern, std::string_view what) {
  return validate(pattern, what, true);
}

bool has_wildcard(std::string_view pattern) noexcept {
  bool found = false;
  for_each_token(pattern, [&](std::string_view token, bool) {
    found = token == "*" || token == ">";
    return !found;
  });
  return found;
}

bool matches(std::string_view pattern, std::string_view subject) noexcept {
  if (pattern == subject) return true;
  std::size_t p = 0, s = 0;
  while (true) {
    const std::size_t pe = pattern.find('.', p);
    const std::string_view ptok = pattern.substr(p, pe == std::string_view::npos ? pe : pe - p);
    if (ptok == ">" && pe == std::string_view::npos) return s <= subject.size();
    if (s > subject.size()) return false;
    const std::size_t se = subject.find('.', s);
    const std::string_view stok = subject.substr(s, se == std::string_view::npos ? se : se - s);
    if (ptok != "*" && ptok != stok) return false;
    const bool p_last = pe == std::string_view::npos;
    const bool s_last = se == std::string_view::npos;
    if (p_last || s_last) return p_last && s_last;
    p = pe + 1;
    s = se + 1;
  }
}

bool glob_matches(std::string_view glob, std::string_view text) noexcept {
  // Iterative wildcard matching with single backtrack point: linear for one '*', O(n*m) worst.
  std::size_t g = 0, t = 0, star = std::string_view::npos, mark = 0;
  while (t < text.size()) {
    if (g < glob.size() && (glob[g] == '?' || glob[g] == text[t])) {
      ++g;
      ++t;
    } else if (g < glob.size() && glob[g] == '*') {
      star = g++;
      mark = t;
    } else if (star != std::string_view::npos) {
      g = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (g < glob.size() && glob[g] == '*') ++g;
  return g == glob.size();
}

std::string type_of(std::string_view subject) {
  auto after_tokens = [&](int tokens) {
    std::size_t at = 0;
    for (int i = 0; i < tokens; ++i) {
      at = subject.find('.', at);
      if (at == std::string_view::npos) return std::string(subject);
      ++at;
    }
    return std::string(subject.substr(at));
  };
  if (subject.starts_with("events.")) return after_tokens(1);
  if (subject.starts_with("commands.") || subject.starts_with("queries.")) return after_tokens(2);
  return std::string(subject);
}

}  // namespace marty::messaging::subject
