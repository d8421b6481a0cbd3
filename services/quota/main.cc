// chasqui-quota: quota policies, counters per period, leases to routers, quota requests.
// Flags, dependencies, Run; the logic lives in chasqui_quota (QuotaLedger, QuotaControl,
// QuotaService) and chasqui_quota_client (QuotaEnforcer).
//   chasqui-quota serve --data DIR [--policy FILE] [--zone America/La_Paz] [--anchors F] ...
//   chasqui-quota bench [--threads N] [--seconds S]     Admit() cost beside its raw baseline

#include <unistd.h>

#include <csignal>
#include <map>
#include <memory>

#include "CLI/CLI.hpp"
#include "common/bus/bus.h"
#include "common/core/log.h"
#include "common/core/signals.h"
#include "common/core/status.h"
#include "common/ops/ops_server.h"
#include "common/store/kv_store.h"
#include "common/trust/anchors.h"
#include "common/trust/crypto_client.h"
#include "common/trust/directory.h"
#include "fmt/format.h"
#include "nats/nats.h"
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
  serve->add_option("--zone", ledger_options.zone, "time zone of the day and month periods");
  serve->add_option("--share-ttl-ms", ledger_options.share_ttl_ms,
                    "lifetime of a router's rate share");
  serve->add_option("--anchors", anchors_file,
                    "pinned roots (roots.json): verify signed set_policy/request/decide; "
                    "without it those verbs are refused");
  serve->add_option("--env", envs, "environments whose people may sign changes (repeatable)");
  serve->add_option("--control-window-ms", control_window_ms, "sent_at window of changes");
  serve->add_option("--nats", bus_options.url, "NATS server URL");
  serve->add_option("--nats-user", bus_options.user, "nats-server user of the quota service");
  serve->add_option("--nats-password-file", nats_password_file,
                    "file holding that user's password (mode 0600)");
  serve->add_option("--ops-host", ops_options.host, "address for /metrics, /healthz, /readyz");
  serve->add_option("--ops-port", ops_options.port, "port for /metrics etc. (0 = pick one)");
  serve->add_option("--tick-ms", tick_ms, "how often the usage gauges are refreshed");

  chasqui::QuotaBenchOptions bench_options;
  auto* bench = app.add_subcommand("bench", "micro-benchmark of QuotaEnforcer::Admit()");
  bench->add_option("--threads", bench_options.max_threads, "up to this many threads");
  bench->add_option("--min-time", bench_options.min_time_s, "seconds per benchmark");
  CLI11_PARSE(app, argc, argv);

  if (*bench) return chasqui::RunQuotaBench(bench_options);

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
  // crypto service on first sight, revocations followed.
  std::vector<std::unique_ptr<chasqui::CertificateDirectory>> directories;
  std::vector<std::unique_ptr<chasqui::Subscription>> watches;
  std::unique_ptr<chasqui::CryptoClient> crypto;
  std::unique_ptr<chasqui::DirectorySigners> signers;
  if (!anchors_file.empty()) {
    auto anchors = chasqui::LoadTrustAnchors(anchors_file);
    if (!anchors.ok()) return Fail(anchors.status());
    auto client = chasqui::CryptoClient::Create(
        bus->get(), fmt::format("_INBOX._quota.{}", ::getpid()));
    if (!client.ok()) return Fail(client.status());
    crypto = *std::move(client);
    std::map<std::string, chasqui::CertificateDirectory*> by_env;
    for (const std::string& env : envs) {
      directories.push_back(std::make_unique<chasqui::CertificateDirectory>(env, *anchors));
      chasqui::CertificateDirectory* d = directories.back().get();
      by_env[env] = d;
      auto watch = chasqui::WatchRevocations(bus->get(), d, clock);
      if (!watch.ok()) return Fail(watch.status());
      watches.push_back(*std::move(watch));
      if (auto s = chasqui::CatchUpRevocations(*crypto, *d, clock); !s.ok()) {
        CHQ_LOG_WARN("revocation list for {} not fetched yet (signed changes answer UNAVAILABLE "
                     "until one arrives): {}",
                     env, MessageOf(s));
      }
    }
    chasqui::CryptoClient* c = crypto.get();
    signers = std::make_unique<chasqui::DirectorySigners>(
        by_env, [c](chasqui::CertificateDirectory& d, uint64_t serial, int64_t now_ms) {
          chasqui::v1::DirectoryRequest req;
          req.set_env(d.env());
          req.add_serials(serial);
          CHASQUI_ASSIGN_OR_RETURN(chasqui::v1::DirectoryReply reply, c->Directory(req));
          std::vector<std::string> certs;
          for (const auto& cert : reply.certificates()) certs.push_back(cert.SerializeAsString());
          return d.AddCertificates(certs, now_ms);
        });
  }
  chasqui::QuotaControlOptions control_options;
  control_options.control_window_ms = control_window_ms;
  chasqui::QuotaControl control(control_options, ledger->get(), signers.get(), clock);
  CHQ_LOG_INFO("config: data={} zone={} share_ttl_ms={} nats={} anchors={} envs={}", data_dir,
               ledger_options.zone, ledger_options.share_ttl_ms, bus_options.url,
               anchors_file.empty() ? "(none: signed changes refused)" : anchors_file,
               fmt::join(envs, ","));

  auto registry = std::make_shared<prometheus::Registry>();
  chasqui::QuotaServiceOptions service_options;
  service_options.tick = absl::Milliseconds(tick_ms);
  auto service = chasqui::QuotaService::Start(service_options, bus->get(), ledger->get(),
                                              &control, registry, clock);
  if (!service.ok()) return Fail(service.status());
  chasqui::QuotaService* s = service->get();
  auto ops = chasqui::OpsServer::Start(ops_options, registry, [s] { return s->Ready(); });
  if (!ops.ok()) return Fail(ops.status());
  CHQ_LOG_INFO("ready: ops port {}", (*ops)->port());

  const int sig = signals.Wait();
  CHQ_LOG_INFO("signal {}: draining", sig);
  if (auto st = (*service)->Drain(absl::Seconds(5)); !st.ok()) {
    CHQ_LOG_WARN("drain: {}", MessageOf(st));
  }
  service->reset();
  watches.clear();
  crypto.reset();
  if (auto st = (*bus)->Drain(absl::Seconds(5)); !st.ok()) {
    CHQ_LOG_WARN("drain: {}", MessageOf(st));
  }
  bus->reset();
  ops->reset();
  ledger->reset();
  store->reset();
  nats_Close();
  CHQ_LOG_INFO("quota stopped");
  return 0;
}
