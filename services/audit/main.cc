// chasqui-audit: the audit service and its offline tools. The logic lives in chasqui_audit.
//
//   chasqui-audit serve  --env E --data DIR --checkpoint-key FILE [--anchors roots.json]
//                        [--checkpoint-signer local|crypto --checkpoint-cert FILE]
//                        [--report-zone Z] [--nats URL ...]
//   chasqui-audit verify (--data DIR | --export FILE) --env E
//                        [--trust FILE | --roots roots.json [--signer-cert FILE]] [--from N --to M]
//   chasqui-audit query  (--data DIR | --key K --cert C [--nats URL ...]) [--consumer C]
//                        [--provider P] [--service S] [--end-user U] [--outcome CODE]
//                        [--from-ms T] [--to-ms T] [--limit N] [--json]
//   chasqui-audit report (--data DIR | --key K --cert C [--nats URL ...]) --from-day D
//                        [--to-day D] [--consumer C] [--provider P] [--service S] [--json]
//   chasqui-audit export --data DIR --env E --before DAY --out FILE [--trust ... | --roots ...]
//   chasqui-audit prune  --data DIR --env E --before DAY --export FILE [--trust ... | --roots ...]
//   chasqui-audit bench  --data DIR [--records N]
//
// --data reads the store directly (an operator on the audit host, service stopped); --key and
// --cert sign the request with a certificate and ask the service, which answers only what that
// certificate may read (an entity its own records, an operator everything).
// Exit codes: 0 success (verify: the chain is intact); 1 verify found tampering; 2 usage, or
// the store or a file cannot be opened (a running service holds the store's lock); 3 storage
// corruption (RocksDB's checksums failed).

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <memory>
#include <mutex>
#include <condition_variable>
#include <map>
#include <optional>

#include "CLI/CLI.hpp"
#include "common/bus/bus.h"
#include "common/core/log.h"
#include "common/core/signals.h"
#include "common/core/files.h"
#include "common/core/status.h"
#include "common/crypto/sodium.h"
#include "common/envelope/errors.h"
#include "common/envelope/identity.h"
#include "common/ops/ops_server.h"
#include "common/store/kv_store.h"
#include "fmt/format.h"
#include "google/protobuf/util/json_util.h"
#include "nats/nats.h"
#include "nlohmann/json.hpp"
#include "absl/strings/ascii.h"
#include "absl/time/civil_time.h"
#include "common/bus/nats_config.h"
#include "common/bus/request_mux.h"
#include "common/envelope/subjects.h"
#include "common/trust/anchors.h"
#include "common/trust/certificate.h"
#include "common/trust/followed_signers.h"
#include "services/audit/audit_access.h"
#include "services/audit/audit_chain.h"
#include "services/audit/audit_metrics.h"
#include "services/audit/audit_query.h"
#include "services/audit/audit_report.h"
#include "services/audit/audit_retention.h"
#include "services/audit/audit_schema.h"
#include "services/audit/audit_service.h"
#include "services/audit/audit_verifier.h"
#include "services/audit/checkpoint_signer.h"

