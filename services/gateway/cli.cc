// chasqui: the command line of an entity and of the operator.
//   chasqui keygen  --entity segip --env test [--role R] [--subject S] --out DIR
//   chasqui enrol   --key K --token T --role R [--subject S] --roots roots.json
//                   --nats URL [--nats-user U --nats-password-file F] --out K.cert
//   chasqui trust   --out trust.json A.pub B.pub ...
//   chasqui call    --key K (--trust T | --roots R --cert C) --provider segip
//                   --service persona_consulta --end-user ana.perez --body '{"ci":"4567890"}'
//   chasqui serve-demo --key K (--trust T | --roots R --cert C)  (a demo provider)
//   chasqui nats-config [--trust T] [--entity E ...] [--router] [--service S ...]
//                   --env test [--env prod] --out nats.conf --secrets-dir DIR
//                   [--listen 127.0.0.1:4222] [--force]   (the operator's nats-server users)
//                   [--tls-cert F --tls-key F [--tls-ca F]]  (TLS-only; without them no tls block)
//                   [--operator-entity agetic] [--nats-watch] [--keep-passwords]
//                   [--watch --roots roots.json --nats-pid-file F --nats URL
//                    --nats-user nats-watch.test --nats-password-file F]  (services/gateway/nats_watch.h)
//   chasqui revoke  --serial N --reason entity_withdrawn --key OP.key --cert OP.cert
//                   --roots roots.json ...   (an operator; services/gateway/cli_revoke.h)
//   chasqui top     [--router http://127.0.0.1:9101 ...] [--interval 2] [--once] [--json]

#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "CLI/CLI.hpp"
#include "common/bus/bus.h"
#include "common/bus/nats_config.h"
#include "common/core/files.h"
#include "services/top/top.h"
#include "common/core/log.h"
#include "common/core/names.h"
#include "common/core/status.h"
#include "common/envelope/errors.h"
#include "common/envelope/identity.h"
#include "common/envelope/subjects.h"
#include "common/trust/anchors.h"
#include "common/trust/certificate.h"
#include "common/trust/crypto_client.h"
#include "common/trust/requests.h"
#include "fmt/format.h"
#include "nats/nats.h"
#include "nlohmann/json.hpp"
#include "common/trust/certificate_trust.h"
#include "services/gateway/cli_people.h"
#include "services/gateway/cli_revoke.h"
#include "services/gateway/nats_watch.h"
#include "services/gateway/sdk.h"

