#pragma once
// Who may read the audit trail (issue 6, "Reading it"). Queries and reports arrive as signed
// control requests (an AuditControlBody in a ControlRequest, common/trust/requests.h); the
// signer's certificate decides what it may read, and the request is narrowed to that:
//   an operator (person, role operator) .......... everything
//   an entity: its gateway (role entity), its MAE or managers (people of that entity)
//                                                   records where it is the consumer or the
//                                                   provider
//   anyone else (platform services' keys) ......... refused, PermissionDenied (FORBIDDEN)
// Narrowing an entity E's request, whose filters say consumer C and provider P:
//   C == E or P == E ..... as asked (its own consumption, or the consumption of its services)
//   C empty .............. consumer := E (its own consumption, with P if asked)
//   P empty .............. provider := E (what C consumed of E's services)
//   otherwise ............ PermissionDenied naming the rule.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "chasqui/v1/audit.pb.h"
#include "chasqui/v1/crypto.pb.h"
#include "common/core/clock.h"
#include "common/crypto/sodium.h"
#include "common/store/kv_store.h"
#include "common/trust/certificate.h"
#include "common/trust/control_check.h"
#include "common/trust/directory.h"

namespace chasqui::audit {

struct AuditAccessOptions {
  int64_t control_window_ms = 30'000;  // sent_at within ±window; nonces kept twice as long
  // Where the seen (signer, nonce) pairs are kept with their expiry (n/ keys, synced before
  // the read is answered), so a signed read cannot be replayed after a restart either. Null:
  // in memory only.
  KvStore* nonce_store = nullptr;
};

// Requesters' side: a query or report request signed with `key`, the key of certificate
// `signer_serial` in `env`.
v1::ControlRequest MakeAuditRequest(v1::AuditControlBody body, std::string_view env,
                                    uint64_t signer_serial, const SigningKey& key,
                                    int64_t now_ms);

// What a reader may see, from its certificate.
struct AuditReader {
  uint64_t serial = 0;
  bool all = false;     // an operator
  std::string entity;   // the entity whose records it reads (when !all)
};
// PermissionDenied (naming the rule) for certificates that read nothing.
absl::StatusOr<AuditReader> ReaderOf(const VerifiedCertificate& cert);
// Narrows `consumer`/`provider` as the header says. PermissionDenied naming the rule.
absl::Status Narrow(const AuditReader& reader, std::string* consumer, std::string* provider);

class AuditAccess {
 public:
  // `signers` (may be null: every request is then refused Unavailable) and `clock` must
  // outlive it.
  AuditAccess(AuditAccessOptions options, const CertificateLookup* signers, const Clock& clock)
      : options_(options), signers_(signers), clock_(clock) {}

  struct Checked {
    v1::AuditControlBody body;
    AuditReader reader;
  };
  // Verifies a signed request for `verb` ("query" or "report") and narrows its filters.
  // Refusals, in the order checked, each naming the fault:
  //   not a ControlRequest / AuditControlBody / 64-byte signature . InvalidArgument
  //   no signers configured (started without --anchors) ........... Unavailable
  //   VerifyControlSigner's (Unauthenticated, PermissionDenied for a revoked certificate,
  //   Unavailable, FailedPrecondition for the time window, InvalidArgument for the nonce)
  //   replayed (same signer and nonce) ............................ AlreadyExists
  //   action is not the verb's .................................... InvalidArgument
  //   signer may not read that ..................................... PermissionDenied
  // Thread-safe.
  absl::StatusOr<Checked> Check(std::string_view verb, std::string_view request);

 private:
  // AlreadyExists if `key` was seen and has not expired; else remembers it until `until_ms`.
  absl::Status RememberNonce(const std::string& key, int64_t until_ms, int64_t now_ms,
                             std::string_view verb);

  const AuditAccessOptions options_;
  const CertificateLookup* const signers_;
  const Clock& clock_;
  SeenNonces nonces_;
  absl::Mutex nonce_mu_;  // one check-and-write at a time in the store
  int64_t next_sweep_ms_ ABSL_GUARDED_BY(nonce_mu_) = 0;
};

}  // namespace chasqui::audit
