#pragma once
// Refusals the trace counts rather than records one by one (DESIGN.md, "The envelope"): those
// before authentication and the drops (a flood must not cost a synced write per message), and
// the authenticated refusals that cannot take a record's unique (sender, id) key: a REPLAYED
// request shares it with the exchange it repeats, and an AUDIT_UNAVAILABLE one is refused
// because records are not being stored. Counts are kept per (consumer label, code) over an
// interval; Cut() closes the interval and turns it into RefusalCount entries.
//
// Labels are bounded by the caller (known entities or "unknown"), so the map is too.
// Thread-safe.

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "chasqui/v1/audit.pb.h"
#include "chasqui/v1/envelope.pb.h"

namespace chasqui {

class RefusalTally {
 public:
  // The first interval starts at `start_ms` (Unix ms).
  RefusalTally(std::string env, std::string router_id, int64_t start_ms)
      : env_(std::move(env)), router_id_(std::move(router_id)), interval_start_ms_(start_ms) {}

  void Count(std::string_view consumer_label, v1::Code code, uint64_t n = 1);

  // Closes the interval that began at the previous Cut (or at construction) and returns one
  // entry per (consumer, code) counted in it, stamped [start, now_ms). Empty if nothing was
  // counted. The interval start makes each entry's unique key in the audit chain, so an entry
  // sent again after a lost ack is recognised there as already stored.
  std::vector<v1::RefusalCount> Cut(int64_t now_ms);

  // Entries counted since the last Cut (for tests and the shutdown flush).
  uint64_t pending() const;

 private:
  const std::string env_;
  const std::string router_id_;
  mutable absl::Mutex mu_;
  int64_t interval_start_ms_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::pair<std::string, int>, uint64_t> counts_ ABSL_GUARDED_BY(mu_);
};

}  // namespace chasqui
