// chasqui-gateway: flags, dependencies, run. The logic lives in chasqui_http_gateway.

#include <sodium.h>

#include <algorithm>
#include <csignal>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "common/bus/bus.h"
#include "common/core/files.h"
#include "common/core/log.h"
#include "common/core/signals.h"
#include "common/core/names.h"
#include "common/core/status.h"
#include "common/envelope/identity.h"
#include "common/ops/ops_server.h"
#include "fmt/format.h"
#include "nats/nats.h"
#include "common/trust/anchors.h"
#include "common/trust/certificate_trust.h"
#include "services/gateway/gateway_catalog.h"
#include "services/gateway/http_gateway.h"
#include "services/gateway/mock_answer.h"

namespace {

int Fail(const absl::Status& status) {
  CHQ_LOG_ERROR("gateway stopped: {}", chasqui::MessageOf(status));
  return 2;
}

// The key file's content without surrounding whitespace. Never logged.
absl::StatusOr<std::string> ReadApiKey(const std::string& path) {
  auto content = chasqui::ReadFileToString(path, "API key file");
  if (!content.ok()) return content.status();
  std::string key = *std::move(content);
  const auto first = key.find_first_not_of(" \t\r\n");
  const auto last = key.find_last_not_of(" \t\r\n");
  std::string trimmed = first == std::string::npos ? "" : key.substr(first, last - first + 1);
  sodium_memzero(key.data(), key.size());
  if (trimmed.empty()) {
    return absl::InvalidArgumentError(fmt::format(
        "API key file {}: is empty; expected the key on one line (e.g. from `openssl rand -hex "
        "32`)",
        path));
  }
  for (unsigned char c : trimmed) {
    if (c < 0x21 || c == 0x7f) {
      sodium_memzero(trimmed.data(), trimmed.size());
      return absl::InvalidArgumentError(fmt::format(
          "API key file {}: the key contains spaces or control characters; expected one token",
          path));
    }
  }
  return trimmed;
}

// The entity's next key during a rotation's overlap must be an entity key of the gateway's own
// entity and env, with another serial. Errors name the flag and the files.
absl::StatusOr<chasqui::Identity> CheckNextKey(chasqui::Identity next,
                                               const chasqui::PublicIdentity& mine,
                                               const std::string& key_file,
                                               const std::string& own_key_file) {
  if (next.pub.role != chasqui::Role::kEntity || next.pub.entity != mine.entity ||
      next.pub.env != mine.env) {
    return absl::InvalidArgumentError(fmt::format(
        "--next-key {}: holds {}'s {} key for {}; expected {}'s next entity key for {} (the "
        "key in {} is)",
        key_file, next.pub.entity, chasqui::RoleName(next.pub.role), next.pub.env, mine.entity,
        mine.env, own_key_file));
  }
  if (next.pub.serial == mine.serial) {
    return absl::InvalidArgumentError(fmt::format(
        "--next-key {}: serial {} is the --key's own; give the new key enrolled for the rotation",
        key_file, mine.serial));
  }
  return next;
}

// `--next-key` (with `--next-cert` on certificates, verified against the pinned roots).
absl::StatusOr<chasqui::Identity> LoadNextKey(const std::string& key_file,
                                              const std::string& cert_file,
                                              const chasqui::KeyAndTrust& own,
                                              const std::string& own_key_file) {
  if (own.on_certificates) {
    if (cert_file.empty()) {
      return absl::InvalidArgumentError(
          "--next-key: give its certificate too (--next-cert, from `chasqui enrol`)");
    }
    auto certified = chasqui::LoadCertifiedIdentity(key_file, cert_file, own.anchors,
                                                    chasqui::SystemClock().NowUnixMillis());
    if (!certified.ok()) {
      return absl::Status(certified.status().code(),
                          fmt::format("--next-key/--next-cert: {}",
                                      chasqui::MessageOf(certified.status())));
    }
    return CheckNextKey(std::move(certified->identity), own.identity.pub, key_file,
                        own_key_file);
  }
  if (!cert_file.empty()) {
    return absl::InvalidArgumentError(
        "--next-cert: certificates need --roots (this gateway runs on a trust file)");
  }
  auto loaded = chasqui::LoadIdentity(key_file);
  if (!loaded.ok()) {
    return absl::Status(loaded.status().code(),
                        fmt::format("--next-key: {}", chasqui::MessageOf(loaded.status())));
  }
  return CheckNextKey(*std::move(loaded), own.identity.pub, key_file, own_key_file);
}

}  // namespace

