#pragma once
// Freshness and replay (DESIGN.md): sent_at must lie within ±window of now (EXPIRED otherwise),
// and a (sender, id) seen inside the window is refused (REPLAYED). Ids are kept for at least
// twice the window, so an id accepted at the edge of the window is still known when its
// sent_at leaves the window on the other side. Thread-safe.

#include <array>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "common/core/clock.h"

namespace chasqui {

class ReplayGuard {
 public:
  ReplayGuard(const Clock& clock, int64_t window_ms);

  // OK and remembers (sender, id); or EXPIRED / REPLAYED as ChasquiErrors. `id` is 16 bytes
  // (ParseEnvelope checks); a longer one is compared by its first 16.
  absl::Status Check(uint64_t sender, const std::string& id, int64_t sent_at_ms);

  int64_t window_ms() const { return window_ms_; }
  size_t remembered() const;

 private:
  // The id as a fixed array: no allocation per request.
  using Key = std::pair<uint64_t, std::array<char, 16>>;
  const Clock& clock_;
  const int64_t window_ms_;
  mutable absl::Mutex mu_;
  absl::flat_hash_set<Key> current_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<Key> previous_ ABSL_GUARDED_BY(mu_);
  int64_t current_since_ms_ ABSL_GUARDED_BY(mu_);
};

}  // namespace chasqui
