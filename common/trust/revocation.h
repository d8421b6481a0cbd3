#pragma once
// The signed, versioned revocation list (DESIGN.md, "Trust"): one per environment, signed by
// the current root under `chasqui/v1/revocation/<env>`, with a valid_until after which its
// holder must refuse traffic (UNAVAILABLE) until it gets a newer one.

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "chasqui/v1/crypto.pb.h"
#include "common/crypto/sodium.h"
#include "common/trust/anchors.h"

namespace chasqui {

struct VerifiedRevocationList {
  std::string env;
  uint64_t version = 0;
  int64_t issued_at_ms = 0;
  int64_t valid_until_ms = 0;
  std::string issuer_key_id;
  absl::flat_hash_map<uint64_t, v1::RevokedCertificate> revoked;
  std::string signed_list;  // the serialized SignedRevocationList as verified

  bool IsRevoked(uint64_t serial) const { return revoked.contains(serial); }
  bool StaleAt(int64_t now_ms) const { return now_ms > valid_until_ms; }
};

// Issuer side: signs `body` with `root` under RevocationTag(body.env()).
v1::SignedRevocationList SignRevocationList(const v1::RevocationListBody& body,
                                            const SigningKey& root);

// Verifies a list for `env` at `now_ms`:
//   not a SignedRevocationList / malformed body ... InvalidArgument
//   issuer root not pinned ........................ NotFound
//   root outside its validity now ................. FailedPrecondition
//   list for another environment .................. PermissionDenied
//   signature does not verify (tag built from env) Unauthenticated
//   issued more than `max_skew_ms` in the future .. FailedPrecondition
//   now > valid_until (stale) ..................... Unavailable
absl::StatusOr<VerifiedRevocationList> VerifyRevocationList(std::string_view signed_list,
                                                            const TrustAnchors& anchors,
                                                            std::string_view env, int64_t now_ms,
                                                            int64_t max_skew_ms = 30'000);

}  // namespace chasqui
