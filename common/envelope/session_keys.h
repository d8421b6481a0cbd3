#pragma once
// Per-direction session keys, computed once per pair of public keys (DESIGN.md: crypto_kx,
// consumer = client, provider = server). Thread-safe.

#include <memory>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/crypto/sodium.h"

namespace chasqui {

class SessionKeyCache {
 public:
  enum class Side { kClient, kServer };
  // `own` must outlive the cache.
  SessionKeyCache(const KxKey& own, Side side) : own_(own), side_(side) {}

  // The keys shared with `peer`. The pointer stays valid for the cache's life.
  absl::StatusOr<std::shared_ptr<const SessionKeys>> For(const KxPublicKey& peer);

 private:
  const KxKey& own_;
  const Side side_;
  absl::Mutex mu_;
  absl::flat_hash_map<KxPublicKey, std::shared_ptr<const SessionKeys>> keys_ ABSL_GUARDED_BY(mu_);
};

}  // namespace chasqui
