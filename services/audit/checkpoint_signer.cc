#include "services/audit/checkpoint_signer.h"

#include "common/core/log.h"
#include "common/core/status.h"
#include "common/trust/crypto_client.h"
#include "common/trust/requests.h"
#include "common/trust/statement.h"
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

RemoteCheckpointSigner::RemoteCheckpointSigner(Identity identity, TrustAnchors anchors,
                                               const Clock& clock)
    : identity_(std::move(identity)), anchors_(std::move(anchors)), clock_(clock) {}

RemoteCheckpointSigner::~RemoteCheckpointSigner() = default;

absl::StatusOr<std::unique_ptr<RemoteCheckpointSigner>> RemoteCheckpointSigner::Create(
    Bus* bus, std::string inbox_prefix, Identity identity, TrustAnchors anchors,
    absl::Duration timeout, const Clock& clock) {
  if (identity.pub.role != Role::kAudit || identity.pub.serial == 0) {
    return absl::InvalidArgumentError(
        "checkpoint signer: the crypto service signs checkpoints only for an enrolled audit key "
        "(give its certificate)");
  }
  std::unique_ptr<RemoteCheckpointSigner> s(
      new RemoteCheckpointSigner(std::move(identity), std::move(anchors), clock));
  CHASQUI_ASSIGN_OR_RETURN(s->client_,
                           CryptoClient::Create(bus, std::move(inbox_prefix), timeout));
  return s;
}

absl::Status RemoteCheckpointSigner::Sign(v1::Checkpoint& checkpoint) {
  const Hash32 digest = CheckpointDigest(checkpoint.env(), checkpoint);
  v1::ControlBody body;
  body.mutable_sign()->set_kind(v1::STATEMENT_KIND_CHECKPOINT);
  body.mutable_sign()->set_digest(std::string(AsView(digest)));
  const v1::ControlRequest request =
      MakeControlRequest(std::move(body), checkpoint.env(), identity_.pub.serial, identity_.sign,
                         clock_.NowUnixMillis());
  auto reply = client_->Sign(request);
  if (!reply.ok()) {
    if (absl::IsDeadlineExceeded(reply.status())) {
      return absl::UnavailableError(
          fmt::format("crypto service: {}", MessageOf(reply.status())));
    }
    return reply.status();
  }
  v1::Checkpoint signed_cp = checkpoint;
  signed_cp.set_signer_serial(identity_.pub.serial);
  signed_cp.clear_signature();
  signed_cp.set_statement(reply->statement().SerializeAsString());
  if (absl::Status s = VerifyCryptoCheckpoint(signed_cp, anchors_, checkpoint.env()); !s.ok()) {
    return absl::Status(s.code(), ToAbsl(fmt::format(
        "the crypto service's checkpoint statement does not verify: {}", MessageOf(s))));
  }
  checkpoint = std::move(signed_cp);
  return absl::OkStatus();
}

absl::Status VerifyCryptoCheckpoint(const v1::Checkpoint& checkpoint, const TrustAnchors& anchors,
                                    std::string_view env) {
  if (checkpoint.statement().empty()) {
    return absl::InvalidArgumentError(
        fmt::format("checkpoint at seq {}: no crypto service statement", checkpoint.seq()));
  }
  auto v = VerifyStatement(checkpoint.statement(), v1::STATEMENT_KIND_CHECKPOINT, anchors, env);
  if (!v.ok()) {
    return absl::Status(v.status().code(),
                        ToAbsl(fmt::format("checkpoint at seq {}: {}", checkpoint.seq(),
                                           MessageOf(v.status()))));
  }
  const Hash32 digest = CheckpointDigest(env, checkpoint);
  if (digest != v->digest) {
    return absl::InvalidArgumentError(fmt::format(
        "checkpoint at seq {}: the crypto service's statement signs another head",
        checkpoint.seq()));
  }
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
