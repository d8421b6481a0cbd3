#include "services/router/refusal_limiter.h"

#include <algorithm>

namespace chasqui {

RefusalLimiter::RefusalLimiter(const Clock& clock, RefusalLimits limits)
    : clock_(clock), limits_(limits) {
  overflow_.tokens = limits_.burst;
  overflow_.last_ns = clock_.NowMonoNanos();
}

void RefusalLimiter::RefillLocked(Bucket& bucket, int64_t now_ns) const {
  if (now_ns > bucket.last_ns) {
    bucket.tokens = std::min(limits_.burst, bucket.tokens + static_cast<double>(now_ns - bucket.last_ns) *
                                                                1e-9 * limits_.per_second);
    bucket.last_ns = now_ns;
  }
}

RefusalLimiter::Bucket* RefusalLimiter::FindLocked(std::string_view consumer) {
  auto it = buckets_.find(absl::string_view(consumer.data(), consumer.size()));
  return it == buckets_.end() ? nullptr : &it->second;
}

bool RefusalLimiter::Blocked(std::string_view consumer) {
  if (tracked_.load(std::memory_order_relaxed) == 0 && limits_.max_consumers > 0) return false;
  absl::MutexLock lock(&mu_);
  Bucket* bucket = FindLocked(consumer);
  if (bucket == nullptr) {
    if (buckets_.size() < limits_.max_consumers) return false;
    bucket = &overflow_;
  }
  RefillLocked(*bucket, clock_.NowMonoNanos());
  if (bucket->tokens < 1) return true;
  if (bucket != &overflow_ && bucket->tokens >= limits_.burst) {
    // Fully refilled: forget the consumer, so quiet ones cost nothing again.
    buckets_.erase(buckets_.find(absl::string_view(consumer.data(), consumer.size())));
    tracked_.store(buckets_.size(), std::memory_order_relaxed);
  }
  return false;
}

void RefusalLimiter::Charge(std::string_view consumer) {
  const int64_t now_ns = clock_.NowMonoNanos();
  absl::MutexLock lock(&mu_);
  Bucket* bucket = FindLocked(consumer);
  if (bucket == nullptr) {
    if (buckets_.size() < limits_.max_consumers) {
      bucket = &buckets_.emplace(std::string(consumer), Bucket{limits_.burst, now_ns}).first->second;
      tracked_.store(buckets_.size(), std::memory_order_relaxed);
    } else {
      bucket = &overflow_;
    }
  }
  RefillLocked(*bucket, now_ns);
  bucket->tokens = std::max(0.0, bucket->tokens - 1);
}

size_t RefusalLimiter::tracked_consumers() const {
  absl::MutexLock lock(&mu_);
  return buckets_.size();
}

}  // namespace chasqui
