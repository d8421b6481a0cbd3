#pragma once
// What chasqui-router enforces beyond authentication (issues 4 and 5; DESIGN.md, "One request"
// step 2: grant, end user, quota), kept current while the router runs:
//   - catalog: a CatalogSnapshot kept by a CatalogFollower from chq.evt.catalog.changed, with
//     catch-up replies under `_INBOX._router.<env>.<id>.catalog`; the catalog's signatures are
//     verified through `certificates`. A router on an old snapshot keeps serving it (the age is
//     a metric); with `catalog_max_age` set it also turns unready past that age.
//   - quota: a QuotaEnforcer drawing leases through NatsLeaseSource (replies under
//     `_INBOX._router.<env>.<id>.quota`) and renewing at once on chq.evt.quota.policy. Every
//     active grant of this env in the snapshot is prepared (its first lease drawn ahead of
//     traffic), and so is each grant that appears later, so the first request of a grant is
//     not refused UNAVAILABLE (no_lease). A quota service that does not answer leaves the
//     router ready, enforcing with the leases it holds (logged once, and
//     chasqui_quota_enforcer_service_up = 0).
// Each part is optional; catalog() / quota() are null for a part not enabled and go straight
// into RouterOptions. With the quota alone nothing names the grants ahead of traffic: each
// grant's first requests are refused UNAVAILABLE (no_lease, retry_after 50 ms) while its first
// lease is drawn.
//
// Metrics: chasqui_router_catalog_snapshot_version, chasqui_router_catalog_snapshot_age_seconds
// (-1 before the catalog ever answered), chasqui_router_catalog_events_total{outcome=applied|
// refused}, chasqui_router_quota_grants_prepared; the enforcer's chasqui_quota_enforcer_*.
//
// Thread-safe. The router must be gone (or drained) before its RouterPolicies is destroyed: it
// holds catalog() and quota().

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/bus/bus.h"
#include "common/core/clock.h"
#include "common/trust/directory.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "services/catalog/catalog_follower.h"
#include "services/catalog/catalog_snapshot.h"
#include "services/quota/quota_enforcer.h"

namespace chasqui {

struct RouterPoliciesOptions {
  bool catalog = false;
  // inbox_prefix is set by Start (`_INBOX._router.<env>.<id>.catalog`).
  CatalogFollowerOptions follower;
  // Zero: any snapshot once loaded keeps the router ready. Else also unready once the catalog
  // has not confirmed the snapshot for this long.
  absl::Duration catalog_max_age = absl::ZeroDuration();

  bool quota = false;
  // router_id is set by Start.
  QuotaEnforcerOptions enforcer;
  // How long a lease or return request waits for the quota service.
  absl::Duration quota_timeout = absl::Seconds(1);

  // How often the metrics are refreshed and the snapshot is looked at for new grants.
  absl::Duration tick = absl::Milliseconds(100);
};

class RouterPolicies {
 public:
  // Starts what `options` enables and returns at once (the first snapshot loads in the
  // background: see LoadCatalog). `bus`, `certificates` and `clock` must outlive it;
  // `certificates` may be null only with the catalog off. InvalidArgument for a bad env or
  // router id, FailedPrecondition for the catalog without certificates; else the bus's errors.
  static absl::StatusOr<std::unique_ptr<RouterPolicies>> Start(
      const RouterPoliciesOptions& options, Bus* bus, std::string_view env,
      std::string_view router_id, const CertificateLookup* certificates,
      std::shared_ptr<prometheus::Registry> registry, const Clock& clock = SystemClock());
  ~RouterPolicies();  // does not return leases: call Drain() first

  // For RouterOptions; null when that part is off.
  const CatalogSnapshot* catalog() const { return options_.catalog ? &snapshot_ : nullptr; }
  QuotaEnforcer* quota() const { return enforcer_.get(); }

  // Until the first snapshot is loaded, catching up on the caller's thread (every
  // follower.retry): OK at once with the catalog off or a snapshot held; else, after
  // `timeout`, Unavailable with the last catch-up error (unreachable catalog, a signature that
  // does not verify...). Also prepares the snapshot's grants before it returns.
  absl::Status LoadCatalog(absl::Duration timeout);

  // For /readyz: Unavailable while no snapshot is loaded, or (catalog_max_age set) it is older
  // than that. The quota service's reachability never makes the router unready.
  absl::Status Ready() const;
  // Returns the unspent leases (the enforcer's first failure, if any) and stops preparing
  // grants and refreshing metrics. Afterwards the enforcer refuses every request NO_LEASE.
  // Not thread-safe against itself.
  absl::Status Drain();

  // -1 before the catalog ever answered (see CatalogFollower::AgeMillis).
  int64_t CatalogAgeMillis() const;
  bool QuotaReachable() const { return enforcer_ == nullptr || enforcer_->ServiceReachable(); }
  const CatalogFollower* follower() const { return follower_.get(); }

 private:
  RouterPolicies(const RouterPoliciesOptions& options, std::string env, const Clock& clock)
      : options_(options), env_(std::move(env)), clock_(clock), snapshot_(env_) {}
  void Loop();
  // Refreshes the gauges and counters from the follower.
  void UpdateMetrics();
  // Prepares every active grant of env_ not prepared yet, if the snapshot changed since.
  void PrepareNewGrants();

  const RouterPoliciesOptions options_;
  const std::string env_;
  const Clock& clock_;
  CatalogSnapshot snapshot_;
  std::unique_ptr<CatalogFollower> follower_;
  std::unique_ptr<NatsLeaseSource> lease_source_;
  std::unique_ptr<QuotaEnforcer> enforcer_;
  std::unique_ptr<Subscription> policy_events_;

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Gauge* version_gauge_ = nullptr;
  prometheus::Gauge* age_gauge_ = nullptr;
  prometheus::Counter* applied_counter_ = nullptr;
  prometheus::Counter* refused_counter_ = nullptr;
  prometheus::Gauge* prepared_gauge_ = nullptr;
  int64_t applied_seen_ = 0;  // the Loop's own
  int64_t refused_seen_ = 0;

  absl::Mutex prepare_mu_;  // one PrepareNewGrants at a time
  uint64_t prepared_version_ ABSL_GUARDED_BY(prepare_mu_) = 0;
  absl::flat_hash_set<std::string> prepared_ ABSL_GUARDED_BY(prepare_mu_);

  std::atomic<bool> drained_{false};
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace chasqui
