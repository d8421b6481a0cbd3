#include "common/trust/certificate.h"

#include <array>
#include <utility>

#include "common/core/names.h"
#include "common/core/status.h"
#include "common/trust/signed_message.h"
#include "fmt/format.h"

namespace chasqui {
namespace {

constexpr std::array<std::pair<v1::CertificateRole, std::string_view>, 9> kRoleNames = {{
    {v1::CERTIFICATE_ROLE_ENTITY, "entity"},
    {v1::CERTIFICATE_ROLE_ROUTER, "router"},
    {v1::CERTIFICATE_ROLE_CATALOG, "catalog"},
    {v1::CERTIFICATE_ROLE_CRYPTO, "crypto"},
    {v1::CERTIFICATE_ROLE_QUOTA, "quota"},
    {v1::CERTIFICATE_ROLE_AUDIT, "audit"},
    {v1::CERTIFICATE_ROLE_MAE, "mae"},
    {v1::CERTIFICATE_ROLE_MANAGER, "manager"},
    {v1::CERTIFICATE_ROLE_OPERATOR, "operator"},
}};

constexpr uint64_t kMaxSerial = uint64_t{1} << 53;

absl::Status Malformed(std::string_view what) {
  return absl::InvalidArgumentError(fmt::format("certificate: {}", what));
}

}  // namespace

std::string_view CertificateRoleName(v1::CertificateRole role) {
  for (const auto& [r, name] : kRoleNames) {
    if (r == role) return name;
  }
  return "unspecified";
}

absl::StatusOr<v1::CertificateRole> ParseCertificateRole(std::string_view name) {
  for (const auto& [r, n] : kRoleNames) {
    if (n == name) return r;
  }
  return absl::InvalidArgumentError(fmt::format(
      "role \"{}\" is not known: expected entity, router, catalog, crypto, quota, audit, mae, "
      "manager or operator",
      Printable(name)));
}

v1::CertificateKind KindOfRole(v1::CertificateRole role) {
  switch (role) {
    case v1::CERTIFICATE_ROLE_ENTITY:
      return v1::CERTIFICATE_KIND_ENTITY_GATEWAY;
    case v1::CERTIFICATE_ROLE_ROUTER:
    case v1::CERTIFICATE_ROLE_CATALOG:
    case v1::CERTIFICATE_ROLE_CRYPTO:
    case v1::CERTIFICATE_ROLE_QUOTA:
    case v1::CERTIFICATE_ROLE_AUDIT:
      return v1::CERTIFICATE_KIND_PLATFORM_SERVICE;
    case v1::CERTIFICATE_ROLE_MAE:
    case v1::CERTIFICATE_ROLE_MANAGER:
    case v1::CERTIFICATE_ROLE_OPERATOR:
      return v1::CERTIFICATE_KIND_PERSON;
    default:
      return v1::CERTIFICATE_KIND_UNSPECIFIED;
  }
}

absl::Status ValidateCertificateBody(const v1::CertificateBody& b) {
  if (b.serial() == 0 || b.serial() >= kMaxSerial) return Malformed("serial must be 1..2^53-1");
  if (!IsValidName(b.subject())) return Malformed("subject is not a valid name");
  if (!IsValidName(b.entity())) return Malformed("entity is not a valid name");
  if (!IsValidEnv(b.env())) return Malformed("env must be test or prod");
  const v1::CertificateKind kind = KindOfRole(b.role());
  if (kind == v1::CERTIFICATE_KIND_UNSPECIFIED) return Malformed("role is unspecified");
  if (b.kind() != kind) return Malformed("kind does not match the role");
  if (kind != v1::CERTIFICATE_KIND_PERSON && b.subject() != b.entity()) {
    return Malformed("a gateway's or service's subject must equal its entity");
  }
  if (b.sign_pk().size() != 32) return Malformed("sign_pk must be 32 bytes");
  if (kind == v1::CERTIFICATE_KIND_PERSON) {
    if (!b.kx_pk().empty()) return Malformed("a person's certificate carries no kx key");
  } else if (b.kx_pk().size() != 32) {
    return Malformed("kx_pk must be 32 bytes");
  }
  if (b.not_after_ms() < b.not_before_ms()) return Malformed("not_after before not_before");
  if (b.issuer_key_id().empty()) return Malformed("issuer_key_id is empty");
  return absl::OkStatus();
}

v1::Certificate SignCertificate(const v1::CertificateBody& body, const SigningKey& root) {
  v1::Certificate c;
  c.set_body(body.SerializeAsString());
  const SignatureBytes sig = root.Sign(SignedMessage(CertificateTag(body.env()), c.body()));
  c.set_signature(std::string(AsView(sig)));
  return c;
}

absl::StatusOr<VerifiedCertificate> VerifyCertificate(std::string_view bytes,
                                                      const TrustAnchors& anchors,
                                                      std::string_view env, int64_t now_ms) {
  v1::Certificate c;
  if (!c.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return Malformed("not a Certificate message");
  }
  return VerifyCertificate(c, anchors, env, now_ms);
}

absl::StatusOr<VerifiedCertificate> VerifyCertificate(const v1::Certificate& c,
                                                      const TrustAnchors& anchors,
                                                      std::string_view env, int64_t now_ms) {
  v1::CertificateBody b;
  if (!b.ParseFromString(c.body())) return Malformed("body is not a CertificateBody");
  if (c.signature().size() != 64) return Malformed("signature must be 64 bytes");
  const std::string what = fmt::format("certificate {}", b.serial());
  CHASQUI_ASSIGN_OR_RETURN(const TrustAnchor* root,
                           anchors.Resolve(b.issuer_key_id(), now_ms, what));
  // Compared before the signature only to name the refusal precisely: the signature below is
  // checked under the verifier's own tag, so a certificate for another env never passes.
  if (b.env() != env) {
    return absl::PermissionDeniedError(fmt::format(
        "{}: issued for environment \"{}\", this is {}", what, Printable(b.env()), env));
  }
  CHASQUI_ASSIGN_OR_RETURN(SignatureBytes sig, ToArray<64>(c.signature(), "signature"));
  if (!VerifySignature(root->sign_pk, SignedMessage(CertificateTag(env), c.body()), sig)) {
    return absl::UnauthenticatedError(
        fmt::format("{}: signature does not verify with root {}", what, root->key_id));
  }
  CHASQUI_RETURN_IF_ERROR(ValidateCertificateBody(b));
  if (now_ms < b.not_before_ms()) {
    return absl::FailedPreconditionError(
        fmt::format("{}: not valid before {} (now {})", what, b.not_before_ms(), now_ms));
  }
  if (now_ms > b.not_after_ms()) {
    return absl::FailedPreconditionError(
        fmt::format("{}: expired at {} (now {})", what, b.not_after_ms(), now_ms));
  }
  VerifiedCertificate v;
  v.serial = b.serial();
  v.subject = b.subject();
  v.kind = b.kind();
  v.role = b.role();
  v.entity = b.entity();
  v.env = b.env();
  CHASQUI_ASSIGN_OR_RETURN(v.sign_pk, ToArray<32>(b.sign_pk(), "sign_pk"));
  if (!b.kx_pk().empty()) {
    v.has_kx = true;
    CHASQUI_ASSIGN_OR_RETURN(v.kx_pk, ToArray<32>(b.kx_pk(), "kx_pk"));
  }
  v.not_before_ms = b.not_before_ms();
  v.not_after_ms = b.not_after_ms();
  v.issuer_key_id = b.issuer_key_id();
  v.certificate = c.SerializeAsString();
  return v;
}

absl::StatusOr<PublicIdentity> ToPublicIdentity(const VerifiedCertificate& cert) {
  PublicIdentity p;
  if (cert.role == v1::CERTIFICATE_ROLE_ENTITY) {
    p.role = Role::kEntity;
  } else if (cert.role == v1::CERTIFICATE_ROLE_ROUTER) {
    p.role = Role::kRouter;
  } else {
    return absl::FailedPreconditionError(fmt::format(
        "certificate {}: role {} has no place in a TrustStore (only entity and router)",
        cert.serial, CertificateRoleName(cert.role)));
  }
  p.serial = cert.serial;
  p.entity = cert.entity;
  p.env = cert.env;
  p.sign_pk = cert.sign_pk;
  p.kx_pk = cert.kx_pk;
  p.not_before_ms = cert.not_before_ms;
  return p;
}

TrustStore BuildTrustStore(const std::vector<VerifiedCertificate>& certs, std::string_view env) {
  std::vector<PublicIdentity> ids;
  ids.reserve(certs.size());
  for (const VerifiedCertificate& c : certs) {
    if (c.env != env) continue;
    auto p = ToPublicIdentity(c);
    if (p.ok()) ids.push_back(*std::move(p));
  }
  return TrustStore::FromIdentities(std::move(ids), env);
}

}  // namespace chasqui