int main(int argc, char** argv) {
  chasqui::InitLogging("gateway");
  chasqui::HttpGatewayOptions options;
  chasqui::BusOptions bus_options;
  chasqui::OpsOptions ops_options;
  std::string env;
  std::string key_file;
  std::string trust_file;
  std::string roots_file;
  std::string cert_file;
  std::string next_key_file;
  std::string next_cert_file;
  std::vector<uint64_t> own_serials;
  int64_t trust_refresh_s = 30;
  std::string listen = "127.0.0.1:8080";
  std::string api_key_file;
  int64_t call_timeout_ms = 10'000;
  int64_t upstream_timeout_ms = 4'000;
  int64_t idempotency_ttl_s = 24 * 3600;
  std::vector<std::string> serve_specs;
  bool follow_catalog = false;
  bus_options.url = "nats://127.0.0.1:4222";

  CLI::App app{"Chasqui entity gateway: bridges the entity's HTTP systems to Chasqui"};
  app.add_option("--env", env, "environment: test or prod")->required();
  app.add_option("--nats", bus_options.url, "NATS server URL");
  std::string nats_password_file;
  app.add_option("--nats-user", bus_options.user,
                 "nats-server user from `chasqui nats-config` (router.<env>, or <entity>.<env>)");
  app.add_option("--nats-password-file", nats_password_file,
                 "file holding that user's password (mode 0600; never on the command line)");
  app.add_option("--nats-ca", bus_options.ca_file, "nats-server's CA (PEM): connect over TLS");
  app.add_option("--key", key_file, "the entity's key file (from `chasqui keygen`)")->required();
  app.add_option("--trust", trust_file,
                 "trust file listing the keys this gateway accepts (or --roots with --cert)");
  app.add_option("--roots", roots_file,
                 "pinned roots (roots.json from `chasqui-crypto init`): trust certificates from "
                 "the crypto service's directory instead of a trust file; needs --cert");
  app.add_option("--cert", cert_file, "this gateway's certificate (from `chasqui enrol`)");
  app.add_option("--next-key", next_key_file,
                 "a key rotation's overlap: the entity's next key file; the provider side "
                 "serves requests sealed for it as well as for --key's (needs --serve)");
  app.add_option("--next-cert", next_cert_file,
                 "the certificate of --next-key (from `chasqui enrol`; with --roots)");
  app.add_option("--own-serial", own_serials,
                 "another gateway certificate of this entity that it requested (the other key "
                 "during a rotation): not reported as unrequested (repeatable)");
  app.add_option("--trust-refresh-s", trust_refresh_s,
                 "with --roots: how often to catch up on revocations and look for certificates "
                 "in this entity's name")
      ->capture_default_str();
  app.add_option("--listen", listen,
                 "HOST:PORT for the entity's systems (POST /v1/{provider}/{service}); port 0 "
                 "picks one and logs it")
      ->capture_default_str();
  app.add_option("--api-key-file", api_key_file,
                 "require `Authorization: Bearer <key>`; the file holds the key");
  app.add_option("--max-body-bytes", options.max_body_bytes,
                 "largest request body (413 above it) and largest upstream answer")
      ->capture_default_str();
  app.add_option("--call-timeout-ms", call_timeout_ms,
                 "how long a consumer call waits for the platform's answer")
      ->capture_default_str();
  app.add_option("--upstream-timeout-ms", upstream_timeout_ms,
                 "how long the provider side waits for the entity's system; below the router's "
                 "--provider-timeout-ms (5000), so a slow system reaches the consumer as "
                 "PROVIDER_ERROR (502) naming this wait rather than as the router's TIMEOUT (504)")
      ->capture_default_str();
  app.add_option("--provider-workers", options.provider_workers,
                 "upstream calls in flight at once, per served service")
      ->capture_default_str();
  app.add_option("--provider-queue", options.provider_queue,
                 "requests that may wait for a free worker, per served service; past that they "
                 "are answered UNAVAILABLE (503, \"saturated\") at once")
      ->capture_default_str();
  app.add_option("--idempotency-ttl-s", idempotency_ttl_s,
                 "how long the provider side remembers the answer to a request that carried an "
                 "Idempotency-Key")
      ->capture_default_str();
  app.add_option("--idempotency-max-entries", options.idempotency.max_entries,
                 "most answers remembered for Idempotency-Key repeats (oldest forgotten first)")
      ->capture_default_str();
  app.add_option("--idempotency-max-bytes", options.idempotency.max_bytes,
                 "most bytes of answers remembered for Idempotency-Key repeats")
      ->capture_default_str();
  app.add_option("--serve", serve_specs,
                 "SERVICE=URL: serve SERVICE by POSTing to the entity system at URL; SERVICE=mock: "
                 "answer with the example in its response schema in the catalog (env test only; "
                 "needs --catalog) (repeatable)");
  app.add_flag("--catalog", follow_catalog,
               "follow the catalog (needs --roots and --cert): check grants on the provider "
               "side, serve GET /v1/openapi.json and mocks; unready until the first snapshot");
  app.add_option("--http-threads", options.http_threads,
                 "HTTP worker threads (each consumer call holds one while it waits)")
      ->capture_default_str();
  app.add_option("--ops-host", ops_options.host, "address for /metrics, /healthz, /readyz")
      ->capture_default_str();
  app.add_option("--ops-port", ops_options.port, "port for /metrics etc. (0 = pick one)")
      ->capture_default_str();
  app.add_flag("--send-asap", bus_options.send_asap,
               "flush every publish at once (lower latency, lower pipelined throughput)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    return Fail(absl::InvalidArgumentError(fmt::format("{} (see --help)", e.what())));
  }

  chasqui::DisableCoreDumps();  // a core would hold the entity's private keys
  std::signal(SIGPIPE, SIG_IGN);
  if (!chasqui::IsValidEnv(env)) {
    return Fail(absl::InvalidArgumentError(
        fmt::format("--env \"{}\": expected test or prod", chasqui::Printable(env))));
  }
  auto address = chasqui::ParseListenAddress(listen);
  if (!address.ok()) return Fail(address.status());
  options.host = address->first;
  options.port = address->second;
  options.call_timeout = absl::Milliseconds(call_timeout_ms);
  options.upstream_timeout = absl::Milliseconds(upstream_timeout_ms);
  options.idempotency.ttl = absl::Seconds(idempotency_ttl_s);
  for (const std::string& spec : serve_specs) {
    if (auto s = chasqui::AddServeSpec(spec, options); !s.ok()) return Fail(s);
  }
  if (auto s = chasqui::ValidateGatewayOptions(options); !s.ok()) return Fail(s);
  if (auto s = chasqui::CheckMockAllowed(options.mock, env); !s.ok()) return Fail(s);
  if (!api_key_file.empty()) {
    auto key = ReadApiKey(api_key_file);
    if (!key.ok()) return Fail(key.status());
    options.api_key = *std::move(key);
  }

  const bool on_certificates = !roots_file.empty() || !cert_file.empty();
  if (on_certificates == !trust_file.empty() || (on_certificates && (roots_file.empty() ||
                                                                     cert_file.empty()))) {
    return Fail(absl::InvalidArgumentError(
        "give --trust FILE, or --roots roots.json with --cert K.cert (from `chasqui enrol`); "
        "exactly one of the two"));
  }
  if (follow_catalog && !on_certificates) {
    return Fail(absl::InvalidArgumentError(
        "--catalog: the catalog's signatures are checked against the crypto service's "
        "certificates; give --roots roots.json with --cert K.cert instead of --trust"));
  }
  if (!options.mock.empty() && !follow_catalog) {
    return Fail(absl::InvalidArgumentError(fmt::format(
        "--serve {}=mock: mock answers come from the examples in the catalog; add --catalog",
        options.mock.front())));
  }
  auto loaded = chasqui::LoadKeyAndTrust(key_file, roots_file, cert_file, trust_file, env,
                                         chasqui::SystemClock().NowUnixMillis());
  if (!loaded.ok()) return Fail(loaded.status());
  chasqui::Identity* identity = &loaded->identity;
  const chasqui::TrustAnchors& anchors = loaded->anchors;
  const std::string& own_certificate = loaded->own_certificate;
  std::optional<chasqui::TrustStore>& trust = loaded->store;
  if (identity->pub.role != chasqui::Role::kEntity || identity->pub.env != env) {
    return Fail(absl::InvalidArgumentError(fmt::format(
        "key file {}: holds a {} key for {}; expected an entity key for {} (make one with "
        "`chasqui keygen --entity <id> --env {}`)",
        key_file, chasqui::RoleName(identity->pub.role), identity->pub.env, env, env)));
  }
  const std::string entity = identity->pub.entity;
  std::vector<chasqui::Identity> next_keys;
  if (!next_key_file.empty() || !next_cert_file.empty()) {
    if (next_key_file.empty()) {
      return Fail(absl::InvalidArgumentError("--next-cert: give the key too (--next-key)"));
    }
    if (options.serve.empty() && options.mock.empty()) {
      return Fail(absl::InvalidArgumentError(
          "--next-key: only the provider side uses it; this gateway serves nothing (--serve)"));
    }
    auto next = LoadNextKey(next_key_file, next_cert_file, *loaded, key_file);
    if (!next.ok()) return Fail(next.status());
    own_serials.push_back(next->pub.serial);  // requested, not to be reported
    next_keys.push_back(*std::move(next));
  }
  bus_options.name = fmt::format("chasqui-gateway-{}", entity);
  const std::string trust_text =
      on_certificates
          ? fmt::format("roots={} ({} pinned) cert={}", roots_file, anchors.anchors().size(),
                        cert_file)
          : fmt::format("trust={} ({} keys for {})", trust_file, trust->size(), env);
  CHQ_LOG_INFO(
      "config: entity={} env={} nats={} key={} (serial {}) {} listen={} "
      "api key={} max body={} B call timeout={} ms upstream timeout={} ms serve={} provider "
      "workers={} queue={} idempotency ttl={} s max entries={} max bytes={} mocks={} "
      "catalog={}",
      entity, env, bus_options.url, key_file, identity->pub.serial, trust_text, listen, api_key_file.empty() ? "none" : "from " + api_key_file, options.max_body_bytes,
      call_timeout_ms, upstream_timeout_ms, options.serve.size(), options.provider_workers,
      options.provider_queue, idempotency_ttl_s, options.idempotency.max_entries,
      options.idempotency.max_bytes, options.mock.size(), follow_catalog ? "followed" : "no");
  if (!next_keys.empty()) {
    CHQ_LOG_INFO("key rotation overlap: the provider side serves key serials [{}, {}] ({} and "
                 "--next-key {}); the consumer side signs with serial {}",
                 identity->pub.serial, next_keys.front().pub.serial, key_file, next_key_file,
                 identity->pub.serial);
  }

  chasqui::TerminationSignals signals;  // before any thread starts: they inherit the mask

  auto bus = chasqui::ConnectWithPasswordFile(bus_options, nats_password_file);
  if (!bus.ok()) return Fail(bus.status());
  auto registry = std::make_shared<prometheus::Registry>();
  std::shared_ptr<chasqui::TrustSource> source;
  std::shared_ptr<chasqui::GatewayCatalog> catalog;
  if (on_certificates) {
    chasqui::CertificateTrustOptions to;
    to.entity = entity;
    to.env = env;
    to.own_certificate = own_certificate;
    to.own_serials = own_serials;
    to.refresh = absl::Seconds(std::max<int64_t>(1, trust_refresh_s));
    auto started = chasqui::CertificateTrust::Start(bus->get(), anchors, std::move(to), registry);
    if (!started.ok()) return Fail(started.status());
    std::shared_ptr<chasqui::CertificateTrust> certificates = *std::move(started);
    source = certificates;
    if (follow_catalog) {
      chasqui::GatewayCatalogOptions co;
      co.entity = entity;
      auto followed = chasqui::GatewayCatalog::Start(bus->get(), certificates, co, registry);
      if (!followed.ok()) return Fail(followed.status());
      catalog = *std::move(followed);
    }
  } else {
    source = chasqui::FixedTrust(*std::move(trust));
  }
  auto gateway = chasqui::HttpGateway::Start(options, bus->get(), std::move(*identity), source,
                                             registry, catalog, std::move(next_keys));
  if (!options.api_key.empty()) sodium_memzero(options.api_key.data(), options.api_key.size());
  if (!gateway.ok()) return Fail(gateway.status());
  chasqui::HttpGateway* g = gateway->get();
  auto ops = chasqui::OpsServer::Start(ops_options, registry, [g] { return g->Ready(); });
  if (!ops.ok()) return Fail(ops.status());

  const int sig = signals.Wait();
  CHQ_LOG_INFO("signal {}: draining", sig);
  (*gateway)->Stop();
  gateway->reset();
  catalog.reset();
  source.reset();
  if (auto s = (*bus)->Drain(absl::Seconds(5)); !s.ok()) {
    CHQ_LOG_WARN("drain: {}", chasqui::MessageOf(s));
  }
  bus->reset();
  ops->reset();
  chasqui::CloseNatsLibrary();
  CHQ_LOG_INFO("gateway stopped");
  return 0;
}
