#pragma once
// Where a gateway (Consumer, Provider) or a router gets the keys it trusts: a trust file that
// never changes (FixedTrust), or certificates from the crypto service whose snapshot changes
// while the process runs (CertificateTrust in certificate_trust.h).

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/envelope/identity.h"

namespace chasqui {

// Each request takes one snapshot (Current()) and uses it throughout, so a swap in the middle
// of a request is never seen half done. Thread-safe.
class TrustSource {
 public:
  virtual ~TrustSource() = default;
  virtual const std::string& env() const = 0;
  // The snapshot to use now, or Unavailable saying why traffic must be refused (fail closed:
  // a stale revocation list). Called once per request: a short lock at most.
  virtual absl::StatusOr<std::shared_ptr<const TrustStore>> Current() const = 0;
  // True if FetchEntity/FetchSerial may ask someone over the network (and so block): a router
  // then calls them off its delivery thread. False: they only return Current().
  virtual bool fetches() const { return false; }
  // Called when the snapshot has no gateway key of `entity` (a provider not called yet): may
  // fetch it and swap a new snapshot in. The result may still lack it. Blocks the caller for at
  // most the source's fetch timeout.
  virtual absl::StatusOr<std::shared_ptr<const TrustStore>> FetchEntity(std::string_view entity);
  // Likewise for the certificate serial a peer signed with. A non-OK status says why that
  // serial is refused (revoked: PermissionDenied; expired: FailedPrecondition; unknown:
  // NotFound) or that traffic is refused altogether (Unavailable).
  virtual absl::StatusOr<std::shared_ptr<const TrustStore>> FetchSerial(uint64_t serial);
  // Several serials at once (a router's fetch worker): those not held and not asked for within
  // the source's backoff go in one directory request. Returns the snapshot after it; the
  // caller checks each serial in it (and asks FetchSerial why one is still missing: that does
  // not ask again within the backoff).
  virtual absl::StatusOr<std::shared_ptr<const TrustStore>> FetchSerials(
      const std::vector<uint64_t>& serials);
};

// A TrustSource over one TrustStore that never changes (a trust file).
std::shared_ptr<TrustSource> FixedTrust(TrustStore store);

}  // namespace chasqui
