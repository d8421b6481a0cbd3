// chasqui-audit: the audit service and its offline tools. The logic lives in chasqui_audit.
//
//   chasqui-audit serve  --env E --data DIR --checkpoint-key FILE [--nats URL ...]
//   chasqui-audit verify --data DIR --env E [--trust FILE] [--from N --to M]
//   chasqui-audit query  --data DIR [--consumer C] [--provider P] [--service S] [--end-user U]
//                        [--outcome CODE] [--from-ms T] [--to-ms T] [--limit N] [--json]
//   chasqui-audit bench  --data DIR [--records N]
//
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

#include "CLI/CLI.hpp"
#include "common/bus/bus.h"
#include "common/core/log.h"
#include "common/core/signals.h"
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
#include "services/audit/audit_chain.h"
#include "services/audit/audit_metrics.h"
#include "services/audit/audit_query.h"
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
  BusOptions bus;
  std::string nats_password_file;
  OpsOptions ops;
  AuditChainOptions chain;
};

int Serve(ServeFlags f) {
  DisableCoreDumps();  // a core would hold the checkpoint key
  std::signal(SIGPIPE, SIG_IGN);
  f.chain.env = f.env;
  auto signer = LocalCheckpointSigner::Load(f.checkpoint_key, f.env);
  if (!signer.ok()) return Fail(signer.status());
  auto store = KvStore::Open({.path = f.data});
  if (!store.ok()) return Fail(store.status());
  CHQ_LOG_INFO("config: env={} data={} nats={} checkpoint key={} (serial {}) every {} records "
               "or {} ms",
               f.env, f.data, f.bus.url, f.checkpoint_key, (*signer)->pub().serial,
               f.chain.checkpoint_every_records, f.chain.checkpoint_every_ms);

  TerminationSignals signals;  // before any thread starts: they inherit the mask
  auto registry = std::make_shared<prometheus::Registry>();
  AuditMetrics metrics(*registry);
  auto chain = AuditChain::Open(f.chain, store->get(), signer->get(), SystemClock(), &metrics);
  if (!chain.ok()) return Fail(chain.status());
  f.bus.name = fmt::format("chasqui-audit-{}", f.env);
  // An ack is the last step before a router may relay a reply: flush it at once rather than
  // let nats.c hold it up to 1 ms (acks are few: one per AppendBatch).
  f.bus.send_asap = true;
  auto bus = ConnectWithPasswordFile(f.bus, f.nats_password_file);
  if (!bus.ok()) return Fail(bus.status());
  auto service = AuditService::Start(bus->get(), chain->get(), store->get(), &metrics);
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
  if (auto s = (*bus)->Drain(absl::Seconds(5)); !s.ok()) CHQ_LOG_WARN("drain: {}", MessageOf(s));
  bus->reset();
  chain->reset();
  ops->reset();
  store->reset();
  nats_Close();
  CHQ_LOG_INFO("audit stopped");
  return 0;
}

struct VerifyFlags {
  std::string data;
  std::string env;
  std::string trust;
  uint64_t from = 1;
  uint64_t to = 0;
};

int Verify(const VerifyFlags& f) {
  auto store = KvStore::Open({.path = f.data, .create_if_missing = false});
  if (!store.ok()) {
    if (absl::IsDataLoss(store.status())) {
      std::cout << "storage_corruption at open: " << MessageOf(store.status()) << "\n";
      return kExitCorrupt;
    }
    return Fail(store.status());
  }
  VerifyOptions options;
  options.env = f.env;
  options.from = f.from;
  options.to = f.to;
  std::optional<TrustStore> trust;
  if (!f.trust.empty()) {
    auto loaded = TrustStore::Load(f.trust, f.env);
    if (!loaded.ok()) return Fail(loaded.status());
    trust.emplace(*std::move(loaded));
    options.checkpoint_key = [&trust](uint64_t serial) { return trust->BySerial(serial); };
  }
  auto report = VerifyChain(**store, options);
  if (!report.ok()) return Fail(report.status());
  if (report->finding == Finding::kIntact) {
    std::cout << fmt::format(
        "intact: {} records checked (last seq {}), {} checkpoints ({} signatures checked{}), "
        "last checkpoint at seq {}\n",
        report->records_checked, report->last_seq, report->checkpoints_checked,
        report->checkpoint_signatures_checked, f.trust.empty() ? "; no --trust given" : "",
        report->last_checkpoint_seq);
    return 0;
  }
  std::cout << fmt::format("{} at seq {}: {}\n", FindingName(report->finding),
                           report->first_bad_seq, report->detail);
  return report->finding == Finding::kStorageCorruption ? kExitCorrupt : kExitTampered;
}

