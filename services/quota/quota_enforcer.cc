#include "services/quota/quota_enforcer.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/synchronization/notification.h"
#include "common/core/log.h"
#include "common/core/names.h"
#include "common/core/status.h"
#include "common/trust/requests.h"
#include "fmt/format.h"
#include "services/quota/quota_keys.h"

namespace chasqui {

// ---- NatsLeaseSource ----

absl::StatusOr<std::unique_ptr<NatsLeaseSource>> NatsLeaseSource::Create(Bus* bus,
                                                                         std::string inbox_prefix,
                                                                         absl::Duration timeout) {
  std::unique_ptr<NatsLeaseSource> s(new NatsLeaseSource());
  CHASQUI_ASSIGN_OR_RETURN(s->mux_, RequestMux::Create(bus, std::move(inbox_prefix)));
  s->timeout_ = timeout;
  return s;
}

absl::StatusOr<std::string> NatsLeaseSource::Call(std::string_view subject,
                                                  const std::string& data) {
  struct Answer {
    absl::Notification done;
    MuxOutcome outcome = MuxOutcome::kClosed;
    std::string data;
  };
  auto answer = std::make_shared<Answer>();
  CHASQUI_RETURN_IF_ERROR(
      mux_->Request(subject, data, timeout_, [answer](MuxOutcome o, const BusMessage* reply) {
        answer->outcome = o;
        if (reply != nullptr) answer->data.assign(reply->data);
        answer->done.Notify();
      }));
  // The mux answers every request by its timeout; the extra second only guards a bug there.
  if (!answer->done.WaitForNotificationWithTimeout(timeout_ + absl::Seconds(1))) {
    return absl::DeadlineExceededError(fmt::format("quota service: no answer on {}", subject));
  }
  switch (answer->outcome) {
    case MuxOutcome::kReply:
      return std::move(answer->data);
    case MuxOutcome::kTimeout:
      return absl::DeadlineExceededError(fmt::format(
          "quota service: no answer on {} within {}", subject, absl::FormatDuration(timeout_)));
    case MuxOutcome::kNoResponders:
      return absl::UnavailableError(
          fmt::format("quota service: nobody answers on {}", subject));
    default:
      return absl::UnavailableError("quota service: client closed");
  }
}

absl::StatusOr<v1::LeaseReply> NatsLeaseSource::Lease(const v1::LeaseRequest& request) {
  CHASQUI_ASSIGN_OR_RETURN(std::string data,
                           Call(kQuotaLeaseSubject, request.SerializeAsString()));
  v1::LeaseReply reply;
  if (!reply.ParseFromString(data)) {
    return absl::InvalidArgumentError("quota service: lease answer is not a LeaseReply");
  }
  absl::Status status = FromControlStatus(reply.status());
  // A cap reached is an answer, not a failure: the refusal travels in the reply.
  if (!status.ok() && !(absl::IsResourceExhausted(status) && reply.has_refusal())) return status;
  return reply;
}

absl::StatusOr<v1::ReturnReply> NatsLeaseSource::Return(const v1::LeaseReturn& request) {
  CHASQUI_ASSIGN_OR_RETURN(std::string data,
                           Call(kQuotaReturnSubject, request.SerializeAsString()));
  v1::ReturnReply reply;
  if (!reply.ParseFromString(data)) {
    return absl::InvalidArgumentError("quota service: return answer is not a ReturnReply");
  }
  CHASQUI_RETURN_IF_ERROR(FromControlStatus(reply.status()));
  return reply;
}

// ---- QuotaEnforcer ----

struct QuotaEnforcer::GrantState {
  std::string key;
  v1::GrantKey grant;
  ProviderState* provider = nullptr;  // owned by providers_, never removed
  std::atomic<bool> renew_now{true};
  std::atomic<int64_t> attempts{0};  // Admit calls since the last renewal: the demand

