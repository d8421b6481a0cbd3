#include "common/core/burst.h"

#include <algorithm>
#include <chrono>
#include <vector>

namespace chasqui {
namespace {

int64_t NowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct BurstState {
  int depth = 0;
  size_t messages = 0;
  int64_t first_held_ns = 0;
  std::vector<std::weak_ptr<BurstListener>> listeners;

  void Run() {
    // A listener may defer again while running (its work produced more work): loop until quiet.
    while (!listeners.empty()) {
      std::vector<std::weak_ptr<BurstListener>> now;
      now.swap(listeners);
      for (const auto& weak : now) {
        if (std::shared_ptr<BurstListener> l = weak.lock()) l->OnBurstEnd();
      }
    }
    messages = 0;
    first_held_ns = 0;
  }

  bool HeldTooLong() const {
    return !listeners.empty() && NowNanos() - first_held_ns >= kMaxBurstHoldNanos;
  }

  // A thread that exits with held work runs it rather than lose it.
  ~BurstState() { Run(); }
};

thread_local BurstState t_burst;

}  // namespace

bool InBurst() { return t_burst.depth > 0; }

bool DeferToBurstEnd(const std::shared_ptr<BurstListener>& listener) {
  if (t_burst.depth == 0) return false;
  auto& ls = t_burst.listeners;
  if (ls.empty()) t_burst.first_held_ns = NowNanos();
  const bool known = std::any_of(ls.begin(), ls.end(), [&](const auto& w) {
    return !w.owner_before(listener) && !listener.owner_before(w);
  });
  if (!known) ls.push_back(listener);
  return true;
}

void EndBurstNow() {
  if (t_burst.depth > 0) t_burst.Run();
}

BurstDelivery::BurstDelivery() {
  if (t_burst.depth == 0 && t_burst.HeldTooLong()) t_burst.Run();
  ++t_burst.depth;
}

void BurstDelivery::End(bool more_pending) {
  if (ended_) return;
  ended_ = true;
  --t_burst.depth;
  ++t_burst.messages;
  if (t_burst.depth == 0 &&
      (!more_pending || t_burst.messages >= kMaxBurstMessages || t_burst.HeldTooLong())) {
    t_burst.Run();
  }
}

BurstDelivery::~BurstDelivery() { End(false); }

}  // namespace chasqui