namespace {

using namespace chasqui;
using namespace chasqui::audit;

constexpr int kExitTampered = 1;
constexpr int kExitUsage = 2;
constexpr int kExitCorrupt = 3;

int Fail(const absl::Status& status) {
  CHQ_LOG_ERROR("audit: {}", MessageOf(status));
  return absl::IsDataLoss(status) ? kExitCorrupt : kExitUsage;
}

struct ServeFlags {
  std::string env;
  std::string data;
  std::string checkpoint_key;
  std::string checkpoint_signer = "local";
  std::string checkpoint_cert;
  int64_t crypto_timeout_ms = 2'000;
  BusOptions bus;
  std::string nats_password_file;
  OpsOptions ops;
  AuditChainOptions chain;
  std::string anchors;
  AuditAccessOptions access;
};

int Serve(ServeFlags f) {
  DisableCoreDumps();  // a core would hold the checkpoint key
  std::signal(SIGPIPE, SIG_IGN);
  f.chain.env = f.env;
  if (f.checkpoint_signer != "local" && f.checkpoint_signer != "crypto") {
    return Fail(absl::InvalidArgumentError(fmt::format(
        "--checkpoint-signer {}: expected local or crypto", f.checkpoint_signer)));
  }
  const bool remote = f.checkpoint_signer == "crypto";
  if (remote && (f.checkpoint_cert.empty() || f.anchors.empty())) {
    return Fail(absl::InvalidArgumentError(
        "--checkpoint-signer crypto needs --checkpoint-cert (the audit key's certificate) and "
        "--anchors (to check the crypto service's signatures)"));
  }
  std::unique_ptr<CheckpointSigner> signer;
  std::optional<Identity> remote_identity;
  if (remote) {
    auto id = LoadIdentity(f.checkpoint_key, f.checkpoint_cert);
    if (!id.ok()) return Fail(id.status());
    remote_identity.emplace(*std::move(id));
  } else {
    auto local = LocalCheckpointSigner::Load(f.checkpoint_key, f.env);
    if (!local.ok()) return Fail(local.status());
    signer = *std::move(local);
  }
  auto store = KvStore::Open({.path = f.data});
  if (!store.ok()) return Fail(store.status());
  CHQ_LOG_INFO("config: env={} data={} nats={} checkpoints signed by {} (key {}) every {} "
               "records or {} ms",
               f.env, f.data, f.bus.url,
               remote ? "the crypto service" : "the audit service's own key", f.checkpoint_key,
               f.chain.checkpoint_every_records, f.chain.checkpoint_every_ms);

  TerminationSignals signals;  // before any thread starts: they inherit the mask
  auto registry = std::make_shared<prometheus::Registry>();
  AuditMetrics metrics(*registry);
  f.bus.name = fmt::format("chasqui-audit-{}", f.env);
  // An ack is the last step before a router may relay a reply: flush it at once rather than
  // let nats.c hold it up to 1 ms (acks are few: one per AppendBatch).
  f.bus.send_asap = true;
  auto bus = ConnectWithPasswordFile(f.bus, f.nats_password_file);
  if (!bus.ok()) return Fail(bus.status());
  if (remote) {
    auto anchors = LoadTrustAnchors(f.anchors);
    if (!anchors.ok()) return Fail(anchors.status());
    auto r = RemoteCheckpointSigner::Create(
        bus->get(),
        fmt::format("{}.{}.sign", NatsServiceInboxPrefix("audit", f.env), ::getpid()),
        *std::move(remote_identity), *std::move(anchors),
        absl::Milliseconds(f.crypto_timeout_ms));
    if (!r.ok()) return Fail(r.status());
    signer = *std::move(r);
  }
  auto chain = AuditChain::Open(f.chain, store->get(), signer.get(), SystemClock(), &metrics);
  if (!chain.ok()) return Fail(chain.status());
  // Readers' certificates: verified against the pinned roots, fetched from the crypto service
  // on first sight, revocations followed. Without --anchors, queries and reports are refused.
  std::unique_ptr<FollowedSigners> signers;
  std::unique_ptr<AuditAccess> access;
  if (!f.anchors.empty()) {
    auto anchors = LoadTrustAnchors(f.anchors);
    if (!anchors.ok()) return Fail(anchors.status());
    auto followed = FollowedSigners::Start(
        bus->get(), *anchors, {f.env},
        fmt::format("{}.{}", NatsServiceInboxPrefix("audit", f.env), ::getpid()), SystemClock());
    if (!followed.ok()) return Fail(followed.status());
    signers = *std::move(followed);
    // Seen nonces of signed reads live in the store: a restart does not reopen a replay.
    f.access.nonce_store = store->get();
    access = std::make_unique<AuditAccess>(f.access, signers.get(), SystemClock());
  } else {
    CHQ_LOG_WARN("no --anchors: signed queries and reports are refused UNAVAILABLE");
  }
  auto service = AuditService::Start(bus->get(), chain->get(), store->get(), &metrics,
                                     {.access = access.get(), .report_zone = f.chain.report_zone});
  if (!service.ok()) return Fail(service.status());
  AuditService* svc = service->get();
  auto ops = OpsServer::Start(f.ops, registry, [svc] { return svc->Ready(); });
  if (!ops.ok()) return Fail(ops.status());

  const int sig = signals.Wait();
  CHQ_LOG_INFO("signal {}: draining", sig);
  // Stop taking requests, write and acknowledge what is queued, then close the connection.
  if (auto s = (*service)->Drain(absl::Seconds(5)); !s.ok()) {
    CHQ_LOG_WARN("drain: {}", MessageOf(s));
  }
  (*chain)->Stop();
  if (auto s = (*bus)->Flush(absl::Seconds(2)); !s.ok()) CHQ_LOG_WARN("flush: {}", MessageOf(s));
  service->reset();
  access.reset();
  signers.reset();
  // The chain's final checkpoint is written (Stop); the signer's subscription goes before
  // the connection.
  chain->reset();
  signer.reset();
  if (auto s = (*bus)->Drain(absl::Seconds(5)); !s.ok()) CHQ_LOG_WARN("drain: {}", MessageOf(s));
  bus->reset();
  ops->reset();
  store->reset();
  chasqui::CloseNatsLibrary();
  CHQ_LOG_INFO("audit stopped");
  return 0;
}

// Who signed the checkpoints: a trust file holding the checkpoint key's public entry, or the
// pinned roots and the signer's certificate.
struct SignerTrustFlags {
  std::string trust;
  std::string roots;
  std::string signer_cert;
};

struct SignerTrust {
  std::optional<TrustStore> store;
  std::optional<PublicIdentity> signer;
  std::optional<TrustAnchors> roots;
};

// Fills options.checkpoint_key (pointing into `out`), or leaves it unset with no flags.
absl::Status LoadSignerTrust(const SignerTrustFlags& f, const std::string& env, SignerTrust& out,
                             VerifyOptions& options) {
  if (!f.trust.empty()) {
    CHASQUI_ASSIGN_OR_RETURN(TrustStore loaded, TrustStore::Load(f.trust, env));
    out.store.emplace(std::move(loaded));
    options.checkpoint_key = [&out](uint64_t serial) { return out.store->BySerial(serial); };
    return absl::OkStatus();
  }
  if (f.roots.empty() && !f.signer_cert.empty()) {
    return absl::InvalidArgumentError("--signer-cert needs --roots");
  }
  if (f.roots.empty()) return absl::OkStatus();
  CHASQUI_ASSIGN_OR_RETURN(TrustAnchors anchors, LoadTrustAnchors(f.roots));
  // Checkpoints signed by the crypto service verify against the roots alone.
  out.roots.emplace(anchors);
  options.checkpoint_roots = &*out.roots;
  // Every certificate the chain recorded as issued must be one a pinned root signed.
  options.certificate_roots = &*out.roots;
  if (f.signer_cert.empty()) return absl::OkStatus();
  CHASQUI_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(f.signer_cert, "--signer-cert"));
  v1::Certificate cert;
  v1::CertificateBody body;
  if (!cert.ParseFromString(bytes) || !body.ParseFromString(cert.body())) {
    return absl::InvalidArgumentError(
        fmt::format("--signer-cert {}: not a certificate", f.signer_cert));
  }
  // Checked as of its own start: checkpoints it signed stay verifiable after it expires.
  auto verified = VerifyCertificate(cert, anchors, env, body.not_before_ms());
  if (!verified.ok()) {
    return absl::Status(verified.status().code(),
                        ToAbsl(fmt::format("--signer-cert {}: {}", f.signer_cert,
                                           MessageOf(verified.status()))));
  }
  PublicIdentity pub;
  pub.serial = verified->serial;
  pub.entity = verified->entity;
  pub.env = verified->env;
  pub.role = Role::kAudit;
  pub.sign_pk = verified->sign_pk;
  out.signer.emplace(std::move(pub));
  options.checkpoint_key = [&out](uint64_t serial) -> const PublicIdentity* {
    return serial == out.signer->serial ? &*out.signer : nullptr;
  };
  return absl::OkStatus();
}