namespace {

using chasqui::MessageOf;

int Fail(const absl::Status& status) {
  std::cerr << "chasqui: " << MessageOf(status) << "\n";
  return 2;
}

int Keygen(std::string entity, const std::string& env, const std::string& role_name,
           const std::string& subject, const std::string& out_dir) {
  auto role = chasqui::ParseRole(role_name);
  if (!role.ok()) return Fail(role.status());
  const bool person = chasqui::IsPersonRole(*role);
  if (chasqui::IsServiceRole(*role)) {
    // A service's certificate names the service as its entity (and subject).
    if (entity.empty()) entity = role_name;
    if (entity != role_name) {
      return Fail(absl::InvalidArgumentError(fmt::format(
          "--entity {} with --role {}: a platform service's entity is its own name ({})", entity,
          role_name, role_name)));
    }
  }
  if (entity.empty()) {
    return Fail(absl::InvalidArgumentError(
        fmt::format("--entity is required for role {} (the entity id, e.g. segip)", role_name)));
  }
  if (auto s = chasqui::ValidateName("entity", entity); !s.ok()) return Fail(s);
  if (auto s = chasqui::ValidateEnv(env); !s.ok()) return Fail(s);
  if (person) {
    if (subject.empty()) {
      return Fail(absl::InvalidArgumentError(fmt::format(
          "--subject is required for role {}: the person's id, as on their enrolment token",
          role_name)));
    }
    if (auto s = chasqui::ValidateName("subject", subject); !s.ok()) return Fail(s);
  } else if (!subject.empty() && subject != entity) {
    return Fail(absl::InvalidArgumentError(fmt::format(
        "--subject {}: only people (mae, manager, operator) have a subject of their own", subject)));
  }
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  const chasqui::Identity id = chasqui::GenerateIdentity(entity, env, *role);
  const std::string base = person ? fmt::format("{}/{}.{}.{}", out_dir, entity, subject, env)
                                  : fmt::format("{}/{}.{}", out_dir, entity, env);
  if (auto s = chasqui::WriteIdentity(base + ".key", id); !s.ok()) return Fail(s);
  std::ofstream pub(base + ".pub");
  pub << chasqui::PublicIdentityJson(id.pub);
  pub.close();
  if (!pub) return Fail(absl::InternalError("cannot write " + base + ".pub"));
  std::cout << fmt::format(
      "wrote {0}.key (private, mode 0600: never leaves {1}'s machines)\n"
      "wrote {0}.pub (public: give it to the platform operator)\n"
      "serial {2}, role {3}, env {4}{5}\n"
      "next: `chasqui enrol --key {0}.key --role {3} --token <token from the operator> ...` "
      "gets its certificate\n",
      base, entity, id.pub.serial, role_name, env,
      person ? " (a person's key: signs only, no kx key)" : "");
  return 0;
}

// A file the command writes for the user: `mode`, fsynced, never through a symlink, never over
// an existing file unless `force` (then replaced whole, by rename).
absl::Status WriteUserFile(const std::string& path, std::string_view content, int mode,
                           bool force) {
  absl::Status s = chasqui::WriteFileDurably(path, content, mode, /*replace=*/force);
  if (absl::IsAlreadyExists(s)) {
    return absl::AlreadyExistsError(
        fmt::format("{} exists: refusing to overwrite it (--force replaces it)", path));
  }
  return s;
}

int Trust(const std::string& out, const std::vector<std::string>& pubs) {
  std::vector<chasqui::PublicIdentity> ids;
  for (const std::string& path : pubs) {
    std::ifstream in(path);
    if (!in) return Fail(absl::NotFoundError("cannot read " + path));
    std::stringstream ss;
    ss << in.rdbuf();
    auto p = chasqui::ParsePublicIdentity(ss.str(), path);
    if (!p.ok()) return Fail(p.status());
    ids.push_back(*std::move(p));
  }
  std::ofstream file(out);
  file << chasqui::TrustFileJson(ids);
  file.close();
  if (!file) return Fail(absl::InternalError("cannot write " + out));
  std::cout << fmt::format("wrote {} with {} identities\n", out, ids.size());
  return 0;
}

// Where and as whom to connect to nats-server.
struct NatsLogin {
  std::string url = "nats://127.0.0.1:4222";
  std::string user;
  std::string password_file;
  std::string ca_file;  // --nats-ca: nats-server's CA, the connection is TLS
};

// What the process trusts: a trust file, or pinned roots plus its own certificate.
struct TrustFlags {
  std::string trust_file;
  std::string roots;
  std::string cert;
};

struct Connection {
  std::unique_ptr<chasqui::Bus> bus;
  std::optional<chasqui::Identity> identity;
  std::shared_ptr<chasqui::TrustSource> trust;
};

absl::Status CheckTrustFlags(const TrustFlags& t) {
  if (!t.trust_file.empty() && (!t.roots.empty() || !t.cert.empty())) {
    return absl::InvalidArgumentError("give either --trust or --roots with --cert, not both");
  }
  if (t.trust_file.empty() && (t.roots.empty() || t.cert.empty())) {
    return absl::InvalidArgumentError(
        "give --trust FILE, or --roots roots.json with --cert K.cert (from `chasqui enrol`)");
  }
  return absl::OkStatus();
}

absl::StatusOr<Connection> Connect(const NatsLogin& nats, const std::string& key,
                                   const TrustFlags& trust, const std::string& name) {
  CHASQUI_RETURN_IF_ERROR(CheckTrustFlags(trust));
  Connection c;
  std::optional<chasqui::TrustStore> store;
  std::optional<chasqui::CertifiedIdentity> certified;
  chasqui::TrustAnchors anchors;
  if (!trust.trust_file.empty()) {
    CHASQUI_ASSIGN_OR_RETURN(auto identity, chasqui::LoadIdentity(key));
    CHASQUI_ASSIGN_OR_RETURN(store, chasqui::TrustStore::Load(trust.trust_file,
                                                              identity.pub.env));
    c.identity.emplace(std::move(identity));
  } else {
    CHASQUI_ASSIGN_OR_RETURN(anchors, chasqui::LoadTrustAnchors(trust.roots));
    CHASQUI_ASSIGN_OR_RETURN(certified,
                             chasqui::LoadCertifiedIdentity(
                                 key, trust.cert, anchors,
                                 chasqui::SystemClock().NowUnixMillis()));
    c.identity.emplace(std::move(certified->identity));
  }
  chasqui::BusOptions options;
  options.url = nats.url;
  options.user = nats.user;
  options.ca_file = nats.ca_file;
  options.name = fmt::format("chasqui-{}-{}", name, c.identity->pub.entity);
  options.send_asap = true;
  CHASQUI_ASSIGN_OR_RETURN(c.bus, chasqui::ConnectWithPasswordFile(options, nats.password_file));
  if (store.has_value()) {
    c.trust = chasqui::FixedTrust(*std::move(store));
    return c;
  }
  chasqui::CertificateTrustOptions to;
  to.entity = c.identity->pub.entity;
  to.env = c.identity->pub.env;
  to.own_certificate = certified->certificate.certificate;
  CHASQUI_ASSIGN_OR_RETURN(auto source, chasqui::CertificateTrust::Start(
                                            c.bus.get(), anchors, std::move(to), nullptr));
  // A one-shot command fails at once rather than being refused call by call.
  CHASQUI_RETURN_IF_ERROR(source->Current().status());
  c.trust = std::move(source);
  return c;
}

int Enrol(const NatsLogin& nats, const std::string& key, const std::string& token_flag,
          const std::string& token_file, const std::string& role, const std::string& subject,
          const std::string& roots, const std::string& out, bool force, int64_t timeout_ms) {
  chasqui::InitLogging("enrol");
  auto identity = chasqui::LoadIdentity(key);
  if (!identity.ok()) return Fail(identity.status());
  if (chasqui::RoleName(identity->pub.role) != role) {
    return Fail(absl::InvalidArgumentError(fmt::format(
        "--role {}: key file {} holds a key of role {}; enrol it with --role {} (or make a {} "
        "key with `chasqui keygen --role {}`)",
        role, key, chasqui::RoleName(identity->pub.role), chasqui::RoleName(identity->pub.role),
        role, role)));
  }
  std::string token = token_flag;
  if (!token_file.empty()) {
    if (!token.empty()) {
      return Fail(absl::InvalidArgumentError("give --token or --token-file, not both"));
    }
    auto t = chasqui::ReadFileToString(token_file, "token file");
    if (!t.ok()) return Fail(t.status());
    token = *std::move(t);
    while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) {
      token.pop_back();
    }
  }
  if (token.empty()) {
    return Fail(absl::InvalidArgumentError(
        "--token (or --token-file) is required: the one-time token the operator issued with "
        "`chasqui-crypto token`"));
  }
  auto anchors = chasqui::LoadTrustAnchors(roots);
  if (!anchors.ok()) return Fail(anchors.status());
  // Checked before asking, so a refusal to write never spends the one-time token.
  struct stat st;
  if (!force && ::lstat(out.c_str(), &st) == 0) {
    return Fail(absl::AlreadyExistsError(
        fmt::format("{} exists: refusing to overwrite it (--force replaces it)", out)));
  }
  chasqui::BusOptions options;
  options.url = nats.url;
  options.user = nats.user;
  options.ca_file = nats.ca_file;
  options.name = fmt::format("chasqui-enrol-{}", identity->pub.entity);
  options.send_asap = true;
  auto bus = chasqui::ConnectWithPasswordFile(options, nats.password_file);
  if (!bus.ok()) return Fail(bus.status());
  auto cert = chasqui::EnrolIdentity(bus->get(), chasqui::CryptoInboxPrefix(identity->pub),
                                     *identity, token, subject, *anchors,
                                     absl::Milliseconds(timeout_ms), chasqui::SystemClock());
  ::explicit_bzero(token.data(), token.size());
  if (!cert.ok()) return Fail(cert.status());
  if (auto s = WriteUserFile(out, cert->certificate, 0644, force); !s.ok()) return Fail(s);
  std::cout << fmt::format(
      "wrote {} (certificate {}: {} {} of {}, env {}, valid {} .. {} Unix ms, root {})\n"
      "it is public (mode 0644); the key file stays where it is. Sign with both:\n"
      "  chasqui-gateway --key {} --cert {} --roots {} ...\n",
      out, cert->serial, chasqui::CertificateRoleName(cert->role), cert->subject, cert->entity,
      cert->env, cert->not_before_ms, cert->not_after_ms, cert->issuer_key_id, key, out, roots);
  return 0;
}

