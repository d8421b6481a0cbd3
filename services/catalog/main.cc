// chasqui-catalog: entities, adhesion, services, grants and end users. Flags, dependencies,
// Run; the logic lives in chasqui_catalog.
//   chasqui-catalog init  --data DIR [--passphrase-file F] [--kdf moderate]
//   chasqui-catalog enrol --data DIR --env ENV --token T [--passphrase-file F] [--nats URL ...]
//   chasqui-catalog serve --data DIR --anchors roots.json --nta-file NTA.txt
//                         [--passphrase-file F] [--env test --env prod] [--nats URL ...]
//                         [--ops-host H --ops-port P]
//
// Data directory (mode 0700):
//   catalog.key               the catalog's Ed25519 key, sealed under the passphrase
//                             (the crypto service's key file format, root_key.h)
//   certificate-<env>.pb      its certificate (role catalog) in each env, from `enrol`
//   db/                       RocksDB (catalog.h's layout)
//
// Exit codes: 0 success; 2 usage, a file or the store cannot be used (another process holds
// the store), or the crypto service refused.

#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <iostream>
#include <map>
#include <memory>

#include "CLI/CLI.hpp"
#include "common/bus/bus.h"
#include "common/bus/nats_config.h"
#include "common/core/files.h"
#include "common/core/log.h"
#include "common/core/names.h"
#include "common/core/signals.h"
#include "common/core/status.h"
#include "common/crypto/sodium.h"
#include "common/ops/ops_server.h"
#include "common/store/kv_store.h"
#include "common/trust/anchors.h"
#include "common/trust/certificate.h"
#include "common/trust/crypto_client.h"
#include "common/trust/directory.h"
#include "common/trust/requests.h"
#include "fmt/format.h"
#include "nats/nats.h"
#include "services/catalog/catalog.h"
#include "services/catalog/catalog_service.h"
#include "services/catalog/catalog_signing.h"
#include "services/crypto/root_key.h"

