#pragma once
// The router's side of quotas (DESIGN.md, "One request" step 2, last check): admission from
// memory, with no network on the hot path. The enforcer holds, per grant, leases drawn from
// the quota service in the background:
//   - an allowance (requests it may still admit in the current day and month; granted
//     allowance is already counted as consumed by the quota service, so N routers together
//     never admit more than a cap, and a router that dies loses at most what it held);
//   - a share of the grant's rate (a token bucket at rate/k with burst/k, k = routers holding
//     the grant) and of the provider service's total capacity.
// It renews before a lease runs out (low-water mark on the allowance, half-life on the rate
// shares), keeps enforcing with what it holds while the quota service is unreachable (and
// reports it: ServiceReachable(), chasqui_quota_enforcer_service_up), and gives unspent
// allowance back on Drain() and when a day rolls over.
//
// retry_after per limit: rate / provider capacity = time until the next token; day = until
// the local midnight the lease names; month = until the next month's start. A grant the
// enforcer holds no lease for yet is refused with QUOTA_LIMIT_NO_LEASE (the router answers
// UNAVAILABLE) while the first lease is drawn; Prepare() draws it ahead of traffic.
//
// Thread-safe. Admit() takes a reader lock on the grant map and one short lock per grant
// (and per provider service); the background worker never holds a grant's lock across a
// network call.

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "chasqui/v1/quota.pb.h"
#include "common/bus/bus.h"
#include "common/bus/request_mux.h"
#include "common/core/clock.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace chasqui {

// Where leases come from: the quota service over NATS (NatsLeaseSource), or a QuotaLedger in
// the same process (tests, benchmarks). Errors are the transport's or the service's status;
// a cap reached is not an error but a reply whose `refusal` is set.
class LeaseSource {
 public:
  virtual ~LeaseSource() = default;
  virtual absl::StatusOr<v1::LeaseReply> Lease(const v1::LeaseRequest& request) = 0;
  virtual absl::StatusOr<v1::ReturnReply> Return(const v1::LeaseReturn& request) = 0;
};

// chq.ctl.quota.{lease,return} over a RequestMux. Unavailable when no quota service
// listens, DeadlineExceeded after `timeout`, the service's own status otherwise.
class NatsLeaseSource final : public LeaseSource {
 public:
  // `bus` must outlive the source. `inbox_prefix` as RequestMux (a router uses
  // `_INBOX._router.<env>.<id>.quota`).
  static absl::StatusOr<std::unique_ptr<NatsLeaseSource>> Create(
      Bus* bus, std::string inbox_prefix, absl::Duration timeout = absl::Seconds(1));
  absl::StatusOr<v1::LeaseReply> Lease(const v1::LeaseRequest& request) override;
  absl::StatusOr<v1::ReturnReply> Return(const v1::LeaseReturn& request) override;

 private:
  NatsLeaseSource() = default;
  absl::StatusOr<std::string> Call(std::string_view subject, const std::string& data);
  std::unique_ptr<RequestMux> mux_;
  absl::Duration timeout_;
};

struct QuotaEnforcerOptions {
  std::string router_id;  // one subject token; names this router's leases at the service
  // Ask for enough allowance for `lease_horizon_s` of the observed demand, at least
  // `min_lease` and at most `max_lease` per request.
  uint64_t min_lease = 20;
  uint64_t max_lease = 100'000;
  double lease_horizon_s = 2.0;
  // Renew when the allowance falls to this fraction of what the last request asked for.
  double low_water_fraction = 0.5;
  // With a cap reached, ask again this often while requests keep coming (another router may
  // have returned allowance, or the limit may have been raised).
  int64_t cap_recheck_ms = 1000;
  // After a failed request to the quota service, wait this long before the next one.
  int64_t failure_backoff_ms = 250;
  // The retry_after given while the first lease of a grant is being drawn.
  int64_t no_lease_retry_ms = 50;
  // How often the worker looks at the leases (renewal is also woken by Admit at low water).
  absl::Duration tick = absl::Milliseconds(20);
  // false: no worker thread; the caller drives renewals with Pump() (unit tests).
  bool background = true;
};

// Admit()'s answer. When refused, `limit` says which limit and `retry_after_ms` when a
// retry can succeed (the larger wait when several limits refuse).
struct QuotaAdmission {
  bool admitted = false;
  v1::QuotaLimit limit = v1::QUOTA_LIMIT_UNSPECIFIED;
  int64_t retry_after_ms = 0;
};