int Call(const NatsLogin& nats, const std::string& key, const TrustFlags& trust,
         const std::string& provider, const std::string& service, chasqui::CallOptions options,
         const std::string& body) {
  auto c = Connect(nats, key, trust, "call");
  if (!c.ok()) return Fail(c.status());
  auto consumer = chasqui::Consumer::Create(c->bus.get(), std::move(*c->identity), c->trust);
  if (!consumer.ok()) return Fail(consumer.status());
  chasqui::CallResult r = (*consumer)->Call(provider, service, body, options);
  consumer->reset();
  if (r.status.ok()) {
    std::cout << r.body << "\n";
    std::cerr << fmt::format("OK request {}\n", r.request_id);
    return 0;
  }
  std::cerr << fmt::format("{} request {}: {}\n", chasqui::CodeName(chasqui::ChasquiCode(r.status)),
                           r.request_id, MessageOf(r.status));
  return 1;
}

// A stand-in for SEGIP's identity registry, so the demo has something to ask.
absl::StatusOr<std::string> DemoPersonaConsulta(const chasqui::RequestContext& ctx,
                                                std::string_view body) {
  const nlohmann::json request = nlohmann::json::parse(body, nullptr, false);
  if (!request.is_object() || !request.contains("ci") || !request["ci"].is_string()) {
    return chasqui::ChasquiError(chasqui::v1::BAD_REQUEST,
                                 "persona_consulta expects {\"ci\": \"<cedula>\"}");
  }
  static const std::map<std::string, std::pair<std::string, std::string>> registry = {
      {"4567890", {"Ana Mamani Quispe", "1990-04-12"}},
      {"1234567", {"Juan Carlos Flores", "1985-11-30"}},
  };
  const std::string ci = request["ci"];
  auto it = registry.find(ci);
  if (it == registry.end()) {
    return nlohmann::json{{"ci", ci}, {"encontrado", false}}.dump();
  }
  CHQ_LOG_INFO("persona_consulta ci=*** for {} (end user {})", ctx.consumer, ctx.end_user);
  return nlohmann::json{{"ci", ci},
                        {"encontrado", true},
                        {"nombre", it->second.first},
                        {"fecha_nacimiento", it->second.second},
                        {"estado", "VIGENTE"}}
      .dump();
}

