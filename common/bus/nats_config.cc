#include "common/bus/nats_config.h"

#include <crypt.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <set>
#include <utility>

#include "common/bus/bus.h"
#include "common/core/files.h"
#include "common/core/names.h"
#include "common/core/status.h"
#include "fmt/format.h"

namespace chasqui {
namespace {

constexpr std::string_view kRouterEntity = "router";
constexpr size_t kPasswordBytes = 32;
constexpr size_t kBcryptMaxPassword = 72;  // bcrypt ignores what follows

// Characters a password (or bcrypt hash) may have: safe inside a quoted string of the config
// and in a shell word; covers hex, base64 (both alphabets) and bcrypt's own alphabet.
bool IsPasswordChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         std::string_view("./$+=_-").find(c) != std::string_view::npos;
}

absl::Status CheckListen(std::string_view listen) {
  const size_t colon = listen.rfind(':');
  const std::string_view host = colon == std::string_view::npos ? "" : listen.substr(0, colon);
  const std::string_view port = colon == std::string_view::npos ? "" : listen.substr(colon + 1);
  bool ok = !host.empty() && !port.empty() && port.size() <= 5 &&
            port.find_first_not_of("0123456789") == std::string_view::npos;
  if (ok) {
    const int n = std::stoi(std::string(port));
    ok = n > 0 && n < 65536;
  }
  for (char c : host) {
    const bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                         (c >= '0' && c <= '9') || c == '.' || c == '-' || c == ':' || c == '[' ||
                         c == ']';
    ok = ok && allowed;
  }
  if (!ok) {
    return absl::InvalidArgumentError(fmt::format(
        "listen address \"{}\": expected host:port, e.g. 127.0.0.1:4222", Printable(listen)));
  }
  return absl::OkStatus();
}

// A TLS path goes between double quotes in the config: nothing may end the string early or be
// read as an escape.
absl::Status CheckTlsPath(std::string_view path, std::string_view flag) {
  if (path.empty() || path.front() != '/') {
    return absl::InvalidArgumentError(fmt::format(
        "{} \"{}\": give an absolute path (nats-server resolves relative ones against its own "
        "working directory)",
        flag, Printable(path)));
  }
  for (char c : path) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\' || u < 0x20 || u == 0x7f) {
      return absl::InvalidArgumentError(fmt::format(
          "{} \"{}\": a quote, backslash or control byte in the path", flag, Printable(path)));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckTls(const NatsTlsFiles& tls) {
  if (!tls.enabled()) return absl::OkStatus();
  if (tls.cert_file.empty() || tls.key_file.empty()) {
    return absl::InvalidArgumentError(
        "nats config TLS: --tls-cert and --tls-key go together (and --tls-ca needs both)");
  }
  CHASQUI_RETURN_IF_ERROR(CheckTlsPath(tls.cert_file, "--tls-cert"));
  CHASQUI_RETURN_IF_ERROR(CheckTlsPath(tls.key_file, "--tls-key"));
  if (!tls.ca_file.empty()) CHASQUI_RETURN_IF_ERROR(CheckTlsPath(tls.ca_file, "--tls-ca"));
  if (tls.timeout_seconds < 1 || tls.timeout_seconds > 60) {
    return absl::InvalidArgumentError(fmt::format(
        "nats config TLS: handshake timeout {} s is outside 1..60", tls.timeout_seconds));
  }
  return absl::OkStatus();
}

bool IsPlatformService(std::string_view name) {
  const auto& all = NatsPlatformServices();
  return std::find(all.begin(), all.end(), name) != all.end();
}

absl::Status NotAPlatformService(std::string_view who, std::string_view name) {
  return absl::InvalidArgumentError(fmt::format(
      "{}: \"{}\" is not a platform service: expected catalog, crypto, quota or audit", who,
      Printable(name)));
}

std::string_view ReservedUserWord(std::string_view name) {
  if (name == kRouterEntity) return "routers'";
  if (name == kNatsWatchName) return "revocation watch's";
  return "platform service's";
}

absl::Status ReservedEntity(std::string_view who, std::string_view name) {
  return absl::InvalidArgumentError(fmt::format(
      "{}: an entity may not be named \"{}\": its user would be the {} user", who, name,
      ReservedUserWord(name)));
}

absl::Status CheckUser(const NatsUser& u) {
  const std::string who = fmt::format("nats user \"{}\"", Printable(u.name));
  CHASQUI_RETURN_IF_ERROR(ValidateEnv(u.env));
  switch (u.role) {
    case NatsUserRole::kRouter:
      if (u.entity != kRouterEntity) {
        return absl::InvalidArgumentError(
            fmt::format("{}: a router user's entity must be \"router\", got \"{}\"", who,
                        Printable(u.entity)));
      }
      break;
    case NatsUserRole::kService:
      if (!IsPlatformService(u.entity)) return NotAPlatformService(who, u.entity);
      break;
    case NatsUserRole::kRevocationWatch:
      if (u.entity != kNatsWatchName) {
        return absl::InvalidArgumentError(
            fmt::format("{}: a revocation watch user's entity must be \"{}\", got \"{}\"", who,
                        kNatsWatchName, Printable(u.entity)));
      }
      break;
    case NatsUserRole::kEntity:
    case NatsUserRole::kOperator:
      CHASQUI_RETURN_IF_ERROR(ValidateName("entity", u.entity));
      if (IsReservedEntityName(u.entity)) return ReservedEntity(who, u.entity);
      break;
  }
  const std::string expected = NatsUserName(u.role, u.entity, u.env);
  if (u.name != expected) {
    return absl::InvalidArgumentError(
        fmt::format("{}: name must be \"{}\" (<entity>.<env>)", who, expected));
  }
  if (u.password.empty()) return absl::InvalidArgumentError(fmt::format("{}: empty password", who));
  for (char c : u.password) {
    if (!IsPasswordChar(c)) {
      // Never echo the password, not even one character of it.
      return absl::InvalidArgumentError(
          fmt::format("{}: password has a character outside [A-Za-z0-9./$+=_-]", who));
    }
  }
  return absl::OkStatus();
}

std::string QuotedList(const std::vector<std::string>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ", ";
    out += fmt::format("\"{}\"", items[i]);
  }
  out += "]";
  return out;
}

}  // namespace

