#pragma once
// Who signs the chain head. One function, so the crypto service's signing API can replace the
// local key later (DESIGN.md: "the crypto service signs the chain head").

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "chasqui/v1/audit.pb.h"
#include "common/envelope/identity.h"

namespace chasqui::audit {

class CheckpointSigner {
 public:
  virtual ~CheckpointSigner() = default;
  // Fills checkpoint.signer_serial and checkpoint.signature over
  // CheckpointSignedBytes(checkpoint.env(), checkpoint). Thread-safe. Unavailable when the
  // signer cannot be reached (a remote one); the chain then retries at the next round.
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

// OK if `checkpoint` carries a valid signature by `signer` for `env` (the caller's env, never
// the message's). InvalidArgument naming what does not match otherwise.
absl::Status VerifyCheckpoint(const v1::Checkpoint& checkpoint, const PublicIdentity& signer,
                              std::string_view env);

}  // namespace chasqui::audit
