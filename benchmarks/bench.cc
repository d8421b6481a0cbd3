// chasqui-bench: a fully secured exchange beside the raw baseline it is held against
// (DESIGN.md, "Performance budget"), in one run, on one nats-server, with the same payload and
// the same number of requests in flight.
//
//   raw      load (RequestMux) -> raw.req.x -> chasqui-forwarder -> raw.svc.x -> echo -> back
//   secured  Consumer::CallAsync -> chasqui-router --audit=false -> Provider::Serve("echo") -> back
//   quota    the secured path through a chasqui-router --quota that admits each request from
//            leases drawn from a real chasqui-quota (its RocksDB in the temp dir), with limits
//            generous enough that nothing is refused: the cost of enforcing, beside `secured`
//   certs    the secured path on certificates (issue 3): chasqui-router --roots/--cert, and the
//            consumer and provider each on its own CertificateTrust as a gateway is, every key
//            enrolled with a one-time token through a real chasqui-crypto (root ceremony, tokens
//            and `chasqui enrol` as deploy/local-backbone.sh does them), which serves the
//            directory and the revocation lists: the cost of certificate checks, beside `secured`
//   catalog  the certs path with the router following a real chasqui-catalog (--catalog), in
//            which both entities adhered, the provider published `echo`, the consumer's access
//            was approved and its end user registered (`chasqui catalog <verb>` by the people's
//            own enrolled keys); the router holds its first snapshot before the window (issue 4)
//   audited  the same through a chasqui-router that traces every exchange in chasqui-audit
//            (its RocksDB in the temp dir) and relays each reply once its record is synced
//   raw-tls, secured-tls, certs-tls
//            raw, secured and certs again on a second nats-server, TLS-only (DESIGN.md:
//            "connections use TLS"), its certificate from a local CA made by deploy/tls-ca.sh:
//            what TLS costs NATS (raw-tls/raw) and the platform (secured-tls/secured), and the
//            platform against raw NATS over the same TLS server (secured-tls/raw-tls)
//
// The plain phases run on one nats-server, the TLS phases on the other; the two differ only by
// the `tls {}` block. The bench's own connections and every child's `--nats URL [--nats-ca
// FILE]` come from one NatsEndpoint per server, so a phase over TLS differs from its plain twin
// in nothing else.
//
// The bench starts both nats-servers, the routers, chasqui-audit and the forwarders in a temp
// dir, runs the phases (raw, secured, raw-tls, secured-tls, certs, catalog, certs-tls, quota,
// audited),
// prints one table and stops everything on every path out. Each phase keeps exactly K requests
// in flight (each completion issues the next request on the thread that completed it), warms
// up, then measures for --seconds: completions, errors, latency per request (steady clock), and
// the CPU time of the router or forwarder process over exactly that interval.

#include <httplib.h>
#include <signal.h>
#include <sodium.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/synchronization/notification.h"
#include "benchmarks/child_process.h"
#include "common/core/files.h"
#include "common/bus/bus.h"
#include "common/bus/request_mux.h"
#include "common/core/log.h"
#include "common/core/status.h"
#include "common/envelope/errors.h"
#include "common/envelope/identity.h"
#include "common/trust/certificate_trust.h"
#include "common/trust/trust_source.h"
#include "fmt/format.h"
#include "nats/nats.h"
#include "nlohmann/json.hpp"
#include "services/gateway/sdk.h"

namespace chasqui::bench {
namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr char kEnv[] = "test";
constexpr char kConsumer[] = "bench_consumer";
constexpr char kProvider[] = "bench_provider";
constexpr char kService[] = "echo";
constexpr char kEndUser[] = "bench.user";
constexpr char kRouterId[] = "bench";
constexpr char kRawSubject[] = "raw.req.x";
constexpr char kRawServiceSubject[] = "raw.svc.x";
constexpr char kRawInbox[] = "_INBOX.bench.raw";
constexpr auto kStartBound = std::chrono::seconds(10);
constexpr auto kDrainBound = std::chrono::seconds(3);
constexpr auto kPoll = std::chrono::milliseconds(5);
// Synchronous failures re-issue on the same stack; past this depth a slot is given up instead.
constexpr int kMaxIssueDepth = 8;

struct Config {
  size_t payload = 1024;
  int inflight = 256;
  double seconds = 5;
  double warmup_seconds = 1;
  bool send_asap = false;
  bool json = false;
  bool keep_dir = false;
  int64_t timeout_ms = 5000;
  std::string router_bin;
  std::string forwarder_bin;
  std::string audit_bin;
  bool skip_audit = false;
  std::string quota_bin;
  bool skip_quota = false;
  std::string crypto_bin;
  std::string catalog_bin;
  std::string cli_bin;  // `chasqui`: enrolment and the catalog story
  bool skip_certs = false;
  bool skip_catalog = false;
  bool skip_tls = false;
  std::string tls_ca_script;  // deploy/tls-ca.sh
  std::string nats_server_bin = "nats-server";
  std::vector<std::string> router_extra_args;  // passed to chasqui-router as they are
};

// SIGINT/SIGTERM end the run through its destructors (children stopped, temp dir removed): they
// are blocked in every thread and one thread waits for them.
absl::Notification g_interrupted;

class InterruptWatcher {
 public:
  InterruptWatcher() {
    sigemptyset(&signals_);
    sigaddset(&signals_, SIGINT);
    sigaddset(&signals_, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals_, nullptr);  // before any other thread exists
    thread_ = std::thread([this] {
      const timespec tick{0, 100'000'000};
      while (!done_.load()) {
        if (sigtimedwait(&signals_, nullptr, &tick) > 0) {
          if (!g_interrupted.HasBeenNotified()) g_interrupted.Notify();
        }
      }
    });
  }
  ~InterruptWatcher() {
    done_ = true;
    thread_.join();
  }

 private:
  sigset_t signals_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

// Sleeps until `deadline`; false if interrupted meanwhile.
bool SleepUntil(SteadyClock::time_point deadline) {
  const auto left = deadline - SteadyClock::now();
  if (left <= SteadyClock::duration::zero()) return !g_interrupted.HasBeenNotified();
  return !g_interrupted.WaitForNotificationWithTimeout(
      absl::FromChrono(std::chrono::duration_cast<std::chrono::nanoseconds>(left)));
}

absl::Status Interrupted() { return absl::CancelledError("interrupted"); }

// Keeps K requests in flight and records what comes back. The phase supplies `issue`, which must
// lead to exactly one Complete() call per invocation (synchronously or later, on any thread).
class Load {
 public:
  enum class State { kWarmup, kMeasure, kDrain, kClosed };

  explicit Load(size_t max_samples) : samples_(max_samples) {}

  void set_issue(std::function<void()> issue) { issue_ = std::move(issue); }

  void IssueNext() {
    thread_local int depth = 0;
    if (depth >= kMaxIssueDepth) {
      lost_slots_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    in_flight_.fetch_add(1, std::memory_order_relaxed);
    ++depth;
    issue_();
    --depth;
  }

  // `error` is empty for a good answer, else its code. True if the caller should issue the next
  // request.
  bool Complete(SteadyClock::time_point started, std::string_view error) {
    const auto now = SteadyClock::now();
    const State state = state_.load(std::memory_order_acquire);
    if (state != State::kClosed) {
      if (!error.empty()) {
        std::lock_guard<std::mutex> lock(errors_mu_);
        ++errors_[std::string(error)];
      } else if (state == State::kMeasure) {
        ok_.fetch_add(1, std::memory_order_relaxed);
        const size_t i = n_samples_.fetch_add(1, std::memory_order_relaxed);
        if (i < samples_.size()) {
          const auto us = std::chrono::duration_cast<std::chrono::microseconds>(now - started);
          samples_[i] = static_cast<uint32_t>(std::clamp<int64_t>(us.count(), 0, UINT32_MAX));
        }
      }
    }
    in_flight_.fetch_sub(1, std::memory_order_acq_rel);
    return state == State::kWarmup || state == State::kMeasure;
  }

  void set_state(State s) { state_.store(s, std::memory_order_release); }
  int64_t in_flight() const { return in_flight_.load(std::memory_order_acquire); }
  uint64_t ok() const { return ok_.load(); }
  uint64_t lost_slots() const { return lost_slots_.load(); }
  std::map<std::string, uint64_t> errors() const {
    std::lock_guard<std::mutex> lock(errors_mu_);
    return errors_;
  }
  void AddError(const std::string& code, uint64_t n) {
    std::lock_guard<std::mutex> lock(errors_mu_);
    errors_[code] += n;
  }
  // Latencies in microseconds, sorted.
  std::vector<uint32_t> SortedLatencies() const {
    const size_t n = std::min(n_samples_.load(), samples_.size());
    std::vector<uint32_t> v(samples_.begin(), samples_.begin() + static_cast<ptrdiff_t>(n));
    std::sort(v.begin(), v.end());
    return v;
  }

 private:
  std::function<void()> issue_;
  std::atomic<State> state_{State::kWarmup};
  std::atomic<int64_t> in_flight_{0};
  std::atomic<uint64_t> ok_{0};
  std::atomic<uint64_t> lost_slots_{0};
  std::atomic<size_t> n_samples_{0};
  std::vector<uint32_t> samples_;
  mutable std::mutex errors_mu_;
  std::map<std::string, uint64_t> errors_;
};

// A counter snapshot taken at both ends of the measured interval.
struct Snapshot {
  double proc_cpu = 0;  // the router or the forwarder
  double nats_cpu = 0;
  double self_cpu = 0;
  uint64_t proc_switches = 0, nats_switches = 0, self_switches = 0;
  double idle_child_cpu = 0;  // the other phase's process, idle but ours
  double audit_cpu = 0;       // chasqui-audit (audited phase) or chasqui-quota (quota phase)
  double router_audit_ack_sum = 0, router_audit_ack_count = 0;
  MachineCpu machine;
  uint64_t consumer_batches = 0, consumer_signed = 0;
  uint64_t provider_batches = 0, provider_signed = 0;
  double router_batch_sum = 0, router_batch_count = 0;
  double router_cache_hits = 0, router_cache_misses = 0;
};

struct PhaseResult {
  std::string name;
  std::string proc_name;  // "forwarder" or "router"
  double window_s = 0;
  uint64_t ok = 0;
  std::map<std::string, uint64_t> errors;
  uint64_t error_count = 0;
  double rps = 0, p50_ms = 0, p99_ms = 0, mean_ms = 0, max_ms = 0;
  double proc_cpu_us = 0, nats_cpu_us = 0, bench_cpu_us = 0;        // per request
  double audit_cpu_us = 0;       // chasqui-audit (audited) or chasqui-quota (quota) per request
  double audit_ack_ms = 0;       // mean wait for the durable ack (audited phase)
  double proc_switches = 0, nats_switches = 0, bench_switches = 0;  // context switches per request
  // Cores busy during the window, on the whole machine and outside this run's processes (other
  // users of the machine make every figure noisy).
  double machine_cores = 0, machine_busy_cores = 0, foreign_busy_cores = 0;
  // Secured only (mean batch sizes over the measured interval; 0 when unknown).
  double consumer_batch = 0, provider_batch = 0, router_batch = 0;
  // Root cache misses per request on the request side: the Ed25519 verifies of consumer batches
  // (the router verifies provider batches too, uncounted by its metrics).
  double router_verifies_per_req = 0;
};

double Percentile(const std::vector<uint32_t>& sorted_us, double q) {
  if (sorted_us.empty()) return 0;
  size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted_us.size())));
  rank = std::clamp<size_t>(rank, 1, sorted_us.size());
  return sorted_us[rank - 1] / 1000.0;
}

double PerRequestUs(double before, double after, uint64_t n) {
  return n == 0 ? 0 : (after - before) * 1e6 / static_cast<double>(n);
}

double Ratio(double num, double den) { return den == 0 ? 0 : num / den; }

