#include "services/audit/audit_access.h"

#include <utility>

#include "common/core/status.h"
#include "common/trust/requests.h"
#include "fmt/format.h"
#include "services/audit/audit_schema.h"

namespace chasqui::audit {
namespace {

std::string_view ActionVerb(const v1::AuditControlBody& body) {
  switch (body.action_case()) {
    case v1::AuditControlBody::kQuery: return "query";
    case v1::AuditControlBody::kReport: return "report";
    default: return "none";
  }
}

}  // namespace

v1::ControlRequest MakeAuditRequest(v1::AuditControlBody body, std::string_view env,
                                    uint64_t signer_serial, const SigningKey& key,
                                    int64_t now_ms) {
  return MakeControlRequest(std::move(body), env, signer_serial, key, now_ms);
}

absl::StatusOr<AuditReader> ReaderOf(const VerifiedCertificate& cert) {
  AuditReader r;
  r.serial = cert.serial;
  const bool person = cert.kind == v1::CERTIFICATE_KIND_PERSON;
  if (person && cert.role == v1::CERTIFICATE_ROLE_OPERATOR) {
    r.all = true;
    return r;
  }
  const bool entity_key = cert.role == v1::CERTIFICATE_ROLE_ENTITY ||
                          (person && (cert.role == v1::CERTIFICATE_ROLE_MAE ||
                                      cert.role == v1::CERTIFICATE_ROLE_MANAGER));
  if (!entity_key || cert.entity.empty()) {
    return absl::PermissionDeniedError(fmt::format(
        "certificate {} is a {} key of {}; the audit trail is read by an entity (its gateway, "
        "MAE or managers: its own records) or an operator (everything)",
        cert.serial, CertificateRoleName(cert.role), cert.entity));
  }
  r.entity = cert.entity;
  return r;
}

absl::Status Narrow(const AuditReader& reader, std::string* consumer, std::string* provider) {
  if (reader.all) return absl::OkStatus();
  const std::string& e = reader.entity;
  if (*consumer == e || *provider == e) return absl::OkStatus();
  if (consumer->empty()) {
    *consumer = e;
    return absl::OkStatus();
  }
  if (provider->empty()) {
    *provider = e;
    return absl::OkStatus();
  }
  return absl::PermissionDeniedError(fmt::format(
      "certificate {} of {} reads only records where {} is the consumer or the provider; this "
      "request asks for consumer {} and provider {}",
      reader.serial, e, e, *consumer, *provider));
}

absl::Status AuditAccess::RememberNonce(const std::string& key, int64_t until_ms, int64_t now_ms,
                                        std::string_view verb) {
  if (options_.nonce_store == nullptr) return nonces_.Remember(key, until_ms, now_ms, verb);
  KvStore& store = *options_.nonce_store;
  const std::string stored_key = kNoncePrefix + key;
  absl::MutexLock lock(&nonce_mu_);
  auto seen = store.Get(stored_key);
  if (seen.ok() && seen->size() == 8 &&
      static_cast<int64_t>(FromBigEndian64(*seen)) > now_ms) {
    return absl::AlreadyExistsError(fmt::format("{}: replayed (same signer and nonce)", verb));
  }
  if (!seen.ok() && !absl::IsNotFound(seen.status())) return seen.status();
  KvBatch batch;
  batch.Put(stored_key, BigEndian64(static_cast<uint64_t>(until_ms)));
  if (now_ms >= next_sweep_ms_) {
    // Forget what expired, at most once per window.
    next_sweep_ms_ = now_ms + options_.control_window_ms;
    CHASQUI_RETURN_IF_ERROR(store.Scan(kNoncePrefix, kNonceEnd,
                                       [&](std::string_view k, std::string_view v) {
                                         if (v.size() != 8 ||
                                             static_cast<int64_t>(FromBigEndian64(v)) <= now_ms) {
                                           batch.Delete(k);
                                         }
                                         return true;
                                       }));
  }
  // Synced before the read is answered: a restart remembers it.
  return store.Write(batch, Durability::kSynced);
}

absl::StatusOr<AuditAccess::Checked> AuditAccess::Check(std::string_view verb,
                                                        std::string_view request) {
  Checked c;
  CHASQUI_ASSIGN_OR_RETURN(v1::ControlRequest req,
                           ParseControlRequest(request, c.body, verb, "AuditControlBody"));
  if (signers_ == nullptr) {
    return absl::UnavailableError(fmt::format(
        "{}: this audit service verifies no signed requests (started without --anchors)", verb));
  }
  const v1::AuditControlBody& b = c.body;
  const int64_t now = clock_.NowUnixMillis();
  CHASQUI_ASSIGN_OR_RETURN(std::shared_ptr<const VerifiedCertificate> signer,
                           VerifyControlSigner(req, ControlFieldsOf(b), *signers_, now,
                                               options_.control_window_ms, verb));
  CHASQUI_RETURN_IF_ERROR(RememberNonce(NonceKey(signer->serial, b.nonce()),
                                        now + 2 * options_.control_window_ms, now, verb));
  if (ActionVerb(b) != verb) {
    return absl::InvalidArgumentError(
        fmt::format("{}: the request's action is {}, not {}", verb, ActionVerb(b), verb));
  }
  auto reader = ReaderOf(*signer);
  if (!reader.ok()) {
    return absl::PermissionDeniedError(fmt::format("{}: {}", verb, MessageOf(reader.status())));
  }
  c.reader = *std::move(reader);
  absl::Status narrowed =
      b.has_query() ? Narrow(c.reader, c.body.mutable_query()->mutable_consumer(),
                             c.body.mutable_query()->mutable_provider())
                    : Narrow(c.reader, c.body.mutable_report()->mutable_consumer(),
                             c.body.mutable_report()->mutable_provider());
  if (!narrowed.ok()) {
    return absl::PermissionDeniedError(fmt::format("{}: {}", verb, MessageOf(narrowed)));
  }
  return c;
}

}  // namespace chasqui::audit
