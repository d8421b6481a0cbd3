// chasqui-crypto: the platform's trust root. Flags, dependencies, Run; the logic lives in
// chasqui_crypto_service.
//   chasqui-crypto init        --data DIR [--passphrase-file F] [--kdf moderate]
//   chasqui-crypto token       --data DIR --entity E --role R --env ENV [--subject S]
//   chasqui-crypto serve       --data DIR [--passphrase-file F] [--env test --env prod] ...
//   chasqui-crypto rotate-root --data DIR [--passphrase-file F] [--new-passphrase-file F2]
//                              [--overlap-days 30]

#include <unistd.h>

#include <csignal>
#include <iostream>
#include <memory>

#include "CLI/CLI.hpp"
#include "common/bus/bus.h"
#include "common/core/log.h"
#include "common/core/signals.h"
#include "common/core/status.h"
#include "common/ops/ops_server.h"
#include "fmt/format.h"
#include "nats/nats.h"
#include "common/bus/nats_config.h"
#include "services/crypto/audit_feed.h"
#include "services/crypto/authority.h"
#include "services/crypto/ceremony.h"
#include "services/crypto/crypto_service.h"

namespace {

using chasqui::MessageOf;
constexpr int64_t kDayMs = 86'400'000;

int Fail(const absl::Status& status) {
  CHQ_LOG_ERROR("crypto: {}", MessageOf(status));
  return 2;
}

absl::StatusOr<chasqui::Passphrase> GetPassphrase(const std::string& file,
                                                  std::string_view prompt, bool confirm) {
  if (!file.empty()) return chasqui::ReadPassphraseFile(file);
  return chasqui::ReadPassphraseFromTerminal(prompt, confirm);
}

void PrintRoot(const chasqui::CeremonyResult& r, std::string_view what) {
  std::cout << fmt::format(
      "{}\n"
      "  root key id:     {}\n"
      "  root public key: {}\n"
      "  valid:           {} .. {} (Unix ms)\n"
      "  encrypted key:   {}\n"
      "  anchors to pin:  {}  (copy it to every router and gateway; check the key id above\n"
      "                   by a second channel)\n\n",
      what, r.root.key_id, chasqui::ToBase64(chasqui::AsView(r.root.sign_pk)),
      r.root.not_before_ms, r.root.not_after_ms, r.key_file, r.anchors_file);
  std::cout
      << "Back up now: copy the encrypted key file to two offline media kept in different "
         "places, and record the passphrase separately (on paper in a sealed envelope, or "
         "split between two officers); never store the passphrase next to the key file, in a "
         "repository or in a ticket. The key file alone is useless without the passphrase and "
         "the passphrase alone is useless without the file; losing both copies of either means "
         "a new root and re-enrolling every gateway, service and person. Test a restore "
         "(`chasqui-crypto serve` against the copy) before you rely on it.\n";
}

}  // namespace

