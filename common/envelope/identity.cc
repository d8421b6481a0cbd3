#include "common/envelope/identity.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "chasqui/v1/crypto.pb.h"
#include "common/core/files.h"
#include "common/core/names.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace chasqui {
namespace {

using nlohmann::json;

constexpr std::pair<Role, std::string_view> kRoles[] = {
    {Role::kEntity, "entity"}, {Role::kRouter, "router"},   {Role::kCatalog, "catalog"},
    {Role::kCrypto, "crypto"}, {Role::kQuota, "quota"},     {Role::kAudit, "audit"},
    {Role::kMae, "mae"},       {Role::kManager, "manager"}, {Role::kOperator, "operator"},
};
constexpr std::pair<Role, v1::CertificateRole> kCertificateRoles[] = {
    {Role::kEntity, v1::CERTIFICATE_ROLE_ENTITY},     {Role::kRouter, v1::CERTIFICATE_ROLE_ROUTER},
    {Role::kCatalog, v1::CERTIFICATE_ROLE_CATALOG},   {Role::kCrypto, v1::CERTIFICATE_ROLE_CRYPTO},
    {Role::kQuota, v1::CERTIFICATE_ROLE_QUOTA},       {Role::kAudit, v1::CERTIFICATE_ROLE_AUDIT},
    {Role::kMae, v1::CERTIFICATE_ROLE_MAE},           {Role::kManager, v1::CERTIFICATE_ROLE_MANAGER},
    {Role::kOperator, v1::CERTIFICATE_ROLE_OPERATOR},
};
constexpr char kRoleExpected[] =
    "one of \"entity\", \"router\", \"catalog\", \"crypto\", \"quota\", \"audit\", "
    "\"mae\", \"manager\", \"operator\"";

// Wipes a std::string that briefly held secret material.
void Wipe(std::string& s) {
  if (!s.empty()) sodium_memzero(s.data(), s.size());
  s.clear();
}

// Wipes a secret field's text inside parsed JSON (assigning "" would leave the old bytes).
void WipeField(json& j, const char* field) {
  auto it = j.find(field);
  if (it != j.end() && it->is_string()) Wipe(it->get_ref<std::string&>());
}

absl::Status FieldError(std::string_view where, std::string_view field, std::string_view expected) {
  return absl::InvalidArgumentError(
      fmt::format("{}: field \"{}\": expected {}", where, field, expected));
}

absl::StatusOr<std::string> StringField(const json& j, std::string_view where,
                                        const char* field, std::string_view expected) {
  auto it = j.find(field);
  if (it == j.end() || !it->is_string()) return FieldError(where, field, expected);
  return it->get<std::string>();
}

template <size_t N>
absl::StatusOr<std::array<uint8_t, N>> KeyField(const json& j, std::string_view where,
                                                const char* field) {
  const std::string expected = fmt::format("base64 of {} bytes", N);
  auto s = StringField(j, where, field, expected);
  if (!s.ok()) return s.status();
  auto raw = FromBase64(*s, field);
  if (!raw.ok() || raw->size() != N) return FieldError(where, field, expected);
  return ToArray<N>(*raw, field);
}

absl::StatusOr<PublicIdentity> ParsePublic(const json& j, std::string_view where) {
  if (!j.is_object()) return absl::InvalidArgumentError(fmt::format("{}: expected an object", where));
  PublicIdentity p;
  auto serial = j.find("serial");
  if (serial == j.end() || !serial->is_number_unsigned() || serial->get<uint64_t>() == 0) {
    return FieldError(where, "serial", "a positive integer");
  }
  p.serial = serial->get<uint64_t>();
  auto entity = StringField(j, where, "entity", "an entity id like \"segip\"");
  if (!entity.ok()) return entity.status();
  if (!IsValidName(*entity)) {
    return FieldError(where, "entity", "1-63 characters of [a-z0-9_-], starting with [a-z0-9]");
  }
  p.entity = *entity;
  auto env = StringField(j, where, "env", "\"test\" or \"prod\"");
  if (!env.ok()) return env.status();
  if (!IsValidEnv(*env)) return FieldError(where, "env", "\"test\" or \"prod\"");
  p.env = *env;
  auto role_name = StringField(j, where, "role", kRoleExpected);
  if (!role_name.ok()) return role_name.status();
  auto role = ParseRole(*role_name);
  if (!role.ok()) return FieldError(where, "role", kRoleExpected);
  p.role = *role;
  auto sign_pk = KeyField<32>(j, where, "sign_pk");
  if (!sign_pk.ok()) return sign_pk.status();
  p.sign_pk = *sign_pk;
  if (IsPersonRole(p.role)) {
    if (j.contains("kx_pk") || j.contains("kx_sk")) {
      return FieldError(where, "kx_pk", "nothing: a person's key never seals, so it has no kx key");
    }
    p.has_kx = false;
    return p;
  }
  auto kx_pk = KeyField<32>(j, where, "kx_pk");
  if (!kx_pk.ok()) return kx_pk.status();
  p.kx_pk = *kx_pk;
  return p;
}

json PublicToJson(const PublicIdentity& p) {
  json j{{"serial", p.serial},
         {"entity", p.entity},
         {"env", p.env},
         {"role", std::string(RoleName(p.role))},
         {"sign_pk", ToBase64(AsView(p.sign_pk))}};
  if (p.has_kx) j["kx_pk"] = ToBase64(AsView(p.kx_pk));
  return j;
}

absl::StatusOr<json> ParseJson(const std::string& text, std::string_view where) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError(fmt::format("{}: not valid JSON", where));
  }
  return j;
}

