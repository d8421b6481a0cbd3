#pragma once
// The pinned root public keys a verifier trusts (DESIGN.md, "Trust"). Several anchors coexist
// during a root rotation, each with its own validity; a signature counts only if its root is
// pinned and valid at the relevant time (now for certificates and revocation lists, the
// signing time for archived statements).
//
// Anchor file (printed and written by `chasqui-crypto init` / `rotate-root`; public, pin it on
// every router and gateway):
//   {"version":1,"roots":[{"key_id":HEX16,"sign_pk":B64,"not_before_ms":N,"not_after_ms":N}]}

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "chasqui/v1/crypto.pb.h"
#include "common/crypto/sodium.h"

namespace chasqui {

// The first 8 bytes of BLAKE2b-256(pk) in hex: names a root in certificates and logs.
std::string RootKeyId(const SignPublicKey& pk);

struct TrustAnchor {
  std::string key_id;
  SignPublicKey sign_pk{};
  int64_t not_before_ms = 0;
  int64_t not_after_ms = 0;
  bool ValidAt(int64_t t_ms) const { return t_ms >= not_before_ms && t_ms <= not_after_ms; }
};

// A value type; copy it freely. Not synchronised: CertificateDirectory guards its own copy.
class TrustAnchors {
 public:
  TrustAnchors() = default;
  explicit TrustAnchors(std::vector<TrustAnchor> anchors) : anchors_(std::move(anchors)) {}

  const TrustAnchor* Find(std::string_view key_id) const;
  // The anchor that must have signed something at `at_ms`: NotFound if `key_id` is not pinned,
  // FailedPrecondition if the root was not valid then. `what` names the signed thing.
  absl::StatusOr<const TrustAnchor*> Resolve(std::string_view key_id, int64_t at_ms,
                                             std::string_view what) const;

  // Verifies an endorsement (signed by a pinned root valid at `now_ms`) and applies it: a new
  // root is added; a known root's validity may only shrink (a later not_before or an earlier
  // not_after), never grow. Errors as VerifyEndorsement; OK and unchanged for a repeat.
  absl::Status ApplyEndorsement(const v1::RootEndorsement& endorsement, int64_t now_ms);

  const std::vector<TrustAnchor>& anchors() const { return anchors_; }
  bool empty() const { return anchors_.empty(); }

 private:
  std::vector<TrustAnchor> anchors_;
};

// Signs `anchor` with `signer` (a root) under RootTag().
v1::RootEndorsement EndorseRoot(const SigningKey& signer, const TrustAnchor& anchor,
                                int64_t now_ms);
// The anchor an endorsement states. InvalidArgument if malformed or its key id does not match
// its key, NotFound if the signer is not pinned, FailedPrecondition if the signer is not valid
// at `now_ms`, Unauthenticated if the signature does not verify.
absl::StatusOr<TrustAnchor> VerifyEndorsement(const v1::RootEndorsement& endorsement,
                                              const TrustAnchors& anchors, int64_t now_ms);

// Errors name the file and the field (InvalidArgument) or say it cannot be read.
absl::StatusOr<TrustAnchors> LoadTrustAnchors(const std::string& path);
absl::StatusOr<TrustAnchors> ParseTrustAnchors(std::string_view json, std::string_view where);
std::string TrustAnchorsJson(const TrustAnchors& anchors);

}  // namespace chasqui
