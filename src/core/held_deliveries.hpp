#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <unordered_set>

#include <asio/awaitable.hpp>

#include "marty/messaging/backend.hpp"

namespace marty::messaging::detail {

/// The deliveries a worker has received and not yet settled, so that stop() and unsubscribe()
/// can give back what their handlers did not finish by the drain deadline: each is nacked at
/// once, and the broker hands it to another instance now, rather than when this one's
/// connection closes (which some backends hold open until every delivery is settled, so that
/// a late handler's ack would otherwise settle a message the caller was told stays
/// unacknowledged). Thread-safety: every member may be called from any thread.
class HeldDeliveries : public std::enable_shared_from_this<HeldDeliveries> {
 public:
  /// Wraps `delivery` so that it is held here until settled or destroyed.
  std::unique_ptr<Delivery> hold(std::unique_ptr<Delivery> delivery);
  /// Nacks, for redelivery without delay, each held delivery its handler is not settling
  /// already; the handler's later ack, nack or term then fails with `cancelled` and changes
  /// nothing. Returns how many it released.
  asio::awaitable<std::size_t> release_all();

  /// One held delivery: whoever claims it first (its handler settling it, or release_all())
  /// is the only one to use it.
  struct Slot : std::enable_shared_from_this<Slot> {
    enum class State { held, settling, released };
    explicit Slot(std::unique_ptr<Delivery> d) : delivery(std::move(d)) {}
    bool claim(State next);

    std::mutex mutex;
    State state = State::held;
    std::unique_ptr<Delivery> delivery;
  };

 private:
  friend class ReleasableDelivery;
  void forget(Slot* slot);

  std::mutex mutex_;
  std::unordered_set<Slot*> slots_;  // alive while listed: a slot's owner unlists it first
};

}  // namespace marty::messaging::detail