absl::Status CheckVersion(const json& j, std::string_view where) {
  auto v = j.find("version");
  if (v == j.end() || !v->is_number_unsigned() || v->get<uint64_t>() != 1) {
    return FieldError(where, "version", "1");
  }
  return absl::OkStatus();
}

}  // namespace

std::string_view RoleName(Role role) {
  for (const auto& [r, name] : kRoles) {
    if (r == role) return name;
  }
  return "unknown";
}

absl::StatusOr<Role> ParseRole(std::string_view name) {
  for (const auto& [r, n] : kRoles) {
    if (n == name) return r;
  }
  return absl::InvalidArgumentError(
      fmt::format("role \"{}\": expected {}", Printable(name), kRoleExpected));
}

bool IsPersonRole(Role role) {
  return role == Role::kMae || role == Role::kManager || role == Role::kOperator;
}

bool IsServiceRole(Role role) {
  return role == Role::kRouter || role == Role::kCatalog || role == Role::kCrypto ||
         role == Role::kQuota || role == Role::kAudit;
}

Identity GenerateIdentity(std::string entity, std::string env, Role role) {
  Identity id{PublicIdentity{}, SigningKey::Generate(), KxKey::Generate()};
  do {
    RandomBytes(reinterpret_cast<uint8_t*>(&id.pub.serial), sizeof id.pub.serial);
    id.pub.serial &= (uint64_t{1} << 53) - 1;  // stays exact in any JSON reader
  } while (id.pub.serial == 0);
  id.pub.entity = std::move(entity);
  id.pub.env = std::move(env);
  id.pub.role = role;
  id.pub.sign_pk = id.sign.public_key();
  id.pub.has_kx = !IsPersonRole(role);
  if (id.pub.has_kx) id.pub.kx_pk = id.kx.public_key();
  return id;
}

