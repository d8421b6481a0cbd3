#include "services/quota/quota_ledger.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <utility>

#include "absl/time/civil_time.h"
#include "common/core/files.h"
#include "common/core/log.h"
#include "common/core/names.h"
#include "common/core/status.h"
#include "common/trust/requests.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"
#include "services/quota/quota_keys.h"

namespace chasqui {
namespace {

constexpr double kMaxRate = 10'000'000;
constexpr uint64_t kMaxBurst = 1'000'000'000;
constexpr uint64_t kMaxCap = 1'000'000'000'000'000;

std::string PolicyKey(const std::string& grant) { return "policy/" + grant; }
std::string CapacityKey(const std::string& service) { return "capacity/" + service; }
std::string DayKey(const std::string& grant, const std::string& day) {
  return "count/" + grant + "/d/" + day;
}
std::string MonthKey(const std::string& grant, const std::string& month) {
  return "count/" + grant + "/m/" + month;
}
std::string HoldingKey(const std::string& grant, const std::string& router) {
  return "lease/" + grant + "/" + router;
}
std::string RequestKey(uint64_t id) { return "req/" + BigEndian64(id); }

double Burst(double rate, uint32_t burst) {
  return burst > 0 ? static_cast<double>(burst) : std::max(1.0, rate);
}

absl::Status ValidateRate(std::string_view what, double rate, uint64_t burst) {
  if (!std::isfinite(rate) || rate < 0 || rate > kMaxRate) {
    return absl::InvalidArgumentError(fmt::format(
        "{}.rate_per_second must be a number in [0, {}] (0: no rate limit)", what, kMaxRate));
  }
  if (burst > kMaxBurst) {
    return absl::InvalidArgumentError(fmt::format("{}.burst must be at most {}", what, kMaxBurst));
  }
  return absl::OkStatus();
}

// Unknown fields are refused: a misspelt "per_dya" must not silently drop a limit.
absl::Status OnlyFields(const nlohmann::json& j, const std::set<std::string>& allowed,
                        const std::string& where) {
  if (!j.is_object()) return absl::InvalidArgumentError(where + " is not an object");
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!allowed.count(it.key())) {
      return absl::InvalidArgumentError(
          fmt::format("{}: unknown field \"{}\"", where, Printable(it.key())));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> JsonString(const nlohmann::json& j, const char* field,
                                       const std::string& where) {
  auto it = j.find(field);
  if (it == j.end() || !it->is_string()) {
    return absl::InvalidArgumentError(fmt::format("{}.{} must be a string", where, field));
  }
  return it->get<std::string>();
}

absl::StatusOr<double> JsonNumber(const nlohmann::json& j, const char* field,
                                  const std::string& where) {
  auto it = j.find(field);
  if (it == j.end()) return 0.0;
  if (!it->is_number() || it->get<double>() < 0) {
    return absl::InvalidArgumentError(
        fmt::format("{}.{} must be a non-negative number", where, field));
  }
  return it->get<double>();
}

absl::StatusOr<uint64_t> JsonCount(const nlohmann::json& j, const char* field,
                                   const std::string& where) {
  auto it = j.find(field);
  if (it == j.end()) return uint64_t{0};
  if (!it->is_number_unsigned()) {
    return absl::InvalidArgumentError(
        fmt::format("{}.{} must be a non-negative integer", where, field));
  }
  return it->get<uint64_t>();
}

}  // namespace

// ---- Periods ----

absl::StatusOr<QuotaPeriods> QuotaPeriods::Load(const std::string& zone) {
  QuotaPeriods p;
  p.name_ = zone;
  if (zone.empty() || !absl::LoadTimeZone(zone, &p.tz_)) {
    return absl::InvalidArgumentError(fmt::format(
        "unknown time zone \"{}\" (an IANA name such as America/La_Paz; is the tzdata package "
        "installed, /usr/share/zoneinfo/{}?)",
        Printable(zone), Printable(zone)));
  }
  return p;
}

QuotaPeriods::Period QuotaPeriods::At(int64_t unix_ms) const {
  const absl::Time t = absl::FromUnixMillis(unix_ms);
  const absl::CivilDay day = absl::ToCivilDay(t, tz_);
  const absl::CivilMonth month = absl::ToCivilMonth(t, tz_);
  Period p;
  p.day = absl::FormatCivilTime(day);
  p.month = absl::FormatCivilTime(month);
  p.day_ends_at_ms = absl::ToUnixMillis(absl::FromCivil(day + 1, tz_));
  p.month_ends_at_ms = absl::ToUnixMillis(absl::FromCivil(month + 1, tz_));
  return p;
}

// ---- Policies ----

absl::Status ValidatePolicy(const v1::QuotaPolicy& policy) {
  CHASQUI_RETURN_IF_ERROR(ValidateGrantKey(policy.grant(), "policy.grant"));
  CHASQUI_RETURN_IF_ERROR(ValidateRate("policy", policy.rate_per_second(), policy.burst()));
  if (policy.per_day() > kMaxCap || policy.per_month() > kMaxCap) {
    return absl::InvalidArgumentError(fmt::format("policy caps must be at most {}", kMaxCap));
  }
  if (policy.per_day() > 0 && policy.per_month() > 0 && policy.per_day() > policy.per_month()) {
    return absl::InvalidArgumentError(fmt::format(
        "policy.per_day ({}) exceeds policy.per_month ({})", policy.per_day(),
        policy.per_month()));
  }
  return absl::OkStatus();
}

absl::Status ValidateCapacity(const v1::ProviderCapacity& capacity) {
  CHASQUI_RETURN_IF_ERROR(ValidateServiceKey(capacity.service(), "capacity.service"));
  return ValidateRate("capacity", capacity.rate_per_second(), capacity.burst());
}

absl::StatusOr<PolicySet> JsonPolicyFile::Load() {
  CHASQUI_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path_, "quota policy file"));
  return Parse(text, path_);
}

