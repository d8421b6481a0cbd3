#include "services/router/router.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "common/core/log.h"
#include "common/core/names.h"
#include "common/core/status.h"
#include "common/crypto/sodium.h"
#include "common/envelope/errors.h"
#include "common/envelope/subjects.h"
#include "fmt/format.h"
#include "services/quota/quota_keys.h"

namespace chasqui {
namespace {
constexpr int kRefusalLogLinesPerSecond = 20;
constexpr std::string_view kUnknown = "unknown";
// The audit service stores a signed header up to this size; a larger one goes as its hash.
constexpr size_t kMaxTracedHeaderBytes = 4096;
// Refusal counts kept for resending while the audit service is away; beyond them the oldest
// intervals are given up (counted in chasqui_router_audit_lost_total).
constexpr size_t kMaxUnsentRefusalCounts = 10'000;

void FillSignedHeader(v1::SignedHeader* out, const std::string& header_bytes,
                      const v1::Signature& sig) {
  if (header_bytes.size() <= kMaxTracedHeaderBytes) {
    out->set_header(header_bytes);
  } else {
    const Hash32 h = Blake2b256(header_bytes);
    out->set_header_hash(reinterpret_cast<const char*>(h.data()), h.size());
  }
  *out->mutable_sig() = sig;
}

// The same, taking the bytes and the signature (its path) out of a parsed envelope that is not
// read again: the trace is built once per request and reply, so no copy is made.
void MoveSignedHeader(v1::SignedHeader* out, v1::Envelope& envelope) {
  if (envelope.header().size() <= kMaxTracedHeaderBytes) {
    out->set_header(std::move(*envelope.mutable_header()));
  } else {
    const Hash32 h = Blake2b256(envelope.header());
    out->set_header_hash(reinterpret_cast<const char*>(h.data()), h.size());
  }
  *out->mutable_sig() = std::move(*envelope.mutable_sig());
}

// The request's half of an exchange's record: who asked what for whom, and its signed header
// (taken out of `p`: the request is forwarded as received, and its header was parsed).
std::shared_ptr<v1::AuditRecord> RequestRecord(ParsedEnvelope& p, int64_t received_ms,
                                               const std::string& router_id) {
  const v1::Header& h = p.header;
  auto r = std::make_shared<v1::AuditRecord>();
  r->set_request_id(h.id());
  r->set_sender_cert(h.sender_cert());
  r->set_env(h.env());
  r->set_consumer(h.consumer());
  r->set_provider(h.provider());
  r->set_service(h.service());
  r->set_service_version(h.service_version());
  r->set_end_user(h.end_user());
  r->set_purpose(h.purpose());
  r->set_annex_id(h.annex_id());
  r->set_consent_ref(h.consent_ref());
  r->set_received_at_ms(received_ms);
  r->set_request_body_bytes(p.envelope.body().size());
  r->set_request_body_hash(h.body_hash());
  MoveSignedHeader(r->mutable_request(), p.envelope);
  r->set_router_id(router_id);
  return r;
}

// A refused admission as the consumer sees it: QUOTA_EXCEEDED naming the limit, or, while the
// router has drawn no lease for the grant yet, UNAVAILABLE (the consumer did nothing wrong).
absl::Status QuotaRefusal(const QuotaAdmission& a, const v1::Header& h) {
  std::string_view limit;
  switch (a.limit) {
    case v1::QUOTA_LIMIT_RATE:
      limit = "rate";
      break;
    case v1::QUOTA_LIMIT_DAY:
      limit = "daily";
      break;
    case v1::QUOTA_LIMIT_MONTH:
      limit = "monthly";
      break;
    case v1::QUOTA_LIMIT_PROVIDER_CAPACITY:
      return ChasquiError(
          v1::QUOTA_EXCEEDED,
          fmt::format("provider {} service {} is at its total capacity (provider capacity "
                      "limit); retry after {} ms",
                      h.provider(), h.service(), a.retry_after_ms));
    case v1::QUOTA_LIMIT_NO_LEASE:
    default:
      return ChasquiError(
          v1::UNAVAILABLE,
          fmt::format("this router holds no quota lease for {}->{}/{} yet (no_lease); retry "
                      "after {} ms",
                      h.consumer(), h.provider(), h.service(), a.retry_after_ms));
  }
  return ChasquiError(v1::QUOTA_EXCEEDED,
                      fmt::format("{}->{}/{} is over its {} quota ({} limit); retry after {} ms",
                                  h.consumer(), h.provider(), h.service(), limit,
                                  QuotaLimitName(a.limit), a.retry_after_ms));
}

// What the consumer is told when the trace refused a reply.
v1::Code RefusalForTrace(const absl::Status& s) {
  return absl::IsAlreadyExists(s) ? v1::REPLAYED : v1::AUDIT_UNAVAILABLE;
}
}  // namespace

// One forwarded request, until its answer is relayed.
struct RouterCore::Exchange {
  std::string reply_to;
  std::string id;
  std::string consumer;
  std::string provider;
  std::string service;
  std::string label_consumer;  // metric labels, decided once on the way in
  std::string label_provider;
  int64_t router_ns = 0;  // time spent in the router on the way in
  std::shared_ptr<v1::AuditRecord> record;  // with tracing on: the request's half, forwarded_at
  std::shared_ptr<const TrustStore> trust;  // the request's snapshot: verifies the reply
};

// A request whose sender or recipient certificate the snapshot did not hold, owned while it
// waits for the fetch worker.
struct RouterCore::PendingFetch {
  std::string subject;
  std::string reply;
  std::string data;
  int64_t start_ns = 0;
  int64_t received_ms = 0;
  std::vector<uint64_t> serials;
};

RouterCore::RouterCore(const RouterOptions& options, Publisher* publisher, RequestMux* mux,
                       Identity identity, std::shared_ptr<TrustSource> trust,
                       RouterMetrics* metrics, const Clock& clock, audit::AuditClient* audit)
    : options_(options),
      publisher_(publisher),
      mux_(mux),
      identity_(std::move(identity)),
      trust_(std::move(trust)),
      metrics_(metrics),
      clock_(clock),
      root_cache_(clock, options.freshness_window_ms),
      verifier_(options.env, &root_cache_),
      replay_(clock, options.freshness_window_ms),
      preauth_limiter_(clock, options.preauth_refusals),
      signer_(identity_.sign, EnvelopeTag(options.env)),
      audit_(audit),
      tally_(options.env, options.router_id, clock.NowUnixMillis()) {
  CHASQUI_CHECK(trust_ != nullptr, "the router needs a trust source");
  {
    absl::MutexLock lock(&audit_mu_);
    last_flush_ns_ = clock_.NowMonoNanos();
  }
  if (trust_->fetches()) fetcher_ = std::thread([this] { FetchLoop(); });
}

RouterCore::~RouterCore() { StopFetching(); }

std::string_view RouterCore::KnownEntityOr(const TrustStore* trust, std::string_view name) {
  return trust != nullptr && trust->Find(name, Role::kEntity) != nullptr ? name : kUnknown;
}

absl::Status RouterCore::TrustHealth() const { return trust_->Current().status(); }

size_t RouterCore::pending_fetches() const {
  absl::MutexLock lock(&fetch_mu_);
  return pending_.size();
}

bool RouterCore::QueueFetch(const BusMessage& msg, int64_t start_ns, int64_t received_ms,
                            std::vector<uint64_t> serials) {
  {
    absl::MutexLock lock(&fetch_mu_);
    if (fetch_stopped_ || pending_.size() >= options_.max_pending_fetches) {
      metrics_->CountFetch("queue_full");
      return false;
    }
    pending_.push_back(PendingFetch{std::string(msg.subject), std::string(msg.reply),
                                    std::string(msg.data), start_ns, received_ms,
                                    std::move(serials)});
    metrics_->fetch_queue().Set(static_cast<double>(pending_.size()));
  }
  metrics_->CountFetch("queued");
  fetch_cv_.Signal();
  return true;
}

void RouterCore::FetchLoop() {
  for (;;) {
    std::deque<PendingFetch> batch;
    bool stopped;
    {
      absl::MutexLock lock(&fetch_mu_);
      while (!fetch_stopped_ && pending_.empty()) fetch_cv_.Wait(&fetch_mu_);
      stopped = fetch_stopped_;
      batch.swap(pending_);
      metrics_->fetch_queue().Set(0);
    }
    absl::StatusOr<std::shared_ptr<const TrustStore>> trust =
        absl::UnavailableError("the router is shutting down; retry");
    if (!stopped) {
      // Everything queued meanwhile in one directory request: a flood of unknown serials costs
      // one request per pass, and each serial one per backoff at most.
      std::vector<uint64_t> serials;
      for (const PendingFetch& p : batch) {
        serials.insert(serials.end(), p.serials.begin(), p.serials.end());
      }
      std::sort(serials.begin(), serials.end());
      serials.erase(std::unique(serials.begin(), serials.end()), serials.end());
      trust = trust_->FetchSerials(serials);
    }
    for (const PendingFetch& p : batch) {
      const BusMessage msg{p.subject, p.reply, p.data, false};
      const auto subject = ParseRequestSubject(p.subject);  // parsed once before: valid
      if (!trust.ok()) {
        RefuseUntrusted(msg, *subject, trust.status());
        continue;
      }
      Check(msg, *subject, p.start_ns, p.received_ms, *trust, /*fetched=*/true);
    }
    if (stopped) return;
  }
}

void RouterCore::StopFetching() {
  {
    absl::MutexLock lock(&fetch_mu_);
    fetch_stopped_ = true;
  }
  fetch_cv_.SignalAll();
  if (fetcher_.joinable()) fetcher_.join();
}

absl::Status RouterCore::UnknownCertificate(std::string_view field, uint64_t serial,
                                          bool fetched) {
  if (!fetched) {
    return ChasquiError(v1::UNAUTHENTICATED,
                        fmt::format("{} {} is not a known key in {}", field, serial, options_.env));
  }
  // Within the source's backoff this asks nobody: it says what the directory holds.
  auto why = trust_->FetchSerial(serial);
  if (absl::IsUnavailable(why.status())) {
    return ChasquiError(v1::UNAVAILABLE, MessageOf(why.status()));
  }
  if (!why.ok() && !absl::IsNotFound(why.status())) {
    // Revoked (PermissionDenied) or expired / not yet valid (FailedPrecondition).
    return ChasquiError(v1::UNAUTHENTICATED,
                        fmt::format("{} {} is not accepted in {}: {}", field, serial,
                                    options_.env, MessageOf(why.status())));
  }
  return ChasquiError(v1::UNAUTHENTICATED,
                      fmt::format("{} {} is not a known key in {} (the crypto service's "
                                  "directory has no gateway certificate with that serial)",
                                  field, serial, options_.env));
}

absl::Status RouterCore::FetchQueueFull(std::string_view field, uint64_t serial) const {
  return ChasquiError(
      v1::UNAVAILABLE,
      fmt::format("{} {} is not held by this router yet, and {} certificate lookups are already "
                  "queued; retry shortly",
                  field, serial, options_.max_pending_fetches));
}

void RouterCore::RefuseUntrusted(const BusMessage& msg, const RequestSubject& subject,
                                 const absl::Status& why) {
  // The consumer did nothing wrong: not charged to its pre-authentication limit. Its id, if
  // the envelope parses, lets its gateway match the answer.
  auto parsed = ParseEnvelope(msg.data);
  const std::string id = parsed.ok() ? parsed->header.id() : std::string();
  if (audit_ != nullptr) tally_.Count(kUnknown, v1::UNAVAILABLE);
  Refuse(msg, std::string(msg.reply), id, subject.consumer, subject.provider, subject.service,
         kUnknown, kUnknown, kUnknown, ChasquiError(v1::UNAVAILABLE, MessageOf(why)), nullptr);
}

void RouterCore::LogRefusal(std::string_view what) {
  const int64_t second = clock_.NowMonoNanos() / 1'000'000'000;
  if (log_second_.exchange(second) != second) log_lines_this_second_ = 0;
  const int n = ++log_lines_this_second_;
  if (n <= kRefusalLogLinesPerSecond) {
    CHQ_LOG_WARN("refused {}", what);
  } else if (n == kRefusalLogLinesPerSecond + 1) {
    CHQ_LOG_WARN("refusals: more than {} this second; further lines this second suppressed "
                 "(see chasqui_router_requests_total)",
                 kRefusalLogLinesPerSecond);
  }
}

void RouterCore::HandleRequest(const BusMessage& msg) {
  const int64_t start_ns = clock_.NowMonoNanos();
  const int64_t received_ms = clock_.NowUnixMillis();
  // The one snapshot this request is checked against.
  const absl::StatusOr<std::shared_ptr<const TrustStore>> trust = trust_->Current();
  const TrustStore* known = trust.ok() ? trust->get() : nullptr;
  const auto subject = ParseRequestSubject(msg.subject);
  if (!subject || subject->env != options_.env) {
    metrics_->CountDropped("bad_subject");
    // Counted, as RefusalCount entries have no drop reason, under the code closest to it.
    if (audit_ != nullptr) tally_.Count(kUnknown, v1::BAD_REQUEST);
    LogRefusal(fmt::format("subject \"{}\": not chq.{}.req.<consumer>.<provider>.<service>; "
                           "dropped",
                           Printable(msg.subject), options_.env));
    return;
  }
  // Never publish to a reply subject outside the consumer's own inbox: nats-server 2.9 does not
  // check reply subjects, so answering one would let a sender aim the router at anybody.
  if (!IsReplySubjectUnder(msg.reply, EntityInboxPrefix(options_.env, subject->consumer))) {
    metrics_->CountDropped("reply_subject");
    if (audit_ != nullptr) {
      tally_.Count(KnownEntityOr(known, subject->consumer), v1::BAD_REQUEST);
    }
    LogRefusal(fmt::format("request on {}: reply subject \"{}\" is outside _INBOX.{}.{}.; "
                           "dropped unanswered",
                           msg.subject, Printable(msg.reply), options_.env, subject->consumer));
    return;
  }
  if (preauth_limiter_.Blocked(subject->consumer)) {
    metrics_->CountDropped("preauth_flood");
    // Unchecked, so of unknown cause: counted as what the refusals that blocked it mostly are.
    if (audit_ != nullptr) {
      tally_.Count(KnownEntityOr(known, subject->consumer), v1::UNAUTHENTICATED);
    }
    LogRefusal(fmt::format("request on {}: consumer {} is over its limit of {}/s refusals "
                           "before authentication; dropped unchecked until it slows down",
                           msg.subject, subject->consumer,
                           options_.preauth_refusals.per_second));
    return;
  }
  if (!trust.ok()) {
    // Fail closed: no revocation list, or a stale one.
    RefuseUntrusted(msg, *subject, trust.status());
    return;
  }
  Check(msg, *subject, start_ns, received_ms, *trust, /*fetched=*/false);
}

void RouterCore::Check(const BusMessage& msg, const RequestSubject& subject_ref,
                       int64_t start_ns, int64_t received_ms,
                       const std::shared_ptr<const TrustStore>& trust, bool fetched) {
  const RequestSubject* subject = &subject_ref;
  const std::string reply_to(msg.reply);
  const std::string_view label_consumer = KnownEntityOr(trust.get(), subject->consumer);
  bool authenticated = false;
  std::shared_ptr<v1::AuditRecord> trace;  // once authenticated, with tracing on
  auto refuse = [&](const absl::Status& why, const std::string& in_reply_to,
                    std::string_view label_provider, int64_t retry_after_ms = 0) {
    if (!authenticated) {
      preauth_limiter_.Charge(subject->consumer);
      // Before authentication nobody is proven to have asked: counted, never recorded.
      if (audit_ != nullptr) tally_.Count(label_consumer, ChasquiCode(why));
    }
    Refuse(msg, reply_to, in_reply_to, subject->consumer, subject->provider, subject->service,
           label_consumer, label_provider, authenticated ? subject->service : kUnknown, why,
           std::move(trace), retry_after_ms);
  };

  if (msg.data.size() > options_.max_envelope_bytes) {
    refuse(ChasquiError(v1::BAD_REQUEST,
                        fmt::format("envelope is {} bytes; this router accepts at most {}",
                                    msg.data.size(), options_.max_envelope_bytes)),
           "", kUnknown);
    return;
  }
  auto parsed = ParseEnvelope(msg.data);
  if (!parsed.ok()) {
    refuse(parsed.status(), "", kUnknown);
    return;
  }
  const v1::Header& h = parsed->header;
  const std::string& id = h.id();
  if (h.kind() != v1::KIND_REQUEST) {
    refuse(ChasquiError(v1::BAD_REQUEST, "only request envelopes may be sent on a req subject"),
           id, kUnknown);
    return;
  }
  if (h.env() != options_.env) {
    refuse(ChasquiError(v1::BAD_REQUEST,
                        fmt::format("envelope is for environment {} but was sent on {}", h.env(),
                                    options_.env)),
           id, kUnknown);
    return;
  }
  if (h.consumer() != subject->consumer || h.provider() != subject->provider ||
      h.service() != subject->service) {
    refuse(ChasquiError(v1::BAD_REQUEST,
                        fmt::format("envelope is addressed {}->{}/{} but was sent on {}",
                                    h.consumer(), h.provider(), h.service(), msg.subject)),
           id, kUnknown);
    return;
  }
  const std::string_view label_provider = KnownEntityOr(trust.get(), subject->provider);
  const bool can_fetch = !fetched && trust_->fetches();
  const PublicIdentity* signer = trust->BySerial(h.sender_cert());
  if (signer == nullptr) {
    if (can_fetch) {
      // Off the delivery thread; the recipient too if it is missing, in the same request.
      std::vector<uint64_t> serials = {h.sender_cert()};
      if (trust->BySerial(h.recipient_cert()) == nullptr) serials.push_back(h.recipient_cert());
      if (QueueFetch(msg, start_ns, received_ms, std::move(serials))) return;
      refuse(FetchQueueFull("sender_cert", h.sender_cert()), id, label_provider);
      return;
    }
    refuse(UnknownCertificate("sender_cert", h.sender_cert(), fetched), id, label_provider);
    return;
  }
  if (signer->role != Role::kEntity || signer->entity != h.consumer()) {
    refuse(ChasquiError(v1::UNAUTHENTICATED,
                        fmt::format("signed by {} {}, not by the consumer {} the subject names",
                                    RoleName(signer->role), signer->entity, h.consumer())),
           id, label_provider);
    return;
  }
  bool cache_hit = false;
  if (absl::Status s = verifier_.Verify(*parsed, *signer, &cache_hit); !s.ok()) {
    refuse(s, id, label_provider);
    return;
  }
  authenticated = true;
  (cache_hit ? metrics_->root_cache_hits() : metrics_->root_cache_misses()).Increment();
  metrics_->batch_size().Observe(parsed->envelope.sig().tree_size());
  // The envelope's signed bytes are not read after this (the header is parsed, the request is
  // forwarded as received): the record takes them.
  if (audit_ != nullptr) trace = RequestRecord(*parsed, received_ms, options_.router_id);
  const PublicIdentity* recipient = trust->BySerial(h.recipient_cert());
  if (recipient == nullptr && can_fetch) {
    if (QueueFetch(msg, start_ns, received_ms, {h.recipient_cert()})) return;
    refuse(FetchQueueFull("recipient_cert", h.recipient_cert()), id, label_provider);
    return;
  }
  if (recipient == nullptr || recipient->role != Role::kEntity ||
      recipient->entity != h.provider()) {
    refuse(ChasquiError(v1::BAD_REQUEST,
                        fmt::format("recipient_cert {} is not a key of provider {} in {}",
                                    h.recipient_cert(), h.provider(), options_.env)),
           id, label_provider);
    return;
  }
  if (absl::Status s = replay_.Check(signer->serial, id, h.sent_at_ms()); !s.ok()) {
    refuse(s, id, label_provider);
    return;
  }
  if (options_.catalog != nullptr) {
    // NOT_FOUND, FORBIDDEN or END_USER_UNKNOWN, with the catalog's own message (it says which
    // grant state refused): the consumer's operator acts on it, so it is passed on unchanged.
    if (auto access = options_.catalog->Check(h.consumer(), h.provider(), h.service(),
                                              h.end_user());
        !access.ok()) {
      // An empty snapshot knows no service: that is "cannot check yet", not NOT_FOUND.
      if (!options_.catalog->loaded()) {
        refuse(ChasquiError(v1::UNAVAILABLE,
                            "the router holds no catalog snapshot yet; retry shortly"),
               id, label_provider);
        return;
      }
      refuse(access.status(), id, label_provider);
      return;
    }
  }
  // Before the quota: a request refused because nothing can be traced must not spend the
  // consumer's allowance (a client retrying through an audit outage would burn its day).
  if (audit_ != nullptr && !AuditAdmits()) {
    refuse(ChasquiError(v1::AUDIT_UNAVAILABLE,
                        "the audit service is not acknowledging trace records, and nothing is "
                        "served untraced; retry later with a new request"),
           id, label_provider);
    return;
  }
  if (options_.quota != nullptr) {
    // GrantKeyString's form, built in a buffer each thread reuses: no allocation per request
    // once it has grown to the longest key.
    thread_local std::string grant_key;
    grant_key.clear();
    grant_key.append(options_.env)
        .append("/")
        .append(h.consumer())
        .append("/")
        .append(h.provider())
        .append("/")
        .append(h.service());
    const QuotaAdmission admission = options_.quota->Admit(grant_key, clock_.NowUnixMillis());
    if (!admission.admitted) {
      refuse(QuotaRefusal(admission, h), id, label_provider, admission.retry_after_ms);
      return;
    }
  }

  auto ex = std::make_shared<Exchange>();
  ex->reply_to = reply_to;
  ex->id = id;
  ex->consumer = h.consumer();
  ex->provider = h.provider();
  ex->service = h.service();
  ex->label_consumer = label_consumer;
  ex->label_provider = label_provider;
  ex->trust = trust;
  if (trace != nullptr) {
    trace->set_forwarded_at_ms(clock_.NowUnixMillis());
    ex->record = std::move(trace);
  }
  metrics_->in_flight().Increment();
  ex->router_ns = clock_.NowMonoNanos() - start_ns;
  absl::Status sent = mux_->Request(
      ServiceSubjectFor(options_.env, h.provider(), h.service()), msg.data,
      options_.provider_timeout,
      [this, ex](MuxOutcome outcome, const BusMessage* reply) { OnProviderAnswer(ex, outcome, reply); });
  if (!sent.ok()) {
    metrics_->in_flight().Decrement();
    if (ex->record != nullptr) ex->record->set_forwarded_at_ms(0);
    SendError(reply_to, id, h.consumer(), h.provider(), h.service(), v1::UNAVAILABLE,
              "the router could not forward the request; retry", ex->record, label_consumer);
    metrics_->CountRequest(label_consumer, label_provider, h.service(), v1::UNAVAILABLE);
    CHQ_LOG_ERROR("forwarding to {} failed: {}", h.provider(), MessageOf(sent));
  }
}

void RouterCore::OnProviderAnswer(const std::shared_ptr<Exchange>& ex, MuxOutcome outcome,
                                  const BusMessage* reply) {
  const int64_t start_ns = clock_.NowMonoNanos();
  metrics_->in_flight().Decrement();
  v1::Code code = v1::OK;
  std::string problem;
  switch (outcome) {
    case MuxOutcome::kTimeout:
      code = v1::TIMEOUT;
      problem = fmt::format("provider {} did not answer {} within {} ms", ex->provider,
                            ex->service, absl::ToInt64Milliseconds(options_.provider_timeout));
      break;
    case MuxOutcome::kNoResponders:
      code = v1::UNAVAILABLE;
      problem = fmt::format("no gateway of provider {} serves {} in {} right now", ex->provider,
                            ex->service, options_.env);
      break;
    case MuxOutcome::kClosed:
      code = v1::UNAVAILABLE;
      problem = "the router is shutting down; retry";
      break;
    case MuxOutcome::kReply: {
      auto parsed = ParseEnvelope(reply->data);
      const PublicIdentity* signer =
          parsed.ok() ? ex->trust->BySerial(parsed->header.sender_cert()) : nullptr;
      absl::Status valid;
      if (!parsed.ok()) {
        valid = parsed.status();
      } else if (const v1::Header& h = parsed->header;
                 (h.kind() != v1::KIND_REPLY && h.kind() != v1::KIND_ERROR) ||
                 h.in_reply_to() != ex->id || h.env() != options_.env ||
                 h.consumer() != ex->consumer || h.provider() != ex->provider ||
                 h.service() != ex->service) {
        valid = absl::InvalidArgumentError("the reply does not answer this request");
      } else if (signer == nullptr || signer->role != Role::kEntity ||
                 signer->entity != ex->provider) {
        valid = absl::UnauthenticatedError("the reply is not signed by the provider");
      } else {
        valid = verifier_.Verify(*parsed, *signer);
      }
      if (!valid.ok()) {
        code = v1::PROVIDER_ERROR;
        problem = fmt::format("provider {} sent an invalid reply: {}", ex->provider,
                              MessageOf(valid));
        break;
      }
      if (parsed->header.kind() == v1::KIND_ERROR) code = parsed->header.error().code();
      if (ex->record != nullptr) {
        // No trace, no data: the reply leaves once its record is durable; counted then.
        RelayAfterTrace(ex, code, std::string(reply->data), *parsed);
        metrics_->added_latency().Observe(
            static_cast<double>(ex->router_ns + clock_.NowMonoNanos() - start_ns) * 1e-9);
        return;
      }
      if (absl::Status s = publisher_->Publish(ex->reply_to, reply->data); !s.ok()) {
        CHQ_LOG_ERROR("relaying a reply to {} failed: {}", ex->consumer, MessageOf(s));
      }
      break;
    }
  }
  if (!problem.empty()) {
    LogRefusal(fmt::format("{}->{}/{}: {}: {}", ex->consumer, ex->provider, ex->service,
                           CodeName(code), problem));
    SendError(ex->reply_to, ex->id, ex->consumer, ex->provider, ex->service, code, problem,
              ex->record, ex->label_consumer);
  }
  metrics_->CountRequest(ex->label_consumer, ex->label_provider, ex->service,
                         code);
  metrics_->added_latency().Observe(
      static_cast<double>(ex->router_ns + clock_.NowMonoNanos() - start_ns) * 1e-9);
}

void RouterCore::Refuse(const BusMessage& msg, const std::string& reply_to,
                        const std::string& in_reply_to, std::string_view consumer,
                        std::string_view provider, std::string_view service,
                        std::string_view label_consumer, std::string_view label_provider,
                        std::string_view label_service, const absl::Status& why,
                        std::shared_ptr<v1::AuditRecord> trace, int64_t retry_after_ms) {
  const v1::Code code = ChasquiCode(why);
  metrics_->CountRequest(label_consumer, label_provider, label_service, code);
  LogRefusal(fmt::format("{} on {}: {}", CodeName(code), msg.subject, MessageOf(why)));
  SendError(reply_to, in_reply_to, consumer, provider, service, code, MessageOf(why),
            std::move(trace), label_consumer, retry_after_ms);
}

void RouterCore::SendError(const std::string& reply_to, const std::string& in_reply_to,
                           std::string_view consumer, std::string_view provider,
                           std::string_view service, v1::Code code, std::string_view message,
                           std::shared_ptr<v1::AuditRecord> trace,
                           std::string_view label_consumer, int64_t retry_after_ms) {
  if (trace != nullptr && (code == v1::REPLAYED || code == v1::AUDIT_UNAVAILABLE)) {
    // A replay shares its (sender, id) with the exchange it repeats, and AUDIT_UNAVAILABLE is
    // answered because records are not being stored: neither can be a record of its own.
    tally_.Count(label_consumer, code);
    trace.reset();
  }
  v1::Header h;
  h.set_protocol_version(kProtocolVersion);
  h.set_id(NewEnvelopeId());
  h.set_env(options_.env);
  h.set_kind(v1::KIND_ERROR);
  h.set_consumer(std::string(consumer));
  h.set_provider(std::string(provider));
  h.set_service(std::string(service));
  h.set_sent_at_ms(clock_.NowUnixMillis());
  h.set_sender_cert(identity_.pub.serial);
  h.set_in_reply_to(in_reply_to);
  h.mutable_error()->set_code(code);
  h.mutable_error()->set_message(std::string(message.substr(0, kMaxErrorMessageBytes)));
  if (retry_after_ms > 0) {
    // The field is 32 bits: about 49 days, more than a month's cap ever asks to wait.
    h.mutable_error()->set_retry_after_ms(static_cast<uint32_t>(
        std::min<int64_t>(retry_after_ms, std::numeric_limits<uint32_t>::max())));
  }
  const Hash32 empty_body_hash = Blake2b256("");
  h.set_body_hash(reinterpret_cast<const char*>(empty_body_hash.data()), empty_body_hash.size());
  // SignEnvelope's steps, by hand: the trace needs the signed header bytes and the signature.
  signer_.Submit(h.SerializeAsString(), [this, reply_to, code, trace = std::move(trace),
                                         label = std::string(label_consumer)](
                                            std::string header_bytes, v1::Signature sig) {
    if (trace != nullptr) {
      v1::AuditRecord record = std::move(*trace);
      record.set_replied_at_ms(clock_.NowUnixMillis());
      record.set_outcome(code);
      record.set_reply_body_bytes(0);
      const Hash32 body_hash = Blake2b256("");
      record.set_reply_body_hash(reinterpret_cast<const char*>(body_hash.data()),
                                 body_hash.size());
      FillSignedHeader(record.mutable_reply(), header_bytes, sig);
      record.set_replier_cert(identity_.pub.serial);
      TraceRefusal(std::move(record), label);
    }
    v1::Envelope envelope;
    envelope.set_header(std::move(header_bytes));
    *envelope.mutable_sig() = std::move(sig);
    if (absl::Status s = publisher_->Publish(reply_to, envelope.SerializeAsString()); !s.ok()) {
      CHQ_LOG_ERROR("publishing an error envelope failed: {}", MessageOf(s));
    }
  });
}

void RouterCore::RelayAfterTrace(const std::shared_ptr<Exchange>& ex, v1::Code code,
                                 std::string wire, ParsedEnvelope& reply) {
  v1::AuditRecord record = std::move(*ex->record);
  ex->record.reset();
  record.set_replied_at_ms(clock_.NowUnixMillis());
  record.set_outcome(code);
  record.set_reply_body_bytes(reply.envelope.body().size());
  record.set_reply_body_hash(reply.header.body_hash());
  MoveSignedHeader(record.mutable_reply(), reply.envelope);
  record.set_replier_cert(reply.header.sender_cert());
  const int64_t handed_ns = clock_.NowMonoNanos();
  audit::AuditClient* audit = audit_.load();
  auto done = [this, ex, code, wire = std::move(wire), handed_ns](absl::StatusOr<uint64_t> seq) {
    NoteAuditResult(seq.status());
    if (seq.ok()) {
      metrics_->audit_ack_latency().Observe(
          static_cast<double>(clock_.NowMonoNanos() - handed_ns) * 1e-9);
      if (absl::Status s = publisher_->Publish(ex->reply_to, wire); !s.ok()) {
        CHQ_LOG_ERROR("relaying a reply to {} failed: {}", ex->consumer, MessageOf(s));
      }
      metrics_->CountRequest(ex->label_consumer, ex->label_provider, ex->service, code);
      return;
    }
    const v1::Code refusal = RefusalForTrace(seq.status());
    if (absl::IsInvalidArgument(seq.status())) {
      // A router bug, not an outage: say so loudly, but the reply still stays here.
      metrics_->CountAuditLost("record");
      CHQ_LOG_ERROR("the audit service refused an exchange's record as malformed: {}",
                    MessageOf(seq.status()));
    }
    const std::string why =
        refusal == v1::REPLAYED
            ? "this request id was already traced (a duplicate seen by another router); its "
              "reply is not released"
            : "the exchange could not be traced durably, so its reply is not released; retry "
              "later with a new request";
    LogRefusal(fmt::format("{}->{}/{}: {}: {} ({})", ex->consumer, ex->provider, ex->service,
                           CodeName(refusal), why, MessageOf(seq.status())));
    SendError(ex->reply_to, ex->id, ex->consumer, ex->provider, ex->service, refusal, why);
    tally_.Count(ex->label_consumer, refusal);
    metrics_->CountRequest(ex->label_consumer, ex->label_provider, ex->service, refusal);
  };
  if (audit == nullptr) {
    done(absl::UnavailableError("the router is shutting down"));
    return;
  }
  audit->Append(std::move(record), std::move(done));
}

void RouterCore::TraceRefusal(v1::AuditRecord record, std::string label_consumer) {
  audit::AuditClient* audit = audit_.load();
  const v1::Code code = record.outcome();
  if (audit == nullptr) {
    tally_.Count(label_consumer, code);
    return;
  }
  audit->Append(std::move(record), [this, code, label = std::move(label_consumer)](
                                       absl::StatusOr<uint64_t> seq) {
    NoteAuditResult(seq.status());
    if (seq.ok()) return;
    if (absl::IsInvalidArgument(seq.status())) {
      metrics_->CountAuditLost("record");
      CHQ_LOG_ERROR("the audit service refused a refusal's record as malformed: {}",
                    MessageOf(seq.status()));
    }
    // Not stored as a record (audit away, or its key already taken, e.g. an EXPIRED resend of
    // an old exchange): it still shows in the counts.
    tally_.Count(label, code);
  });
}

bool RouterCore::AuditAdmits() {
  audit::AuditClient* audit = audit_.load();
  if (audit == nullptr) return false;
  // The bounded backlog: past it, new requests are refused rather than queued.
  if (audit->backlog() >= options_.audit_client.max_backlog) return false;
  if (audit_failing_since_ns_.load(std::memory_order_relaxed) == 0) return true;
  const int64_t now = clock_.NowMonoNanos();
  int64_t last = audit_last_probe_ns_.load();
  if (now - last < absl::ToInt64Nanoseconds(options_.audit_retry_interval)) return false;
  return audit_last_probe_ns_.compare_exchange_strong(last, now);
}

void RouterCore::NoteAuditResult(const absl::Status& status) {
  // Only Unavailable means the trace is not being stored; any answer from the service
  // (durable, duplicate, malformed) means it is there.
  if (!absl::IsUnavailable(status)) {
    const int64_t since = audit_failing_since_ns_.exchange(0);
    if (since != 0) {
      metrics_->audit_up().Set(1);
      CHQ_LOG_INFO("audit service acknowledging records again after {} ms: serving",
                   (clock_.NowMonoNanos() - since) / 1'000'000);
    }
    return;
  }
  int64_t expected = 0;
  const int64_t now = std::max<int64_t>(clock_.NowMonoNanos(), 1);
  if (audit_failing_since_ns_.compare_exchange_strong(expected, now)) {
    {
      absl::MutexLock lock(&audit_mu_);
      audit_failure_ = std::string(MessageOf(status));
    }
    audit_last_probe_ns_ = now;
    metrics_->audit_up().Set(0);
    CHQ_LOG_ERROR("audit service not acknowledging records ({}): replies are withheld and new "
                  "requests refused with AUDIT_UNAVAILABLE; one request per {} ms probes it",
                  MessageOf(status), absl::ToInt64Milliseconds(options_.audit_retry_interval));
  }
}

absl::Status RouterCore::AuditHealth() const {
  if (audit_.load() == nullptr) return absl::OkStatus();
  const int64_t since = audit_failing_since_ns_.load();
  if (since == 0) return absl::OkStatus();
  absl::MutexLock lock(&audit_mu_);
  return absl::UnavailableError(fmt::format(
      "audit service not acknowledging records for {} ms ({}): answering AUDIT_UNAVAILABLE",
      (clock_.NowMonoNanos() - since) / 1'000'000, audit_failure_));
}

void RouterCore::FlushRefusalCounts(bool force) {
  audit::AuditClient* audit = audit_.load();
  if (audit == nullptr) return;
  metrics_->audit_backlog().Set(static_cast<double>(audit->backlog()));
  std::vector<v1::RefusalCount> batch;
  const int64_t now_ns = clock_.NowMonoNanos();
  bool cut;
  {
    absl::MutexLock lock(&audit_mu_);
    cut = force ||
          now_ns - last_flush_ns_ >= absl::ToInt64Nanoseconds(options_.refusal_count_interval);
    // Counts whose sending failed are retried every tick: while the trace is down they are
    // also what finds out that it is back.
    if (!cut && unsent_counts_.empty()) return;
    if (cut) last_flush_ns_ = now_ns;
    batch.swap(unsent_counts_);
  }
  if (cut) {
    for (v1::RefusalCount& c : tally_.Cut(clock_.NowUnixMillis())) batch.push_back(std::move(c));
  }
  if (batch.empty()) return;
  {
    absl::MutexLock lock(&audit_mu_);
    counts_in_flight_ += batch.size();
  }
  for (v1::RefusalCount& c : batch) {
    v1::RefusalCount copy = c;
    audit->AppendRefusalCount(std::move(c), [this, copy = std::move(copy)](
                                                absl::StatusOr<uint64_t> seq) {
      NoteAuditResult(seq.status());
      absl::MutexLock lock(&audit_mu_);
      --counts_in_flight_;
      // Stored, or stored before and its ack lost: done either way.
      if (seq.ok() || absl::IsAlreadyExists(seq.status())) return;
      if (absl::IsInvalidArgument(seq.status()) ||
          unsent_counts_.size() >= kMaxUnsentRefusalCounts) {
        metrics_->CountAuditLost("refusal_count");
        return;
      }
      unsent_counts_.push_back(copy);
    });
  }
}

size_t RouterCore::unsent_refusal_counts() const {
  absl::MutexLock lock(&audit_mu_);
  return unsent_counts_.size() + counts_in_flight_;
}

void RouterCore::StopTracing() {
  signer_.Stop();  // completions of queued errors may still append; after this, none are queued
  audit_.store(nullptr);
}

absl::StatusOr<std::unique_ptr<Router>> Router::Start(const RouterOptions& options, Bus* bus,
                                                      Identity identity, TrustStore trust,
                                                      std::shared_ptr<prometheus::Registry> registry,
                                                      const Clock& clock) {
  return Start(options, bus, std::move(identity), FixedTrust(std::move(trust)),
               std::move(registry), clock);
}

absl::StatusOr<std::unique_ptr<Router>> Router::Start(const RouterOptions& options, Bus* bus,
                                                      Identity identity,
                                                      std::shared_ptr<TrustSource> trust,
                                                      std::shared_ptr<prometheus::Registry> registry,
                                                      const Clock& clock) {
  CHASQUI_RETURN_IF_ERROR(ValidateEnv(options.env));
  if (trust == nullptr) return absl::InvalidArgumentError("the router needs a trust source");
  if (trust->env() != options.env) {
    return absl::InvalidArgumentError(fmt::format(
        "the trust source is for environment {}; this router serves {}", trust->env(),
        options.env));
  }
  if (options.max_pending_fetches == 0) {
    return absl::InvalidArgumentError("max_pending_fetches must be at least 1");
  }
  CHASQUI_RETURN_IF_ERROR(ValidateName("router id", options.router_id));
  if (identity.pub.role != Role::kRouter || identity.pub.env != options.env) {
    return absl::InvalidArgumentError(fmt::format(
        "the router's key is a {} key for {}; expected a router key for {}",
        RoleName(identity.pub.role), identity.pub.env, options.env));
  }
  if (options.freshness_window_ms <= 0) {
    return absl::InvalidArgumentError("freshness window must be positive");
  }
  if (!(options.preauth_refusals.per_second > 0) || !(options.preauth_refusals.burst >= 1)) {
    return absl::InvalidArgumentError(fmt::format(
        "pre-authentication refusal limit must be positive with a burst of at least 1 (got "
        "{}/s, burst {})",
        options.preauth_refusals.per_second, options.preauth_refusals.burst));
  }
  std::unique_ptr<Router> router(new Router());
  router->options_ = options;
  router->bus_ = bus;
  router->registry_ = std::move(registry);
  router->metrics_ = std::make_unique<RouterMetrics>(*router->registry_, options.env);
  CHASQUI_ASSIGN_OR_RETURN(router->mux_,
                           RequestMux::Create(bus, RouterInboxPrefix(options.env,
                                                                        options.router_id)));
  if (options.audit) {
    CHASQUI_ASSIGN_OR_RETURN(
        router->audit_mux_,
        RequestMux::Create(bus, RouterInboxPrefix(options.env, options.router_id) + ".audit"));
    router->audit_ = audit::AuditClient::Create(router->audit_mux_.get(), options.audit_client);
    CHQ_LOG_INFO("router {}: tracing every exchange on {} (backlog {} records, ack timeout {}); "
                 "replies are relayed only once their record is durable",
                 options.router_id, options.audit_client.subject,
                 options.audit_client.max_backlog,
                 absl::FormatDuration(options.audit_client.timeout));
  } else {
    CHQ_LOG_WARN("router {}: tracing is OFF (--audit=false): exchanges are relayed untraced; "
                 "for benchmarks and tests only",
                 options.router_id);
  }
  router->core_ = std::make_unique<RouterCore>(options, bus, router->mux_.get(),
                                               std::move(identity), std::move(trust),
                                               router->metrics_.get(), clock,
                                               router->audit_.get());
  const int64_t hold_ms =
      options.startup_hold_ms >= 0 ? options.startup_hold_ms : 2 * options.freshness_window_ms;
  CHQ_LOG_INFO("router {} env={} unready for {} ms (freshness window {} ms plus skew), then "
               "serving chq.{}.req.> in queue group {}",
               options.router_id, options.env, hold_ms, options.freshness_window_ms, options.env,
               options.queue_group);
  Router* raw = router.get();
  router->hold_thread_ = std::thread([raw, hold_ms] { raw->HoldThenSubscribe(hold_ms); });
  return router;
}

void Router::HoldThenSubscribe(int64_t hold_ms) {
  if (stop_.WaitForNotificationWithTimeout(absl::Milliseconds(hold_ms))) return;
  auto sub = bus_->QueueSubscribe(fmt::format("chq.{}.req.>", options_.env), options_.queue_group,
                                  [this](const BusMessage& msg) { core_->HandleRequest(msg); });
  if (!sub.ok()) {
    subscribe_failed_ = true;
    CHQ_LOG_ERROR("router cannot subscribe: {}", MessageOf(sub.status()));
    return;
  }
  subscription_ = *std::move(sub);
  // Ready only once the server knows the subscription, so no request finds nobody.
  if (absl::Status s = bus_->Flush(absl::Seconds(5)); !s.ok()) {
    CHQ_LOG_WARN("router: flushing the subscription: {}", MessageOf(s));
  }
  serving_ = true;
  metrics_->ready().Set(1);
  CHQ_LOG_INFO("router {} ready: serving chq.{}.req.>", options_.router_id, options_.env);
  int64_t late_seen = 0;
  int64_t reconnects_seen = 0;
  do {
    const int64_t reconnects = bus_->Reconnects();
    metrics_->nats_reconnects().Increment(static_cast<double>(reconnects - reconnects_seen));
    reconnects_seen = reconnects;
    const int64_t late = mux_->LateReplies();
    metrics_->late_replies().Increment(static_cast<double>(late - late_seen));
    late_seen = late;
    core_->FlushRefusalCounts(/*force=*/false);
  } while (!stop_.WaitForNotificationWithTimeout(absl::Seconds(1)));
}

absl::Status Router::Ready() const {
  if (subscribe_failed_) return absl::UnavailableError("subscribing to requests failed");
  if (!serving_) return absl::UnavailableError("startup hold: waiting out the freshness window");
  if (!bus_->Connected()) return absl::UnavailableError("not connected to NATS");
  CHASQUI_RETURN_IF_ERROR(core_->TrustHealth());
  return core_->AuditHealth();
}

absl::Status Router::Drain(absl::Duration timeout) {
  stop_.Notify();
  if (hold_thread_.joinable()) hold_thread_.join();
  serving_ = false;
  metrics_->ready().Set(0);
  absl::Status drained;
  if (subscription_) drained = subscription_->Drain(timeout);
  if (audit_ != nullptr) {
    // What was counted until now goes to the trail; give the acks a moment.
    core_->FlushRefusalCounts(/*force=*/true);
    const absl::Time deadline = absl::Now() + absl::Seconds(2);
    while ((audit_->backlog() > 0 || core_->unsent_refusal_counts() > 0) &&
           absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    if (const size_t left = core_->unsent_refusal_counts(); left > 0) {
      CHQ_LOG_WARN("router {}: {} refusal counts not acknowledged by the audit service at "
                   "shutdown",
                   options_.router_id, left);
    }
  }
  return drained;
}

Router::~Router() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (hold_thread_.joinable()) hold_thread_.join();
  subscription_.reset();  // no new requests reach the core
  // The fetch worker forwards through the mux: it stops first (what it still holds is refused).
  if (core_ != nullptr) core_->StopFetching();
  mux_.reset();           // answers what is pending with kClosed, through the core
  // The core outlives the audit client and its mux: their last answers run through it.
  if (core_ != nullptr) core_->StopTracing();
  audit_.reset();         // answers queued records Unavailable (their replies stay here)
  audit_mux_.reset();     // answers the batches in flight with kClosed
}

}  // namespace chasqui
