#include "services/quota/catalog_policies.h"

#include <map>
#include <utility>

#include "common/core/log.h"
#include "common/core/status.h"
#include "fmt/format.h"
#include "services/quota/quota_keys.h"

namespace chasqui {
namespace {

bool HasLimit(const v1::Quota& q) {
  return q.rate_per_second() > 0 || q.burst() > 0 || q.per_day() > 0 || q.per_month() > 0;
}

}  // namespace

PolicySet DerivePolicies(const v1::CatalogSnapshot& snapshot, const std::vector<std::string>& envs,
                         std::vector<std::string>* skipped) {
  auto served = [&](const std::string& env) {
    for (const std::string& e : envs) {
      if (e == env) return true;
    }
    return false;
  };
  std::map<std::string, const v1::Service*> services;  // "provider/service"
  for (const v1::Service& s : snapshot.services()) {
    services[fmt::format("{}/{}", s.provider(), s.spec().name())] = &s;
  }
  PolicySet set;
  for (const v1::Grant& g : snapshot.grants()) {
    if (g.state() != v1::GRANT_STATE_ACTIVE || !served(g.env())) continue;
    v1::Quota q = g.quota();
    if (!HasLimit(q)) {
      auto it = services.find(fmt::format("{}/{}", g.provider(), g.service()));
      if (it != services.end()) q = it->second->spec().default_quota();
    }
    v1::QuotaPolicy p;
    v1::GrantKey& k = *p.mutable_grant();
    k.set_env(g.env());
    k.set_consumer(g.consumer());
    k.set_provider(g.provider());
    k.set_service(g.service());
    p.set_rate_per_second(q.rate_per_second());
    p.set_burst(q.burst());
    p.set_per_day(q.per_day());
    p.set_per_month(q.per_month());
    if (absl::Status s = ValidatePolicy(p); !s.ok()) {
      if (skipped != nullptr) {
        skipped->push_back(fmt::format("grant {}: {}", GrantKeyString(k), MessageOf(s)));
      }
      continue;
    }
    set.grants.push_back(std::move(p));
  }
  for (const v1::Service& s : snapshot.services()) {
    if (s.state() != v1::SERVICE_STATE_PUBLISHED && s.state() != v1::SERVICE_STATE_DEPRECATED) {
      continue;
    }
    for (const std::string& env : envs) {
      v1::ProviderCapacity c;
      c.mutable_service()->set_env(env);
      c.mutable_service()->set_provider(s.provider());
      c.mutable_service()->set_service(s.spec().name());
      c.set_rate_per_second(s.spec().capacity().rate_per_second());
      c.set_burst(s.spec().capacity().burst());
      if (absl::Status st = ValidateCapacity(c); !st.ok()) {
        if (skipped != nullptr) {
          skipped->push_back(
              fmt::format("service {}: {}", ServiceKeyString(c.service()), MessageOf(st)));
        }
        continue;
      }
      set.providers.push_back(std::move(c));
    }
  }
  return set;
}

absl::StatusOr<PolicySet> CatalogPolicySource::Load() {
  if (!snapshot_->loaded()) {
    return absl::UnavailableError("catalog policies: no catalog snapshot loaded yet");
  }
  return DerivePolicies(snapshot_->ToProto(), envs_);
}

absl::StatusOr<std::unique_ptr<CatalogPolicies>> CatalogPolicies::Start(
    const CatalogPoliciesOptions& options, Bus* bus, QuotaLedger* ledger,
    const CertificateLookup& certificates, const Clock& clock) {
  if (options.envs.empty()) {
    return absl::InvalidArgumentError("catalog policies: no environment to derive policies for");
  }
  std::unique_ptr<CatalogPolicies> p(new CatalogPolicies());
  p->options_ = options;
  p->bus_ = bus;
  p->ledger_ = ledger;
  p->clock_ = &clock;
  p->snapshot_ = std::make_unique<CatalogSnapshot>(options.follow_env);
  CHASQUI_ASSIGN_OR_RETURN(p->follower_, CatalogFollower::Start(options.follower, bus,
                                                                p->snapshot_.get(), certificates,
                                                                clock));
  CatalogPolicies* self = p.get();
  p->thread_ = std::thread([self] { self->Loop(); });
  CHQ_LOG_INFO("quota policies follow the catalog (events verified for {}; policies for {})",
               options.follow_env, fmt::join(options.envs, ","));
  return p;
}

CatalogPolicies::~CatalogPolicies() {
  stop_.Notify();
  if (thread_.joinable()) thread_.join();
  follower_.reset();
}

absl::StatusOr<int> CatalogPolicies::Sync() {
  absl::MutexLock one(&sync_mu_);
  if (!snapshot_->loaded()) {
    return absl::UnavailableError("catalog policies: no catalog snapshot loaded yet");
  }
  const v1::CatalogSnapshot s = snapshot_->ToProto();
  std::vector<std::string> skipped;
  const PolicySet set = DerivePolicies(s, options_.envs, &skipped);
  for (const std::string& why : skipped) {
    CHQ_LOG_WARN("catalog version {}: no quota derived for {}", s.version(), why);
  }
  CHASQUI_ASSIGN_OR_RETURN(ApplyDefaultsResult r,
                           ledger_->ApplyDefaults(set, fmt::format("catalog:v{}", s.version())));
  const int changed = static_cast<int>(r.grants.size() + r.services.size());
  if (changed > 0 || !applied_once_) {
    CHQ_LOG_INFO("catalog version {}: {} grant policies and {} capacities derived, {} changed, {} "
                 "kept (a person's decision wins over the catalog)",
                 s.version(), set.grants.size(), set.providers.size(), changed, r.kept);
  }
  Announce(r);
  applied_version_ = s.version();
  applied_once_ = true;
  return changed;
}

void CatalogPolicies::Announce(const ApplyDefaultsResult& changed) {
  const int64_t now = clock_->NowUnixMillis();
  auto publish = [&](const v1::PolicyChanged& e) {
    if (absl::Status s = bus_->Publish(kQuotaPolicyEventSubject, e.SerializeAsString()); !s.ok()) {
      CHQ_LOG_WARN("policy change not announced (routers pick it up at their next renewal): {}",
                   MessageOf(s));
    }
  };
  for (const v1::GrantKey& g : changed.grants) {
    v1::PolicyChanged e;
    *e.mutable_grant() = g;
    e.set_changed_at_ms(now);
    publish(e);
  }
  for (const v1::ServiceKey& k : changed.services) {
    v1::PolicyChanged e;
    *e.mutable_service() = k;
    e.set_changed_at_ms(now);
    publish(e);
  }
}

absl::Status CatalogPolicies::Ready() const {
  if (!applied_once_) {
    return absl::UnavailableError(
        "catalog policies: waiting for the first catalog snapshot (is chasqui-catalog up?)");
  }
  return absl::OkStatus();
}

void CatalogPolicies::Loop() {
  while (!stop_.WaitForNotificationWithTimeout(options_.poll)) {
    if (!snapshot_->loaded()) continue;
    if (applied_once_ && snapshot_->version() == applied_version_) continue;
    if (auto r = Sync(); !r.ok()) {
      CHQ_LOG_WARN("catalog policies not applied (retrying in 1 s): {}", MessageOf(r.status()));
      if (stop_.WaitForNotificationWithTimeout(absl::Seconds(1))) return;
    }
  }
}

}  // namespace chasqui
