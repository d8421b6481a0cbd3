// chasqui-quota: quota policies, counters per period, leases to routers, quota requests.
// Flags, dependencies, Run; the logic lives in chasqui_quota (QuotaLedger, QuotaControl,
// QuotaService) and chasqui_quota_client (QuotaEnforcer).
//   chasqui-quota serve --data DIR [--policy FILE | --catalog] [--zone America/La_Paz]
//                       [--anchors F] ...   (--catalog needs --anchors)
//   chasqui-quota bench [--threads N] [--seconds S]     Admit() cost beside its raw baseline

#include <unistd.h>

#include <csignal>
#include <map>
#include <memory>

#include "CLI/CLI.hpp"
#include "common/bus/bus.h"
#include "common/bus/nats_config.h"
#include "common/core/log.h"
#include "common/core/signals.h"
#include "common/core/status.h"
#include "common/ops/ops_server.h"
#include "common/store/kv_store.h"
#include "common/trust/anchors.h"
#include "common/trust/followed_signers.h"
#include "fmt/format.h"
#include "nats/nats.h"
#include "services/quota/catalog_policies.h"
#include "services/quota/quota_bench.h"
#include "services/quota/quota_control.h"
#include "services/quota/quota_ledger.h"
#include "services/quota/quota_service.h"