int ServeDemo(const NatsLogin& nats, const std::string& key, const TrustFlags& trust) {
  chasqui::InitLogging("demo-provider");
  chasqui::DisableCoreDumps();
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  auto c = Connect(nats, key, trust, "provider");
  if (!c.ok()) return Fail(c.status());
  auto provider = chasqui::Provider::Create(c->bus.get(), std::move(*c->identity), c->trust);
  if (!provider.ok()) return Fail(provider.status());
  if (auto s = (*provider)->Serve("persona_consulta", DemoPersonaConsulta); !s.ok()) return Fail(s);
  if (auto s = (*provider)->Serve("echo", [](const chasqui::RequestContext&,
                                             std::string_view body) -> absl::StatusOr<std::string> {
        return std::string(body);
      });
      !s.ok()) {
    return Fail(s);
  }
  int sig = 0;
  sigwait(&signals, &sig);
  CHQ_LOG_INFO("signal {}: stopping after {} requests handled, {} refused", sig,
               (*provider)->handled(), (*provider)->refused());
  provider->reset();
  (void)c->bus->Drain(absl::Seconds(2));
  return 0;
}


// Every key in the trust file, whatever its env (TrustStore keeps one env only).
absl::StatusOr<std::vector<chasqui::NatsTrustedName>> TrustedNames(const std::string& path) {
  // Load checks the whole file (every entry, unique serials) before keeping one env.
  CHASQUI_RETURN_IF_ERROR(chasqui::TrustStore::Load(path, "test").status());
  CHASQUI_ASSIGN_OR_RETURN(std::string text, chasqui::ReadFileToString(path, "trust file"));
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object() || !j.contains("identities") || !j["identities"].is_array()) {
    return absl::InvalidArgumentError(
        fmt::format("trust file {}: expected {{\"identities\":[...]}}", path));
  }
  std::vector<chasqui::NatsTrustedName> names;
  for (size_t i = 0; i < j["identities"].size(); ++i) {
    CHASQUI_ASSIGN_OR_RETURN(
        chasqui::PublicIdentity p,
        chasqui::ParsePublicIdentity(j["identities"][i].dump(),
                                     fmt::format("trust file {}: identities[{}]", path, i)));
    // People act through their entity's user: their keys make none.
    if (chasqui::IsPersonRole(p.role)) continue;
    chasqui::NatsUserRole role = chasqui::NatsUserRole::kEntity;
    if (p.role == chasqui::Role::kRouter) {
      role = chasqui::NatsUserRole::kRouter;
    } else if (chasqui::IsServiceRole(p.role)) {
      role = chasqui::NatsUserRole::kService;
    }
    names.push_back({p.entity, p.env, role});
  }
  return names;
}

// Who gets a nats-server user: `chasqui nats-config`'s sources.
struct NatsNames {
  std::string trust_file;             // keys by role (optional)
  std::vector<std::string> entities;  // --entity: entities not enrolled yet
  bool router = false;                // --router
  std::vector<std::string> services;  // --service
  std::string operator_entity;        // --operator-entity: its user may also revoke
  bool watch_user = false;            // --nats-watch: a nats-watch.<env> user
};

// How `chasqui nats-config` writes: new passwords (the default), kept ones, or kept ones and
// then following the revocation lists (--watch).
struct NatsConfigMode {
  bool force = false;
  bool keep_passwords = false;
  bool watch = false;
  std::string roots;     // --roots (with --watch)
  std::string pid_file;  // --nats-pid-file (with --watch)
  int resync_seconds = 60;
};

// nats-server's TLS files as the configuration names them: absolute (nats-server resolves a
// relative path against its own working directory), and checked readable now rather than when
// nats-server starts.
absl::StatusOr<chasqui::NatsTlsFiles> ResolveTlsFiles(chasqui::NatsTlsFiles tls) {
  for (auto [path, flag] : {std::pair{&tls.cert_file, "--tls-cert"},
                            std::pair{&tls.key_file, "--tls-key"},
                            std::pair{&tls.ca_file, "--tls-ca"}}) {
    if (path->empty()) continue;
    std::error_code ec;
    const std::filesystem::path abs = std::filesystem::absolute(*path, ec);
    if (ec || ::access(abs.c_str(), R_OK) != 0) {
      return absl::NotFoundError(fmt::format("{} {}: cannot read it{}", flag, *path,
                                             ec ? "" : fmt::format(" ({})", strerror(errno))));
    }
    *path = abs.lexically_normal().string();
  }
  return tls;
}