const std::vector<std::string>& NatsPlatformServices() {
  static const auto* const kServices =
      new std::vector<std::string>{"audit", "catalog", "crypto", "quota"};
  return *kServices;
}

bool IsReservedEntityName(std::string_view name) {
  return name == kRouterEntity || name == kNatsWatchName || IsPlatformService(name);
}

std::string NatsUserName(NatsUserRole role, std::string_view entity, std::string_view env) {
  return fmt::format("{}.{}", role == NatsUserRole::kRouter ? kRouterEntity : entity, env);
}

std::string NatsServiceInboxPrefix(std::string_view service, std::string_view env) {
  return fmt::format("_INBOX._{}.{}", service, env);
}

NatsPermissions NatsPermissionsFor(NatsUserRole role, std::string_view entity,
                                   std::string_view env) {
  NatsPermissions p;
  switch (role) {
    case NatsUserRole::kEntity:
    case NatsUserRole::kOperator:
      // Its gateway sends its own requests, serves its own services (queue groups included)
      // and reads its own replies; it answers a router only through the response permission.
      // It enrols, fetches certificates, talks to the catalog (snapshot and events included)
      // and follows revocations and the catalog's changes; the answers come to its own inbox.
      // It reads the audit trail (signed queries and reports; the service narrows them), and its
      // people read quota usage and send quota requests and decisions.
      p.publish_allow = {fmt::format("chq.{}.req.{}.>", env, entity), "chq.ctl.crypto.enrol",
                         "chq.ctl.crypto.directory", "chq.ctl.catalog.>",
                         "chq.ctl.audit.query",      "chq.ctl.audit.report",
                         "chq.ctl.quota.usage",      "chq.ctl.quota.request",
                         "chq.ctl.quota.decide"};
      p.subscribe_allow = {fmt::format("chq.{}.svc.{}.>", env, entity),
                           fmt::format("_INBOX.{}.{}.>", env, entity), "chq.evt.crypto.revoked",
                           "chq.evt.catalog.>"};
      p.allow_responses = true;
      // The platform's operators revoke certificates through their entity's user (`chasqui
      // revoke`); the crypto service accepts a revocation only signed by an operator's key.
      if (role == NatsUserRole::kOperator) p.publish_allow.push_back("chq.ctl.crypto.revoke");
      break;
    case NatsUserRole::kRevocationWatch:
      // Reads the revocation lists and asks the directory who the revoked certificates were;
      // the answers come to its own inbox. It publishes nothing else and answers nobody.
      p.publish_allow = {"chq.ctl.crypto.directory"};
      p.subscribe_allow = {"chq.evt.crypto.revoked",
                           NatsServiceInboxPrefix(kNatsWatchName, env) + ".>"};
      p.allow_responses = false;
      break;
    case NatsUserRole::kRouter:
      // Forwards to providers and answers consumers (replies, error envelopes, relays); traces,
      // reads grants and certificates, draws and returns quota leases, and follows the crypto
      // service's and catalog's events and the quota policy changes; enrols its own key. Every
      // answer comes back under its own `_INBOX._router.<env>.` (RouterPolicies: `.<id>.catalog`,
      // `.<id>.quota`).
      p.publish_allow = {fmt::format("chq.{}.svc.>", env),  fmt::format("_INBOX.{}.>", env),
                         "chq.ctl.audit.append",            "chq.ctl.catalog.snapshot",
                         "chq.ctl.catalog.events",          "chq.ctl.crypto.enrol",
                         "chq.ctl.crypto.directory",        "chq.ctl.quota.lease",
                         "chq.ctl.quota.return"};
      p.subscribe_allow = {fmt::format("chq.{}.req.>", env),
                           fmt::format("_INBOX._router.{}.>", env), "chq.evt.crypto.>",
                           "chq.evt.catalog.>", "chq.evt.quota.policy"};
      p.allow_responses = false;
      break;
    case NatsUserRole::kService:
      // Serves its own control subjects in its queue group only (a plain subscription would
      // take every request for itself), answers them once each, publishes its own events.
      p.publish_allow = {fmt::format("chq.evt.{}.>", entity)};
      if (entity == "crypto") {
        // Records every certificate it issues in the audit chain of the certificate's env.
        p.publish_allow.push_back(fmt::format("chq.ctl.audit.certificates.{}", env));
      } else {
        // Enrols its own key (chasqui-catalog enrol, chasqui enrol --role audit), then asks.
        p.publish_allow.push_back("chq.ctl.crypto.enrol");
        p.publish_allow.push_back("chq.ctl.crypto.sign");
        p.publish_allow.push_back("chq.ctl.crypto.directory");
      }
      p.subscribe_allow = {fmt::format("chq.ctl.{0}.> chq.{0}", entity),
                           NatsServiceInboxPrefix(entity, env) + ".>", "chq.evt.crypto.>"};
      if (entity == "quota") {
        // Its policies follow the catalog (chasqui-quota serve --catalog).
        p.publish_allow.push_back("chq.ctl.catalog.snapshot");
        p.publish_allow.push_back("chq.ctl.catalog.events");
        p.subscribe_allow.push_back("chq.evt.catalog.>");
      }
      p.allow_responses = true;
      break;
  }
  return p;
}

