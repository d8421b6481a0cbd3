// chasqui-router: flags, dependencies, Run. The logic lives in chasqui_router.

#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <memory>
#include <optional>

#include "CLI/CLI.hpp"
#include "common/bus/bus.h"
#include "common/core/log.h"
#include "common/core/signals.h"
#include "common/core/status.h"
#include "common/envelope/subjects.h"
#include "common/ops/ops_server.h"
#include "common/trust/anchors.h"
#include "common/trust/certificate_trust.h"
#include "fmt/format.h"
#include "nats/nats.h"
#include "services/router/router.h"
#include "services/router/router_policies.h"

namespace {

int Fail(const absl::Status& status) {
  CHQ_LOG_ERROR("router stopped: {}", chasqui::MessageOf(status));
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  chasqui::InitLogging("router");
  chasqui::RouterOptions options;
  chasqui::BusOptions bus_options;
  chasqui::OpsOptions ops_options;
  std::string key_file;
  std::string trust_file;
  std::string roots_file;
  std::string cert_file;
  int64_t trust_refresh_s = 30;
  int64_t fetch_backoff_ms = 5000;
  int64_t provider_timeout_ms = 5000;
  bus_options.url = "nats://127.0.0.1:4222";
  options.router_id = fmt::format("r{}", ::getpid());
  options.audit = true;  // no trace, no data, unless a benchmark or test says otherwise
  int64_t audit_timeout_ms = absl::ToInt64Milliseconds(options.audit_client.timeout);
  int64_t audit_retry_ms = absl::ToInt64Milliseconds(options.audit_retry_interval);
  int64_t refusal_count_interval_ms =
      absl::ToInt64Milliseconds(options.refusal_count_interval);

  CLI::App app{"Chasqui router: authenticates, checks and forwards every exchange"};
  app.add_option("--env", options.env, "environment: test or prod")->required();
  app.add_option("--nats", bus_options.url, "NATS server URL");
  std::string nats_password_file;
  app.add_option("--nats-user", bus_options.user,
                 "nats-server user from `chasqui nats-config` (router.<env>, or <entity>.<env>)");
  app.add_option("--nats-password-file", nats_password_file,
                 "file holding that user's password (mode 0600; never on the command line)");
  app.add_option("--nats-ca", bus_options.ca_file, "nats-server's CA (PEM): connect over TLS");
  app.add_option("--key", key_file, "the router's key file (from `chasqui keygen --role router`)")
      ->required();
  app.add_option("--roots", roots_file,
                 "the pinned roots (roots.json from `chasqui-crypto init`): with --cert, the "
                 "router trusts the crypto service's certificates and revocation lists");
  app.add_option("--cert", cert_file,
                 "the router's certificate (from `chasqui enrol --role router`), for --key");
  app.add_option("--trust", trust_file,
                 "instead of --roots/--cert, for benchmarks and tests: a trust file listing the "
                 "keys this router accepts (never revoked, never refreshed)");
  app.add_option("--trust-refresh-s", trust_refresh_s,
                 "with --roots: catch up on revocations and reload the env's gateway "
                 "certificates this often (sooner as the revocation list nears valid_until)");
  app.add_option("--certificate-fetch-backoff-ms", fetch_backoff_ms,
                 "with --roots: ask the directory for the same unknown certificate serial at "
                 "most this often");
  app.add_option("--max-pending-certificate-fetches", options.max_pending_fetches,
                 "requests waiting for a certificate lookup before more are refused UNAVAILABLE");
  app.add_option("--id", options.router_id, "router id, unique among replicas");
  app.add_option("--ops-host", ops_options.host, "address for /metrics, /healthz, /readyz");
  app.add_option("--ops-port", ops_options.port, "port for /metrics etc. (0 = pick one)");
  app.add_option("--freshness-window-ms", options.freshness_window_ms,
                 "accepted clock skew of sent_at, and the replay window");
  app.add_option("--startup-hold-ms", options.startup_hold_ms,
                 "stay unready this long after start (default: 2 x the window)");
  app.add_option("--provider-timeout-ms", provider_timeout_ms, "wait this long for a provider");
  app.add_option("--max-envelope-bytes", options.max_envelope_bytes, "largest envelope accepted");
  app.add_option("--preauth-refusals-per-second", options.preauth_refusals.per_second,
                 "refusals before authentication (garbage, unknown key, bad signature) answered "
                 "per consumer and second; beyond them and the burst, its requests are dropped "
                 "unchecked");
  app.add_option("--preauth-refusal-burst", options.preauth_refusals.burst,
                 "refusals before authentication answered at once per consumer");
  app.add_option("--audit", options.audit,
                 "trace every exchange through chasqui-audit and relay a reply only once its "
                 "record is durable (default true; --audit=false only for benchmarks and tests: "
                 "exchanges then leave no trace)");
  app.add_option("--audit-subject", options.audit_client.subject,
                 "subject the audit service serves appends on");
  app.add_option("--audit-backlog", options.audit_client.max_backlog,
                 "records queued for or awaiting the audit service before new requests are "
                 "refused with AUDIT_UNAVAILABLE");
  app.add_option("--audit-timeout-ms", audit_timeout_ms,
                 "wait this long for the audit service to acknowledge a batch before its "
                 "replies are withheld (AUDIT_UNAVAILABLE)");
  app.add_option("--audit-retry-ms", audit_retry_ms,
                 "while audit fails, forward one request per this interval to probe it; the "
                 "rest are refused at once");
  app.add_option("--refusal-count-interval-ms", refusal_count_interval_ms,
                 "send counts of refusals before authentication to the audit trail this often");
  app.add_flag("--shared-delivery-thread", bus_options.shared_delivery_thread,
               "deliver requests and replies on one thread (no contention between them)");
  app.add_flag("--send-asap", bus_options.send_asap,
               "flush every publish at once (lower latency, lower pipelined throughput)");
  // The catalog and quotas (issues 4 and 5): see services/router/router_policies.h.
  chasqui::RouterPoliciesOptions policy_options;
  int64_t catalog_wait_ms = 30'000;
  int64_t catalog_max_age_s = 0;
  int64_t quota_timeout_ms = absl::ToInt64Milliseconds(policy_options.quota_timeout);
  app.add_flag("--catalog", policy_options.catalog,
               "follow chasqui-catalog and refuse what it does not grant (NOT_FOUND, FORBIDDEN, "
               "END_USER_UNKNOWN); needs --roots and --cert, to verify the catalog's signatures");
  app.add_option("--catalog-wait-ms", catalog_wait_ms,
                 "with --catalog: wait this long at start for the first snapshot, then stop "
                 "(exit 2) rather than serve without knowing the grants");
  app.add_option("--catalog-max-age-s", catalog_max_age_s,
                 "with --catalog: /readyz fails once the catalog has not confirmed the snapshot "
                 "for this long (0: an old snapshot keeps the router ready; "
                 "chasqui_router_catalog_snapshot_age_seconds tells its age)");
  app.add_flag("--quota", policy_options.quota,
               "enforce quotas (QUOTA_EXCEEDED with retry_after) from leases drawn from "
               "chasqui-quota; if it stops answering, the router enforces with what it holds");
  app.add_option("--quota-timeout-ms", quota_timeout_ms,
                 "wait this long for chasqui-quota to answer a lease or a return");
  CLI11_PARSE(app, argc, argv);
  options.provider_timeout = absl::Milliseconds(provider_timeout_ms);
  options.audit_client.timeout = absl::Milliseconds(audit_timeout_ms);
  options.audit_retry_interval = absl::Milliseconds(audit_retry_ms);
  options.refusal_count_interval = absl::Milliseconds(refusal_count_interval_ms);
  bus_options.name = fmt::format("chasqui-router-{}", options.router_id);

  chasqui::DisableCoreDumps();  // a core would hold the router's private key
  std::signal(SIGPIPE, SIG_IGN);
  const bool on_certificates = !roots_file.empty() || !cert_file.empty();
  if (on_certificates == !trust_file.empty() ||
      (on_certificates && (roots_file.empty() || cert_file.empty()))) {
    return Fail(absl::InvalidArgumentError(
        "give --roots roots.json with --cert router.cert (from `chasqui enrol --role router`), "
        "or --trust FILE (benchmarks and tests); exactly one of the two"));
  }
  auto loaded = chasqui::LoadKeyAndTrust(key_file, roots_file, cert_file, trust_file, options.env,
                                         chasqui::SystemClock().NowUnixMillis());
  if (!loaded.ok()) return Fail(loaded.status());
  chasqui::Identity* identity = &loaded->identity;
  const chasqui::TrustAnchors& anchors = loaded->anchors;
  const std::string& own_certificate = loaded->own_certificate;
  std::optional<chasqui::TrustStore>& trust = loaded->store;
  if (identity->pub.role != chasqui::Role::kRouter || identity->pub.env != options.env) {
    return Fail(absl::InvalidArgumentError(fmt::format(
        "key file {}: holds an {} key for {}; expected a router key for {} (make one with "
        "`chasqui keygen --entity router --role router --env {}`)",
        key_file, chasqui::RoleName(identity->pub.role), identity->pub.env, options.env,
        options.env)));
  }
  const std::string trust_text =
      on_certificates
          ? fmt::format("trust=certificates roots={} ({} pinned) cert={} refresh={} s fetch "
                        "backoff={} ms",
                        roots_file, anchors.anchors().size(), cert_file, trust_refresh_s,
                        fetch_backoff_ms)
          : fmt::format("trust=file {} ({} keys for {}; no revocation)", trust_file,
                        trust->size(), options.env);
  CHQ_LOG_INFO("config: env={} nats={} key={} (serial {}) {} preauth refusals {}/s burst {}",
               options.env, bus_options.url, key_file, identity->pub.serial, trust_text,
               options.preauth_refusals.per_second, options.preauth_refusals.burst);

  chasqui::TerminationSignals signals;  // before any thread starts: they inherit the mask

  auto bus = chasqui::ConnectWithPasswordFile(bus_options, nats_password_file);
  if (!bus.ok()) return Fail(bus.status());
  auto registry = std::make_shared<prometheus::Registry>();
  std::shared_ptr<chasqui::TrustSource> source;
  // The catalog's signatures are verified against the router's certificates.
  const chasqui::CertificateLookup* certificates = nullptr;
  if (on_certificates) {
    chasqui::CertificateTrustOptions to;
    to.entity = identity->pub.entity;
    to.env = options.env;
    to.own_certificate = own_certificate;
    to.own_role = chasqui::v1::CERTIFICATE_ROLE_ROUTER;
    to.check_unrequested = false;  // the transparency check is each gateway's, for its entity
    to.preload_gateways = true;
    to.metric_prefix = "chasqui_router";
    to.refresh = absl::Seconds(std::max<int64_t>(1, trust_refresh_s));
    to.fetch_backoff = absl::Milliseconds(std::max<int64_t>(0, fetch_backoff_ms));
    // Replies under the router's own inbox, beside its requests' (its NATS user reads those).
    to.inbox_prefix = chasqui::RouterInboxPrefix(options.env, options.router_id) + ".crypto";
    auto started = chasqui::CertificateTrust::Start(bus->get(), anchors, std::move(to), registry);
    if (!started.ok()) return Fail(started.status());
    std::shared_ptr<chasqui::CertificateTrust> certs = *std::move(started);
    certificates = &certs->lookup();
    source = std::move(certs);
  } else {
    source = chasqui::FixedTrust(*std::move(trust));
  }
  if (policy_options.catalog && certificates == nullptr) {
    return Fail(absl::InvalidArgumentError(
        "--catalog needs --roots and --cert: the catalog's signed snapshots and events are "
        "verified against the certificates the router trusts, which a --trust file lacks"));
  }
  policy_options.catalog_max_age = absl::Seconds(catalog_max_age_s);
  policy_options.quota_timeout = absl::Milliseconds(quota_timeout_ms);
  auto policies = chasqui::RouterPolicies::Start(policy_options, bus->get(), options.env,
                                                 options.router_id, certificates, registry);
  if (!policies.ok()) return Fail(policies.status());
  if (auto s = (*policies)->LoadCatalog(absl::Milliseconds(catalog_wait_ms)); !s.ok()) {
    return Fail(s);
  }
  options.catalog = (*policies)->catalog();
  options.quota = (*policies)->quota();
  auto router = chasqui::Router::Start(options, bus->get(), std::move(*identity), source,
                                       registry);
  if (!router.ok()) return Fail(router.status());
  chasqui::Router* r = router->get();
  chasqui::RouterPolicies* p = policies->get();
  auto ops = chasqui::OpsServer::Start(ops_options, registry, [r, p] {
    if (absl::Status s = r->Ready(); !s.ok()) return s;
    return p->Ready();
  });
  if (!ops.ok()) return Fail(ops.status());

  const int sig = signals.Wait();
  CHQ_LOG_INFO("signal {}: draining", sig);
  if (auto s = (*router)->Drain(absl::Seconds(5)); !s.ok()) {
    CHQ_LOG_WARN("drain: {}", chasqui::MessageOf(s));
  }
  if (auto s = (*policies)->Drain(); !s.ok()) {
    CHQ_LOG_WARN("quota leases not all returned (the unreturned count as spent): {}",
                 chasqui::MessageOf(s));
  }
  router->reset();  // before the policies: it holds their snapshot and enforcer
  policies->reset();
  source.reset();  // after the router and the policies: both use its certificates
  if (auto s = (*bus)->Drain(absl::Seconds(5)); !s.ok()) {
    CHQ_LOG_WARN("drain: {}", chasqui::MessageOf(s));
  }
  bus->reset();
  ops->reset();
  chasqui::CloseNatsLibrary();
  CHQ_LOG_INFO("router stopped");
  return 0;
}
