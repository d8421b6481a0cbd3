#include "services/router/router.h"

#include <utility>

#include "common/core/log.h"
#include "common/core/names.h"
#include "common/core/status.h"
#include "common/envelope/errors.h"
#include "common/envelope/subjects.h"
#include "fmt/format.h"

namespace chasqui {
namespace {
constexpr int kRefusalLogLinesPerSecond = 20;
constexpr std::string_view kUnknown = "unknown";
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
};

RouterCore::RouterCore(const RouterOptions& options, Publisher* publisher, RequestMux* mux,
                       Identity identity, TrustStore trust, RouterMetrics* metrics,
                       const Clock& clock)
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
      signer_(identity_.sign, EnvelopeTag(options.env)) {}

std::string_view RouterCore::KnownEntityOr(std::string_view name) const {
  return trust_.Find(name, Role::kEntity) != nullptr ? name : kUnknown;
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
  const auto subject = ParseRequestSubject(msg.subject);
  if (!subject || subject->env != options_.env) {
    metrics_->CountDropped("bad_subject");
    LogRefusal(fmt::format("subject \"{}\": not chq.{}.req.<consumer>.<provider>.<service>; "
                           "dropped",
                           Printable(msg.subject), options_.env));
    return;
  }
  // Never publish to a reply subject outside the consumer's own inbox: nats-server 2.9 does not
  // check reply subjects, so answering one would let a sender aim the router at anybody.
  if (!IsReplySubjectUnder(msg.reply, EntityInboxPrefix(options_.env, subject->consumer))) {
    metrics_->CountDropped("reply_subject");
    LogRefusal(fmt::format("request on {}: reply subject \"{}\" is outside _INBOX.{}.{}.; "
                           "dropped unanswered",
                           msg.subject, Printable(msg.reply), options_.env, subject->consumer));
    return;
  }
  if (preauth_limiter_.Blocked(subject->consumer)) {
    metrics_->CountDropped("preauth_flood");
    LogRefusal(fmt::format("request on {}: consumer {} is over its limit of {}/s refusals "
                           "before authentication; dropped unchecked until it slows down",
                           msg.subject, subject->consumer,
                           options_.preauth_refusals.per_second));
    return;
  }
  const std::string reply_to(msg.reply);
  const std::string_view label_consumer = KnownEntityOr(subject->consumer);
  bool authenticated = false;
  auto refuse = [&](const absl::Status& why, const std::string& in_reply_to,
                    std::string_view label_provider) {
    if (!authenticated) preauth_limiter_.Charge(subject->consumer);
    Refuse(msg, reply_to, in_reply_to, subject->consumer, subject->provider, subject->service,
           label_consumer, label_provider, authenticated ? subject->service : kUnknown, why);
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
  const std::string_view label_provider = KnownEntityOr(subject->provider);
  const PublicIdentity* signer = trust_.BySerial(h.sender_cert());
  if (signer == nullptr) {
    refuse(ChasquiError(v1::UNAUTHENTICATED,
                        fmt::format("sender_cert {} is not a known key in {}", h.sender_cert(),
                                    options_.env)),
           id, label_provider);
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
  const PublicIdentity* recipient = trust_.BySerial(h.recipient_cert());
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

  auto ex = std::make_shared<Exchange>();
  ex->reply_to = reply_to;
  ex->id = id;
  ex->consumer = h.consumer();
  ex->provider = h.provider();
  ex->service = h.service();
  ex->label_consumer = label_consumer;
  ex->label_provider = label_provider;
  metrics_->in_flight().Increment();
  ex->router_ns = clock_.NowMonoNanos() - start_ns;
  absl::Status sent = mux_->Request(
      ServiceSubjectFor(options_.env, h.provider(), h.service()), msg.data,
      options_.provider_timeout,
      [this, ex](MuxOutcome outcome, const BusMessage* reply) { OnProviderAnswer(ex, outcome, reply); });
  if (!sent.ok()) {
    metrics_->in_flight().Decrement();
    SendError(reply_to, id, h.consumer(), h.provider(), h.service(), v1::UNAVAILABLE,
              "the router could not forward the request; retry");
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
          parsed.ok() ? trust_.BySerial(parsed->header.sender_cert()) : nullptr;
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
      if (absl::Status s = publisher_->Publish(ex->reply_to, reply->data); !s.ok()) {
        CHQ_LOG_ERROR("relaying a reply to {} failed: {}", ex->consumer, MessageOf(s));
      }
      break;
    }
  }
  if (!problem.empty()) {
    LogRefusal(fmt::format("{}->{}/{}: {}: {}", ex->consumer, ex->provider, ex->service,
                           CodeName(code), problem));
    SendError(ex->reply_to, ex->id, ex->consumer, ex->provider, ex->service, code, problem);
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
                        std::string_view label_service, const absl::Status& why) {
  const v1::Code code = ChasquiCode(why);
  metrics_->CountRequest(label_consumer, label_provider, label_service, code);
  LogRefusal(fmt::format("{} on {}: {}", CodeName(code), msg.subject, MessageOf(why)));
  SendError(reply_to, in_reply_to, consumer, provider, service, code, MessageOf(why));
}

void RouterCore::SendError(const std::string& reply_to, const std::string& in_reply_to,
                           std::string_view consumer, std::string_view provider,
                           std::string_view service, v1::Code code, std::string_view message) {
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
  SignEnvelope(signer_, std::move(h), std::string(), [this, reply_to](std::string wire) {
    if (absl::Status s = publisher_->Publish(reply_to, wire); !s.ok()) {
      CHQ_LOG_ERROR("publishing an error envelope failed: {}", MessageOf(s));
    }
  });
}

absl::StatusOr<std::unique_ptr<Router>> Router::Start(const RouterOptions& options, Bus* bus,
                                                      Identity identity, TrustStore trust,
                                                      std::shared_ptr<prometheus::Registry> registry,
                                                      const Clock& clock) {
  CHASQUI_RETURN_IF_ERROR(ValidateEnv(options.env));
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
  router->core_ = std::make_unique<RouterCore>(options, bus, router->mux_.get(),
                                               std::move(identity), std::move(trust),
                                               router->metrics_.get(), clock);
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
  do {
    metrics_->nats_reconnects().Set(static_cast<double>(bus_->Reconnects()));
    const int64_t late = mux_->LateReplies();
    metrics_->late_replies().Increment(static_cast<double>(late - late_seen));
    late_seen = late;
  } while (!stop_.WaitForNotificationWithTimeout(absl::Seconds(1)));
}

absl::Status Router::Ready() const {
  if (subscribe_failed_) return absl::UnavailableError("subscribing to requests failed");
  if (!serving_) return absl::UnavailableError("startup hold: waiting out the freshness window");
  if (!bus_->Connected()) return absl::UnavailableError("not connected to NATS");
  return absl::OkStatus();
}

absl::Status Router::Drain(absl::Duration timeout) {
  stop_.Notify();
  if (hold_thread_.joinable()) hold_thread_.join();
  serving_ = false;
  metrics_->ready().Set(0);
  if (subscription_) return subscription_->Drain(timeout);
  return absl::OkStatus();
}

Router::~Router() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (hold_thread_.joinable()) hold_thread_.join();
  subscription_.reset();  // no new requests reach the core
  mux_.reset();           // answers what is pending with kClosed, through the core
}

}  // namespace chasqui
