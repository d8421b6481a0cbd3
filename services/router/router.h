#pragma once
// The router: the hot path of every exchange (DESIGN.md, "One request, start to end", steps 2
// and 4). It checks, in memory and in order: size and parse; addressing; reply subject;
// certificate; signature and body_hash; freshness and replay; then, when given, the catalog
// (service published, grant active, end user enabled) and the quota. Each refusal is answered
// with an error envelope signed by the router, carrying its exact code (and, for quota
// refusals, retry_after_ms). A request whose reply subject
// lies outside `_INBOX.<env>.<consumer>.` is dropped, counted and logged, and nothing is ever
// published to that subject. Accepted requests go to `chq.<env>.svc.<provider>.<service>` with
// the router's own reply subject; the provider's verified reply is relayed as received.
//
// With `audit` on (step 4, "no trace, no data"), every exchange and every authenticated refusal
// is appended to the audit service through an AuditClient, and a provider's reply (or its signed
// error) is relayed only after the audit service acknowledged the record as durable. If the
// audit service says the (sender, id) was already stored (a duplicate that slipped past another
// replica), the reply is withheld and the consumer gets REPLAYED; if it cannot store the record
// (backlog full, no answer in time, nobody serving), the reply is withheld and the consumer gets
// AUDIT_UNAVAILABLE. While appends fail, new requests are refused AUDIT_UNAVAILABLE before any
// provider sees them, except one per `audit_retry_interval`, whose record tells whether audit is
// back. Refusals before authentication, drops, and the authenticated refusals that cannot take a
// record's unique key (REPLAYED, AUDIT_UNAVAILABLE) are counted per (consumer label, code) and
// sent as RefusalCount entries every `refusal_count_interval`.
//
// Trust comes from a TrustSource (common/trust/trust_source.h): a trust file (FixedTrust), or
// certificates (CertificateTrust: pinned roots, the crypto service's directory, revocation
// lists). Each request takes one snapshot (Current()) and is checked against it throughout:
//   - no snapshot (revocation list missing or past valid_until): refused UNAVAILABLE, signed,
//     counted, before any other check of the envelope (fail closed; not charged to the
//     consumer's pre-authentication limit: it did nothing wrong);
//   - a revoked key or entity leaves the snapshot when the new list arrives, so from the next
//     request on it is refused UNAUTHENTICATED ("... revoked ..."), and its verified batch roots
//     are never reached: the root cache is consulted only for a signer found in the snapshot;
//   - a sender or recipient certificate serial not in the snapshot, with a source that
//     fetches, never blocks the delivery thread: the request goes to a bounded queue whose one
//     worker asks the directory (FetchSerials: the due serials of everything queued in one
//     request, each serial at most once per the source's backoff) and then runs the checks
//     again on the new snapshot. Queue full: UNAVAILABLE ("... certificate lookups queued ...").
//     Still unknown after the fetch: UNAUTHENTICATED as with a trust file, still charged to the
//     pre-authentication limit (so a flood of made-up serials from one consumer stops costing
//     anything once its limit is reached).

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/bus/bus.h"
#include "common/bus/request_mux.h"
#include "common/core/clock.h"
#include "common/envelope/batch_signer.h"
#include "common/envelope/envelope.h"
#include "common/envelope/identity.h"
#include "common/envelope/replay_guard.h"
#include "common/envelope/subjects.h"
#include "common/envelope/verifier.h"
#include "common/trust/trust_source.h"
#include "prometheus/registry.h"
#include "services/audit/audit_client.h"
#include "services/catalog/catalog_snapshot.h"
#include "services/quota/quota_enforcer.h"
#include "services/router/refusal_limiter.h"
#include "services/router/refusal_tally.h"
#include "services/router/router_metrics.h"

