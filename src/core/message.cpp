#include "marty/messaging/message.hpp"

#include <array>
#include <atomic>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <limits>
#include <new>
#include <random>

#include "marty/messaging/detail/json_writer.hpp"

namespace marty::messaging {

Result<std::reference_wrapper<const Json>> Payload::json() const {
  auto state = state_.load(std::memory_order_acquire);
  if (state == kUnparsed) {
    if (state_.compare_exchange_strong(state, kParsing, std::memory_order_acquire)) {
      state = kValid;
      // nlohmann's parser would take a NUL byte for the end of the text and drop the rest.
      if (const auto nul = bytes_.find('\0'); nul != std::string::npos) {
        error_ = "payload is not valid JSON: a NUL byte at offset " + std::to_string(nul);
        state = kInvalid;
      } else {
        try {
          value_ = Json::parse(bytes_);
        } catch (const Json::exception& e) {
          error_ = std::string("payload is not valid JSON: ") + e.what();
          state = kInvalid;
        } catch (...) {  // out of memory: not parsed after all, so a later call tries again
          state_.store(kUnparsed, std::memory_order_release);
          state_.notify_all();
          throw;
        }
      }
      state_.store(state, std::memory_order_release);
      state_.notify_all();
    }
  }
  // Another thread is parsing: wait for it (rare: a payload is usually read by one handler).
  while (state == kParsing) {
    state_.wait(kParsing, std::memory_order_acquire);
    state = state_.load(std::memory_order_acquire);
  }
  if (state == kUnparsed) return json();  // its parse ran out of memory: try ours
  if (state == kInvalid) return Error(errc::invalid_argument, error_);
  return std::cref(value_);
}

namespace detail {

Envelope::~Envelope() {
  delete view_.load(std::memory_order_acquire);
}

Envelope* Envelope::allocate(const Contents& contents, std::size_t header_bytes) {
  std::size_t text_bytes = header_bytes;
  for (std::size_t i = 0; i < static_cast<std::size_t>(Field::count); ++i) {
    if (i == static_cast<std::size_t>(Field::id) && contents.new_id) {
      text_bytes += 36;
    } else if (i != static_cast<std::size_t>(Field::subject) || contents.subject_piece_count == 0) {
      text_bytes += contents.fields[i].size();
    }
  }
  for (std::size_t i = 0; i < contents.subject_piece_count; ++i) {
    text_bytes += contents.subject_pieces[i].size();
  }
  if (text_bytes > std::numeric_limits<std::uint32_t>::max()) {
    throw std::length_error("message metadata larger than 4 GiB");
  }
  void* memory =
      ::operator new(sizeof(Envelope) + contents.header_count * sizeof(HeaderEntry) + text_bytes);
  auto* envelope = new (memory) Envelope();
  envelope->header_count_ = static_cast<std::uint32_t>(contents.header_count);
  envelope->has_time_ = contents.time.has_value();
  if (contents.time) envelope->time_ = contents.time->time_since_epoch().count();
  envelope->has_ttl_ = contents.ttl.has_value();
  if (contents.ttl) envelope->ttl_ms_ = contents.ttl->count();
  envelope->priority_ = contents.priority;
  for (std::size_t i = 0; i < static_cast<std::size_t>(Field::count); ++i) {
    if (i == static_cast<std::size_t>(Field::id) && contents.new_id) {
      write_uuid_v7(
          envelope->bytes() + envelope->used_,
          contents.id_time.time_since_epoch().count() != 0 ? contents.id_time : Clock::now());
      envelope->fields_[i] = Slice{envelope->used_, 36};
      envelope->used_ += 36;
    } else if (i == static_cast<std::size_t>(Field::subject) && contents.subject_piece_count > 0) {
      const std::uint32_t start = envelope->used_;
      for (std::size_t piece = 0; piece < contents.subject_piece_count; ++piece) {
        envelope->append(contents.subject_pieces[piece]);
      }
      envelope->fields_[i] = Slice{start, envelope->used_ - start};
    } else {
      envelope->fields_[i] = envelope->append(contents.fields[i]);
    }
  }
  auto& correlation = envelope->fields_[static_cast<std::size_t>(Field::correlation_id)];
  if (contents.correlate && correlation.size == 0) {
    correlation = envelope->fields_[static_cast<std::size_t>(Field::id)];
  }
  return envelope;
}

void Envelope::destroy(const Envelope* envelope) noexcept {
  auto* mutable_envelope = const_cast<Envelope*>(envelope);
  mutable_envelope->~Envelope();
  ::operator delete(static_cast<void*>(mutable_envelope));
}

Envelope::Slice Envelope::append(std::string_view text) noexcept {
  const Slice slice{used_, static_cast<std::uint32_t>(text.size())};
  if (!text.empty()) std::memcpy(bytes() + used_, text.data(), text.size());
  used_ += slice.size;
  return slice;
}

namespace {

MessageMetadata metadata_of(const Envelope& envelope) {
  using Field = Envelope::Field;
  MessageMetadata metadata;
  metadata.message_id = envelope.get(Field::id);
  metadata.message_type = envelope.get(Field::type);
  metadata.source = envelope.get(Field::source);
  metadata.time = envelope.time();
  metadata.correlation_id = envelope.get(Field::correlation_id);
  metadata.causation_id = envelope.get(Field::causation_id);
  metadata.reply_to = envelope.get(Field::reply_to);
  metadata.content_type = envelope.get(Field::content_type);
  metadata.ttl = envelope.ttl();
  metadata.priority = envelope.priority();
  metadata.partition_key = envelope.get(Field::partition_key);
  for (std::size_t i = 0; i < envelope.header_count(); ++i) {
    auto [name, value] = envelope.header_at(i);
    metadata.headers.emplace_hint(metadata.headers.end(), name, value);
  }
  return metadata;
}

}  // namespace

const MessageMetadata& Envelope::view() const {
  if (const MessageMetadata* made = view_.load(std::memory_order_acquire)) return *made;
  auto made = std::make_unique<MessageMetadata>(metadata_of(*this));
  MessageMetadata* expected = nullptr;
  if (view_.compare_exchange_strong(expected, made.get(), std::memory_order_acq_rel,
                                    std::memory_order_acquire)) {
    return *made.release();
  }
  return *expected;  // another thread made it first
}

}  // namespace detail

namespace {

using detail::Envelope;
using Field = Envelope::Field;

std::shared_ptr<const Payload> make_payload(std::string bytes) {
  return std::make_shared<const Payload>(std::move(bytes));
}

// What a sealed message holds now, to copy into a new envelope with some fields changed.
Envelope::Contents contents_of(const Envelope& envelope) {
  Envelope::Contents contents;
  for (std::size_t i = 0; i < static_cast<std::size_t>(Field::count); ++i) {
    contents.fields[i] = envelope.get(static_cast<Field>(i));
  }
  contents.time = envelope.time();
  contents.ttl = envelope.ttl();
  contents.priority = envelope.priority();
  contents.header_count = envelope.header_count();
  return contents;
}

Envelope::Contents contents_of(const MessageMetadata& metadata, std::string_view subject) {
  Envelope::Contents contents;
  auto set = [&contents](Field field, std::string_view text) {
    contents.fields[static_cast<std::size_t>(field)] = text;
  };
  set(Field::id, metadata.message_id);
  set(Field::type, metadata.message_type);
  set(Field::source, metadata.source);
  set(Field::correlation_id, metadata.correlation_id);
  set(Field::causation_id, metadata.causation_id);
  set(Field::reply_to, metadata.reply_to);
  set(Field::content_type, metadata.content_type);
  set(Field::partition_key, metadata.partition_key);
  set(Field::subject, subject);
  contents.time = metadata.time;
  contents.ttl = metadata.ttl;
  contents.priority = metadata.priority;
  contents.header_count = metadata.headers.size();
  return contents;
}

// A new envelope with what a message holds now, its sealed form or else its editable metadata
// and subject, as `change` (called with the Contents&) alters it. Made before the caller lets
// the old form go, so `change` may hold views into it.
template <class Change>
detail::EnvelopeRef resealed(const Envelope* sealed, const MessageMetadata& metadata,
                             std::string_view subject, const Change& change) {
  if (sealed != nullptr) {
    Envelope::Contents contents = contents_of(*sealed);
    change(contents);
    return detail::EnvelopeRef(Envelope::make(contents, [sealed](const auto& fn) {
      for (std::size_t i = 0; i < sealed->header_count(); ++i) {
        auto [name, value] = sealed->header_at(i);
        fn(name, value);
      }
    }));
  }
  Envelope::Contents contents = contents_of(metadata, subject);
  change(contents);
  return detail::EnvelopeRef(Envelope::make(contents, [&metadata](const auto& fn) {
    for (const auto& [name, value] : metadata.headers) fn(name, value);
  }));
}

}  // namespace

Message::Message()
    : payload_([] {
        static const auto empty = make_payload({});
        return empty;
      }()) {}

Message::Message(MessageMetadata metadata, std::shared_ptr<const Payload> payload,
                 std::string subject)
    : editable_(std::make_shared<Editable>(Editable{std::move(metadata), std::move(subject)})),
      payload_(std::move(payload)) {}

Message::Editable& Message::own_editable() {
  // use_count() == 1 means no other Message shares it (another thread cannot be copying this
  // object meanwhile: that would be a race on the object itself). The count is read relaxed, so
  // the fence orders our writes after the reads other copies made before they let go.
  if (envelope_) {
    editable_ = std::make_shared<Editable>(Editable{detail::metadata_of(*envelope_),
                                                    std::string(envelope_->get(Field::subject)),
                                                    std::move(envelope_)});
  } else if (!editable_) {
    editable_ = std::make_shared<Editable>();
  } else if (editable_.use_count() == 1) {
    std::atomic_thread_fence(std::memory_order_acquire);
  } else {
    editable_ = std::make_shared<Editable>(*editable_);
  }
  return *editable_;
}

const Message::Editable& Message::empty_editable() noexcept {
  static const Editable empty;
  return empty;
}

std::optional<std::string_view> Message::header(std::string_view name) const noexcept {
  if (envelope_) return envelope_->header(name);
  for (const auto& [key, value] : editable().metadata.headers) {
    if (key == name) return std::string_view(value);
  }
  return std::nullopt;
}

void Message::set_sealed_field(Field field, std::string_view value) {
  envelope_ = resealed(&*envelope_, editable().metadata, {}, [field, value](auto& contents) {
    contents.fields[static_cast<std::size_t>(field)] = value;
  });
}

void Message::set_subject(std::string_view subject) {
  if (envelope_) return set_sealed_field(Field::subject, subject);
  own_editable().subject = subject;
}

void Message::set_reply_to(std::string_view reply_to) {
  if (envelope_) return set_sealed_field(Field::reply_to, reply_to);
  own_editable().metadata.reply_to = reply_to;
}

void Message::stamp(std::string_view type, std::string_view source, std::string_view subject,
                    bool correlate) {
  stamp(type, source, subject::Pieces{{subject}, 1}, correlate);
}

void Message::stamp(std::string_view type, std::string_view source, const subject::Pieces& subject,
                    bool correlate) {
  if (subject.count > subject.pieces.size()) {
    throw std::length_error("Message::stamp: a subject of more than 4 pieces");
  }
  auto fill = [&](Envelope::Contents& contents) {
    contents.correlate = correlate;
    auto& fields = contents.fields;
    fields[static_cast<std::size_t>(Field::type)] = type;
    fields[static_cast<std::size_t>(Field::subject)] = {};
    contents.subject_pieces = subject.pieces;
    contents.subject_piece_count = subject.count;
    contents.new_id = fields[static_cast<std::size_t>(Field::id)].empty();
    if (fields[static_cast<std::size_t>(Field::source)].empty()) {
      fields[static_cast<std::size_t>(Field::source)] = source;
    }
    if (!contents.time) {
      contents.time = Clock::now();
      contents.id_time = *contents.time;
    }
  };
  const Editable& edited = editable();  // the empty one when sealed
  envelope_ = resealed(envelope_ ? &*envelope_ : nullptr, edited.metadata, edited.subject, fill);
  editable_.reset();
}

Result<std::reference_wrapper<const Json>> Message::try_json() const {
  if (!payload_) return Error(errc::invalid_argument, "message has no payload (moved from)");
  return payload_->json();
}

const Json& Message::json() const {
  auto parsed = try_json();
  if (!parsed) throw MessagingException(parsed.error());
  return parsed->get();
}

bool Message::expired(Clock::time_point now) const noexcept {
  const auto lifetime = ttl();
  if (!lifetime) return false;
  const auto made = time();
  // Compared in milliseconds: a ttl from the wire may be too long to add to a time point in
  // the clock's nanoseconds (it would overflow and read as long expired).
  return made && std::chrono::floor<std::chrono::milliseconds>(now - *made) >= *lifetime;
}

Message Message::from_json(Json data, MessageMetadata metadata) {
  std::string bytes = detail::write_json(data);
  metadata.content_type = "application/json";
  return Message(std::move(metadata),
                 std::make_shared<const Payload>(std::move(bytes), std::move(data)));
}

Message Message::from_bytes(std::string bytes, MessageMetadata metadata) {
  return Message(std::move(metadata), make_payload(std::move(bytes)));
}

void detail::write_uuid_v7(char* out, Clock::time_point now) noexcept {
  // 74 random bits per id from a per-thread xoshiro256** seeded by the OS: ids need to be
  // unique and unguessable enough for dedup keys, not cryptographic secrets.
  struct Generator {
    std::uint64_t s[4];
    Generator() noexcept {
      try {
        std::random_device device;
        for (auto& word : s) word = (std::uint64_t{device()} << 32) ^ device();
      } catch (...) {
        // No OS random source (a bare sandbox): seed from the clock and this thread's stack
        // address, so ids stay unique between threads and processes, if guessable.
        const auto seed = static_cast<std::uint64_t>(
                              std::chrono::steady_clock::now().time_since_epoch().count()) ^
                          static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(this));
        std::uint64_t mix = seed;
        for (auto& word : s) {  // splitmix64
          mix += 0x9E3779B97F4A7C15ULL;
          std::uint64_t z = mix;
          z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
          z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
          word = z ^ (z >> 31);
        }
      }
    }
    static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
    std::uint64_t next() {
      const std::uint64_t result = rotl(s[1] * 5, 7) * 9;
      const std::uint64_t t = s[1] << 17;
      s[2] ^= s[0];
      s[3] ^= s[1];
      s[1] ^= s[2];
      s[0] ^= s[3];
      s[2] ^= t;
      s[3] = rotl(s[3], 45);
      return result;
    }
  };
  thread_local Generator random;
  const auto ms = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count());
  const std::uint64_t r1 = random.next();
  const std::uint64_t r2 = random.next();
  // 48-bit time | version 7 | 12 random bits | variant 10 | 62 random bits (RFC 9562).
  const std::uint64_t high = (ms << 16) | 0x7000 | (r1 & 0x0FFF);
  const std::uint64_t low = (r2 & 0x3FFFFFFFFFFFFFFFULL) | 0x8000000000000000ULL;
  // Bytes to hex pairs through a table, written straight into the result (this runs for every
  // message published).
  static constexpr auto kHexPairs = [] {
    std::array<char, 512> table{};
    constexpr char kHex[] = "0123456789abcdef";
    for (int b = 0; b < 256; ++b) {
      table[static_cast<std::size_t>(2 * b)] = kHex[b >> 4];
      table[static_cast<std::size_t>(2 * b + 1)] = kHex[b & 0xF];
    }
    return table;
  }();
  char* p = out;
  auto put_bytes = [&p](std::uint64_t word, int first_byte, int count) {
    for (int i = first_byte; i < first_byte + count; ++i) {
      const auto byte = static_cast<std::size_t>((word >> (56 - 8 * i)) & 0xFF);
      *p++ = kHexPairs[2 * byte];
      *p++ = kHexPairs[2 * byte + 1];
    }
  };
  // 8-4-4-4-12 hex digits: bytes 0-3, 4-5, 6-7 of `high`; 0-1, 2-7 of `low`.
  put_bytes(high, 0, 4);
  *p++ = '-';
  put_bytes(high, 4, 2);
  *p++ = '-';
  put_bytes(high, 6, 2);
  *p++ = '-';
  put_bytes(low, 0, 2);
  *p++ = '-';
  put_bytes(low, 2, 6);
}

