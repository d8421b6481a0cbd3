#include "services/crypto/crypto_service.h"

#include <utility>

#include "absl/status/status.h"
#include "common/core/log.h"
#include "common/core/status.h"
#include "common/trust/requests.h"
#include "services/crypto/audit_feed.h"
#include "fmt/format.h"

namespace chasqui {
namespace {

std::string CodeLabel(const absl::Status& s) {
  std::string name = absl::StatusCodeToString(s.code());
  return name;
}

}  // namespace

absl::StatusOr<std::unique_ptr<CryptoService>> CryptoService::Start(
    const CryptoServiceOptions& options, Bus* bus, CertificateAuthority* authority,
    std::shared_ptr<prometheus::Registry> registry, const Clock& clock) {
  std::unique_ptr<CryptoService> s(new CryptoService());
  s->options_ = options;
  s->bus_ = bus;
  s->authority_ = authority;
  s->clock_ = &clock;
  s->registry_ = std::move(registry);
  prometheus::Registry& r = *s->registry_;
  s->requests_ = &prometheus::BuildCounter()
                      .Name("chasqui_crypto_requests_total")
                      .Help("Requests answered by the crypto service, by verb and status code")
                      .Register(r);
  for (const char* verb : {"enrol", "directory", "revoke", "sign"}) {
    s->requests_->Add({{"verb", verb}, {"code", "OK"}});
  }
  s->issued_ = &prometheus::BuildCounter()
                    .Name("chasqui_crypto_certificates_issued_total")
                    .Help("Certificates issued since start")
                    .Register(r)
                    .Add({});
  s->published_ = &prometheus::BuildCounter()
                       .Name("chasqui_crypto_revocation_lists_published_total")
                       .Help("Revocation lists published on chq.evt.crypto.revoked")
                       .Register(r)
                       .Add({});
  s->list_version_ = &prometheus::BuildGauge()
                          .Name("chasqui_crypto_revocation_list_version")
                          .Help("Version of the current revocation list")
                          .Register(r);
  s->list_seconds_left_ = &prometheus::BuildGauge()
                               .Name("chasqui_crypto_revocation_list_seconds_to_valid_until")
                               .Help("Seconds until the current revocation list goes stale")
                               .Register(r);
  s->log_size_ = &prometheus::BuildGauge()
                      .Name("chasqui_crypto_transparency_log_entries")
                      .Help("Entries in the transparency log (certificates ever issued)")
                      .Register(r)
                      .Add({});
  s->earliest_expiry_ = &prometheus::BuildGauge()
                             .Name("chasqui_crypto_certificate_earliest_expiry_seconds")
                             .Help("Seconds until the earliest expiry among certificates "
                                   "neither revoked nor expired (0: none)")
                             .Register(r)
                             .Add({});
  s->root_seconds_left_ = &prometheus::BuildGauge()
                               .Name("chasqui_crypto_root_seconds_to_not_after")
                               .Help("Seconds until the signing root's validity ends")
                               .Register(r)
                               .Add({});
  s->UpdateGauges();

  CryptoService* self = s.get();
  for (const char* verb : {"enrol", "directory", "revoke", "sign"}) {
    const std::string subject = fmt::format("chq.ctl.crypto.{}", verb);
    const std::string v = verb;
    CHASQUI_ASSIGN_OR_RETURN(
        std::unique_ptr<Subscription> sub,
        bus->QueueSubscribe(subject, options.queue_group,
                            [self, v](const BusMessage& msg) { self->Handle(v, msg); }));
    s->subscriptions_.push_back(std::move(sub));
  }
  // The server knows the subscriptions before anyone is told we serve: a request sent right
  // after Start() returns is not answered "no responders".
  CHASQUI_RETURN_IF_ERROR(bus->Flush(absl::Seconds(5)));
  for (const v1::SignedRevocationList& l : authority->CurrentLists()) s->PublishList(l);
  s->ticker_ = std::thread([self] {
    while (!self->stop_.WaitForNotificationWithTimeout(self->options_.tick)) self->Tick();
  });
  CHQ_LOG_INFO("crypto service serving chq.ctl.crypto.* (root {})", authority->root_key_id());
  return s;
}

CryptoService::~CryptoService() {
  stop_.Notify();
  if (ticker_.joinable()) ticker_.join();
  subscriptions_.clear();
}

absl::Status CryptoService::Ready() const {
  if (draining_) return absl::UnavailableError("draining");
  if (!bus_->Connected()) return absl::UnavailableError("not connected to NATS");
  return absl::OkStatus();
}

absl::Status CryptoService::Drain(absl::Duration timeout) {
  draining_ = true;
  absl::Status first = absl::OkStatus();
  for (auto& sub : subscriptions_) {
    absl::Status s = sub->Drain(timeout);
    if (first.ok()) first = s;
  }
  return first;
}

void CryptoService::PublishList(const v1::SignedRevocationList& list) {
  absl::Status s = bus_->Publish(kRevokedEventSubject, list.SerializeAsString());
  if (!s.ok()) {
    CHQ_LOG_WARN("revocation list not published: {}", MessageOf(s));
    return;
  }
  published_->Increment();
}

void CryptoService::Handle(std::string_view verb, const BusMessage& msg) {
  if (msg.reply.empty()) {
    requests_->Add({{"verb", std::string(verb)}, {"code", "NO_REPLY_SUBJECT"}}).Increment();
    return;
  }
  std::string answer;
  absl::Status status = absl::OkStatus();
  if (verb == "enrol") {
    v1::EnrolmentReply reply;
    auto r = authority_->Enrol(msg.data);
    if (r.ok()) {
      reply = *std::move(r);
      issued_->Increment();
      if (options_.audit_feed != nullptr) options_.audit_feed->Wake();
    } else {
      status = r.status();
    }
    *reply.mutable_status() = ToControlStatus(status);
    answer = reply.SerializeAsString();
  } else if (verb == "directory") {
    v1::DirectoryReply reply;
    auto r = authority_->Directory(msg.data);
    if (r.ok()) {
      reply = *std::move(r);
    } else {
      status = r.status();
    }
    *reply.mutable_status() = ToControlStatus(status);
    answer = reply.SerializeAsString();
  } else if (verb == "revoke") {
    v1::RevokeReply reply;
    auto r = authority_->Revoke(msg.data);
    if (r.ok()) {
      *reply.mutable_revocation_list() = *r;
      PublishList(*r);
    } else {
      status = r.status();
    }
    *reply.mutable_status() = ToControlStatus(status);
    answer = reply.SerializeAsString();
  } else {
    v1::SignReply reply;
    auto r = authority_->Sign(msg.data);
    if (r.ok()) {
      *reply.mutable_statement() = *std::move(r);
    } else {
      status = r.status();
    }
    *reply.mutable_status() = ToControlStatus(status);
    answer = reply.SerializeAsString();
  }
  if (!status.ok() && verb != "directory") {
    // The message never holds a key or a token: the authority's errors name serials, roles
    // and times only.
    CHQ_LOG_WARN("{} refused: {}", verb, MessageOf(status));
  }
  requests_->Add({{"verb", std::string(verb)}, {"code", CodeLabel(status)}}).Increment();
  if (absl::Status s = bus_->Publish(msg.reply, answer); !s.ok()) {
    CHQ_LOG_WARN("{} answer not sent: {}", verb, MessageOf(s));
  }
}

void CryptoService::Tick() {
  auto due = authority_->ReissueDue();
  if (!due.ok()) {
    CHQ_LOG_ERROR("revocation list re-issue failed: {}", MessageOf(due.status()));
  } else {
    for (const auto& l : *due) PublishList(l);
  }
  UpdateGauges();
}

void CryptoService::UpdateGauges() {
  auto st = authority_->GetStats();
  if (!st.ok()) {
    CHQ_LOG_WARN("stats: {}", MessageOf(st.status()));
    return;
  }
  const int64_t now = clock_->NowUnixMillis();
  for (const auto& e : st->envs) {
    list_version_->Add({{"env", e.env}}).Set(static_cast<double>(e.revocation_version));
    list_seconds_left_->Add({{"env", e.env}})
        .Set(static_cast<double>(e.revocation_valid_until_ms - now) / 1000.0);
  }
  log_size_->Set(static_cast<double>(st->log_size));
  earliest_expiry_->Set(st->earliest_expiry_ms == 0
                            ? 0.0
                            : static_cast<double>(st->earliest_expiry_ms - now) / 1000.0);
  root_seconds_left_->Set(static_cast<double>(st->root_not_after_ms - now) / 1000.0);
}

}  // namespace chasqui
