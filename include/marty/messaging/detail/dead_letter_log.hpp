#pragma once

// For backends whose dead letters sit in a stream that can neither delete one record nor tell
// where it ends (RabbitMQ streams), built on the Backend interface alone: an empty settlement
// record appended first marks the end, a private reader reads from the start up to it, and a
// dead letter is removed by appending a settlement record that names it (dead_letters.hpp).
// Each read therefore appends one small record; the stream's retention removes them in time.
#include <cstddef>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include <asio/awaitable.hpp>

#include "marty/messaging/backend.hpp"
#include "marty/messaging/dead_letters.hpp"

namespace marty::messaging::detail {

/// Backend::read_dead_letters over a stream read to an end marker.
asio::awaitable<Result<std::vector<Message>>> read_dead_letter_log(
    Backend& backend, std::string dead_letter_subject, std::size_t limit,
    SteadyClock::time_point deadline);

/// Backend::remove_dead_letters by a settlement record naming those of `ids` still present.
asio::awaitable<Result<std::size_t>> settle_dead_letters_in_log(Backend& backend,
                                                                std::string dead_letter_subject,
                                                                std::set<std::string> ids,
                                                                SteadyClock::time_point deadline);

}  // namespace marty::messaging::detail