namespace chasqui {

struct RouterOptions {
  std::string env = "test";
  std::string router_id;  // unique among replicas: names the router's reply inbox
  int64_t freshness_window_ms = 30'000;
  // Unready after start so no replay seen by a predecessor slips in: by default the window
  // plus the allowed skew (which equals the window). Negative = that default.
  int64_t startup_hold_ms = -1;
  absl::Duration provider_timeout = absl::Seconds(5);
  size_t max_envelope_bytes = kDefaultMaxEnvelopeBytes;
  std::string queue_group = "chq.routers";
  // Refusals before authentication answered per consumer; beyond them its requests are
  // dropped unchecked (counted as dropped{reason="preauth_flood"}) until it slows down.
  RefusalLimits preauth_refusals;
  // No trace, no data: see the file comment. Off here so a library user who builds a router
  // without an audit service gets a working router; chasqui-router turns it on unless started
  // with --audit=false (benchmarks and tests that say so).
  bool audit = false;
  // The subject, backlog bound and ack timeout of the trace; the backlog bound is what the
  // router holds before it refuses new requests with AUDIT_UNAVAILABLE.
  audit::AuditClientOptions audit_client;
  // Refusal counts are sent this often (and when the router drains).
  absl::Duration refusal_count_interval = absl::Seconds(10);
  // While appends fail, one request per interval is still forwarded to find out whether the
  // audit service is back; the rest are refused before any provider does work for nothing.
  absl::Duration audit_retry_interval = absl::Milliseconds(250);
  // The catalog and quota checks (DESIGN.md step 2: grant, end user, quota), after freshness
  // and replay. Optional so a router without a catalog or quota service (benchmarks, the local
  // backbone) still serves; each must outlive the router, and is kept current by its owner
  // (CatalogFollower; the enforcer's own worker). Not owned.
  const CatalogSnapshot* catalog = nullptr;
  QuotaEnforcer* quota = nullptr;
  // Requests waiting for a certificate lookup (a TrustSource that fetches); beyond it they are
  // refused UNAVAILABLE at once.
  size_t max_pending_fetches = 1024;
};

// The checks and the forwarding, written against small interfaces so unit tests can use
// fakes. Thread-safe: HandleRequest may run on several threads.
class RouterCore {
 public:
  // `publisher`, `mux`, `metrics`, `clock` and `audit` must outlive the core. `audit` is null
  // when tracing is off (then `options.audit` is ignored).
  // `trust` must not be null. Starts the certificate fetch worker when it fetches().
  RouterCore(const RouterOptions& options, Publisher* publisher, RequestMux* mux,
             Identity identity, std::shared_ptr<TrustSource> trust, RouterMetrics* metrics,
             const Clock& clock, audit::AuditClient* audit = nullptr);
  ~RouterCore();

  void HandleRequest(const BusMessage& msg);
  // Stops the fetch worker; what is still queued is refused UNAVAILABLE ("shutting down").
  // Called before the mux and the bus go (the worker forwards through them).
  void StopFetching();
  // The trust snapshot's state (for /readyz): Unavailable while the revocation list is
  // missing or stale.
  absl::Status TrustHealth() const;
  size_t pending_fetches() const;

  // Sends the refusal counts of the interval now closing, and those whose earlier sending
  // failed, to the audit service (no-op when tracing is off). Called by the router's ticker
  // every second; sends only once `refusal_count_interval` has passed, unless `force`.
  void FlushRefusalCounts(bool force);
  // OK while traced appends succeed (or tracing is off); Unavailable saying since when and why
  // not otherwise.
  absl::Status AuditHealth() const;
  // Refusal-count entries not yet acknowledged by the audit service (retried at each flush).
  size_t unsent_refusal_counts() const;
  // For shutdown, before the AuditClient goes: signs and sends the error envelopes still queued
  // (their refusals may still be appended), then stops using the client; what would be traced
  // later is counted instead. Not thread-safe against HandleRequest: stop requests first.
  void StopTracing();

  const RootCache& root_cache() const { return root_cache_; }
  const BatchSigner& signer() const { return signer_; }

 private:
  struct Exchange;
  struct PendingFetch;
  // The checks from parse on, against `trust`; `fetched` once the worker has asked the
  // directory for this request's unknown serials (then unknown means UNAUTHENTICATED).
  void Check(const BusMessage& msg, const RequestSubject& subject, int64_t start_ns,
             int64_t received_ms, const std::shared_ptr<const TrustStore>& trust, bool fetched);
  // Queues the request for the fetch worker, which asks for `serials`; false if the queue is
  // full (or the worker stopped).
  bool QueueFetch(const BusMessage& msg, int64_t start_ns, int64_t received_ms,
                  std::vector<uint64_t> serials);
  void FetchLoop();
  // UNAVAILABLE because of the trust itself (no usable snapshot, or shutting down): signed,
  // counted, not charged to the consumer's pre-authentication limit.
  void RefuseUntrusted(const BusMessage& msg, const RequestSubject& subject,
                       const absl::Status& why);
  // UNAUTHENTICATED for a `field` serial not in the snapshot; once `fetched`, saying why the
  // directory did not yield it (revoked, expired, unknown), or UNAVAILABLE if it cannot say.
  absl::Status UnknownCertificate(std::string_view field, uint64_t serial, bool fetched);
  absl::Status FetchQueueFull(std::string_view field, uint64_t serial) const;
  // `trace` (null before authentication, or with tracing off) is the request's half-filled
  // record: the refusal is recorded, or counted when it cannot take the record's key.
  void Refuse(const BusMessage& msg, const std::string& reply_to, const std::string& in_reply_to,
              std::string_view consumer, std::string_view provider, std::string_view service,
              std::string_view label_consumer, std::string_view label_provider,
              std::string_view label_service, const absl::Status& why,
              std::shared_ptr<v1::AuditRecord> trace, int64_t retry_after_ms = 0);
  void OnProviderAnswer(const std::shared_ptr<Exchange>& ex, MuxOutcome outcome,
                        const BusMessage* reply);
  // Relays the provider's envelope once its record is durable (or refuses it). Takes the
  // signed header bytes and signature out of `reply` for the record (`wire` is relayed).
  void RelayAfterTrace(const std::shared_ptr<Exchange>& ex, v1::Code code, std::string wire,
                       ParsedEnvelope& reply);
  // Signs and publishes an error envelope; with `trace`, also records the refusal (the router's
  // signed error as the reply half) once it is signed. Publishing never waits for the trace:
  // an error carries no data.
  void SendError(const std::string& reply_to, const std::string& in_reply_to,
                 std::string_view consumer, std::string_view provider, std::string_view service,
                 v1::Code code, std::string_view message,
                 std::shared_ptr<v1::AuditRecord> trace = nullptr,
                 std::string_view label_consumer = {}, int64_t retry_after_ms = 0);
  // Appends a refusal's record; counts it instead when the audit service cannot take it.
  void TraceRefusal(v1::AuditRecord record, std::string label_consumer);
  // True if a new exchange may be forwarded: the trace is up, or this is the one request per
  // retry interval that probes it.
  bool AuditAdmits();
  void NoteAuditResult(const absl::Status& status);
  static std::string_view KnownEntityOr(const TrustStore* trust, std::string_view name);
  void LogRefusal(std::string_view what);