int main(int argc, char** argv) {
  chasqui::InitLogging("crypto");
  chasqui::DisableCoreDumps();  // before any key is decrypted: a core would hold the root key
  std::signal(SIGPIPE, SIG_IGN);

  CLI::App app{"Chasqui crypto service: the platform's trust root"};
  app.require_subcommand(1);
  std::string data_dir;
  std::string passphrase_file;
  std::string kdf = "moderate";
  int64_t root_validity_days = 3650;

  auto* init = app.add_subcommand("init", "root key ceremony: create the root key");
  init->add_option("--data", data_dir, "data directory (created, mode 0700)")->required();
  init->add_option("--passphrase-file", passphrase_file,
                   "file holding the passphrase (mode 0600); default: ask on the terminal");
  init->add_option("--kdf", kdf, "passphrase hashing cost: moderate, interactive, or "
                                 "test-minimum (tests only)");
  init->add_option("--root-validity-days", root_validity_days, "how long the root is valid");

  std::string entity, role, env, subject;
  int64_t ttl_hours = 24;
  auto* token = app.add_subcommand("token", "issue a one-time enrolment token (shown once)");
  token->add_option("--data", data_dir, "data directory")->required();
  token->add_option("--entity", entity, "entity id (or service name for platform services)")
      ->required();
  token->add_option("--role", role,
                    "entity, router, catalog, crypto, quota, audit, mae, manager, operator")
      ->required();
  token->add_option("--env", env, "test or prod")->required();
  token->add_option("--subject", subject, "person id (required for mae, manager, operator)");
  token->add_option("--ttl-hours", ttl_hours, "the token expires after this long");

  std::vector<std::string> envs = {"test", "prod"};
  chasqui::BusOptions bus_options;
  std::string nats_password_file;
  chasqui::OpsOptions ops_options;
  int64_t cert_validity_days = 365;
  int64_t revocation_validity_s = 3600;
  int64_t tick_ms = 1000;
  bool audit_feed = true;
  int64_t audit_retry_ms = 1000;
  auto* serve = app.add_subcommand("serve", "answer enrolment, directory, revoke and sign");
  serve->add_option("--data", data_dir, "data directory")->required();
  serve->add_option("--passphrase-file", passphrase_file,
                    "file holding the passphrase (mode 0600); default: ask on the terminal");
  serve->add_option("--env", envs, "environments served (repeatable)");
  serve->add_option("--nats", bus_options.url, "NATS server URL");
  serve->add_option("--nats-user", bus_options.user, "nats-server user of the crypto service");
  serve->add_option("--nats-password-file", nats_password_file,
                    "file holding that user's password (mode 0600)");
  serve->add_option("--nats-ca", bus_options.ca_file, "nats-server's CA (PEM): connect over TLS");
  serve->add_option("--ops-host", ops_options.host, "address for /metrics, /healthz, /readyz");
  serve->add_option("--ops-port", ops_options.port, "port for /metrics etc. (0 = pick one)");
  serve->add_option("--certificate-validity-days", cert_validity_days,
                    "lifetime of certificates issued");
  serve->add_option("--revocation-validity-s", revocation_validity_s,
                    "a revocation list's valid_until after its issue; re-issued at half");
  serve->add_option("--tick-ms", tick_ms, "how often to check for a list to re-issue");
  serve->add_flag("--audit-feed,!--no-audit-feed", audit_feed,
                  "send every certificate issued to the audit chain (default on)");
  serve->add_option("--audit-retry-ms", audit_retry_ms,
                    "while the audit service does not acknowledge, resend this often");

  std::string new_passphrase_file;
  int64_t overlap_days = 30;
  auto* rotate = app.add_subcommand("rotate-root", "create the next root, with an overlap");
  rotate->add_option("--data", data_dir, "data directory")->required();
  rotate->add_option("--passphrase-file", passphrase_file, "the current root's passphrase file");
  rotate->add_option("--new-passphrase-file", new_passphrase_file,
                     "the new root's passphrase file (default: the current one)");
  rotate->add_option("--kdf", kdf, "passphrase hashing cost for the new root");
  rotate->add_option("--root-validity-days", root_validity_days, "how long the new root is valid");
  rotate->add_option("--overlap-days", overlap_days, "how long the old root stays accepted");
  CLI11_PARSE(app, argc, argv);

  const chasqui::Clock& clock = chasqui::SystemClock();
  if (*init) {
    auto cost = chasqui::ParseKdfCost(kdf);
    if (!cost.ok()) return Fail(cost.status());
    auto pass = GetPassphrase(passphrase_file, "Passphrase for the new root key: ", true);
    if (!pass.ok()) return Fail(pass.status());
    auto r = chasqui::InitRoot(data_dir, *pass, *cost, root_validity_days * kDayMs, clock);
    if (!r.ok()) return Fail(r.status());
    PrintRoot(*r, "Root key created.");
    return 0;
  }
  if (*token) {
    auto t = chasqui::MakeEnrolmentToken(entity, subject, role, env, ttl_hours * 3'600'000, clock);
    if (!t.ok()) return Fail(t.status());
    auto store = chasqui::OpenAuthorityStore(data_dir);
    absl::Status stored;
    if (store.ok()) {
      if (auto id = chasqui::CurrentRootId(store->get()); !id.ok()) return Fail(id.status());
      stored = chasqui::StoreToken(store->get(), *t);
    } else if (absl::IsUnavailable(store.status())) {
      // The service holds the store: leave the record for it to import.
      stored = chasqui::SpoolToken(chasqui::TokenSpoolDir(data_dir), *t);
    } else {
      stored = store.status();
    }
    if (!stored.ok()) return Fail(stored);
    CHQ_LOG_INFO("token issued: entity={} subject={} role={} env={} expires_at={}",
                 t->record.entity(), t->record.subject(), role, env, t->record.expires_at_ms());
    std::cout << "token: " << t->token << "\n"
              << fmt::format("One-time enrolment token for {} ({} of {}, {}), valid {} h. It is "
                             "shown only this once: hand it to them out of band.\n",
                             t->record.subject(), role, entity, env, ttl_hours);
    return 0;
  }
  if (*rotate) {
    auto cost = chasqui::ParseKdfCost(kdf);
    if (!cost.ok()) return Fail(cost.status());
    auto old_pass = GetPassphrase(passphrase_file, "Passphrase of the current root: ", false);
    if (!old_pass.ok()) return Fail(old_pass.status());
    auto new_pass = new_passphrase_file.empty() && !passphrase_file.empty()
                        ? chasqui::ReadPassphraseFile(passphrase_file)
                        : GetPassphrase(new_passphrase_file, "Passphrase for the new root: ", true);
    if (!new_pass.ok()) return Fail(new_pass.status());
    auto r = chasqui::RotateRoot(data_dir, *old_pass, *new_pass, *cost,
                                 root_validity_days * kDayMs, overlap_days * kDayMs, clock);
    if (!r.ok()) return Fail(r.status());
    PrintRoot(*r, fmt::format("New root created; the previous root is accepted for {} more "
                              "day(s). Distribute the new anchors file now.",
                              overlap_days));
    return 0;
  }

  // serve
  auto store = chasqui::OpenAuthorityStore(data_dir);
  if (!store.ok()) return Fail(store.status());
  auto pass = GetPassphrase(passphrase_file, "Passphrase of the root key: ", false);
  if (!pass.ok()) return Fail(pass.status());
  auto root = chasqui::LoadCurrentRoot(data_dir, store->get(), *pass);
  if (!root.ok()) return Fail(root.status());
  chasqui::AuthorityOptions options;
  options.envs = envs;
  options.certificate_validity_ms = cert_validity_days * kDayMs;
  options.revocation_validity_ms = revocation_validity_s * 1000;
  options.token_spool_dir = chasqui::TokenSpoolDir(data_dir);
  auto authority =
      chasqui::CertificateAuthority::Open(options, store->get(), *std::move(root), clock);
  if (!authority.ok()) return Fail(authority.status());
  CHQ_LOG_INFO("config: data={} envs={} nats={} root={} revocation_validity_s={}", data_dir,
               fmt::join(envs, ","), bus_options.url, (*authority)->root_key_id(),
               revocation_validity_s);

  chasqui::TerminationSignals signals;  // before any thread starts: they inherit the mask
  bus_options.name = fmt::format("chasqui-crypto-{}", ::getpid());
  bus_options.send_asap = true;  // few, latency-bound requests
  auto bus = chasqui::ConnectWithPasswordFile(bus_options, nats_password_file);
  if (!bus.ok()) return Fail(bus.status());
  auto registry = std::make_shared<prometheus::Registry>();
  std::unique_ptr<chasqui::AuditFeed> feed;
  if (audit_feed && !envs.empty()) {
    chasqui::AuditFeedOptions fo;
    fo.envs = envs;
    fo.inbox_prefix = fmt::format("{}.{}.feed", chasqui::NatsServiceInboxPrefix("crypto", envs[0]),
                                  ::getpid());
    fo.retry = absl::Milliseconds(audit_retry_ms);
    auto started = chasqui::AuditFeed::Start(fo, bus->get(), store->get());
    if (!started.ok()) return Fail(started.status());
    feed = *std::move(started);
  } else {
    CHQ_LOG_WARN("--no-audit-feed: certificates issued are kept in the transparency log only");
  }
  chasqui::CryptoServiceOptions service_options;
  service_options.tick = absl::Milliseconds(tick_ms);
  service_options.audit_feed = feed.get();
  auto service = chasqui::CryptoService::Start(service_options, bus->get(), authority->get(),
                                               registry, clock);
  if (!service.ok()) return Fail(service.status());
  chasqui::CryptoService* s = service->get();
  auto ops = chasqui::OpsServer::Start(ops_options, registry, [s] { return s->Ready(); });
  if (!ops.ok()) return Fail(ops.status());
  CHQ_LOG_INFO("ready: ops port {}", (*ops)->port());

  const int sig = signals.Wait();
  CHQ_LOG_INFO("signal {}: draining", sig);
  if (auto st = (*service)->Drain(absl::Seconds(5)); !st.ok()) {
    CHQ_LOG_WARN("drain: {}", MessageOf(st));
  }
  service->reset();
  feed.reset();
  if (auto st = (*bus)->Drain(absl::Seconds(5)); !st.ok()) {
    CHQ_LOG_WARN("drain: {}", MessageOf(st));
  }
  bus->reset();
  ops->reset();
  authority->reset();
  store->reset();
  chasqui::CloseNatsLibrary();
  CHQ_LOG_INFO("crypto stopped");
  return 0;
}
