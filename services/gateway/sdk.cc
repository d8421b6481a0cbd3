#include "services/gateway/sdk.h"

#include <deque>
#include <future>
#include <thread>
#include <utility>

#include "common/core/burst.h"
#include "common/core/log.h"
#include "common/core/names.h"
#include "common/core/status.h"
#include "common/envelope/envelope.h"
#include "common/envelope/errors.h"
#include "common/envelope/subjects.h"
#include "fmt/format.h"

namespace chasqui {
namespace {

absl::Status CheckOwnIdentity(const Identity& identity, const TrustSource* trust) {
  if (trust == nullptr) return absl::InvalidArgumentError("the SDK needs a trust source");
  if (identity.pub.role != Role::kEntity) {
    return absl::InvalidArgumentError(fmt::format(
        "the SDK needs an entity (gateway) key, not a {} key", RoleName(identity.pub.role)));
  }
  if (identity.pub.env != trust->env()) {
    return absl::InvalidArgumentError(fmt::format(
        "the key is for environment {} but the trust store is for {}", identity.pub.env,
        trust->env()));
  }
  return absl::OkStatus();
}

CallResult Failed(v1::Code code, std::string_view message, const std::string& id) {
  return CallResult{ChasquiError(code, message), "", ToHex(id), 0};
}

}  // namespace

Consumer::Consumer(Bus* bus, Identity identity, std::shared_ptr<TrustSource> trust,
                   ConsumerOptions options, const Clock& clock)
    : bus_(bus),
      identity_(std::move(identity)),
      trust_(std::move(trust)),
      env_(trust_->env()),
      options_(options),
      clock_(clock),
      client_id_(ToHex(RandomString(8))),
      root_cache_(clock, options.freshness_window_ms),
      verifier_(env_, &root_cache_),
      session_keys_(identity_.kx, SessionKeyCache::Side::kClient),
      signer_(identity_.sign, EnvelopeTag(env_)) {}

absl::StatusOr<std::unique_ptr<Consumer>> Consumer::Create(Bus* bus, Identity identity,
                                                           TrustStore trust,
                                                           ConsumerOptions options,
                                                           const Clock& clock) {
  return Create(bus, std::move(identity), FixedTrust(std::move(trust)), options, clock);
}

absl::StatusOr<std::unique_ptr<Consumer>> Consumer::Create(Bus* bus, Identity identity,
                                                           std::shared_ptr<TrustSource> trust,
                                                           ConsumerOptions options,
                                                           const Clock& clock) {
  CHASQUI_RETURN_IF_ERROR(CheckOwnIdentity(identity, trust.get()));
  std::unique_ptr<Consumer> c(
      new Consumer(bus, std::move(identity), std::move(trust), options, clock));
  CHASQUI_ASSIGN_OR_RETURN(
      c->mux_, RequestMux::Create(bus, fmt::format("{}.{}",
                                                   EntityInboxPrefix(c->env_,
                                                                     c->identity_.pub.entity),
                                                   c->client_id_)));
  CHQ_LOG_INFO("consumer {} env={} ready (key serial {})", c->identity_.pub.entity, c->env_,
               c->identity_.pub.serial);
  return c;
}

Consumer::~Consumer() {
  closing_ = true;  // a callback that retries during shutdown gets UNAVAILABLE, not the mux
  signer_.Stop();   // sends what is signed while the mux can still take it
  mux_.reset();     // answers what is pending with kClosed
}

void Consumer::CallAsync(std::string_view provider, std::string_view service,
                         std::string_view body, const CallOptions& options,
                         std::function<void(CallResult)> done) {
  const std::string id = NewEnvelopeId();
  if (closing_) {
    done(Failed(v1::UNAVAILABLE, "the consumer is shutting down", id));
    return;
  }
  if (!IsValidName(provider) || !IsValidName(service)) {
    done(Failed(v1::BAD_REQUEST,
                fmt::format("provider \"{}\" and service \"{}\" must be valid names",
                            Printable(provider), Printable(service)),
                id));
    return;
  }
  if (options.end_user.empty()) {
    done(Failed(v1::BAD_REQUEST,
                "end_user is mandatory: name the official on whose behalf the query runs", id));
    return;
  }
  if (!options.idempotency_key.empty()) {
    if (absl::Status s = ValidateIdempotencyKey(options.idempotency_key); !s.ok()) {
      done(Failed(v1::BAD_REQUEST, MessageOf(s), id));
      return;
    }
  }
  auto snapshot = trust_->Current();
  if (!snapshot.ok()) {
    done(Failed(v1::UNAVAILABLE, MessageOf(snapshot.status()), id));
    return;
  }
  std::shared_ptr<const TrustStore> trust = *std::move(snapshot);
  const PublicIdentity* peer = trust->Find(provider, Role::kEntity);
  if (peer == nullptr) {
    auto fetched = trust_->FetchEntity(provider);
    if (!fetched.ok()) {
      done(Failed(absl::IsUnavailable(fetched.status()) ? v1::UNAVAILABLE : v1::NOT_FOUND,
                  MessageOf(fetched.status()), id));
      return;
    }
    trust = *std::move(fetched);
    peer = trust->Find(provider, Role::kEntity);
  }
  if (peer == nullptr) {
    done(Failed(v1::NOT_FOUND,
                fmt::format("provider {} has no key in {}'s trust file or directory", provider,
                            env_),
                id));
    return;
  }
  auto keys = session_keys_.For(peer->kx_pk);
  if (!keys.ok()) {
    done(Failed(v1::BAD_REQUEST, MessageOf(keys.status()), id));
    return;
  }
  v1::Header h;
  h.set_protocol_version(kProtocolVersion);
  h.set_id(id);
  h.set_env(env_);
  h.set_kind(v1::KIND_REQUEST);
  h.set_consumer(identity_.pub.entity);
  h.set_provider(std::string(provider));
  h.set_service(std::string(service));
  h.set_service_version(options.service_version);
  h.set_end_user(options.end_user);
  h.set_purpose(options.purpose);
  h.set_annex_id(options.annex_id);
  h.set_consent_ref(options.consent_ref);
  h.set_idempotency_key(options.idempotency_key);
  h.set_sent_at_ms(clock_.NowUnixMillis());
  h.set_sender_cert(identity_.pub.serial);
  h.set_recipient_cert(peer->serial);
  std::string sealed = SealBody(h, (*keys)->tx, nonces_, body);
  std::string subject = RequestSubjectFor(env_, identity_.pub.entity, provider, service);
  auto shared_keys = *std::move(keys);
  // `trust` keeps `peer` alive until the answer is handled, whatever is swapped in meanwhile.
  SignEnvelope(
      signer_, std::move(h), std::move(sealed),
      [this, id, trust, peer, shared_keys, subject = std::move(subject),
       timeout = options.timeout, service = std::string(service),
       done = std::move(done)](std::string wire) mutable {
        auto shared_done = std::make_shared<std::function<void(CallResult)>>(std::move(done));
        absl::Status sent = mux_->Request(
            subject, wire, timeout,
            [this, id, trust, peer, service, shared_keys, shared_done](
                MuxOutcome outcome, const BusMessage* reply) {
              (*shared_done)(
                  OnAnswer(id, *trust, *peer, service, *shared_keys, outcome, reply));
            });
        if (!sent.ok()) {
          (*shared_done)(Failed(v1::UNAVAILABLE,
                                fmt::format("cannot send the request: {}", MessageOf(sent)), id));
        }
      });
}

CallResult Consumer::OnAnswer(const std::string& id, const TrustStore& trust,
                              const PublicIdentity& provider, const std::string& service,
                              const SessionKeys& keys, MuxOutcome outcome,
                              const BusMessage* reply) {
  switch (outcome) {
    case MuxOutcome::kTimeout:
      return Failed(v1::TIMEOUT, "no answer from the platform within the call's timeout", id);
    case MuxOutcome::kNoResponders:
      return Failed(v1::UNAVAILABLE,
                    fmt::format("no router serves {} right now (is the backbone running?)",
                                env_),
                    id);
    case MuxOutcome::kClosed:
      return Failed(v1::UNAVAILABLE, "the consumer is shutting down", id);
    case MuxOutcome::kReply:
      break;
  }
  auto parsed = ParseEnvelope(reply->data);
  if (!parsed.ok()) {
    return Failed(v1::PROVIDER_ERROR,
                  fmt::format("the answer is not a valid envelope: {}", MessageOf(parsed.status())),
                  id);
  }
  const v1::Header& h = parsed->header;
  const PublicIdentity* signer = trust.BySerial(h.sender_cert());
  std::shared_ptr<const TrustStore> fetched;  // keeps `signer` alive when it came from a fetch
  if (signer == nullptr) {
    // A router this process has not heard from yet (its certificate is fetched on demand).
    auto f = trust_->FetchSerial(h.sender_cert());
    if (f.ok()) {
      fetched = *std::move(f);
      signer = fetched->BySerial(h.sender_cert());
    }
  }
  const bool from_router = signer != nullptr && signer->role == Role::kRouter;
  // Any key of the provider's entity: during a rotation's overlap its gateway may answer with
  // another key than the one this request was sealed for (the seal says whom it is for).
  const bool from_provider = signer != nullptr && signer->role == Role::kEntity &&
                             signer->entity == provider.entity;
  // A router may answer a request it could not even parse: then in_reply_to is empty.
  const bool answers_us =
      h.in_reply_to() == id || (from_router && h.kind() == v1::KIND_ERROR && h.in_reply_to().empty());
  if (!(from_router && h.kind() == v1::KIND_ERROR) && !from_provider) {
    return Failed(v1::PROVIDER_ERROR, "the answer is signed by neither a router nor the provider",
                  id);
  }
  if (!answers_us || h.env() != env_ || h.consumer() != identity_.pub.entity ||
      h.kind() == v1::KIND_REQUEST ||
      (from_provider && (h.provider() != provider.entity || h.service() != service))) {
    return Failed(v1::PROVIDER_ERROR, "the answer is not addressed to this request", id);
  }
  if (absl::Status s = verifier_.Verify(*parsed, *signer); !s.ok()) {
    return Failed(v1::PROVIDER_ERROR,
                  fmt::format("the answer does not verify: {}", MessageOf(s)), id);
  }
  if ((h.kind() == v1::KIND_REPLY || h.sealed()) && h.recipient_cert() != identity_.pub.serial) {
    return Failed(v1::PROVIDER_ERROR, "the answer is sealed for another key", id);
  }
  if (h.kind() == v1::KIND_ERROR) {
    std::string message = h.error().message();
    if (from_provider && h.sealed()) {
      // The provider's own words may name a person: they travel sealed, for us only.
      auto detail = OpenBody(h, keys.rx, parsed->envelope.body());
      message = detail.ok() ? *std::move(detail) : "the provider's error detail does not open";
    }
    CallResult r = Failed(h.error().code(), message, id);
    r.retry_after_ms = h.error().retry_after_ms();
    return r;
  }
  auto opened = OpenBody(h, keys.rx, parsed->envelope.body());
  if (!opened.ok()) {
    return Failed(v1::PROVIDER_ERROR,
                  fmt::format("the reply does not open: {}", MessageOf(opened.status())), id);
  }
  return CallResult{absl::OkStatus(), *std::move(opened), ToHex(id), 0};
}

CallResult Consumer::Call(std::string_view provider, std::string_view service,
                          std::string_view body, const CallOptions& options) {
  std::promise<CallResult> promise;
  std::future<CallResult> future = promise.get_future();
  CallAsync(provider, service, body, options,
            [&promise](CallResult r) { promise.set_value(std::move(r)); });
  // Inside a NATS handler the request would be held until this burst ends, which cannot
  // happen while this thread waits: send it now.
  EndBurstNow();
  return future.get();
}

namespace {

// A bounded pool of worker threads for one served service. TryPush never blocks: the NATS
// delivery thread hands work over or learns at once that there is no room.
class WorkerPool {
 public:
  enum Fate : int { kRun, kStale, kStopping };
  using Task = std::function<void(Fate)>;