absl::StatusOr<Identity> LoadIdentity(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    return absl::PermissionDeniedError(fmt::format(
        "key file {}: readable by group or others (mode {:o}); a private key must be mode 0600: "
        "chmod 600 {}",
        path, st.st_mode & 0777, path));
  }
  auto text = ReadFileToString(path, "key file");
  if (!text.ok()) return text.status();
  const std::string where = fmt::format("key file {}", path);
  auto j = ParseJson(*text, where);
  Wipe(*text);
  if (!j.ok()) return j.status();
  if (auto s = CheckVersion(*j, where); !s.ok()) return s;
  auto pub = ParsePublic(*j, where);
  if (!pub.ok()) return pub.status();
  auto sign_b64 = StringField(*j, where, "sign_sk", "base64 of 64 bytes");
  if (!sign_b64.ok()) return sign_b64.status();
  auto sign_raw = FromBase64(*sign_b64, "sign_sk");
  Wipe(*sign_b64);
  if (!sign_raw.ok()) return FieldError(where, "sign_sk", "base64 of 64 bytes");
  auto sign = SigningKey::FromSecret(*sign_raw);
  Wipe(*sign_raw);
  if (!sign.ok()) return FieldError(where, "sign_sk", "a valid Ed25519 secret key");
  if (sign->public_key() != pub->sign_pk) {
    return FieldError(where, "sign_pk", "the public half of sign_sk");
  }
  WipeField(*j, "sign_sk");
  if (!pub->has_kx) return Identity{*std::move(pub), *std::move(sign), KxKey::Generate()};
  auto kx_b64 = StringField(*j, where, "kx_sk", "base64 of 32 bytes");
  if (!kx_b64.ok()) return kx_b64.status();
  auto kx_raw = FromBase64(*kx_b64, "kx_sk");
  Wipe(*kx_b64);
  if (!kx_raw.ok()) return FieldError(where, "kx_sk", "base64 of 32 bytes");
  auto kx = KxKey::FromSecret(*kx_raw);
  Wipe(*kx_raw);
  if (!kx.ok()) return FieldError(where, "kx_sk", "a valid X25519 secret key");
  WipeField(*j, "kx_sk");
  if (kx->public_key() != pub->kx_pk) return FieldError(where, "kx_pk", "the public half of kx_sk");
  return Identity{*std::move(pub), *std::move(sign), *std::move(kx)};
}

absl::StatusOr<Identity> LoadIdentity(const std::string& key_path, const std::string& cert_path) {
  auto id = LoadIdentity(key_path);
  if (!id.ok()) return id.status();
  auto bytes = ReadFileToString(cert_path, "certificate file");
  if (!bytes.ok()) return bytes.status();
  v1::Certificate cert;
  v1::CertificateBody body;
  if (!cert.ParseFromString(*bytes) || !body.ParseFromString(cert.body()) || body.serial() == 0) {
    return absl::InvalidArgumentError(fmt::format(
        "certificate file {}: not a certificate (expected the file `chasqui enrol` wrote)",
        cert_path));
  }
  const PublicIdentity& pub = id->pub;
  auto mismatch = [&](std::string_view field, std::string_view cert_has,
                      std::string_view key_has) {
    return absl::InvalidArgumentError(fmt::format(
        "certificate file {} (serial {}) does not belong to key file {}: its {} is {}, the key "
        "file's is {}",
        cert_path, body.serial(), key_path, field, cert_has, key_has));
  };
  if (body.sign_pk() != AsView(pub.sign_pk)) {
    return mismatch("sign_pk", ToBase64(body.sign_pk()), ToBase64(AsView(pub.sign_pk)));
  }
  const std::string key_kx = pub.has_kx ? ToBase64(AsView(pub.kx_pk)) : "(none)";
  const std::string cert_kx = body.kx_pk().empty() ? "(none)" : ToBase64(body.kx_pk());
  if (cert_kx != key_kx) return mismatch("kx_pk", cert_kx, key_kx);
  if (body.entity() != pub.entity) {
    return mismatch("entity", Printable(body.entity()), pub.entity);
  }
  if (body.env() != pub.env) return mismatch("env", Printable(body.env()), pub.env);
  std::string_view cert_role = "unspecified";
  for (const auto& [r, c] : kCertificateRoles) {
    if (c == body.role()) cert_role = RoleName(r);
  }
  if (cert_role != RoleName(pub.role)) return mismatch("role", cert_role, RoleName(pub.role));
  id->pub.serial = body.serial();
  return id;
}