absl::StatusOr<PolicySet> JsonPolicyFile::Parse(const std::string& text,
                                                const std::string& origin) {
  nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    return absl::InvalidArgumentError(fmt::format("{}: not valid JSON", origin));
  }
  CHASQUI_RETURN_IF_ERROR(OnlyFields(doc, {"grants", "providers"}, origin));
  PolicySet set;
  if (auto it = doc.find("grants"); it != doc.end()) {
    if (!it->is_array()) return absl::InvalidArgumentError(origin + ": grants must be an array");
    for (size_t i = 0; i < it->size(); ++i) {
      const nlohmann::json& g = (*it)[i];
      const std::string where = fmt::format("{}: grants[{}]", origin, i);
      CHASQUI_RETURN_IF_ERROR(OnlyFields(g,
                                         {"env", "consumer", "provider", "service",
                                          "rate_per_second", "burst", "per_day", "per_month"},
                                         where));
      v1::QuotaPolicy p;
      CHASQUI_ASSIGN_OR_RETURN(*p.mutable_grant()->mutable_env(), JsonString(g, "env", where));
      CHASQUI_ASSIGN_OR_RETURN(*p.mutable_grant()->mutable_consumer(),
                               JsonString(g, "consumer", where));
      CHASQUI_ASSIGN_OR_RETURN(*p.mutable_grant()->mutable_provider(),
                               JsonString(g, "provider", where));
      CHASQUI_ASSIGN_OR_RETURN(*p.mutable_grant()->mutable_service(),
                               JsonString(g, "service", where));
      CHASQUI_ASSIGN_OR_RETURN(double rate, JsonNumber(g, "rate_per_second", where));
      CHASQUI_ASSIGN_OR_RETURN(uint64_t burst, JsonCount(g, "burst", where));
      CHASQUI_ASSIGN_OR_RETURN(uint64_t per_day, JsonCount(g, "per_day", where));
      CHASQUI_ASSIGN_OR_RETURN(uint64_t per_month, JsonCount(g, "per_month", where));
      if (burst > kMaxBurst) {
        return absl::InvalidArgumentError(where + ".burst must be at most 1000000000");
      }
      p.set_rate_per_second(rate);
      p.set_burst(static_cast<uint32_t>(burst));
      p.set_per_day(per_day);
      p.set_per_month(per_month);
      if (absl::Status s = ValidatePolicy(p); !s.ok()) {
        return absl::InvalidArgumentError(fmt::format("{}: {}", where, MessageOf(s)));
      }
      set.grants.push_back(std::move(p));
    }
  }
  if (auto it = doc.find("providers"); it != doc.end()) {
    if (!it->is_array()) {
      return absl::InvalidArgumentError(origin + ": providers must be an array");
    }
    for (size_t i = 0; i < it->size(); ++i) {
      const nlohmann::json& g = (*it)[i];
      const std::string where = fmt::format("{}: providers[{}]", origin, i);
      CHASQUI_RETURN_IF_ERROR(
          OnlyFields(g, {"env", "provider", "service", "rate_per_second", "burst"}, where));
      v1::ProviderCapacity c;
      CHASQUI_ASSIGN_OR_RETURN(*c.mutable_service()->mutable_env(), JsonString(g, "env", where));
      CHASQUI_ASSIGN_OR_RETURN(*c.mutable_service()->mutable_provider(),
                               JsonString(g, "provider", where));
      CHASQUI_ASSIGN_OR_RETURN(*c.mutable_service()->mutable_service(),
                               JsonString(g, "service", where));
      CHASQUI_ASSIGN_OR_RETURN(double rate, JsonNumber(g, "rate_per_second", where));
      CHASQUI_ASSIGN_OR_RETURN(uint64_t burst, JsonCount(g, "burst", where));
      if (burst > kMaxBurst) {
        return absl::InvalidArgumentError(where + ".burst must be at most 1000000000");
      }
      c.set_rate_per_second(rate);
      c.set_burst(static_cast<uint32_t>(burst));
      if (absl::Status s = ValidateCapacity(c); !s.ok()) {
        return absl::InvalidArgumentError(fmt::format("{}: {}", where, MessageOf(s)));
      }
      set.providers.push_back(std::move(c));
    }
  }
  return set;
}

// ---- Ledger ----

