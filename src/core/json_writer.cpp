#include "marty/messaging/detail/json_writer.hpp"

#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace marty::messaging::detail {
namespace {

using Json = nlohmann::json;

// The per-thread buffer is given back when a message made it larger than this, so that one
// huge payload does not stay reserved for the thread's life.
constexpr std::size_t kKeptBuffer = 1 << 20;

constexpr char kHex[] = "0123456789abcdef";

// Characters written as they are: printable ASCII but the quote and the backslash.
constexpr bool plain(unsigned char c) {
  return c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
}

constexpr bool continuation(unsigned char c) {
  return (c & 0xC0) == 0x80;
}

// The length of the run of plain characters at the start of `text`, 8 bytes at a time: a word
// is plain unless one of its bytes is below 0x20, has its top bit set, or is '"' or '\\'.
std::size_t plain_run(const unsigned char* text, std::size_t size) {
  constexpr std::uint64_t kOnes = 0x0101010101010101ULL, kHighs = 0x8080808080808080ULL;
  auto has_zero = [](std::uint64_t word) { return (word - kOnes) & ~word & kHighs; };
  std::size_t at = 0;
  for (; at + 8 <= size; at += 8) {
    std::uint64_t word;
    std::memcpy(&word, text + at, 8);
    const std::uint64_t special = ((word - kOnes * 0x20) & ~word) | word |
                                  has_zero(word ^ (kOnes * '"')) | has_zero(word ^ (kOnes * '\\'));
    if ((special & kHighs) != 0) break;
  }
  while (at < size && plain(text[at])) ++at;
  return at;
}

// The length of the well-formed UTF-8 sequence at `p` (Unicode table 3-7: no overlong forms, no
// surrogates, nothing above U+10FFFF), or 0: what nlohmann's decoder accepts.
std::size_t utf8_sequence(const unsigned char* p, std::size_t left) {
  const unsigned char c = p[0];
  if (c >= 0xC2 && c <= 0xDF) return left >= 2 && continuation(p[1]) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (left < 3 || !continuation(p[1]) || !continuation(p[2])) return 0;
    if (c == 0xE0 && p[1] < 0xA0) return 0;  // overlong
    if (c == 0xED && p[1] > 0x9F) return 0;  // a surrogate
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (left < 4 || !continuation(p[1]) || !continuation(p[2]) || !continuation(p[3])) return 0;
    if (c == 0xF0 && p[1] < 0x90) return 0;  // overlong
    if (c == 0xF4 && p[1] > 0x8F) return 0;  // above U+10FFFF
    return 4;
  }
  return 0;
}

// False when `text` is not UTF-8 (nothing useful is left in `out` then).
bool write_string(std::string& out, std::string_view text) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t size = text.size();
  out.push_back('"');
  std::size_t at = 0;
  while (at < size) {
    const std::size_t end = at + plain_run(bytes + at, size - at);
    out.append(text.data() + at, end - at);
    at = end;
    if (at == size) break;
    const unsigned char c = bytes[at];
    if (c >= 0x80) {
      const std::size_t length = utf8_sequence(bytes + at, size - at);
      if (length == 0) return false;
      out.append(text.data() + at, length);
      at += length;
      continue;
    }
    switch (c) {
      case '"':
        out.append("\\\"");
        break;
      case '\\':
        out.append("\\\\");
        break;
      case '\b':
        out.append("\\b");
        break;
      case '\t':
        out.append("\\t");
        break;
      case '\n':
        out.append("\\n");
        break;
      case '\f':
        out.append("\\f");
        break;
      case '\r':
        out.append("\\r");
        break;
      default: {
        const char escaped[] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0xF]};
        out.append(escaped, sizeof escaped);
      }
    }
    ++at;
  }
  out.push_back('"');
  return true;
}

template <typename Number>
void write_integer(std::string& out, Number number) {
  char digits[24];
  const auto written = std::to_chars(digits, digits + sizeof digits, number);
  out.append(digits, written.ptr);
}

void write_float(std::string& out, double number) {
  if (!std::isfinite(number)) {  // JSON has no spelling for them; nlohmann writes null too
    out.append("null");
    return;
  }
  char digits[32];
  const auto written = std::to_chars(digits, digits + sizeof digits, number);
  const std::string_view text(digits, static_cast<std::size_t>(written.ptr - digits));
  out.append(text);
  // "2" would read back as an integer: a float keeps a fraction, as dump() writes it.
  if (text.find_first_of(".e") == std::string_view::npos) out.append(".0");
}

// False for what dump() must write instead (a string that is not UTF-8: dump() throws).
bool write_value(std::string& out, const Json& value) {
  switch (value.type()) {
    case Json::value_t::object: {
      const auto& members = value.get_ref<const Json::object_t&>();
      out.push_back('{');
      bool first = true;
      for (const auto& [key, member] : members) {
        if (!first) out.push_back(',');
        first = false;
        if (!write_string(out, key)) return false;
        out.push_back(':');
        if (!write_value(out, member)) return false;
      }
      out.push_back('}');
      return true;
    }
    case Json::value_t::array: {
      out.push_back('[');
      bool first = true;
      for (const Json& element : value.get_ref<const Json::array_t&>()) {
        if (!first) out.push_back(',');
        first = false;
        if (!write_value(out, element)) return false;
      }
      out.push_back(']');
      return true;
    }
    case Json::value_t::string:
      return write_string(out, value.get_ref<const Json::string_t&>());
    case Json::value_t::boolean:
      out.append(value.get<bool>() ? "true" : "false");
      return true;
    case Json::value_t::number_integer:
      write_integer(out, value.get<Json::number_integer_t>());
      return true;
    case Json::value_t::number_unsigned:
      write_integer(out, value.get<Json::number_unsigned_t>());
      return true;
    case Json::value_t::number_float:
      write_float(out, value.get<Json::number_float_t>());
      return true;
    case Json::value_t::null:
      out.append("null");
      return true;
    case Json::value_t::binary:
    case Json::value_t::discarded:
      return false;
  }
  return false;
}

}  // namespace

std::string write_json(const Json& value) {
  thread_local std::string buffer;
  buffer.clear();
  if (!write_value(buffer, value)) return value.dump();
  std::string text(buffer);
  if (buffer.capacity() > kKeptBuffer) buffer = std::string();
  return text;
}

}  // namespace marty::messaging::detail