double CpuOrZero(pid_t pid) {
  auto s = CpuSeconds(pid);
  return s.ok() ? *s : 0;
}

// The router's /metrics, as (series without value) -> value. Only the families the bench reads.
class RouterScrape {
 public:
  static absl::StatusOr<RouterScrape> Get(int port) {
    httplib::Client client("127.0.0.1", port);
    client.set_connection_timeout(2, 0);
    client.set_read_timeout(2, 0);
    auto res = client.Get("/metrics");
    if (!res) {
      return absl::UnavailableError(fmt::format("GET http://127.0.0.1:{}/metrics: {}", port,
                                                httplib::to_string(res.error())));
    }
    if (res->status != 200) {
      return absl::UnavailableError(
          fmt::format("GET http://127.0.0.1:{}/metrics: HTTP {}", port, res->status));
    }
    RouterScrape scrape;
    std::istringstream lines(res->body);
    std::string line;
    while (std::getline(lines, line)) {
      if (line.empty() || line[0] == '#') continue;
      const size_t space = line.rfind(' ');
      if (space == std::string::npos) continue;
      try {
        scrape.series_[line.substr(0, space)] = std::stod(line.substr(space + 1));
      } catch (const std::exception&) {
      }
    }
    return scrape;
  }

  // Sum over every series of metric `name` whose labels contain `label` (e.g. result="hit").
  double Sum(std::string_view name, std::string_view label = {}) const {
    double sum = 0;
    for (const auto& [series, value] : series_) {
      if (series.compare(0, name.size(), name) != 0) continue;
      if (series.size() > name.size() && series[name.size()] != '{') continue;
      if (!label.empty() && series.find(label) == std::string::npos) continue;
      sum += value;
    }
    return sum;
  }

 private:
  std::map<std::string, double> series_;
};

// Runs one phase on a Load whose issue function is set: K in flight, warm-up, measured window,
// drain. `snapshot` fills the phase-specific counters at both ends of the window.
absl::StatusOr<PhaseResult> Drive(const Config& config, Load& load, std::string name,
                                  ChildProcess& proc, ChildProcess& idle_child, ChildProcess& nats,
                                  const std::function<void(Snapshot&)>& snapshot) {
  PhaseResult r;
  r.name = std::move(name);
  r.proc_name = proc.name();
  const auto start = SteadyClock::now();
  for (int i = 0; i < config.inflight; ++i) load.IssueNext();
  const auto warm_end = start + std::chrono::duration_cast<SteadyClock::duration>(
                                    std::chrono::duration<double>(config.warmup_seconds));
  if (!SleepUntil(warm_end)) return Interrupted();

  Snapshot before, after;
  snapshot(before);
  before.machine = MachineCpuSeconds();
  before.idle_child_cpu = CpuOrZero(idle_child.pid());
  before.proc_cpu = CpuOrZero(proc.pid());
  before.nats_cpu = CpuOrZero(nats.pid());
  before.self_cpu = CpuOrZero(0);
  before.proc_switches = ContextSwitches(proc.pid());
  before.nats_switches = ContextSwitches(nats.pid());
  before.self_switches = ContextSwitches(0);
  const auto window_start = SteadyClock::now();
  load.set_state(Load::State::kMeasure);
  const auto window_end_target = window_start + std::chrono::duration_cast<SteadyClock::duration>(
                                                    std::chrono::duration<double>(config.seconds));
  if (!SleepUntil(window_end_target)) return Interrupted();
  load.set_state(Load::State::kDrain);
  const auto window_end = SteadyClock::now();
  after.proc_cpu = CpuOrZero(proc.pid());
  after.nats_cpu = CpuOrZero(nats.pid());
  after.self_cpu = CpuOrZero(0);
  after.idle_child_cpu = CpuOrZero(idle_child.pid());
  after.machine = MachineCpuSeconds();
  after.proc_switches = ContextSwitches(proc.pid());
  after.nats_switches = ContextSwitches(nats.pid());
  after.self_switches = ContextSwitches(0);
  snapshot(after);

  // Let what is in flight come back (not counted), so the next phase starts on a quiet bus.
  const auto drain_deadline = SteadyClock::now() + kDrainBound;
  while (load.in_flight() > 0 && SteadyClock::now() < drain_deadline) {
    if (!SleepUntil(SteadyClock::now() + kPoll)) return Interrupted();
  }
  if (const int64_t left = load.in_flight(); left > 0) {
    load.AddError("UNFINISHED", static_cast<uint64_t>(left));
  }
  if (const uint64_t lost = load.lost_slots(); lost > 0) load.AddError("SLOT_LOST", lost);
  load.set_state(Load::State::kClosed);
  for (ChildProcess* c : {&proc, &nats}) {
    if (!c->Running()) load.AddError(fmt::format("{}_DIED", c->name()), 1);
  }

  r.window_s = std::chrono::duration<double>(window_end - window_start).count();
  r.ok = load.ok();
  r.errors = load.errors();
  for (const auto& [code, n] : r.errors) r.error_count += n;
  r.rps = r.window_s > 0 ? static_cast<double>(r.ok) / r.window_s : 0;
  const std::vector<uint32_t> lat = load.SortedLatencies();
  r.p50_ms = Percentile(lat, 0.50);
  r.p99_ms = Percentile(lat, 0.99);
  r.max_ms = lat.empty() ? 0 : lat.back() / 1000.0;
  double sum = 0;
  for (uint32_t us : lat) sum += us;
  r.mean_ms = lat.empty() ? 0 : sum / static_cast<double>(lat.size()) / 1000.0;
  r.proc_cpu_us = PerRequestUs(before.proc_cpu, after.proc_cpu, r.ok);
  r.nats_cpu_us = PerRequestUs(before.nats_cpu, after.nats_cpu, r.ok);
  r.bench_cpu_us = PerRequestUs(before.self_cpu, after.self_cpu, r.ok);
  if (r.window_s > 0) {
    const double ours = (after.proc_cpu - before.proc_cpu) + (after.nats_cpu - before.nats_cpu) +
                        (after.self_cpu - before.self_cpu) +
                        (after.audit_cpu - before.audit_cpu) +
                        (after.idle_child_cpu - before.idle_child_cpu);
    const double busy = after.machine.busy - before.machine.busy;
    r.machine_cores = (after.machine.total - before.machine.total) / r.window_s;
    r.machine_busy_cores = busy / r.window_s;
    r.foreign_busy_cores = std::max(0.0, busy - ours) / r.window_s;
  }
  auto per_request = [&](uint64_t b, uint64_t a) {
    return Ratio(static_cast<double>(a - b), static_cast<double>(r.ok));
  };
  r.proc_switches = per_request(before.proc_switches, after.proc_switches);
  r.nats_switches = per_request(before.nats_switches, after.nats_switches);
  r.bench_switches = per_request(before.self_switches, after.self_switches);
  r.consumer_batch = Ratio(static_cast<double>(after.consumer_signed - before.consumer_signed),
                           static_cast<double>(after.consumer_batches - before.consumer_batches));
  r.provider_batch = Ratio(static_cast<double>(after.provider_signed - before.provider_signed),
                           static_cast<double>(after.provider_batches - before.provider_batches));
  r.router_batch = Ratio(after.router_batch_sum - before.router_batch_sum,
                         after.router_batch_count - before.router_batch_count);
  r.audit_cpu_us = PerRequestUs(before.audit_cpu, after.audit_cpu, r.ok);
  r.audit_ack_ms = 1e3 * Ratio(after.router_audit_ack_sum - before.router_audit_ack_sum,
                               after.router_audit_ack_count - before.router_audit_ack_count);
  r.router_verifies_per_req = Ratio(after.router_cache_misses - before.router_cache_misses,
                                    (after.router_cache_hits - before.router_cache_hits) +
                                        (after.router_cache_misses - before.router_cache_misses));
  return r;
}

// How the bench and its children reach one nats-server: the bench's buses (ConnectBus) and
// every child's `--nats URL [--nats-ca FILE]`.
struct NatsEndpoint {
  std::string url;
  std::string ca_file;  // the CA of a TLS-only server; empty for the plain one
};

// `args` of a child started with `--nats URL`, pointed at `endpoint` instead.
std::vector<std::string> OnServer(std::vector<std::string> args, const NatsEndpoint& endpoint) {
  *(std::find(args.begin(), args.end(), "--nats") + 1) = endpoint.url;
  if (!endpoint.ca_file.empty()) args.insert(args.end(), {"--nats-ca", endpoint.ca_file});
  return args;
}

absl::StatusOr<std::unique_ptr<Bus>> ConnectBus(const NatsEndpoint& endpoint,
                                                const std::string& name, const Config& config) {
  BusOptions options;
  options.url = endpoint.url;
  options.ca_file = endpoint.ca_file;
  options.name = name;
  options.send_asap = config.send_asap;
  return Bus::Connect(options);
}

// Retries `attempt` until it returns OK, for at most kStartBound; the last error otherwise.
absl::Status Retry(std::string_view what, const std::function<absl::Status()>& attempt) {
  const auto deadline = SteadyClock::now() + kStartBound;
  absl::Status last;
  do {
    last = attempt();
    if (last.ok()) return last;
    if (!SleepUntil(SteadyClock::now() + std::chrono::milliseconds(50))) return Interrupted();
  } while (SteadyClock::now() < deadline);
  return absl::DeadlineExceededError(
      fmt::format("{}: not working after {} s: {}", what, kStartBound.count(), MessageOf(last)));
}

std::string MuxOutcomeName(MuxOutcome outcome) {
  switch (outcome) {
    case MuxOutcome::kReply:
      return "REPLY";
    case MuxOutcome::kTimeout:
      return "TIMEOUT";
    case MuxOutcome::kNoResponders:
      return "NO_RESPONDERS";
    case MuxOutcome::kClosed:
      return "CLOSED";
  }
  return "UNKNOWN";
}