  WorkerPool(int workers, size_t capacity, absl::Duration max_wait, const Clock& clock)
      : capacity_(capacity), max_wait_ns_(absl::ToInt64Nanoseconds(max_wait)), clock_(clock) {
    threads_.reserve(workers);
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { Work(); });
  }
  ~WorkerPool() { Stop(); }

  // False if every worker is busy and `capacity` tasks already wait, or after Stop().
  bool TryPush(Task task) {
    absl::MutexLock lock(&mu_);
    if (stopping_ || queue_.size() >= capacity_ + idle_) return false;
    queue_.push_back(Item{clock_.NowMonoNanos(), std::move(task)});
    return true;
  }

  // Tasks still waiting run with kStopping; the running ones finish; the threads are joined.
  // Idempotent.
  void Stop() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    for (std::thread& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

  int workers() const { return static_cast<int>(threads_.size()); }
  size_t capacity() const { return capacity_; }

 private:
  struct Item {
    int64_t enqueued_ns;
    Task task;
  };

  void Work() {
    for (;;) {
      Item item;
      Fate fate;
      {
        absl::MutexLock lock(&mu_);
        ++idle_;
        mu_.Await(absl::Condition(
            +[](WorkerPool* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) {
              return p->stopping_ || !p->queue_.empty();
            },
            this));
        --idle_;
        if (queue_.empty()) return;  // stopping, nothing left
        item = std::move(queue_.front());
        queue_.pop_front();
        if (stopping_) {
          fate = kStopping;
        } else if (clock_.NowMonoNanos() - item.enqueued_ns > max_wait_ns_) {
          fate = kStale;
        } else {
          fate = kRun;
        }
      }
      item.task(fate);
    }
  }

  const size_t capacity_;
  const int64_t max_wait_ns_;
  const Clock& clock_;
  absl::Mutex mu_;
  std::deque<Item> queue_ ABSL_GUARDED_BY(mu_);
  size_t idle_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace

struct Provider::Key {
  Key(Identity id, const std::string& env)
      : identity(std::move(id)),
        session_keys(identity.kx, SessionKeyCache::Side::kServer),
        signer(identity.sign, EnvelopeTag(env)) {}
  const Identity identity;
  SessionKeyCache session_keys;
  BatchSigner signer;
};

struct Provider::ServedHandler {
  std::string service;
  Handler handler;
  std::unique_ptr<WorkerPool> pool;  // null: the handler runs on the delivery thread
};

struct Provider::Job {
  v1::Header request;
  std::shared_ptr<Key> own_key;  // the provider's key the request was sealed for
  std::shared_ptr<const SessionKeys> keys;
  std::string reply_to;
  RequestContext context;
  std::string body;
  bool remember = false;  // begun in the idempotency store: Finish or Abandon it
  IdempotencyKey key;
};

Provider::Provider(Bus* bus, std::string entity, std::shared_ptr<TrustSource> trust,
                   ProviderOptions options, const Clock& clock)
    : bus_(bus),
      entity_(std::move(entity)),
      trust_(std::move(trust)),
      env_(trust_->env()),
      clock_(clock),
      options_(std::move(options)),
      root_cache_(clock, options_.freshness_window_ms),
      verifier_(env_, &root_cache_),
      replay_(clock, options_.freshness_window_ms),
      idempotency_(NewMemoryIdempotencyStore(options_.idempotency, clock)),
      keys_(std::make_shared<const KeySet>()) {}

namespace {

std::string SerialList(const std::vector<uint64_t>& serials) {
  return fmt::format("{}", fmt::join(serials, ", "));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Provider>> Provider::Create(Bus* bus, Identity identity,
                                                           TrustStore trust,
                                                           ProviderOptions options,
                                                           const Clock& clock) {
  return Create(bus, std::move(identity), FixedTrust(std::move(trust)), std::move(options),
                clock);
}

absl::StatusOr<std::unique_ptr<Provider>> Provider::Create(Bus* bus, Identity identity,
                                                           std::shared_ptr<TrustSource> trust,
                                                           ProviderOptions options,
                                                           const Clock& clock) {
  std::vector<Identity> identities;
  identities.push_back(std::move(identity));
  return Create(bus, std::move(identities), std::move(trust), std::move(options), clock);
}

absl::StatusOr<std::unique_ptr<Provider>> Provider::Create(Bus* bus,
                                                           std::vector<Identity> identities,
                                                           std::shared_ptr<TrustSource> trust,
                                                           ProviderOptions options,
                                                           const Clock& clock) {
  if (identities.empty()) {
    return absl::InvalidArgumentError("a provider needs at least one key of its entity");
  }
  CHASQUI_RETURN_IF_ERROR(CheckOwnIdentity(identities.front(), trust.get()));
  if (options.workers < 0 || options.workers > 1024) {
    return absl::InvalidArgumentError(
        fmt::format("provider workers {}: expected 0 (on the delivery thread) to 1024",
                    options.workers));
  }
  std::unique_ptr<Provider> p(new Provider(bus, identities.front().pub.entity,
                                           std::move(trust), std::move(options), clock));
  KeySet keys;
  for (Identity& identity : identities) {
    CHASQUI_RETURN_IF_ERROR(p->CheckNewKey(identity, keys));
    keys.push_back(std::make_shared<Key>(std::move(identity), p->env_));
  }
  {
    absl::MutexLock lock(&p->keys_mu_);
    p->keys_ = std::make_shared<const KeySet>(std::move(keys));
  }
  CHQ_LOG_INFO("provider {} env={} ready with key serials [{}] (answers signed with the key each "
               "request is sealed for)",
               p->entity_, p->env_, SerialList(p->serials()));
  return p;
}

Provider::~Provider() {
  std::vector<std::unique_ptr<Subscription>> subs;
  std::vector<std::unique_ptr<ServedHandler>> served;
  {
    absl::MutexLock lock(&mu_);
    subs.swap(subscriptions_);
    served.swap(served_);
  }
  subs.clear();  // no new requests
  // Waiting requests are answered UNAVAILABLE, running ones finish and answer.
  for (auto& s : served) {
    if (s->pool) s->pool->Stop();
  }
  for (const auto& key : *Keys()) key->signer.Stop();
}

absl::Status Provider::CheckNewKey(const Identity& identity, const KeySet& held) const {
  CHASQUI_RETURN_IF_ERROR(CheckOwnIdentity(identity, trust_.get()));
  if (identity.pub.entity != entity_) {
    return absl::InvalidArgumentError(
        fmt::format("key serial {} is {}'s; this provider serves {}", identity.pub.serial,
                    identity.pub.entity, entity_));
  }
  for (const auto& key : held) {
    if (key->identity.pub.serial == identity.pub.serial) {
      return absl::AlreadyExistsError(fmt::format(
          "provider {} already holds key serial {}", entity_, identity.pub.serial));
    }
  }
  return absl::OkStatus();
}

absl::Status Provider::AddIdentity(Identity identity) {
  std::vector<uint64_t> now_held;
  const uint64_t serial = identity.pub.serial;
  {
    absl::MutexLock lock(&keys_mu_);
    CHASQUI_RETURN_IF_ERROR(CheckNewKey(identity, *keys_));
    auto keys = std::make_shared<KeySet>(*keys_);
    keys->push_back(std::make_shared<Key>(std::move(identity), env_));
    keys_ = std::move(keys);
    for (const auto& key : *keys_) now_held.push_back(key->identity.pub.serial);
  }
  CHQ_LOG_INFO("provider {} added key serial {}; serving key serials [{}]", entity_, serial,
               SerialList(now_held));
  return absl::OkStatus();
}

absl::Status Provider::RetireIdentity(uint64_t serial) {
  std::shared_ptr<Key> retired;  // destroyed (its signer stopped) outside the lock
  std::vector<uint64_t> now_held;
  {
    absl::MutexLock lock(&keys_mu_);
    auto keys = std::make_shared<KeySet>();
    for (const auto& key : *keys_) {
      if (key->identity.pub.serial == serial) {
        retired = key;
      } else {
        keys->push_back(key);
        now_held.push_back(key->identity.pub.serial);
      }
    }
    if (retired == nullptr) {
      return absl::NotFoundError(fmt::format("provider {} holds no key serial {} (it holds [{}])",
                                             entity_, serial, SerialList(now_held)));
    }
    if (keys->empty()) {
      return absl::FailedPreconditionError(fmt::format(
          "key serial {} is the only key provider {} holds: add its successor first", serial,
          entity_));
    }
    keys_ = std::move(keys);
  }
  CHQ_LOG_INFO("provider {} retired key serial {}; serving key serials [{}]", entity_, serial,
               SerialList(now_held));
  // Counted now: later answers to requests opened with it are few and not worth the bookkeeping.
  retired_batches_ += retired->signer.batches();
  retired_headers_ += retired->signer.signed_headers();
  return absl::OkStatus();
}

std::vector<uint64_t> Provider::serials() const {
  std::vector<uint64_t> out;
  for (const auto& key : *Keys()) out.push_back(key->identity.pub.serial);
  return out;
}

uint64_t Provider::batches() const {
  uint64_t n = retired_batches_.load();
  for (const auto& key : *Keys()) n += key->signer.batches();
  return n;
}

uint64_t Provider::signed_headers() const {
  uint64_t n = retired_headers_.load();
  for (const auto& key : *Keys()) n += key->signer.signed_headers();
  return n;
}

std::shared_ptr<const Provider::KeySet> Provider::Keys() const {
  absl::MutexLock lock(&keys_mu_);
  return keys_;
}

std::shared_ptr<Provider::Key> Provider::KeyFor(uint64_t serial,
                                                std::shared_ptr<Key>* newest) const {
  std::shared_ptr<const KeySet> keys = Keys();
  for (const auto& key : *keys) {
    if (key->identity.pub.serial == serial) return key;
  }
  if (newest != nullptr) *newest = keys->back();
  return nullptr;
}

absl::Status Provider::Serve(std::string_view service, Handler handler) {
  CHASQUI_RETURN_IF_ERROR(ValidateName("service", service));
  const std::string subject = ServiceSubjectFor(env_, entity_, service);
  auto served = std::make_unique<ServedHandler>();
  served->service = std::string(service);
  served->handler = std::move(handler);
  if (options_.workers > 0) {
    served->pool = std::make_unique<WorkerPool>(options_.workers, options_.queue_capacity,
                                                options_.max_queue_wait, clock_);
  }
  ServedHandler* s = served.get();
  CHASQUI_ASSIGN_OR_RETURN(
      auto sub,
      bus_->QueueSubscribe(subject, fmt::format("chq.svc.{}.{}", entity_, service),
                           [this, s](const BusMessage& msg) { HandleRequest(*s, msg); }));
  absl::MutexLock lock(&mu_);
  served_.push_back(std::move(served));
  subscriptions_.push_back(std::move(sub));
  if (options_.workers > 0) {
    CHQ_LOG_INFO("provider {} serving {} on {} ({} workers, {} may wait)", entity_,
                 service, subject, options_.workers, options_.queue_capacity);
  } else {
    CHQ_LOG_INFO("provider {} serving {} on {}", entity_, service, subject);
  }
  return absl::OkStatus();
}

void Provider::HandleRequest(ServedHandler& served, const BusMessage& msg) {
  const std::string& service = served.service;
  // Only a router of this env may ask (its inbox is _INBOX._router.<env>.<id>); anything else
  // is not answered.
  if (!IsReplySubjectUnder(msg.reply, "_INBOX._router." + env_)) {
    ++refused_;
    CHQ_LOG_WARN("request on {} with reply subject \"{}\" not from a router; dropped",
                 msg.subject, Printable(msg.reply));
    return;
  }
  const std::string reply_to(msg.reply);
  auto parsed = ParseEnvelope(msg.data);
  // A refusal is signed with the key the request was sealed for when it is held, else with the
  // newest.
  auto refuse = [&](const v1::Header& request, const absl::Status& why) {
    ++refused_;
    CHQ_LOG_WARN("refused {} on {}: {}", CodeName(ChasquiCode(why)), msg.subject, MessageOf(why));
    std::shared_ptr<Key> newest;
    std::shared_ptr<Key> key = KeyFor(request.recipient_cert(), &newest);
    if (key == nullptr) key = std::move(newest);
    Send(*key, reply_to, ErrorHeader(*key, request, ChasquiCode(why), MessageOf(why)), "");
  };
  if (!parsed.ok()) {
    v1::Header unknown;
    unknown.set_consumer("unknown");
    unknown.set_provider(entity_);
    unknown.set_service(service);
    refuse(unknown, parsed.status());
    return;
  }
  const v1::Header& h = parsed->header;
  if (h.kind() != v1::KIND_REQUEST || h.env() != env_ ||
      h.provider() != entity_ || h.service() != service) {
    refuse(h, ChasquiError(v1::BAD_REQUEST,
                           fmt::format("envelope is a {} for {}/{} in {}; this gateway serves {}/{} "
                                       "in {}",
                                       h.kind() == v1::KIND_REQUEST ? "request" : "non-request",
                                       h.provider(), h.service(), h.env(), entity_,
                                       service, env_)));
    return;
  }
  // Fail closed: with a stale revocation list nobody's certificate can be trusted.
  auto snapshot = trust_->Current();
  if (!snapshot.ok()) {
    refuse(h, ChasquiError(v1::UNAVAILABLE, MessageOf(snapshot.status())));
    return;
  }
  std::shared_ptr<const TrustStore> trust = *std::move(snapshot);
  std::shared_ptr<Key> key = KeyFor(h.recipient_cert(), nullptr);
  if (key == nullptr) {
    refuse(h, ChasquiError(v1::BAD_REQUEST,
                           fmt::format("the body is sealed for key {}, which this gateway of {} "
                                       "does not hold (it holds [{}]); refresh {}'s certificates",
                                       h.recipient_cert(), entity_, SerialList(serials()),
                                       entity_)));
    return;
  }
  const PublicIdentity* signer = trust->BySerial(h.sender_cert());
  if (signer == nullptr) {
    auto fetched = trust_->FetchSerial(h.sender_cert());
    if (!fetched.ok()) {
      refuse(h, ChasquiError(absl::IsUnavailable(fetched.status()) ? v1::UNAVAILABLE
                                                                    : v1::UNAUTHENTICATED,
                             fmt::format("sender_cert {} of consumer {} is refused: {}",
                                         h.sender_cert(), h.consumer(),
                                         MessageOf(fetched.status()))));
      return;
    }
    trust = *std::move(fetched);
    signer = trust->BySerial(h.sender_cert());
  }
  if (signer == nullptr || signer->role != Role::kEntity || signer->entity != h.consumer()) {
    refuse(h, ChasquiError(v1::UNAUTHENTICATED,
                           fmt::format("sender_cert {} is not a key of consumer {}",
                                       h.sender_cert(), h.consumer())));
    return;
  }
  if (absl::Status s = verifier_.Verify(*parsed, *signer); !s.ok()) {
    refuse(h, s);
    return;
  }
  if (absl::Status s = replay_.Check(signer->serial, h.id(), h.sent_at_ms()); !s.ok()) {
    refuse(h, s);
    return;
  }
  auto keys = key->session_keys.For(signer->kx_pk);
  if (!keys.ok()) {
    refuse(h, ChasquiError(v1::UNAUTHENTICATED, MessageOf(keys.status())));
    return;
  }
  auto body = OpenBody(h, (*keys)->rx, parsed->envelope.body());
  if (!body.ok()) {
    refuse(h, body.status());
    return;
  }
  if (!h.idempotency_key().empty()) {
    if (absl::Status s = ValidateIdempotencyKey(h.idempotency_key()); !s.ok()) {
      refuse(h, s);
      Notify(service, v1::BAD_REQUEST, "bad_key");
      return;
    }
  }

  auto job = std::make_shared<Job>();
  job->request = h;
  job->own_key = std::move(key);
  job->keys = *std::move(keys);
  job->reply_to = reply_to;
  job->context = RequestContext{h.consumer(),    h.service(),     h.service_version(),
                                h.end_user(),    h.purpose(),     h.consent_ref(),
                                ToHex(h.id()),   h.idempotency_key(),
                                h.recipient_cert()};
  job->body = *std::move(body);

  if (!h.idempotency_key().empty()) {
    job->key = IdempotencyKey{h.consumer(), service, h.idempotency_key()};
    RememberedAnswer remembered;
    // A repeat that joins a running request is answered when that one finishes, on the thread
    // that finishes it; this delivery thread moves on.
    auto begun = idempotency_->Begin(
        job->key, Blake2b256(job->body), &remembered,
        [this, job](const RememberedAnswer& answer) {
          Answer(*job, answer);
          Notify(job->context.service, answer.code, "joined");
        });
    switch (begun) {
      case IdempotencyStore::Begun::kStarted:
        job->remember = true;
        break;
      case IdempotencyStore::Begun::kAnswered:
        Answer(*job, remembered);
        Notify(service, remembered.code, "remembered");
        return;
      case IdempotencyStore::Begun::kJoined:
        return;
      case IdempotencyStore::Begun::kConflict:
        AnswerWithoutHandler(*job, v1::BAD_REQUEST,
                             "Idempotency-Key reused with a different body", "key_conflict");
        return;
      case IdempotencyStore::Begun::kTooMany:
        AnswerWithoutHandler(
            *job, v1::UNAVAILABLE,
            fmt::format("{} repeats of this Idempotency-Key already wait for the first to finish; "
                        "retry later",
                        kMaxWaitersPerKey),
            "key_busy");
        return;
    }
  }

  if (!served.pool) {
    RunJob(served, *job, WorkerPool::kRun);
    return;
  }
  ServedHandler* s = &served;
  if (!served.pool->TryPush(
          [this, s, job](WorkerPool::Fate fate) { RunJob(*s, *job, fate); })) {
    AnswerWithoutHandler(
        *job, v1::UNAVAILABLE,
        fmt::format("the provider gateway is saturated: {} calls to {} are running and {} are "
                    "waiting; retry later",
                    served.pool->workers(), service, served.pool->capacity()),
        "saturated");
  }
}

void Provider::RunJob(ServedHandler& served, Job& job, int fate) {
  if (fate == WorkerPool::kStale) {
    AnswerWithoutHandler(
        job, v1::UNAVAILABLE,
        fmt::format("the provider gateway is saturated: the request waited more than {} ms for a "
                    "free worker; retry later",
                    absl::ToInt64Milliseconds(options_.max_queue_wait)),
        "stale");
    return;
  }
  if (fate == WorkerPool::kStopping) {
    AnswerWithoutHandler(job, v1::UNAVAILABLE, "the provider gateway is shutting down", "stopping");
    return;
  }
  ++handled_;
  // On the delivery thread, replies held for this burst's signature must not wait behind a slow
  // provider system. (On a worker thread there is no burst: this is a no-op.)
  if (last_handler_ns_.load(std::memory_order_relaxed) > kMaxBurstHoldNanos) EndBurstNow();
  const int64_t started = clock_.NowMonoNanos();
  absl::StatusOr<std::string> result = served.handler(job.context, job.body);
  last_handler_ns_.store(clock_.NowMonoNanos() - started, std::memory_order_relaxed);
  RememberedAnswer answer;
  if (result.ok()) {
    answer.body = *std::move(result);
  } else {
    // A plain error from the provider's system is PROVIDER_ERROR; a ChasquiError keeps its code.
    answer.code =
        HasChasquiCode(result.status()) ? ChasquiCode(result.status()) : v1::PROVIDER_ERROR;
    answer.body = MessageOf(result.status());
  }
  Answer(job, answer);
  if (job.remember) {
    // UNAVAILABLE, and a refusal of access (the gateway's own catalog check), mean "not done":
    // a repeat should try again, not hear it again (a consumer retrying with the same key once
    // its grant is approved must be served).
    if (answer.code == v1::UNAVAILABLE || answer.code == v1::FORBIDDEN ||
        answer.code == v1::NOT_FOUND || answer.code == v1::END_USER_UNKNOWN ||
        answer.code == v1::CONSENT_REQUIRED) {
      idempotency_->Abandon(job.key, answer);
    } else {
      idempotency_->Finish(job.key, std::move(answer));
    }
  }
}

void Provider::Answer(const Job& job, const RememberedAnswer& answer) {
  if (answer.code != v1::OK) {
    // The system's own words may name a person: the header says only the code, and the words
    // travel sealed for the consumer.
    v1::Header error = ErrorHeader(*job.own_key, job.request, answer.code,
                                   "the provider's system refused or failed; details sealed for "
                                   "the consumer");
    error.set_recipient_cert(job.request.sender_cert());
    std::string sealed = SealBody(error, job.keys->tx, nonces_, answer.body);
    Send(*job.own_key, job.reply_to, std::move(error), std::move(sealed));
    return;
  }
  v1::Header reply = AnswerHeader(*job.own_key, job.request, v1::KIND_REPLY);
  reply.set_recipient_cert(job.request.sender_cert());
  std::string sealed = SealBody(reply, job.keys->tx, nonces_, answer.body);
  Send(*job.own_key, job.reply_to, std::move(reply), std::move(sealed));
}

void Provider::AnswerWithoutHandler(const Job& job, v1::Code code, std::string_view message,
                                    std::string_view reason) {
  ++refused_;
  if (LogAllowed()) {
    CHQ_LOG_WARN("answered {} for {} request {} from {} without calling its system ({}): {}",
                 CodeName(code), job.context.service, job.context.request_id,
                 job.context.consumer, reason, message);
  }
  Send(*job.own_key, job.reply_to, ErrorHeader(*job.own_key, job.request, code, message), "");
  if (job.remember) {
    // Nothing ran: whoever waits on this key hears the same, and a later repeat runs.
    idempotency_->Abandon(job.key, RememberedAnswer{code, std::string(message)});
  }
  Notify(job.context.service, code, reason);
}

bool Provider::LogAllowed() {
  constexpr int kMaxLinesPerSecond = 20;
  const int64_t second = clock_.NowMonoNanos() / 1'000'000'000;
  int64_t seen = log_second_.load();
  if (seen != second && log_second_.compare_exchange_strong(seen, second)) log_lines_.store(0);
  const int n = ++log_lines_;
  if (n == kMaxLinesPerSecond + 1) {
    CHQ_LOG_WARN("more than {} answers without a handler this second; the rest are not logged",
                 kMaxLinesPerSecond);
  }
  return n <= kMaxLinesPerSecond;
}

void Provider::Notify(const std::string& service, v1::Code code, std::string_view reason) const {
  if (options_.on_answered_without_handler) {
    options_.on_answered_without_handler(service, code, reason);
  }
}

v1::Header Provider::AnswerHeader(const Key& key, const v1::Header& request,
                                  v1::Kind kind) const {
  v1::Header h;
  h.set_protocol_version(kProtocolVersion);
  h.set_id(NewEnvelopeId());
  h.set_env(env_);
  h.set_kind(kind);
  h.set_consumer(IsValidName(request.consumer()) ? request.consumer() : "unknown");
  h.set_provider(entity_);
  h.set_service(IsValidName(request.service()) ? request.service() : "unknown");
  h.set_service_version(request.service_version());
  h.set_in_reply_to(request.id().size() == kIdBytes ? request.id() : "");
  h.set_sent_at_ms(clock_.NowUnixMillis());
  h.set_sender_cert(key.identity.pub.serial);
  return h;
}

v1::Header Provider::ErrorHeader(const Key& key, const v1::Header& request, v1::Code code,
                                 std::string_view message) const {
  v1::Header h = AnswerHeader(key, request, v1::KIND_ERROR);
  h.mutable_error()->set_code(code);
  h.mutable_error()->set_message(std::string(message.substr(0, kMaxErrorMessageBytes)));
  return h;
}

void Provider::Send(Key& key, const std::string& reply_to, v1::Header header,
                    std::string body) {
  SignEnvelope(key.signer, std::move(header), std::move(body), [this, reply_to](std::string wire) {
    if (absl::Status s = bus_->Publish(reply_to, wire); !s.ok()) {
      CHQ_LOG_ERROR("publishing an answer failed: {}", MessageOf(s));
    }
  });
}

}  // namespace chasqui