  const RouterOptions options_;
  Publisher* publisher_;
  RequestMux* mux_;
  const Identity identity_;
  const std::shared_ptr<TrustSource> trust_;
  RouterMetrics* metrics_;
  const Clock& clock_;
  RootCache root_cache_;
  EnvelopeVerifier verifier_;
  ReplayGuard replay_;
  RefusalLimiter preauth_limiter_;
  BatchSigner signer_;
  std::atomic<int64_t> log_second_{0};
  std::atomic<int> log_lines_this_second_{0};

  // Null when tracing is off, and after StopTracing().
  std::atomic<audit::AuditClient*> audit_;
  RefusalTally tally_;
  // 0 while appends succeed; else when they began to fail (monotonic ns).
  std::atomic<int64_t> audit_failing_since_ns_{0};
  std::atomic<int64_t> audit_last_probe_ns_{0};
  mutable absl::Mutex audit_mu_;
  std::string audit_failure_ ABSL_GUARDED_BY(audit_mu_);
  // Refusal counts whose sending failed, resent at the next flush (their unique key makes a
  // resend of one that was stored after all harmless). Bounded.
  std::vector<v1::RefusalCount> unsent_counts_ ABSL_GUARDED_BY(audit_mu_);
  size_t counts_in_flight_ ABSL_GUARDED_BY(audit_mu_) = 0;
  int64_t last_flush_ns_ ABSL_GUARDED_BY(audit_mu_) = 0;

  // Requests waiting for a certificate lookup, and their one worker (only when
  // trust_->fetches()).
  mutable absl::Mutex fetch_mu_;
  std::deque<PendingFetch> pending_ ABSL_GUARDED_BY(fetch_mu_);
  bool fetch_stopped_ ABSL_GUARDED_BY(fetch_mu_) = false;
  absl::CondVar fetch_cv_;
  std::thread fetcher_;
};

class Router {
 public:
  // Connects the core to `bus` (which must outlive the router) and subscribes to
  // `chq.<env>.req.>` in the queue group once the startup hold has passed.
  static absl::StatusOr<std::unique_ptr<Router>> Start(const RouterOptions& options, Bus* bus,
                                                       Identity identity,
                                                       std::shared_ptr<TrustSource> trust,
                                                       std::shared_ptr<prometheus::Registry> registry,
                                                       const Clock& clock = SystemClock());
  // A trust file: FixedTrust(trust).
  static absl::StatusOr<std::unique_ptr<Router>> Start(const RouterOptions& options, Bus* bus,
                                                       Identity identity, TrustStore trust,
                                                       std::shared_ptr<prometheus::Registry> registry,
                                                       const Clock& clock = SystemClock());
  ~Router();

  // OK once the router serves, its trust snapshot is usable (revocation list held and not
  // stale) and (with tracing on) the audit service acknowledges records; else why not (for
  // /readyz).
  absl::Status Ready() const;
  // Stops taking requests and lets those in flight finish, up to `timeout`.
  absl::Status Drain(absl::Duration timeout);

  const RouterCore& core() const { return *core_; }
  RouterCore& core() { return *core_; }

 private:
  Router() = default;
  void HoldThenSubscribe(int64_t hold_ms);

  RouterOptions options_;
  Bus* bus_ = nullptr;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<RouterMetrics> metrics_;
  std::unique_ptr<RequestMux> mux_;
  // The trace has its own inbox subscription (`<router inbox>.audit.*`): its acks, one per
  // batch, then never queue behind thousands of provider replies on one delivery thread, and
  // its timeouts run on their own thread.
  std::unique_ptr<RequestMux> audit_mux_;
  std::unique_ptr<audit::AuditClient> audit_;
  std::unique_ptr<RouterCore> core_;
  std::unique_ptr<Subscription> subscription_;
  absl::Notification stop_;
  std::thread hold_thread_;
  std::atomic<bool> serving_{false};
  std::atomic<bool> subscribe_failed_{false};
};

}  // namespace chasqui