struct VerifyFlags {
  std::string data;
  std::string export_file;
  std::string env;
  SignerTrustFlags trust;
  uint64_t from = 1;
  uint64_t to = 0;
};

int PrintReport(const VerifyReport& report, bool signatures, std::string_view what) {
  if (report.finding == Finding::kIntact) {
    std::cout << fmt::format(
        "intact: {}{} records checked (seq {} to {}), {} checkpoints ({} signatures checked{}), "
        "last checkpoint at seq {}{}\n",
        what, report.records_checked, report.first_seq, report.last_seq,
        report.checkpoints_checked, report.checkpoint_signatures_checked,
        signatures ? "" : "; no --trust or --roots given", report.last_checkpoint_seq,
        report.certificates_checked == 0
            ? ""
            : fmt::format("; {} recorded certificates verified against the roots",
                          report.certificates_checked));
    return 0;
  }
  std::cout << fmt::format("{} at seq {}: {}\n", FindingName(report.finding),
                           report.first_bad_seq, report.detail);
  return report.finding == Finding::kStorageCorruption ? kExitCorrupt : kExitTampered;
}

int Verify(const VerifyFlags& f) {
  if (f.data.empty() == f.export_file.empty()) {
    return Fail(absl::InvalidArgumentError("give exactly one of --data and --export"));
  }
  VerifyOptions options;
  options.env = f.env;
  options.from = f.from;
  options.to = f.to;
  SignerTrust trust;
  if (auto s = LoadSignerTrust(f.trust, f.env, trust, options); !s.ok()) return Fail(s);
  const bool signatures =
      static_cast<bool>(options.checkpoint_key) || options.checkpoint_roots != nullptr;
  if (!f.export_file.empty()) {
    auto bytes = ReadFileToString(f.export_file, "--export");
    if (!bytes.ok()) return Fail(bytes.status());
    auto report = VerifyExport(*bytes, options);
    if (!report.ok()) return Fail(report.status());
    return PrintReport(*report, signatures, "export: ");
  }
  auto store = KvStore::Open({.path = f.data, .create_if_missing = false});
  if (!store.ok()) {
    if (absl::IsDataLoss(store.status())) {
      std::cout << "storage_corruption at open: " << MessageOf(store.status()) << "\n";
      return kExitCorrupt;
    }
    return Fail(store.status());
  }
  auto report = VerifyChain(**store, options);
  if (!report.ok()) return Fail(report.status());
  return PrintReport(*report, signatures, "");
}

// Where a signed read goes: the service over NATS, as the holder of --key/--cert.
struct RemoteFlags {
  std::string key;
  std::string cert;
  BusOptions bus;
  std::string nats_password_file;
  int64_t timeout_ms = 10'000;
};

