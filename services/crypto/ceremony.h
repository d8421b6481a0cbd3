#pragma once
// The root key ceremonies (DESIGN.md, "Trust"), run with the service stopped: `init` creates
// the first root; `rotate-root` creates the next one, endorsed by the old root, and shortens
// the old root's validity to the overlap, so both are accepted meanwhile and only the new one
// afterwards.
//
// Data directory (mode 0700):
//   root-<key_id>.key   each root, encrypted under its passphrase (root_key.h), mode 0600
//   roots.json          the public anchor file to pin on every router and gateway
//   db/                 RocksDB (authority.h's layout)
//   token-spool/        tokens issued while the service runs, imported by it

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "common/core/clock.h"
#include "common/store/kv_store.h"
#include "common/trust/anchors.h"
#include "services/crypto/root_key.h"

namespace chasqui {

std::string RootKeyPath(const std::string& data_dir, const std::string& key_id);
std::string DbPath(const std::string& data_dir);
std::string AnchorsPath(const std::string& data_dir);
std::string TokenSpoolDir(const std::string& data_dir);

struct CeremonyResult {
  TrustAnchor root;          // the new root
  TrustAnchors anchors;      // every root now accepted (what roots.json holds)
  std::string key_file;
  std::string anchors_file;
};

// AlreadyExists if the directory already has a root; Unavailable if its store is in use.
absl::StatusOr<CeremonyResult> InitRoot(const std::string& data_dir, const Passphrase& passphrase,
                                        KdfCost cost, int64_t validity_ms, const Clock& clock);

// Decrypts the current root with `old_passphrase` (PermissionDenied if wrong), makes a new
// root under `new_passphrase`, valid from now for `validity_ms`; the old root stays valid
// for `overlap_ms` more (never longer than it already was). Unavailable if the service runs.
absl::StatusOr<CeremonyResult> RotateRoot(const std::string& data_dir,
                                          const Passphrase& old_passphrase,
                                          const Passphrase& new_passphrase, KdfCost cost,
                                          int64_t validity_ms, int64_t overlap_ms,
                                          const Clock& clock);

// The current root, decrypted (for `serve`).
absl::StatusOr<SigningKey> LoadCurrentRoot(const std::string& data_dir, KvStore* store,
                                           const Passphrase& passphrase);

// Opens the data directory's store; Unavailable (saying the service may be running) if held.
absl::StatusOr<std::unique_ptr<KvStore>> OpenAuthorityStore(const std::string& data_dir);

}  // namespace chasqui