absl::StatusOr<PhaseResult> RunRaw(const Config& config, const NatsEndpoint& url,
                                   const std::string& payload, const std::string& name,
                                   ChildProcess& forwarder, ChildProcess& router,
                                   ChildProcess& nats) {
  CHASQUI_ASSIGN_OR_RETURN(auto server_bus, ConnectBus(url, "chasqui-bench-raw-echo", config));
  CHASQUI_ASSIGN_OR_RETURN(auto client_bus, ConnectBus(url, "chasqui-bench-raw-load", config));
  Bus* sb = server_bus.get();
  CHASQUI_ASSIGN_OR_RETURN(auto echo, sb->Subscribe(kRawServiceSubject, [sb](const BusMessage& m) {
    if (!m.reply.empty()) (void)sb->Publish(m.reply, m.data);
  }));
  CHASQUI_RETURN_IF_ERROR(sb->Flush(absl::Seconds(2)));
  // Declared before the mux: the mux's callbacks reach it until the mux is gone.
  Load load(static_cast<size_t>(std::min(config.seconds * 500'000.0, 100e6)));
  CHASQUI_ASSIGN_OR_RETURN(auto mux, RequestMux::Create(client_bus.get(), kRawInbox));

  // The forwarder subscribes after it connects: ask until the whole path answers.
  CHASQUI_RETURN_IF_ERROR(Retry("raw path through chasqui-forwarder", [&]() -> absl::Status {
    auto answered = std::make_shared<std::promise<std::string>>();
    auto future = answered->get_future();
    CHASQUI_RETURN_IF_ERROR(mux->Request(
        kRawSubject, payload, absl::Seconds(1), [answered](MuxOutcome o, const BusMessage* reply) {
          answered->set_value(o == MuxOutcome::kReply ? std::string(reply->data)
                                                      : MuxOutcomeName(o));
        }));
    const std::string got = future.get();
    if (got != payload) return absl::UnavailableError(got.size() < 32 ? got : "bad echo");
    return absl::OkStatus();
  }));

  RequestMux* m = mux.get();
  const absl::Duration timeout = absl::Milliseconds(config.timeout_ms);
  const size_t size = payload.size();
  load.set_issue([&load, m, &payload, timeout, size] {
    const auto started = SteadyClock::now();
    absl::Status sent =
        m->Request(kRawSubject, payload, timeout,
                   [&load, started, size](MuxOutcome outcome, const BusMessage* reply) {
                     std::string error;
                     if (outcome != MuxOutcome::kReply) {
                       error = MuxOutcomeName(outcome);
                     } else if (reply->data.size() != size) {
                       error = "BAD_REPLY";
                     }
                     if (load.Complete(started, error)) load.IssueNext();
                   });
    if (!sent.ok() && load.Complete(started, "PUBLISH_FAILED")) load.IssueNext();
  });
  auto result = Drive(config, load, name, forwarder, router, nats, [](Snapshot&) {});
  load.set_state(Load::State::kClosed);
  mux.reset();
  echo.reset();
  return result;
}

struct Keys {
  std::optional<Identity> consumer;
  std::optional<Identity> provider;
  std::vector<PublicIdentity> trusted;
  // Unset: both sides on a fixed trust of `trusted` (TrustStore). Set: how one side (by entity)
  // starts its own trust source on its own connection, as a gateway does (CertificateTrust).
  std::function<absl::StatusOr<std::shared_ptr<TrustSource>>(Bus*, const std::string&)> trust_for;
};

Identity CopyIdentity(const Identity& id) {
  return Identity{id.pub, *SigningKey::FromSecret(AsView(id.sign.secret().data(), 64)),
                  *KxKey::FromSecret(AsView(id.kx.secret().data(), 32))};
}

// `audit` is the chasqui-audit process the router traces into (or the chasqui-quota it draws
// leases from), whose CPU is counted; null for neither.
absl::StatusOr<PhaseResult> RunSecured(const Config& config, const NatsEndpoint& url,
                                       const std::string& payload, const Keys& keys, int ops_port,
                                       ChildProcess& router, ChildProcess& forwarder,
                                       ChildProcess& nats, const std::string& name,
                                       ChildProcess* audit, bool ramp_leases = false) {
  CHASQUI_ASSIGN_OR_RETURN(auto provider_bus, ConnectBus(url, "chasqui-bench-provider", config));
  CHASQUI_ASSIGN_OR_RETURN(auto consumer_bus, ConnectBus(url, "chasqui-bench-consumer", config));
  // After the buses, so they go first; each side has its own, as two gateways would.
  std::shared_ptr<TrustSource> provider_trust, consumer_trust;
  if (keys.trust_for) {
    CHASQUI_ASSIGN_OR_RETURN(provider_trust, keys.trust_for(provider_bus.get(), kProvider));
    CHASQUI_ASSIGN_OR_RETURN(consumer_trust, keys.trust_for(consumer_bus.get(), kConsumer));
  }
  Load load(static_cast<size_t>(std::min(config.seconds * 500'000.0, 100e6)));
  CHASQUI_ASSIGN_OR_RETURN(
      auto provider,
      provider_trust != nullptr
          ? Provider::Create(provider_bus.get(), CopyIdentity(*keys.provider), provider_trust)
          : Provider::Create(provider_bus.get(), CopyIdentity(*keys.provider),
                             TrustStore::FromIdentities(keys.trusted, kEnv)));
  CHASQUI_RETURN_IF_ERROR(provider->Serve(
      kService, [](const RequestContext&, std::string_view body) -> absl::StatusOr<std::string> {
        return std::string(body);
      }));
  CHASQUI_RETURN_IF_ERROR(provider_bus->Flush(absl::Seconds(2)));
  CHASQUI_ASSIGN_OR_RETURN(
      auto consumer,
      consumer_trust != nullptr
          ? Consumer::Create(consumer_bus.get(), CopyIdentity(*keys.consumer), consumer_trust)
          : Consumer::Create(consumer_bus.get(), CopyIdentity(*keys.consumer),
                             TrustStore::FromIdentities(keys.trusted, kEnv)));

  CallOptions options;
  options.end_user = kEndUser;
  options.purpose = "benchmark";
  CallOptions probe_options = options;
  probe_options.timeout = absl::Seconds(1);
  CHASQUI_RETURN_IF_ERROR(Retry("secured path through chasqui-router", [&]() -> absl::Status {
    CallResult r = consumer->Call(kProvider, kService, payload, probe_options);
    if (!r.status.ok()) {
      return absl::Status(r.status.code(), fmt::format("{}: {}", CodeName(ChasquiCode(r.status)),
                                                       MessageOf(r.status)));
    }
    if (r.body != payload) return absl::DataLossError("the echo differs from the request");
    return absl::OkStatus();
  }));

  if (ramp_leases) {
    // A router's first lease of a grant is small (the enforcer's min_lease): K requests at once
    // find it spent before the renewal sized to the demand comes back, and are refused
    // UNAVAILABLE (no_lease). Rounds of K calls until one passes whole, so the measured phase
    // starts with leases sized to the load, as a router serving a steady grant has them.
    CHASQUI_RETURN_IF_ERROR(Retry("quota leases sized to the load", [&]() -> absl::Status {
      std::atomic<int> left{config.inflight};
      std::atomic<int> refused{0};
      absl::Notification done;
      for (int i = 0; i < config.inflight; ++i) {
        consumer->CallAsync(kProvider, kService, payload, probe_options, [&](CallResult r) {
          if (!r.status.ok()) refused.fetch_add(1);
          if (left.fetch_sub(1) == 1) done.Notify();
        });
      }
      done.WaitForNotification();
      if (refused.load() > 0) {
        return absl::UnavailableError(fmt::format("{} of {} refused", refused.load(),
                                                  config.inflight));
      }
      return absl::OkStatus();
    }));
  }

  Consumer* c = consumer.get();
  Provider* p = provider.get();
  options.timeout = absl::Milliseconds(config.timeout_ms);
  const size_t size = payload.size();
  load.set_issue([&load, c, &payload, &options, size] {
    const auto started = SteadyClock::now();
    c->CallAsync(kProvider, kService, payload, options, [&load, started, size](CallResult r) {
      std::string error;
      if (!r.status.ok()) {
        error = std::string(CodeName(ChasquiCode(r.status)));
      } else if (r.body.size() != size) {
        error = "BAD_REPLY";
      }
      if (load.Complete(started, error)) load.IssueNext();
    });
  });
  absl::Status scrape_error;
  auto result = Drive(config, load, name, router, forwarder, nats, [&](Snapshot& s) {
    if (audit != nullptr) s.audit_cpu = CpuOrZero(audit->pid());
    s.consumer_batches = c->batches();
    s.consumer_signed = c->signed_headers();
    s.provider_batches = p->batches();
    s.provider_signed = p->signed_headers();
    auto scrape = RouterScrape::Get(ops_port);
    if (!scrape.ok()) {
      scrape_error = scrape.status();
      return;
    }
    s.router_batch_sum = scrape->Sum("chasqui_router_request_batch_size_sum");
    s.router_batch_count = scrape->Sum("chasqui_router_request_batch_size_count");
    s.router_cache_hits = scrape->Sum("chasqui_router_root_cache_total", "result=\"hit\"");
    s.router_cache_misses = scrape->Sum("chasqui_router_root_cache_total", "result=\"miss\"");
    s.router_audit_ack_sum = scrape->Sum("chasqui_router_audit_ack_seconds_sum");
    s.router_audit_ack_count = scrape->Sum("chasqui_router_audit_ack_seconds_count");
  });
  load.set_state(Load::State::kClosed);
  consumer.reset();  // answers what is left with kClosed, which no longer counts
  provider.reset();
  if (!scrape_error.ok()) {
    std::cerr << "chasqui-bench: warning: " << MessageOf(scrape_error) << "\n";
  }
  return result;
}

// {"nats":["nats://127.0.0.1:PORT"],...}; empty while the file is missing or half written.
std::string NatsUrlFromPortsFile(const std::string& text) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return {};
  const auto nats = j.find("nats");
  if (nats == j.end() || !nats->is_array() || nats->empty() || !(*nats)[0].is_string()) return {};
  return (*nats)[0].get<std::string>();
}

// The port in the router's "ops listening on http://127.0.0.1:PORT" line, or 0.
int OpsPortFromLog(const std::string& log) {
  constexpr std::string_view kMarker = "ops listening on http://";
  const size_t at = log.find(kMarker);
  if (at == std::string::npos) return 0;
  const size_t end = log.find_first_of(" \n", at + kMarker.size());
  const std::string host_port = log.substr(at + kMarker.size(), end - at - kMarker.size());
  const size_t colon = host_port.rfind(':');
  if (colon == std::string::npos) return 0;
  try {
    return std::stoi(host_port.substr(colon + 1));
  } catch (const std::exception&) {
    return 0;
  }
}

absl::Status WaitForChild(ChildProcess& child, std::string_view what,
                          const std::function<bool()>& ready) {
  const auto deadline = SteadyClock::now() + kStartBound;
  while (!ready()) {
    if (!child.Running()) {
      return absl::UnavailableError(fmt::format("{} exited ({}) before {}; its log:\n{}",
                                                child.name(), child.ExitDescription(), what,
                                                child.LogTail()));
    }
    if (SteadyClock::now() >= deadline) {
      return absl::DeadlineExceededError(fmt::format("{}: no {} after {} s; its log:\n{}",
                                                     child.name(), what, kStartBound.count(),
                                                     child.LogTail()));
    }
    if (!SleepUntil(SteadyClock::now() + kPoll)) return Interrupted();
  }
  return absl::OkStatus();
}

// Waits for the ops port of a child serving /readyz (a router, chasqui-crypto, chasqui-catalog),
// from its log, and a 200 on its /readyz.
absl::Status WaitForRouter(ChildProcess& router, int* ops_port) {
  CHASQUI_RETURN_IF_ERROR(WaitForChild(router, "ops port in its log", [&] {
    *ops_port = OpsPortFromLog(ReadFileOrEmpty(router.log_path()));
    return *ops_port > 0;
  }));
  return WaitForChild(router, "200 on /readyz", [&] {
    httplib::Client client("127.0.0.1", *ops_port);
    client.set_connection_timeout(1, 0);
    auto res = client.Get("/readyz");
    return res && res->status == 200;
  });
}

std::string ErrorList(const std::map<std::string, uint64_t>& errors) {
  std::string out;
  for (const auto& [code, n] : errors)
    out += fmt::format("{}{} {}", out.empty() ? "" : ", ", code, n);
  return out;
}

// The phases on certificates; null when skipped.
struct CertPhases {
  const PhaseResult* certs = nullptr;
  const PhaseResult* catalog = nullptr;
  double snapshot_version = 0;  // the catalog router's, before its window
};

// The phases over TLS; null when skipped.
struct TlsPhases {
  const PhaseResult* raw = nullptr;
  const PhaseResult* secured = nullptr;
  const PhaseResult* certs = nullptr;
};

std::string NoiseNote(double foreign_busy_cores) {
  return foreign_busy_cores > 0.15 ? "  (other load on this machine: figures are noisy)" : "";
}

// `quota` and `audited` are null when their phase was skipped.
void PrintTable(const Config& config, const PhaseResult& raw, const PhaseResult& secured,
                const PhaseResult* quota, const PhaseResult* audited, const CertPhases& cp,
                const TlsPhases& tls) {
  std::vector<const PhaseResult*> phases = {&raw, &secured};
  for (const PhaseResult* r : {tls.raw, tls.secured, cp.certs, cp.catalog, tls.certs}) {
    if (r != nullptr) phases.push_back(r);
  }
  if (quota != nullptr) phases.push_back(quota);
  if (audited != nullptr) phases.push_back(audited);
  std::cout << fmt::format(
      "chasqui-bench: payload {} B, {} in flight, {:g} s per phase (after {:g} s warm-up), "
      "send_asap={}\n",
      config.payload, config.inflight, config.seconds, config.warmup_seconds,
      config.send_asap ? "on" : "off");
  std::cout << fmt::format("{:<11} {:>8} {:>7} {:>7} {:>7}  {}\n", "phase", "req/s", "p50 ms",
                           "p99 ms", "errors", "proc CPU us/req");
  for (const PhaseResult* r : phases) {
    std::cout << fmt::format("{:<11} {:>8.0f} {:>7.2f} {:>7.2f} {:>7}  {} {:.1f}\n", r->name,
                             r->rps, r->p50_ms, r->p99_ms, r->error_count, r->proc_name,
                             r->proc_cpu_us);
  }
  std::cout << fmt::format("ratio secured/raw: {:.2f}   router CPU / forwarder CPU: {:.2f}\n",
                           Ratio(secured.rps, raw.rps),
                           Ratio(secured.proc_cpu_us, raw.proc_cpu_us));
  if (tls.raw != nullptr && tls.secured != nullptr) {
    const PhaseResult& rt = *tls.raw;
    const PhaseResult& st = *tls.secured;
    std::cout << "over TLS (raw-tls, secured-tls" << (tls.certs != nullptr ? ", certs-tls" : "")
              << "): a second nats-server, TLS-only (certificate from a local CA), otherwise as "
                 "the first; every connection of the phase over TLS\n";
    std::cout << fmt::format(
        "ratio secured-tls/raw-tls: {:.2f}   raw-tls/raw: {:.3f} ({:+.1f}%, what TLS costs NATS)"
        "   secured-tls/secured: {:.3f} ({:+.1f}%, what TLS costs the platform)   router CPU / "
        "forwarder CPU over TLS: {:.2f}\n",
        Ratio(st.rps, rt.rps), Ratio(rt.rps, raw.rps), 100 * (Ratio(rt.rps, raw.rps) - 1),
        Ratio(st.rps, secured.rps), 100 * (Ratio(st.rps, secured.rps) - 1),
        Ratio(st.proc_cpu_us, rt.proc_cpu_us));
    std::cout << fmt::format(
        "CPU us/req plain / TLS: forwarder {:.1f} / {:.1f}, router {:.1f} / {:.1f}; nats-server "
        "raw {:.1f} / {:.1f}, secured {:.1f} / {:.1f}; bench process raw {:.1f} / {:.1f}, "
        "secured {:.1f} / {:.1f}\n",
        raw.proc_cpu_us, rt.proc_cpu_us, secured.proc_cpu_us, st.proc_cpu_us, raw.nats_cpu_us,
        rt.nats_cpu_us, secured.nats_cpu_us, st.nats_cpu_us, raw.bench_cpu_us, rt.bench_cpu_us,
        secured.bench_cpu_us, st.bench_cpu_us);
    // On a saturated machine throughput follows CPU per request; these sums are also less
    // sensitive than req/s to load from outside the run.
    auto total = [](const PhaseResult& r) {
      return r.proc_cpu_us + r.nats_cpu_us + r.bench_cpu_us;
    };
    std::cout << fmt::format(
        "forwarder or router + nats-server + bench process, us/req plain / TLS: raw {:.1f} / "
        "{:.1f} ({:+.1f}%), secured {:.1f} / {:.1f} ({:+.1f}%)\n",
        total(raw), total(rt), 100 * (Ratio(total(rt), total(raw)) - 1), total(secured),
        total(st), 100 * (Ratio(total(st), total(secured)) - 1));
    if (tls.certs != nullptr) {
      const PhaseResult& ct = *tls.certs;
      std::cout << fmt::format(
          "ratio certs-tls/secured-tls: {:.3f}   certs-tls/raw-tls: {:.2f}{}   router CPU "
          "certs-tls {:.1f} us/req\n",
          Ratio(ct.rps, st.rps), Ratio(ct.rps, rt.rps),
          cp.certs != nullptr
              ? fmt::format("   certs-tls/certs: {:.3f}", Ratio(ct.rps, cp.certs->rps))
              : "",
          ct.proc_cpu_us);
    }
  }
  if (cp.certs != nullptr || cp.catalog != nullptr) {
    std::cout << "on certificates (certs, catalog): the router (--roots/--cert) and both SDK "
                 "sides (each its own CertificateTrust, as a gateway), all enrolled through a "
                 "real chasqui-crypto; secured, quota and audited trust a fixed file\n";
  }
  if (cp.certs != nullptr) {
    const PhaseResult& c = *cp.certs;
    std::cout << fmt::format(
        "ratio certs/secured: {:.3f} ({:+.1f}% throughput)   certs/raw: {:.2f}   router CPU "
        "certs/secured: {:.1f} / {:.1f} us/req; chasqui-crypto {:.1f} us/req; consumer+provider "
        "{:.1f} / {:.1f} us/req\n",
        Ratio(c.rps, secured.rps), 100 * (Ratio(c.rps, secured.rps) - 1), Ratio(c.rps, raw.rps),
        c.proc_cpu_us, secured.proc_cpu_us, c.audit_cpu_us, c.bench_cpu_us, secured.bench_cpu_us);
  }
  if (cp.catalog != nullptr) {
    const PhaseResult& c = *cp.catalog;
    std::cout << fmt::format(
        "ratio catalog/secured: {:.3f} ({:+.1f}% throughput)   catalog/raw: {:.2f}{}   router "
        "CPU catalog/secured: {:.1f} / {:.1f} us/req; chasqui-catalog {:.1f} us/req; snapshot "
        "version {:.0f} before the window\n",
        Ratio(c.rps, secured.rps), 100 * (Ratio(c.rps, secured.rps) - 1), Ratio(c.rps, raw.rps),
        cp.certs != nullptr ? fmt::format("   catalog/certs: {:.3f}", Ratio(c.rps, cp.certs->rps))
                            : "",
        c.proc_cpu_us, secured.proc_cpu_us, c.audit_cpu_us, cp.snapshot_version);
  }
  if (quota != nullptr) {
    std::cout << fmt::format(
        "ratio quota/secured: {:.3f} ({:+.1f}% throughput)   quota/raw: {:.2f}   router CPU "
        "with/without quotas: {:.1f} / {:.1f} us/req; chasqui-quota {:.1f} us/req\n",
        Ratio(quota->rps, secured.rps), 100 * (Ratio(quota->rps, secured.rps) - 1),
        Ratio(quota->rps, raw.rps), quota->proc_cpu_us, secured.proc_cpu_us, quota->audit_cpu_us);
  }
  if (audited != nullptr) {
    std::cout << fmt::format(
        "ratio audited/raw: {:.2f}   audited/secured: {:.2f}   router CPU / forwarder CPU: "
        "{:.2f}\n",
        Ratio(audited->rps, raw.rps), Ratio(audited->rps, secured.rps),
        Ratio(audited->proc_cpu_us, raw.proc_cpu_us));
    std::cout << fmt::format(
        "trace: chasqui-audit CPU {:.1f} us/req; mean wait for the durable ack {:.2f} ms; "
        "nats-server {:.1f} us/req; consumer+provider {:.1f} us/req\n",
        audited->audit_cpu_us, audited->audit_ack_ms, audited->nats_cpu_us,
        audited->bench_cpu_us);
  }
  std::cout << fmt::format(
      "mean batch: consumer {:.1f}, provider {:.1f}, router-seen {:.1f} (weighted by request); "
      "router verifies per request (request side): {:.3f}\n",
      secured.consumer_batch, secured.provider_batch, secured.router_batch,
      secured.router_verifies_per_req);
  std::cout << fmt::format(
      "other CPU us/req: nats-server raw {:.1f} / secured {:.1f}; bench process (load+echo / "
      "consumer+provider) raw {:.1f} / secured {:.1f}\n",
      raw.nats_cpu_us, secured.nats_cpu_us, raw.bench_cpu_us, secured.bench_cpu_us);
  std::cout << fmt::format(
      "context switches/req: forwarder {:.2f} / router {:.2f}; nats-server raw {:.2f} / secured "
      "{:.2f}; bench process raw {:.2f} / secured {:.2f}\n",
      raw.proc_switches, secured.proc_switches, raw.nats_switches, secured.nats_switches,
      raw.bench_switches, secured.bench_switches);
  std::cout << fmt::format(
      "machine: {:.0f} cores, busy raw {:.2f} / secured {:.2f}; outside this run raw {:.2f} / "
      "secured {:.2f}{}\n",
      secured.machine_cores, raw.machine_busy_cores, secured.machine_busy_cores,
      raw.foreign_busy_cores, secured.foreign_busy_cores,
      std::max(raw.foreign_busy_cores, secured.foreign_busy_cores) > 0.15
          ? "  (other load on this machine: figures are noisy)"
          : "");
  for (const PhaseResult* r :
       {tls.raw, tls.secured, cp.certs, cp.catalog, tls.certs, quota, audited}) {
    if (r == nullptr) continue;
    std::cout << fmt::format("machine, {}: busy {:.2f}; outside this run {:.2f}{}\n", r->name,
                             r->machine_busy_cores, r->foreign_busy_cores,
                             NoiseNote(r->foreign_busy_cores));
  }
  for (const PhaseResult* r : phases) {
    if (!r->errors.empty())
      std::cout << fmt::format("errors {}: {}\n", r->name, ErrorList(r->errors));
  }
}

nlohmann::json PhaseJson(const PhaseResult& r) {
  nlohmann::json errors = nlohmann::json::object();
  for (const auto& [code, n] : r.errors) errors[code] = n;
  return {{"window_s", r.window_s},
          {"ok", r.ok},
          {"req_per_s", r.rps},
          {"p50_ms", r.p50_ms},
          {"p99_ms", r.p99_ms},
          {"mean_ms", r.mean_ms},
          {"max_ms", r.max_ms},
          {"errors", r.error_count},
          {"error_codes", errors},
          {"proc", r.proc_name},
          {"proc_cpu_us_per_req", r.proc_cpu_us},
          {"nats_cpu_us_per_req", r.nats_cpu_us},
          {"bench_cpu_us_per_req", r.bench_cpu_us},
          {"proc_switches_per_req", r.proc_switches},
          {"nats_switches_per_req", r.nats_switches},
          {"bench_switches_per_req", r.bench_switches},
          {"audit_cpu_us_per_req", r.audit_cpu_us},
          {"audit_ack_ms", r.audit_ack_ms},
          {"machine_busy_cores", r.machine_busy_cores},
          {"foreign_busy_cores", r.foreign_busy_cores}};
}

void PrintJson(const Config& config, const PhaseResult& raw, const PhaseResult& secured,
               const PhaseResult* quota, const PhaseResult* audited, const CertPhases& cp,
               const TlsPhases& tls) {
  nlohmann::json j = {{"payload", config.payload},
                      {"inflight", config.inflight},
                      {"seconds", config.seconds},
                      {"warmup_seconds", config.warmup_seconds},
                      {"send_asap", config.send_asap},
                      {"raw", PhaseJson(raw)},
                      {"secured", PhaseJson(secured)},
                      {"ratio_secured_raw", Ratio(secured.rps, raw.rps)},
                      {"ratio_router_forwarder_cpu", Ratio(secured.proc_cpu_us, raw.proc_cpu_us)},
                      {"mean_batch",
                       {{"consumer", secured.consumer_batch},
                        {"provider", secured.provider_batch},
                        {"router_seen", secured.router_batch}}},
                      {"router_verifies_per_req", secured.router_verifies_per_req}};
  if (quota != nullptr) {
    j["quota"] = PhaseJson(*quota);  // audit_cpu_us_per_req: chasqui-quota's
    j["ratio_quota_secured"] = Ratio(quota->rps, secured.rps);
    j["ratio_quota_raw"] = Ratio(quota->rps, raw.rps);
  }
  if (cp.certs != nullptr) {
    j["certs"] = PhaseJson(*cp.certs);  // audit_cpu_us_per_req: chasqui-crypto's
    j["ratio_certs_secured"] = Ratio(cp.certs->rps, secured.rps);
    j["ratio_certs_raw"] = Ratio(cp.certs->rps, raw.rps);
  }
  if (cp.catalog != nullptr) {
    j["catalog"] = PhaseJson(*cp.catalog);  // audit_cpu_us_per_req: chasqui-catalog's
    j["catalog_snapshot_version"] = cp.snapshot_version;
    j["ratio_catalog_secured"] = Ratio(cp.catalog->rps, secured.rps);
    j["ratio_catalog_raw"] = Ratio(cp.catalog->rps, raw.rps);
  }
  if (tls.raw != nullptr && tls.secured != nullptr) {
    j["raw_tls"] = PhaseJson(*tls.raw);
    j["secured_tls"] = PhaseJson(*tls.secured);
    j["ratio_secured_tls_raw_tls"] = Ratio(tls.secured->rps, tls.raw->rps);
    j["ratio_raw_tls_raw"] = Ratio(tls.raw->rps, raw.rps);
    j["ratio_secured_tls_secured"] = Ratio(tls.secured->rps, secured.rps);
    j["ratio_router_forwarder_cpu_tls"] = Ratio(tls.secured->proc_cpu_us, tls.raw->proc_cpu_us);
    // proc + nats-server + bench process, per request: TLS's CPU cost, less noisy than req/s.
    auto total = [](const PhaseResult* r) {
      return r->proc_cpu_us + r->nats_cpu_us + r->bench_cpu_us;
    };
    j["ratio_cpu_raw_tls_raw"] = Ratio(total(tls.raw), total(&raw));
    j["ratio_cpu_secured_tls_secured"] = Ratio(total(tls.secured), total(&secured));
    if (tls.certs != nullptr) {
      j["certs_tls"] = PhaseJson(*tls.certs);  // audit_cpu_us_per_req: chasqui-crypto's
      j["ratio_certs_tls_secured_tls"] = Ratio(tls.certs->rps, tls.secured->rps);
      j["ratio_certs_tls_raw_tls"] = Ratio(tls.certs->rps, tls.raw->rps);
      if (cp.certs != nullptr) j["ratio_certs_tls_certs"] = Ratio(tls.certs->rps, cp.certs->rps);
    }
  }
  if (audited != nullptr) {
    j["audited"] = PhaseJson(*audited);
    j["ratio_audited_raw"] = Ratio(audited->rps, raw.rps);
    j["ratio_audited_secured"] = Ratio(audited->rps, secured.rps);
  }
  std::cout << j.dump() << "\n";
}

std::string NextTo(const std::filesystem::path& dir, const std::string& relative,
                   const std::string& fallback_name) {
  std::error_code ec;
  const std::filesystem::path candidate = (dir / relative).lexically_normal();
  if (std::filesystem::exists(candidate, ec)) return candidate.string();
  return fallback_name;  // looked up on PATH when started
}

// The secured phase again, through a router enforcing quotas from a real chasqui-quota. The
// limits are generous (nothing is refused) but real: a rate, a burst, day and month caps and a
// provider capacity, so the router counts allowance, splits rates and renews leases as in
// production; only Admit()'s cost and the lease traffic differ from `secured`.
absl::StatusOr<PhaseResult> RunQuota(const Config& config, const std::string& url,
                                     const std::string& payload, const Keys& keys,
                                     std::vector<std::string> router_args, TempDir& dir,
                                     ChildProcess& forwarder, ChildProcess& nats) {
  const nlohmann::json policy = {
      {"grants",
       {{{"env", kEnv},
         {"consumer", kConsumer},
         {"provider", kProvider},
         {"service", kService},
         {"rate_per_second", 5'000'000},
         {"burst", 1'000'000},
         {"per_day", 1'000'000'000'000},
         {"per_month", 10'000'000'000'000}}}},
      {"providers",
       {{{"env", kEnv},
         {"provider", kProvider},
         {"service", kService},
         {"rate_per_second", 10'000'000},
         {"burst", 2'000'000}}}}};
  CHASQUI_RETURN_IF_ERROR(
      WriteFileDurably(dir.File("quota-policy.json"), policy.dump(2), 0600, /*replace=*/true));
  CHASQUI_ASSIGN_OR_RETURN(
      auto quota, ChildProcess::Start("quota",
                                      {config.quota_bin, "serve", "--data", dir.File("quota"),
                                       "--policy", dir.File("quota-policy.json"), "--nats", url,
                                       "--ops-port", "0"},
                                      dir.File("quota.log")));
  CHASQUI_RETURN_IF_ERROR(WaitForChild(*quota, "ready line in its log", [&] {
    return ReadFileOrEmpty(quota->log_path()).find("ready: ops port") != std::string::npos;
  }));
  *(std::find(router_args.begin(), router_args.end(), "--id") + 1) =
      std::string(kRouterId) + "-quota";
  router_args.push_back("--quota");
  CHASQUI_ASSIGN_OR_RETURN(auto router,
                           ChildProcess::Start("router", router_args, dir.File("router-quota.log")));
  int ops_port = 0;
  CHASQUI_RETURN_IF_ERROR(WaitForRouter(*router, &ops_port));
  auto phase = RunSecured(config, {url}, payload, keys, ops_port, *router, forwarder, nats, "quota",
                          quota.get(), /*ramp_leases=*/true);
  if (!phase.ok() && !absl::IsCancelled(phase.status())) {
    return absl::Status(phase.status().code(),
                        fmt::format("quota phase: {}\nrouter log:\n{}\nquota log:\n{}",
                                    MessageOf(phase.status()), router->LogTail(),
                                    quota->LogTail()));
  }
  router->Stop();
  quota->Stop();
  return phase;
}

// ---- On certificates (issue 3) and with the catalog (issue 4) ----
//
// The platform's trust set up the way deploy/local-backbone.sh does it, from the same
// binaries: `chasqui-crypto init` (the root ceremony, at the "interactive" KDF cost as in the
// demo), one-time tokens from `chasqui-crypto token`, `chasqui enrol` for each key, and for the
// catalog phase `chasqui-catalog init/enrol/serve` and the catalog story told with
// `chasqui catalog <verb>` by the people's own keys. Keys are made in this process, as
// `chasqui keygen` makes them (GenerateIdentity, WriteIdentity).

constexpr auto kCommandBound = std::chrono::seconds(30);
constexpr char kOperatorEntity[] = "agetic";

struct Command {
  std::string name;
  std::vector<std::string> argv;
  std::string log;
};

// Runs `commands` side by side, each to its end (all within kCommandBound), output appended to
// its log. FailedPrecondition with the output of the first that does not exit 0.
absl::Status RunToEnd(const std::vector<Command>& commands) {
  std::vector<std::unique_ptr<ChildProcess>> children;
  for (const Command& c : commands) {
    CHASQUI_ASSIGN_OR_RETURN(auto child, ChildProcess::Start(c.name, c.argv, c.log));
    children.push_back(std::move(child));
  }
  const auto deadline = SteadyClock::now() + kCommandBound;
  for (auto& child : children) {
    while (child->Running()) {
      if (SteadyClock::now() >= deadline) {
        return absl::DeadlineExceededError(fmt::format("{}: not done after {} s; its output:\n{}",
                                                       child->name(), kCommandBound.count(),
                                                       child->LogTail()));
      }
      if (!SleepUntil(SteadyClock::now() + kPoll)) return Interrupted();
    }
    if (child->ExitDescription() != "exit 0") {
      return absl::FailedPreconditionError(fmt::format(
          "{} failed ({}); its output:\n{}", child->name(), child->ExitDescription(),
          child->LogTail()));
    }
  }
  return absl::OkStatus();
}

// A key that gets its certificate from chasqui-crypto with a one-time token.
struct Enrolee {
  std::string entity;
  Role role = Role::kEntity;
  std::string subject;  // people only
  std::string key, cert;
};

// The crypto service (and, when followed, the catalog) with everything they were told.
struct Pki {
  std::string crypto_data, roots, root_passphrase;
  std::string catalog_data, catalog_passphrase, nta;
  Enrolee router, consumer, provider;
  Enrolee op, provider_mae, provider_manager, consumer_mae, consumer_manager;  // people
  std::unique_ptr<ChildProcess> crypto, catalog;  // catalog: null unless followed
  double setup_s = 0, story_s = 0;
};

// 32 random bytes, hex, into a 0600 file (a passphrase nobody types: the demo's way).
absl::Status WriteSecretFile(const std::string& path) {
  unsigned char bytes[32];
  randombytes_buf(bytes, sizeof bytes);
  char hex[2 * sizeof bytes + 1];
  sodium_bin2hex(hex, sizeof hex, bytes, sizeof bytes);
  sodium_memzero(bytes, sizeof bytes);
  absl::Status s = WriteFileDurably(path, std::string_view(hex, 2 * sizeof bytes), 0600,
                                    /*replace=*/true);
  sodium_memzero(hex, sizeof hex);
  return s;
}

// `chasqui-crypto token` for `who`, read from its output (a file removed at once). Called while
// the bench holds the crypto store (before `serve`), so each token goes straight into it.
absl::StatusOr<std::string> IssueToken(const Config& config, const Pki& pki, TempDir& dir,
                                       const std::string& entity, std::string_view role,
                                       const std::string& subject) {
  const std::string out = dir.File("pki/token.out");
  std::vector<std::string> argv = {config.crypto_bin, "token", "--data", pki.crypto_data,
                                   "--entity", entity, "--role", std::string(role), "--env", kEnv};
  if (!subject.empty()) argv.insert(argv.end(), {"--subject", subject});
  std::error_code ec;
  std::filesystem::remove(out, ec);
  absl::Status ran = RunToEnd({{"chasqui-crypto token", argv, out}});
  std::string text = ReadFileOrEmpty(out);
  std::filesystem::remove(out, ec);
  CHASQUI_RETURN_IF_ERROR(ran);
  constexpr std::string_view kMarker = "token: ";
  const size_t at = text.find(kMarker);
  if (at == std::string::npos) {
    return absl::InternalError(fmt::format("chasqui-crypto token for {}: no token in its output",
                                           entity));
  }
  const size_t end = text.find('\n', at);
  std::string token = text.substr(at + kMarker.size(), end - at - kMarker.size());
  sodium_memzero(text.data(), text.size());
  return token;
}

// `chasqui-crypto serve` on `pki`'s store (nobody else holding it), connected to `endpoint`,
// once its /readyz answers 200.
absl::StatusOr<std::unique_ptr<ChildProcess>> StartCrypto(const Config& config, const Pki& pki,
                                                          const NatsEndpoint& endpoint,
                                                          const std::string& log) {
  CHASQUI_ASSIGN_OR_RETURN(
      auto crypto,
      ChildProcess::Start(
          "crypto",
          OnServer({config.crypto_bin, "serve", "--data", pki.crypto_data, "--passphrase-file",
                    pki.root_passphrase, "--env", kEnv, "--nats", "", "--ops-port", "0"},
                   endpoint),
          log));
  int ops_port = 0;
  CHASQUI_RETURN_IF_ERROR(WaitForRouter(*crypto, &ops_port));
  return crypto;
}

// Root ceremony, keys, tokens, the crypto service, every enrolment; with `with_catalog` the
// catalog too (key, enrolment, service) and its story: both entities adhered, the provider's
// `echo` published, the consumer's access approved in `test`, its end user registered.
absl::StatusOr<std::unique_ptr<Pki>> StartPki(const Config& config, const std::string& url,
                                              TempDir& dir, bool with_catalog) {
  const auto started = SteadyClock::now();
  auto pki = std::make_unique<Pki>();
  const std::string base = dir.File("pki");
  std::error_code ec;
  std::filesystem::create_directories(base + "/keys", ec);
  if (ec) return absl::InternalError(fmt::format("cannot create {}/keys: {}", base, ec.message()));
  pki->crypto_data = base + "/crypto";
  pki->roots = pki->crypto_data + "/roots.json";
  pki->root_passphrase = base + "/root.passphrase";
  pki->catalog_data = base + "/catalog";
  pki->catalog_passphrase = base + "/catalog.passphrase";
  pki->nta = base + "/nta.txt";
  CHASQUI_RETURN_IF_ERROR(WriteSecretFile(pki->root_passphrase));
  std::vector<Command> init = {{"chasqui-crypto init",
                                {config.crypto_bin, "init", "--data", pki->crypto_data,
                                 "--passphrase-file", pki->root_passphrase, "--kdf", "interactive"},
                                dir.File("crypto-init.log")}};
  if (with_catalog) {
    CHASQUI_RETURN_IF_ERROR(WriteSecretFile(pki->catalog_passphrase));
    init.push_back({"chasqui-catalog init",
                    {config.catalog_bin, "init", "--data", pki->catalog_data, "--passphrase-file",
                     pki->catalog_passphrase, "--kdf", "interactive"},
                    dir.File("catalog-init.log")});
  }
  CHASQUI_RETURN_IF_ERROR(RunToEnd(init));

  auto make = [&](Enrolee& e, std::string entity, Role role, std::string subject) -> absl::Status {
    e.entity = std::move(entity);
    e.role = role;
    e.subject = std::move(subject);
    const std::string name = e.subject.empty() ? e.entity : e.entity + "." + e.subject;
    e.key = fmt::format("{}/keys/{}.{}.key", base, name, kEnv);
    e.cert = fmt::format("{}/keys/{}.{}.cert", base, name, kEnv);
    return WriteIdentity(e.key, GenerateIdentity(e.entity, kEnv, role));
  };
  CHASQUI_RETURN_IF_ERROR(make(pki->router, "router", Role::kRouter, ""));
  CHASQUI_RETURN_IF_ERROR(make(pki->consumer, kConsumer, Role::kEntity, ""));
  CHASQUI_RETURN_IF_ERROR(make(pki->provider, kProvider, Role::kEntity, ""));
  std::vector<Enrolee*> enrolees = {&pki->router, &pki->consumer, &pki->provider};
  if (with_catalog) {
    CHASQUI_RETURN_IF_ERROR(make(pki->op, kOperatorEntity, Role::kOperator, "operator"));
    CHASQUI_RETURN_IF_ERROR(make(pki->provider_mae, kProvider, Role::kMae, "mae"));
    CHASQUI_RETURN_IF_ERROR(make(pki->provider_manager, kProvider, Role::kManager, "manager"));
    CHASQUI_RETURN_IF_ERROR(make(pki->consumer_mae, kConsumer, Role::kMae, "mae"));
    CHASQUI_RETURN_IF_ERROR(make(pki->consumer_manager, kConsumer, Role::kManager, "manager"));
    enrolees.insert(enrolees.end(), {&pki->op, &pki->provider_mae, &pki->provider_manager,
                                     &pki->consumer_mae, &pki->consumer_manager});
  }

  // Tokens into 0600 files, handed to `chasqui enrol` by file (never on a command line); the
  // catalog's goes on its command line, as chasqui-catalog enrol takes it.
  std::vector<Command> enrol;
  std::vector<std::string> token_files;
  for (Enrolee* e : enrolees) {
    CHASQUI_ASSIGN_OR_RETURN(std::string token,
                             IssueToken(config, *pki, dir, e->entity, RoleName(e->role),
                                        e->subject));
    const std::string file = e->key + ".token";
    absl::Status written = WriteFileDurably(file, token, 0600, /*replace=*/true);
    sodium_memzero(token.data(), token.size());
    CHASQUI_RETURN_IF_ERROR(written);
    token_files.push_back(file);
    std::vector<std::string> argv = {config.cli_bin, "enrol", "--nats", url, "--key", e->key,
                                     "--token-file", file, "--role",
                                     std::string(RoleName(e->role)), "--roots", pki->roots,
                                     "--out", e->cert};
    if (!e->subject.empty()) argv.insert(argv.end(), {"--subject", e->subject});
    enrol.push_back({"chasqui enrol " + std::filesystem::path(e->key).filename().string(),
                     std::move(argv), dir.File("enrol.log")});
  }
  if (with_catalog) {
    CHASQUI_ASSIGN_OR_RETURN(std::string token,
                             IssueToken(config, *pki, dir, "catalog", "catalog", ""));
    enrol.push_back({"chasqui-catalog enrol",
                     {config.catalog_bin, "enrol", "--data", pki->catalog_data,
                      "--passphrase-file", pki->catalog_passphrase, "--env", kEnv, "--token",
                      token, "--nats", url},
                     dir.File("catalog-enrol.log")});
  }

  CHASQUI_ASSIGN_OR_RETURN(pki->crypto, StartCrypto(config, *pki, {url}, dir.File("crypto.log")));
  absl::Status enrolled = RunToEnd(enrol);
  for (const std::string& f : token_files) std::filesystem::remove(f, ec);
  CHASQUI_RETURN_IF_ERROR(enrolled);
  pki->setup_s = std::chrono::duration<double>(SteadyClock::now() - started).count();
  std::cerr << fmt::format(
      "chasqui-bench: certificates: root ceremony, {} keys enrolled with one-time tokens through "
      "chasqui-crypto ({:.1f} s)\n",
      enrolees.size() + (with_catalog ? 1 : 0), pki->setup_s);
  if (!with_catalog) return pki;

  const auto story_start = SteadyClock::now();
  CHASQUI_RETURN_IF_ERROR(WriteFileDurably(
      pki->nta, "Norma Tecnica de Adhesion (benchmark): each entity answers what it publishes.\n",
      0644, /*replace=*/true));
  CHASQUI_ASSIGN_OR_RETURN(
      pki->catalog,
      ChildProcess::Start("catalog",
                          {config.catalog_bin, "serve", "--data", pki->catalog_data,
                           "--passphrase-file", pki->catalog_passphrase, "--anchors", pki->roots,
                           "--nta-file", pki->nta, "--env", kEnv, "--nats", url, "--ops-port",
                           "0"},
                          dir.File("catalog.log")));
  int catalog_ops = 0;
  CHASQUI_RETURN_IF_ERROR(WaitForRouter(*pki->catalog, &catalog_ops));
  // Each step needs the one before it: one at a time.
  auto told = [&](const Enrolee& who, std::vector<std::string> verb) -> absl::Status {
    std::vector<std::string> argv = {config.cli_bin, "catalog"};
    argv.insert(argv.end(), verb.begin(), verb.end());
    argv.insert(argv.end(), {"--key", who.key, "--cert", who.cert, "--nats", url});
    return RunToEnd({{"chasqui catalog " + verb.front(), argv, dir.File("story.log")}});
  };
  CHASQUI_RETURN_IF_ERROR(
      told(pki->op, {"register_entity", "--id", kProvider, "--name", "bench provider"}));
  CHASQUI_RETURN_IF_ERROR(
      told(pki->op, {"register_entity", "--id", kConsumer, "--name", "bench consumer"}));
  CHASQUI_RETURN_IF_ERROR(
      told(pki->provider_mae, {"adhere", "--entity", kProvider, "--nta", pki->nta}));
  CHASQUI_RETURN_IF_ERROR(
      told(pki->consumer_mae, {"adhere", "--entity", kConsumer, "--nta", pki->nta}));
  // A private service (access needs the provider's approval); the default quota is not
  // enforced here (no --quota on this router).
  CHASQUI_RETURN_IF_ERROR(told(
      pki->provider_manager,
      {"submit", "--provider", kProvider, "--name", kService, "--version", "1.0.0",
       "--description", "echoes the request body", "--classification", "private",
       "--legal-basis", "benchmark", "--rate", "1000000", "--burst", "1000000"}));
  CHASQUI_RETURN_IF_ERROR(
      told(pki->op, {"publish", "--provider", kProvider, "--service", kService}));
  CHASQUI_RETURN_IF_ERROR(told(
      pki->consumer_manager,
      {"request_access", "--consumer", kConsumer, "--provider", kProvider, "--service", kService,
       "--justification", "benchmark", "--legal-basis", "benchmark"}));
  CHASQUI_RETURN_IF_ERROR(
      told(pki->provider_manager,
           {"approve", "--consumer", kConsumer, "--provider", kProvider, "--service", kService}));
  CHASQUI_RETURN_IF_ERROR(told(pki->consumer_manager, {"register_end_user", "--consumer",
                                                       kConsumer, "--user", kEndUser}));
  pki->story_s = std::chrono::duration<double>(SteadyClock::now() - story_start).count();
  std::cerr << fmt::format(
      "chasqui-bench: catalog: {} and {} adhered, {}/{} published, access approved in {}, end "
      "user {} registered ({:.1f} s)\n",
      kProvider, kConsumer, kProvider, kService, kEnv, kEndUser, pki->story_s);
  return pki;
}

// The consumer and provider on certificates, as two gateways are: each its own key and
// certificate, and its own CertificateTrust (the crypto service's directory and revocation
// lists, verified against the pinned roots) on its own connection.
absl::StatusOr<Keys> CertifiedKeys(const Pki& pki) {
  const int64_t now = SystemClock().NowUnixMillis();
  CHASQUI_ASSIGN_OR_RETURN(auto consumer, LoadKeyAndTrust(pki.consumer.key, pki.roots,
                                                          pki.consumer.cert, "", kEnv, now));
  CHASQUI_ASSIGN_OR_RETURN(auto provider, LoadKeyAndTrust(pki.provider.key, pki.roots,
                                                          pki.provider.cert, "", kEnv, now));
  Keys keys;
  keys.consumer.emplace(std::move(consumer.identity));
  keys.provider.emplace(std::move(provider.identity));
  const std::map<std::string, std::string> own = {{kConsumer, consumer.own_certificate},
                                                  {kProvider, provider.own_certificate}};
  keys.trust_for = [anchors = consumer.anchors, own](
                       Bus* bus, const std::string& entity)
      -> absl::StatusOr<std::shared_ptr<TrustSource>> {
    CertificateTrustOptions options;
    options.entity = entity;
    options.env = kEnv;
    options.own_certificate = own.at(entity);
    CHASQUI_ASSIGN_OR_RETURN(auto trust,
                             CertificateTrust::Start(bus, anchors, std::move(options), nullptr));
    return std::shared_ptr<TrustSource>(std::move(trust));
  };
  return keys;
}

// `args` (a secured router's) with the router on certificates: --roots and --cert for its own
// enrolled key instead of --trust; `catalog` adds --catalog.
std::vector<std::string> CertificateRouterArgs(std::vector<std::string> args, const Pki& pki,
                                               const std::string& id, bool catalog) {
  auto value_of = [&](std::string_view flag) {
    return std::find(args.begin(), args.end(), flag) + 1;
  };
  if (const auto trust = std::find(args.begin(), args.end(), "--trust");
      trust != args.end() && trust + 1 != args.end()) {
    args.erase(trust, trust + 2);
  }
  *value_of("--key") = pki.router.key;
  *value_of("--id") = id;
  args.insert(args.end(), {"--roots", pki.roots, "--cert", pki.router.cert});
  if (catalog) args.push_back("--catalog");
  return args;
}

// The secured phase `name` through a router on certificates (`catalog`: following
// chasqui-catalog too, with its first snapshot in place before anything is measured), on the
// nats-server of `url` (`router_args` already point at it). `snapshot_version` gets the router's
// catalog snapshot version.
absl::StatusOr<PhaseResult> RunOnCertificates(const Config& config, const NatsEndpoint& url,
                                              const std::string& payload, const Keys& keys,
                                              const std::vector<std::string>& router_args,
                                              const Pki& pki, TempDir& dir, const std::string& name,
                                              bool catalog, ChildProcess& forwarder,
                                              ChildProcess& nats, double* snapshot_version) {
  CHASQUI_ASSIGN_OR_RETURN(
      auto router,
      ChildProcess::Start(url.ca_file.empty() ? "router" : "router-tls",
                          CertificateRouterArgs(router_args, pki,
                                                std::string(kRouterId) + "-" + name, catalog),
                          dir.File("router-" + name + ".log")));
  int ops_port = 0;
  CHASQUI_RETURN_IF_ERROR(WaitForRouter(*router, &ops_port));
  if (catalog) {
    // The router loads the snapshot before it serves; its gauges follow within a tick.
    CHASQUI_RETURN_IF_ERROR(WaitForChild(*router, "catalog snapshot in its metrics", [&] {
      auto scrape = RouterScrape::Get(ops_port);
      if (!scrape.ok()) return false;
      *snapshot_version = scrape->Sum("chasqui_router_catalog_snapshot_version");
      return *snapshot_version > 0 &&
             scrape->Sum("chasqui_router_catalog_snapshot_age_seconds") >= 0;
    }));
  }
  ChildProcess* service = catalog ? pki.catalog.get() : pki.crypto.get();
  auto phase = RunSecured(config, url, payload, keys, ops_port, *router, forwarder, nats, name,
                          service);
  if (!phase.ok() && !absl::IsCancelled(phase.status())) {
    return absl::Status(phase.status().code(),
                        fmt::format("{} phase: {}\nrouter log:\n{}\n{} log:\n{}", name,
                                    MessageOf(phase.status()), router->LogTail(), service->name(),
                                    service->LogTail()));
  }
  router->Stop();
  return phase;
}

// ---- Over TLS ----

// The last non-empty line of `text`, for a one-line error.
std::string LastLine(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
  const size_t nl = text.rfind('\n');
  return std::string(nl == std::string_view::npos ? text : text.substr(nl + 1));
}

// A TLS failure ends the run in one line, before anything is measured.
absl::Status TlsError(const absl::Status& status, std::string_view what, std::string_view detail) {
  if (absl::IsCancelled(status)) return status;
  return absl::Status(status.code(),
                      fmt::format("TLS: {}: {} (--skip-tls leaves the TLS phases out)", what,
                                  detail.empty() ? std::string_view("no output") : detail));
}

struct TlsServer {
  std::unique_ptr<ChildProcess> nats;
  NatsEndpoint endpoint;
};

// A second nats-server with the first one's settings, plus the `tls {}` block `chasqui
// nats-config --tls-cert --tls-key` writes (TLS-only: it refuses plain clients), on a
// certificate from a local CA made by deploy/tls-ca.sh in the temp dir (private keys mode 0600,
// never printed). Checked with a connection of the bench's own, over TLS with the CA, before it
// is returned.
absl::StatusOr<TlsServer> StartTlsServer(const Config& config, TempDir& dir) {
  const std::string tls_dir = dir.File("tls");
  absl::Status made =
      RunToEnd({{"tls-ca.sh", {"bash", config.tls_ca_script, tls_dir}, dir.File("tls-ca.log")}});
  if (!made.ok()) {
    std::string why = LastLine(ReadFileOrEmpty(dir.File("tls-ca.log")));
    if (why.empty()) why = LastLine(MessageOf(made));
    return TlsError(made, fmt::format("{} did not make the CA", config.tls_ca_script), why);
  }
  for (const char* key : {"ca.key", "server.key"}) {
    std::error_code ec;
    const auto perms = std::filesystem::status(tls_dir + "/" + key, ec).permissions();
    if (ec || (perms & std::filesystem::perms::all) !=
                  (std::filesystem::perms::owner_read | std::filesystem::perms::owner_write)) {
      return TlsError(absl::FailedPreconditionError(""), fmt::format("{}/{}", tls_dir, key),
                      ec ? ec.message() : "not mode 0600");
    }
  }
  const std::string conf = dir.File("nats-tls.conf");
  CHASQUI_RETURN_IF_ERROR(WriteFileDurably(
      conf,
      fmt::format("tls {{\n  cert_file: \"{0}/server.crt\"\n  key_file: \"{0}/server.key\"\n"
                  "  timeout: 2\n}}\n",
                  tls_dir),
      0600, /*replace=*/true));

  TlsServer server;
  CHASQUI_ASSIGN_OR_RETURN(
      server.nats,
      ChildProcess::Start("nats-server-tls",
                          {config.nats_server_bin, "-c", conf, "-a", "127.0.0.1", "-p", "-1",
                           "--ports_file_dir", tls_dir, "-l", dir.File("nats-tls.log")},
                          dir.File("nats-tls.out")));
  const std::string ports_file =
      fmt::format("{}/nats-server_{}.ports", tls_dir, server.nats->pid());
  absl::Status started = WaitForChild(*server.nats, "ports file", [&] {
    server.endpoint.url = NatsUrlFromPortsFile(ReadFileOrEmpty(ports_file));
    return !server.endpoint.url.empty();
  });
  if (!started.ok()) {
    std::string why = LastLine(ReadFileOrEmpty(dir.File("nats-tls.out")));
    if (why.empty()) why = LastLine(ReadFileOrEmpty(dir.File("nats-tls.log")));
    return TlsError(
        started,
        fmt::format("nats-server (TLS-only, {}) did not start ({})", conf,
                    server.nats->Running() ? "no ports file" : server.nats->ExitDescription()),
        why);
  }
  server.endpoint.ca_file = tls_dir + "/ca.crt";
  auto probe = ConnectBus(server.endpoint, "chasqui-bench-tls-probe", config);
  if (!probe.ok()) {
    return TlsError(probe.status(), fmt::format("cannot connect to {}", server.endpoint.url),
                    MessageOf(probe.status()));
  }
  return server;
}

// Returns the process exit code: 0 clean, 1 errors in a phase, 2 the run could not happen.
absl::StatusOr<int> Run(Config config) {
  std::error_code ec;
  const std::filesystem::path exe_dir =
      std::filesystem::read_symlink("/proc/self/exe", ec).parent_path();
  if (config.forwarder_bin.empty()) {
    config.forwarder_bin = NextTo(exe_dir, "chasqui-forwarder", "chasqui-forwarder");
  }
  if (config.router_bin.empty()) {
    config.router_bin = NextTo(exe_dir, "../services/router/chasqui-router", "chasqui-router");
  }
  if (config.audit_bin.empty()) {
    config.audit_bin = NextTo(exe_dir, "../services/audit/chasqui-audit", "chasqui-audit");
  }
  if (config.quota_bin.empty()) {
    config.quota_bin = NextTo(exe_dir, "../services/quota/chasqui-quota", "chasqui-quota");
  }
  if (config.crypto_bin.empty()) {
    config.crypto_bin = NextTo(exe_dir, "../services/crypto/chasqui-crypto", "chasqui-crypto");
  }
  if (config.catalog_bin.empty()) {
    config.catalog_bin =
        NextTo(exe_dir, "../services/catalog/chasqui-catalog", "chasqui-catalog");
  }
  if (config.cli_bin.empty()) {
    config.cli_bin = NextTo(exe_dir, "../services/gateway/chasqui", "chasqui");
  }
  if (config.tls_ca_script.empty()) config.tls_ca_script = CHASQUI_SOURCE_DIR "/deploy/tls-ca.sh";

  CHASQUI_ASSIGN_OR_RETURN(auto dir, TempDir::Create("chasqui-bench"));
  if (config.keep_dir) dir->Keep();

  // nats-server on a port of its choosing.
  CHASQUI_ASSIGN_OR_RETURN(
      auto nats, ChildProcess::Start("nats-server",
                                     {config.nats_server_bin, "-a", "127.0.0.1", "-p", "-1",
                                      "--ports_file_dir", dir->path(), "-l", dir->File("nats.log")},
                                     dir->File("nats.out")));
  std::string url;
  const std::string ports_file = dir->File(fmt::format("nats-server_{}.ports", nats->pid()));
  CHASQUI_RETURN_IF_ERROR(WaitForChild(*nats, "ports file", [&] {
    url = NatsUrlFromPortsFile(ReadFileOrEmpty(ports_file));
    return !url.empty();
  }));
  // The TLS-only server from the start, so a TLS problem ends the run before anything is
  // measured; idle until its phases.
  std::optional<TlsServer> tls;
  if (!config.skip_tls) {
    CHASQUI_ASSIGN_OR_RETURN(tls, StartTlsServer(config, *dir));
  }

  // Keys: the bench's consumer and provider stay in memory; the router's goes to a file.
  Keys keys;
  keys.consumer.emplace(GenerateIdentity(kConsumer, kEnv, Role::kEntity));
  keys.provider.emplace(GenerateIdentity(kProvider, kEnv, Role::kEntity));
  const Identity router_id = GenerateIdentity("router", kEnv, Role::kRouter);
  keys.trusted = {keys.consumer->pub, keys.provider->pub, router_id.pub};
  CHASQUI_RETURN_IF_ERROR(WriteIdentity(dir->File("router.key"), router_id));
  CHASQUI_RETURN_IF_ERROR(
      WriteIdentity(dir->File("audit.key"), GenerateIdentity("audit", kEnv, Role::kRouter)));
  {
    std::ofstream trust(dir->File("trust.json"));
    trust << TrustFileJson(keys.trusted);
    trust.close();
    if (!trust) return absl::InternalError("cannot write " + dir->File("trust.json"));
  }

  std::vector<std::string> router_args = {config.router_bin,
                                          "--env",
                                          kEnv,
                                          "--nats",
                                          url,
                                          "--key",
                                          dir->File("router.key"),
                                          "--trust",
                                          dir->File("trust.json"),
                                          "--id",
                                          kRouterId,
                                          "--ops-port",
                                          "0",
                                          "--startup-hold-ms",
                                          "0",
                                          "--provider-timeout-ms",
                                          std::to_string(config.timeout_ms)};
  // The audited router: the same, tracing (the default) under its own id.
  std::vector<std::string> audited_router_args = router_args;
  *(std::find(audited_router_args.begin(), audited_router_args.end(), "--id") + 1) =
      std::string(kRouterId) + "-audited";
  router_args.push_back("--audit=false");
  std::vector<std::string> forwarder_args = {config.forwarder_bin, "--nats", url, "--timeout-ms",
                                             std::to_string(config.timeout_ms)};
  for (auto* args : {&router_args, &audited_router_args}) {
    args->insert(args->end(), config.router_extra_args.begin(), config.router_extra_args.end());
    if (config.send_asap) args->push_back("--send-asap");
  }
  if (config.send_asap) forwarder_args.push_back("--send-asap");
  CHASQUI_ASSIGN_OR_RETURN(auto router,
                           ChildProcess::Start("router", router_args, dir->File("router.log")));
  CHASQUI_ASSIGN_OR_RETURN(
      auto forwarder, ChildProcess::Start("forwarder", forwarder_args, dir->File("forwarder.log")));
  int ops_port = 0;
  CHASQUI_RETURN_IF_ERROR(WaitForRouter(*router, &ops_port));
  CHASQUI_RETURN_IF_ERROR(WaitForChild(*forwarder, "ready line in its log", [&] {
    return ReadFileOrEmpty(forwarder->log_path()).find("forwarder ready") != std::string::npos;
  }));

  const std::string payload(config.payload, 'x');
  auto raw = RunRaw(config, {url}, payload, "raw", *forwarder, *router, *nats);
  if (!raw.ok() && absl::IsCancelled(raw.status())) return raw.status();
  if (!raw.ok()) {
    return absl::Status(raw.status().code(),
                        fmt::format("raw phase: {}\nforwarder log:\n{}", MessageOf(raw.status()),
                                    forwarder->LogTail()));
  }
  auto secured = RunSecured(config, {url}, payload, keys, ops_port, *router, *forwarder, *nats,
                            "secured", nullptr);
  if (!secured.ok() && absl::IsCancelled(secured.status())) return secured.status();
  if (!secured.ok()) {
    return absl::Status(secured.status().code(),
                        fmt::format("secured phase: {}\nrouter log:\n{}",
                                    MessageOf(secured.status()), router->LogTail()));
  }
  // Both routers would share the queue group: the untraced one leaves before the next comes.
  router->Stop();

  // raw and secured again on the TLS-only server, with the same flags and their own forwarder
  // and router. The forwarder stays, idle, for certs-tls (as the plain one does for certs).
  std::optional<PhaseResult> raw_tls, secured_tls, certs_tls;
  std::unique_ptr<ChildProcess> tls_forwarder;
  if (tls) {
    std::vector<std::string> tls_router_args = OnServer(router_args, tls->endpoint);
    *(std::find(tls_router_args.begin(), tls_router_args.end(), "--id") + 1) =
        std::string(kRouterId) + "-tls";
    CHASQUI_ASSIGN_OR_RETURN(auto tls_router, ChildProcess::Start("router-tls", tls_router_args,
                                                                  dir->File("router-tls.log")));
    CHASQUI_ASSIGN_OR_RETURN(
        tls_forwarder, ChildProcess::Start("forwarder-tls", OnServer(forwarder_args, tls->endpoint),
                                           dir->File("forwarder-tls.log")));
    int tls_ops_port = 0;
    CHASQUI_RETURN_IF_ERROR(WaitForRouter(*tls_router, &tls_ops_port));
    CHASQUI_RETURN_IF_ERROR(WaitForChild(*tls_forwarder, "ready line in its log", [&] {
      return ReadFileOrEmpty(tls_forwarder->log_path()).find("forwarder ready") !=
             std::string::npos;
    }));
    auto phase =
        RunRaw(config, tls->endpoint, payload, "raw-tls", *tls_forwarder, *tls_router, *tls->nats);
    if (!phase.ok() && absl::IsCancelled(phase.status())) return phase.status();
    if (!phase.ok()) {
      return absl::Status(phase.status().code(),
                          fmt::format("raw-tls phase: {}\nforwarder-tls log:\n{}",
                                      MessageOf(phase.status()), tls_forwarder->LogTail()));
    }
    raw_tls = *std::move(phase);
    phase = RunSecured(config, tls->endpoint, payload, keys, tls_ops_port, *tls_router,
                       *tls_forwarder, *tls->nats, "secured-tls", nullptr);
    if (!phase.ok() && absl::IsCancelled(phase.status())) return phase.status();
    if (!phase.ok()) {
      return absl::Status(phase.status().code(),
                          fmt::format("secured-tls phase: {}\nrouter-tls log:\n{}",
                                      MessageOf(phase.status()), tls_router->LogTail()));
    }
    secured_tls = *std::move(phase);
    tls_router->Stop();
  }

  // On certificates: the router, and both SDK sides as gateways, with a real chasqui-crypto;
  // then the same router following a real chasqui-catalog. The services stop after them.
  // Then certs again on the TLS server, with the crypto service serving the same store there.
  std::optional<PhaseResult> certs, catalog;
  double snapshot_version = 0;
  if (!config.skip_certs || !config.skip_catalog) {
    CHASQUI_ASSIGN_OR_RETURN(auto pki, StartPki(config, url, *dir, !config.skip_catalog));
    CHASQUI_ASSIGN_OR_RETURN(Keys certified, CertifiedKeys(*pki));
    for (const bool follow : {false, true}) {
      if (follow ? config.skip_catalog : config.skip_certs) continue;
      auto phase = RunOnCertificates(config, {url}, payload, certified, router_args, *pki, *dir,
                                     follow ? "catalog" : "certs", follow, *forwarder, *nats,
                                     &snapshot_version);
      if (!phase.ok()) return phase.status();
      (follow ? catalog : certs) = *std::move(phase);
    }
    if (pki->catalog) pki->catalog->Stop();
    pki->crypto->Stop();
    if (tls && !config.skip_certs) {
      CHASQUI_ASSIGN_OR_RETURN(
          pki->crypto, StartCrypto(config, *pki, tls->endpoint, dir->File("crypto-tls.log")));
      auto phase = RunOnCertificates(
          config, tls->endpoint, payload, certified, OnServer(router_args, tls->endpoint), *pki,
          *dir, "certs-tls", /*catalog=*/false, *tls_forwarder, *tls->nats, &snapshot_version);
      if (!phase.ok()) return phase.status();
      certs_tls = *std::move(phase);
      pki->crypto->Stop();
    }
  }
  if (tls) {
    tls_forwarder->Stop();
    tls->nats->Stop();
  }

  std::optional<PhaseResult> quota;
  if (!config.skip_quota) {
    auto phase = RunQuota(config, url, payload, keys, router_args, *dir, *forwarder, *nats);
    if (!phase.ok()) return phase.status();
    quota = *std::move(phase);
  }

  std::optional<PhaseResult> audited;
  std::unique_ptr<ChildProcess> audit, audited_router;
  if (!config.skip_audit) {
    CHASQUI_ASSIGN_OR_RETURN(
        audit, ChildProcess::Start("audit",
                                   {config.audit_bin, "serve", "--env", kEnv, "--data",
                                    dir->File("audit"), "--checkpoint-key", dir->File("audit.key"),
                                    "--nats", url, "--ops-port", "0"},
                                   dir->File("audit.log")));
    CHASQUI_RETURN_IF_ERROR(WaitForChild(*audit, "serving line in its log", [&] {
      return ReadFileOrEmpty(audit->log_path()).find("audit serving") != std::string::npos;
    }));
    CHASQUI_ASSIGN_OR_RETURN(audited_router, ChildProcess::Start("router", audited_router_args,
                                                                 dir->File("router-audited.log")));
    int audited_ops_port = 0;
    CHASQUI_RETURN_IF_ERROR(WaitForRouter(*audited_router, &audited_ops_port));
    auto phase = RunSecured(config, {url}, payload, keys, audited_ops_port, *audited_router,
                            *forwarder, *nats, "audited", audit.get());
    if (!phase.ok() && absl::IsCancelled(phase.status())) return phase.status();
    if (!phase.ok()) {
      return absl::Status(phase.status().code(),
                          fmt::format("audited phase: {}\nrouter log:\n{}\naudit log:\n{}",
                                      MessageOf(phase.status()), audited_router->LogTail(),
                                      audit->LogTail()));
    }
    audited = *std::move(phase);
  }
  const PhaseResult* audited_ptr = audited ? &*audited : nullptr;
  const PhaseResult* quota_ptr = quota ? &*quota : nullptr;
  const CertPhases cert_phases{certs ? &*certs : nullptr, catalog ? &*catalog : nullptr,
                               snapshot_version};
  const TlsPhases tls_phases{raw_tls ? &*raw_tls : nullptr, secured_tls ? &*secured_tls : nullptr,
                             certs_tls ? &*certs_tls : nullptr};
  PrintTable(config, *raw, *secured, quota_ptr, audited_ptr, cert_phases, tls_phases);
  if (config.json) {
    PrintJson(config, *raw, *secured, quota_ptr, audited_ptr, cert_phases, tls_phases);
  }

  // Stop the children before the temp dir goes (they are also stopped on every error path).
  forwarder->Stop();
  if (audited_router) audited_router->Stop();
  if (audit) audit->Stop();
  nats->Stop();
  if (config.keep_dir) std::cout << "logs and keys kept in " << dir->path() << "\n";
  const uint64_t errors =
      raw->error_count + secured->error_count + (quota ? quota->error_count : 0) +
      (audited ? audited->error_count : 0) + (certs ? certs->error_count : 0) +
      (catalog ? catalog->error_count : 0) + (raw_tls ? raw_tls->error_count : 0) +
      (secured_tls ? secured_tls->error_count : 0) + (certs_tls ? certs_tls->error_count : 0);
  return errors > 0 ? 1 : 0;
}

}  // namespace
}  // namespace chasqui::bench

int main(int argc, char** argv) {
  chasqui::bench::Config config;
  CLI::App app{"chasqui-bench: a secured exchange beside the raw forwarder baseline, one run"};
  app.add_option("--payload", config.payload, "body bytes per request")
      ->check(CLI::Range(size_t{1}, size_t{512} * 1024));
  app.add_option("--inflight", config.inflight, "requests kept in flight (K)")
      ->check(CLI::Range(1, 100000));
  app.add_option("--seconds", config.seconds, "measured seconds per phase")
      ->check(CLI::Range(0.1, 3600.0));
  app.add_option("--warmup-seconds", config.warmup_seconds, "warm-up seconds per phase")
      ->check(CLI::Range(0.0, 600.0));
  app.add_option("--timeout-ms", config.timeout_ms,
                 "per-request timeout (bench, router, forwarder)")
      ->check(CLI::Range(int64_t{100}, int64_t{600000}));
  app.add_flag("--send-asap", config.send_asap,
               "flush every publish at once, here and in the router and forwarder (default off: "
               "nats.c's flusher batches, higher pipelined throughput)");
  app.add_flag("--json", config.json, "also print one JSON line of all figures");
  app.add_flag("--keep-dir", config.keep_dir, "keep the temp dir (logs, keys) and print its path");
  app.add_option("--router-bin", config.router_bin,
                 "chasqui-router (default: ../services/router/ next to this binary)");
  app.add_option("--router-arg", config.router_extra_args,
                 "an extra flag for chasqui-router (repeatable), e.g. --router-arg=--shared-delivery-thread")
      ->allow_extra_args(false);
  app.add_option("--forwarder-bin", config.forwarder_bin,
                 "chasqui-forwarder (default: next to this binary)");
  app.add_option("--nats-server-bin", config.nats_server_bin, "nats-server (default: on PATH)");
  app.add_option("--audit-bin", config.audit_bin,
                 "chasqui-audit (default: ../services/audit/ next to this binary)");
  app.add_flag("--skip-audit", config.skip_audit, "leave out the audited phase");
  app.add_option("--quota-bin", config.quota_bin,
                 "chasqui-quota (default: ../services/quota/ next to this binary)");
  app.add_flag("--skip-quota", config.skip_quota, "leave out the phase with quotas enforced");
  app.add_option("--crypto-bin", config.crypto_bin,
                 "chasqui-crypto (default: ../services/crypto/ next to this binary)");
  app.add_option("--catalog-bin", config.catalog_bin,
                 "chasqui-catalog (default: ../services/catalog/ next to this binary)");
  app.add_option("--cli-bin", config.cli_bin,
                 "chasqui, the command line (default: ../services/gateway/ next to this binary)");
  app.add_flag("--skip-certs", config.skip_certs,
               "leave out the phase on certificates (router and SDK sides on chasqui-crypto)");
  app.add_flag("--skip-catalog", config.skip_catalog,
               "leave out the phase with the router following chasqui-catalog");
  app.add_flag("--skip-tls", config.skip_tls,
               "leave out the phases over TLS (raw-tls, secured-tls, certs-tls: a second, "
               "TLS-only nats-server)");
  app.add_option("--tls-ca-script", config.tls_ca_script,
                 "makes the TLS server's CA and certificate (default: deploy/tls-ca.sh of the "
                 "source tree this bench was built from)");
  CLI11_PARSE(app, argc, argv);

  std::signal(SIGPIPE, SIG_IGN);
  spdlog::set_level(spdlog::level::warn);  // the bench's own buses log their connects at info
  int rc;
  {
    chasqui::bench::InterruptWatcher watcher;
    auto result = chasqui::bench::Run(config);
    if (result.ok()) {
      rc = *result;
    } else {
      std::cerr << "chasqui-bench: " << chasqui::MessageOf(result.status()) << "\n";
      rc = chasqui::bench::g_interrupted.HasBeenNotified() ? 130 : 2;
    }
  }
  chasqui::CloseNatsLibrary();
  return rc;
}
