#pragma once
// A small real backbone for integration tests: a nats-server on a random loopback port, a
// router, the provider segip (through the SDK) serving `persona_consulta` (echoes, counting
// every call its system sees) and `slow` (answers after 2 s), and the consumers sin and aduana.
// Keys are generated fresh; `mallory` has keys nobody trusts. With `audit` in-process, the
// chasqui audit service (its library: chain, service, RocksDB in a temp dir or a store the test
// gives) runs on its own connection, and the router traces through it.

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "absl/time/time.h"
#include "chasqui/v1/envelope.pb.h"
#include "common/bus/bus.h"
#include "common/bus/request_mux.h"
#include "common/envelope/batch_signer.h"
#include "common/envelope/identity.h"
#include "common/envelope/session_keys.h"
#include "chasqui/v1/audit.pb.h"
#include "common/envelope/envelope.h"
#include "common/store/kv_store.h"
#include "prometheus/registry.h"
#include "services/audit/audit_chain.h"
#include "services/audit/audit_client.h"
#include "services/audit/audit_metrics.h"
#include "services/audit/audit_service.h"
#include "services/audit/checkpoint_signer.h"
#include "services/gateway/sdk.h"
#include "services/router/router.h"
#include "tests/support/nats_server.h"
#include "tests/support/temp_dir.h"

namespace chasqui::testing {

// Identities are move-only (their secrets live in locked memory); tests need copies.
Identity Copy(const Identity& id);

struct BackboneOptions {
  std::string env = "test";
  int64_t startup_hold_ms = 0;
  absl::Duration provider_timeout = absl::Milliseconds(500);
  size_t max_envelope_bytes = 64 * 1024;
  bool start_provider = true;
  RefusalLimits preauth_refusals;

  // kOff: the router relays untraced (the tests that are not about the trace). kInProcess: the
  // audit service runs here and the router traces through it. kExternal: the router traces,
  // and the test runs an audit service (e.g. the chasqui-audit executable) itself.
  enum class Audit { kOff, kInProcess, kExternal };
  Audit audit = Audit::kOff;
  // kInProcess: the chain's store instead of RocksDB in a temp dir (owned by the test).
  KvStore* audit_store = nullptr;
  audit::AuditClientOptions audit_client = {.timeout = absl::Seconds(2)};
  absl::Duration refusal_count_interval = absl::Seconds(10);
  absl::Duration audit_retry_interval = absl::Milliseconds(250);
};

class Backbone {
 public:
  explicit Backbone(BackboneOptions options = {});
  ~Backbone();

  // Connects a new bus client to the server.
  std::unique_ptr<Bus> Connect(const std::string& name) const;
  // A consumer SDK for `entity` (sin or aduana), on its own connection.
  std::unique_ptr<Consumer> MakeConsumer(const Identity& identity);

  // Another replica of the router (same key, trust, queue group and options) named `id`, on
  // its own connection (kept until the backbone goes); ready when returned.
  // `adjust`, if given, changes the options first (e.g. to give it a catalog or quota).
  std::unique_ptr<Router> StartRouter(const std::string& id,
                                      std::shared_ptr<prometheus::Registry> registry,
                                      const std::function<void(RouterOptions&)>& adjust = {});
  // (Re)starts segip's provider gateway on provider_bus: a restarted one has an empty seen-set,
  // like another replica of segip's gateway.
  void StartProvider();
  // The options every router here gets.
  RouterOptions MakeRouterOptions(const std::string& id) const;

  // kInProcess: stops the audit service (its subscriptions go, so appends find nobody) and
  // closes its chain; StartAudit opens it again on the same store.
  void StopAudit();
  void StartAudit();
  // Every entry of the chain, in order (the store read directly; the chain may be running).
  std::vector<v1::ChainEntry> AuditEntries() const;
  // The records (not refusal counts) of the chain whose request_id is `id`.
  std::vector<v1::AuditRecord> AuditRecordsFor(const std::string& request_id) const;

  const BackboneOptions options;
  std::unique_ptr<NatsServer> nats;
  Identity sin, aduana, segip, router_key, mallory;
  TrustStore trust;  // every identity above but mallory
  std::shared_ptr<prometheus::Registry> registry;
  std::unique_ptr<Bus> router_bus, provider_bus;
  std::unique_ptr<Router> router;
  std::unique_ptr<Provider> provider;
  std::atomic<int> provider_system_calls{0};

  // kInProcess only.
  std::unique_ptr<TempDir> audit_dir;
  std::unique_ptr<KvStore> audit_rocksdb;
  KvStore* audit_store = nullptr;
  std::unique_ptr<audit::LocalCheckpointSigner> audit_signer;
  std::shared_ptr<prometheus::Registry> audit_registry;
  std::unique_ptr<audit::AuditMetrics> audit_metrics;
  std::unique_ptr<audit::AuditChain> audit_chain;
  std::unique_ptr<Bus> audit_bus;
  std::unique_ptr<audit::AuditService> audit_service;

 private:
  std::vector<std::unique_ptr<Bus>> consumer_buses_;
  std::vector<std::unique_ptr<Bus>> router_buses_;
};

// Builds request envelopes by hand, so tests can send what no SDK would.
class RequestForge {
 public:
  RequestForge(const Identity& signer, const PublicIdentity& recipient, std::string env = "test");

  // A valid header for signer -> recipient.entity / `service`, sent now.
  v1::Header Header(const std::string& service) const;
  // Seals `body` under the header (sets nonce; the header must be final), signs, and returns
  // the wire bytes.
  std::string Seal(v1::Header header, const std::string& body);
  // Signs without sealing the body again: `body` is sent as is.
  std::string SignRaw(v1::Header header, const std::string& body);

 private:
  const Identity& signer_;
  const PublicIdentity recipient_;
  const std::string env_;
  SessionKeyCache keys_;
  NonceSource nonces_;
  BatchSigner batch_;
};

// Sends raw bytes as consumer `entity` and returns the answering envelope's header (or an
// error if none came within `timeout`).
class RawClient {
 public:
  RawClient(const Backbone& backbone, const std::string& entity, std::string env = "test");
  absl::StatusOr<v1::Header> Send(const std::string& subject, const std::string& wire,
                                  absl::Duration timeout = absl::Seconds(3));
  // The whole answering envelope, its header bytes exactly as received.
  absl::StatusOr<ParsedEnvelope> SendForEnvelope(const std::string& subject,
                                                 const std::string& wire,
                                                 absl::Duration timeout = absl::Seconds(3));
  Bus& bus() { return *bus_; }

 private:
  std::unique_ptr<Bus> bus_;
  std::unique_ptr<RequestMux> mux_;
};

}  // namespace chasqui::testing
