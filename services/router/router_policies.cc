#include "services/router/router_policies.h"

#include <utility>
#include <vector>

#include "common/core/log.h"
#include "common/core/names.h"
#include "common/core/status.h"
#include "common/envelope/subjects.h"
#include "fmt/format.h"
#include "services/quota/quota_keys.h"

namespace chasqui {

absl::StatusOr<std::unique_ptr<RouterPolicies>> RouterPolicies::Start(
    const RouterPoliciesOptions& options, Bus* bus, std::string_view env,
    std::string_view router_id, const CertificateLookup* certificates,
    std::shared_ptr<prometheus::Registry> registry, const Clock& clock) {
  CHASQUI_RETURN_IF_ERROR(ValidateEnv(env));
  CHASQUI_RETURN_IF_ERROR(ValidateName("router id", router_id));
  if (options.catalog && certificates == nullptr) {
    return absl::FailedPreconditionError(
        "catalog: no certificates to verify the catalog's signed snapshots and events with");
  }
  std::unique_ptr<RouterPolicies> p(new RouterPolicies(options, std::string(env), clock));
  p->registry_ = std::move(registry);
  const std::string inbox = RouterInboxPrefix(env, router_id);
  if (p->registry_ != nullptr && options.catalog) {
    prometheus::Registry& r = *p->registry_;
    p->version_gauge_ = &prometheus::BuildGauge()
                             .Name("chasqui_router_catalog_snapshot_version")
                             .Help("Version of the catalog snapshot this router enforces")
                             .Register(r)
                             .Add({});
    p->age_gauge_ = &prometheus::BuildGauge()
                         .Name("chasqui_router_catalog_snapshot_age_seconds")
                         .Help(
                             "Seconds since the catalog last confirmed the snapshot (answered "
                             "or sent an event); -1 before it ever did")
                         .Register(r)
                         .Add({});
    p->age_gauge_->Set(-1);
    auto& events = prometheus::BuildCounter()
                       .Name("chasqui_router_catalog_events_total")
                       .Help(
                           "Signed catalog events applied to the snapshot, or refused (bad "
                           "signature, not a catalog event, not applicable)")
                       .Register(r);
    p->applied_counter_ = &events.Add({{"outcome", "applied"}});
    p->refused_counter_ = &events.Add({{"outcome", "refused"}});
  }
  if (p->registry_ != nullptr && options.catalog && options.quota) {
    p->prepared_gauge_ = &prometheus::BuildGauge()
                              .Name("chasqui_router_quota_grants_prepared")
                              .Help(
                                  "Grants of the catalog snapshot whose quota lease this "
                                  "router draws ahead of traffic")
                              .Register(*p->registry_)
                              .Add({});
  }
  if (options.quota) {
    CHASQUI_ASSIGN_OR_RETURN(p->lease_source_,
                             NatsLeaseSource::Create(bus, inbox + ".quota", options.quota_timeout));
    QuotaEnforcerOptions eo = options.enforcer;
    eo.router_id = std::string(router_id);
    CHASQUI_ASSIGN_OR_RETURN(
        p->enforcer_, QuotaEnforcer::Create(eo, p->lease_source_.get(), clock, p->registry_));
    CHASQUI_ASSIGN_OR_RETURN(p->policy_events_, WatchQuotaPolicies(bus, p->enforcer_.get()));
  }
  if (options.catalog) {
    CatalogFollowerOptions fo = options.follower;
    fo.inbox_prefix = inbox + ".catalog";
    CHASQUI_ASSIGN_OR_RETURN(p->follower_,
                             CatalogFollower::Start(fo, bus, &p->snapshot_, *certificates, clock));
  }
  CHQ_LOG_INFO("router policies: catalog {}, quota {} (router {}, env {})",
               options.catalog ? "followed" : "off", options.quota ? "enforced" : "off", router_id,
               env);
  RouterPolicies* self = p.get();
  p->thread_ = std::thread([self] { self->Loop(); });
  return p;
}

RouterPolicies::~RouterPolicies() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (thread_.joinable()) thread_.join();
  policy_events_.reset();  // before the enforcer it delivers to
  follower_.reset();       // before the snapshot it writes
  enforcer_.reset();
  lease_source_.reset();
}