absl::Status WriteIdentity(const std::string& path, const Identity& identity) {
  json j = PublicToJson(identity.pub);
  j["version"] = 1;
  std::string sign_sk = ToBase64(AsView(identity.sign.secret().data(), 64));
  std::string kx_sk =
      identity.pub.has_kx ? ToBase64(AsView(identity.kx.secret().data(), 32)) : std::string();
  j["sign_sk"] = sign_sk;
  if (identity.pub.has_kx) j["kx_sk"] = kx_sk;
  Wipe(sign_sk);
  Wipe(kx_sk);
  std::string text = j.dump(2) + "\n";
  j["sign_sk"] = "";
  if (identity.pub.has_kx) j["kx_sk"] = "";
  absl::Status written = WriteFileDurably(path, text, 0600, /*replace=*/false);
  Wipe(text);
  if (absl::IsAlreadyExists(written)) {
    return absl::AlreadyExistsError(
        fmt::format("cannot create key file {}: it exists (refusing to overwrite a key)", path));
  }
  return written;
}

std::string PublicIdentityJson(const PublicIdentity& pub) {
  json j = PublicToJson(pub);
  j["version"] = 1;
  return j.dump(2) + "\n";
}

absl::StatusOr<PublicIdentity> ParsePublicIdentity(std::string_view text, std::string_view where) {
  auto j = ParseJson(std::string(text), where);
  if (!j.ok()) return j.status();
  return ParsePublic(*j, where);
}

absl::StatusOr<TrustStore> TrustStore::Load(const std::string& path, std::string_view env) {
  auto text = ReadFileToString(path, "trust file");
  if (!text.ok()) return text.status();
  const std::string where = fmt::format("trust file {}", path);
  auto j = ParseJson(*text, where);
  if (!j.ok()) return j.status();
  if (!j->is_object()) return absl::InvalidArgumentError(where + ": expected a JSON object");
  if (auto s = CheckVersion(*j, where); !s.ok()) return s;
  auto list = j->find("identities");
  if (list == j->end() || !list->is_array()) {
    return FieldError(where, "identities", "an array of public identities");
  }
  std::vector<PublicIdentity> ids;
  for (size_t i = 0; i < list->size(); ++i) {
    auto p = ParsePublic((*list)[i], fmt::format("{}: identities[{}]", where, i));
    if (!p.ok()) return p.status();
    ids.push_back(*std::move(p));
  }
  absl::flat_hash_map<uint64_t, size_t> seen;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (auto [it, fresh] = seen.emplace(ids[i].serial, i); !fresh) {
      return absl::InvalidArgumentError(fmt::format(
          "{}: identities[{}] and identities[{}] share serial {}: serials must be unique", where,
          it->second, i, ids[i].serial));
    }
  }
  return FromIdentities(std::move(ids), env);
}

TrustStore TrustStore::FromIdentities(std::vector<PublicIdentity> identities, std::string_view env) {
  TrustStore t;
  t.env_ = std::string(env);
  for (PublicIdentity& p : identities) {
    if (p.env != t.env_) continue;
    auto [it, fresh] = t.by_name_.try_emplace({p.entity, p.role}, p.serial);
    if (!fresh) {
      const PublicIdentity& best = t.by_serial_.at(it->second);
      if (std::pair(p.not_before_ms, p.serial) > std::pair(best.not_before_ms, best.serial)) {
        it->second = p.serial;
      }
    }
    t.by_serial_.emplace(p.serial, std::move(p));
  }
  return t;
}

const PublicIdentity* TrustStore::BySerial(uint64_t serial) const {
  auto it = by_serial_.find(serial);
  return it == by_serial_.end() ? nullptr : &it->second;
}

const PublicIdentity* TrustStore::Find(std::string_view entity, Role role) const {
  auto it = by_name_.find(std::pair<std::string, Role>(std::string(entity), role));
  return it == by_name_.end() ? nullptr : BySerial(it->second);
}

std::string TrustFileJson(const std::vector<PublicIdentity>& identities) {
  json list = json::array();
  for (const PublicIdentity& p : identities) list.push_back(PublicToJson(p));
  return json{{"version", 1}, {"identities", list}}.dump(2) + "\n";
}

}  // namespace chasqui
