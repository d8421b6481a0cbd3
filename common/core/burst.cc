#include "common/core/burst.h"

#include <algorithm>
#include <vector>

namespace chasqui {
namespace {

struct BurstState {
  int depth = 0;
  size_t messages = 0;
  std::vector<BurstListener*> listeners;
};

thread_local BurstState t_burst;

void RunListeners() {
  // A listener may defer again while running (its work produced more work): loop until quiet.
  while (!t_burst.listeners.empty()) {
    std::vector<BurstListener*> now;
    now.swap(t_burst.listeners);
    for (BurstListener* l : now) l->OnBurstEnd();
  }
  t_burst.messages = 0;
}

}  // namespace

bool InBurst() { return t_burst.depth > 0; }

bool DeferToBurstEnd(BurstListener* listener) {
  if (t_burst.depth == 0) return false;
  auto& ls = t_burst.listeners;
  if (std::find(ls.begin(), ls.end(), listener) == ls.end()) ls.push_back(listener);
  return true;
}

BurstDelivery::BurstDelivery() { ++t_burst.depth; }

void BurstDelivery::End(bool more_pending) {
  if (ended_) return;
  ended_ = true;
  --t_burst.depth;
  ++t_burst.messages;
  if (t_burst.depth == 0 && (!more_pending || t_burst.messages >= kMaxBurstMessages)) {
    RunListeners();
  }
}

BurstDelivery::~BurstDelivery() { End(false); }

}  // namespace chasqui