absl::StatusOr<std::unique_ptr<QuotaLedger>> QuotaLedger::Open(const QuotaLedgerOptions& options,
                                                               KvStore* store,
                                                               const Clock& clock) {
  CHASQUI_ASSIGN_OR_RETURN(QuotaPeriods periods, QuotaPeriods::Load(options.zone));
  if (options.share_ttl_ms <= 0 || !(options.slice_fraction > 0 && options.slice_fraction <= 1)) {
    return absl::InvalidArgumentError("quota ledger: need share_ttl_ms > 0, 0 < slice_fraction <= 1");
  }
  if (!(options.max_lease_fraction > 0 && options.max_lease_fraction <= 1) ||
      options.max_lease == 0) {
    return absl::InvalidArgumentError(
        "quota ledger: need 0 < max_lease_fraction <= 1 and max_lease > 0");
  }
  std::unique_ptr<QuotaLedger> l(new QuotaLedger(options, store, clock, std::move(periods)));
  CHASQUI_RETURN_IF_ERROR(l->Load());
  return l;
}

absl::Status QuotaLedger::Load() {
  absl::MutexLock lock(&mu_);
  absl::Status bad = absl::OkStatus();
  auto fail = [&](std::string_view key, const char* what) {
    bad = absl::DataLossError(fmt::format("quota store: {} at {} does not parse",
                                          what, Printable(key)));
    return false;
  };
  CHASQUI_RETURN_IF_ERROR(store_->Scan("policy/", "policy0", [&](auto key, auto value) {
    v1::QuotaPolicy p;
    if (!p.ParseFromArray(value.data(), static_cast<int>(value.size()))) return fail(key, "policy");
    const std::string g = GrantKeyString(p.grant());
    service_of_[g] = ServiceKeyString(ServiceOf(p.grant()));
    policies_[g] = std::move(p);
    return true;
  }));
  CHASQUI_RETURN_IF_ERROR(bad);
  CHASQUI_RETURN_IF_ERROR(store_->Scan("capacity/", "capacity0", [&](auto key, auto value) {
    v1::ProviderCapacity c;
    if (!c.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
      return fail(key, "capacity");
    }
    capacities_[ServiceKeyString(c.service())] = std::move(c);
    return true;
  }));
  CHASQUI_RETURN_IF_ERROR(bad);
  CHASQUI_RETURN_IF_ERROR(store_->Scan("lease/", "lease0", [&](auto key, auto value) {
    v1::LeaseHolding h;
    std::string_view rest = key.substr(6);
    const size_t slash = rest.rfind('/');
    if (slash == std::string_view::npos ||
        !h.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
      return fail(key, "lease holding");
    }
    const std::string grant(rest.substr(0, slash));
    auto parsed = ParseGrantKey(grant);
    if (!parsed.ok()) return fail(key, "lease holding key");
    service_of_[grant] = ServiceKeyString(ServiceOf(*parsed));
    holdings_[grant][std::string(rest.substr(slash + 1))] = std::move(h);
    return true;
  }));
  CHASQUI_RETURN_IF_ERROR(bad);
  for (const char* meta : {"meta/lease_id", "meta/request_id"}) {
    auto v = store_->Get(meta);
    if (v.ok() && v->size() == 8) {
      ids_[meta] = FromBigEndian64(*v);
    } else if (!absl::IsNotFound(v.status())) {
      return v.ok() ? absl::DataLossError(fmt::format("quota store: {} is not 8 bytes", meta))
                    : v.status();
    }
  }
  CHQ_LOG_INFO("quota ledger open: zone={} policies={} capacities={} grants_with_leases={}",
               periods_.zone(), policies_.size(), capacities_.size(), holdings_.size());
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> QuotaLedger::Counter(const std::string& key) const {
  auto v = store_->Get(key);
  if (absl::IsNotFound(v.status())) return uint64_t{0};
  if (!v.ok()) return v.status();
  if (v->size() != 8) {
    return absl::DataLossError(fmt::format("quota store: counter {} is not 8 bytes", key));
  }
  return FromBigEndian64(*v);
}

uint32_t QuotaLedger::GrantHolders(const std::string& grant_key, const std::string& router,
                                   int64_t now_ms) const {
  uint32_t n = 1;  // the asking router
  auto it = holdings_.find(grant_key);
  if (it == holdings_.end()) return n;
  for (const auto& [r, h] : it->second) {
    if (r != router && h.share_expires_at_ms() > now_ms) ++n;
  }
  return n;
}

uint32_t QuotaLedger::ProviderHolders(const std::string& service_key, const std::string& router,
                                      int64_t now_ms) const {
  std::set<std::string> routers = {router};
  for (const auto& [grant, by_router] : holdings_) {
    auto s = service_of_.find(grant);
    if (s == service_of_.end() || s->second != service_key) continue;
    for (const auto& [r, h] : by_router) {
      if (h.share_expires_at_ms() > now_ms) routers.insert(r);
    }
  }
  return static_cast<uint32_t>(routers.size());
}

uint64_t QuotaLedger::LeaseBound(const v1::QuotaPolicy& policy, uint64_t left,
                                 uint32_t holders) const {
  auto fraction_of = [&](uint64_t cap) {
    return std::max<uint64_t>(
        1, static_cast<uint64_t>(static_cast<double>(cap) * options_.max_lease_fraction));
  };
  uint64_t bound = options_.max_lease;
  if (policy.per_day() > 0) bound = std::min(bound, fraction_of(policy.per_day()));
  if (policy.per_month() > 0) bound = std::min(bound, fraction_of(policy.per_month()));
  const double slice = std::ceil(static_cast<double>(left) * options_.slice_fraction /
                                 static_cast<double>(std::max<uint32_t>(1, holders)));
  return std::min(bound, std::max<uint64_t>(1, static_cast<uint64_t>(slice)));
}

absl::StatusOr<uint64_t> QuotaLedger::NextId(const std::string& meta_key, KvBatch* batch) {
  const uint64_t id = ++ids_[meta_key];
  batch->Put(meta_key, BigEndian64(id));
  return id;
}

absl::StatusOr<v1::LeaseReply> QuotaLedger::Lease(const v1::LeaseRequest& request) {
  CHASQUI_RETURN_IF_ERROR(ValidateName("router_id", request.router_id()));
  CHASQUI_RETURN_IF_ERROR(ValidateGrantKey(request.grant()));
  absl::MutexLock lock(&mu_);
  const int64_t now = clock_.NowUnixMillis();
  const QuotaPeriods::Period period = periods_.At(now);
  const std::string grant = GrantKeyString(request.grant());
  const std::string service = ServiceKeyString(ServiceOf(request.grant()));
  v1::QuotaPolicy policy;
  if (auto it = policies_.find(grant); it != policies_.end()) policy = it->second;
  v1::ProviderCapacity capacity;
  if (auto it = capacities_.find(service); it != capacities_.end()) capacity = it->second;

  v1::LeaseHolding holding;
  if (auto g = holdings_.find(grant); g != holdings_.end()) {
    if (auto h = g->second.find(request.router_id()); h != g->second.end()) holding = h->second;
  }
  if (holding.day() != period.day) {
    holding.set_day(period.day);
    holding.set_day_outstanding(0);
    holding.set_day_unspent_at_most(0);
  }
  if (holding.month() != period.month) {
    holding.set_month(period.month);
    holding.set_month_outstanding(0);
  }
  const uint32_t holders = GrantHolders(grant, request.router_id(), now);
  const uint32_t provider_holders = ProviderHolders(service, request.router_id(), now);

  v1::LeaseReply reply;
  v1::Lease& l = *reply.mutable_lease();
  *l.mutable_grant() = request.grant();
  l.set_day(period.day);
  l.set_month(period.month);
  l.set_day_ends_at_ms(period.day_ends_at_ms);
  l.set_month_ends_at_ms(period.month_ends_at_ms);
  l.set_per_day(policy.per_day());
  l.set_per_month(policy.per_month());
  l.set_holders(holders);
  l.set_provider_holders(provider_holders);
  if (policy.rate_per_second() > 0) {
    l.set_rate_share(policy.rate_per_second() / holders);
    l.set_burst_share(std::max(1.0, Burst(policy.rate_per_second(), policy.burst()) / holders));
  }
  if (capacity.rate_per_second() > 0) {
    l.set_provider_rate_share(capacity.rate_per_second() / provider_holders);
    l.set_provider_burst_share(
        std::max(1.0, Burst(capacity.rate_per_second(), capacity.burst()) / provider_holders));
  }
  l.set_share_expires_at_ms(now + options_.share_ttl_ms);

  KvBatch batch;
  Durability durability = Durability::kBuffered;
  const bool unlimited = policy.per_day() == 0 && policy.per_month() == 0;
  l.set_unlimited(unlimited);
  if (!unlimited) {
    const std::string day_key = DayKey(grant, period.day);
    const std::string month_key = MonthKey(grant, period.month);
    CHASQUI_ASSIGN_OR_RETURN(uint64_t day_used, Counter(day_key));
    CHASQUI_ASSIGN_OR_RETURN(uint64_t month_used, Counter(month_key));
    const uint64_t day_left =
        policy.per_day() > 0 ? policy.per_day() - std::min(day_used, policy.per_day()) : UINT64_MAX;
    const uint64_t month_left = policy.per_month() > 0
                                    ? policy.per_month() - std::min(month_used, policy.per_month())
                                    : UINT64_MAX;
    const uint64_t left = std::min(day_left, month_left);
    // What the router says it holds unspent of this day, never more than it was granted.
    const uint64_t unspent = request.unspent_day() == period.day
                                 ? std::min(request.unspent(), holding.day_outstanding())
                                 : 0;
    const uint64_t bound = LeaseBound(policy, left, holders);
    // The bound on what one router holds applies with max_lease_fraction < 1 (off by default
    // for now: see QuotaLedgerOptions); else the bound is per lease, as slices always were.
    const uint64_t held = options_.max_lease_fraction < 1 ? unspent : 0;
    uint64_t allowance = 0;
    if (left > 0 && request.wanted() > 0 && held < bound) {
      allowance = std::min({request.wanted(), left, bound - held});
    }
    l.set_max_held(bound);
    // A router that does not report (no unspent_day) may hold all it was granted this day.
    holding.set_day_unspent_at_most(request.unspent_day() == period.day
                                        ? unspent + allowance
                                        : holding.day_outstanding() + allowance);
    if (allowance > 0) {
      day_used += allowance;
      month_used += allowance;
      batch.Put(day_key, BigEndian64(day_used));
      batch.Put(month_key, BigEndian64(month_used));
      holding.set_day_outstanding(holding.day_outstanding() + allowance);
      holding.set_month_outstanding(holding.month_outstanding() + allowance);
      durability = Durability::kSynced;  // granted allowance is consumed: it must survive
    }
    l.set_allowance(allowance);
    l.set_day_remaining(day_left == UINT64_MAX ? 0 : day_left - std::min(day_left, allowance));
    l.set_month_remaining(month_left == UINT64_MAX ? 0
                                                   : month_left - std::min(month_left, allowance));
    if (left == 0 && request.wanted() > 0) {
      v1::QuotaRefusal& r = *reply.mutable_refusal();
      // A spent month is the longer wait: a new day does not help.
      if (month_left == 0) {
        r.set_limit(v1::QUOTA_LIMIT_MONTH);
        r.set_retry_after_ms(period.month_ends_at_ms - now);
        r.set_message(fmt::format("monthly cap of {} reached for {} in {}", policy.per_month(),
                                  grant, period.month));
      } else {
        r.set_limit(v1::QUOTA_LIMIT_DAY);
        r.set_retry_after_ms(period.day_ends_at_ms - now);
        r.set_message(fmt::format("daily cap of {} reached for {} on {}", policy.per_day(),
                                  grant, period.day));
      }
      *reply.mutable_status() = ToControlStatus(absl::ResourceExhaustedError(r.message()));
    }
  }
  CHASQUI_ASSIGN_OR_RETURN(uint64_t lease_id, NextId("meta/lease_id", &batch));
  l.set_lease_id(lease_id);
  holding.set_share_expires_at_ms(l.share_expires_at_ms());
  holding.set_last_lease_id(lease_id);
  batch.Put(HoldingKey(grant, request.router_id()), holding.SerializeAsString());
  // Buffered when only the rate share moved: the WAL still survives the process's kill -9,
  // and a share lost to a power cut lapses within share_ttl_ms anyway.
  if (absl::Status s = store_->Write(batch, durability); !s.ok()) {
    --ids_["meta/lease_id"];
    return s;
  }
  holdings_[grant][request.router_id()] = holding;
  service_of_[grant] = service;
  return reply;
}

absl::StatusOr<v1::ReturnReply> QuotaLedger::Return(const v1::LeaseReturn& request) {
  CHASQUI_RETURN_IF_ERROR(ValidateName("router_id", request.router_id()));
  CHASQUI_RETURN_IF_ERROR(ValidateGrantKey(request.grant()));
  absl::MutexLock lock(&mu_);
  const std::string grant = GrantKeyString(request.grant());
  auto g = holdings_.find(grant);
  if (g == holdings_.end() || !g->second.count(request.router_id())) {
    return absl::NotFoundError(fmt::format("router {} holds no lease of {}",
                                           Printable(request.router_id()), grant));
  }
  v1::LeaseHolding holding = g->second[request.router_id()];
  const uint64_t credit_day = request.day() == holding.day()
                                  ? std::min(request.unspent(), holding.day_outstanding())
                                  : 0;
  const uint64_t credit_month = request.month() == holding.month()
                                    ? std::min(request.unspent(), holding.month_outstanding())
                                    : 0;
  KvBatch batch;
  if (credit_day > 0) {
    const std::string key = DayKey(grant, request.day());
    CHASQUI_ASSIGN_OR_RETURN(uint64_t used, Counter(key));
    batch.Put(key, BigEndian64(used - std::min(used, credit_day)));
    holding.set_day_outstanding(holding.day_outstanding() - credit_day);
    holding.set_day_unspent_at_most(holding.day_unspent_at_most() -
                                    std::min(holding.day_unspent_at_most(), credit_day));
  }
  if (credit_month > 0) {
    const std::string key = MonthKey(grant, request.month());
    CHASQUI_ASSIGN_OR_RETURN(uint64_t used, Counter(key));
    batch.Put(key, BigEndian64(used - std::min(used, credit_month)));
    holding.set_month_outstanding(holding.month_outstanding() - credit_month);
  }
  if (request.release_share()) {
    // The router is done with the grant: what it does not give back was spent.
    holding.set_share_expires_at_ms(0);
    holding.set_day_outstanding(0);
    holding.set_month_outstanding(0);
    holding.set_day_unspent_at_most(0);
  }
  batch.Put(HoldingKey(grant, request.router_id()), holding.SerializeAsString());
  CHASQUI_RETURN_IF_ERROR(store_->Write(batch, Durability::kSynced));
  g->second[request.router_id()] = holding;
  const uint64_t credited = std::max(credit_day, credit_month);
  if (credited < request.unspent()) {
    CHQ_LOG_WARN("quota return from {} for {} day {}: {} unspent claimed, {} credited (the rest "
                 "was not outstanding in that period)",
                 request.router_id(), grant, Printable(request.day()), request.unspent(),
                 credited);
  }
  v1::ReturnReply reply;
  reply.set_credited(credited);
  return reply;
}

absl::StatusOr<v1::QuotaPolicy> QuotaLedger::SetPolicy(v1::QuotaPolicy policy,
                                                       const std::string& by) {
  CHASQUI_RETURN_IF_ERROR(ValidatePolicy(policy));
  absl::MutexLock lock(&mu_);
  policy.set_changed_at_ms(clock_.NowUnixMillis());
  policy.set_changed_by(by);
  const std::string grant = GrantKeyString(policy.grant());
  CHASQUI_RETURN_IF_ERROR(
      store_->Put(PolicyKey(grant), policy.SerializeAsString(), Durability::kSynced));
  policies_[grant] = policy;
  service_of_[grant] = ServiceKeyString(ServiceOf(policy.grant()));
  CHQ_LOG_INFO("quota policy set: {} rate={}/s burst={} per_day={} per_month={} by {}", grant,
               policy.rate_per_second(), policy.burst(), policy.per_day(), policy.per_month(),
               by);
  return policy;
}

absl::StatusOr<v1::ProviderCapacity> QuotaLedger::SetCapacity(v1::ProviderCapacity capacity,
                                                              const std::string& by) {
  CHASQUI_RETURN_IF_ERROR(ValidateCapacity(capacity));
  absl::MutexLock lock(&mu_);
  capacity.set_changed_at_ms(clock_.NowUnixMillis());
  capacity.set_changed_by(by);
  const std::string service = ServiceKeyString(capacity.service());
  CHASQUI_RETURN_IF_ERROR(
      store_->Put(CapacityKey(service), capacity.SerializeAsString(), Durability::kSynced));
  capacities_[service] = capacity;
  CHQ_LOG_INFO("provider capacity set: {} rate={}/s burst={} by {}", service,
               capacity.rate_per_second(), capacity.burst(), by);
  return capacity;
}

absl::StatusOr<int> QuotaLedger::ApplyInitial(const PolicySet& set, const std::string& by) {
  for (const auto& p : set.grants) CHASQUI_RETURN_IF_ERROR(ValidatePolicy(p));
  for (const auto& c : set.providers) CHASQUI_RETURN_IF_ERROR(ValidateCapacity(c));
  std::vector<v1::QuotaPolicy> grants;
  std::vector<v1::ProviderCapacity> providers;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& p : set.grants) {
      if (!policies_.count(GrantKeyString(p.grant()))) grants.push_back(p);
    }
    for (const auto& c : set.providers) {
      if (!capacities_.count(ServiceKeyString(c.service()))) providers.push_back(c);
    }
  }
  for (auto& p : grants) CHASQUI_RETURN_IF_ERROR(SetPolicy(std::move(p), by).status());
  for (auto& c : providers) CHASQUI_RETURN_IF_ERROR(SetCapacity(std::move(c), by).status());
  return static_cast<int>(grants.size() + providers.size());
}

