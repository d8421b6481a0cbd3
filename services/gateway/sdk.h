#pragma once
// The C++ SDK: how an entity's own systems consume and provide services over Chasqui. It is
// the gateway's library: it holds the entity's private keys, seals and opens bodies, signs in
// adaptive batches and verifies what it receives.
//
//   auto consumer = Consumer::Create(bus, identity, trust, {});
//   CallResult r = consumer->Call("segip", "persona_consulta", body, {.end_user = "ana.perez"});
//   if (!r.status.ok()) ... ChasquiCode(r.status) says why, precisely.
//
//   auto provider = Provider::Create(bus, identity, trust, {});
//   provider->AddIdentity(next);        // a key rotation's overlap: both keys served
//   provider->RetireIdentity(old_serial);
//
// `trust` is a TrustStore (a trust file: never changes) or a TrustSource whose snapshot changes
// while the process runs (CertificateTrust in common/trust/certificate_trust.h: certificates
// from the crypto service, revocations applied as they come).
//   provider->Serve("persona_consulta", [](const RequestContext& ctx, std::string_view body)
//                   -> absl::StatusOr<std::string> { ... });

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/bus/bus.h"
#include "common/bus/request_mux.h"
#include "common/core/clock.h"
#include "common/envelope/batch_signer.h"
#include "common/envelope/identity.h"
#include "common/envelope/replay_guard.h"
#include "common/envelope/session_keys.h"
#include "common/envelope/verifier.h"
#include "common/trust/trust_source.h"
#include "services/gateway/idempotency.h"

namespace chasqui {

struct CallOptions {
  std::string end_user;  // mandatory: the official on whose behalf the query runs
  std::string purpose;
  std::string consent_ref;
  std::string annex_id;
  std::string service_version;
  // Optional, 1 to 128 printable ASCII characters: a repeat of a request with the same key and
  // body gets the provider's first answer, and its system runs the query once (idempotency.h).
  // It travels signed but not sealed: the router and the audit see it, so it should be an
  // opaque token (a UUID), never personal data.
  std::string idempotency_key;
  absl::Duration timeout = absl::Seconds(10);
};

struct CallResult {
  // OK, or a ChasquiError: ChasquiCode(status) is the exact code, the message says why.
  absl::Status status;
  std::string body;             // the opened reply body when OK
  std::string request_id;       // hex, as the trace knows it
  uint32_t retry_after_ms = 0;  // with QUOTA_EXCEEDED
};

struct ConsumerOptions {
  int64_t freshness_window_ms = 30'000;
};

class Consumer {
 public:
  // `bus` must outlive the consumer. The identity must be an entity key for trust.env().
  static absl::StatusOr<std::unique_ptr<Consumer>> Create(Bus* bus, Identity identity,
                                                          TrustStore trust,
                                                          ConsumerOptions options = {},
                                                          const Clock& clock = SystemClock());
  // `trust` is shared (a gateway's Consumer and Provider use the same source).
  static absl::StatusOr<std::unique_ptr<Consumer>> Create(Bus* bus, Identity identity,
                                                          std::shared_ptr<TrustSource> trust,
                                                          ConsumerOptions options = {},
                                                          const Clock& clock = SystemClock());
  ~Consumer();

  // Seals `body` for `provider` (for its key with the highest serial in trust), signs it in the
  // next batch and sends it through a router. An answer must be signed by a router (an error)
  // or by a key of the provider's entity: the one sealed for, or another (a rotation's
  // overlap). `done` runs exactly once, on a bus or signing thread. Thread-safe; many calls may
  // be in flight.
  void CallAsync(std::string_view provider, std::string_view service, std::string_view body,
                 const CallOptions& options, std::function<void(CallResult)> done);
  // Blocking form. Inside a NATS handler it sends at once (ending the handler's burst).
  // Do not destroy a Consumer from one of its own callbacks.
  CallResult Call(std::string_view provider, std::string_view service, std::string_view body,
                  const CallOptions& options);

  uint64_t batches() const { return signer_.batches(); }
  uint64_t signed_headers() const { return signer_.signed_headers(); }

 private:
  Consumer(Bus* bus, Identity identity, std::shared_ptr<TrustSource> trust,
           ConsumerOptions options, const Clock& clock);
  CallResult OnAnswer(const std::string& id, const TrustStore& trust,
                      const PublicIdentity& provider, const std::string& service,
                      const SessionKeys& keys, MuxOutcome outcome, const BusMessage* reply);

