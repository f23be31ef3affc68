#pragma once

// The bus's dead-letter operations, over the backends that keep dead letters (private to the
// core: UnifiedEventBus::list_dead_letters and the rest call these).
#include <cstddef>
#include <functional>
#include <memory>
#include <vector>

#include <asio/awaitable.hpp>

#include "marty/messaging/backend.hpp"
#include "marty/messaging/dead_letters.hpp"

namespace marty::messaging::detail {

/// Distinct backends with capabilities().inspectable_dead_letters, in registration order.
using DeadLetterBackends = std::vector<std::shared_ptr<Backend>>;
/// How a requeued message is published (the bus's traced, counted publish).
using DeadLetterPublisher =
    std::function<asio::awaitable<Result<void>>(std::shared_ptr<Backend>, Message, PublishOptions)>;

/// Dead letters read per backend and subject before filtering: bounds the memory and time an
/// operation takes on a subject with a runaway dead-letter stream.
inline constexpr std::size_t kDeadLetterScanLimit = 100'000;

asio::awaitable<Result<std::vector<DeadLetter>>> list_dead_letters(DeadLetterBackends backends,
                                                                   DeadLetterFilter filter);
asio::awaitable<Result<std::size_t>> requeue_dead_letters(DeadLetterBackends backends,
                                                          DeadLetterFilter filter,
                                                          DeadLetterPublisher publish);
asio::awaitable<Result<std::size_t>> purge_dead_letters(DeadLetterBackends backends,
                                                        DeadLetterFilter filter);

}  // namespace marty::messaging::detail
