#pragma once
// Keeps a CatalogSnapshot current from the bus (issue 4, "How routers and gateways use it"):
// applies every signed event published on chq.evt.catalog.changed, verified for its own
// environment; after a gap (an event it cannot apply), at start, and every `resync` interval
// (so a lost last event is noticed too) it catches up through chq.ctl.catalog.events, or
// chq.ctl.catalog.snapshot when it holds nothing yet. While the catalog is unreachable it
// keeps serving its last snapshot and reports how old it is.
//
// Thread-safe. Events arrive on the subscription's thread; catch-up runs on the follower's
// own thread; both apply through CatalogSnapshot, which serialises writers and drops
// duplicates.

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/bus/bus.h"
#include "common/core/clock.h"
#include "services/catalog/catalog_client.h"
#include "services/catalog/catalog_signing.h"
#include "services/catalog/catalog_snapshot.h"

namespace chasqui {

struct CatalogFollowerOptions {
  // Where catch-up replies come back: `_INBOX._router.<env>.<id>.catalog` for a router.
  std::string inbox_prefix;
  absl::Duration request_timeout = absl::Seconds(2);
  // A failed catch-up is retried after this long.
  absl::Duration retry = absl::Milliseconds(500);
  // Catch up this often even without a gap.
  absl::Duration resync = absl::Seconds(30);
};

class CatalogFollower {
 public:
  // Subscribes and starts catching up in the background; returns at once (use WaitLoaded or
  // Ready for the first snapshot). `bus`, `snapshot`, `certificates` and `clock` must outlive
  // the follower.
  static absl::StatusOr<std::unique_ptr<CatalogFollower>> Start(
      const CatalogFollowerOptions& options, Bus* bus, CatalogSnapshot* snapshot,
      const CertificateLookup& certificates, const Clock& clock = SystemClock());
  ~CatalogFollower();  // unsubscribes and joins the thread

  // Catches up now, on the caller's thread: OK once the snapshot holds the catalog's latest
  // version as the catalog answered it; the catalog's or the bus's error otherwise (the
  // snapshot is left as it was, still served).
  absl::Status CatchUp();

  // OK once a snapshot is loaded and the catalog answered within `max_age`; Unavailable
  // saying which is not the case otherwise. A router may choose to stay ready on an old
  // snapshot (keep serving while the catalog is down) and only alert on the age.
  absl::Status Ready(absl::Duration max_age) const;
  // Blocks until the snapshot is loaded or `timeout` passes.
  bool WaitLoaded(absl::Duration timeout) const;

  uint64_t version() const { return snapshot_->version(); }
  // Milliseconds since the catalog last answered or an event was applied; -1 if never.
  int64_t AgeMillis() const;
  int64_t events_applied() const { return events_applied_.load(); }
  int64_t events_refused() const { return events_refused_.load(); }
  int64_t catch_ups() const { return catch_ups_.load(); }

 private:
  CatalogFollower() = default;
  void OnEvent(const BusMessage& msg);
  void Loop();
  void Touch();

  CatalogFollowerOptions options_;
  CatalogSnapshot* snapshot_ = nullptr;
  const CertificateLookup* certificates_ = nullptr;
  const Clock* clock_ = nullptr;
  std::unique_ptr<CatalogClient> client_;
  std::unique_ptr<Subscription> subscription_;
  absl::Mutex catch_up_mu_;  // one catch-up at a time
  mutable absl::Mutex mu_;
  bool need_catch_up_ ABSL_GUARDED_BY(mu_) = true;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<int64_t> last_contact_ms_{-1};
  std::atomic<int64_t> events_applied_{0};
  std::atomic<int64_t> events_refused_{0};
  std::atomic<int64_t> catch_ups_{0};
  std::thread thread_;
};

}  // namespace chasqui
