#pragma once
// The receiving side of signed control requests (common/trust/requests.h builds them): a
// ControlRequest whose body is any service's control body (crypto's ControlBody,
// CatalogControlBody, QuotaControlBody, AuditControlBody), fields 1-4 the same in all of them:
// env, signer_serial, sent_at_ms, nonce. One check for the catalog, quota and audit services;
// what each signer may do, and where each service remembers nonces, stays with the service.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "chasqui/v1/crypto.pb.h"
#include "google/protobuf/message_lite.h"
#include "common/trust/certificate.h"
#include "common/trust/directory.h"

namespace chasqui {

// The signed fields every control body carries.
struct ControlFields {
  std::string_view env;
  uint64_t signer_serial = 0;
  int64_t sent_at_ms = 0;
  std::string_view nonce;
};

template <class Body>
ControlFields ControlFieldsOf(const Body& body) {
  return ControlFields{body.env(), body.signer_serial(), body.sent_at_ms(), body.nonce()};
}

// Parses `bytes` as a ControlRequest carrying `body` (`body_name` in the message) and a 64-byte
// signature; InvalidArgument "<what>: not a ControlRequest carrying a <body_name> and a 64-byte
// signature (truncated or garbage)" otherwise.
absl::StatusOr<v1::ControlRequest> ParseControlRequest(std::string_view bytes,
                                                       google::protobuf::MessageLite& body,
                                                       std::string_view what,
                                                       std::string_view body_name);

// Checks, in this order, each refusal naming `what` (a verb or "control request") first:
//   signer certificate unknown / expired / not valid here .. Unauthenticated
//   signer certificate revoked ............................. PermissionDenied
//   revocation list missing or stale ....................... Unavailable
//   signature does not verify under ControlTag(env) ........ Unauthenticated
//   sent_at outside ±window_ms around now_ms ................ FailedPrecondition
//   nonce not 16 bytes ..................................... InvalidArgument
// and returns the signer's certificate. Replays (the same signer and nonce) are the caller's
// to refuse, with its own memory of nonces (SeenNonces, or one kept in its store).
absl::StatusOr<std::shared_ptr<const VerifiedCertificate>> VerifyControlSigner(
    const v1::ControlRequest& request, const ControlFields& fields,
    const CertificateLookup& certificates, int64_t now_ms, int64_t window_ms,
    std::string_view what);

// The key a (signer, nonce) pair is remembered under.
std::string NonceKey(uint64_t signer_serial, std::string_view nonce);

// Nonces seen within their window, in memory (a read-only verb whose replay changes nothing
// can afford to forget them on restart). Thread-safe.
class SeenNonces {
 public:
  // AlreadyExists ("replayed (same signer and nonce)") if `key` is held and not expired at
  // `now_ms`; otherwise remembers it until `until_ms`. Expired entries are dropped on the way.
  absl::Status Remember(const std::string& key, int64_t until_ms, int64_t now_ms,
                        std::string_view what);

 private:
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, int64_t> until_ ABSL_GUARDED_BY(mu_);
  int64_t next_sweep_ms_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace chasqui