std::string make_uuid_v7() {
  std::string out(36, '-');
  detail::write_uuid_v7(out.data(), Clock::now());
  return out;
}

std::string format_rfc3339(Clock::time_point time) {
  const auto micros =
      std::chrono::duration_cast<std::chrono::microseconds>(time.time_since_epoch()).count();
  auto seconds = micros / 1'000'000;
  auto fraction = micros % 1'000'000;
  if (fraction < 0) {
    fraction += 1'000'000;
    --seconds;
  }
  const std::time_t t = static_cast<std::time_t>(seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<long long>(fraction));
  return buf;
}

namespace {

// Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (H. Hinnant's algorithm).
long long days_from_civil(long long y, unsigned m, unsigned d) {
  y -= m <= 2;
  const long long era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<long long>(doe) - 719468;
}

// Reads exactly `len` decimal digits (no sign, no spaces).
bool read_int(std::string_view text, std::size_t pos, std::size_t len, int& out) {
  if (pos + len > text.size()) return false;
  for (std::size_t i = pos; i < pos + len; ++i) {
    if (text[i] < '0' || text[i] > '9') return false;
  }
  const char* first = text.data() + pos;
  auto [ptr, ec] = std::from_chars(first, first + len, out);
  return ec == std::errc{} && ptr == first + len;
}

}  // namespace

