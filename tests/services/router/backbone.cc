#include "tests/services/router/backbone.h"

#include <future>
#include <thread>

#include "common/core/status.h"
#include "common/envelope/envelope.h"
#include "common/envelope/subjects.h"
#include "gtest/gtest.h"
#include "services/audit/audit_schema.h"
#include "tests/support/wait_for.h"

namespace chasqui::testing {

Identity Copy(const Identity& id) {
  return Identity{id.pub, *SigningKey::FromSecret(AsView(id.sign.secret().data(), 64)),
                  *KxKey::FromSecret(AsView(id.kx.secret().data(), 32))};
}

Backbone::Backbone(BackboneOptions opts)
    : options(std::move(opts)),
      sin(GenerateIdentity("sin", options.env, Role::kEntity)),
      aduana(GenerateIdentity("aduana", options.env, Role::kEntity)),
      segip(GenerateIdentity("segip", options.env, Role::kEntity)),
      router_key(GenerateIdentity("router", options.env, Role::kRouter)),
      mallory(GenerateIdentity("mallory", options.env, Role::kEntity)),
      trust(TrustStore::FromIdentities({sin.pub, aduana.pub, segip.pub, router_key.pub},
                                       options.env)),
      registry(std::make_shared<prometheus::Registry>()) {
  auto server = NatsServer::Start();
  CHASQUI_CHECK(server.ok(), MessageOf(server.status()));
  nats = *std::move(server);
  if (options.audit == BackboneOptions::Audit::kInProcess) {
    audit_registry = std::make_shared<prometheus::Registry>();
    audit_metrics = std::make_unique<audit::AuditMetrics>(*audit_registry);
    audit_signer = std::make_unique<audit::LocalCheckpointSigner>(
        GenerateIdentity("audit", options.env, Role::kRouter));
    audit_store = options.audit_store;
    if (audit_store == nullptr) {
      audit_dir = std::make_unique<TempDir>();
      auto store = KvStore::Open({.path = audit_dir->File("audit")});
      CHASQUI_CHECK(store.ok(), MessageOf(store.status()));
      audit_rocksdb = *std::move(store);
      audit_store = audit_rocksdb.get();
    }
    audit_bus = Connect("audit");
    StartAudit();
  }
  router_bus = Connect("router");
  auto r = Router::Start(MakeRouterOptions("r1"), router_bus.get(), Copy(router_key), trust,
                         registry);
  CHASQUI_CHECK(r.ok(), MessageOf(r.status()));
  router = *std::move(r);
  if (options.startup_hold_ms == 0) {
    CHASQUI_CHECK(WaitFor([this] { return router->Ready().ok(); }), "router not ready in 10 s");
  }
  if (!options.start_provider) return;
  provider_bus = Connect("provider");
  StartProvider();
}

void Backbone::StartProvider() {
  provider.reset();
  auto p = Provider::Create(provider_bus.get(), Copy(segip), trust);
  CHASQUI_CHECK(p.ok(), MessageOf(p.status()));
  provider = *std::move(p);
  CHASQUI_CHECK(provider
                    ->Serve("persona_consulta",
                            [this](const RequestContext& ctx,
                                   std::string_view body) -> absl::StatusOr<std::string> {
                              ++provider_system_calls;
                              return "segip:" + ctx.consumer + ":" + std::string(body);
                            })
                    .ok(),
                "serve");
  CHASQUI_CHECK(provider
                    ->Serve("slow",
                            [this](const RequestContext&,
                                   std::string_view body) -> absl::StatusOr<std::string> {
                              ++provider_system_calls;
                              std::this_thread::sleep_for(std::chrono::seconds(2));
                              return std::string(body);
                            })
                    .ok(),
                "serve");
  CHASQUI_CHECK(provider_bus->Flush(absl::Seconds(5)).ok(), "flush");
}

Backbone::~Backbone() {
  provider.reset();
  router.reset();
  consumer_buses_.clear();
  provider_bus.reset();
  router_bus.reset();
  router_buses_.clear();
  StopAudit();
  audit_bus.reset();
}

RouterOptions Backbone::MakeRouterOptions(const std::string& id) const {
  RouterOptions ro;
  ro.env = options.env;
  ro.router_id = id;
  ro.startup_hold_ms = options.startup_hold_ms;
  ro.provider_timeout = options.provider_timeout;
  ro.max_envelope_bytes = options.max_envelope_bytes;
  ro.preauth_refusals = options.preauth_refusals;
  ro.audit = options.audit != BackboneOptions::Audit::kOff;
  ro.audit_client = options.audit_client;
  ro.refusal_count_interval = options.refusal_count_interval;
  ro.audit_retry_interval = options.audit_retry_interval;
  return ro;
}

std::unique_ptr<Router> Backbone::StartRouter(const std::string& id,
                                              std::shared_ptr<prometheus::Registry> reg,
                                              const std::function<void(RouterOptions&)>& adjust) {
  router_buses_.push_back(Connect("router-" + id));
  RouterOptions ro = MakeRouterOptions(id);
  ro.startup_hold_ms = 0;
  if (adjust) adjust(ro);
  auto r = Router::Start(ro, router_buses_.back().get(), Copy(router_key), trust, std::move(reg));
  CHASQUI_CHECK(r.ok(), MessageOf(r.status()));
  CHASQUI_CHECK(WaitFor([&] { return (*r)->Ready().ok(); }), "router not ready in 10 s");
  return *std::move(r);
}

void Backbone::StartAudit() {
  CHASQUI_CHECK(audit_store != nullptr, "StartAudit needs Audit::kInProcess");
  CHASQUI_CHECK(audit_service == nullptr, "the audit service already runs");
  auto chain = audit::AuditChain::Open({.env = options.env}, audit_store, audit_signer.get(),
                                       SystemClock(), audit_metrics.get());
  CHASQUI_CHECK(chain.ok(), MessageOf(chain.status()));
  audit_chain = *std::move(chain);
  auto service = audit::AuditService::Start(audit_bus.get(), audit_chain.get(), audit_store,
                                            audit_metrics.get());
  CHASQUI_CHECK(service.ok(), MessageOf(service.status()));
  audit_service = *std::move(service);
}

void Backbone::StopAudit() {
  audit_service.reset();  // unsubscribes: nobody serves chq.ctl.audit.append
  if (audit_chain != nullptr) audit_chain->Stop();
  audit_chain.reset();
  if (audit_bus != nullptr) CHASQUI_CHECK(audit_bus->Flush(absl::Seconds(5)).ok(), "flush");
}

std::vector<v1::ChainEntry> Backbone::AuditEntries() const {
  std::vector<v1::ChainEntry> entries;
  if (audit_store == nullptr) return entries;
  absl::Status s = audit_store->Scan(
      audit::kRecordPrefix, audit::kRecordEnd, [&](std::string_view, std::string_view value) {
        v1::StoredRecord rec;
        v1::ChainEntry entry;
        CHASQUI_CHECK(rec.ParseFromArray(value.data(), static_cast<int>(value.size())),
                      "stored record");
        CHASQUI_CHECK(entry.ParseFromString(rec.entry()), "chain entry");
        entries.push_back(std::move(entry));
        return true;
      });
  CHASQUI_CHECK(s.ok(), MessageOf(s));
  return entries;
}

std::vector<v1::AuditRecord> Backbone::AuditRecordsFor(const std::string& request_id) const {
  std::vector<v1::AuditRecord> out;
  for (v1::ChainEntry& e : AuditEntries()) {
    if (e.has_record() && e.record().request_id() == request_id) out.push_back(e.record());
  }
  return out;
}

std::unique_ptr<Bus> Backbone::Connect(const std::string& name) const {
  BusOptions o;
  o.url = nats->url();
  o.name = name;
  o.send_asap = true;
  auto bus = Bus::Connect(o);
  CHASQUI_CHECK(bus.ok(), MessageOf(bus.status()));
  return *std::move(bus);
}

std::unique_ptr<Consumer> Backbone::MakeConsumer(const Identity& id) {
  consumer_buses_.push_back(Connect("consumer-" + id.pub.entity));
  auto c = Consumer::Create(consumer_buses_.back().get(), Copy(id), trust);
  CHASQUI_CHECK(c.ok(), MessageOf(c.status()));
  return *std::move(c);
}

RequestForge::RequestForge(const Identity& signer, const PublicIdentity& recipient, std::string env)
    : signer_(signer),
      recipient_(recipient),
      env_(std::move(env)),
      keys_(signer.kx, SessionKeyCache::Side::kClient),
      batch_(signer.sign, EnvelopeTag(env_)) {}

v1::Header RequestForge::Header(const std::string& service) const {
  v1::Header h;
  h.set_protocol_version(kProtocolVersion);
  h.set_id(NewEnvelopeId());
  h.set_env(env_);
  h.set_kind(v1::KIND_REQUEST);
  h.set_consumer(signer_.pub.entity);
  h.set_provider(recipient_.entity);
  h.set_service(service);
  h.set_end_user("ana.perez");
  h.set_sent_at_ms(SystemClock().NowUnixMillis());
  h.set_sender_cert(signer_.pub.serial);
  h.set_recipient_cert(recipient_.serial);
  return h;
}

std::string RequestForge::Seal(v1::Header header, const std::string& body) {
  auto keys = keys_.For(recipient_.kx_pk);
  CHASQUI_CHECK(keys.ok(), "session keys");
  std::string sealed = SealBody(header, (*keys)->tx, nonces_, body);
  return SignRaw(std::move(header), sealed);
}

std::string RequestForge::SignRaw(v1::Header header, const std::string& body) {
  std::promise<std::string> signed_wire;
  SignEnvelope(batch_, std::move(header), body,
               [&signed_wire](std::string w) { signed_wire.set_value(std::move(w)); });
  return signed_wire.get_future().get();
}

RawClient::RawClient(const Backbone& backbone, const std::string& entity, std::string env)
    : bus_(backbone.Connect("raw-" + entity)) {
  auto mux = RequestMux::Create(bus_.get(), EntityInboxPrefix(env, entity) + ".raw");
  CHASQUI_CHECK(mux.ok(), MessageOf(mux.status()));
  mux_ = *std::move(mux);
}

absl::StatusOr<v1::Header> RawClient::Send(const std::string& subject, const std::string& wire,
                                           absl::Duration timeout) {
  CHASQUI_ASSIGN_OR_RETURN(ParsedEnvelope e, SendForEnvelope(subject, wire, timeout));
  return e.header;
}

absl::StatusOr<ParsedEnvelope> RawClient::SendForEnvelope(const std::string& subject,
                                                          const std::string& wire,
                                                          absl::Duration timeout) {
  auto promise = std::make_shared<std::promise<absl::StatusOr<ParsedEnvelope>>>();
  auto future = promise->get_future();
  CHASQUI_RETURN_IF_ERROR(
      mux_->Request(subject, wire, timeout, [promise](MuxOutcome outcome, const BusMessage* reply) {
        if (outcome != MuxOutcome::kReply) {
          promise->set_value(absl::DeadlineExceededError("no answer"));
          return;
        }
        promise->set_value(ParseEnvelope(reply->data));
      }));
  return future.get();
}

}  // namespace chasqui::testing