bool IsDefaultLimit(const std::string& changed_by) {
  return changed_by == "config" || changed_by.rfind("catalog:", 0) == 0;
}

absl::StatusOr<ApplyDefaultsResult> QuotaLedger::ApplyDefaults(const PolicySet& set,
                                                               const std::string& by) {
  for (const auto& p : set.grants) CHASQUI_RETURN_IF_ERROR(ValidatePolicy(p));
  for (const auto& c : set.providers) CHASQUI_RETURN_IF_ERROR(ValidateCapacity(c));
  absl::MutexLock lock(&mu_);
  const int64_t now = clock_.NowUnixMillis();
  ApplyDefaultsResult result;
  KvBatch batch;
  std::vector<v1::QuotaPolicy> policies;
  std::vector<v1::ProviderCapacity> capacities;
  for (v1::QuotaPolicy p : set.grants) {
    const std::string grant = GrantKeyString(p.grant());
    if (auto it = policies_.find(grant); it != policies_.end()) {
      const v1::QuotaPolicy& old = it->second;
      if (!IsDefaultLimit(old.changed_by())) {
        ++result.kept;
        continue;
      }
      if (old.rate_per_second() == p.rate_per_second() && old.burst() == p.burst() &&
          old.per_day() == p.per_day() && old.per_month() == p.per_month()) {
        continue;
      }
    }
    p.set_changed_at_ms(now);
    p.set_changed_by(by);
    batch.Put(PolicyKey(grant), p.SerializeAsString());
    policies.push_back(std::move(p));
  }
  for (v1::ProviderCapacity c : set.providers) {
    const std::string service = ServiceKeyString(c.service());
    auto it = capacities_.find(service);
    if (it == capacities_.end()) {
      if (c.rate_per_second() == 0) continue;  // no limit, and none stored
    } else {
      const v1::ProviderCapacity& old = it->second;
      if (!IsDefaultLimit(old.changed_by())) {
        ++result.kept;
        continue;
      }
      if (old.rate_per_second() == c.rate_per_second() && old.burst() == c.burst()) continue;
    }
    c.set_changed_at_ms(now);
    c.set_changed_by(by);
    batch.Put(CapacityKey(service), c.SerializeAsString());
    capacities.push_back(std::move(c));
  }
  if (policies.empty() && capacities.empty()) return result;
  CHASQUI_RETURN_IF_ERROR(store_->Write(batch, Durability::kSynced));
  for (v1::QuotaPolicy& p : policies) {
    const std::string grant = GrantKeyString(p.grant());
    CHQ_LOG_INFO("quota policy set: {} rate={}/s burst={} per_day={} per_month={} by {}", grant,
                 p.rate_per_second(), p.burst(), p.per_day(), p.per_month(), by);
    service_of_[grant] = ServiceKeyString(ServiceOf(p.grant()));
    result.grants.push_back(p.grant());
    policies_[grant] = std::move(p);
  }
  for (v1::ProviderCapacity& c : capacities) {
    CHQ_LOG_INFO("provider capacity set: {} rate={}/s burst={} by {}",
                 ServiceKeyString(c.service()), c.rate_per_second(), c.burst(), by);
    result.services.push_back(c.service());
    capacities_[ServiceKeyString(c.service())] = std::move(c);
  }
  return result;
}

