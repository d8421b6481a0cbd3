#pragma once
// The crypto service's logic (DESIGN.md, "Trust"): enrolment against one-time tokens,
// certificates, the revocation lists, timestamped signatures for other services and the
// transparency log, on a KvStore (RocksDB in the service, the same in tests) and an injected
// Clock. No bus here: CryptoService wires these calls to NATS subjects.
//
// Every state change is one synced KvBatch written before the call returns, so what was
// answered survives kill -9 (a spent token stays spent).
//
// Store layout (keys are bytes; be64 = 8-byte big-endian):
//   meta/current_root                 key id of the root that signs now
//   anchor/<be64 n>                   RootEndorsement, in the order they were made
//   tok/<hex BLAKE2b(token)>          EnrolmentTokenRecord (the token itself is never stored)
//   cert/<be64 serial>                Certificate
//   ent/<env>/<entity>/<be64 serial>  "" (index: certificates by entity)
//   log/<be64 sequence>               TransparencyLogEntry
//   rev/<env>                         the current SignedRevocationList of env
//
// Thread-safe: calls are serialised on one mutex (enrolments and revocations are rare).

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "chasqui/v1/crypto.pb.h"
#include "common/core/clock.h"
#include "common/crypto/sodium.h"
#include "common/store/kv_store.h"
#include "common/trust/anchors.h"

namespace chasqui {

struct AuthorityOptions {
  std::vector<std::string> envs = {"test", "prod"};
  int64_t certificate_validity_ms = 365LL * 86'400'000;
  int64_t revocation_validity_ms = 3'600'000;
  // Re-issue a list this long before its valid_until; negative = half the validity.
  int64_t reissue_before_ms = -1;
  // Control requests: sent_at within ±window, and no (signer, nonce) twice within it.
  int64_t control_window_ms = 30'000;
  // Tokens written by `chasqui-crypto token` while the service runs; imported before each
  // enrolment. Empty: none.
  std::string token_spool_dir;
};

// What `chasqui-crypto token` records. The token is 32 random bytes in hex, shown once.
struct IssuedToken {
  std::string token;
  v1::EnrolmentTokenRecord record;
};
// Validates the names and role (InvalidArgument) and makes a token expiring after `ttl_ms`.
// `subject` is the person's id for people; for gateways and services it must be empty or
// equal `entity`.
absl::StatusOr<IssuedToken> MakeEnrolmentToken(std::string_view entity, std::string_view subject,
                                               std::string_view role, std::string_view env,
                                               int64_t ttl_ms, const Clock& clock);
// Where a token's record lives: "tok/" + hex of BLAKE2b-256 over a tagged token.
std::string TokenKey(std::string_view token);
// Writes the record synced into `store` (offline, the service stopped).
absl::Status StoreToken(KvStore* store, const IssuedToken& token);
// Writes the record into the spool directory for a running service to import (mode 0600).
absl::Status SpoolToken(const std::string& spool_dir, const IssuedToken& token);

// Root bookkeeping for the ceremonies (`init`, `rotate-root`), with the service stopped.
absl::Status AppendEndorsement(KvStore* store, const v1::RootEndorsement& endorsement,
                               KvBatch* batch);
absl::StatusOr<std::vector<v1::RootEndorsement>> LoadEndorsements(KvStore* store);
// The anchors the endorsements establish: the first is self-signed, each later one is signed
// by a root already established. DataLoss if the stored chain does not hold.
absl::StatusOr<TrustAnchors> AnchorsFromEndorsements(
    const std::vector<v1::RootEndorsement>& endorsements, int64_t now_ms);
absl::StatusOr<std::string> CurrentRootId(KvStore* store);

class CertificateAuthority {
 public:
  struct EnvStats {
    std::string env;
    uint64_t revocation_version = 0;
    int64_t revocation_valid_until_ms = 0;
    size_t revoked = 0;
  };
  struct Stats {
    std::vector<EnvStats> envs;
    uint64_t log_size = 0;
    int64_t earliest_expiry_ms = 0;  // of certificates neither revoked nor expired; 0 if none
    int64_t root_not_after_ms = 0;
  };

