#pragma once
// The quota service's state and logic (DESIGN.md, "The parts": quota): policies per grant and
// per provider service, counters per (grant, period), the leases routers hold, and quota
// requests with their decisions, on a KvStore (RocksDB) and an injected Clock. No bus here:
// QuotaService wires it to chq.ctl.quota.<verb>.
//
// Leases (the scheme routers rely on):
//   - Allowance: a router may hold at most a bound of a grant's allowance at once,
//       bound = min(max_lease, max(1, cap * max_lease_fraction) for each period cap,
//                   max(1, ceil(remaining * slice_fraction / holders)))
//     (Lease.max_held), so it shrinks as the remainder shrinks and as more routers share the
//     grant. A lease grants min(wanted, remaining, bound - unspent), where unspent is what
//     the router reports it still holds (LeaseRequest.unspent): a router that dies strands at
//     most one bound. Granted allowance is added to the period's counters the moment it is
//     granted (one synced write before the answer), so consumed + outstanding never exceeds a
//     cap: a router that dies loses at most its unspent allowance, never admits beyond the
//     cap. Unspent allowance returned (LeaseReturn) is credited back, never more than that
//     router holds for that period. The reports also tell usage what is spent and what is
//     only leased (GrantUsage.day_unspent_at_most).
//   - Rate: a grant's rate and burst are split equally among the routers holding a live rate
//     share of it (k = holders, this one included): rate/k tokens per second, max(1, burst/k)
//     bucket. A share lives `share_ttl_ms`; routers renew at half-life while they see traffic,
//     and idle routers' shares lapse, so k counts the routers actually serving the grant. NATS
//     queue groups spread requests evenly over routers, which is what an equal split assumes.
//     While routers join, the old shares stay in use until renewed: the sum may exceed the rate
//     by at most one share for at most share_ttl_ms. A provider service's capacity is split
//     the same way over the routers holding a live share of any grant of that service.
//   - Periods: day = local calendar day, month = local calendar month in `zone`; counters are
//     keyed by period, so rollover at local midnight / the 1st needs no job.
//
// A grant with no policy has no grant limits (its counts are still kept); a provider service
// with no capacity has no capacity limit. Policies come from a JSON file (JsonPolicyFile,
// ApplyInitial) or the catalog (catalog_policies.h, ApplyDefaults), and from people's signed
// changes (set_policy, quota decisions), which win over both.
//
// Store layout (be64 = 8-byte big-endian):
//   policy/<env>/<consumer>/<provider>/<service>      QuotaPolicy
//   capacity/<env>/<provider>/<service>               ProviderCapacity
//   count/<grant key>/d/<YYYY-MM-DD>                  be64 consumed in that local day
//   count/<grant key>/m/<YYYY-MM>                     be64 consumed in that local month
//   lease/<grant key>/<router id>                     LeaseHolding
//   req/<be64 id>                                     QuotaRequestRecord
//   nonce/<be64 serial><nonce>                        be64 of when it may be forgotten
//   meta/lease_id, meta/request_id                    be64 of the last one issued
//
// Thread-safe: every call is serialised on one mutex (a lease is one synced write).

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "chasqui/v1/quota.pb.h"
#include "common/core/clock.h"
#include "common/store/kv_store.h"

namespace chasqui {

// Day and month periods in one time zone.
class QuotaPeriods {
 public:
  // InvalidArgument naming the zone if the system's tz database does not know it (on Debian
  // the tzdata package provides /usr/share/zoneinfo).
  static absl::StatusOr<QuotaPeriods> Load(const std::string& zone);
  struct Period {
    std::string day;    // "2026-03-14"
    std::string month;  // "2026-03"
    int64_t day_ends_at_ms = 0;    // the next local midnight
    int64_t month_ends_at_ms = 0;  // 00:00 local on the next month's 1st
  };
  Period At(int64_t unix_ms) const;
  const std::string& zone() const { return name_; }