absl::StatusOr<v1::ProviderCapacity> QuotaLedger::Capacity(const v1::ServiceKey& service) const {
  absl::MutexLock lock(&mu_);
  auto it = capacities_.find(ServiceKeyString(service));
  if (it == capacities_.end()) {
    return absl::NotFoundError(
        fmt::format("no provider capacity for {}", ServiceKeyString(service)));
  }
  return it->second;
}

absl::StatusOr<v1::QuotaPolicy> QuotaLedger::Policy(const v1::GrantKey& grant) const {
  absl::MutexLock lock(&mu_);
  auto it = policies_.find(GrantKeyString(grant));
  if (it == policies_.end()) {
    return absl::NotFoundError(fmt::format("no quota policy for {}", GrantKeyString(grant)));
  }
  return it->second;
}

absl::StatusOr<v1::UsageReply> QuotaLedger::Usage(const v1::UsageRequest& request) const {
  if (!request.env().empty()) CHASQUI_RETURN_IF_ERROR(ValidateEnv(request.env()));
  if (!request.consumer().empty()) {
    CHASQUI_RETURN_IF_ERROR(ValidateName("consumer", request.consumer()));
  }
  if (!request.provider().empty()) {
    CHASQUI_RETURN_IF_ERROR(ValidateName("provider", request.provider()));
  }
  absl::MutexLock lock(&mu_);
  const int64_t now = clock_.NowUnixMillis();
  const QuotaPeriods::Period period = periods_.At(now);
  std::set<std::string> grants;
  for (const auto& [g, p] : policies_) grants.insert(g);
  for (const auto& [g, h] : holdings_) grants.insert(g);
  v1::UsageReply reply;
  reply.set_zone(periods_.zone());
  for (const std::string& g : grants) {
    auto key = ParseGrantKey(g);
    if (!key.ok()) continue;
    if ((!request.env().empty() && key->env() != request.env()) ||
        (!request.consumer().empty() && key->consumer() != request.consumer()) ||
        (!request.provider().empty() && key->provider() != request.provider())) {
      continue;
    }
    v1::GrantUsage& u = *reply.add_grants();
    if (auto p = policies_.find(g); p != policies_.end()) {
      *u.mutable_policy() = p->second;
    } else {
      *u.mutable_policy()->mutable_grant() = *key;
    }
    u.set_day(period.day);
    u.set_month(period.month);
    CHASQUI_ASSIGN_OR_RETURN(uint64_t d, Counter(DayKey(g, period.day)));
    CHASQUI_ASSIGN_OR_RETURN(uint64_t m, Counter(MonthKey(g, period.month)));
    u.set_day_consumed(d);
    u.set_month_consumed(m);
    if (auto h = holdings_.find(g); h != holdings_.end()) {
      for (const auto& [router, holding] : h->second) {
        if (holding.day() == period.day) {
          u.set_outstanding(u.outstanding() + holding.day_outstanding());
          u.set_day_unspent_at_most(u.day_unspent_at_most() + holding.day_unspent_at_most());
        }
        if (holding.share_expires_at_ms() > now) u.set_holders(u.holders() + 1);
      }
    }
  }
  for (const auto& [s, c] : capacities_) {
    if ((!request.env().empty() && c.service().env() != request.env()) ||
        (!request.provider().empty() && c.service().provider() != request.provider())) {
      continue;
    }
    *reply.add_providers() = c;
  }
  return reply;
}