  // `store` and `clock` must outlive the authority. `root` must be the store's current root
  // (FailedPrecondition otherwise). Issues a first revocation list for each env that has
  // none, and re-issues any list that is stale or signed by a previous root.
  static absl::StatusOr<std::unique_ptr<CertificateAuthority>> Open(
      const AuthorityOptions& options, KvStore* store, SigningKey root, const Clock& clock);

  // chq.ctl.crypto.enrol. Refusals (checked in this order):
  //   not an EnrolmentRequest, keys or signature of the wrong size ... InvalidArgument
  //   environment not served here .................................... InvalidArgument
  //   signature does not verify with the submitted sign_pk ........... Unauthenticated
  //   token not recognised ........................................... Unauthenticated
  //   token already used / expired ................................... PermissionDenied
  //   token issued for another env, role, entity or subject .......... PermissionDenied
  //   keys the role does not allow (a person with a kx key) .......... InvalidArgument
  // On success the certificate, its log entry and the spent token are written in one synced
  // batch before the reply is returned.
  absl::StatusOr<v1::EnrolmentReply> Enrol(std::string_view request);

  // chq.ctl.crypto.directory. InvalidArgument if it does not parse or names an env not
  // served. At most 1000 certificates and 500 log entries per answer; with `gateways`, the
  // env's unexpired gateway certificates in serial order from `from_serial`.
  absl::StatusOr<v1::DirectoryReply> Directory(std::string_view request);

  // chq.ctl.crypto.revoke: a ControlRequest with a RevokeAction from an operator. Refusals:
  //   malformed / wrong action / env not served ...................... InvalidArgument
  //   signer certificate unknown, not valid, or bad signature ........ Unauthenticated
  //   signer certificate revoked ..................................... PermissionDenied
  //   sent_at outside the window ..................................... FailedPrecondition
  //   replayed (same signer and nonce) ............................... AlreadyExists
  //   signer's role is not operator .................................. PermissionDenied
  //   a serial unknown in this env ................................... NotFound
  // Returns the new list (already stored, synced); the caller publishes it.
  absl::StatusOr<v1::SignedRevocationList> Revoke(std::string_view request);

  // chq.ctl.crypto.sign: a ControlRequest with a SignDigestAction; checkpoints only from
  // the audit service, annexes only from the catalog (PermissionDenied otherwise); the
  // digest must be 32 bytes (InvalidArgument). Other refusals as Revoke.
  absl::StatusOr<v1::SignedStatement> Sign(std::string_view request);

  // Re-issues (new version, same entries, signed and stored) each list due for it.
  absl::StatusOr<std::vector<v1::SignedRevocationList>> ReissueDue();
  std::vector<v1::SignedRevocationList> CurrentLists() const;

  absl::StatusOr<Stats> GetStats() const;
  const std::string& root_key_id() const { return root_key_id_; }
  TrustAnchors anchors() const;

 private:
  struct Signer;
  CertificateAuthority(const AuthorityOptions& options, KvStore* store, SigningKey root,
                       const Clock& clock);
  absl::Status ImportSpool() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<v1::SignedRevocationList> IssueList(std::string_view env,
                                                     const v1::RevocationListBody* previous,
                                                     const std::vector<v1::RevokedCertificate>& add)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<v1::RevocationListBody> ListBody(std::string_view env) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Parses and authenticates a control request; returns the body and the signer's role.
  absl::StatusOr<std::pair<v1::ControlBody, v1::CertificateRole>> CheckControl(
      std::string_view request) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Serves(std::string_view env) const;
  absl::StatusOr<uint64_t> NewSerial() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const AuthorityOptions options_;
  KvStore* const store_;
  const SigningKey root_;
  const std::string root_key_id_;
  const Clock& clock_;
  mutable absl::Mutex mu_;
  TrustAnchors anchors_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, v1::SignedRevocationList> lists_ ABSL_GUARDED_BY(mu_);
  uint64_t log_size_ ABSL_GUARDED_BY(mu_) = 0;
  std::string log_head_ ABSL_GUARDED_BY(mu_);  // entry_hash of the last entry
  // (signer serial || nonce) -> when it may be forgotten.
  absl::flat_hash_map<std::string, int64_t> seen_controls_ ABSL_GUARDED_BY(mu_);
};

}  // namespace chasqui
