#pragma once
// Verifying batch signatures, with the verified-root cache that makes a batch of n cost one
// Ed25519 verify (DESIGN.md, "The envelope").

#include <cstdint>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "common/core/clock.h"
#include "common/envelope/envelope.h"
#include "common/envelope/identity.h"

namespace chasqui {

// Verified roots keyed by (signer serial, tree size, root); one cache serves one environment. A
// hit counts only if the signature bytes are the ones that were verified. The tree size is in
// the key because the signature covers it and one root can be reached under several sizes.
// Entries leave after `ttl_ms` (the freshness window: older envelopes are refused anyway) or
// when the signer is forgotten (revocation). Thread-safe.
class RootCache {
 public:
  RootCache(const Clock& clock, int64_t ttl_ms, size_t max_entries = 1 << 16);

  bool Contains(uint64_t serial, uint32_t tree_size, const Hash32& root, const SignatureBytes& sig);
  void Insert(uint64_t serial, uint32_t tree_size, const Hash32& root, const SignatureBytes& sig);
  void ForgetSigner(uint64_t serial);

  uint64_t hits() const;
  uint64_t misses() const;

 private:
  struct Key {
    uint64_t serial;
    uint32_t tree_size;
    Hash32 root;
    bool operator==(const Key&) const = default;
    template <typename H>
    friend H AbslHashValue(H h, const Key& k) {
      return H::combine(std::move(h), k.serial, k.tree_size, k.root);
    }
  };
  using Map = absl::flat_hash_map<Key, SignatureBytes, absl::Hash<Key>>;
  void MaybeRotateLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Clock& clock_;
  const int64_t ttl_ms_;
  const size_t max_entries_;
  mutable absl::Mutex mu_;
  // Two generations: entries move out of `current_` to `previous_` and then away. `previous_`
  // is dropped once its oldest possible entry is ttl_ms old, so each lives at most ttl_ms
  // however sparse the calls that rotate them.
  Map current_ ABSL_GUARDED_BY(mu_);
  Map previous_ ABSL_GUARDED_BY(mu_);
  int64_t current_since_ms_ ABSL_GUARDED_BY(mu_);
  int64_t previous_since_ms_ ABSL_GUARDED_BY(mu_);
  uint64_t hits_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t misses_ ABSL_GUARDED_BY(mu_) = 0;
};

class EnvelopeVerifier {
 public:
  // `env` is this process's own environment: the tag is built from it, never from the message.
  EnvelopeVerifier(std::string_view env, RootCache* cache);

  // UNAUTHENTICATED unless the header is for this environment, its batch signature verifies
  // under `signer`'s key (and header.sender_cert names `signer`), and the body matches the
  // signed body_hash.
  // `cache_hit`, if given, says whether the batch's root was already verified (no Ed25519).
  absl::Status Verify(const ParsedEnvelope& p, const PublicIdentity& signer,
                      bool* cache_hit = nullptr) const;

 private:
  const std::string env_;
  const std::string tag_;
  RootCache* cache_;
};

}  // namespace chasqui
