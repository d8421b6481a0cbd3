#include "common/envelope/identity.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/core/files.h"
#include "common/core/names.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace chasqui {
namespace {

using nlohmann::json;

// Wipes a std::string that briefly held secret material.
void Wipe(std::string& s) {
  if (!s.empty()) sodium_memzero(s.data(), s.size());
  s.clear();
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
  auto role = StringField(j, where, "role", "\"entity\" or \"router\"");
  if (!role.ok()) return role.status();
  if (*role == "entity") {
    p.role = Role::kEntity;
  } else if (*role == "router") {
    p.role = Role::kRouter;
  } else {
    return FieldError(where, "role", "\"entity\" or \"router\"");
  }
  auto sign_pk = KeyField<32>(j, where, "sign_pk");
  if (!sign_pk.ok()) return sign_pk.status();
  p.sign_pk = *sign_pk;
  auto kx_pk = KeyField<32>(j, where, "kx_pk");
  if (!kx_pk.ok()) return kx_pk.status();
  p.kx_pk = *kx_pk;
  return p;
}

json PublicToJson(const PublicIdentity& p) {
  return json{{"serial", p.serial},
              {"entity", p.entity},
              {"env", p.env},
              {"role", std::string(RoleName(p.role))},
              {"sign_pk", ToBase64(AsView(p.sign_pk))},
              {"kx_pk", ToBase64(AsView(p.kx_pk))}};
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

std::string_view RoleName(Role role) { return role == Role::kRouter ? "router" : "entity"; }

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
  id.pub.kx_pk = id.kx.public_key();
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
  auto kx_b64 = StringField(*j, where, "kx_sk", "base64 of 32 bytes");
  if (!kx_b64.ok()) return kx_b64.status();
  auto kx_raw = FromBase64(*kx_b64, "kx_sk");
  Wipe(*kx_b64);
  if (!kx_raw.ok()) return FieldError(where, "kx_sk", "base64 of 32 bytes");
  auto kx = KxKey::FromSecret(*kx_raw);
  Wipe(*kx_raw);
  if (!kx.ok()) return FieldError(where, "kx_sk", "a valid X25519 secret key");
  (*j)["sign_sk"] = "";
  (*j)["kx_sk"] = "";
  if (sign->public_key() != pub->sign_pk) {
    return FieldError(where, "sign_pk", "the public half of sign_sk");
  }
  if (kx->public_key() != pub->kx_pk) return FieldError(where, "kx_pk", "the public half of kx_sk");
  return Identity{*std::move(pub), *std::move(sign), *std::move(kx)};
}

absl::Status WriteIdentity(const std::string& path, const Identity& identity) {
  json j = PublicToJson(identity.pub);
  j["version"] = 1;
  std::string sign_sk = ToBase64(AsView(identity.sign.secret().data(), 64));
  std::string kx_sk = ToBase64(AsView(identity.kx.secret().data(), 32));
  j["sign_sk"] = sign_sk;
  j["kx_sk"] = kx_sk;
  Wipe(sign_sk);
  Wipe(kx_sk);
  std::string text = j.dump(2) + "\n";
  j["sign_sk"] = "";
  j["kx_sk"] = "";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    const int err = errno;
    Wipe(text);
    std::string msg = fmt::format("cannot create key file {}: {}", path, std::strerror(err));
    if (err == EEXIST) return absl::AlreadyExistsError(msg + " (refusing to overwrite a key)");
    return absl::PermissionDeniedError(msg);
  }
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      Wipe(text);
      return absl::InternalError(fmt::format("writing {}: {}", path, std::strerror(err)));
    }
    done += static_cast<size_t>(n);
  }
  Wipe(text);
  const bool synced = ::fsync(fd) == 0;
  ::close(fd);
  if (!synced) return absl::InternalError(fmt::format("fsync {} failed", path));
  return absl::OkStatus();
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
    uint64_t& best = t.by_name_[{p.entity, p.role}];
    if (p.serial > best) best = p.serial;
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