  absl::Mutex mu;
  bool has_lease ABSL_GUARDED_BY(mu) = false;
  bool unlimited ABSL_GUARDED_BY(mu) = false;
  uint64_t allowance ABSL_GUARDED_BY(mu) = 0;
  uint64_t low_water ABSL_GUARDED_BY(mu) = 0;
  std::string day ABSL_GUARDED_BY(mu);
  std::string month ABSL_GUARDED_BY(mu);
  int64_t day_ends_at_ms ABSL_GUARDED_BY(mu) = 0;
  int64_t month_ends_at_ms ABSL_GUARDED_BY(mu) = 0;
  // Which cap the service had nothing more of at the last lease (UNSPECIFIED: none).
  v1::QuotaLimit cap_reached ABSL_GUARDED_BY(mu) = v1::QUOTA_LIMIT_UNSPECIFIED;
  Bucket rate ABSL_GUARDED_BY(mu);
  double rate_share ABSL_GUARDED_BY(mu) = 0;
  double provider_rate_share ABSL_GUARDED_BY(mu) = 0;
  int64_t share_expires_at_ms ABSL_GUARDED_BY(mu) = 0;
  int64_t share_ttl_ms ABSL_GUARDED_BY(mu) = 0;
  prometheus::Counter* refusal_counters[8] ABSL_GUARDED_BY(mu) = {};