  Bus* bus_;
  const Identity identity_;
  const std::shared_ptr<TrustSource> trust_;
  const std::string env_;
  const ConsumerOptions options_;
  const Clock& clock_;
  const std::string client_id_;
  RootCache root_cache_;
  EnvelopeVerifier verifier_;
  SessionKeyCache session_keys_;
  NonceSource nonces_;
  BatchSigner signer_;
  std::unique_ptr<RequestMux> mux_;
  std::atomic<bool> closing_{false};
};

// What a provider's handler learns about a request, besides its opened body.
struct RequestContext {
  std::string consumer;
  std::string service;
  std::string service_version;
  std::string end_user;
  std::string purpose;
  std::string consent_ref;
  std::string request_id;  // hex
  std::string idempotency_key;  // empty if the consumer sent none
  // The serial of this provider's key the request was sealed for; its answer is sealed and
  // signed with that key.
  uint64_t provider_serial = 0;
};

// Returns the reply body, or an error: a ChasquiError keeps its code; any other error reaches
// the consumer as PROVIDER_ERROR. The error's message reaches the consumer sealed (the header
// the router and audit see carries only the code). For a request with an idempotency key the
// outcome is remembered, whatever it is, except UNAVAILABLE, which says "not done, retry".
using Handler = std::function<absl::StatusOr<std::string>(const RequestContext& context,
                                                          std::string_view body)>;

struct ProviderOptions {
  int64_t freshness_window_ms = 30'000;
  // 0: each service's handler runs on that service's NATS delivery thread, one request at a
  // time (no thread hop: the cheapest for fast handlers). N > 0: each service gets N worker
  // threads, so up to N handler calls run at once (the handler must then be thread-safe) and up
  // to `queue_capacity` more wait for a worker; past that a request is answered UNAVAILABLE
  // ("saturated") at once: the delivery thread never waits for a handler.
  int workers = 0;
  size_t queue_capacity = 64;
  // A request that waited longer than this for a worker is answered UNAVAILABLE without calling
  // the handler: by then the router may have given up on it (its provider timeout is 5 s, a
  // gateway's upstream timeout 4 s), and a call nobody waits for would still have its effects.
  absl::Duration max_queue_wait = absl::Seconds(1);
  IdempotencyOptions idempotency;
  // Called once for each request answered without calling the handler, with the code answered
  // and why: "saturated", "stale" (waited past max_queue_wait), "stopping", "remembered" (an
  // idempotent repeat), "joined" (a repeat that waited for the same request to finish),
  // "key_conflict" (key reused with another body), "key_busy" (too many repeats waiting),
  // "bad_key". Optional; thread-safe; must not block.
  std::function<void(const std::string& service, v1::Code code, std::string_view reason)>
      on_answered_without_handler;
};

// A provider holds one key or, during a rotation's overlap (issue 3), several keys of its
// entity: a request is opened with the key its recipient_cert names, whichever it is, and
// answered sealed and signed with that same key. That key is the one the consumer chose and
// the router checked the request against, so both already hold its certificate when the answer
// comes (a router verifies an answer against the certificates it checked the request with).
// A request sealed for a serial the provider does not hold is refused BAD_REQUEST naming the
// serials it holds, signed with its newest key.
class Provider {
 public:
  static absl::StatusOr<std::unique_ptr<Provider>> Create(Bus* bus, Identity identity,
                                                          TrustStore trust,
                                                          ProviderOptions options = {},
                                                          const Clock& clock = SystemClock());
  // While `trust` refuses (Current() not OK), every request is answered UNAVAILABLE with its
  // reason once its addressing is checked, before its signer is looked up. A sender_cert not in
  // the snapshot is asked of trust->FetchSerial; its refusal (revoked, expired) is answered
  // UNAUTHENTICATED naming why.
  static absl::StatusOr<std::unique_ptr<Provider>> Create(Bus* bus, Identity identity,
                                                          std::shared_ptr<TrustSource> trust,
                                                          ProviderOptions options = {},
                                                          const Clock& clock = SystemClock());
  // Several keys of one entity at once (a rotation's overlap), oldest first: the last is the
  // newest. InvalidArgument if there is none, if one is not an entity key for trust->env() or
  // if they name different entities; AlreadyExists if two share a serial. Each key's secrets
  // stay in locked memory, as with one key, and are never logged (serials are).
  static absl::StatusOr<std::unique_ptr<Provider>> Create(Bus* bus,
                                                          std::vector<Identity> identities,
                                                          std::shared_ptr<TrustSource> trust,
                                                          ProviderOptions options = {},
                                                          const Clock& clock = SystemClock());
  ~Provider();