absl::StatusOr<v1::QuotaRequestRecord> QuotaLedger::AddRequest(
    const v1::QuotaRequestAction& action, uint64_t signer_serial,
    const std::string& signed_request) {
  CHASQUI_RETURN_IF_ERROR(ValidatePolicy(action.wanted()));
  if (action.justification().empty() || action.justification().size() > 4000) {
    return absl::InvalidArgumentError(
        "request.justification must say why (1 to 4000 characters)");
  }
  absl::MutexLock lock(&mu_);
  v1::QuotaRequestRecord r;
  *r.mutable_request() = action;
  r.mutable_request()->mutable_wanted()->clear_changed_at_ms();
  r.mutable_request()->mutable_wanted()->clear_changed_by();
  const std::string grant = GrantKeyString(action.wanted().grant());
  if (auto p = policies_.find(grant); p != policies_.end()) {
    *r.mutable_before() = p->second;
  } else {
    *r.mutable_before()->mutable_grant() = action.wanted().grant();
  }
  r.set_state(v1::QUOTA_REQUEST_STATE_PENDING);
  r.set_requested_by(signer_serial);
  r.set_requested_at_ms(clock_.NowUnixMillis());
  r.set_signed_request(signed_request);
  KvBatch batch;
  CHASQUI_ASSIGN_OR_RETURN(uint64_t id, NextId("meta/request_id", &batch));
  r.set_id(id);
  batch.Put(RequestKey(id), r.SerializeAsString());
  if (absl::Status s = store_->Write(batch, Durability::kSynced); !s.ok()) {
    --ids_["meta/request_id"];
    return s;
  }
  CHQ_LOG_INFO("quota request {} for {} by certificate {}: rate={}/s burst={} per_day={} "
               "per_month={}",
               id, grant, signer_serial, action.wanted().rate_per_second(),
               action.wanted().burst(), action.wanted().per_day(), action.wanted().per_month());
  return r;
}

