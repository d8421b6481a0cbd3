#pragma once
// Quota policies from the catalog (issue 5, "Defaults come from the service's catalog entry; a
// grant may carry its own"): `chasqui-quota serve --catalog` follows the catalog's signed
// events (CatalogFollower) instead of reading a policy file, and keeps the ledger's defaults
// current while it runs.
//
// What is derived, for every environment the quota service serves:
//   - a QuotaPolicy per ACTIVE grant: the grant's own quota if it sets any limit, else its
//     service's default_quota (the catalog copies the default into the grant when access is
//     requested, so the grant's own is the usual source);
//   - a ProviderCapacity per published or deprecated service: its spec's capacity
//     (rate_per_second, burst), in every environment.
// Grants that are pending, rejected, suspended or revoked get nothing new: the routers refuse
// them on the catalog's word (FORBIDDEN) before quotas matter, and their counters are kept.
//
// Precedence (QuotaLedger::ApplyDefaults): a limit a person decided wins over the catalog.
// A grant whose stored policy came from an operator's set_policy ("operator:<serial>") or from
// a quota request's decision ("decision:<id>") keeps it whatever the catalog later says; the
// catalog replaces only what came from the catalog ("catalog:v<version>") or from a policy
// file ("config"), and only when the limits differ. Likewise for capacities. So an approved
// increase survives catalog changes and restarts; to go back to the catalog's default an
// operator sets the policy again (or a new decision is taken).
//
// Every policy or capacity changed is announced on chq.evt.quota.policy (PolicyChanged), as
// the quota service does for its own changes, so routers renew their leases at once.

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "chasqui/v1/catalog.pb.h"
#include "common/bus/bus.h"
#include "common/core/clock.h"
#include "common/trust/directory.h"
#include "services/catalog/catalog_follower.h"
#include "services/catalog/catalog_snapshot.h"
#include "services/quota/quota_ledger.h"

namespace chasqui {

// The policies the catalog implies for `envs` (see above). Entries that would not pass
// ValidatePolicy / ValidateCapacity are left out and named in `skipped` (if given).
PolicySet DerivePolicies(const v1::CatalogSnapshot& snapshot, const std::vector<std::string>& envs,
                         std::vector<std::string>* skipped = nullptr);

// A PolicySource over a followed CatalogSnapshot (not owned). Load(): Unavailable until the
// snapshot is loaded.
class CatalogPolicySource final : public PolicySource {
 public:
  CatalogPolicySource(const CatalogSnapshot* snapshot, std::vector<std::string> envs)
      : snapshot_(snapshot), envs_(std::move(envs)) {}
  absl::StatusOr<PolicySet> Load() override;

 private:
  const CatalogSnapshot* snapshot_;
  const std::vector<std::string> envs_;
};

struct CatalogPoliciesOptions {
  // Environments whose grants get policies (the quota service's --env).
  std::vector<std::string> envs = {"test", "prod"};
  // The follower's: catch-up replies come to `<inbox_prefix>.*`; events are verified with the
  // catalog's certificate of `follow_env` (the catalog signs every event for every env it
  // serves, and one snapshot holds the grants of all of them).
  CatalogFollowerOptions follower;
  std::string follow_env = "test";
  // How often the snapshot's version is checked for a change to apply.
  absl::Duration poll = absl::Milliseconds(100);
};

// Follows the catalog and applies its policies to the ledger. Thread-safe; one thread of its
// own (the follower has another).
class CatalogPolicies {
 public:
  // Subscribes and starts following; returns at once (Ready says when the first snapshot has
  // been applied). `bus`, `ledger`, `certificates` and `clock` must outlive it.
  static absl::StatusOr<std::unique_ptr<CatalogPolicies>> Start(
      const CatalogPoliciesOptions& options, Bus* bus, QuotaLedger* ledger,
      const CertificateLookup& certificates, const Clock& clock = SystemClock());
  ~CatalogPolicies();  // stops the thread, then the follower

  // Derives the policies of the snapshot held now and applies them (what the thread does
  // whenever the version moves); returns how many policies and capacities changed.
  // Unavailable before the first snapshot; the ledger's errors otherwise.
  absl::StatusOr<int> Sync();
  // OK once a snapshot has been applied; Unavailable saying so before. The service stays
  // ready on an old snapshot while the catalog is down (the follower logs its age).
  absl::Status Ready() const;
  // The catalog version whose policies the ledger holds (0 before the first).
  uint64_t applied_version() const { return applied_version_.load(); }
  CatalogFollower& follower() { return *follower_; }

 private:
  CatalogPolicies() = default;
  void Loop();
  void Announce(const ApplyDefaultsResult& changed);

  CatalogPoliciesOptions options_;
  Bus* bus_ = nullptr;
  QuotaLedger* ledger_ = nullptr;
  const Clock* clock_ = nullptr;
  std::unique_ptr<CatalogSnapshot> snapshot_;
  std::unique_ptr<CatalogFollower> follower_;
  absl::Mutex sync_mu_;  // one Sync at a time
  std::atomic<uint64_t> applied_version_{0};
  std::atomic<bool> applied_once_{false};
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace chasqui
