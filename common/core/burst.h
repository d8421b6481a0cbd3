#pragma once
// Work deferred to the end of a burst of deliveries. A thread that delivers messages which were
// already queued (a NATS subscription draining its backlog) is "in a burst": producers on that
// thread, such as a BatchSigner, may hold their work and do it once, when the backlog is
// drained, so one signature covers every answer the burst produced. Nothing ever waits for new
// input: a burst ends at the first delivery boundary (before or after a handler) where nothing
// more is queued, kMaxBurstMessages have passed, or the oldest held work is kMaxBurstHoldNanos
// old; so held work waits at most that long plus one handler's run. Code that blocks inside a
// handler (a synchronous call) must EndBurstNow() first, or it would wait for itself.
//
// Thread-local: each thread has its own burst; no locking.

#include <cstddef>
#include <cstdint>
#include <memory>

namespace chasqui {

inline constexpr size_t kMaxBurstMessages = 256;
inline constexpr int64_t kMaxBurstHoldNanos = 1'000'000;

class BurstListener {
 public:
  virtual void OnBurstEnd() = 0;

 protected:
  ~BurstListener() = default;
};

// True while the calling thread is delivering a message.
bool InBurst();

// Calls `listener->OnBurstEnd()` once, on this thread, when its current burst ends (or when the
// thread exits). Returns false (and registers nothing) outside a burst. The registration holds a
// weak reference: a listener that is gone by then is skipped, so its owner must make its own
// held work safe first (BatchSigner::Stop signs everything it holds).
bool DeferToBurstEnd(const std::shared_ptr<BurstListener>& listener);

// Runs what the current burst holds now, e.g. before blocking inside a handler. No-op outside
// a burst.
void EndBurstNow();

// The deliverer's side: one per delivered message, around the handler call.
class BurstDelivery {
 public:
  // Runs held work first if it is already kMaxBurstHoldNanos old.
  BurstDelivery();
  // `more_pending`: messages are already queued behind this one. Runs the listeners unless the
  // burst goes on.
  void End(bool more_pending);
  ~BurstDelivery();
  BurstDelivery(const BurstDelivery&) = delete;
  BurstDelivery& operator=(const BurstDelivery&) = delete;

 private:
  bool ended_ = false;
};

}  // namespace chasqui