struct QueryFlags {
  std::string data;
  v1::QueryRequest request;
  std::string outcome;
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
  if (!f.page_token.empty()) {
    auto token = FromHex(f.page_token, "--page-token");
    if (!token.ok()) return Fail(token.status());
    f.request.set_page_token(*token);
  }
  auto store = KvStore::Open({.path = f.data, .create_if_missing = false});
  if (!store.ok()) return Fail(store.status());
  auto response = RunQuery(**store, f.request);
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
                "Ed25519 key file that signs checkpoints (from `chasqui keygen`)")
      ->required();
  s->add_option("--nats", serve.bus.url, "NATS server URL");
  s->add_option("--nats-user", serve.bus.user, "nats-server user (audit.<env>)");
  s->add_option("--nats-password-file", serve.nats_password_file,
                "file holding that user's password (mode 0600)");
  s->add_option("--ops-host", serve.ops.host, "address for /metrics, /healthz, /readyz");
  s->add_option("--ops-port", serve.ops.port, "port for /metrics etc. (0 = pick one)");
  s->add_option("--checkpoint-every", serve.chain.checkpoint_every_records,
                "sign the chain head every N records");
  s->add_option("--checkpoint-ms", serve.chain.checkpoint_every_ms,
                "... or every T milliseconds, whichever comes first");
  s->add_option("--max-queued", serve.chain.max_queued_entries,
                "entries waiting for the writer before appends are refused");

  VerifyFlags verify;
  CLI::App* v = app.add_subcommand(
      "verify", "re-walk the chain; exit 0 intact, 1 tampered, 2 cannot run, 3 corrupt storage");
  v->add_option("--data", verify.data, "the RocksDB directory (service stopped)")->required();
  v->add_option("--env", verify.env, "environment the checkpoints were signed for")->required();
  v->add_option("--trust", verify.trust, "trust file with the checkpoint signer's public key");
  v->add_option("--from", verify.from, "first seq to check");
  v->add_option("--to", verify.to, "last seq to check (default: the end)");

  QueryFlags query;
  int64_t from_ms = 0;
  int64_t to_ms = 0;
  uint32_t limit = 0;
  std::string consumer, provider, service, end_user;
  CLI::App* q = app.add_subcommand("query", "list records from the store (service stopped)");
  q->add_option("--data", query.data, "the RocksDB directory")->required();
  q->add_option("--consumer", consumer, "consumer entity");
  q->add_option("--provider", provider, "provider entity");
  q->add_option("--service", service, "service (with --provider)");
  q->add_option("--end-user", end_user, "end user (with --consumer)");
  q->add_option("--outcome", query.outcome, "outcome code, e.g. OK, FORBIDDEN, REPLAYED");
  q->add_option("--from-ms", from_ms, "received at or after (Unix ms)");
  q->add_option("--to-ms", to_ms, "received before (Unix ms)");
  q->add_option("--limit", limit, "page size (default 100, at most 1000)");
  q->add_option("--page-token", query.page_token, "continue after the previous page");
  q->add_flag("--json", query.json, "JSON instead of a table");

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
  if (*b) return Bench(bench_data, bench_records);
  return kExitUsage;
}