absl::StatusOr<v1::QuotaRequestRecord> QuotaLedger::GetRequest(uint64_t id) const {
  auto v = store_->Get(RequestKey(id));
  if (absl::IsNotFound(v.status())) {
    return absl::NotFoundError(fmt::format("no quota request {}", id));
  }
  if (!v.ok()) return v.status();
  v1::QuotaRequestRecord r;
  if (!r.ParseFromString(*v)) {
    return absl::DataLossError(fmt::format("quota store: request {} does not parse", id));
  }
  return r;
}

absl::StatusOr<v1::QuotaRequestRecord> QuotaLedger::Decide(const v1::QuotaDecisionAction& action,
                                                           uint64_t signer_serial,
                                                           const std::string& signed_decision) {
  absl::MutexLock lock(&mu_);
  CHASQUI_ASSIGN_OR_RETURN(v1::QuotaRequestRecord r, GetRequest(action.request_id()));
  if (r.state() != v1::QUOTA_REQUEST_STATE_PENDING) {
    return absl::FailedPreconditionError(fmt::format(
        "quota request {} was already decided ({})", r.id(),
        v1::QuotaRequestState_Name(r.state())));
  }
  const int64_t now = clock_.NowUnixMillis();
  v1::QuotaPolicy applied;
  switch (action.outcome()) {
    case v1::QUOTA_OUTCOME_APPROVE:
      applied = r.request().wanted();
      r.set_state(v1::QUOTA_REQUEST_STATE_APPROVED);
      break;
    case v1::QUOTA_OUTCOME_ADJUST:
      applied = action.adjusted();
      *applied.mutable_grant() = r.request().wanted().grant();
      CHASQUI_RETURN_IF_ERROR(ValidatePolicy(applied));
      r.set_state(v1::QUOTA_REQUEST_STATE_ADJUSTED);
      break;
    case v1::QUOTA_OUTCOME_REJECT:
      if (action.reason().empty()) {
        return absl::InvalidArgumentError("decide: a rejection must give a reason");
      }
      r.set_state(v1::QUOTA_REQUEST_STATE_REJECTED);
      break;
    default:
      return absl::InvalidArgumentError("decide: outcome must be approve, adjust or reject");
  }
  r.set_decided_by(signer_serial);
  r.set_decided_at_ms(now);
  *r.mutable_decision() = action;
  r.set_signed_decision(signed_decision);
  KvBatch batch;
  const std::string grant = GrantKeyString(r.request().wanted().grant());
  if (r.state() != v1::QUOTA_REQUEST_STATE_REJECTED) {
    applied.set_changed_at_ms(now);
    applied.set_changed_by(fmt::format("decision:{}", r.id()));
    *r.mutable_applied() = applied;
    batch.Put(PolicyKey(grant), applied.SerializeAsString());
  }
  batch.Put(RequestKey(r.id()), r.SerializeAsString());
  CHASQUI_RETURN_IF_ERROR(store_->Write(batch, Durability::kSynced));
  if (r.state() != v1::QUOTA_REQUEST_STATE_REJECTED) {
    policies_[grant] = applied;
    service_of_[grant] = ServiceKeyString(ServiceOf(applied.grant()));
  }
  CHQ_LOG_INFO("quota request {} for {} {} by certificate {}: rate={}/s per_day={} per_month={}",
               r.id(), grant, v1::QuotaRequestState_Name(r.state()), signer_serial,
               applied.rate_per_second(), applied.per_day(), applied.per_month());
  return r;
}

absl::Status QuotaLedger::RememberNonce(uint64_t serial, const std::string& nonce,
                                        int64_t forget_at_ms) {
  absl::MutexLock lock(&mu_);
  const std::string key = "nonce/" + BigEndian64(serial) + nonce;
  auto v = store_->Get(key);
  if (v.ok() && v->size() == 8 &&
      static_cast<int64_t>(FromBigEndian64(*v)) > clock_.NowUnixMillis()) {
    return absl::AlreadyExistsError("control request: replayed (same signer and nonce)");
  }
  if (!v.ok() && !absl::IsNotFound(v.status())) return v.status();
  return store_->Put(key, BigEndian64(static_cast<uint64_t>(forget_at_ms)), Durability::kSynced);
}

}  // namespace chasqui
