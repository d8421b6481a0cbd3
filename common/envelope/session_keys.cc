#include "common/envelope/session_keys.h"

namespace chasqui {

absl::StatusOr<std::shared_ptr<const SessionKeys>> SessionKeyCache::For(const KxPublicKey& peer) {
  {
    absl::MutexLock lock(&mu_);
    if (auto it = keys_.find(peer); it != keys_.end()) return it->second;
  }
  auto keys = side_ == Side::kClient ? ClientSessionKeys(own_, peer) : ServerSessionKeys(own_, peer);
  if (!keys.ok()) return keys.status();
  auto shared = std::make_shared<const SessionKeys>(*std::move(keys));
  absl::MutexLock lock(&mu_);
  return keys_.try_emplace(peer, std::move(shared)).first->second;
}

}  // namespace chasqui
