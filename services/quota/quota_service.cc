#include "services/quota/quota_service.h"

#include <utility>

#include "common/core/log.h"
#include "common/core/names.h"
#include "common/core/status.h"
#include "common/trust/requests.h"
#include "fmt/format.h"
#include "services/quota/quota_keys.h"

namespace chasqui {
namespace {

const std::vector<std::string>& Verbs() {
  static const std::vector<std::string> v = {"lease", "return",  "usage",
                                             "set_policy", "request", "decide"};
  return v;
}

std::map<std::string, std::string> GrantLabels(const v1::GrantKey& g) {
  return {{"env", g.env()},
          {"consumer", g.consumer()},
          {"provider", g.provider()},
          {"service", g.service()}};
}

template <class Msg>
bool ParseInto(std::string_view data, Msg* msg) {
  return msg->ParseFromArray(data.data(), static_cast<int>(data.size()));
}

}  // namespace

absl::StatusOr<std::unique_ptr<QuotaService>> QuotaService::Start(
    const QuotaServiceOptions& options, Bus* bus, QuotaLedger* ledger, QuotaControl* control,
    std::shared_ptr<prometheus::Registry> registry, const Clock& clock) {
  std::unique_ptr<QuotaService> s(new QuotaService());
  s->options_ = options;
  s->bus_ = bus;
  s->ledger_ = ledger;
  s->control_ = control;
  s->clock_ = &clock;
  s->registry_ = std::move(registry);
  prometheus::Registry& r = *s->registry_;
  s->requests_ = &prometheus::BuildCounter()
                      .Name("chasqui_quota_requests_total")
                      .Help("Requests answered by the quota service, by verb and status code")
                      .Register(r);
  for (const std::string& verb : Verbs()) s->requests_->Add({{"verb", verb}, {"code", "OK"}});
  s->refusals_ = &prometheus::BuildCounter()
                      .Name("chasqui_quota_refusals_total")
                      .Help("Leases refused because a cap had nothing left, by grant and limit")
                      .Register(r);
  s->consumed_ = &prometheus::BuildGauge()
                      .Name("chasqui_quota_consumed")
                      .Help("Consumed in the current local period (granted to routers minus "
                            "returns), by grant and period")
                      .Register(r);
  s->limit_ = &prometheus::BuildGauge()
                   .Name("chasqui_quota_limit")
                   .Help("A grant's limits (limit=day, month, rate_per_second; absent: none)")
                   .Register(r);
  s->outstanding_ = &prometheus::BuildGauge()
                         .Name("chasqui_quota_leases_outstanding")
                         .Help("Allowance granted to routers today and not returned, by grant")
                         .Register(r);
  s->holders_ = &prometheus::BuildGauge()
                     .Name("chasqui_quota_lease_holders")
                     .Help("Routers holding a live rate share, by grant")
                     .Register(r);
  s->UpdateGauges();

  QuotaService* self = s.get();
  for (const std::string& verb : Verbs()) {
    CHASQUI_ASSIGN_OR_RETURN(
        std::unique_ptr<Subscription> sub,
        bus->QueueSubscribe(fmt::format("chq.ctl.quota.{}", verb), options.queue_group,
                            [self, verb](const BusMessage& msg) { self->Handle(verb, msg); }));
    s->subscriptions_.push_back(std::move(sub));
  }
  // The server knows the subscriptions before anyone is told we serve: a request sent right
  // after Start() returns is not answered "no responders".
  CHASQUI_RETURN_IF_ERROR(bus->Flush(absl::Seconds(5)));
  s->ticker_ = std::thread([self] {
    while (!self->stop_.WaitForNotificationWithTimeout(self->options_.tick)) self->UpdateGauges();
  });
  CHQ_LOG_INFO("quota service serving chq.ctl.quota.* (zone {})", ledger->periods().zone());
  return s;
}

QuotaService::~QuotaService() {
  stop_.Notify();
  if (ticker_.joinable()) ticker_.join();
  subscriptions_.clear();
}

absl::Status QuotaService::Ready() const {
  if (draining_) return absl::UnavailableError("draining");
  if (!bus_->Connected()) return absl::UnavailableError("not connected to NATS");
  return absl::OkStatus();
}

absl::Status QuotaService::Drain(absl::Duration timeout) {
  draining_ = true;
  absl::Status first = absl::OkStatus();
  for (auto& sub : subscriptions_) {
    absl::Status s = sub->Drain(timeout);
    if (first.ok()) first = s;
  }
  return first;
}

void QuotaService::Announce(const v1::PolicyChanged& event) {
  if (absl::Status s = bus_->Publish(kQuotaPolicyEventSubject, event.SerializeAsString());
      !s.ok()) {
    CHQ_LOG_WARN("policy change not announced (routers pick it up at their next renewal): {}",
                 MessageOf(s));
  }
}

std::string QuotaService::Answer(const std::string& verb, std::string_view data,
                                 absl::Status* status) {
  const int64_t now = clock_->NowUnixMillis();
  if (verb == "lease") {
    v1::LeaseRequest req;
    v1::LeaseReply reply;
    if (!ParseInto(data, &req)) {
      *status = absl::InvalidArgumentError("lease: not a LeaseRequest (truncated or garbage)");
    } else if (auto r = ledger_->Lease(req); r.ok()) {
      reply = *std::move(r);
      if (reply.has_refusal()) {
        *status = FromControlStatus(reply.status());
        auto labels = GrantLabels(req.grant());
        labels["limit"] = std::string(QuotaLimitName(reply.refusal().limit()));
        refusals_->Add(labels).Increment();
      }
    } else {
      *status = r.status();
    }
    *reply.mutable_status() = ToControlStatus(*status);
    return reply.SerializeAsString();
  }
  if (verb == "return") {
    v1::LeaseReturn req;
    v1::ReturnReply reply;
    if (!ParseInto(data, &req)) {
      *status = absl::InvalidArgumentError("return: not a LeaseReturn (truncated or garbage)");
    } else if (auto r = ledger_->Return(req); r.ok()) {
      reply = *std::move(r);
    } else {
      *status = r.status();
    }
    *reply.mutable_status() = ToControlStatus(*status);
    return reply.SerializeAsString();
  }
  if (verb == "usage") {
    v1::UsageRequest req;
    v1::UsageReply reply;
    if (!ParseInto(data, &req)) {
      *status = absl::InvalidArgumentError("usage: not a UsageRequest (truncated or garbage)");
    } else if (auto r = ledger_->Usage(req); r.ok()) {
      reply = *std::move(r);
    } else {
      *status = r.status();
    }
    *reply.mutable_status() = ToControlStatus(*status);
    return reply.SerializeAsString();
  }
  if (verb == "set_policy") {
    v1::PolicyReply reply;
    if (auto r = control_->SetPolicy(data); r.ok()) {
      reply = *std::move(r);
      v1::PolicyChanged event;
      if (reply.has_policy()) *event.mutable_grant() = reply.policy().grant();
      if (reply.has_capacity()) *event.mutable_service() = reply.capacity().service();
      event.set_changed_at_ms(now);
      Announce(event);
    } else {
      *status = r.status();
    }
    *reply.mutable_status() = ToControlStatus(*status);
    return reply.SerializeAsString();
  }
  // request, decide
  v1::QuotaRequestReply reply;
  auto r = verb == "request" ? control_->Request(data) : control_->Decide(data);
  if (r.ok()) {
    *reply.mutable_record() = *std::move(r);
    if (verb == "decide" && reply.record().has_applied()) {
      v1::PolicyChanged event;
      *event.mutable_grant() = reply.record().applied().grant();
      event.set_changed_at_ms(now);
      Announce(event);
    }
  } else {
    *status = r.status();
  }
  *reply.mutable_status() = ToControlStatus(*status);
  return reply.SerializeAsString();
}

void QuotaService::Handle(const std::string& verb, const BusMessage& msg) {
  if (msg.reply.empty()) {
    requests_->Add({{"verb", verb}, {"code", "NO_REPLY_SUBJECT"}}).Increment();
    return;
  }
  absl::Status status = absl::OkStatus();
  const std::string answer = Answer(verb, msg.data, &status);
  // One line per refusal, except the expected ones: a cap reached (counted in
  // chasqui_quota_refusals_total) would otherwise log on every router's recheck.
  if (!status.ok() && !absl::IsResourceExhausted(status)) {
    CHQ_LOG_WARN("quota {} refused: {}", verb, MessageOf(status));
  }
  requests_->Add({{"verb", verb}, {"code", absl::StatusCodeToString(status.code())}}).Increment();
  if (absl::Status s = bus_->Publish(msg.reply, answer); !s.ok()) {
    CHQ_LOG_WARN("quota {} answer not sent: {}", verb, MessageOf(s));
  }
}

void QuotaService::UpdateGauges() {
  auto usage = ledger_->Usage(v1::UsageRequest());
  if (!usage.ok()) {
    CHQ_LOG_WARN("quota usage for metrics: {}", MessageOf(usage.status()));
    return;
  }
  for (const v1::GrantUsage& u : usage->grants()) {
    auto labels = GrantLabels(u.policy().grant());
    auto with = [&](const char* k, const char* v) {
      auto l = labels;
      l[k] = v;
      return l;
    };
    consumed_->Add(with("period", "day")).Set(static_cast<double>(u.day_consumed()));
    consumed_->Add(with("period", "month")).Set(static_cast<double>(u.month_consumed()));
    if (u.policy().per_day() > 0) {
      limit_->Add(with("limit", "day")).Set(static_cast<double>(u.policy().per_day()));
    }
    if (u.policy().per_month() > 0) {
      limit_->Add(with("limit", "month")).Set(static_cast<double>(u.policy().per_month()));
    }
    if (u.policy().rate_per_second() > 0) {
      limit_->Add(with("limit", "rate_per_second")).Set(u.policy().rate_per_second());
    }
    outstanding_->Add(labels).Set(static_cast<double>(u.outstanding()));
    holders_->Add(labels).Set(static_cast<double>(u.holders()));
  }
}

}  // namespace chasqui