class QuotaEnforcer {
 public:
  // `source` and `clock` must outlive the enforcer. `registry` may be null (no metrics).
  // InvalidArgument if router_id is not a name.
  static absl::StatusOr<std::unique_ptr<QuotaEnforcer>> Create(
      const QuotaEnforcerOptions& options, LeaseSource* source, const Clock& clock,
      std::shared_ptr<prometheus::Registry> registry = nullptr);
  ~QuotaEnforcer();  // stops the worker; does not return leases (call Drain() for that)

  // The hot path: no I/O, no allocation once the grant is known. `grant_key` is
  // GrantKeyString(env, consumer, provider, service).
  QuotaAdmission Admit(std::string_view grant_key, int64_t now_ms);

  // Starts drawing a lease for `grant_key` (e.g. when the router's grant snapshot names it).
  // InvalidArgument if the key does not parse.
  absl::Status Prepare(std::string_view grant_key);
  // Renew this grant (or every grant of this provider service) at the next pass: a policy
  // changed (chq.evt.quota.policy).
  void OnPolicyChanged(const v1::PolicyChanged& event);

  // One pass of the renewal loop, on the caller's thread (for options.background = false).
  void Pump();
  // Stops renewing and returns unspent allowance and rate shares to the quota service.
  // Afterwards Admit() refuses everything with NO_LEASE. The first failure is returned (the
  // allowance it held is then lost, never over-admitted).
  absl::Status Drain();

  // False after the last attempt to reach the quota service failed.
  bool ServiceReachable() const { return reachable_.load(std::memory_order_relaxed); }
  // What the enforcer holds for one grant (tests, /metrics). NotFound if unknown.
  struct GrantView {
    bool has_lease = false;
    bool unlimited = false;
    uint64_t allowance = 0;  // unspent
    double rate_share = 0;
    double provider_rate_share = 0;
    int64_t share_expires_at_ms = 0;
    std::string day;
    v1::QuotaLimit cap_reached = v1::QUOTA_LIMIT_UNSPECIFIED;
  };
  absl::StatusOr<GrantView> View(std::string_view grant_key) const;
  // Unspent allowance over all grants: what this router would lose if it died now.
  uint64_t Outstanding() const;
  int64_t LeaseFailures() const { return lease_failures_.load(); }

 private:
  struct Bucket {
    double rate = 0;  // tokens per ms; 0: no limit
    double capacity = 0;
    double tokens = 0;
    int64_t last_ms = 0;
    // ms until one token is there (0 if there is one now). Refills first.
    int64_t WaitMs(int64_t now_ms);
    void Set(double rate_per_second, double burst, int64_t now_ms);
  };
  struct ProviderState {
    absl::Mutex mu;
    Bucket bucket ABSL_GUARDED_BY(mu);
  };
  struct GrantState;

  QuotaEnforcer() = default;
  GrantState* Find(std::string_view key) const;
  GrantState* FindOrCreate(std::string_view key);
  void WorkerLoop();
  // Renews what is due; returns without holding locks during network calls.
  void RenewDue(int64_t now_ms);
  void RenewOne(GrantState* g, int64_t now_ms);
  void SendReturns();
  void MarkReachable(bool ok, const absl::Status& why);
  void CountRefusal(GrantState* g, v1::QuotaLimit limit);

  QuotaEnforcerOptions options_;
  LeaseSource* source_ = nullptr;
  const Clock* clock_ = nullptr;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* refusals_ = nullptr;
  prometheus::Family<prometheus::Counter>* lease_requests_ = nullptr;
  prometheus::Gauge* service_up_ = nullptr;
  prometheus::Gauge* outstanding_gauge_ = nullptr;

  mutable absl::Mutex map_mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<GrantState>> grants_ ABSL_GUARDED_BY(map_mu_);
  absl::flat_hash_map<std::string, std::unique_ptr<ProviderState>> providers_
      ABSL_GUARDED_BY(map_mu_);

  absl::Mutex returns_mu_;
  std::vector<v1::LeaseReturn> returns_ ABSL_GUARDED_BY(returns_mu_);

  absl::Mutex wake_mu_;
  absl::CondVar wake_cv_;
  bool wake_ ABSL_GUARDED_BY(wake_mu_) = false;
  bool stop_ ABSL_GUARDED_BY(wake_mu_) = false;
  std::atomic<bool> drained_{false};
  std::atomic<bool> reachable_{true};
  std::atomic<int64_t> lease_failures_{0};
  // Serialises passes of the renewal loop (worker, Pump, Drain).
  absl::Mutex renew_mu_;
  std::thread worker_;
};

// Delivers chq.evt.quota.policy to `enforcer` (which must outlive the subscription). The event
// only makes the enforcer renew at once; the lease it then draws is what counts.
absl::StatusOr<std::unique_ptr<Subscription>> WatchQuotaPolicies(Bus* bus,
                                                                 QuotaEnforcer* enforcer);

}  // namespace chasqui
