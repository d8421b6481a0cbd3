#include "services/router/refusal_tally.h"

#include <algorithm>

namespace chasqui {

void RefusalTally::Count(std::string_view consumer_label, v1::Code code, uint64_t n) {
  absl::MutexLock lock(&mu_);
  counts_[{std::string(consumer_label), static_cast<int>(code)}] += n;
}

std::vector<v1::RefusalCount> RefusalTally::Cut(int64_t now_ms) {
  absl::flat_hash_map<std::pair<std::string, int>, uint64_t> counts;
  int64_t start_ms;
  {
    absl::MutexLock lock(&mu_);
    counts.swap(counts_);
    start_ms = interval_start_ms_;
    // Two cuts in one millisecond would give the second interval the first one's key.
    interval_start_ms_ = std::max(now_ms, start_ms + 1);
  }
  std::vector<v1::RefusalCount> out;
  out.reserve(counts.size());
  for (const auto& [key, n] : counts) {
    if (n == 0) continue;
    v1::RefusalCount c;
    c.set_env(env_);
    c.set_router_id(router_id_);
    c.set_consumer(key.first);
    c.set_reason(static_cast<v1::Code>(key.second));
    c.set_interval_start_ms(start_ms);
    c.set_interval_ms(std::max<int64_t>(now_ms - start_ms, 1));
    c.set_count(n);
    out.push_back(std::move(c));
  }
  return out;
}

uint64_t RefusalTally::pending() const {
  absl::MutexLock lock(&mu_);
  uint64_t n = 0;
  for (const auto& [key, count] : counts_) n += count;
  return n;
}

}  // namespace chasqui
