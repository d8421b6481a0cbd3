#include "services/audit/checkpoint_signer.h"

#include "common/core/status.h"
#include "fmt/format.h"
#include "services/audit/audit_schema.h"

namespace chasqui::audit {

absl::StatusOr<std::unique_ptr<LocalCheckpointSigner>> LocalCheckpointSigner::Load(
    const std::string& path, const std::string& env) {
  CHASQUI_ASSIGN_OR_RETURN(Identity identity, LoadIdentity(path));
  if (identity.pub.env != env) {
    return absl::InvalidArgumentError(fmt::format(
        "checkpoint key {}: holds a key for env {}; expected {}", path, identity.pub.env, env));
  }
  return std::make_unique<LocalCheckpointSigner>(std::move(identity));
}

absl::Status LocalCheckpointSigner::Sign(v1::Checkpoint& checkpoint) {
  checkpoint.set_signer_serial(identity_.pub.serial);
  const SignatureBytes sig =
      identity_.sign.Sign(CheckpointSignedBytes(checkpoint.env(), checkpoint));
  checkpoint.set_signature(sig.data(), sig.size());
  return absl::OkStatus();
}

absl::Status VerifyCheckpoint(const v1::Checkpoint& checkpoint, const PublicIdentity& signer,
                              std::string_view env) {
  if (checkpoint.signer_serial() != signer.serial) {
    return absl::InvalidArgumentError(fmt::format("checkpoint at seq {}: signed by serial {}, not {}",
                                                  checkpoint.seq(), checkpoint.signer_serial(),
                                                  signer.serial));
  }
  auto sig = ToArray<64>(checkpoint.signature(), "checkpoint signature");
  if (!sig.ok()) return sig.status();
  if (!VerifySignature(signer.sign_pk, CheckpointSignedBytes(env, checkpoint), *sig)) {
    return absl::InvalidArgumentError(
        fmt::format("checkpoint at seq {}: bad signature for env {}", checkpoint.seq(), env));
  }
  return absl::OkStatus();
}

}  // namespace chasqui::audit
