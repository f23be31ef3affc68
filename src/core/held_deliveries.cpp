#include "held_deliveries.hpp"

#include <vector>

namespace marty::messaging::detail {

bool HeldDeliveries::Slot::claim(State next) {
  std::lock_guard lock(mutex);
  if (state != State::held) return false;
  state = next;
  return true;
}

// What a handler settles: the backend's delivery, unless release_all() took it back first.
class ReleasableDelivery final : public Delivery {
 public:
  ReleasableDelivery(std::shared_ptr<HeldDeliveries> owner,
                     std::shared_ptr<HeldDeliveries::Slot> slot)
      : Delivery(slot->delivery->message(), slot->delivery->attempt(), slot->delivery->sequence()),
        owner_(std::move(owner)),
        slot_(std::move(slot)) {}
  ~ReleasableDelivery() override { owner_->forget(slot_.get()); }

  asio::awaitable<Result<void>> ack() override {
    if (!slot_->claim(Slot::State::settling)) co_return released();
    co_return co_await slot_->delivery->ack();
  }
  asio::awaitable<Result<void>> nack(std::chrono::milliseconds delay) override {
    if (!slot_->claim(Slot::State::settling)) co_return released();
    co_return co_await slot_->delivery->nack(delay);
  }
  asio::awaitable<Result<void>> term() override {
    if (!slot_->claim(Slot::State::settling)) co_return released();
    co_return co_await slot_->delivery->term();
  }

 private:
  using Slot = HeldDeliveries::Slot;

  static Error released() {
    return Error(errc::cancelled,
                 "the message was released for redelivery at the drain deadline (stop or "
                 "unsubscribe), before its handler finished");
  }

  std::shared_ptr<HeldDeliveries> owner_;
  std::shared_ptr<Slot> slot_;
};

std::unique_ptr<Delivery> HeldDeliveries::hold(std::unique_ptr<Delivery> delivery) {
  auto slot = std::make_shared<Slot>(std::move(delivery));
  {
    std::lock_guard lock(mutex_);
    slots_.insert(slot.get());
  }
  return std::make_unique<ReleasableDelivery>(shared_from_this(), std::move(slot));
}

void HeldDeliveries::forget(Slot* slot) {
  std::lock_guard lock(mutex_);
  slots_.erase(slot);
}

asio::awaitable<std::size_t> HeldDeliveries::release_all() {
  std::vector<std::shared_ptr<Slot>> claimed;
  {
    std::lock_guard lock(mutex_);
    for (Slot* slot : slots_) {
      // Listed, so its ReleasableDelivery (which owns it) has not unlisted it yet: alive.
      if (slot->claim(Slot::State::released)) claimed.push_back(slot->shared_from_this());
    }
  }
  for (const auto& slot : claimed) {
    // A failed nack needs no more: the delivery, never settled, is released by the backend
    // when it is destroyed (the Delivery contract).
    (void)co_await slot->delivery->nack(std::chrono::milliseconds(0));
  }
  co_return claimed.size();
}

}  // namespace marty::messaging::detail
