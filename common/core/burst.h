#pragma once
// Work deferred to the end of a burst of deliveries. A thread that delivers messages which were
// already queued (a NATS subscription draining its backlog) is "in a burst": producers on that
// thread, such as a BatchSigner, may hold their work and do it once, when the backlog is
// drained, so one signature covers every answer the burst produced. Nothing ever waits for new
// input: a burst ends as soon as nothing more is queued, or after kMaxBurstMessages.
//
// Thread-local: each thread has its own burst; no locking.

#include <cstddef>

namespace chasqui {

inline constexpr size_t kMaxBurstMessages = 256;

class BurstListener {
 public:
  virtual void OnBurstEnd() = 0;

 protected:
  ~BurstListener() = default;
};

// True while the calling thread is delivering a message.
bool InBurst();

// Calls `listener->OnBurstEnd()` once, on this thread, when its current burst ends. Returns
// false (and registers nothing) outside a burst. A listener must outlive the burst.
bool DeferToBurstEnd(BurstListener* listener);

// The deliverer's side: one per delivered message, around the handler call.
class BurstDelivery {
 public:
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