// The users the flags name (passwords empty), with a warning for an env without a router.
absl::StatusOr<std::vector<chasqui::NatsUser>> PlanFromFlags(const NatsNames& sources,
                                                            const std::vector<std::string>& envs) {
  std::vector<chasqui::NatsTrustedName> names;
  const std::string source = sources.trust_file.empty() ? "the flags" : sources.trust_file;
  if (!sources.trust_file.empty()) {
    CHASQUI_ASSIGN_OR_RETURN(names, TrustedNames(sources.trust_file));
  }
  for (const std::string& env : envs) {
    for (const std::string& e : sources.entities) {
      names.push_back({e, env, chasqui::NatsUserRole::kEntity});
    }
    for (const std::string& s : sources.services) {
      names.push_back({s, env, chasqui::NatsUserRole::kService});
    }
    if (sources.router) names.push_back({"router", env, chasqui::NatsUserRole::kRouter});
    if (!sources.operator_entity.empty()) {
      names.push_back({sources.operator_entity, env, chasqui::NatsUserRole::kOperator});
    }
    if (sources.watch_user) {
      names.push_back({chasqui::kNatsWatchName, env, chasqui::NatsUserRole::kRevocationWatch});
    }
  }
  if (names.empty()) {
    return absl::InvalidArgumentError(
        "nats-config: nobody to make a user for: give --trust and/or --entity, --router, "
        "--service");
  }
  CHASQUI_ASSIGN_OR_RETURN(auto users, chasqui::PlanNatsUsers(names, envs, source));
  for (const std::string& env : envs) {
    const bool has_router = std::any_of(users.begin(), users.end(), [&](const auto& u) {
      return u.env == env && u.role == chasqui::NatsUserRole::kRouter;
    });
    if (!has_router) {
      std::cerr << fmt::format(
          "chasqui: warning: {} has no router key for env {}: no router.{} user is made\n",
          source, env, env);
    }
  }
  return users;
}

// `chasqui nats-config --watch`: runs until SIGINT/SIGTERM (services/gateway/nats_watch.h).
int NatsWatch(std::vector<chasqui::NatsUser> users, chasqui::NatsConfigInput base,
              const std::string& out, const std::string& secrets_dir, int bcrypt_cost,
              const NatsConfigMode& mode, const NatsLogin& nats) {
  chasqui::InitLogging("nats-watch");
  spdlog::set_level(spdlog::level::info);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  if (mode.roots.empty()) {
    return Fail(absl::InvalidArgumentError(
        "--watch needs --roots roots.json: every revocation list and certificate is verified "
        "against the pinned roots"));
  }
  if (mode.resync_seconds < 1) {
    return Fail(absl::InvalidArgumentError("--resync-seconds: at least 1"));
  }
  const std::string prefix = std::string(chasqui::kNatsWatchName) + ".";
  const std::string env = nats.user.rfind(prefix, 0) == 0 ? nats.user.substr(prefix.size()) : "";
  if (env.empty()) {
    return Fail(absl::InvalidArgumentError(fmt::format(
        "--watch: --nats-user must be a {}<env> user (`chasqui nats-config --nats-watch` makes "
        "one), got \"{}\"",
        prefix, chasqui::Printable(nats.user))));
  }
  auto anchors = chasqui::LoadTrustAnchors(mode.roots);
  if (!anchors.ok()) return Fail(anchors.status());
  chasqui::BusOptions options;
  options.url = nats.url;
  options.user = nats.user;
  options.ca_file = nats.ca_file;
  options.name = "chasqui-nats-watch";
  options.send_asap = true;
  auto bus = chasqui::ConnectWithPasswordFile(options, nats.password_file);
  if (!bus.ok()) return Fail(bus.status());
  chasqui::NatsWatchOptions wo;
  wo.planned = std::move(users);
  wo.base = std::move(base);
  wo.config_path = out;
  wo.secrets_dir = secrets_dir;
  wo.bcrypt_cost = bcrypt_cost;
  wo.pid_file = mode.pid_file;
  wo.anchors = *std::move(anchors);
  wo.inbox_prefix = fmt::format(
      "{}.{}", chasqui::NatsServiceInboxPrefix(chasqui::kNatsWatchName, env), ::getpid());
  wo.resync = absl::Seconds(mode.resync_seconds);
  const size_t planned = wo.planned.size();
  auto watch = chasqui::NatsRevocationWatch::Start(bus->get(), std::move(wo),
                                                   chasqui::SystemClock());
  if (!watch.ok()) return Fail(watch.status());
  CHQ_LOG_INFO("start: {} planned users, config {}, secrets {}, pid file {}, roots {}, as {}",
               planned, out, secrets_dir, mode.pid_file.empty() ? "(none)" : mode.pid_file,
               mode.roots, nats.user);
  int sig = 0;
  sigwait(&signals, &sig);
  CHQ_LOG_INFO("signal {}: stopping ({} configurations written)", sig, (*watch)->state().rewrites);
  watch->reset();
  (void)(*bus)->Drain(absl::Seconds(2));
  return 0;
}

