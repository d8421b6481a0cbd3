#pragma once
// Limits what refusals before authentication may cost (DESIGN.md, "The envelope": refusals
// before authentication are answered cheaply, counted and rate-limited). Each consumer named by
// a request subject has a token bucket; every pre-authentication refusal (garbage, a bad
// addressing, an unknown key, a bad signature) spends a token. While a consumer's bucket is
// empty its requests are dropped before any parsing or signature check, so a flood costs one
// hash-map lookup per message instead of a verify and a signed answer. On a secured bus only an
// entity's own user may publish on its request subjects, so a flood throttles only its sender.
// Consumers that were never refused cost one atomic load.
//
// At most `max_consumers` buckets are kept; refusals from further consumer names (only an open
// bus lets one sender use many) share one bucket. Thread-safe.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "common/core/clock.h"

namespace chasqui {

struct RefusalLimits {
  double per_second = 50;  // sustained pre-authentication refusals answered per consumer
  double burst = 100;      // answered at once before the limit applies
  size_t max_consumers = 4096;
};

class RefusalLimiter {
 public:
  RefusalLimiter(const Clock& clock, RefusalLimits limits);

  // True when `consumer` has spent its refusals: drop its request unanswered.
  bool Blocked(std::string_view consumer);
  // Spends one token of `consumer` for a refusal before authentication.
  void Charge(std::string_view consumer);

  size_t tracked_consumers() const;

 private:
  struct Bucket {
    double tokens = 0;
    int64_t last_ns = 0;
  };
  Bucket* FindLocked(std::string_view consumer) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RefillLocked(Bucket& bucket, int64_t now_ns) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Clock& clock_;
  const RefusalLimits limits_;
  std::atomic<size_t> tracked_{0};  // buckets.size(), readable without the lock
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Bucket> buckets_ ABSL_GUARDED_BY(mu_);
  Bucket overflow_ ABSL_GUARDED_BY(mu_);
};

}  // namespace chasqui
