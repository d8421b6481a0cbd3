#pragma once
// Shared by the quota tests: a LeaseSource straight onto a QuotaLedger (unit tests, no
// network), one that can be cut off, people with keys and certificates, and La Paz times.

#include <atomic>
#include <map>
#include <memory>
#include <string>

#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "common/crypto/sodium.h"
#include "common/trust/certificate.h"
#include "services/quota/quota_control.h"
#include "services/quota/quota_enforcer.h"
#include "services/quota/quota_keys.h"
#include "services/quota/quota_ledger.h"

namespace chasqui::testing {

// The ledger in the same process; `down` makes every call fail as an unreachable service.
class LedgerSource final : public LeaseSource {
 public:
  explicit LedgerSource(QuotaLedger* ledger) : ledger_(ledger) {}
  absl::StatusOr<v1::LeaseReply> Lease(const v1::LeaseRequest& request) override {
    if (down) return absl::UnavailableError("quota service: nobody answers (test)");
    ++leases;
    return ledger_->Lease(request);
  }
  absl::StatusOr<v1::ReturnReply> Return(const v1::LeaseReturn& request) override {
    if (down) return absl::UnavailableError("quota service: nobody answers (test)");
    return ledger_->Return(request);
  }
  std::atomic<bool> down{false};
  std::atomic<int> leases{0};

 private:
  QuotaLedger* ledger_;
};

// Unix ms of a civil time in La Paz (UTC-4 all year: no daylight saving since 1932).
inline int64_t LaPazMillis(int y, int mo, int d, int h, int mi, int s) {
  absl::TimeZone tz;
  absl::LoadTimeZone("America/La_Paz", &tz);
  return absl::ToUnixMillis(absl::FromCivil(absl::CivilSecond(y, mo, d, h, mi, s), tz));
}

inline v1::GrantKey Grant(const std::string& consumer = "sin",
                          const std::string& provider = "segip",
                          const std::string& service = "persona",
                          const std::string& env = "test") {
  v1::GrantKey g;
  g.set_env(env);
  g.set_consumer(consumer);
  g.set_provider(provider);
  g.set_service(service);
  return g;
}

inline v1::QuotaPolicy Policy(const v1::GrantKey& grant, double rate, uint32_t burst,
                              uint64_t per_day, uint64_t per_month) {
  v1::QuotaPolicy p;
  *p.mutable_grant() = grant;
  p.set_rate_per_second(rate);
  p.set_burst(burst);
  p.set_per_day(per_day);
  p.set_per_month(per_month);
  return p;
}

// A person with a key and a certificate the FakeSigners hand out (the certificate chain
// itself is common/trust's, tested there).
struct Person {
  SigningKey key = SigningKey::Generate();
  uint64_t serial = 0;
};

class FakeSigners final : public QuotaSigners {
 public:
  Person Add(uint64_t serial, v1::CertificateRole role, const std::string& entity,
             const std::string& env = "test") {
    Person p;
    p.serial = serial;
    auto c = std::make_shared<VerifiedCertificate>();
    c->serial = serial;
    c->subject = "person" + std::to_string(serial);
    c->kind = v1::CERTIFICATE_KIND_PERSON;
    c->role = role;
    c->entity = entity;
    c->env = env;
    c->sign_pk = p.key.public_key();
    certs_[serial] = c;
    return p;
  }
  absl::StatusOr<std::shared_ptr<const VerifiedCertificate>> Lookup(
      std::string_view env, uint64_t serial, int64_t) const override {
    auto it = certs_.find(serial);
    if (it == certs_.end()) return absl::NotFoundError("unknown serial");
    if (it->second->env != env) return absl::InvalidArgumentError("env not served");
    return std::shared_ptr<const VerifiedCertificate>(it->second);
  }

 private:
  std::map<uint64_t, std::shared_ptr<VerifiedCertificate>> certs_;
};

inline v1::ControlRequest RequestIncrease(const Person& who, const v1::QuotaPolicy& wanted,
                                          int64_t now_ms) {
  v1::QuotaControlBody body;
  *body.mutable_request()->mutable_wanted() = wanted;
  body.mutable_request()->set_justification("census month: twice the usual lookups");
  return MakeQuotaControlRequest(body, "test", who.serial, who.key, now_ms);
}

inline v1::ControlRequest DecideRequest(const Person& who, uint64_t id, v1::QuotaOutcome outcome,
                                        int64_t now_ms, const v1::QuotaPolicy* adjusted = nullptr) {
  v1::QuotaControlBody body;
  body.mutable_decide()->set_request_id(id);
  body.mutable_decide()->set_outcome(outcome);
  if (adjusted != nullptr) *body.mutable_decide()->mutable_adjusted() = *adjusted;
  if (outcome == v1::QUOTA_OUTCOME_REJECT) body.mutable_decide()->set_reason("not now");
  return MakeQuotaControlRequest(body, "test", who.serial, who.key, now_ms);
}

}  // namespace chasqui::testing