 private:
  std::string name_;
  absl::TimeZone tz_;
};

// Policies from configuration: the initial JSON file, or the catalog (catalog_policies.h).
struct PolicySet {
  std::vector<v1::QuotaPolicy> grants;
  std::vector<v1::ProviderCapacity> providers;
};

class PolicySource {
 public:
  virtual ~PolicySource() = default;
  virtual absl::StatusOr<PolicySet> Load() = 0;
};

// A JSON file:
//   {"grants":    [{"env": "test", "consumer": "sin", "provider": "segip",
//                   "service": "persona", "rate_per_second": 10, "burst": 20,
//                   "per_day": 1000, "per_month": 20000}],
//    "providers": [{"env": "test", "provider": "segip", "service": "persona",
//                   "rate_per_second": 100, "burst": 200}]}
// Load(): NotFound if unreadable; InvalidArgument naming the entry and field that is wrong
// (unknown fields are refused, so a typo never silently drops a limit).
class JsonPolicyFile final : public PolicySource {
 public:
  explicit JsonPolicyFile(std::string path) : path_(std::move(path)) {}
  absl::StatusOr<PolicySet> Load() override;
  // The same, from text (tests, the CLI).
  static absl::StatusOr<PolicySet> Parse(const std::string& text, const std::string& origin);

 private:
  std::string path_;
};

// InvalidArgument naming the field: names, finite non-negative rate, burst and caps in
// range, a day cap above the month cap.
absl::Status ValidatePolicy(const v1::QuotaPolicy& policy);
absl::Status ValidateCapacity(const v1::ProviderCapacity& capacity);

// What QuotaLedger::ApplyDefaults changed.
struct ApplyDefaultsResult {
  std::vector<v1::GrantKey> grants;      // policies set
  std::vector<v1::ServiceKey> services;  // capacities set
  int kept = 0;  // entries left alone because a person's decision holds them
};

// True for a policy or capacity that came from configuration or the catalog (changed_by
// "config" or "catalog:..."), which the catalog's defaults may replace.
bool IsDefaultLimit(const std::string& changed_by);

struct QuotaLedgerOptions {
  std::string zone = "America/La_Paz";
  int64_t share_ttl_ms = 4000;
  double slice_fraction = 0.5;
  // Below 1: at most this fraction of a grant's day (and month) cap is held by one router at
  // once, what a killed router can strand until the period ends (0.05 is the intended
  // setting; 1, the default for now, keeps the per-lease slices: router_quota_kill_test
  // still assumes a router does not renew between its sample and the kill).
  double max_lease_fraction = 1.0;
  uint64_t max_lease = 1'000'000;
};

class QuotaLedger {
 public:
  // Loads policies and lease holdings from `store`. InvalidArgument for an unknown zone;
  // DataLoss if a stored record does not parse. `store` and `clock` must outlive the ledger.
  static absl::StatusOr<std::unique_ptr<QuotaLedger>> Open(const QuotaLedgerOptions& options,
                                                          KvStore* store, const Clock& clock);

  // Grants a lease (see the scheme above). InvalidArgument for a bad router id or grant key.
  // A cap with nothing left is not an error: the reply's status is ResourceExhausted, its
  // refusal names the limit (DAY or MONTH) and retry_after_ms, and its lease still carries
  // the rate shares and periods.
  absl::StatusOr<v1::LeaseReply> Lease(const v1::LeaseRequest& request);
  // Credits unspent allowance back. InvalidArgument for bad names; NotFound if that router
  // holds no lease of that grant.
  absl::StatusOr<v1::ReturnReply> Return(const v1::LeaseReturn& request);

