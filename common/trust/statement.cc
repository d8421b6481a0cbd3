#include "common/trust/statement.h"

#include "common/core/names.h"
#include "common/core/status.h"
#include "common/trust/signed_message.h"
#include "fmt/format.h"

namespace chasqui {

v1::SignedStatement SignStatement(const v1::StatementBody& body, const SigningKey& root) {
  v1::SignedStatement s;
  s.set_body(body.SerializeAsString());
  const SignatureBytes sig =
      root.Sign(SignedMessage(StatementTag(body.kind(), body.env()), s.body()));
  s.set_signature(std::string(AsView(sig)));
  return s;
}

absl::StatusOr<VerifiedStatement> VerifyStatement(std::string_view bytes, v1::StatementKind kind,
                                                  const TrustAnchors& anchors,
                                                  std::string_view env) {
  v1::SignedStatement s;
  v1::StatementBody b;
  if (!s.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())) ||
      !b.ParseFromString(s.body()) || s.signature().size() != 64 || b.digest().size() != 32) {
    return absl::InvalidArgumentError(
        "signed statement: not a SignedStatement with a 32-byte digest and 64-byte signature");
  }
  const std::string tag = StatementTag(kind, env);
  if (tag.empty()) return absl::InvalidArgumentError("signed statement: unspecified kind");
  const std::string what = fmt::format("signed statement at {}", b.signed_at_ms());
  CHASQUI_ASSIGN_OR_RETURN(const TrustAnchor* root,
                           anchors.Resolve(b.issuer_key_id(), b.signed_at_ms(), what));
  if (b.env() != env || b.kind() != kind) {
    return absl::PermissionDeniedError(fmt::format(
        "{}: is a {} statement for \"{}\"; expected {} for {}", what,
        v1::StatementKind_Name(b.kind()), Printable(b.env()), v1::StatementKind_Name(kind), env));
  }
  CHASQUI_ASSIGN_OR_RETURN(SignatureBytes sig, ToArray<64>(s.signature(), "signature"));
  if (!VerifySignature(root->sign_pk, SignedMessage(tag, s.body()), sig)) {
    return absl::UnauthenticatedError(
        fmt::format("{}: signature does not verify with root {}", what, root->key_id));
  }
  VerifiedStatement v;
  v.kind = b.kind();
  v.env = b.env();
  CHASQUI_ASSIGN_OR_RETURN(v.digest, ToArray<32>(b.digest(), "digest"));
  v.signed_at_ms = b.signed_at_ms();
  v.issuer_key_id = b.issuer_key_id();
  v.requester_serial = b.requester_serial();
  return v;
}

}  // namespace chasqui
