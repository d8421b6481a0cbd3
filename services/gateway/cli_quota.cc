// `chasqui quota <verb>`: usage against limits (chq.ctl.quota.usage), a consumer's manager's
// request for a higher quota (chq.ctl.quota.request, signed), the provider's manager's
// decision on it (chq.ctl.quota.decide, signed), and an operator's direct change of a grant's
// limits or a provider service's capacity (chq.ctl.quota.set_policy, signed).

#include <algorithm>
#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include "CLI/CLI.hpp"
#include "chasqui/v1/quota.pb.h"
#include "common/bus/bus.h"
#include "common/bus/request_mux.h"
#include "common/core/clock.h"
#include "common/core/status.h"
#include "common/trust/requests.h"
#include "fmt/format.h"
#include "google/protobuf/util/json_util.h"
#include "services/gateway/cli_people.h"
#include "services/quota/quota_keys.h"

namespace chasqui::cli {
namespace {

struct Session {
  PersonSession person;
  std::unique_ptr<RequestMux> mux;
};

absl::StatusOr<Session> Open(const PersonFlags& flags) {
  CHASQUI_ASSIGN_OR_RETURN(PersonSession person, OpenPerson(flags, "quota"));
  CHASQUI_ASSIGN_OR_RETURN(std::unique_ptr<RequestMux> mux,
                           RequestMux::Create(person.bus.get(), PersonInbox(person.identity.pub)));
  return Session{std::move(person), std::move(mux)};
}

// Sends `request` and parses the answer as `Reply`; the service's refusal as the status.
template <class Reply>
absl::StatusOr<Reply> Ask(Session& s, const PersonFlags& flags, const char* subject,
                          const std::string& request) {
  CHASQUI_ASSIGN_OR_RETURN(std::string answer,
                           s.mux->RequestAndWait(subject, request,
                                                 absl::Milliseconds(flags.timeout_ms),
                                                 "the quota service (chasqui-quota)"));
  Reply reply;
  if (!reply.ParseFromString(answer)) {
    return absl::InvalidArgumentError(fmt::format("{}: the answer does not parse", subject));
  }
  CHASQUI_RETURN_IF_ERROR(FromControlStatus(reply.status()));
  return reply;
}

std::string Cap(uint64_t v) { return v == 0 ? std::string("-") : std::to_string(v); }

std::string Limits(const v1::QuotaPolicy& p) {
  return fmt::format("rate {}/s burst {}, per day {}, per month {}", p.rate_per_second(),
                     p.burst(), Cap(p.per_day()), Cap(p.per_month()));
}

std::string GrantName(const v1::GrantKey& g) {
  return fmt::format("{} -> {}/{} in {}", g.consumer(), g.provider(), g.service(), g.env());
}

std::string PrintJson(const google::protobuf::Message& m) {
  std::string text;
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  o.add_whitespace = true;
  (void)google::protobuf::util::MessageToJsonString(m, &text, o);
  return text;
}

// "used 13/1000": spent against the cap. Allowance leased to routers counts against the cap
// from the moment it is leased, but is spent only as the routers admit requests; the routers
// report what they hold unspent when they renew, so what is spent is known to within what
// they may still hold (day_unspent_at_most).
std::string Used(uint64_t consumed, uint64_t unspent_at_most, uint64_t cap) {
  const uint64_t spent = consumed - std::min(consumed, unspent_at_most);
  if (unspent_at_most == 0) return fmt::format("used {}/{}", spent, Cap(cap));
  return fmt::format("used {}/{} and leased to routers, unspent, at most {} more", spent,
                     Cap(cap), std::min(consumed, unspent_at_most));
}

std::string_view StateWord(v1::QuotaRequestState s) {
  switch (s) {
    case v1::QUOTA_REQUEST_STATE_PENDING: return "pending";
    case v1::QUOTA_REQUEST_STATE_APPROVED: return "approved";
    case v1::QUOTA_REQUEST_STATE_ADJUSTED: return "adjusted";
    case v1::QUOTA_REQUEST_STATE_REJECTED: return "rejected";
    default: return "unspecified";
  }
}

// The limits flags of `request` and `decide --outcome adjust`.
struct LimitFlags {
  double rate = 0;
  uint32_t burst = 0;
  uint64_t per_day = 0, per_month = 0;
};

void AddLimitFlags(CLI::App* v, LimitFlags* l, bool required) {
  auto* rate = v->add_option("--rate", l->rate, "requests per second (0: none)");
  v->add_option("--burst", l->burst, "bucket size (0: the rate)");
  v->add_option("--per-day", l->per_day, "daily cap (0: none)");
  v->add_option("--per-month", l->per_month, "monthly cap (0: none)");
  if (required) rate->required();
}

void SetLimits(const LimitFlags& l, v1::QuotaPolicy* p) {
  p->set_rate_per_second(l.rate);
  p->set_burst(l.burst);
  p->set_per_day(l.per_day);
  p->set_per_month(l.per_month);
}

int SendSigned(const PersonFlags& flags, const std::string& verb, const char* subject,
               v1::QuotaControlBody body) {
  auto s = Open(flags);
  if (!s.ok()) return LocalFault(s.status());
  const PublicIdentity& who = s->person.identity.pub;
  const v1::ControlRequest req = MakeControlRequest(std::move(body), who.env, who.serial,
                                                    s->person.identity.sign,
                                                    SystemClock().NowUnixMillis());
  auto reply = Ask<v1::QuotaRequestReply>(*s, flags, subject, req.SerializeAsString());
  if (!reply.ok()) return Refused(verb, reply.status());
  const v1::QuotaRequestRecord& r = reply->record();
  const v1::GrantKey& g = r.request().wanted().grant();
  if (r.state() == v1::QUOTA_REQUEST_STATE_PENDING) {
    std::cout << fmt::format(
        "quota request {} pending: {} asks {} (now {}); the provider's manager decides with "
        "`chasqui quota decide --id {}`\n",
        r.id(), GrantName(g), Limits(r.request().wanted()), Limits(r.before()), r.id());
  } else if (r.state() == v1::QUOTA_REQUEST_STATE_REJECTED) {
    std::cout << fmt::format("quota request {} rejected: {} keeps {}; reason: {}\n", r.id(),
                             GrantName(g), Limits(r.before()), r.decision().reason());
  } else {
    std::cout << fmt::format(
        "quota request {} {}: {} now has {} (announced to the routers: takes effect without a "
        "restart)\n",
        r.id(), StateWord(r.state()), GrantName(g), Limits(r.applied()));
  }
  return 0;
}

}  // namespace

void AddQuotaCommands(CLI::App& app) {
  CLI::App* quota = app.add_subcommand(
      "quota", "quotas: usage against limits, requests for more, decisions on them");
  quota->require_subcommand(1);

  {  // usage
    struct F { PersonFlags p; v1::UsageRequest q; bool json = false; };
    auto f = std::make_shared<F>();
    CLI::App* v = quota->add_subcommand("usage", "consumption against limits, per grant");
    AddPersonFlags(v, &f->p);
    v->add_option("--env", *f->q.mutable_env(), "only this environment");
    v->add_option("--consumer", *f->q.mutable_consumer(), "only this consumer's grants");
    v->add_option("--provider", *f->q.mutable_provider(), "only grants to this provider");
    v->add_flag("--json", f->json, "the UsageReply as JSON");
    OnRun(v, [f] {
      auto s = Open(f->p);
      if (!s.ok()) return LocalFault(s.status());
      auto reply = Ask<v1::UsageReply>(*s, f->p, kQuotaUsageSubject, f->q.SerializeAsString());
      if (!reply.ok()) return Refused("usage", reply.status());
      if (f->json) {
        std::cout << PrintJson(*reply) << "\n";
        return 0;
      }
      if (reply->grants().empty()) std::cout << "no grants with quotas or counts\n";
      for (const v1::GrantUsage& u : reply->grants()) {
        const v1::QuotaPolicy& p = u.policy();
        std::cout << fmt::format(
            "{}: day {} {}; month {} {}; rate {}/s burst {}; routers {}{}\n",
            GrantName(p.grant()), u.day(),
            Used(u.day_consumed(), u.day_unspent_at_most(), p.per_day()), u.month(),
            Used(u.month_consumed(), u.day_unspent_at_most(), p.per_month()),
            p.rate_per_second(), p.burst(), u.holders(),
            p.changed_by().empty() ? std::string(" (no policy: no limits)")
                                   : fmt::format(" (limits by {})", p.changed_by()));
      }
      for (const v1::ProviderCapacity& c : reply->providers()) {
        std::cout << fmt::format("capacity {}/{} in {}: {}/s burst {} (by {})\n",
                                 c.service().provider(), c.service().service(),
                                 c.service().env(), c.rate_per_second(), c.burst(),
                                 c.changed_by());
      }
      std::cout << fmt::format("days and months in {}\n", reply->zone());
      return 0;
    });
  }
  {  // set_policy (an operator)
    struct F {
      PersonFlags p;
      v1::GrantKey g;
      LimitFlags l;
      double capacity = -1;
      uint32_t capacity_burst = 0;
      bool json = false;
    };
    auto f = std::make_shared<F>();
    f->g.set_env("test");
    CLI::App* v = quota->add_subcommand(
        "set_policy",
        "operator: set a grant's limits (with --consumer) and/or a provider service's total "
        "capacity (--capacity); takes effect on the routers without a restart");
    AddPersonFlags(v, &f->p);
    v->add_option("--env", *f->g.mutable_env(), "test or prod");
    v->add_option("--consumer", *f->g.mutable_consumer(),
                  "the grant's consumer: sets that grant's limits (every limit flag; one left "
                  "out is no limit)");
    v->add_option("--provider", *f->g.mutable_provider(), "the publishing entity")->required();
    v->add_option("--service", *f->g.mutable_service(), "service name")->required();
    AddLimitFlags(v, &f->l, /*required=*/false);
    v->add_option("--capacity", f->capacity,
                  "requests per second the service takes from all consumers together (0: none)");
    v->add_option("--capacity-burst", f->capacity_burst, "bucket of that capacity (0: its rate)");
    v->add_flag("--json", f->json, "the PolicyReply as JSON");
    OnRun(v, [f] {
      v1::QuotaControlBody b;
      v1::SetPolicyAction& a = *b.mutable_set_policy();
      if (!f->g.consumer().empty()) {
        *a.mutable_policy()->mutable_grant() = f->g;
        SetLimits(f->l, a.mutable_policy());
      }
      if (f->capacity >= 0) {
        v1::ProviderCapacity& c = *a.mutable_capacity();
        c.mutable_service()->set_env(f->g.env());
        c.mutable_service()->set_provider(f->g.provider());
        c.mutable_service()->set_service(f->g.service());
        c.set_rate_per_second(f->capacity);
        c.set_burst(f->capacity_burst);
      }
      if (!a.has_policy() && !a.has_capacity()) {
        return LocalFault(absl::InvalidArgumentError(
            "quota set_policy: give --consumer (a grant's limits) and/or --capacity (the "
            "provider service's total)"));
      }
      auto s = Open(f->p);
      if (!s.ok()) return LocalFault(s.status());
      const PublicIdentity& who = s->person.identity.pub;
      const v1::ControlRequest req = MakeControlRequest(std::move(b), who.env, who.serial,
                                                        s->person.identity.sign,
                                                        SystemClock().NowUnixMillis());
      auto reply =
          Ask<v1::PolicyReply>(*s, f->p, kQuotaSetPolicySubject, req.SerializeAsString());
      if (!reply.ok()) return Refused("quota set_policy", reply.status());
      if (f->json) {
        std::cout << PrintJson(*reply) << "\n";
        return 0;
      }
      if (reply->has_policy()) {
        const v1::QuotaPolicy& p = reply->policy();
        std::cout << fmt::format(
            "quota policy set: {} now has {} (by {}; announced to the routers: takes effect "
            "without a restart)\n",
            GrantName(p.grant()), Limits(p), p.changed_by());
      }
      if (reply->has_capacity()) {
        const v1::ProviderCapacity& c = reply->capacity();
        std::cout << fmt::format(
            "provider capacity set: {}/{} in {} takes {}/s burst {} from all consumers "
            "together (by {})\n",
            c.service().provider(), c.service().service(), c.service().env(),
            c.rate_per_second(), c.burst(), c.changed_by());
      }
      return 0;
    });
  }
  {  // request (consumer's manager)
    struct F { PersonFlags p; v1::GrantKey g; LimitFlags l; std::string justification; };
    auto f = std::make_shared<F>();
    f->g.set_env("test");
    CLI::App* v = quota->add_subcommand(
        "request", "consumer's manager: ask for other limits on a grant, with a justification");
    AddPersonFlags(v, &f->p);
    v->add_option("--env", *f->g.mutable_env(), "the grant's environment: test or prod");
    v->add_option("--consumer", *f->g.mutable_consumer(), "your entity")->required();
    v->add_option("--provider", *f->g.mutable_provider(), "the publishing entity")->required();
    v->add_option("--service", *f->g.mutable_service(), "service name")->required();
    AddLimitFlags(v, &f->l, /*required=*/true);
    v->add_option("--justification", f->justification, "why you need it")->required();
    OnRun(v, [f] {
      v1::QuotaControlBody b;
      v1::QuotaRequestAction& a = *b.mutable_request();
      *a.mutable_wanted()->mutable_grant() = f->g;
      SetLimits(f->l, a.mutable_wanted());
      a.set_justification(f->justification);
      return SendSigned(f->p, "quota request", kQuotaRequestSubject, std::move(b));
    });
  }
  {  // decide (provider's manager, or an operator)
    struct F { PersonFlags p; uint64_t id = 0; std::string outcome, reason; LimitFlags l; };
    auto f = std::make_shared<F>();
    CLI::App* v = quota->add_subcommand(
        "decide", "provider's manager: approve, adjust or reject a quota request");
    AddPersonFlags(v, &f->p);
    v->add_option("--id", f->id, "the quota request's id")->required();
    v->add_option("--outcome", f->outcome, "approve, adjust (with the limits) or reject")
        ->required()
        ->check(CLI::IsMember({"approve", "adjust", "reject"}));
    v->add_option("--reason", f->reason, "why (required to reject)");
    AddLimitFlags(v, &f->l, /*required=*/false);
    OnRun(v, [f] {
      v1::QuotaControlBody b;
      v1::QuotaDecisionAction& a = *b.mutable_decide();
      a.set_request_id(f->id);
      a.set_reason(f->reason);
      if (f->outcome == "approve") {
        a.set_outcome(v1::QUOTA_OUTCOME_APPROVE);
      } else if (f->outcome == "adjust") {
        a.set_outcome(v1::QUOTA_OUTCOME_ADJUST);
        SetLimits(f->l, a.mutable_adjusted());
      } else {
        a.set_outcome(v1::QUOTA_OUTCOME_REJECT);
      }
      return SendSigned(f->p, "quota decide", kQuotaDecideSubject, std::move(b));
    });
  }
}

}  // namespace chasqui::cli
