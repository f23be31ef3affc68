#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace marty::messaging::detail {

/// `value` as compact JSON text, the text nlohmann's `dump()` writes (a float may be spelled
/// differently, as the shortest text that reads back as the same number and type).
///
/// Why not `dump()`: it grows its output string a few bytes at a time (7 allocations for a
/// 300-byte object) and writes every character through a virtual call, and every JSON message
/// the bus sends is serialized once. This writer copies runs of plain characters at once into a
/// per-thread buffer and makes the result in one allocation.
///
/// Errors: the same as `dump()`'s, by letting `dump()` write what this writer does not (a
/// string that is not UTF-8 throws nlohmann's type_error 316; binary and discarded values are
/// written as `dump()` writes them). std::bad_alloc passes through. Thread-safe.
std::string write_json(const nlohmann::json& value);

}  // namespace marty::messaging::detail