namespace {

using namespace chasqui;

int Fail(const absl::Status& status) {
  CHQ_LOG_ERROR("catalog: {}", MessageOf(status));
  return 2;
}

std::string KeyPath(const std::string& data) { return data + "/catalog.key"; }
std::string CertificatePath(const std::string& data, const std::string& env) {
  return fmt::format("{}/certificate-{}.pb", data, env);
}
std::string StorePath(const std::string& data) { return data + "/db"; }

absl::StatusOr<Passphrase> GetPassphrase(const std::string& file, std::string_view prompt,
                                         bool confirm) {
  if (!file.empty()) return ReadPassphraseFile(file);
  return ReadPassphraseFromTerminal(prompt, confirm);
}

absl::StatusOr<SigningKey> LoadKey(const std::string& data, const std::string& passphrase_file) {
  CHASQUI_ASSIGN_OR_RETURN(Passphrase pass,
                           GetPassphrase(passphrase_file, "Passphrase of the catalog key: ", false));
  return ReadEncryptedRootKey(KeyPath(data), pass);
}

int Init(const std::string& data, const std::string& passphrase_file, const std::string& kdf) {
  auto cost = ParseKdfCost(kdf);
  if (!cost.ok()) return Fail(cost.status());
  if (::mkdir(data.c_str(), 0700) != 0 && errno != EEXIST) {
    return Fail(absl::PermissionDeniedError(fmt::format("cannot create {}", data)));
  }
  auto pass = GetPassphrase(passphrase_file, "Passphrase for the catalog key: ", true);
  if (!pass.ok()) return Fail(pass.status());
  const SigningKey key = SigningKey::Generate();
  if (absl::Status s = WriteEncryptedRootKey(KeyPath(data), key, *pass, *cost); !s.ok()) {
    return Fail(s);
  }
  auto store = KvStore::Open({.path = StorePath(data)});
  if (!store.ok()) return Fail(store.status());
  CHQ_LOG_INFO("catalog key created: {}", KeyPath(data));
  std::cout << fmt::format(
      "Catalog key created in {} (sealed under the passphrase).\n"
      "  sign public key: {}\n"
      "Next: an operator issues an enrolment token for it in each environment\n"
      "  (chasqui-crypto token --entity catalog --role catalog --env ENV), then\n"
      "  chasqui-catalog enrol --data {} --env ENV --token TOKEN\n",
      KeyPath(data), ToBase64(AsView(key.public_key())), data);
  return 0;
}

int Enrol(const std::string& data, const std::string& passphrase_file, const std::string& env,
          const std::string& token, BusOptions bus_options, const std::string& password_file) {
  if (absl::Status s = ValidateEnv(env); !s.ok()) return Fail(s);
  auto key = LoadKey(data, passphrase_file);
  if (!key.ok()) return Fail(key.status());
  bus_options.name = fmt::format("chasqui-catalog-enrol-{}", ::getpid());
  bus_options.send_asap = true;
  auto bus = ConnectWithPasswordFile(bus_options, password_file);
  if (!bus.ok()) return Fail(bus.status());
  auto client = CryptoClient::Create(bus->get(), fmt::format("_INBOX._catalog.{}.enrol", env));
  if (!client.ok()) return Fail(client.status());
  v1::EnrolmentRequestBody body;
  body.set_subject("catalog");
  body.set_role(v1::CERTIFICATE_ROLE_CATALOG);
  body.set_entity("catalog");
  body.set_env(env);
  body.set_sign_pk(std::string(AsView(key->public_key())));
  // A platform service's certificate must carry a kx key; the catalog never seals, so the
  // secret half is thrown away at once.
  body.set_kx_pk(std::string(AsView(KxKey::Generate().public_key())));
  body.set_token(token);
  body.set_sent_at_ms(SystemClock().NowUnixMillis());
  auto reply = (*client)->Enrol(MakeEnrolmentRequest(body, *key));
  if (!reply.ok()) return Fail(reply.status());
  if (absl::Status s = WriteFileDurably(CertificatePath(data, env),
                                        reply->certificate().SerializeAsString(), 0644, true);
      !s.ok()) {
    return Fail(s);
  }
  v1::CertificateBody cb;
  cb.ParseFromString(reply->certificate().body());
  CHQ_LOG_INFO("catalog enrolled in {}: certificate {}", env, cb.serial());
  std::cout << fmt::format("Catalog certificate {} for {} written to {}\n", cb.serial(), env,
                           CertificatePath(data, env));
  return 0;
}

struct ServeFlags {
  std::string data;
  std::string passphrase_file;
  std::string anchors;
  std::string nta_file;
  std::vector<std::string> envs = {"test", "prod"};
  BusOptions bus;
  std::string nats_password_file;
  OpsOptions ops;
};

int Serve(ServeFlags f) {
  const Clock& clock = SystemClock();
  auto anchors = LoadTrustAnchors(f.anchors);
  if (!anchors.ok()) return Fail(anchors.status());
  auto nta = ReadFileToString(f.nta_file, "NTA text");
  if (!nta.ok()) return Fail(nta.status());
  auto key = LoadKey(f.data, f.passphrase_file);
  if (!key.ok()) return Fail(key.status());

  std::map<std::string, std::unique_ptr<CertificateDirectory>> directories;
  std::map<std::string, CertificateDirectory*> directory_ptrs;
  std::map<std::string, uint64_t> serials;
  const int64_t now = clock.NowUnixMillis();
  for (const std::string& env : f.envs) {
    auto bytes = ReadFileToString(CertificatePath(f.data, env), "catalog certificate");
    if (!bytes.ok()) return Fail(bytes.status());
    auto cert = VerifyCertificate(*bytes, *anchors, env, now);
    if (!cert.ok()) return Fail(cert.status());
    if (cert->role != v1::CERTIFICATE_ROLE_CATALOG || cert->sign_pk != key->public_key()) {
      return Fail(absl::FailedPreconditionError(fmt::format(
          "{}: not a catalog certificate for this catalog's key", CertificatePath(f.data, env))));
    }
    serials[env] = cert->serial;
    auto dir = std::make_unique<CertificateDirectory>(env, *anchors);
    if (absl::Status s = dir->AddCertificates({*bytes}, now); !s.ok()) return Fail(s);
    directory_ptrs[env] = dir.get();
    directories[env] = std::move(dir);
  }
  auto store = KvStore::Open({.path = StorePath(f.data)});
  if (!store.ok()) return Fail(store.status());

  TerminationSignals signals;  // before any thread starts: they inherit the mask
  f.bus.name = fmt::format("chasqui-catalog-{}", ::getpid());
  f.bus.send_asap = true;  // few, latency-bound requests
  auto bus = ConnectWithPasswordFile(f.bus, f.nats_password_file);
  if (!bus.ok()) return Fail(bus.status());
  // Under the catalog user's own inbox space (`chasqui nats-config`), or nats-server refuses it.
  auto crypto = CryptoClient::Create(
      bus->get(), fmt::format("{}.crypto", NatsServiceInboxPrefix("catalog", f.envs.front())),
      absl::Seconds(3));
  if (!crypto.ok()) return Fail(crypto.status());
  CryptoClient* crypto_client = crypto->get();
  std::vector<std::unique_ptr<Subscription>> watches;
  for (auto& [env, dir] : directories) {
    if (absl::Status s = CatchUpRevocations(*crypto_client, *dir, clock); !s.ok()) {
      // Not fatal: control requests are answered Unavailable until a list arrives.
      CHQ_LOG_WARN("revocation list for {} not fetched yet: {}", env, MessageOf(s));
    }
    auto w = WatchRevocations(bus->get(), dir.get(), clock);
    if (!w.ok()) return Fail(w.status());
    watches.push_back(*std::move(w));
  }
  // A person's certificate the directory does not hold yet is fetched from the crypto service
  // (and verified against the anchors by the directory, never taken on its word).
  DirectoryLookup lookup(directory_ptrs, [crypto_client, &clock](CertificateDirectory& dir,
                                                                 uint64_t serial, int64_t) {
    if (dir.revocation_version() == 0) {
      if (absl::Status s = CatchUpRevocations(*crypto_client, dir, clock); !s.ok()) return s;
    }
    v1::DirectoryRequest req;
    req.set_env(dir.env());
    req.add_serials(serial);
    CHASQUI_ASSIGN_OR_RETURN(v1::DirectoryReply reply, crypto_client->Directory(req));
    std::vector<std::string> certs;
    for (const v1::Certificate& c : reply.certificates()) certs.push_back(c.SerializeAsString());
    return dir.AddCertificates(certs, clock.NowUnixMillis());
  });
  LocalCatalogSigner signer(*std::move(key), serials);
  CatalogOptions options;
  options.envs = f.envs;
  const Hash32 nta_hash = Blake2b256(*nta);
  options.nta_hash = std::string(AsView(nta_hash));
  auto catalog = Catalog::Open(options, store->get(), lookup, signer, clock);
  if (!catalog.ok()) return Fail(catalog.status());
  CHQ_LOG_INFO("config: data={} envs={} nats={} nta={} (hash {}) anchors={}", f.data,
               fmt::join(f.envs, ","), f.bus.url, f.nta_file,
               ToHex(options.nta_hash).substr(0, 16), f.anchors);

  auto registry = std::make_shared<prometheus::Registry>();
  auto service = CatalogService::Start({}, bus->get(), catalog->get(), registry);
  if (!service.ok()) return Fail(service.status());
  CatalogService* s = service->get();
  auto ops = OpsServer::Start(f.ops, registry, [s] { return s->Ready(); });
  if (!ops.ok()) return Fail(ops.status());
  CHQ_LOG_INFO("ready: ops port {}", (*ops)->port());

  const int sig = signals.Wait();
  CHQ_LOG_INFO("signal {}: draining", sig);
  if (auto st = (*service)->Drain(absl::Seconds(5)); !st.ok()) {
    CHQ_LOG_WARN("drain: {}", MessageOf(st));
  }
  service->reset();
  watches.clear();
  if (auto st = (*bus)->Drain(absl::Seconds(5)); !st.ok()) {
    CHQ_LOG_WARN("drain: {}", MessageOf(st));
  }
  crypto->reset();
  bus->reset();
  ops->reset();
  catalog->reset();
  store->reset();
  chasqui::CloseNatsLibrary();
  CHQ_LOG_INFO("catalog stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  InitLogging("catalog");
  DisableCoreDumps();  // a core would hold the catalog's signing key
  std::signal(SIGPIPE, SIG_IGN);

  CLI::App app{"Chasqui catalog: adhesion, services, grants and end users"};
  app.require_subcommand(1);
  std::string data, passphrase_file, kdf = "moderate";
  auto* init = app.add_subcommand("init", "create the catalog's key and store");
  init->add_option("--data", data, "data directory (created, mode 0700)")->required();
  init->add_option("--passphrase-file", passphrase_file,
                   "file holding the passphrase (mode 0600); default: ask on the terminal");
  init->add_option("--kdf", kdf, "passphrase hashing cost: moderate, interactive, or "
                                 "test-minimum (tests only)");

  std::string env, token;
  BusOptions bus_options;
  std::string nats_password_file;
  auto* enrol = app.add_subcommand("enrol", "get the catalog's certificate for one env");
  enrol->add_option("--data", data, "data directory")->required();
  enrol->add_option("--passphrase-file", passphrase_file, "the catalog key's passphrase file");
  enrol->add_option("--env", env, "test or prod")->required();
  enrol->add_option("--token", token, "enrolment token from chasqui-crypto token")->required();
  enrol->add_option("--nats", bus_options.url, "NATS server URL");
  enrol->add_option("--nats-user", bus_options.user, "nats-server user of the catalog");
  enrol->add_option("--nats-password-file", nats_password_file, "that user's password file");
  enrol->add_option("--nats-ca", bus_options.ca_file, "nats-server's CA (PEM): connect over TLS");

  ServeFlags sf;
  auto* serve = app.add_subcommand("serve", "answer chq.ctl.catalog.* and publish events");
  serve->add_option("--data", sf.data, "data directory")->required();
  serve->add_option("--passphrase-file", sf.passphrase_file, "the catalog key's passphrase file");
  serve->add_option("--anchors", sf.anchors, "roots.json from chasqui-crypto init")->required();
  serve->add_option("--nta-file", sf.nta_file, "the NTA text in force (its hash is signed)")
      ->required();
  serve->add_option("--env", sf.envs, "environments served (repeatable)");
  serve->add_option("--nats", sf.bus.url, "NATS server URL");
  serve->add_option("--nats-user", sf.bus.user, "nats-server user of the catalog");
  serve->add_option("--nats-password-file", sf.nats_password_file, "that user's password file");
  serve->add_option("--nats-ca", sf.bus.ca_file, "nats-server's CA (PEM): connect over TLS");
  serve->add_option("--ops-host", sf.ops.host, "address for /metrics, /healthz, /readyz");
  serve->add_option("--ops-port", sf.ops.port, "port for /metrics etc. (0 = pick one)");
  CLI11_PARSE(app, argc, argv);

  if (*init) return Init(data, passphrase_file, kdf);
  if (*enrol) return Enrol(data, passphrase_file, env, token, bus_options, nats_password_file);
  return Serve(std::move(sf));
}