  // Serves requests sealed for `identity` too, from the next request on, as the newest key;
  // the services already served stay served. InvalidArgument if it is not an entity key of
  // this provider's entity for its env; AlreadyExists if its serial is held. Thread-safe.
  absl::Status AddIdentity(Identity identity);
  // Stops opening requests sealed for `serial` (refused BAD_REQUEST from the next one on);
  // requests already opened with it are still answered with it, and its secrets are wiped once
  // the last of them is answered. NotFound if it is not held; FailedPrecondition if it is the
  // only key held. Thread-safe.
  absl::Status RetireIdentity(uint64_t serial);
  // The serials held, oldest first. Thread-safe.
  std::vector<uint64_t> serials() const;

  // Serves `service` on `chq.<env>.svc.<provider>.<service>` (a queue group, so several
  // gateways of one entity share the load). Each request is verified, checked for freshness
  // and replay, and opened before `handler` sees it; a refused one never reaches the handler.
  // A request with an idempotency key whose answer is remembered never reaches it either.
  absl::Status Serve(std::string_view service, Handler handler);

  // Requests that reached a handler, and requests refused before one (an idempotent repeat
  // answered from memory is neither).
  uint64_t handled() const { return handled_.load(); }
  uint64_t refused() const { return refused_.load(); }
  // Over every key held, and those retired.
  uint64_t batches() const;
  uint64_t signed_headers() const;

 private:
  struct Key;            // one key held: its identity, session keys and signer
  using KeySet = std::vector<std::shared_ptr<Key>>;  // oldest first
  struct ServedHandler;  // a service's handler and its workers
  struct Job;            // an opened request on its way to the handler
  Provider(Bus* bus, std::string entity, std::shared_ptr<TrustSource> trust,
           ProviderOptions options, const Clock& clock);
  std::shared_ptr<const KeySet> Keys() const;
  // The key a request sealed for `serial` opens with; else null (with `newest` set to the
  // newest key held, which then signs the refusal).
  std::shared_ptr<Key> KeyFor(uint64_t serial, std::shared_ptr<Key>* newest) const;
  // A key is checked against the provider's entity, env and the serials held.
  absl::Status CheckNewKey(const Identity& identity, const KeySet& held) const;
  void HandleRequest(ServedHandler& served, const BusMessage& msg);
  // Runs the handler (or not: `fate`) and answers.
  void RunJob(ServedHandler& served, Job& job, int fate);
  // Answers an opened request with what its handler said (or says again, when remembered).
  void Answer(const Job& job, const RememberedAnswer& answer);
  // Answers without calling the handler: an error in clear, counted as refused.
  void AnswerWithoutHandler(const Job& job, v1::Code code, std::string_view message,
                            std::string_view reason);
  void Notify(const std::string& service, v1::Code code, std::string_view reason) const;
  // At most 20 log lines a second for answers without a handler: a saturated
  // provider must not also flood its log.
  bool LogAllowed();
  // The header of an answer to `request` signed with `key`, with every field the seal context
  // covers set.
  v1::Header AnswerHeader(const Key& key, const v1::Header& request, v1::Kind kind) const;
  v1::Header ErrorHeader(const Key& key, const v1::Header& request, v1::Code code,
                         std::string_view message) const;
  void Send(Key& key, const std::string& reply_to, v1::Header header, std::string body);

  Bus* bus_;
  const std::string entity_;
  const std::shared_ptr<TrustSource> trust_;
  const std::string env_;
  const Clock& clock_;
  const ProviderOptions options_;
  RootCache root_cache_;
  EnvelopeVerifier verifier_;
  ReplayGuard replay_;
  std::unique_ptr<IdempotencyStore> idempotency_;
  NonceSource nonces_;
  mutable absl::Mutex keys_mu_;
  // Swapped whole: a request keeps the key it was opened with, whatever is retired meanwhile.
  std::shared_ptr<const KeySet> keys_ ABSL_GUARDED_BY(keys_mu_);
  std::atomic<uint64_t> retired_batches_{0};
  std::atomic<uint64_t> retired_headers_{0};
  std::atomic<uint64_t> handled_{0};
  std::atomic<int64_t> last_handler_ns_{0};  // how long the provider's system last took
  std::atomic<uint64_t> refused_{0};
  std::atomic<int64_t> log_second_{0};
  std::atomic<int> log_lines_{0};
  absl::Mutex mu_;
  std::vector<std::unique_ptr<Subscription>> subscriptions_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<ServedHandler>> served_ ABSL_GUARDED_BY(mu_);
};

}  // namespace chasqui