// Signs `body` with the key bound to its certificate and asks `subject`; the answer's bytes.
absl::StatusOr<std::string> AskSigned(const RemoteFlags& f, std::string_view subject,
                                      v1::AuditControlBody body) {
  CHASQUI_ASSIGN_OR_RETURN(Identity id, LoadIdentity(f.key, f.cert));
  BusOptions options = f.bus;
  options.name = fmt::format("chasqui-audit-cli-{}", id.pub.entity);
  options.send_asap = true;
  CHASQUI_ASSIGN_OR_RETURN(std::unique_ptr<Bus> bus,
                           ConnectWithPasswordFile(options, f.nats_password_file));
  // Replies come to the entity's own inbox (its NATS user may read nothing else).
  CHASQUI_ASSIGN_OR_RETURN(
      std::unique_ptr<RequestMux> mux,
      RequestMux::Create(bus.get(), fmt::format("{}.{}", EntityInboxPrefix(id.pub.env, id.pub.entity),
                                                ToHex(RandomString(8)))));
  const v1::ControlRequest request = MakeAuditRequest(
      std::move(body), id.pub.env, id.pub.serial, id.sign, SystemClock().NowUnixMillis());
  auto answer = mux->RequestAndWait(subject, request.SerializeAsString(),
                                    absl::Milliseconds(f.timeout_ms), "the audit service");
  mux.reset();
  bus.reset();
  return answer;
}

int AnswerError(const v1::ErrorInfo& error) {
  CHQ_LOG_ERROR("audit: refused {}: {}", CodeName(error.code()), error.message());
  return kExitUsage;
}

struct QueryFlags {
  std::string data;
  RemoteFlags remote;
  v1::QueryRequest request;
  std::string outcome;
  std::string kind;
  std::string page_token;
  bool json = false;
};

std::string Iso(int64_t ms) {
  const std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms % 1000);
}

int Query(QueryFlags f) {
  if (!f.outcome.empty()) {
    v1::Code code;
    if (!v1::Code_Parse(f.outcome, &code)) {
      return Fail(absl::InvalidArgumentError(
          fmt::format("--outcome {}: not a code (OK, BAD_REQUEST, REPLAYED, ...)", f.outcome)));
    }
    f.request.set_has_outcome(true);
    f.request.set_outcome(code);
  }
  if (!f.kind.empty()) {
    v1::EntryKind kind;
    if (!v1::EntryKind_Parse("ENTRY_KIND_" + absl::AsciiStrToUpper(f.kind), &kind)) {
      return Fail(absl::InvalidArgumentError(fmt::format(
          "--kind {}: expected record, refusal_count or certificate", f.kind)));
    }
    f.request.set_kind(kind);
  }
  if (!f.page_token.empty()) {
    auto token = FromHex(f.page_token, "--page-token");
    if (!token.ok()) return Fail(token.status());
    f.request.set_page_token(*token);
  }
  absl::StatusOr<v1::QueryResponse> response;
  if (f.data.empty() == f.remote.key.empty()) {
    return Fail(absl::InvalidArgumentError(
        "give --data DIR (read the store here) or --key K --cert C (ask the service)"));
  }
  if (!f.data.empty()) {
    auto store = KvStore::Open({.path = f.data, .create_if_missing = false});
    if (!store.ok()) return Fail(store.status());
    response = RunQuery(**store, f.request);
  } else {
    v1::AuditControlBody body;
    *body.mutable_query() = f.request;
    auto wire = AskSigned(f.remote, kQuerySubject, std::move(body));
    if (!wire.ok()) return Fail(wire.status());
    response.emplace();
    if (!response->ParseFromString(*wire)) {
      return Fail(absl::InvalidArgumentError("the audit service's answer is not a QueryResponse"));
    }
    if (response->has_error()) return AnswerError(response->error());
  }
  if (!response.ok()) return Fail(response.status());
  google::protobuf::util::JsonPrintOptions json_options;
  json_options.preserve_proto_field_names = true;
  nlohmann::json out = nlohmann::json::array();
  if (!f.json) {
    std::cout << fmt::format("{:>8}  {:<24}  {:<12} {:<12} {:<20} {:<16} {:<18} {}\n", "seq",
                             "received", "consumer", "provider", "service", "end_user",
                             "outcome", "request_id");
  }
  for (const v1::StoredRecord& rec : response->records()) {
    v1::ChainEntry entry;
    if (!entry.ParseFromString(rec.entry())) continue;
    if (f.json) {
      std::string entry_json;
      (void)google::protobuf::util::MessageToJsonString(entry, &entry_json, json_options);
      out.push_back({{"seq", rec.seq()},
                     {"hash", ToHex(rec.hash())},
                     {"entry", nlohmann::json::parse(entry_json, nullptr, false)}});
      continue;
    }
    if (entry.has_certificate()) {
      // A certificate issued: who it names, its role and serial, under the transparency log's
      // sequence.
      const v1::TransparencyLogEntry& e = entry.certificate().entry();
      v1::Certificate cert;
      v1::CertificateBody body;
      (void)(cert.ParseFromString(e.certificate()) && body.ParseFromString(cert.body()));
      std::cout << fmt::format("{:>8}  {:<24}  {:<12} {:<12} {:<20} {:<16} {:<18} serial {} log {}\n",
                               rec.seq(), Iso(e.logged_at_ms()), body.entity(), "-",
                               "(certificate)", body.subject().empty() ? "-" : body.subject(),
                               CertificateRoleName(body.role()), body.serial(), e.sequence());
      continue;
    }
    if (entry.has_refusal_count()) {
      const v1::RefusalCount& c = entry.refusal_count();
      std::cout << fmt::format("{:>8}  {:<24}  {:<12} {:<12} {:<20} {:<16} {:<18} x{}\n",
                               rec.seq(), Iso(c.interval_start_ms()), c.consumer(), "-",
                               "(refusals)", "-", CodeName(c.reason()), c.count());
      continue;
    }
    const v1::AuditRecord& r = entry.record();
    std::cout << fmt::format("{:>8}  {:<24}  {:<12} {:<12} {:<20} {:<16} {:<18} {}\n", rec.seq(),
                             Iso(r.received_at_ms()), r.consumer(), r.provider(), r.service(),
                             r.end_user(), CodeName(r.outcome()), ToHex(r.request_id()));
  }
  if (f.json) {
    nlohmann::json doc = {{"records", out}};
    if (!response->next_page_token().empty()) {
      doc["next_page_token"] = ToHex(response->next_page_token());
    }
    std::cout << doc.dump(2) << "\n";
  } else if (!response->next_page_token().empty()) {
    std::cout << "more: --page-token " << ToHex(response->next_page_token()) << "\n";
  }
  return 0;
}