void RouterPolicies::Loop() {
  for (;;) {
    PrepareNewGrants();
    UpdateMetrics();
    if (stop_.WaitForNotificationWithTimeout(options_.tick)) return;
  }
}

void RouterPolicies::UpdateMetrics() {
  if (follower_ == nullptr || version_gauge_ == nullptr) return;
  version_gauge_->Set(static_cast<double>(snapshot_.version()));
  const int64_t age = follower_->AgeMillis();
  age_gauge_->Set(age < 0 ? -1.0 : static_cast<double>(age) / 1000.0);
  const int64_t applied = follower_->events_applied();
  const int64_t refused = follower_->events_refused();
  if (applied > applied_seen_)
    applied_counter_->Increment(static_cast<double>(applied - applied_seen_));
  if (refused > refused_seen_)
    refused_counter_->Increment(static_cast<double>(refused - refused_seen_));
  applied_seen_ = applied;
  refused_seen_ = refused;
}

void RouterPolicies::PrepareNewGrants() {
  if (enforcer_ == nullptr || follower_ == nullptr || drained_.load()) return;
  absl::MutexLock lock(&prepare_mu_);
  const uint64_t version = snapshot_.version();
  if (!snapshot_.loaded() || version == prepared_version_) return;
  const v1::CatalogSnapshot all = snapshot_.ToProto();
  size_t added = 0;
  for (const v1::Grant& g : all.grants()) {
    if (g.env() != env_ || g.state() != v1::GRANT_STATE_ACTIVE) continue;
    std::string key = GrantKeyString(g.env(), g.consumer(), g.provider(), g.service());
    if (prepared_.contains(key)) continue;
    if (absl::Status s = enforcer_->Prepare(key); !s.ok()) {
      // The catalog checks names, so this is a catalog bug; the grant is leased on first use.
      CHQ_LOG_WARN("quota: grant {} not prepared: {}", key, MessageOf(s));
    }
    prepared_.insert(std::move(key));
    ++added;
  }
  if (added > 0) {
    CHQ_LOG_INFO("quota: drawing leases for {} new grant(s) of catalog version {} ({} in all)",
                 added, all.version(), prepared_.size());
  }
  if (prepared_gauge_ != nullptr) prepared_gauge_->Set(static_cast<double>(prepared_.size()));
  prepared_version_ = all.version();
}

absl::Status RouterPolicies::LoadCatalog(absl::Duration timeout) {
  if (follower_ == nullptr) return absl::OkStatus();
  const absl::Time deadline = absl::Now() + timeout;
  absl::Status last = absl::OkStatus();
  while (!snapshot_.loaded()) {
    last = follower_->CatchUp();
    if (snapshot_.loaded()) break;
    if (absl::Now() + options_.follower.retry > deadline) {
      return absl::UnavailableError(fmt::format(
          "catalog: no snapshot within {}: {}", absl::FormatDuration(timeout),
          last.ok() ? std::string("the catalog sent none") : std::string(MessageOf(last))));
    }
    absl::SleepFor(options_.follower.retry);
  }
  PrepareNewGrants();
  return absl::OkStatus();
}

absl::Status RouterPolicies::Ready() const {
  if (follower_ == nullptr) return absl::OkStatus();
  if (!snapshot_.loaded()) {
    return absl::UnavailableError("catalog: no snapshot yet (is chasqui-catalog running?)");
  }
  if (options_.catalog_max_age > absl::ZeroDuration()) {
    return follower_->Ready(options_.catalog_max_age);
  }
  return absl::OkStatus();
}

int64_t RouterPolicies::CatalogAgeMillis() const {
  return follower_ == nullptr ? -1 : follower_->AgeMillis();
}

absl::Status RouterPolicies::Drain() {
  drained_ = true;
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (thread_.joinable()) thread_.join();
  UpdateMetrics();
  // The follower stays (Ready and the snapshot keep answering) until destruction.
  policy_events_.reset();
  if (enforcer_ == nullptr) return absl::OkStatus();
  return enforcer_->Drain();
}

}  // namespace chasqui
