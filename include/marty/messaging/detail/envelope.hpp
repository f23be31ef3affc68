#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>
#include <utility>

namespace marty::messaging {

struct MessageMetadata;

namespace detail {

/// A sealed message header in one allocation: the fixed fields, then the header entries, then
/// every string's bytes back to back. Immutable once made and shared between copies of a
/// Message by an atomic reference count, so a published message costs one allocation for its
/// metadata instead of one per string and one for the header (and is freed in one on whatever
/// thread drops the last copy).
///
/// The seed's MessageMetadata is made from it only when someone asks for it (`view()`), once,
/// whichever thread asks first; the hot path reads the fields through the accessors.
class Envelope {
 public:
  /// Where a string lives in the trailing bytes.
  struct Slice {
    std::uint32_t at = 0;
    std::uint32_t size = 0;
  };
  struct HeaderEntry {
    Slice name;
    Slice value;
  };
  enum class Field : std::uint8_t {
    id,
    type,
    source,
    correlation_id,
    causation_id,
    reply_to,
    content_type,
    partition_key,
    subject,
    count
  };

  std::string_view get(Field field) const noexcept {
    return text(fields_[static_cast<std::size_t>(field)]);
  }
  std::optional<std::chrono::system_clock::time_point> time() const noexcept {
    if (!has_time_) return std::nullopt;
    return std::chrono::system_clock::time_point(std::chrono::system_clock::duration(time_));
  }
  std::optional<std::chrono::milliseconds> ttl() const noexcept {
    if (!has_ttl_) return std::nullopt;
    return std::chrono::milliseconds(ttl_ms_);
  }
  int priority() const noexcept { return priority_; }
  std::size_t header_count() const noexcept { return header_count_; }
  std::pair<std::string_view, std::string_view> header_at(std::size_t i) const noexcept {
    const HeaderEntry& entry = entries()[i];
    return {text(entry.name), text(entry.value)};
  }
  /// The value of header `name`, if the message has it.
  std::optional<std::string_view> header(std::string_view name) const noexcept {
    for (std::size_t i = 0; i < header_count_; ++i) {
      const HeaderEntry& entry = entries()[i];
      if (text(entry.name) == name) return text(entry.value);
    }
    return std::nullopt;
  }

  /// The seed's view of these fields, made on first use (thread-safe) and kept until the
  /// envelope goes. Throws std::bad_alloc.
  const MessageMetadata& view() const;

  void retain() const noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
  void release() const noexcept {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) destroy(this);
  }

  /// What a new envelope holds: views of strings owned by the caller for the duration of
  /// make(), and headers through `visit_headers(fn)`, which calls fn(name, value) for each,
  /// names unique and in ascending order.
  struct Contents {
    std::string_view fields[static_cast<std::size_t>(Field::count)];
    /// When set, the subject is these pieces joined (written straight in, without a string
    /// of its own) and fields[subject] is not read.
    std::array<std::string_view, 4> subject_pieces{};
    std::size_t subject_piece_count = 0;
    bool new_id = false;  // write a fresh UUIDv7 as the id instead of fields[id]
    /// The new id's time, when the caller has read the clock already (a clock read costs on
    /// virtual machines); the epoch means "read it now".
    std::chrono::system_clock::time_point id_time{};
    bool correlate = false;  // an empty correlation id becomes the id
    std::optional<std::chrono::system_clock::time_point> time;
    std::optional<std::chrono::milliseconds> ttl;
    int priority = 0;
    std::size_t header_count = 0;
  };
  template <class VisitHeaders>
  static Envelope* make(const Contents& contents, const VisitHeaders& visit_headers);

 private:
  Envelope() = default;
  ~Envelope();
  static Envelope* allocate(const Contents& contents, std::size_t header_bytes);
  static void destroy(const Envelope* envelope) noexcept;
  char* bytes() noexcept { return reinterpret_cast<char*>(entries() + header_count_); }
  const char* bytes() const noexcept {
    return reinterpret_cast<const char*>(entries() + header_count_);
  }
  HeaderEntry* entries() noexcept { return reinterpret_cast<HeaderEntry*>(this + 1); }
  const HeaderEntry* entries() const noexcept {
    return reinterpret_cast<const HeaderEntry*>(this + 1);
  }
  std::string_view text(Slice slice) const noexcept { return {bytes() + slice.at, slice.size}; }
  Slice append(std::string_view text) noexcept;

  mutable std::atomic<std::uint32_t> refs_{1};
  std::uint32_t header_count_ = 0;
  std::uint32_t used_ = 0;  // bytes written to the trailing text so far
  bool has_time_ = false;
  bool has_ttl_ = false;
  int priority_ = 0;
  std::int64_t time_ = 0;  // system_clock ticks since the epoch
  std::int64_t ttl_ms_ = 0;
  Slice fields_[static_cast<std::size_t>(Field::count)];
  mutable std::atomic<MessageMetadata*> view_{nullptr};
};

/// Writes a new UUIDv7 (RFC 9562) of time `now` in canonical text form into `out` (36
/// characters).
void write_uuid_v7(char* out, std::chrono::system_clock::time_point now) noexcept;

template <class VisitHeaders>
Envelope* Envelope::make(const Contents& contents, const VisitHeaders& visit_headers) {
  std::size_t header_bytes = 0;
  visit_headers([&](std::string_view name, std::string_view value) {
    header_bytes += name.size() + value.size();
  });
  Envelope* envelope = allocate(contents, header_bytes);
  HeaderEntry* entry = envelope->entries();
  visit_headers([&](std::string_view name, std::string_view value) {
    entry->name = envelope->append(name);
    entry->value = envelope->append(value);
    ++entry;
  });
  return envelope;
}

/// An owning reference to an Envelope (null or one count).
class EnvelopeRef {
 public:
  EnvelopeRef() noexcept = default;
  /// Adopts the count `make()` returned with.
  explicit EnvelopeRef(Envelope* adopted) noexcept : envelope_(adopted) {}
  EnvelopeRef(const EnvelopeRef& other) noexcept : envelope_(other.envelope_) {
    if (envelope_) envelope_->retain();
  }
  EnvelopeRef(EnvelopeRef&& other) noexcept : envelope_(std::exchange(other.envelope_, nullptr)) {}
  EnvelopeRef& operator=(const EnvelopeRef& other) noexcept {
    EnvelopeRef(other).swap(*this);
    return *this;
  }
  EnvelopeRef& operator=(EnvelopeRef&& other) noexcept {
    EnvelopeRef(std::move(other)).swap(*this);
    return *this;
  }
  ~EnvelopeRef() {
    if (envelope_) envelope_->release();
  }
  void swap(EnvelopeRef& other) noexcept { std::swap(envelope_, other.envelope_); }
  void reset() noexcept { EnvelopeRef().swap(*this); }
  explicit operator bool() const noexcept { return envelope_ != nullptr; }
  const Envelope* operator->() const noexcept { return envelope_; }
  const Envelope& operator*() const noexcept { return *envelope_; }

 private:
  Envelope* envelope_ = nullptr;
};

}  // namespace detail
}  // namespace marty::messaging