// The operator's verb: nats-server users and permissions from the trust file and flags
// (DESIGN.md, "Names and subjects"). Each password goes to its own 0600 file; the config holds
// only bcrypt hashes of them.
int NatsConfig(const NatsNames& sources, const std::vector<std::string>& envs,
               const std::string& out, const std::string& secrets_dir, const std::string& listen,
               const NatsConfigMode& mode, int bcrypt_cost, const chasqui::NatsTlsFiles& tls_flags,
               const NatsLogin& nats) {
  if (mode.force && (mode.keep_passwords || mode.watch)) {
    return Fail(absl::InvalidArgumentError(
        "--force makes every password new, --keep-passwords and --watch keep them: choose one"));
  }
  if (!mode.watch && (!mode.roots.empty() || !mode.pid_file.empty())) {
    return Fail(absl::InvalidArgumentError("--roots and --nats-pid-file go with --watch"));
  }
  auto tls = ResolveTlsFiles(tls_flags);
  if (!tls.ok()) return Fail(tls.status());
  {
    // The address and TLS files are checked before anything is written.
    chasqui::NatsConfigInput probe;
    probe.listen = listen;
    probe.tls = *tls;
    probe.users.push_back(
        {"router.test", "probe", chasqui::NatsUserRole::kRouter, "router", "test"});
    auto checked = chasqui::NatsServerConfig(probe);
    if (!checked.ok()) return Fail(checked.status());
  }
  auto users = PlanFromFlags(sources, envs);
  if (!users.ok()) return Fail(users.status());
  // Check every target first, so a refusal leaves nothing half written.
  auto secret_path = [&](const chasqui::NatsUser& u) {
    return fmt::format("{}/{}.password", secrets_dir, u.name);
  };
  const bool keep = mode.keep_passwords || mode.watch;
  std::vector<std::string> targets = {out};
  for (const auto& u : *users) targets.push_back(secret_path(u));
  for (const std::string& t : targets) {
    struct stat st;
    if (::lstat(t.c_str(), &st) != 0) continue;
    if (!S_ISREG(st.st_mode)) {
      return Fail(absl::FailedPreconditionError(
          fmt::format("{} exists and is not a regular file (a symlink?): refusing it", t)));
    }
    if (!mode.force && !keep) {
      return Fail(absl::AlreadyExistsError(fmt::format(
          "{} exists: refusing to overwrite it (--keep-passwords rewrites the configuration and "
          "keeps existing passwords; --force replaces everything)",
          t)));
    }
  }
  chasqui::NatsConfigInput input;
  input.listen = listen;
  input.tls = *tls;
  if (mode.watch) {
    return NatsWatch(*std::move(users), std::move(input), out, secrets_dir, bcrypt_cost, mode,
                     nats);
  }
  std::vector<std::string> created;
  if (keep) {
    if (auto s = chasqui::FillKeptNatsPasswords(&*users, secrets_dir, bcrypt_cost, nullptr,
                                                &created);
        !s.ok()) {
      return Fail(s);
    }
    input.users = *users;
  } else {
    if (::mkdir(secrets_dir.c_str(), 0700) != 0 && errno != EEXIST) {
      return Fail(absl::PermissionDeniedError(
          fmt::format("cannot create {}: {}", secrets_dir, strerror(errno))));
    }
    for (chasqui::NatsUser& u : *users) {
      auto password = chasqui::NewNatsPassword();
      if (!password.ok()) return Fail(password.status());
      auto hash = chasqui::BcryptHash(*password, bcrypt_cost);
      if (!hash.ok()) return Fail(hash.status());
      // The password file holds the password alone, no newline.
      absl::Status written = WriteUserFile(secret_path(u), *password, 0600, mode.force);
      ::explicit_bzero(password->data(), password->size());
      if (!written.ok()) return Fail(written);
      u.password = *std::move(hash);
      input.users.push_back(u);
      created.push_back(u.name);
    }
  }
  auto config = chasqui::NatsServerConfig(input);
  if (!config.ok()) return Fail(config.status());
  if (auto s = WriteUserFile(out, *config, 0600, mode.force || keep); !s.ok()) return Fail(s);
  std::cout << fmt::format("wrote {} (mode 0600; bcrypt hashes, cost {}) with {} users:\n", out,
                           bcrypt_cost, input.users.size());
  for (const auto& u : input.users) {
    const bool made = std::find(created.begin(), created.end(), u.name) != created.end();
    std::cout << fmt::format("  {:<24} password in {}{}\n", u.name, secret_path(u),
                             keep ? (made ? " (new)" : " (kept)") : "");
  }
  if (input.tls.enabled()) {
    std::cout << fmt::format(
        "TLS only: certificate {}; clients connect with --nats-ca <the CA that signed it>\n",
        input.tls.cert_file);
  }
  std::cout << fmt::format(
      "start it with:   nats-server -c {}\n"
      "after a change:  nats-server --signal reload   (a removed user is disconnected)\n"
      "give each password file only to the process of that user (gateway, router, service).\n",
      out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"chasqui: keys, trust files and calls for entities joining the backbone"};
  app.require_subcommand(1);

  std::string entity, env = "test", role = "entity", subject, out_dir = ".";
  auto* keygen = app.add_subcommand(
      "keygen", "create a key pair: an entity's gateway, a platform service's or a person's");
  keygen->add_option("--entity", entity,
                     "entity id, e.g. segip (a service's defaults to its role)");
  keygen->add_option("--env", env, "test or prod");
  keygen->add_option("--role", role,
                     "entity (a gateway), router, catalog, crypto, quota, audit, or a person: "
                     "mae, manager, operator (no kx key)");
  keygen->add_option("--subject", subject, "a person's id (roles mae, manager, operator)");
  keygen->add_option("--out", out_dir,
                     "directory for <entity>.<env>.key and .pub (<entity>.<subject>.<env> for "
                     "people)");

  std::string trust_out = "trust.json";
  std::vector<std::string> pubs;
  auto* trust = app.add_subcommand("trust", "assemble a trust file from .pub files");
  trust->add_option("--out", trust_out, "trust file to write");
  trust->add_option("pubs", pubs, ".pub files")->required();

  NatsLogin nats;
  std::string key, provider, service, body;
  TrustFlags trust_flags;
  auto add_trust = [&trust_flags](CLI::App* verb) {
    verb->add_option("--trust", trust_flags.trust_file, "trust file");
    verb->add_option("--roots", trust_flags.roots,
                     "pinned roots (roots.json from `chasqui-crypto init`), with --cert");
    verb->add_option("--cert", trust_flags.cert, "this key's certificate (from `chasqui enrol`)");
  };
  auto add_nats = [&nats](CLI::App* verb) {
    verb->add_option("--nats", nats.url, "NATS server URL");
    verb->add_option("--nats-user", nats.user, "nats-server user (<entity>.<env>)");
    verb->add_option("--nats-password-file", nats.password_file,
                     "file holding that user's password (mode 0600)");
    verb->add_option("--nats-ca", nats.ca_file, "nats-server's CA (PEM): connect over TLS");
  };
  chasqui::CallOptions call_options;
  int64_t timeout_ms = 10000;
  auto* call = app.add_subcommand("call", "call a service through the backbone");
  add_nats(call);
  call->add_option("--key", key, "this entity's key file")->required();
  add_trust(call);
  call->add_option("--provider", provider, "provider entity")->required();
  call->add_option("--service", service, "service name")->required();
  call->add_option("--end-user", call_options.end_user, "official on whose behalf")->required();
  call->add_option("--purpose", call_options.purpose, "purpose of the query");
  call->add_option("--body", body, "request body");
  call->add_option("--timeout-ms", timeout_ms, "give up after this long");

  auto* serve = app.add_subcommand("serve-demo", "serve demo persona_consulta and echo services");
  add_nats(serve);
  serve->add_option("--key", key, "this entity's key file")->required();
  add_trust(serve);

  std::string enrol_token, enrol_token_file, enrol_role, enrol_subject, enrol_roots, enrol_out;
  bool enrol_force = false;
  int64_t enrol_timeout_ms = 10000;
  auto* enrol = app.add_subcommand(
      "enrol", "get a certificate for a key from the crypto service, with a one-time token");
  add_nats(enrol);
  enrol->add_option("--key", key, "the key file to certify (from `chasqui keygen`)")->required();
  enrol->add_option("--token", enrol_token, "the one-time enrolment token from the operator");
  enrol->add_option("--token-file", enrol_token_file,
                    "file holding the token (keeps it out of the process list)");
  enrol->add_option("--role", enrol_role, "the key's role, as on the token")->required();
  enrol->add_option("--subject", enrol_subject, "a person's id (mae, manager, operator)");
  enrol->add_option("--roots", enrol_roots, "pinned roots (roots.json)")->required();
  enrol->add_option("--out", enrol_out, "certificate file to write (mode 0644)")->required();
  enrol->add_flag("--force", enrol_force, "replace an existing certificate file");
  enrol->add_option("--timeout-ms", enrol_timeout_ms, "give up waiting after this long");

  NatsNames nc_names;
  std::string nc_out = "nats.conf", nc_secrets, nc_listen = "127.0.0.1:4222";
  std::vector<std::string> nc_envs;
  int nc_bcrypt_cost = 11;
  auto* nats_config = app.add_subcommand(
      "nats-config", "write nats-server's users and permissions for entities, routers and services");
  nats_config->add_option("--trust", nc_names.trust_file,
                          "trust file: a user per key's entity/router/service (people: none)");
  nats_config->add_option("--entity", nc_names.entities,
                          "an entity with no key in the trust file yet (repeatable)");
  nats_config->add_flag("--router", nc_names.router, "a router.<env> user");
  nats_config->add_option("--service", nc_names.services,
                          "a platform service's user: crypto, audit, catalog, quota (repeatable)");
  nats_config->add_option("--env", nc_envs, "environment (repeat for several): test, prod")
      ->required()
      ->take_all();
  nats_config->add_option("--out", nc_out, "nats-server configuration file to write");
  nats_config->add_option("--secrets-dir", nc_secrets,
                          "directory for <user>.password files (created 0700)")
      ->required();
  nats_config->add_option("--listen", nc_listen, "nats-server's client address, host:port");
  NatsConfigMode nc_mode;
  nats_config->add_option("--operator-entity", nc_names.operator_entity,
                          "the platform operator's entity (e.g. agetic): its user may also "
                          "publish chq.ctl.crypto.revoke (`chasqui revoke`)");
  nats_config->add_flag("--nats-watch", nc_names.watch_user,
                        "a nats-watch.<env> user for `chasqui nats-config --watch`");
  nats_config->add_flag("--force", nc_mode.force, "replace existing files (all passwords change)");
  nats_config->add_flag("--keep-passwords", nc_mode.keep_passwords,
                        "rewrite the configuration keeping each existing <user>.password (new "
                        "ones only for new users): nobody else is disconnected");
  nats_config->add_flag("--watch", nc_mode.watch,
                        "keep running: follow the revocation lists and remove the users of "
                        "withdrawn entities (keeps passwords; needs --roots, a nats-watch user)");
  nats_config->add_option("--roots", nc_mode.roots,
                          "with --watch: pinned roots (roots.json) every list is verified with");
  nats_config->add_option("--nats-pid-file", nc_mode.pid_file,
                          "with --watch: nats-server's pid file (nats-server -P): SIGHUP after "
                          "each rewrite");
  nats_config->add_option("--resync-seconds", nc_mode.resync_seconds,
                          "with --watch: fetch the lists this often (missed events)");
  add_nats(nats_config);
  nats_config->add_option("--bcrypt-cost", nc_bcrypt_cost, "bcrypt cost (4..31)");
  chasqui::NatsTlsFiles nc_tls;
  nats_config->add_option("--tls-cert", nc_tls.cert_file,
                          "nats-server's TLS certificate: clients must use TLS (deploy/tls-ca.sh)");
  nats_config->add_option("--tls-key", nc_tls.key_file, "its private key");
  nats_config->add_option("--tls-ca", nc_tls.ca_file,
                          "the CA file, for client certificates offered (optional)");
  nats_config->add_option("--tls-timeout", nc_tls.timeout_seconds,
                          "TLS handshake timeout in seconds (1..60)");

  chasqui::TopOptions top_options;
  std::vector<std::string> top_routers;
  auto* top = app.add_subcommand(
      "top", "live exchanges per consumer and service, from the routers' /metrics");
  top->add_option("--router", top_routers,
                  "a router's ops base URL (repeatable; default http://127.0.0.1:9101)");
  top->add_option("--interval", top_options.interval_seconds, "seconds between refreshes");
  top->add_flag("--once", top_options.once, "print one view (two scrapes) and exit");
  top->add_flag("--json", top_options.json, "JSON lines instead of the table");

  chasqui::cli::AddCatalogCommands(app);
  chasqui::cli::AddQuotaCommands(app);
  chasqui::cli::AddRevokeCommand(app);
  CLI11_PARSE(app, argc, argv);
  std::signal(SIGPIPE, SIG_IGN);
  spdlog::set_level(spdlog::level::warn);
  int rc = 0;
  if (*keygen) rc = Keygen(entity, env, role, subject, out_dir);
  if (*enrol) {
    rc = Enrol(nats, key, enrol_token, enrol_token_file, enrol_role, enrol_subject, enrol_roots,
               enrol_out, enrol_force, enrol_timeout_ms);
  }
  if (*trust) rc = Trust(trust_out, pubs);
  if (*call) {
    call_options.timeout = absl::Milliseconds(timeout_ms);
    rc = Call(nats, key, trust_flags, provider, service, call_options, body);
  }
  if (*serve) rc = ServeDemo(nats, key, trust_flags);
  if (*nats_config) {
    rc = NatsConfig(nc_names, nc_envs, nc_out, nc_secrets, nc_listen, nc_mode, nc_bcrypt_cost,
                    nc_tls, nats);
  }
  if (*top) {
    if (!top_routers.empty()) top_options.routers = top_routers;
    rc = chasqui::RunTop(top_options);
  }
  chasqui::CloseNatsLibrary();
  return rc;
}