Result<Clock::time_point> parse_rfc3339(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return Error(errc::invalid_argument,
                 "time '" + std::string(text) + "' is not RFC 3339: " + std::string(why));
  };
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  if (text.size() < 19 || !read_int(text, 0, 4, year) || text[4] != '-' ||
      !read_int(text, 5, 2, month) || text[7] != '-' || !read_int(text, 8, 2, day) ||
      (text[10] != 'T' && text[10] != 't' && text[10] != ' ') || !read_int(text, 11, 2, hour) ||
      text[13] != ':' || !read_int(text, 14, 2, minute) || text[16] != ':' ||
      !read_int(text, 17, 2, second)) {
    return bad("expected YYYY-MM-DDTHH:MM:SS");
  }
  static constexpr int kDaysInMonth[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  if (month < 1 || month > 12 || day < 1 || day > kDaysInMonth[month - 1] ||
      (month == 2 && day == 29 && !leap) || hour > 23 || minute > 59 || second > 60) {
    return bad("a field is out of range");
  }
  std::size_t pos = 19;
  long long micros = 0;
  if (pos < text.size() && text[pos] == '.') {
    ++pos;
    int digits = 0;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
      if (digits < 6) micros = micros * 10 + (text[pos] - '0');
      ++digits;
      ++pos;
    }
    if (digits == 0) return bad("empty fraction");
    for (int i = digits; i < 6; ++i) micros *= 10;
  }
  long long offset_seconds = 0;
  if (pos == text.size()) {
    // No offset: the Python original writes naive UTC timestamps; read them as UTC.
  } else if (text[pos] == 'Z' || text[pos] == 'z') {
    ++pos;
  } else if (text[pos] == '+' || text[pos] == '-') {
    int oh = 0, om = 0;
    if (!read_int(text, pos + 1, 2, oh) || text.size() <= pos + 3 || text[pos + 3] != ':' ||
        !read_int(text, pos + 4, 2, om)) {
      return bad("bad UTC offset");
    }
    if (oh > 23 || om > 59) return bad("UTC offset out of range");
    offset_seconds = (oh * 3600LL + om * 60LL) * (text[pos] == '+' ? 1 : -1);
    pos += 6;
  }
  if (pos != text.size()) return bad("unexpected trailing characters");
  const long long days =
      days_from_civil(year, static_cast<unsigned>(month), static_cast<unsigned>(day));
  const long long secs = days * 86400 + hour * 3600LL + minute * 60LL + second - offset_seconds;
  // The clock counts nanoseconds in 64 bits: about the years 1678 to 2261.
  using std::chrono::seconds;
  constexpr long long kEarliest =
      std::chrono::duration_cast<seconds>(Clock::duration::min()).count() + 1;
  constexpr long long kLatest =
      std::chrono::duration_cast<seconds>(Clock::duration::max()).count() - 1;
  if (secs < kEarliest || secs > kLatest) {
    return bad("outside the years this system's clock can hold (1678 to 2261)");
  }
  return Clock::time_point(std::chrono::duration_cast<Clock::duration>(
      std::chrono::microseconds(secs * 1'000'000 + micros)));
}

}  // namespace marty::messaging