absl::StatusOr<std::string> NatsServerConfig(const NatsConfigInput& input) {
  CHASQUI_RETURN_IF_ERROR(CheckListen(input.listen));
  CHASQUI_RETURN_IF_ERROR(CheckTls(input.tls));
  if (input.users.empty()) {
    return absl::InvalidArgumentError(
        "nats config: no users (an authorization block without users would admit nobody)");
  }
  std::set<std::string> names;
  std::set<std::string> passwords;
  for (const NatsUser& u : input.users) {
    CHASQUI_RETURN_IF_ERROR(CheckUser(u));
    if (!names.insert(u.name).second) {
      return absl::InvalidArgumentError(fmt::format("nats user \"{}\" appears twice", u.name));
    }
    if (!passwords.insert(u.password).second) {
      return absl::InvalidArgumentError(fmt::format(
          "nats user \"{}\": same password (hash) as another user; every user needs its own",
          u.name));
    }
  }

  std::string out;
  out += "# nats-server configuration generated by `chasqui nats-config`: the bus enforces\n";
  out += "# Chasqui's subject plan (DESIGN.md, \"Names and subjects\"). Regenerate rather than\n";
  out += "# edit; apply with `nats-server --signal reload`.\n";
  out += fmt::format("listen: \"{}\"\n\n", input.listen);
  if (input.tls.enabled()) {
    // Every client connection must be TLS: nats-server 2.9 refuses a plain client once this
    // block is there. ca_file only checks client certificates offered (no `verify`).
    out += "tls {\n";
    out += fmt::format("  cert_file: \"{}\"\n", input.tls.cert_file);
    out += fmt::format("  key_file: \"{}\"\n", input.tls.key_file);
    if (!input.tls.ca_file.empty()) out += fmt::format("  ca_file: \"{}\"\n", input.tls.ca_file);
    out += fmt::format("  timeout: {}\n", input.tls.timeout_seconds);
    out += "}\n\n";
  }
  out += "authorization {\n  users = [\n";
  for (const NatsUser& u : input.users) {
    const NatsPermissions p = NatsPermissionsFor(u.role, u.entity, u.env);
    if (u.role == NatsUserRole::kRouter) {
      out += fmt::format("    # {}: the routers of env {}\n", u.name, u.env);
    } else if (u.role == NatsUserRole::kService) {
      out += fmt::format("    # {}: platform service {} in env {}\n", u.name, u.entity, u.env);
    } else if (u.role == NatsUserRole::kOperator) {
      out += fmt::format("    # {}: entity {} in env {}, the platform operator's (may revoke)\n",
                         u.name, u.entity, u.env);
    } else if (u.role == NatsUserRole::kRevocationWatch) {
      out += fmt::format("    # {}: the revocation watch of env {}\n", u.name, u.env);
    } else {
      out += fmt::format("    # {}: entity {} in env {}\n", u.name, u.entity, u.env);
    }
    out += "    {\n";
    out += fmt::format("      user: \"{}\"\n", u.name);
    out += fmt::format("      password: \"{}\"\n", u.password);
    out += "      permissions: {\n";
    out += fmt::format("        publish: {{ allow: {} }}\n", QuotedList(p.publish_allow));
    out += fmt::format("        subscribe: {{ allow: {} }}\n", QuotedList(p.subscribe_allow));
    if (p.allow_responses) out += "        allow_responses: true\n";
    out += "      }\n";
    out += "    }\n";
  }
  out += "  ]\n}\n";
  return out;
}

