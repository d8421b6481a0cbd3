// chasqui-router: flags, dependencies, Run. The logic lives in chasqui_router.

#include <unistd.h>

#include <csignal>
#include <memory>

#include "CLI/CLI.hpp"
#include "common/bus/bus.h"
#include "common/core/log.h"
#include "common/core/signals.h"
#include "common/core/status.h"
#include "common/ops/ops_server.h"
#include "fmt/format.h"
#include "nats/nats.h"
#include "services/router/router.h"

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
  app.add_option("--key", key_file, "the router's key file (from `chasqui keygen --role router`)")
      ->required();
  app.add_option("--trust", trust_file, "trust file listing the keys this router accepts")
      ->required();
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
  CLI11_PARSE(app, argc, argv);
  options.provider_timeout = absl::Milliseconds(provider_timeout_ms);
  options.audit_client.timeout = absl::Milliseconds(audit_timeout_ms);
  options.audit_retry_interval = absl::Milliseconds(audit_retry_ms);
  options.refusal_count_interval = absl::Milliseconds(refusal_count_interval_ms);
  bus_options.name = fmt::format("chasqui-router-{}", options.router_id);

  chasqui::DisableCoreDumps();  // a core would hold the router's private key
  std::signal(SIGPIPE, SIG_IGN);
  auto identity = chasqui::LoadIdentity(key_file);
  if (!identity.ok()) return Fail(identity.status());
  if (identity->pub.role != chasqui::Role::kRouter || identity->pub.env != options.env) {
    return Fail(absl::InvalidArgumentError(fmt::format(
        "key file {}: holds an {} key for {}; expected a router key for {} (make one with "
        "`chasqui keygen --entity router --role router --env {}`)",
        key_file, chasqui::RoleName(identity->pub.role), identity->pub.env, options.env,
        options.env)));
  }
  auto trust = chasqui::TrustStore::Load(trust_file, options.env);
  if (!trust.ok()) return Fail(trust.status());
  CHQ_LOG_INFO("config: env={} nats={} key={} (serial {}) trust={} ({} keys for {}) "
               "preauth refusals {}/s burst {}",
               options.env, bus_options.url, key_file, identity->pub.serial, trust_file,
               trust->size(), options.env, options.preauth_refusals.per_second,
               options.preauth_refusals.burst);

  chasqui::TerminationSignals signals;  // before any thread starts: they inherit the mask

  auto bus = chasqui::ConnectWithPasswordFile(bus_options, nats_password_file);
  if (!bus.ok()) return Fail(bus.status());
  auto registry = std::make_shared<prometheus::Registry>();
  auto router = chasqui::Router::Start(options, bus->get(), *std::move(identity),
                                       *std::move(trust), registry);
  if (!router.ok()) return Fail(router.status());
  chasqui::Router* r = router->get();
  auto ops = chasqui::OpsServer::Start(ops_options, registry, [r] { return r->Ready(); });
  if (!ops.ok()) return Fail(ops.status());

  const int sig = signals.Wait();
  CHQ_LOG_INFO("signal {}: draining", sig);
  if (auto s = (*router)->Drain(absl::Seconds(5)); !s.ok()) {
    CHQ_LOG_WARN("drain: {}", chasqui::MessageOf(s));
  }
  router->reset();
  if (auto s = (*bus)->Drain(absl::Seconds(5)); !s.ok()) {
    CHQ_LOG_WARN("drain: {}", chasqui::MessageOf(s));
  }
  bus->reset();
  ops->reset();
  nats_Close();
  CHQ_LOG_INFO("router stopped");
  return 0;
}
