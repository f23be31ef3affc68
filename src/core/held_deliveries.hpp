#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>

#include <asio/awaitable.hpp>

#include "marty/messaging/backend.hpp"

namespace marty::messaging::detail {

class HeldDelivery;

/// The deliveries a worker has received and not yet settled, so that stop() and unsubscribe()
/// can give back what their handlers did not finish by the drain deadline: each is nacked at
/// once, and the broker hands it to another instance now, rather than when this one's
/// connection closes (which some backends hold open until every delivery is settled, so that
/// a late handler's ack would otherwise settle a message the caller was told stays
/// unacknowledged).
///
/// On the hot path: one allocation per delivery (the wrapper), linked into an intrusive list
/// under an uncontended lock, and claimed with one atomic exchange. Thread-safety: every member
/// may be called from any thread.
class HeldDeliveries : public std::enable_shared_from_this<HeldDeliveries> {
 public:
  HeldDeliveries() = default;
  HeldDeliveries(const HeldDeliveries&) = delete;
  HeldDeliveries& operator=(const HeldDeliveries&) = delete;

  /// Wraps `delivery` so that it is held here until settled or destroyed. With `unwrapped`, the
  /// wrapper's message is that (the delivery's own, out of the Python original's envelope).
  std::unique_ptr<Delivery> hold(std::unique_ptr<Delivery> delivery,
                                 std::optional<Message> unwrapped = std::nullopt);
  /// Takes back, and nacks for redelivery without delay, each held delivery its handler is not
  /// settling already; the handler's later ack, nack or term then fails with `cancelled` and
  /// changes nothing. Returns how many it released.
  asio::awaitable<std::size_t> release_all();

 private:
  friend class HeldDelivery;
  void link(HeldDelivery* delivery);
  void unlink(HeldDelivery* delivery);

  std::mutex mutex_;  // guards the list
  HeldDelivery* first_ = nullptr;
};

}  // namespace marty::messaging::detail