  // The renewal loop's own (serialised by renew_mu_).
  std::atomic<int64_t> next_attempt_ms{0};  // also reset by OnPolicyChanged
  int64_t last_renewal_ms = 0;
  double demand_per_s = 0;
};

int64_t QuotaEnforcer::Bucket::WaitMs(int64_t now_ms) {
  if (rate <= 0) return 0;
  if (now_ms > last_ms) {
    tokens = std::min(capacity, tokens + static_cast<double>(now_ms - last_ms) * rate);
    last_ms = now_ms;
  }
  if (tokens >= 1.0) return 0;
  return std::max<int64_t>(1, static_cast<int64_t>(std::ceil((1.0 - tokens) / rate)));
}

void QuotaEnforcer::Bucket::Set(double rate_per_second, double burst, int64_t now_ms) {
  if (rate_per_second <= 0) {
    rate = 0;
    return;
  }
  const bool fresh = rate <= 0;
  WaitMs(now_ms);  // refill at the old rate up to now
  rate = rate_per_second / 1000.0;
  capacity = std::max(1.0, burst);
  if (fresh) {
    tokens = capacity;
    last_ms = now_ms;
  }
  tokens = std::min(tokens, capacity);
}

absl::StatusOr<std::unique_ptr<QuotaEnforcer>> QuotaEnforcer::Create(
    const QuotaEnforcerOptions& options, LeaseSource* source, const Clock& clock,
    std::shared_ptr<prometheus::Registry> registry) {
  CHASQUI_RETURN_IF_ERROR(ValidateName("router_id", options.router_id));
  if (options.min_lease == 0 || options.max_lease < options.min_lease) {
    return absl::InvalidArgumentError("quota enforcer: need 0 < min_lease <= max_lease");
  }
  std::unique_ptr<QuotaEnforcer> e(new QuotaEnforcer());
  e->options_ = options;
  e->source_ = source;
  e->clock_ = &clock;
  e->registry_ = std::move(registry);
  if (e->registry_ != nullptr) {
    prometheus::Registry& r = *e->registry_;
    e->refusals_ = &prometheus::BuildCounter()
                        .Name("chasqui_quota_enforcer_refusals_total")
                        .Help("Requests refused by quota at this router, by grant and limit")
                        .Register(r);
    e->lease_requests_ = &prometheus::BuildCounter()
                              .Name("chasqui_quota_enforcer_lease_requests_total")
                              .Help("Lease requests to the quota service, by outcome "
                                    "(ok, cap_reached, error)")
                              .Register(r);
    for (const char* o : {"ok", "cap_reached", "error"}) e->lease_requests_->Add({{"outcome", o}});
    e->service_up_ = &prometheus::BuildGauge()
                          .Name("chasqui_quota_enforcer_service_up")
                          .Help("1 while the quota service answers; 0: enforcing with the "
                                "leases held")
                          .Register(r)
                          .Add({});
    e->service_up_->Set(1);
    e->outstanding_gauge_ = &prometheus::BuildGauge()
                                 .Name("chasqui_quota_enforcer_allowance_unspent")
                                 .Help("Allowance held and not yet spent, over all grants: "
                                       "what is lost if this router dies")
                                 .Register(r)
                                 .Add({});
  }
  if (options.background) {
    QuotaEnforcer* self = e.get();
    e->worker_ = std::thread([self] { self->WorkerLoop(); });
  }
  return e;
}

QuotaEnforcer::~QuotaEnforcer() {
  {
    absl::MutexLock lock(&wake_mu_);
    stop_ = true;
    wake_cv_.Signal();
  }
  if (worker_.joinable()) worker_.join();
}

QuotaEnforcer::GrantState* QuotaEnforcer::Find(std::string_view key) const {
  absl::ReaderMutexLock lock(&map_mu_);
  auto it = grants_.find(ToAbsl(key));
  return it == grants_.end() ? nullptr : it->second.get();
}

QuotaEnforcer::GrantState* QuotaEnforcer::FindOrCreate(std::string_view key) {
  if (GrantState* g = Find(key)) return g;
  auto parsed = ParseGrantKey(key);
  if (!parsed.ok()) return nullptr;
  absl::MutexLock lock(&map_mu_);
  auto& slot = grants_[std::string(key)];
  if (slot == nullptr) {
    slot = std::make_unique<GrantState>();
    slot->key = std::string(key);
    slot->grant = *parsed;
    auto& p = providers_[ServiceKeyString(ServiceOf(*parsed))];
    if (p == nullptr) p = std::make_unique<ProviderState>();
    slot->provider = p.get();
  }
  return slot.get();
}

void QuotaEnforcer::CountRefusal(GrantState* g, v1::QuotaLimit limit) {
  if (refusals_ == nullptr) return;
  const int i = static_cast<int>(limit) & 7;
  if (g->refusal_counters[i] == nullptr) {
    g->refusal_counters[i] = &refusals_->Add({{"env", g->grant.env()},
                                              {"consumer", g->grant.consumer()},
                                              {"provider", g->grant.provider()},
                                              {"service", g->grant.service()},
                                              {"limit", std::string(QuotaLimitName(limit))}});
  }
  g->refusal_counters[i]->Increment();
}

QuotaAdmission QuotaEnforcer::Admit(std::string_view grant_key, int64_t now_ms) {
  const QuotaAdmission no_lease{false, v1::QUOTA_LIMIT_NO_LEASE, options_.no_lease_retry_ms};
  GrantState* g = Find(grant_key);
  if (g == nullptr) {
    if (drained_.load(std::memory_order_relaxed)) return no_lease;
    g = FindOrCreate(grant_key);
    if (g == nullptr) return no_lease;  // not a grant key: nothing can ever be leased for it
    absl::MutexLock wl(&wake_mu_);
    wake_ = true;
    wake_cv_.Signal();
  }
  g->attempts.fetch_add(1, std::memory_order_relaxed);
  bool wake = false;
  QuotaAdmission out;
  {
    absl::MutexLock lock(&g->mu);
    if (!g->has_lease) {
      CountRefusal(g, v1::QUOTA_LIMIT_NO_LEASE);
      return no_lease;
    }
    if (!g->unlimited) {
      if (now_ms >= g->day_ends_at_ms) {
        // The allowance belonged to the day that ended: give it back, draw the new day's.
        if (g->allowance > 0) {
          v1::LeaseReturn r;
          r.set_router_id(options_.router_id);
          *r.mutable_grant() = g->grant;
          r.set_day(g->day);
          r.set_month(g->month);
          r.set_unspent(g->allowance);
          absl::MutexLock rl(&returns_mu_);
          returns_.push_back(std::move(r));
        }
        g->allowance = 0;
        if (g->cap_reached == v1::QUOTA_LIMIT_DAY || now_ms >= g->month_ends_at_ms) {
          g->cap_reached = v1::QUOTA_LIMIT_UNSPECIFIED;
        }
        g->day_ends_at_ms = INT64_MAX;  // until the next lease names the new day
        g->renew_now.store(true, std::memory_order_relaxed);
        wake = true;
      }
      if (g->allowance == 0) {
        if (g->cap_reached == v1::QUOTA_LIMIT_MONTH && now_ms < g->month_ends_at_ms) {
          out = {false, v1::QUOTA_LIMIT_MONTH, g->month_ends_at_ms - now_ms};
        } else if (g->cap_reached == v1::QUOTA_LIMIT_DAY && g->day_ends_at_ms != INT64_MAX) {
          out = {false, v1::QUOTA_LIMIT_DAY, g->day_ends_at_ms - now_ms};
        } else {
          out = no_lease;
          if (!g->renew_now.exchange(true, std::memory_order_relaxed)) wake = true;
        }
        CountRefusal(g, out.limit);
      }
    }
    if (out.limit == v1::QUOTA_LIMIT_UNSPECIFIED) {
      const int64_t rate_wait = g->rate.WaitMs(now_ms);
      absl::MutexLock pl(&g->provider->mu);
      const int64_t provider_wait = g->provider->bucket.WaitMs(now_ms);
      if (rate_wait > 0 || provider_wait > 0) {
        out.admitted = false;
        out.limit =
            rate_wait >= provider_wait ? v1::QUOTA_LIMIT_RATE : v1::QUOTA_LIMIT_PROVIDER_CAPACITY;
        out.retry_after_ms = std::max(rate_wait, provider_wait);
        CountRefusal(g, out.limit);
      } else {
        out.admitted = true;
        if (g->rate.rate > 0) g->rate.tokens -= 1.0;
        if (g->provider->bucket.rate > 0) g->provider->bucket.tokens -= 1.0;
        if (!g->unlimited) {
          --g->allowance;
          if (g->allowance <= g->low_water && g->cap_reached == v1::QUOTA_LIMIT_UNSPECIFIED &&
              !g->renew_now.exchange(true, std::memory_order_relaxed)) {
            wake = true;
          }
        }
      }
    }
  }
  if (wake && options_.background) {
    absl::MutexLock wl(&wake_mu_);
    wake_ = true;
    wake_cv_.Signal();
  }
  return out;
}

absl::Status QuotaEnforcer::Prepare(std::string_view grant_key) {
  CHASQUI_RETURN_IF_ERROR(ParseGrantKey(grant_key).status());
  GrantState* g = FindOrCreate(grant_key);
  g->renew_now.store(true);
  g->attempts.fetch_add(1);  // counts as demand, so its first lease is drawn
  absl::MutexLock wl(&wake_mu_);
  wake_ = true;
  wake_cv_.Signal();
  return absl::OkStatus();
}

void QuotaEnforcer::OnPolicyChanged(const v1::PolicyChanged& event) {
  {
    absl::ReaderMutexLock lock(&map_mu_);
    for (auto& [key, g] : grants_) {
      const v1::GrantKey& k = g->grant;
      const bool match =
          event.has_grant()
              ? (k.env() == event.grant().env() && k.consumer() == event.grant().consumer() &&
                 k.provider() == event.grant().provider() &&
                 k.service() == event.grant().service())
              : (event.has_service() && k.env() == event.service().env() &&
                 k.provider() == event.service().provider() &&
                 k.service() == event.service().service());
      if (match) {
        g->renew_now.store(true);
        g->next_attempt_ms.store(0);
      }
    }
  }
  absl::MutexLock wl(&wake_mu_);
  wake_ = true;
  wake_cv_.Signal();
}

void QuotaEnforcer::WorkerLoop() {
  while (true) {
    {
      absl::MutexLock lock(&wake_mu_);
      if (!stop_ && !wake_) {
        wake_cv_.WaitWithTimeout(&wake_mu_, options_.tick);
      }
      if (stop_) return;
      wake_ = false;
    }
    Pump();
  }
}

void QuotaEnforcer::Pump() {
  absl::MutexLock lock(&renew_mu_);
  if (drained_) return;
  const int64_t now = clock_->NowUnixMillis();
  RenewDue(now);
  SendReturns();
  if (outstanding_gauge_ != nullptr) outstanding_gauge_->Set(static_cast<double>(Outstanding()));
}

void QuotaEnforcer::RenewDue(int64_t now_ms) {
  std::vector<GrantState*> all;
  {
    absl::ReaderMutexLock lock(&map_mu_);
    all.reserve(grants_.size());
    for (auto& [key, g] : grants_) all.push_back(g.get());
  }
  for (GrantState* g : all) {
    if (now_ms < g->next_attempt_ms) continue;
    bool due = g->renew_now.load(std::memory_order_relaxed);
    const bool demand = g->attempts.load(std::memory_order_relaxed) > 0;
    if (!due) {
      absl::MutexLock lock(&g->mu);
      if (!g->has_lease) {
        due = demand;
      } else if (!g->unlimited && now_ms >= g->day_ends_at_ms) {
        due = true;
      } else if (g->cap_reached != v1::QUOTA_LIMIT_UNSPECIFIED) {
        due = demand && now_ms - g->last_renewal_ms >= options_.cap_recheck_ms;
      } else if (!g->unlimited && g->allowance <= g->low_water) {
        due = true;
      } else if (g->share_expires_at_ms > 0 && demand &&
                 now_ms >= g->share_expires_at_ms - g->share_ttl_ms / 2) {
        due = true;
      }
    }
    if (due) RenewOne(g, now_ms);
  }
}

void QuotaEnforcer::RenewOne(GrantState* g, int64_t now_ms) {
  g->renew_now.store(false, std::memory_order_relaxed);
  const int64_t attempts = g->attempts.exchange(0, std::memory_order_relaxed);
  const int64_t elapsed = std::max<int64_t>(1, now_ms - g->last_renewal_ms);
  if (g->last_renewal_ms > 0) {
    const double observed = static_cast<double>(attempts) * 1000.0 / static_cast<double>(elapsed);
    g->demand_per_s = std::max(observed, 0.5 * g->demand_per_s);
  }
  uint64_t want = static_cast<uint64_t>(std::ceil(g->demand_per_s * options_.lease_horizon_s));
  want = std::clamp<uint64_t>(want, options_.min_lease, options_.max_lease);
  uint64_t held = 0;
  {
    absl::MutexLock lock(&g->mu);
    const bool stale_day = !g->unlimited && now_ms >= g->day_ends_at_ms;
    held = (g->has_lease && !stale_day) ? g->allowance : 0;
  }
  v1::LeaseRequest req;
  req.set_router_id(options_.router_id);
  *req.mutable_grant() = g->grant;
  req.set_wanted(held >= want ? 0 : want - held);

  auto reply = source_->Lease(req);
  g->last_renewal_ms = now_ms;
  if (!reply.ok()) {
    lease_failures_.fetch_add(1);
    if (lease_requests_ != nullptr) lease_requests_->Add({{"outcome", "error"}}).Increment();
    MarkReachable(false, reply.status());
    g->next_attempt_ms = now_ms + options_.failure_backoff_ms;
    g->renew_now.store(true, std::memory_order_relaxed);  // still wanted, after the backoff
    return;
  }
  MarkReachable(true, absl::OkStatus());
  if (lease_requests_ != nullptr) {
    lease_requests_->Add({{"outcome", reply->has_refusal() ? "cap_reached" : "ok"}}).Increment();
  }
  const v1::Lease& l = reply->lease();
  const int64_t now = clock_->NowUnixMillis();
  absl::MutexLock lock(&g->mu);
  if (g->has_lease && !g->unlimited && g->allowance > 0 && l.day() != g->day) {
    // A new period began while the request was out: the old day's allowance goes back.
    v1::LeaseReturn r;
    r.set_router_id(options_.router_id);
    *r.mutable_grant() = g->grant;
    r.set_day(g->day);
    r.set_month(g->month);
    r.set_unspent(g->allowance);
    absl::MutexLock rl(&returns_mu_);
    returns_.push_back(std::move(r));
    g->allowance = 0;
  }
  g->unlimited = l.unlimited();
  g->allowance = g->unlimited ? 0 : g->allowance + l.allowance();
  g->low_water = static_cast<uint64_t>(static_cast<double>(want) * options_.low_water_fraction);
  g->day = l.day();
  g->month = l.month();
  g->day_ends_at_ms = l.day_ends_at_ms();
  g->month_ends_at_ms = l.month_ends_at_ms();
  if (reply->has_refusal()) {
    g->cap_reached = reply->refusal().limit();
  } else if (l.per_month() > 0 && l.month_remaining() == 0) {
    g->cap_reached = v1::QUOTA_LIMIT_MONTH;
  } else if (l.per_day() > 0 && l.day_remaining() == 0) {
    g->cap_reached = v1::QUOTA_LIMIT_DAY;
  } else {
    g->cap_reached = v1::QUOTA_LIMIT_UNSPECIFIED;
  }
  g->rate.Set(l.rate_share(), l.burst_share(), now);
  g->rate_share = l.rate_share();
  g->provider_rate_share = l.provider_rate_share();
  {
    absl::MutexLock pl(&g->provider->mu);
    g->provider->bucket.Set(l.provider_rate_share(), l.provider_burst_share(), now);
  }
  g->share_expires_at_ms = l.share_expires_at_ms();
  g->share_ttl_ms = std::max<int64_t>(0, l.share_expires_at_ms() - now);
  g->has_lease = true;
}

void QuotaEnforcer::SendReturns() {
  std::vector<v1::LeaseReturn> pending;
  {
    absl::MutexLock lock(&returns_mu_);
    pending.swap(returns_);
  }
  for (const v1::LeaseReturn& r : pending) {
    auto reply = source_->Return(r);
    if (!reply.ok()) {
      // Not retried: what is not credited back stays counted as consumed (never over the cap).
      CHQ_LOG_WARN("quota return for {} day {} ({} unspent) not credited: {}",
                   GrantKeyString(r.grant()), r.day(), r.unspent(), MessageOf(reply.status()));
      MarkReachable(false, reply.status());
    }
  }
}

void QuotaEnforcer::MarkReachable(bool ok, const absl::Status& why) {
  const bool was = reachable_.exchange(ok);
  if (was != ok) {
    if (ok) {
      CHQ_LOG_INFO("quota service reachable again; leases renewing");
    } else {
      CHQ_LOG_WARN("quota service unreachable, enforcing with the leases held: {}",
                   MessageOf(why));
    }
  }
  if (service_up_ != nullptr) service_up_->Set(ok ? 1 : 0);
}

absl::Status QuotaEnforcer::Drain() {
  {
    absl::MutexLock lock(&wake_mu_);
    stop_ = true;
    wake_cv_.Signal();
  }
  if (worker_.joinable()) worker_.join();
  absl::MutexLock renew(&renew_mu_);
  drained_ = true;
  std::vector<GrantState*> all;
  {
    absl::ReaderMutexLock lock(&map_mu_);
    for (auto& [key, g] : grants_) all.push_back(g.get());
  }
  for (GrantState* g : all) {
    absl::MutexLock lock(&g->mu);
    if (!g->has_lease) continue;
    v1::LeaseReturn r;
    r.set_router_id(options_.router_id);
    *r.mutable_grant() = g->grant;
    r.set_day(g->day);
    r.set_month(g->month);
    r.set_unspent(g->unlimited ? 0 : g->allowance);
    r.set_release_share(true);
    g->allowance = 0;
    g->has_lease = false;
    absl::MutexLock rl(&returns_mu_);
    returns_.push_back(std::move(r));
  }
  std::vector<v1::LeaseReturn> pending;
  {
    absl::MutexLock lock(&returns_mu_);
    pending.swap(returns_);
  }
  absl::Status first = absl::OkStatus();
  uint64_t returned = 0;
  for (const v1::LeaseReturn& r : pending) {
    auto reply = source_->Return(r);
    if (!reply.ok()) {
      if (first.ok()) first = reply.status();
      continue;
    }
    returned += reply->credited();
  }
  CHQ_LOG_INFO("quota enforcer drained: {} grant(s), {} unspent returned{}", all.size(),
               returned, first.ok() ? "" : fmt::format(", first failure: {}", MessageOf(first)));
  return first;
}

absl::StatusOr<QuotaEnforcer::GrantView> QuotaEnforcer::View(std::string_view grant_key) const {
  GrantState* g = Find(grant_key);
  if (g == nullptr) {
    return absl::NotFoundError(fmt::format("no quota state for {}", Printable(grant_key)));
  }
  absl::MutexLock lock(&g->mu);
  GrantView v;
  v.has_lease = g->has_lease;
  v.unlimited = g->unlimited;
  v.allowance = g->allowance;
  v.rate_share = g->rate_share;
  v.provider_rate_share = g->provider_rate_share;
  v.share_expires_at_ms = g->share_expires_at_ms;
  v.day = g->day;
  v.cap_reached = g->cap_reached;
  return v;
}

uint64_t QuotaEnforcer::Outstanding() const {
  std::vector<GrantState*> all;
  {
    absl::ReaderMutexLock lock(&map_mu_);
    for (auto& [key, g] : grants_) all.push_back(g.get());
  }
  uint64_t sum = 0;
  for (GrantState* g : all) {
    absl::MutexLock lock(&g->mu);
    if (!g->unlimited) sum += g->allowance;
  }
  return sum;
}

absl::StatusOr<std::unique_ptr<Subscription>> WatchQuotaPolicies(Bus* bus,
                                                                 QuotaEnforcer* enforcer) {
  return bus->Subscribe(kQuotaPolicyEventSubject, [enforcer](const BusMessage& msg) {
    v1::PolicyChanged event;
    if (!event.ParseFromArray(msg.data.data(), static_cast<int>(msg.data.size()))) {
      CHQ_LOG_WARN("quota policy event ignored: not a PolicyChanged ({} bytes)", msg.data.size());
      return;
    }
    enforcer->OnPolicyChanged(event);
  });
}

}  // namespace chasqui
