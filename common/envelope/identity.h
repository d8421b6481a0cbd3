#pragma once
// Who signs and seals: an identity is an entity's (or a platform service's, or a person's) pair
// of keys with a serial. The keys a process trusts come from a trust file, or from certificates
// issued by the crypto service (common/trust builds a TrustStore from those).
//
// Key file (written by `chasqui keygen`, mode 0600; never logged):
//   {"version":1,"serial":N,"entity":"segip","env":"test","role":"entity",
//    "sign_pk":B64,"kx_pk":B64,"sign_sk":B64,"kx_sk":B64}
// A person's key file (roles mae, manager, operator) has no kx_pk/kx_sk: a person's key never
// seals traffic. Once enrolled, the certificate's serial replaces the key file's own (see
// LoadIdentity(key, cert)).
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

// The roles of chasqui/v1/crypto.proto's CertificateRole, with the same names. kEntity is an
// entity's gateway; kRouter..kAudit platform services; kMae..kOperator people.
enum class Role { kEntity, kRouter, kCatalog, kCrypto, kQuota, kAudit, kMae, kManager, kOperator };
std::string_view RoleName(Role role);
// InvalidArgument listing the accepted names.
absl::StatusOr<Role> ParseRole(std::string_view name);
// People (mae, manager, operator) have no kx key.
bool IsPersonRole(Role role);
// Platform services: router, catalog, crypto, quota, audit.
bool IsServiceRole(Role role);

struct PublicIdentity {
  uint64_t serial = 0;
  std::string entity;  // entity id, or "router" for routers
  std::string env;
  Role role = Role::kEntity;
  SignPublicKey sign_pk{};
  KxPublicKey kx_pk{};  // all zero for people (has_kx false)
  bool has_kx = true;   // false exactly for people
  // From a certificate: when it became valid (Unix ms). 0 for a trust file's entries.
  int64_t not_before_ms = 0;
};

struct Identity {
  PublicIdentity pub;
  SigningKey sign;
  // For people (pub.has_kx false) a throwaway key that is never written, sent or used: the
  // type has no empty state, and a person's key never seals.
  KxKey kx;
};

// A new identity with fresh keys and a random non-zero serial.
Identity GenerateIdentity(std::string entity, std::string env, Role role);

// Errors name the file, the field and what was expected (InvalidArgument), or say the file
// cannot be read (NotFound / PermissionDenied). A key file readable by group or others is
// refused (PermissionDenied).
absl::StatusOr<Identity> LoadIdentity(const std::string& path);
// The key file bound to its certificate (a serialized chasqui.v1.Certificate, as `chasqui
// enrol` writes it): the identity's serial becomes the certificate's. InvalidArgument naming
// both files and the field if the certificate does not parse or does not belong to the key:
// another sign_pk or kx_pk, entity, env or role. This checks the binding only: the root's
// signature and the validity are for the caller to verify against its pinned anchors
// (VerifyCertificate in common/trust), which has them.
absl::StatusOr<Identity> LoadIdentity(const std::string& key_path, const std::string& cert_path);
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
  // The identity with `role` for `entity` in this environment; with several (a rotation's
  // overlap), the newest: the latest not_before_ms, then (trust files, where it is 0) the
  // highest serial. Serials are random: the newest key is not the one with the highest serial.
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