struct ReportFlags {
  std::string data;
  RemoteFlags remote;
  v1::ReportRequest request;
  std::string zone = kDefaultReportZone;
  bool json = false;
};

int Report(ReportFlags f) {
  if (f.data.empty() == f.remote.key.empty()) {
    return Fail(absl::InvalidArgumentError(
        "give --data DIR (read the store here) or --key K --cert C (ask the service)"));
  }
  v1::ReportResponse response;
  if (!f.data.empty()) {
    auto store = KvStore::Open({.path = f.data, .create_if_missing = false});
    if (!store.ok()) return Fail(store.status());
    auto local = RunReport(**store, f.request, f.zone);
    if (!local.ok()) return Fail(local.status());
    response = *std::move(local);
  } else {
    v1::AuditControlBody body;
    *body.mutable_report() = f.request;
    auto wire = AskSigned(f.remote, kReportSubject, std::move(body));
    if (!wire.ok()) return Fail(wire.status());
    if (!response.ParseFromString(*wire)) {
      return Fail(absl::InvalidArgumentError("the audit service's answer is not a ReportResponse"));
    }
    if (response.has_error()) return AnswerError(response.error());
  }
  if (f.json) {
    nlohmann::json rows = nlohmann::json::array();
    for (const v1::ReportRow& r : response.rows()) {
      nlohmann::json by_outcome = nlohmann::json::object();
      for (const auto& [code, n] : r.by_outcome()) by_outcome[code] = n;
      rows.push_back({{"day", r.day()},
                      {"consumer", r.consumer()},
                      {"provider", r.provider()},
                      {"service", r.service()},
                      {"total", r.total()},
                      {"errors", r.errors()},
                      {"by_outcome", by_outcome},
                      {"latency_p50_ms", r.latency_p50_ms()},
                      {"latency_p95_ms", r.latency_p95_ms()},
                      {"latency_max_ms", r.latency_max_ms()},
                      {"latency_mean_ms", r.latency_mean_ms()}});
    }
    nlohmann::json refusals = nlohmann::json::array();
    for (const v1::RefusalRow& r : response.refusals()) {
      refusals.push_back({{"day", r.day()},
                          {"consumer", r.consumer()},
                          {"reason", std::string(CodeName(r.reason()))},
                          {"count", r.count()}});
    }
    std::cout << nlohmann::json({{"zone", response.zone()}, {"rows", rows}, {"refusals", refusals}})
                     .dump(2)
              << "\n";
    return 0;
  }
  std::cout << fmt::format("days in {}; latency in ms (p50/p95: bucket upper bounds)\n",
                           response.zone());
  std::cout << fmt::format("{:<10}  {:<12} {:<12} {:<20} {:>8} {:>7} {:>6} {:>6} {:>7}  {}\n",
                           "day", "consumer", "provider", "service", "total", "errors", "p50",
                           "p95", "max", "by outcome");
  for (const v1::ReportRow& r : response.rows()) {
    std::string outcomes;
    for (const auto& [code, n] : std::map<std::string, uint64_t>(r.by_outcome().begin(),
                                                                 r.by_outcome().end())) {
      outcomes += fmt::format("{}{}={}", outcomes.empty() ? "" : " ", code, n);
    }
    std::cout << fmt::format("{:<10}  {:<12} {:<12} {:<20} {:>8} {:>7} {:>6} {:>6} {:>7}  {}\n",
                             r.day(), r.consumer(), r.provider(), r.service(), r.total(),
                             r.errors(), r.latency_p50_ms(), r.latency_p95_ms(),
                             r.latency_max_ms(), outcomes);
  }
  if (response.refusals_size() > 0) {
    std::cout << "refusals before authentication (counted by the routers)\n";
    std::cout << fmt::format("{:<10}  {:<12} {:<18} {:>8}\n", "day", "consumer", "reason", "count");
    for (const v1::RefusalRow& r : response.refusals()) {
      std::cout << fmt::format("{:<10}  {:<12} {:<18} {:>8}\n", r.day(), r.consumer(),
                               CodeName(r.reason()), r.count());
    }
  }
  return 0;
}