  // Replace a grant's policy / a service's capacity (synced). ValidatePolicy's errors.
  absl::StatusOr<v1::QuotaPolicy> SetPolicy(v1::QuotaPolicy policy, const std::string& by);
  absl::StatusOr<v1::ProviderCapacity> SetCapacity(v1::ProviderCapacity capacity,
                                                   const std::string& by);
  // Applies the entries whose grant or service has nothing stored yet: configuration seeds,
  // operators' and managers' later changes win over it across restarts. Returns how many
  // were applied. Validation errors name the entry; nothing is applied then.
  absl::StatusOr<int> ApplyInitial(const PolicySet& set, const std::string& by);
  // Defaults from the catalog (CatalogPolicies): sets each grant's policy and each service's
  // capacity from `set`, marked `by` ("catalog:v<version>"), except where a person decided:
  // a stored entry whose changed_by is neither "config" nor "catalog:..." (an operator's
  // set_policy, a quota decision) is kept. Entries whose limits equal what is stored are
  // skipped; a capacity with no limit is not stored where none is. Validation errors name the
  // entry; nothing is applied then. Returns what changed and how many were kept.
  absl::StatusOr<ApplyDefaultsResult> ApplyDefaults(const PolicySet& set, const std::string& by);
  // NotFound if the grant has no policy.
  absl::StatusOr<v1::QuotaPolicy> Policy(const v1::GrantKey& grant) const;
  // NotFound if the service has no capacity.
  absl::StatusOr<v1::ProviderCapacity> Capacity(const v1::ServiceKey& service) const;

  absl::StatusOr<v1::UsageReply> Usage(const v1::UsageRequest& request) const;

  // Quota requests. AddRequest records a pending request (ValidatePolicy's errors on
  // `wanted`); Decide applies the outcome and records it with the policy change in one synced
  // batch: NotFound for an unknown id, FailedPrecondition if already decided, InvalidArgument
  // for an unspecified outcome or bad adjusted limits.
  absl::StatusOr<v1::QuotaRequestRecord> AddRequest(const v1::QuotaRequestAction& action,
                                                    uint64_t signer_serial,
                                                    const std::string& signed_request);
  absl::StatusOr<v1::QuotaRequestRecord> GetRequest(uint64_t id) const;
  absl::StatusOr<v1::QuotaRequestRecord> Decide(const v1::QuotaDecisionAction& action,
                                                uint64_t signer_serial,
                                                const std::string& signed_decision);

  // AlreadyExists if (serial, nonce) was seen and not yet forgettable; else remembers it
  // (synced) until `forget_at_ms`.
  absl::Status RememberNonce(uint64_t serial, const std::string& nonce, int64_t forget_at_ms);

  const QuotaPeriods& periods() const { return periods_; }

 private:
  QuotaLedger(const QuotaLedgerOptions& options, KvStore* store, const Clock& clock,
              QuotaPeriods periods)
      : options_(options), store_(store), clock_(clock), periods_(std::move(periods)) {}
  absl::Status Load();
  absl::StatusOr<uint64_t> Counter(const std::string& key) const;
  // The most one router may hold unspent of a grant with `left` remaining (see the scheme).
  uint64_t LeaseBound(const v1::QuotaPolicy& policy, uint64_t left, uint32_t holders) const;
  // Live rate-share holders of a grant / of a provider service at `now`, `router` counted.
  uint32_t GrantHolders(const std::string& grant_key, const std::string& router,
                        int64_t now_ms) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint32_t ProviderHolders(const std::string& service_key, const std::string& router,
                           int64_t now_ms) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<uint64_t> NextId(const std::string& meta_key, KvBatch* batch)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const QuotaLedgerOptions options_;
  KvStore* const store_;
  const Clock& clock_;
  const QuotaPeriods periods_;

  mutable absl::Mutex mu_;
  std::map<std::string, v1::QuotaPolicy> policies_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, v1::ProviderCapacity> capacities_ ABSL_GUARDED_BY(mu_);
  // grant key -> router id -> holding
  std::map<std::string, std::map<std::string, v1::LeaseHolding>> holdings_ ABSL_GUARDED_BY(mu_);
  // grant key -> its provider service key (for ProviderHolders)
  std::map<std::string, std::string> service_of_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, uint64_t> ids_ ABSL_GUARDED_BY(mu_);
};

}  // namespace chasqui
