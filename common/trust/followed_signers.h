#pragma once
// The certificates of those who sign control requests to a service (people, gateways), as a
// service follows them: one CertificateDirectory per environment verified against the pinned
// anchors, a certificate not held yet fetched from the crypto service on first sight, and the
// revocation lists followed (fetched at start, then chq.evt.crypto.revoked). Until a list has
// arrived, Lookup answers Unavailable (fail closed). Nothing is taken on the crypto service's
// word: the directory verifies everything it adds.

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/bus/bus.h"
#include "common/core/clock.h"
#include "common/trust/anchors.h"
#include "common/trust/crypto_client.h"
#include "common/trust/directory.h"

namespace chasqui {

class FollowedSigners final : public CertificateLookup {
 public:
  // `bus` and `clock` must outlive it. Replies from the crypto service come to
  // `<inbox_prefix>.*` (NatsServiceInboxPrefix(service, env) for a platform service). A list
  // that cannot be fetched at start is logged, not fatal.
  static absl::StatusOr<std::unique_ptr<FollowedSigners>> Start(
      Bus* bus, const TrustAnchors& anchors, const std::vector<std::string>& envs,
      std::string inbox_prefix, const Clock& clock);
  ~FollowedSigners() override;

  absl::StatusOr<std::shared_ptr<const VerifiedCertificate>> Lookup(
      std::string_view env, uint64_t serial, int64_t now_ms) const override;

 private:
  FollowedSigners() = default;
  std::unique_ptr<CryptoClient> crypto_;
  std::map<std::string, std::unique_ptr<CertificateDirectory>> directories_;
  std::vector<std::unique_ptr<Subscription>> watches_;
  std::unique_ptr<DirectoryLookup> lookup_;
};

}  // namespace chasqui
