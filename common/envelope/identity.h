#pragma once
// Who signs and seals: an identity is an entity's (or the router's) pair of keys with a serial.
// Until the trust issue brings certificates, the keys a process trusts come from a trust file.
//
// Key file (written by `chasqui keygen`, mode 0600; never logged):
//   {"version":1,"serial":N,"entity":"segip","env":"test","role":"entity",
//    "sign_pk":B64,"kx_pk":B64,"sign_sk":B64,"kx_sk":B64}
// Public file (`<entity>.pub`): the same without the secret fields.
// Trust file: {"version":1,"identities":[ <public entries> ]}

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "common/crypto/sodium.h"

namespace chasqui {

enum class Role { kEntity, kRouter };
std::string_view RoleName(Role role);

struct PublicIdentity {
  uint64_t serial = 0;
  std::string entity;  // entity id, or "router" for routers
  std::string env;
  Role role = Role::kEntity;
  SignPublicKey sign_pk{};
  KxPublicKey kx_pk{};
};

struct Identity {
  PublicIdentity pub;
  SigningKey sign;
  KxKey kx;
};

// A new identity with fresh keys and a random non-zero serial.
Identity GenerateIdentity(std::string entity, std::string env, Role role);

// Errors name the file, the field and what was expected (InvalidArgument), or say the file
// cannot be read (NotFound / PermissionDenied). A key file readable by group or others is
// refused (PermissionDenied).
absl::StatusOr<Identity> LoadIdentity(const std::string& path);
// Writes the key file with mode 0600 (refuses to overwrite: AlreadyExists).
absl::Status WriteIdentity(const std::string& path, const Identity& identity);

std::string PublicIdentityJson(const PublicIdentity& pub);
// Parses one public entry; `where` names it in errors (e.g. "trust.json: identities[2]").
absl::StatusOr<PublicIdentity> ParsePublicIdentity(std::string_view json, std::string_view where);

// The identities a process trusts, for one environment. Immutable after Load; thread-safe.
class TrustStore {
 public:
  static absl::StatusOr<TrustStore> Load(const std::string& path, std::string_view env);
  static TrustStore FromIdentities(std::vector<PublicIdentity> identities, std::string_view env);

  // nullptr if the serial is unknown or belongs to another environment.
  const PublicIdentity* BySerial(uint64_t serial) const;
  // The identity with `role` for `entity` in this environment; with several (a rotation, which
  // the trust issue brings), the one with the highest serial.
  const PublicIdentity* Find(std::string_view entity, Role role) const;
  const std::string& env() const { return env_; }
  size_t size() const { return by_serial_.size(); }

 private:
  std::string env_;
  absl::flat_hash_map<uint64_t, PublicIdentity> by_serial_;
  // (entity, role) -> the serial Find returns; kept so the hot path never scans.
  absl::flat_hash_map<std::pair<std::string, Role>, uint64_t> by_name_;
};

// A trust file holding the given public entries.
std::string TrustFileJson(const std::vector<PublicIdentity>& identities);

}  // namespace chasqui
