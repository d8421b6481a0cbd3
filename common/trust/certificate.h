#pragma once
// The certificate everyone verifies (DESIGN.md, "Trust"): a root-signed CertificateBody binding
// a subject (entity, platform service or person), its role and environment, and its keys.
// Verification needs nothing but the pinned anchors: nothing trusts the crypto service's word.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "chasqui/v1/crypto.pb.h"
#include "common/crypto/sodium.h"
#include "common/envelope/identity.h"
#include "common/trust/anchors.h"

namespace chasqui {

// "entity", "router", "catalog", "crypto", "quota", "audit", "mae", "manager", "operator";
// "unspecified" otherwise.
std::string_view CertificateRoleName(v1::CertificateRole role);
// InvalidArgument listing the accepted names.
absl::StatusOr<v1::CertificateRole> ParseCertificateRole(std::string_view name);
// Gateway for "entity", platform service for router..audit, person for mae/manager/operator.
v1::CertificateKind KindOfRole(v1::CertificateRole role);

// What a verified certificate says. Only VerifyCertificate makes one from untrusted bytes.
struct VerifiedCertificate {
  uint64_t serial = 0;
  std::string subject;
  v1::CertificateKind kind = v1::CERTIFICATE_KIND_UNSPECIFIED;
  v1::CertificateRole role = v1::CERTIFICATE_ROLE_UNSPECIFIED;
  std::string entity;
  std::string env;
  SignPublicKey sign_pk{};
  bool has_kx = false;  // false for people
  KxPublicKey kx_pk{};
  int64_t not_before_ms = 0;
  int64_t not_after_ms = 0;
  std::string issuer_key_id;
  std::string certificate;  // the serialized Certificate as verified
};

// InvalidArgument naming the field if a body is malformed: serial zero or >= 2^53, names not
// one subject token, env not test/prod, kind not the role's, key sizes (a person has no kx
// key, everyone else has one), not_after before not_before, no issuer.
absl::Status ValidateCertificateBody(const v1::CertificateBody& body);

// Issuer side: signs `body` with `root` under CertificateTag(body.env()). The caller validated
// the body and set issuer_key_id to RootKeyId(root.public_key()).
v1::Certificate SignCertificate(const v1::CertificateBody& body, const SigningKey& root);

// Verifies a certificate for `env` at `now_ms`, in this order, each with its own code:
//   not a Certificate / malformed body ............ InvalidArgument
//   issuer root not pinned ........................ NotFound
//   root outside its validity now ................. FailedPrecondition ("root ... valid only")
//   certificate for another environment .......... PermissionDenied
//   signature does not verify (tag built from env) Unauthenticated
//   now before not_before ......................... FailedPrecondition ("not valid before")
//   now after not_after ........................... FailedPrecondition ("expired")
// Revocation is the caller's (CertificateDirectory).
absl::StatusOr<VerifiedCertificate> VerifyCertificate(std::string_view certificate_bytes,
                                                      const TrustAnchors& anchors,
                                                      std::string_view env, int64_t now_ms);
absl::StatusOr<VerifiedCertificate> VerifyCertificate(const v1::Certificate& certificate,
                                                      const TrustAnchors& anchors,
                                                      std::string_view env, int64_t now_ms);

// The PublicIdentity today's TrustStore holds: gateways (role entity) and routers (entity
// "router"). FailedPrecondition for roles identity.h cannot express (people, other services).
absl::StatusOr<PublicIdentity> ToPublicIdentity(const VerifiedCertificate& cert);
// Today's TrustStore from verified certificates, so routers and gateways switch to
// certificates without changing their hot path. Certificates of other roles or environments
// are left out. The caller passes only certificates that are neither revoked nor expired
// (CertificateDirectory::BuildTrustStore does).
TrustStore BuildTrustStore(const std::vector<VerifiedCertificate>& certs, std::string_view env);

}  // namespace chasqui