struct RetentionFlags {
  std::string data;
  std::string env;
  std::string before;
  std::string zone = kDefaultReportZone;
  std::string file;  // export: --out; prune: --export
  SignerTrustFlags trust;
};

// The start of day `before` (YYYY-MM-DD) in `zone`, as Unix ms.
absl::StatusOr<int64_t> StartOfDay(const std::string& before, const std::string& zone_name) {
  CHASQUI_ASSIGN_OR_RETURN(absl::TimeZone zone, LoadReportZone(zone_name));
  absl::CivilDay day;
  if (before.size() != 10 || !absl::ParseCivilTime(before, &day)) {
    return absl::InvalidArgumentError(fmt::format("--before {}: not a day (YYYY-MM-DD)", before));
  }
  return absl::ToUnixMillis(absl::FromCivil(day, zone));
}

int Retention(const RetentionFlags& f, bool prune) {
  auto before_ms = StartOfDay(f.before, f.zone);
  if (!before_ms.ok()) return Fail(before_ms.status());
  VerifyOptions options;
  options.env = f.env;
  SignerTrust trust;
  if (auto s = LoadSignerTrust(f.trust, f.env, trust, options); !s.ok()) return Fail(s);
  auto store = KvStore::Open({.path = f.data, .create_if_missing = false});
  if (!store.ok()) return Fail(store.status());
  const int64_t now = SystemClock().NowUnixMillis();
  if (prune) {
    auto bytes = ReadFileToString(f.file, "--export");
    if (!bytes.ok()) return Fail(bytes.status());
    auto removed = PruneExported(**store, *bytes, *before_ms, options, now);
    if (!removed.ok()) return Fail(removed.status());
    CHQ_LOG_INFO("pruned {} records before {} ({}), exported in {}", *removed, f.before, f.zone,
                 f.file);
    std::cout << fmt::format("pruned {} records before {}\n", *removed, f.before);
    return 0;
  }
  auto exported = ExportBefore(**store, *before_ms, options, now);
  if (!exported.ok()) return Fail(exported.status());
  if (auto s = WriteFileDurably(f.file, exported->SerializeAsString(), 0600, false); !s.ok()) {
    return Fail(s);
  }
  CHQ_LOG_INFO("exported records {} to {} ({} checkpoints) before {} to {}",
               exported->first_seq(), exported->last_seq(), exported->checkpoints_size(),
               f.before, f.file);
  std::cout << fmt::format("exported records {} to {} with {} checkpoints to {}\n",
                           exported->first_seq(), exported->last_seq(),
                           exported->checkpoints_size(), f.file);
  return 0;
}

// A throwaway checkpoint signer for the benchmark.
class BenchSigner final : public CheckpointSigner {
 public:
  absl::Status Sign(v1::Checkpoint& cp) override {
    const SignatureBytes sig = key_.Sign(CheckpointSignedBytes(cp.env(), cp));
    cp.set_signer_serial(1);
    cp.set_signature(sig.data(), sig.size());
    return absl::OkStatus();
  }

 private:
  SigningKey key_ = SigningKey::Generate();
};

v1::AuditRecord BenchRecord(uint64_t i) {
  v1::AuditRecord r;
  r.set_request_id(fmt::format("bench-{:016}", i));
  r.set_sender_cert(7);
  r.set_env("test");
  r.set_consumer("sin");
  r.set_provider("segip");
  r.set_service("persona_consulta");
  r.set_service_version("1");
  r.set_end_user("ana.perez");
  r.set_received_at_ms(1'800'000'000'000 + static_cast<int64_t>(i));
  r.set_outcome(v1::OK);
  r.set_request_body_hash(std::string(32, 'h'));
  r.set_reply_body_hash(std::string(32, 'g'));
  r.mutable_request()->set_header_hash(std::string(32, 'q'));
  r.mutable_request()->mutable_sig()->set_root_signature(std::string(64, 's'));
  r.mutable_reply()->set_header_hash(std::string(32, 'r'));
  r.mutable_reply()->mutable_sig()->set_root_signature(std::string(64, 't'));
  return r;
}

// Appends `n` records starting at `first`, keeping up to `window` unacknowledged; returns
// records per second.
double RunBench(AuditChain& chain, uint64_t first, uint64_t n, uint64_t window) {
  std::mutex mu;
  std::condition_variable cv;
  uint64_t acked = 0;
  uint64_t failed = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (uint64_t i = 0; i < n; ++i) {
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return i - acked < window; });
    }
    chain.Append(BenchRecord(first + i), [&](absl::StatusOr<uint64_t> r) {
      std::lock_guard<std::mutex> lock(mu);
      ++acked;
      if (!r.ok()) ++failed;
      cv.notify_all();
    });
  }
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return acked == n; });
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (failed > 0) std::cerr << failed << " appends failed\n";
  return static_cast<double>(n) / secs;
}

