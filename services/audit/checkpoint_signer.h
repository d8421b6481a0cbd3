#pragma once
// Who signs the chain head (DESIGN.md: "the crypto service signs the chain head"): the crypto
// service over chq.ctl.crypto.sign (RemoteCheckpointSigner, `serve --checkpoint-signer
// crypto`), or the audit service's own key (LocalCheckpointSigner, for tests and the bench).

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "chasqui/v1/audit.pb.h"
#include "absl/time/time.h"
#include "common/bus/bus.h"
#include "common/core/clock.h"
#include "common/envelope/identity.h"
#include "common/trust/anchors.h"
#include "common/trust/crypto_client.h"

namespace chasqui::audit {

class CheckpointSigner {
 public:
  virtual ~CheckpointSigner() = default;
  // Fills checkpoint.signer_serial and checkpoint.signature over
  // CheckpointSignedBytes(checkpoint.env(), checkpoint). Thread-safe. May block (a remote
  // signer up to its timeout): AuditChain calls it from a thread of its own, one call at a
  // time, with a head that is already durable, and keeps acknowledging records meanwhile.
  // Unavailable when the signer cannot be reached (a remote one); the chain then retries after
  // its checkpoint_retry_ms.
  virtual absl::Status Sign(v1::Checkpoint& checkpoint) = 0;
};

// Signs with a local Ed25519 key (the key file of `chasqui keygen`, read with LoadIdentity).
// The key stays in locked memory; the signer holds it for its lifetime.
class LocalCheckpointSigner final : public CheckpointSigner {
 public:
  explicit LocalCheckpointSigner(Identity identity) : identity_(std::move(identity)) {}
  // LoadIdentity's errors; InvalidArgument if the key is for another environment.
  static absl::StatusOr<std::unique_ptr<LocalCheckpointSigner>> Load(const std::string& path,
                                                                     const std::string& env);
  absl::Status Sign(v1::Checkpoint& checkpoint) override;
  const PublicIdentity& pub() const { return identity_.pub; }

 private:
  const Identity identity_;
};

// Asks the crypto service to sign the checkpoint's digest (CheckpointDigest) as a timestamped
// statement of kind CHECKPOINT, with a control request signed by the audit service's enrolled
// key (role audit). The statement is verified against `anchors` before it is accepted, so a
// checkpoint is never stored with a signature that would fail `verify`. Fills
// checkpoint.statement and signer_serial (the audit certificate); signature stays empty.
// Sign: Unavailable when no crypto service answers within the timeout (or none listens), the
// crypto service's refusal otherwise. It blocks for up to the timeout, but only the chain's
// signer thread: group commits and acknowledgements go on, and the chain retries later.
// Thread-safe (one request at a time).
class RemoteCheckpointSigner final : public CheckpointSigner {
 public:
  // `bus` and `clock` must outlive the signer; `identity` is the audit key bound to its
  // certificate (LoadIdentity(key, cert)); replies come under `inbox_prefix`.
  static absl::StatusOr<std::unique_ptr<RemoteCheckpointSigner>> Create(
      Bus* bus, std::string inbox_prefix, Identity identity, TrustAnchors anchors,
      absl::Duration timeout, const Clock& clock = SystemClock());
  ~RemoteCheckpointSigner() override;
  absl::Status Sign(v1::Checkpoint& checkpoint) override;

 private:
  RemoteCheckpointSigner(Identity identity, TrustAnchors anchors, const Clock& clock);
  const Identity identity_;
  const TrustAnchors anchors_;
  const Clock& clock_;
  std::unique_ptr<CryptoClient> client_;
};

// OK if `checkpoint`'s statement is a CHECKPOINT statement for `env` by a root in `anchors`
// (valid when it signed) over CheckpointDigest(env, checkpoint). VerifyStatement's errors, or
// InvalidArgument when the digest is another checkpoint's or there is no statement.
absl::Status VerifyCryptoCheckpoint(const v1::Checkpoint& checkpoint, const TrustAnchors& anchors,
                                    std::string_view env);

// OK if `checkpoint` carries a valid signature by `signer` for `env` (the caller's env, never
// the message's). InvalidArgument naming what does not match otherwise.
absl::Status VerifyCheckpoint(const v1::Checkpoint& checkpoint, const PublicIdentity& signer,
                              std::string_view env);

}  // namespace chasqui::audit
