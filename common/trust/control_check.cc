#include "common/trust/control_check.h"

#include "absl/container/flat_hash_map.h"
#include "common/core/status.h"
#include "common/crypto/sodium.h"
#include "common/trust/signed_message.h"
#include "fmt/format.h"

namespace chasqui {

absl::StatusOr<v1::ControlRequest> ParseControlRequest(std::string_view bytes,
                                                       google::protobuf::MessageLite& body,
                                                       std::string_view what,
                                                       std::string_view body_name) {
  v1::ControlRequest req;
  if (!req.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())) ||
      !body.ParseFromString(req.body()) || req.signature().size() != 64) {
    return absl::InvalidArgumentError(fmt::format(
        "{}: not a ControlRequest carrying a {} and a 64-byte signature (truncated or garbage)",
        what, body_name));
  }
  return req;
}

absl::StatusOr<std::shared_ptr<const VerifiedCertificate>> VerifyControlSigner(
    const v1::ControlRequest& request, const ControlFields& f,
    const CertificateLookup& certificates, int64_t now_ms, int64_t window_ms,
    std::string_view what) {
  auto cert = certificates.Lookup(f.env, f.signer_serial, now_ms);
  if (!cert.ok()) {
    const absl::Status& s = cert.status();
    const std::string msg =
        fmt::format("{}: signer certificate {}: {}", what, f.signer_serial, MessageOf(s));
    if (absl::IsPermissionDenied(s) || absl::IsUnavailable(s)) {
      return absl::Status(s.code(), ToAbsl(msg));
    }
    return absl::UnauthenticatedError(msg);
  }
  CHASQUI_ASSIGN_OR_RETURN(SignatureBytes sig, ToArray<64>(request.signature(), "signature"));
  if (!VerifySignature((*cert)->sign_pk, SignedMessage(ControlTag(f.env), request.body()), sig)) {
    return absl::UnauthenticatedError(fmt::format(
        "{}: signature does not verify with certificate {}", what, (*cert)->serial));
  }
  if (f.sent_at_ms < now_ms - window_ms || f.sent_at_ms > now_ms + window_ms) {
    return absl::FailedPreconditionError(
        fmt::format("{}: sent_at {} is outside the ±{} ms window around {}", what, f.sent_at_ms,
                    window_ms, now_ms));
  }
  if (f.nonce.size() != 16) {
    return absl::InvalidArgumentError(fmt::format("{}: nonce must be 16 bytes", what));
  }
  return cert;
}

std::string NonceKey(uint64_t signer_serial, std::string_view nonce) {
  std::string key(8, '\0');
  for (int i = 7; i >= 0; --i, signer_serial >>= 8) key[i] = static_cast<char>(signer_serial & 0xff);
  return key.append(nonce);
}

absl::Status SeenNonces::Remember(const std::string& key, int64_t until_ms, int64_t now_ms,
                                  std::string_view what) {
  absl::MutexLock lock(&mu_);
  if (now_ms >= next_sweep_ms_) {
    absl::erase_if(until_, [now_ms](const auto& kv) { return kv.second < now_ms; });
    next_sweep_ms_ = now_ms + 1000;
  }
  auto [it, fresh] = until_.emplace(key, until_ms);
  if (!fresh && it->second >= now_ms) {
    return absl::AlreadyExistsError(fmt::format("{}: replayed (same signer and nonce)", what));
  }
  it->second = until_ms;
  return absl::OkStatus();
}

}  // namespace chasqui