int Bench(const std::string& data, uint64_t records) {
  InitSodium();
  auto store = KvStore::Open({.path = data});
  if (!store.ok()) return Fail(store.status());
  BenchSigner signer;
  AuditChainOptions options;
  auto chain = AuditChain::Open(options, store->get(), &signer);
  if (!chain.ok()) return Fail(chain.status());
  const uint64_t base = (*chain)->stats().next_seq * 1'000'000;
  const uint64_t single = std::min<uint64_t>(records, 2000);
  const double one_by_one = RunBench(**chain, base, single, 1);
  const double grouped = RunBench(**chain, base + single, records, records);
  const auto stats = (*chain)->stats();
  std::cout << fmt::format(
      "audit append, {} B records, synced: group commit {:.0f} records/s ({} records, {} "
      "groups in total); one sync per record {:.0f} records/s ({} records); ratio {:.1f}x\n",
      BenchRecord(0).ByteSizeLong(), grouped, records, stats.groups, one_by_one, single,
      grouped / one_by_one);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  chasqui::InitLogging("audit");
  CLI::App app{"Chasqui audit: the durable, hash-chained trace of every exchange"};
  app.require_subcommand(1);

  ServeFlags serve;
  serve.bus.url = "nats://127.0.0.1:4222";
  CLI::App* s = app.add_subcommand("serve", "serve chq.ctl.audit.append and .query");
  s->add_option("--env", serve.env, "environment: test or prod")->required();
  s->add_option("--data", serve.data, "the RocksDB directory of the chain")->required();
  s->add_option("--checkpoint-key", serve.checkpoint_key,
                "the audit service's Ed25519 key file (from `chasqui keygen`): signs checkpoints "
                "itself (local), or signs the requests to the crypto service (crypto)")
      ->required();
  s->add_option("--checkpoint-signer", serve.checkpoint_signer,
                "who signs checkpoints: local (the key above) or crypto (the crypto service, "
                "over chq.ctl.crypto.sign; needs --checkpoint-cert and --anchors)");
  s->add_option("--checkpoint-cert", serve.checkpoint_cert,
                "the certificate of --checkpoint-key (role audit), for --checkpoint-signer crypto");
  s->add_option("--crypto-timeout-ms", serve.crypto_timeout_ms,
                "how long a checkpoint waits for the crypto service before it is retried");
  s->add_option("--checkpoint-retry-ms", serve.chain.checkpoint_retry_ms,
                "after a checkpoint could not be signed, wait this long before trying again");
  s->add_option("--nats", serve.bus.url, "NATS server URL");
  s->add_option("--nats-user", serve.bus.user, "nats-server user (audit.<env>)");
  s->add_option("--nats-password-file", serve.nats_password_file,
                "file holding that user's password (mode 0600)");
  s->add_option("--nats-ca", serve.bus.ca_file, "nats-server's CA (PEM): connect over TLS");
  s->add_option("--ops-host", serve.ops.host, "address for /metrics, /healthz, /readyz");
  s->add_option("--ops-port", serve.ops.port, "port for /metrics etc. (0 = pick one)");
  s->add_option("--checkpoint-every", serve.chain.checkpoint_every_records,
                "sign the chain head every N records");
  s->add_option("--checkpoint-ms", serve.chain.checkpoint_every_ms,
                "... or every T milliseconds, whichever comes first");
  s->add_option("--max-queued", serve.chain.max_queued_entries,
                "entries waiting for the writer before appends are refused");
  s->add_option("--anchors", serve.anchors,
                "pinned roots (roots.json): verify signed queries and reports; without it "
                "they are refused");
  s->add_option("--report-zone", serve.chain.report_zone,
                "time zone of the per-day consumption aggregates");
  s->add_option("--control-window-ms", serve.access.control_window_ms,
                "sent_at window of signed queries and reports");

  VerifyFlags verify;
  CLI::App* v = app.add_subcommand(
      "verify", "re-walk the chain; exit 0 intact, 1 tampered, 2 cannot run, 3 corrupt storage");
  v->add_option("--data", verify.data, "the RocksDB directory (service stopped)");
  v->add_option("--export", verify.export_file, "an export file (from `chasqui-audit export`)");
  v->add_option("--env", verify.env, "environment the checkpoints were signed for")->required();
  auto add_signer_trust = [](CLI::App* cmd, SignerTrustFlags& t) {
    cmd->add_option("--trust", t.trust, "trust file with the checkpoint signer's public key");
    cmd->add_option("--roots", t.roots,
                    "pinned roots (roots.json): checks checkpoints signed by the crypto service, "
                    "and with --signer-cert those signed by the audit key");
    cmd->add_option("--signer-cert", t.signer_cert,
                    "the audit key's certificate (local checkpoints), verified against --roots");
  };
  add_signer_trust(v, verify.trust);
  v->add_option("--from", verify.from, "first seq to check");
  v->add_option("--to", verify.to, "last seq to check (default: the end)");

  QueryFlags query;
  int64_t from_ms = 0;
  int64_t to_ms = 0;
  uint32_t limit = 0;
  std::string consumer, provider, service, end_user;
  auto add_remote = [](CLI::App* cmd, RemoteFlags& r) {
    cmd->add_option("--key", r.key, "key file that signs the request (with --cert)");
    cmd->add_option("--cert", r.cert, "that key's certificate (from `chasqui enrol`)");
    cmd->add_option("--nats", r.bus.url, "NATS server URL");
    cmd->add_option("--nats-user", r.bus.user, "nats-server user (<entity>.<env>)");
    cmd->add_option("--nats-password-file", r.nats_password_file,
                    "file holding that user's password (mode 0600)");
    cmd->add_option("--nats-ca", r.bus.ca_file, "nats-server's CA (PEM): connect over TLS");
    cmd->add_option("--timeout-ms", r.timeout_ms, "how long to wait for the answer");
  };
  CLI::App* q = app.add_subcommand(
      "query", "list records: signed, from the service, or from the store (service stopped)");
  q->add_option("--data", query.data, "the RocksDB directory (an operator on the audit host)");
  add_remote(q, query.remote);
  q->add_option("--consumer", consumer, "consumer entity");
  q->add_option("--provider", provider, "provider entity");
  q->add_option("--service", service, "service (with --provider)");
  q->add_option("--end-user", end_user, "end user (with --consumer)");
  q->add_option("--outcome", query.outcome, "outcome code, e.g. OK, FORBIDDEN, REPLAYED");
  q->add_option("--kind", query.kind,
                "only entries of this kind: record, refusal_count or certificate (certificates "
                "issued by the crypto service)");
  q->add_option("--from-ms", from_ms, "received at or after (Unix ms)");
  q->add_option("--to-ms", to_ms, "received before (Unix ms)");
  q->add_option("--limit", limit, "page size (default 100, at most 1000)");
  q->add_option("--page-token", query.page_token, "continue after the previous page");
  q->add_flag("--json", query.json, "JSON instead of a table");

  ReportFlags report;
  CLI::App* rp = app.add_subcommand(
      "report", "consumption per day: counts by outcome, errors and latency");
  rp->add_option("--data", report.data, "the RocksDB directory (an operator on the audit host)");
  add_remote(rp, report.remote);
  rp->add_option("--consumer", *report.request.mutable_consumer(), "consumer entity");
  rp->add_option("--provider", *report.request.mutable_provider(), "provider entity");
  rp->add_option("--service", *report.request.mutable_service(), "service (with --provider)");
  rp->add_option("--from-day", *report.request.mutable_from_day(), "first day, YYYY-MM-DD")
      ->required();
  rp->add_option("--to-day", *report.request.mutable_to_day(), "last day (default: --from-day)");
  rp->add_option("--zone", report.zone, "the zone the store's days are in (with --data)");
  rp->add_flag("--json", report.json, "JSON instead of a table");

  RetentionFlags export_flags;
  RetentionFlags prune_flags;
  CLI::App* ex = app.add_subcommand(
      "export", "write the records before a day, with their checkpoints, for offline checks");
  CLI::App* pr = app.add_subcommand(
      "prune", "remove the records an export holds (needs that export; service stopped)");
  for (auto [cmd, flags] : {std::pair{ex, &export_flags}, std::pair{pr, &prune_flags}}) {
    cmd->add_option("--data", flags->data, "the RocksDB directory (service stopped)")->required();
    cmd->add_option("--env", flags->env, "environment the checkpoints were signed for")
        ->required();
    cmd->add_option("--before", flags->before, "records received before this day (YYYY-MM-DD)")
        ->required();
    cmd->add_option("--zone", flags->zone, "the zone of --before");
    add_signer_trust(cmd, flags->trust);
  }
  ex->add_option("--out", export_flags.file, "the export file to write (not overwritten)")
      ->required();
  pr->add_option("--export", prune_flags.file, "the export of exactly these records")
      ->required();

  std::string bench_data;
  uint64_t bench_records = 20'000;
  CLI::App* b = app.add_subcommand("bench", "measure group commit vs one sync per record");
  b->add_option("--data", bench_data, "an empty directory for a throwaway store")->required();
  b->add_option("--records", bench_records, "records for the group-commit run");

  CLI11_PARSE(app, argc, argv);
  if (*s) return Serve(std::move(serve));
  if (*v) return Verify(verify);
  if (*q) {
    query.request.set_consumer(consumer);
    query.request.set_provider(provider);
    query.request.set_service(service);
    query.request.set_end_user(end_user);
    query.request.set_from_ms(from_ms);
    query.request.set_to_ms(to_ms);
    query.request.set_page_size(limit);
    return Query(std::move(query));
  }
  if (*rp) return Report(std::move(report));
  if (*ex) return Retention(export_flags, false);
  if (*pr) return Retention(prune_flags, true);
  if (*b) return Bench(bench_data, bench_records);
  return kExitUsage;
}
