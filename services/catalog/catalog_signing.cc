#include "services/catalog/catalog_signing.h"

#include <utility>

#include "common/core/names.h"
#include "common/core/status.h"
#include "common/trust/signed_message.h"
#include "fmt/format.h"

namespace chasqui {
namespace {

std::string_view KindName(CatalogSignedKind kind) {
  switch (kind) {
    case CatalogSignedKind::kEvent:
      return "event";
    case CatalogSignedKind::kSnapshot:
      return "snapshot";
    case CatalogSignedKind::kAnnex:
      return "annex";
  }
  return "?";
}

absl::Status Prefixed(const absl::Status& s, std::string_view prefix) {
  return absl::Status(s.code(), ToAbsl(fmt::format("{}: {}", prefix, MessageOf(s))));
}

}  // namespace

std::string CatalogTag(CatalogSignedKind kind, std::string_view env) {
  switch (kind) {
    case CatalogSignedKind::kEvent:
      return fmt::format("chasqui/v1/event/{}", env);
    case CatalogSignedKind::kSnapshot:
      return fmt::format("chasqui/v1/catalog-snapshot/{}", env);
    case CatalogSignedKind::kAnnex:
      return StatementTag(v1::STATEMENT_KIND_ANNEX, env);
  }
  return "";
}

absl::StatusOr<v1::SignedCatalogMessage> LocalCatalogSigner::Sign(CatalogSignedKind kind,
                                                                  std::string_view body) const {
  v1::SignedCatalogMessage m;
  m.set_body(std::string(body));
  for (const auto& [env, serial] : serials_) {
    const SignatureBytes sig = key_.Sign(SignedMessage(CatalogTag(kind, env), body));
    v1::CatalogSignature* s = m.add_signatures();
    s->set_env(env);
    s->set_signer_serial(serial);
    s->set_signature(std::string(AsView(sig)));
  }
  return m;
}

absl::StatusOr<std::string> VerifyCatalogMessage(const v1::SignedCatalogMessage& message,
                                                 CatalogSignedKind kind, std::string_view env,
                                                 const CertificateLookup& certificates,
                                                 int64_t now_ms) {
  const std::string_view what = KindName(kind);
  const v1::CatalogSignature* sig = nullptr;
  for (const v1::CatalogSignature& s : message.signatures()) {
    if (s.env() == env) sig = &s;
  }
  if (sig == nullptr) {
    return absl::PermissionDeniedError(
        fmt::format("catalog {}: carries no signature for environment {}", what, env));
  }
  auto cert = certificates.Lookup(env, sig->signer_serial(), now_ms);
  if (!cert.ok()) {
    return Prefixed(cert.status(), fmt::format("catalog {}: signer certificate {}", what,
                                               sig->signer_serial()));
  }
  if ((*cert)->role != v1::CERTIFICATE_ROLE_CATALOG) {
    return absl::PermissionDeniedError(fmt::format(
        "catalog {}: signer certificate {} has role {}, not catalog", what, sig->signer_serial(),
        CertificateRoleName((*cert)->role)));
  }
  auto bytes = ToArray<64>(sig->signature(), "signature");
  if (!bytes.ok() ||
      !VerifySignature((*cert)->sign_pk, SignedMessage(CatalogTag(kind, env), message.body()),
                       *bytes)) {
    return absl::UnauthenticatedError(fmt::format(
        "catalog {}: signature does not verify with certificate {}", what, sig->signer_serial()));
  }
  return message.body();
}

absl::StatusOr<v1::CatalogEvent> VerifyCatalogEvent(const v1::SignedCatalogMessage& message,
                                                    std::string_view env,
                                                    const CertificateLookup& certificates,
                                                    int64_t now_ms) {
  CHASQUI_ASSIGN_OR_RETURN(std::string body, VerifyCatalogMessage(message, CatalogSignedKind::kEvent,
                                                                  env, certificates, now_ms));
  v1::CatalogEvent e;
  if (!e.ParseFromString(body)) return absl::InvalidArgumentError("catalog event: body does not parse");
  return e;
}

absl::StatusOr<v1::CatalogSnapshot> VerifyCatalogSnapshot(const v1::SignedCatalogMessage& message,
                                                          std::string_view env,
                                                          const CertificateLookup& certificates,
                                                          int64_t now_ms) {
  CHASQUI_ASSIGN_OR_RETURN(std::string body,
                           VerifyCatalogMessage(message, CatalogSignedKind::kSnapshot, env,
                                                certificates, now_ms));
  v1::CatalogSnapshot s;
  if (!s.ParseFromString(body)) {
    return absl::InvalidArgumentError("catalog snapshot: body does not parse");
  }
  return s;
}

absl::StatusOr<v1::AnnexBody> VerifyAnnex(const v1::Annex& annex, std::string_view env,
                                          const CertificateLookup& certificates, int64_t now_ms) {
  CHASQUI_ASSIGN_OR_RETURN(std::string body,
                           VerifyCatalogMessage(annex.signed_message(), CatalogSignedKind::kAnnex, env,
                                                certificates, now_ms));
  v1::AnnexBody b;
  if (!b.ParseFromString(body)) return absl::InvalidArgumentError("annex: body does not parse");
  if (b.id() != annex.id()) {
    return absl::InvalidArgumentError(
        fmt::format("annex {}: signed body names id {}", Printable(annex.id()), Printable(b.id())));
  }
  return b;
}

absl::Status VerifyAdhesion(const v1::AdhesionAgreement& agreement,
                            const CertificateLookup& certificates, int64_t now_ms) {
  v1::ControlRequest req;
  v1::CatalogControlBody body;
  if (!req.ParseFromString(agreement.signed_request()) || !body.ParseFromString(req.body()) ||
      !body.has_adhere()) {
    return absl::InvalidArgumentError(fmt::format(
        "adhesion of {}: the stored request is not an adhere request", Printable(agreement.entity())));
  }
  if (body.adhere().entity() != agreement.entity() ||
      body.adhere().nta_hash() != agreement.nta_hash() ||
      body.signer_serial() != agreement.mae_serial() || body.env() != agreement.env()) {
    return absl::InvalidArgumentError(fmt::format(
        "adhesion of {}: the signed request does not say what the agreement says",
        Printable(agreement.entity())));
  }
  CHASQUI_ASSIGN_OR_RETURN(auto cert,
                           certificates.Lookup(agreement.env(), agreement.mae_serial(), now_ms));
  if (cert->role != v1::CERTIFICATE_ROLE_MAE || cert->entity != agreement.entity()) {
    return absl::PermissionDeniedError(fmt::format(
        "adhesion of {}: certificate {} is not the entity's MAE", Printable(agreement.entity()),
        cert->serial));
  }
  auto sig = ToArray<64>(req.signature(), "signature");
  if (!sig.ok() ||
      !VerifySignature(cert->sign_pk, SignedMessage(ControlTag(agreement.env()), req.body()), *sig)) {
    return absl::UnauthenticatedError(fmt::format(
        "adhesion of {}: the MAE's signature does not verify", Printable(agreement.entity())));
  }
  return absl::OkStatus();
}

}  // namespace chasqui
