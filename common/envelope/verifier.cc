#include "common/envelope/verifier.h"

#include <sodium.h>

#include <vector>

#include "common/envelope/errors.h"

namespace chasqui {

RootCache::RootCache(const Clock& clock, int64_t ttl_ms, size_t max_entries)
    : clock_(clock),
      ttl_ms_(ttl_ms),
      max_entries_(max_entries),
      current_since_ms_(clock.NowUnixMillis()),
      previous_since_ms_(current_since_ms_) {}

void RootCache::MaybeRotateLocked() {
  const int64_t now = clock_.NowUnixMillis();
  if (now - current_since_ms_ >= ttl_ms_ / 2 || current_.size() >= max_entries_ / 2) {
    previous_ = std::move(current_);
    previous_since_ms_ = current_since_ms_;
    current_ = Map();
    current_since_ms_ = now;
  }
  // Everything in previous_ was inserted at or after previous_since_ms_.
  if (now - previous_since_ms_ >= ttl_ms_) previous_.clear();
}

bool RootCache::Contains(uint64_t serial, uint32_t tree_size, const Hash32& root,
                         const SignatureBytes& sig) {
  absl::MutexLock lock(&mu_);
  MaybeRotateLocked();
  const Key key{serial, tree_size, root};
  for (const Map* m : {&current_, &previous_}) {
    auto it = m->find(key);
    if (it != m->end() && sodium_memcmp(it->second.data(), sig.data(), sig.size()) == 0) {
      ++hits_;
      return true;
    }
  }
  ++misses_;
  return false;
}

void RootCache::Insert(uint64_t serial, uint32_t tree_size, const Hash32& root,
                       const SignatureBytes& sig) {
  absl::MutexLock lock(&mu_);
  MaybeRotateLocked();
  current_.insert_or_assign(Key{serial, tree_size, root}, sig);
}

void RootCache::ForgetSigner(uint64_t serial) {
  absl::MutexLock lock(&mu_);
  for (Map* m : {&current_, &previous_}) {
    absl::erase_if(*m, [serial](const auto& kv) { return kv.first.serial == serial; });
  }
}

uint64_t RootCache::hits() const {
  absl::MutexLock lock(&mu_);
  return hits_;
}

uint64_t RootCache::misses() const {
  absl::MutexLock lock(&mu_);
  return misses_;
}

EnvelopeVerifier::EnvelopeVerifier(std::string_view env, RootCache* cache)
    : env_(env), tag_(EnvelopeTag(env)), cache_(cache) {}

absl::Status EnvelopeVerifier::Verify(const ParsedEnvelope& p, const PublicIdentity& signer,
                                      bool* cache_hit) const {
  if (p.header.env() != env_) {
    return ChasquiError(v1::UNAUTHENTICATED, "the header is for another environment");
  }
  if (p.header.sender_cert() != signer.serial) {
    return ChasquiError(v1::UNAUTHENTICATED, "sender_cert does not name the expected signer");
  }
  const v1::Signature& s = p.envelope.sig();
  std::vector<Hash32> path;
  path.reserve(s.path_size());
  for (const std::string& node : s.path()) {
    Hash32 h;
    std::copy(node.begin(), node.end(), reinterpret_cast<char*>(h.data()));  // 32 by ParseEnvelope
    path.push_back(h);
  }
  auto root = RootFromPath(LeafHash(p.envelope.header()), s.leaf_index(), s.tree_size(), path);
  if (!root) {
    return ChasquiError(v1::UNAUTHENTICATED, "signature path does not fit its tree");
  }
  SignatureBytes sig;
  std::copy(s.root_signature().begin(), s.root_signature().end(),
            reinterpret_cast<char*>(sig.data()));
  const bool hit = cache_->Contains(signer.serial, s.tree_size(), *root, sig);
  if (cache_hit != nullptr) *cache_hit = hit;
  if (!hit) {
    if (!VerifySignature(signer.sign_pk, BatchSignedMessage(tag_, s.tree_size(), *root), sig)) {
      return ChasquiError(v1::UNAUTHENTICATED,
                          "bad signature: the header was altered, or signed by another key or "
                          "for another environment");
    }
    cache_->Insert(signer.serial, s.tree_size(), *root, sig);
  }
  const Hash32 body_hash = Blake2b256(p.envelope.body());
  if (sodium_memcmp(body_hash.data(), p.header.body_hash().data(), kHashBytes) != 0) {
    return ChasquiError(v1::UNAUTHENTICATED, "the body does not match the signed body_hash");
  }
  return absl::OkStatus();
}

}  // namespace chasqui