absl::StatusOr<std::vector<NatsUser>> PlanNatsUsers(const std::vector<NatsTrustedName>& trusted,
                                                    const std::vector<std::string>& envs,
                                                    std::string_view source) {
  if (envs.empty()) return absl::InvalidArgumentError("nats config: no --env given");
  std::set<std::string> known_envs;
  for (const NatsTrustedName& t : trusted) known_envs.insert(t.env);
  std::string known;
  for (const std::string& e : known_envs) known += (known.empty() ? "" : ", ") + e;
  if (known.empty()) known = "none";

  std::vector<NatsUser> users;
  std::set<std::string> seen_envs;
  for (const std::string& env : envs) {
    CHASQUI_RETURN_IF_ERROR(ValidateEnv(env));
    if (!seen_envs.insert(env).second) {
      return absl::InvalidArgumentError(fmt::format("nats config: env \"{}\" given twice", env));
    }
    if (known_envs.count(env) == 0) {
      return absl::InvalidArgumentError(fmt::format(
          "nats config: env \"{}\" has no key in {} (its envs: {}); add that env's keys to the "
          "trust file or drop --env {}",
          env, source, known, env));
    }
    bool has_router = false;
    bool has_watch = false;
    std::set<std::string> entities;
    std::set<std::string> operators;
    std::set<std::string> services;
    for (const NatsTrustedName& t : trusted) {
      if (t.env != env) continue;
      if (t.role == NatsUserRole::kRouter) {
        has_router = true;
        continue;
      }
      if (t.role == NatsUserRole::kRevocationWatch) {
        has_watch = true;
        continue;
      }
      if (t.role == NatsUserRole::kService) {
        if (!IsPlatformService(t.entity)) {
          return NotAPlatformService(fmt::format("{}: env {}", source, env), t.entity);
        }
        services.insert(t.entity);
        continue;
      }
      if (IsReservedEntityName(t.entity)) {
        return absl::InvalidArgumentError(fmt::format(
            "{}: an entity key is named \"{}\" in env {}: that name is the {} NATS user",
            source, t.entity, env, ReservedUserWord(t.entity)));
      }
      CHASQUI_RETURN_IF_ERROR(ValidateName("entity", t.entity));
      entities.insert(t.entity);
      if (t.role == NatsUserRole::kOperator) operators.insert(t.entity);
    }
    if (has_router) {
      users.push_back(NatsUser{NatsUserName(NatsUserRole::kRouter, kRouterEntity, env), "",
                               NatsUserRole::kRouter, std::string(kRouterEntity), env});
    }
    for (const std::string& s : services) {
      users.push_back(NatsUser{NatsUserName(NatsUserRole::kService, s, env), "",
                               NatsUserRole::kService, s, env});
    }
    if (has_watch) {
      users.push_back(NatsUser{NatsUserName(NatsUserRole::kRevocationWatch, kNatsWatchName, env),
                               "", NatsUserRole::kRevocationWatch, kNatsWatchName, env});
    }
    for (const std::string& e : entities) {
      const NatsUserRole role =
          operators.count(e) > 0 ? NatsUserRole::kOperator : NatsUserRole::kEntity;
      users.push_back(NatsUser{NatsUserName(role, e, env), "", role, e, env});
    }
  }
  return users;
}

