#include "common/trust/revocation.h"

#include "common/core/names.h"
#include "common/core/status.h"
#include "common/trust/signed_message.h"
#include "fmt/format.h"

namespace chasqui {

v1::SignedRevocationList SignRevocationList(const v1::RevocationListBody& body,
                                            const SigningKey& root) {
  v1::SignedRevocationList l;
  l.set_body(body.SerializeAsString());
  const SignatureBytes sig = root.Sign(SignedMessage(RevocationTag(body.env()), l.body()));
  l.set_signature(std::string(AsView(sig)));
  return l;
}

absl::StatusOr<VerifiedRevocationList> VerifyRevocationList(std::string_view bytes,
                                                            const TrustAnchors& anchors,
                                                            std::string_view env, int64_t now_ms,
                                                            int64_t max_skew_ms) {
  v1::SignedRevocationList l;
  if (!l.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::InvalidArgumentError("revocation list: not a SignedRevocationList message");
  }
  v1::RevocationListBody b;
  if (!b.ParseFromString(l.body()) || l.signature().size() != 64) {
    return absl::InvalidArgumentError(
        "revocation list: body is not a RevocationListBody or signature is not 64 bytes");
  }
  const std::string what = fmt::format("revocation list {} version {}", env, b.version());
  CHASQUI_ASSIGN_OR_RETURN(const TrustAnchor* root,
                           anchors.Resolve(b.issuer_key_id(), now_ms, what));
  if (b.env() != env) {
    return absl::PermissionDeniedError(fmt::format(
        "{}: issued for environment \"{}\", this is {}", what, Printable(b.env()), env));
  }
  CHASQUI_ASSIGN_OR_RETURN(SignatureBytes sig, ToArray<64>(l.signature(), "signature"));
  if (!VerifySignature(root->sign_pk, SignedMessage(RevocationTag(env), l.body()), sig)) {
    return absl::UnauthenticatedError(
        fmt::format("{}: signature does not verify with root {}", what, root->key_id));
  }
  if (b.version() == 0 || b.valid_until_ms() < b.issued_at_ms()) {
    return absl::InvalidArgumentError(
        fmt::format("{}: version must be positive and valid_until not before issued_at", what));
  }
  if (b.issued_at_ms() > now_ms + max_skew_ms) {
    return absl::FailedPreconditionError(fmt::format(
        "{}: issued at {}, in the future (now {})", what, b.issued_at_ms(), now_ms));
  }
  if (now_ms > b.valid_until_ms()) {
    return absl::UnavailableError(fmt::format(
        "{}: stale: valid until {}, now {}; fetch a newer list", what, b.valid_until_ms(),
        now_ms));
  }
  VerifiedRevocationList v;
  v.env = b.env();
  v.version = b.version();
  v.issued_at_ms = b.issued_at_ms();
  v.valid_until_ms = b.valid_until_ms();
  v.issuer_key_id = b.issuer_key_id();
  for (const v1::RevokedCertificate& r : b.revoked()) v.revoked.emplace(r.serial(), r);
  v.signed_list = std::string(bytes);
  return v;
}

}  // namespace chasqui
