#include "held_deliveries.hpp"

#include <atomic>
#include <vector>

namespace marty::messaging::detail {

// What a handler settles: the backend's delivery, unless release_all() took it back first.
// Whoever claims it first (its handler settling it, or release_all()) is the only one to use
// the backend's delivery.
class HeldDelivery final : public Delivery {
 public:
  HeldDelivery(std::shared_ptr<HeldDeliveries> owner, std::unique_ptr<Delivery> inner,
               std::optional<Message> unwrapped)
      : Delivery(unwrapped ? std::move(*unwrapped) : inner->message(), inner->attempt(),
                 inner->sequence()),
        owner_(std::move(owner)),
        inner_(std::move(inner)),
        acks_synchronously_(inner_->acks_synchronously()) {
    if (const Error* poison = inner_->decode_error()) set_decode_error(*poison);
    set_wire_format(unwrapped ? WireFormat::python_envelope : inner_->wire_format());
    owner_->link(this);
  }
  ~HeldDelivery() override { owner_->unlink(this); }

  asio::awaitable<Result<void>> ack() override {
    if (!claim()) co_return released();
    co_return co_await inner_->ack();
  }
  asio::awaitable<Result<void>> nack(std::chrono::milliseconds delay) override {
    if (!claim()) co_return released();
    co_return co_await inner_->nack(delay);
  }
  asio::awaitable<Result<void>> term() override {
    if (!claim()) co_return released();
    co_return co_await inner_->term();
  }
  // Asked of inner_ when it is wrapped: release_all() may take inner_ away at any time.
  bool acks_synchronously() const noexcept override { return acks_synchronously_; }
  Result<void> ack_now() override {
    if (!claim()) return released();
    return inner_->ack_now();
  }

 private:
  friend class HeldDeliveries;

  // True for the first caller only: its handler settling it, or release_all() taking it.
  bool claim() noexcept { return held_.exchange(false, std::memory_order_acq_rel); }

  static Error released() {
    return Error(errc::cancelled,
                 "the message was released for redelivery at the drain deadline (stop or "
                 "unsubscribe), before its handler finished");
  }

  std::shared_ptr<HeldDeliveries> owner_;
  std::unique_ptr<Delivery> inner_;  // moved out by release_all() when it wins the claim
  const bool acks_synchronously_;
  std::atomic<bool> held_{true};  // neither claimed by its handler nor released
  // Under owner_->mutex_:
  HeldDelivery* previous_ = nullptr;
  HeldDelivery* next_ = nullptr;
};

std::unique_ptr<Delivery> HeldDeliveries::hold(std::unique_ptr<Delivery> delivery,
                                               std::optional<Message> unwrapped) {
  return std::make_unique<HeldDelivery>(shared_from_this(), std::move(delivery),
                                        std::move(unwrapped));
}

void HeldDeliveries::link(HeldDelivery* delivery) {
  std::lock_guard lock(mutex_);
  delivery->next_ = first_;
  if (first_ != nullptr) first_->previous_ = delivery;
  first_ = delivery;
}

void HeldDeliveries::unlink(HeldDelivery* delivery) {
  std::lock_guard lock(mutex_);
  if (delivery->previous_ != nullptr) {
    delivery->previous_->next_ = delivery->next_;
  } else {
    first_ = delivery->next_;
  }
  if (delivery->next_ != nullptr) delivery->next_->previous_ = delivery->previous_;
}

asio::awaitable<std::size_t> HeldDeliveries::release_all() {
  std::vector<std::unique_ptr<Delivery>> taken;
  {
    std::lock_guard lock(mutex_);
    for (HeldDelivery* delivery = first_; delivery != nullptr; delivery = delivery->next_) {
      // Listed, so alive (it unlists itself first); its handler may be settling it meanwhile.
      if (delivery->claim()) taken.push_back(std::move(delivery->inner_));
    }
  }
  for (const auto& delivery : taken) {
    // A failed nack needs no more: the delivery, never settled, is released by the backend
    // when it is destroyed (the Delivery contract).
    (void)co_await delivery->nack(std::chrono::milliseconds(0));
  }
  co_return taken.size();
}

}  // namespace marty::messaging::detail