absl::StatusOr<std::string> NewNatsPassword() {
  unsigned char bytes[kPasswordBytes];
  if (::getentropy(bytes, sizeof(bytes)) != 0) {
    return absl::InternalError(
        fmt::format("nats password: getentropy failed: {}", std::strerror(errno)));
  }
  std::string hex;
  hex.reserve(2 * sizeof(bytes));
  for (unsigned char b : bytes) hex += fmt::format("{:02x}", b);
  ::explicit_bzero(bytes, sizeof(bytes));
  return hex;
}

absl::StatusOr<std::string> BcryptHash(std::string_view password, int cost) {
  if (cost < 4 || cost > 31) {
    return absl::InvalidArgumentError(fmt::format("bcrypt cost {}: expected 4..31", cost));
  }
  if (password.empty() || password.size() > kBcryptMaxPassword ||
      password.find('\0') != std::string_view::npos) {
    return absl::InvalidArgumentError(fmt::format(
        "bcrypt: a password must have 1..{} bytes and no NUL byte", kBcryptMaxPassword));
  }
  char salt[CRYPT_GENSALT_OUTPUT_SIZE];
  // A null random source: libcrypt takes the salt from the OS's entropy.
  if (crypt_gensalt_rn("$2b$", static_cast<unsigned long>(cost), nullptr, 0, salt, sizeof(salt)) ==
      nullptr) {
    return absl::InternalError(fmt::format("bcrypt salt: {}", std::strerror(errno)));
  }
  // crypt_data is ~32 KiB, and holds copies of the password while it works: heap, then wiped.
  auto data = std::make_unique<crypt_data>();
  std::memset(data.get(), 0, sizeof(crypt_data));
  const std::string pw(password);
  const char* hash = crypt_rn(pw.c_str(), salt, data.get(), sizeof(crypt_data));
  std::string out = hash != nullptr ? std::string(hash) : std::string();
  const int err = errno;
  ::explicit_bzero(data.get(), sizeof(crypt_data));
  ::explicit_bzero(const_cast<char*>(pw.data()), pw.size());
  if (hash == nullptr || out.rfind("$2b$", 0) != 0) {
    return absl::InternalError(fmt::format("bcrypt: libcrypt failed: {}", std::strerror(err)));
  }
  return out;
}

