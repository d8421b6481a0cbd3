#pragma once
// Digests signed with a timestamp by the crypto service for other services (DESIGN.md,
// "State and scale": audit checkpoints; the catalog's adhesion annexes). Archived statements
// keep verifying after a root rotation: the root must have been valid when it signed.

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "chasqui/v1/crypto.pb.h"
#include "common/crypto/sodium.h"
#include "common/trust/anchors.h"

namespace chasqui {

struct VerifiedStatement {
  v1::StatementKind kind = v1::STATEMENT_KIND_UNSPECIFIED;
  std::string env;
  Hash32 digest{};
  int64_t signed_at_ms = 0;
  std::string issuer_key_id;
  uint64_t requester_serial = 0;
};

// Issuer side: signs under StatementTag(body.kind(), body.env()).
v1::SignedStatement SignStatement(const v1::StatementBody& body, const SigningKey& root);

// Verifies a statement of `kind` for `env`:
//   not a SignedStatement / malformed body / digest not 32 bytes ... InvalidArgument
//   issuer root not pinned ......................................... NotFound
//   root not valid at signed_at .................................... FailedPrecondition
//   another environment or another kind ............................ PermissionDenied
//   signature does not verify (tag from `kind` and `env`) .......... Unauthenticated
absl::StatusOr<VerifiedStatement> VerifyStatement(std::string_view signed_statement,
                                                  v1::StatementKind kind,
                                                  const TrustAnchors& anchors,
                                                  std::string_view env);

}  // namespace chasqui