namespace {

using chasqui::MessageOf;

int Fail(const absl::Status& status) {
  CHQ_LOG_ERROR("quota: {}", MessageOf(status));
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  chasqui::InitLogging("quota");
  chasqui::DisableCoreDumps();
  std::signal(SIGPIPE, SIG_IGN);

  CLI::App app{"Chasqui quota service: policies, counters, leases to routers, quota requests"};
  app.require_subcommand(1);

  std::string data_dir;
  std::string policy_file;
  std::string anchors_file;
  bool follow_catalog = false;
  std::vector<std::string> envs = {"test", "prod"};
  chasqui::QuotaLedgerOptions ledger_options;
  chasqui::BusOptions bus_options;
  std::string nats_password_file;
  chasqui::OpsOptions ops_options;
  int64_t tick_ms = 1000;
  int64_t control_window_ms = 30'000;
  auto* serve = app.add_subcommand("serve", "answer chq.ctl.quota.*");
  serve->add_option("--data", data_dir, "data directory (RocksDB)")->required();
  serve->add_option("--policy", policy_file,
                    "JSON policies applied at start to grants and services that have none "
                    "stored yet");
  serve->add_flag("--catalog", follow_catalog,
                  "follow the catalog: each active grant's quota (else its service's default) "
                  "and each service's capacity, applied live; people's decisions win over it "
                  "(needs --anchors: the catalog's events are verified)")
      ->excludes("--policy");
  serve->add_option("--zone", ledger_options.zone, "time zone of the day and month periods");
  serve->add_option("--share-ttl-ms", ledger_options.share_ttl_ms,
                    "lifetime of a router's rate share");
  serve->add_option("--max-lease-fraction", ledger_options.max_lease_fraction,
                    "the most of a grant's day or month cap one router holds at once (what a "
                    "router killed strands until the period ends)")
      ->check(CLI::Range(0.0001, 1.0));  // 1: per-lease slices only (the default for now)
  serve->add_option("--anchors", anchors_file,
                    "pinned roots (roots.json): verify signed set_policy/request/decide; "
                    "without it those verbs are refused");
  serve->add_option("--env", envs, "environments whose people may sign changes (repeatable)");
  serve->add_option("--control-window-ms", control_window_ms, "sent_at window of changes");
  serve->add_option("--nats", bus_options.url, "NATS server URL");
  serve->add_option("--nats-user", bus_options.user, "nats-server user of the quota service");
  serve->add_option("--nats-password-file", nats_password_file,
                    "file holding that user's password (mode 0600)");
  serve->add_option("--nats-ca", bus_options.ca_file, "nats-server's CA (PEM): connect over TLS");
  serve->add_option("--ops-host", ops_options.host, "address for /metrics, /healthz, /readyz");
  serve->add_option("--ops-port", ops_options.port, "port for /metrics etc. (0 = pick one)");
  serve->add_option("--tick-ms", tick_ms, "how often the usage gauges are refreshed");

  chasqui::QuotaBenchOptions bench_options;
  auto* bench = app.add_subcommand("bench", "micro-benchmark of QuotaEnforcer::Admit()");
  bench->add_option("--threads", bench_options.max_threads, "up to this many threads");
  bench->add_option("--min-time", bench_options.min_time_s, "seconds per benchmark");
  CLI11_PARSE(app, argc, argv);

  if (*bench) return chasqui::RunQuotaBench(bench_options);
  if (follow_catalog && anchors_file.empty()) {
    return Fail(absl::InvalidArgumentError(
        "--catalog needs --anchors roots.json: the catalog's events are verified with its "
        "certificate, fetched from the crypto service and checked against the pinned roots"));
  }
  if (!anchors_file.empty() && envs.empty()) {
    return Fail(absl::InvalidArgumentError(
        "--anchors needs at least one --env (whose people may sign changes)"));
  }

  const chasqui::Clock& clock = chasqui::SystemClock();
  // The zone first: a typo must stop the service before it opens anything.
  if (auto zone = chasqui::QuotaPeriods::Load(ledger_options.zone); !zone.ok()) {
    return Fail(zone.status());
  }
  chasqui::KvOptions kv;
  kv.path = data_dir;
  auto store = chasqui::KvStore::Open(kv);
  if (!store.ok()) return Fail(store.status());
  auto ledger = chasqui::QuotaLedger::Open(ledger_options, store->get(), clock);
  if (!ledger.ok()) return Fail(ledger.status());
  if (!policy_file.empty()) {
    chasqui::JsonPolicyFile source(policy_file);
    auto set = source.Load();
    if (!set.ok()) return Fail(set.status());
    auto applied = (*ledger)->ApplyInitial(*set, "config");
    if (!applied.ok()) return Fail(applied.status());
    CHQ_LOG_INFO("policy file {}: {} grant(s), {} provider(s), {} new applied", policy_file,
                 set->grants.size(), set->providers.size(), *applied);
  }

  chasqui::TerminationSignals signals;  // before any thread starts: they inherit the mask
  bus_options.name = fmt::format("chasqui-quota-{}", ::getpid());
  bus_options.send_asap = true;  // leases are latency-bound, one at a time per grant
  auto bus = chasqui::ConnectWithPasswordFile(bus_options, nats_password_file);
  if (!bus.ok()) return Fail(bus.status());

  // Signers of changes: certificates verified against the pinned roots, fetched from the
  // crypto service on first sight, revocations followed (replies under the quota user's inbox).
  std::unique_ptr<chasqui::FollowedSigners> signers;
  if (!anchors_file.empty()) {
    auto anchors = chasqui::LoadTrustAnchors(anchors_file);
    if (!anchors.ok()) return Fail(anchors.status());
    auto followed = chasqui::FollowedSigners::Start(
        bus->get(), *anchors, envs,
        fmt::format("{}.{}", chasqui::NatsServiceInboxPrefix("quota", envs.front()), ::getpid()),
        clock);
    if (!followed.ok()) return Fail(followed.status());
    signers = *std::move(followed);
  }
  std::unique_ptr<chasqui::CatalogPolicies> catalog_policies;
  if (follow_catalog) {
    chasqui::CatalogPoliciesOptions po;
    po.envs = envs;
    po.follow_env = envs.front();
    po.follower.inbox_prefix = fmt::format(
        "{}.{}.catalog", chasqui::NatsServiceInboxPrefix("quota", po.follow_env), ::getpid());
    auto p = chasqui::CatalogPolicies::Start(po, bus->get(), ledger->get(), *signers, clock);
    if (!p.ok()) return Fail(p.status());
    catalog_policies = *std::move(p);
  }
  chasqui::QuotaControlOptions control_options;
  control_options.control_window_ms = control_window_ms;
  chasqui::QuotaControl control(control_options, ledger->get(), signers.get(), clock);
  CHQ_LOG_INFO("config: data={} zone={} share_ttl_ms={} nats={} anchors={} envs={} policies={}",
               data_dir, ledger_options.zone, ledger_options.share_ttl_ms, bus_options.url,
               anchors_file.empty() ? "(none: signed changes refused)" : anchors_file,
               fmt::join(envs, ","),
               follow_catalog ? "catalog" : policy_file.empty() ? "(stored only)" : policy_file);

  auto registry = std::make_shared<prometheus::Registry>();
  chasqui::QuotaServiceOptions service_options;
  service_options.tick = absl::Milliseconds(tick_ms);
  auto service = chasqui::QuotaService::Start(service_options, bus->get(), ledger->get(),
                                              &control, registry, clock);
  if (!service.ok()) return Fail(service.status());
  chasqui::QuotaService* s = service->get();
  chasqui::CatalogPolicies* cp = catalog_policies.get();
  auto ops = chasqui::OpsServer::Start(ops_options, registry, [s, cp] {
    absl::Status ready = s->Ready();
    if (ready.ok() && cp != nullptr) ready = cp->Ready();
    return ready;
  });
  if (!ops.ok()) return Fail(ops.status());
  CHQ_LOG_INFO("ready: ops port {}", (*ops)->port());

  const int sig = signals.Wait();
  CHQ_LOG_INFO("signal {}: draining", sig);
  if (auto st = (*service)->Drain(absl::Seconds(5)); !st.ok()) {
    CHQ_LOG_WARN("drain: {}", MessageOf(st));
  }
  service->reset();
  catalog_policies.reset();
  signers.reset();
  if (auto st = (*bus)->Drain(absl::Seconds(5)); !st.ok()) {
    CHQ_LOG_WARN("drain: {}", MessageOf(st));
  }
  bus->reset();
  ops->reset();
  ledger->reset();
  store->reset();
  chasqui::CloseNatsLibrary();
  CHQ_LOG_INFO("quota stopped");
  return 0;
}