absl::Status FillKeptNatsPasswords(std::vector<NatsUser>* users, const std::string& secrets_dir,
                                   int bcrypt_cost, NatsHashCache* cache,
                                   std::vector<std::string>* created) {
  if (::mkdir(secrets_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::PermissionDeniedError(
        fmt::format("cannot create {}: {}", secrets_dir, std::strerror(errno)));
  }
  for (NatsUser& u : *users) {
    const std::string path = fmt::format("{}/{}.password", secrets_dir, u.name);
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) {
      if (errno != ENOENT) {
        return absl::PermissionDeniedError(
            fmt::format("{}: cannot stat it: {}", path, std::strerror(errno)));
      }
      // A user without a password yet (a new entity): a new one, written before it is used.
      CHASQUI_ASSIGN_OR_RETURN(std::string password, NewNatsPassword());
      absl::StatusOr<std::string> hash = BcryptHash(password, bcrypt_cost);
      absl::Status written =
          hash.ok() ? WriteFileDurably(path, password, 0600, /*replace=*/false) : hash.status();
      ::explicit_bzero(password.data(), password.size());
      CHASQUI_RETURN_IF_ERROR(written);
      if (::lstat(path.c_str(), &st) != 0) {
        return absl::InternalError(fmt::format("{}: written but cannot stat it", path));
      }
      if (created != nullptr) created->push_back(u.name);
      u.password = *std::move(hash);
    } else {
      if (!S_ISREG(st.st_mode)) {
        return absl::FailedPreconditionError(fmt::format(
            "{} exists and is not a regular file (a symlink?): refusing it", path));
      }
      const NatsHashCache::Entry* hit = nullptr;
      if (cache != nullptr) {
        auto it = cache->by_user.find(u.name);
        const int64_t mtime_ns = st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec;
        if (it != cache->by_user.end() && it->second.dev == st.st_dev &&
            it->second.ino == st.st_ino && it->second.size == static_cast<uint64_t>(st.st_size) &&
            it->second.mtime_ns == mtime_ns) {
          hit = &it->second;
        }
      }
      if (hit != nullptr) {
        u.password = hit->hash;
      } else {
        BusOptions read;  // LoadNatsPassword checks the mode and strips trailing whitespace
        read.user = u.name;
        CHASQUI_RETURN_IF_ERROR(LoadNatsPassword(path, &read));
        for (char c : read.password) {
          if (!IsPasswordChar(c)) {
            ::explicit_bzero(read.password.data(), read.password.size());
            return absl::InvalidArgumentError(fmt::format(
                "{}: the password has a character outside [A-Za-z0-9./$+=_-]", path));
          }
        }
        absl::StatusOr<std::string> hash = BcryptHash(read.password, bcrypt_cost);
        ::explicit_bzero(read.password.data(), read.password.size());
        if (!hash.ok()) {
          return absl::Status(hash.status().code(),
                              fmt::format("{}: {}", path, MessageOf(hash.status())));
        }
        u.password = *std::move(hash);
      }
    }
    if (cache != nullptr) {
      NatsHashCache::Entry& e = cache->by_user[u.name];
      e.dev = st.st_dev;
      e.ino = st.st_ino;
      e.size = static_cast<uint64_t>(st.st_size);
      e.mtime_ns = st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec;
      e.hash = u.password;
    }
  }
  return absl::OkStatus();
}

}  // namespace chasqui
