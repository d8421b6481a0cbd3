// No trace, no data (DESIGN.md, "One request, start to end", step 4; issue 6), over a real
// nats-server with the chasqui audit service in-process (its library, RocksDB in a temp dir, or
// a store whose sync the test holds): an exchange's record holds every field and is durable
// before the reply is relayed; a reply waits for a slow sync; with the audit service gone the
// consumer gets AUDIT_UNAVAILABLE and never the provider's reply; a duplicate through another
// router replica is refused REPLAYED by the audit's uniqueness; authenticated refusals are
// recorded, and refusals before authentication are counted, never recorded one by one.

#include <chrono>
#include <future>
#include <map>
#include <string>
#include <vector>

#include "common/core/status.h"
#include "common/crypto/sodium.h"
#include "common/envelope/envelope.h"
#include "common/envelope/errors.h"
#include "common/envelope/subjects.h"
#include "gtest/gtest.h"
#include "tests/services/audit/fake_kv_store.h"
#include "tests/services/router/backbone.h"
#include "tests/support/metrics.h"
#include "tests/support/wait_for.h"

namespace chasqui::testing {
namespace {

std::string ReqSubject(const std::string& consumer, const std::string& service) {
  return RequestSubjectFor("test", consumer, "segip", service);
}

BackboneOptions AuditOn() {
  BackboneOptions o;
  o.audit = BackboneOptions::Audit::kInProcess;
  // Due at every tick of the router's 1 s ticker.
  o.refusal_count_interval = absl::Milliseconds(100);
  return o;
}

std::string IdOf(const std::string& wire) {
  v1::Envelope e;
  CHASQUI_CHECK(e.ParseFromString(wire), "envelope");
  v1::Header h;
  CHASQUI_CHECK(h.ParseFromString(e.header()), "header");
  return h.id();
}

// Sum of the refusal counts in the chain, by "consumer/CODE", and how many entries hold them.
struct Counts {
  std::map<std::string, uint64_t> sum;
  std::map<std::string, int> entries;
};
Counts RefusalCounts(const Backbone& bb) {
  Counts c;
  for (const v1::ChainEntry& e : bb.AuditEntries()) {
    if (!e.has_refusal_count()) continue;
    const std::string key =
        e.refusal_count().consumer() + "/" + std::string(CodeName(e.refusal_count().reason()));
    c.sum[key] += e.refusal_count().count();
    ++c.entries[key];
  }
  return c;
}

TEST(RouterAuditTest, AnExchangeIsRecordedWithEveryFieldBeforeItsReplyIsRelayed) {
  Backbone bb(AuditOn());
  RawClient client(bb, "sin");
  RequestForge forge(bb.sin, bb.segip.pub);
  v1::Header h = forge.Header("persona_consulta");
  h.set_service_version("2");
  h.set_purpose("tramite-pasaporte");
  h.set_annex_id("annex-7");
  h.set_consent_ref("consent-42");
  const std::string wire = forge.Seal(h, R"({"ci":"4567890"})");
  v1::Envelope sent;
  ASSERT_TRUE(sent.ParseFromString(wire));
  v1::Header sent_header;
  ASSERT_TRUE(sent_header.ParseFromString(sent.header()));

  const int64_t before_ms = SystemClock().NowUnixMillis();
  auto answer = client.SendForEnvelope(ReqSubject("sin", "persona_consulta"), wire);
  // Read the store the moment the reply is here: its record must already be durable.
  const std::vector<v1::AuditRecord> records = bb.AuditRecordsFor(sent_header.id());
  const int64_t after_ms = SystemClock().NowUnixMillis();
  ASSERT_TRUE(answer.ok()) << answer.status();
  ASSERT_EQ(answer->header.kind(), v1::KIND_REPLY);
  ASSERT_EQ(records.size(), 1u) << "the reply arrived without its record in the chain";

  const v1::AuditRecord& r = records[0];
  EXPECT_EQ(r.request_id(), sent_header.id());
  EXPECT_EQ(r.sender_cert(), bb.sin.pub.serial);
  EXPECT_EQ(r.env(), "test");
  EXPECT_EQ(r.consumer(), "sin");
  EXPECT_EQ(r.provider(), "segip");
  EXPECT_EQ(r.service(), "persona_consulta");
  EXPECT_EQ(r.service_version(), "2");
  EXPECT_EQ(r.end_user(), "ana.perez");
  EXPECT_EQ(r.purpose(), "tramite-pasaporte");
  EXPECT_EQ(r.annex_id(), "annex-7");
  EXPECT_EQ(r.consent_ref(), "consent-42");
  EXPECT_EQ(CodeName(r.outcome()), CodeName(v1::OK));
  EXPECT_LE(before_ms, r.received_at_ms());
  EXPECT_LE(r.received_at_ms(), r.forwarded_at_ms());
  EXPECT_LE(r.forwarded_at_ms(), r.replied_at_ms());
  EXPECT_LE(r.replied_at_ms(), after_ms);
  EXPECT_EQ(r.request_body_bytes(), sent.body().size());
  EXPECT_EQ(r.request_body_hash(), sent_header.body_hash());
  EXPECT_EQ(r.reply_body_bytes(), answer->envelope.body().size());
  EXPECT_EQ(r.reply_body_hash(), answer->header.body_hash());
  // Both parties' exact signed bytes and batch signatures: what proves who asked and who
  // answered to a third party.
  EXPECT_EQ(r.request().header(), sent.header());
  EXPECT_EQ(r.request().sig().SerializeAsString(), sent.sig().SerializeAsString());
  EXPECT_EQ(r.reply().header(), answer->envelope.header());
  EXPECT_EQ(r.reply().sig().SerializeAsString(), answer->envelope.sig().SerializeAsString());
  EXPECT_EQ(r.replier_cert(), bb.segip.pub.serial);
  EXPECT_EQ(r.router_id(), "r1");
  // Never a body, not even sealed.
  const std::string stored = r.SerializeAsString();
  EXPECT_EQ(stored.find(sent.body()), std::string::npos);
  EXPECT_EQ(stored.find(answer->envelope.body()), std::string::npos);
  EXPECT_GE(SeriesValue(*bb.registry, "chasqui_router_audit_ack_seconds_count", {}), 1);
}

TEST(RouterAuditTest, TheReplyWaitsForASlowSync) {
  audit::testing::FakeKvStore store;
  BackboneOptions o = AuditOn();
  o.audit_store = &store;
  o.audit_client.timeout = absl::Seconds(10);
  Backbone bb(o);
  auto consumer = bb.MakeConsumer(bb.sin);
  store.Hold();  // the next sync does not return until released
  std::promise<CallResult> promise;
  auto result = promise.get_future();
  consumer->CallAsync("segip", "persona_consulta", "hola",
                      {.end_user = "ana.perez", .timeout = absl::Seconds(20)},
                      [&promise](CallResult r) { promise.set_value(std::move(r)); });
  ASSERT_TRUE(store.WaitForHeldWrite()) << "the record never reached the store";
  ASSERT_TRUE(WaitFor([&] { return bb.provider_system_calls.load() == 1; }));
  EXPECT_EQ(result.wait_for(std::chrono::milliseconds(500)), std::future_status::timeout)
      << "the reply left before its record was synced";
  EXPECT_TRUE(bb.AuditEntries().empty());
  store.Release();
  ASSERT_EQ(result.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  CallResult r = result.get();
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.body, "segip:sin:hola");
  auto id = FromHex(r.request_id, "request id");
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(bb.AuditRecordsFor(*id).size(), 1u);
  EXPECT_EQ(store.buffered_writes(), 0) << "a record was written without a sync";
}

TEST(RouterAuditTest, WithAuditGoneTheConsumerGetsAuditUnavailableAndNeverTheReply) {
  BackboneOptions o = AuditOn();
  // Long enough that the second request below is not the probe.
  o.audit_retry_interval = absl::Seconds(1);
  Backbone bb(o);
  RawClient client(bb, "sin");
  RequestForge forge(bb.sin, bb.segip.pub);
  const std::string subject = ReqSubject("sin", "persona_consulta");
  auto ok = client.Send(subject, forge.Seal(forge.Header("persona_consulta"), "uno"));
  ASSERT_TRUE(ok.ok()) << ok.status();
  ASSERT_EQ(ok->kind(), v1::KIND_REPLY);
  ASSERT_EQ(bb.provider_system_calls.load(), 1);

  bb.StopAudit();
  // Forwarded (nothing told the router yet), answered by the provider, and withheld.
  const std::string withheld_wire = forge.Seal(forge.Header("persona_consulta"), "dos");
  auto withheld = client.SendForEnvelope(subject, withheld_wire);
  ASSERT_TRUE(withheld.ok()) << withheld.status();
  EXPECT_EQ(withheld->header.kind(), v1::KIND_ERROR);
  EXPECT_EQ(CodeName(withheld->header.error().code()), CodeName(v1::AUDIT_UNAVAILABLE))
      << withheld->header.error().message();
  EXPECT_EQ(withheld->header.sender_cert(), bb.router_key.pub.serial) << "not the provider's";
  EXPECT_TRUE(withheld->envelope.body().empty());
  EXPECT_EQ(bb.provider_system_calls.load(), 2) << "the provider did answer this one";
  // Now known down: refused before any provider works for nothing.
  auto refused = client.Send(subject, forge.Seal(forge.Header("persona_consulta"), "tres"));
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_EQ(CodeName(refused->error().code()), CodeName(v1::AUDIT_UNAVAILABLE));
  EXPECT_EQ(bb.provider_system_calls.load(), 2);
  absl::Status ready = bb.router->Ready();
  EXPECT_FALSE(ready.ok());
  EXPECT_NE(ready.message().find("audit"), std::string::npos) << ready;
  EXPECT_EQ(SeriesValue(*bb.registry, "chasqui_router_requests_total",
                        {"code=\"AUDIT_UNAVAILABLE\""}),
            2);
  EXPECT_EQ(SeriesValue(*bb.registry, "chasqui_router_audit_up", {}), 0);

  // Back: the next probe finds it, and calls are served (and traced) again.
  bb.StartAudit();
  bool served = false;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!served && absl::Now() < deadline) {
    auto again = client.Send(subject, forge.Seal(forge.Header("persona_consulta"), "otra"));
    ASSERT_TRUE(again.ok()) << again.status();
    served = again->kind() == v1::KIND_REPLY;
    if (!served) {
      EXPECT_EQ(CodeName(again->error().code()), CodeName(v1::AUDIT_UNAVAILABLE));
      absl::SleepFor(absl::Milliseconds(100));
    }
  }
  EXPECT_TRUE(served) << "not served again within 10 s of the audit service's return";
  EXPECT_TRUE(bb.router->Ready().ok()) << bb.router->Ready();
  EXPECT_EQ(SeriesValue(*bb.registry, "chasqui_router_audit_up", {}), 1);
  EXPECT_TRUE(bb.AuditRecordsFor(IdOf(withheld_wire)).empty());
  // The refusals while it was away reach the trail as counts once it is back.
  ASSERT_TRUE(WaitFor([&] { return RefusalCounts(bb).sum["sin/AUDIT_UNAVAILABLE"] >= 2; }))
      << "AUDIT_UNAVAILABLE refusals never counted in the chain";
}

TEST(RouterAuditTest, ADuplicateThroughAnotherReplicaIsRefusedByTheAuditAndNeverReleased) {
  Backbone bb(AuditOn());
  RawClient client(bb, "sin");
  RequestForge forge(bb.sin, bb.segip.pub);
  const std::string subject = ReqSubject("sin", "persona_consulta");
  const std::string wire = forge.Seal(forge.Header("persona_consulta"), "hola");
  auto first = client.Send(subject, wire);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->kind(), v1::KIND_REPLY);

  // A second replica that has seen nothing takes over, and the duplicate reaches a gateway of
  // segip's whose seen-set is empty too (another replica): the provider runs it again.
  auto r2 = bb.StartRouter("r2", std::make_shared<prometheus::Registry>());
  bb.router.reset();
  bb.StartProvider();
  auto again = client.SendForEnvelope(subject, wire);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->header.kind(), v1::KIND_ERROR);
  EXPECT_EQ(CodeName(again->header.error().code()), CodeName(v1::REPLAYED))
      << again->header.error().message();
  EXPECT_EQ(again->header.sender_cert(), bb.router_key.pub.serial)
      << "refused by the router after the audit said duplicate, not by the provider";
  EXPECT_NE(again->header.error().message().find("already traced"), std::string::npos)
      << again->header.error().message();
  EXPECT_TRUE(again->envelope.body().empty()) << "the provider's reply was released";
  EXPECT_EQ(bb.provider_system_calls.load(), 2) << "the duplicate did reach the provider";
  const auto records = bb.AuditRecordsFor(IdOf(wire));
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].router_id(), "r1");
  EXPECT_EQ(CodeName(records[0].outcome()), CodeName(v1::OK));
}

TEST(RouterAuditTest, AuthenticatedRefusalsAreRecordedAndReplaysCounted) {
  Backbone bb(AuditOn());
  RawClient client(bb, "sin");
  RequestForge forge(bb.sin, bb.segip.pub);
  const std::string subject = ReqSubject("sin", "persona_consulta");
  auto expect_recorded = [&](const std::string& wire, v1::Code code) {
    auto answer = client.SendForEnvelope(subject, wire);
    ASSERT_TRUE(answer.ok()) << answer.status();
    ASSERT_EQ(CodeName(answer->header.error().code()), CodeName(code));
    std::vector<v1::AuditRecord> records;
    ASSERT_TRUE(WaitFor([&] {
      records = bb.AuditRecordsFor(IdOf(wire));
      return !records.empty();
    })) << CodeName(code) << " was not recorded";
    ASSERT_EQ(records.size(), 1u);
    const v1::AuditRecord& r = records[0];
    EXPECT_EQ(CodeName(r.outcome()), CodeName(code));
    EXPECT_EQ(r.forwarded_at_ms(), 0) << "a refusal is never forwarded";
    EXPECT_EQ(r.consumer(), "sin");
    EXPECT_EQ(r.end_user(), "ana.perez");
    v1::Envelope sent;
    ASSERT_TRUE(sent.ParseFromString(wire));
    EXPECT_EQ(r.request().header(), sent.header());
    // The router's signed refusal is the reply half.
    EXPECT_EQ(r.reply().header(), answer->envelope.header());
    EXPECT_EQ(r.reply().sig().SerializeAsString(), answer->envelope.sig().SerializeAsString());
    EXPECT_EQ(r.replier_cert(), bb.router_key.pub.serial);
  };
  v1::Header old = forge.Header("persona_consulta");
  old.set_sent_at_ms(old.sent_at_ms() - 31'000);
  expect_recorded(forge.Seal(old, "hola"), v1::EXPIRED);
  v1::Header misaddressed = forge.Header("persona_consulta");
  misaddressed.set_recipient_cert(bb.aduana.pub.serial);
  expect_recorded(forge.Seal(misaddressed, "hola"), v1::BAD_REQUEST);

  // A replay cannot take its exchange's (sender, id): it is counted.
  const std::string wire = forge.Seal(forge.Header("persona_consulta"), "hola");
  auto first = client.Send(subject, wire);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->kind(), v1::KIND_REPLY);
  auto replay = client.Send(subject, wire);
  ASSERT_TRUE(replay.ok()) << replay.status();
  ASSERT_EQ(CodeName(replay->error().code()), CodeName(v1::REPLAYED));
  ASSERT_TRUE(WaitFor([&] { return RefusalCounts(bb).sum["sin/REPLAYED"] == 1; }))
      << "the replay was not counted";
  const auto records = bb.AuditRecordsFor(IdOf(wire));
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(CodeName(records[0].outcome()), CodeName(v1::OK));
}

TEST(RouterAuditTest, RefusalsBeforeAuthenticationAreCountedNeverRecordedOneByOne) {
  Backbone bb(AuditOn());
  RawClient client(bb, "sin");
  const std::string subject = ReqSubject("sin", "persona_consulta");
  constexpr int kGarbage = 20;
  for (int i = 0; i < kGarbage; ++i) {
    auto answer = client.Send(subject, "\xff not an envelope " + std::to_string(i));
    ASSERT_TRUE(answer.ok()) << answer.status();
    ASSERT_EQ(CodeName(answer->error().code()), CodeName(v1::BAD_REQUEST));
  }
  RequestForge mallory(bb.mallory, bb.segip.pub);
  for (int i = 0; i < 2; ++i) {
    v1::Header h = mallory.Header("persona_consulta");
    h.set_consumer("sin");
    auto answer = client.Send(subject, mallory.Seal(h, "hola"));
    ASSERT_TRUE(answer.ok()) << answer.status();
    ASSERT_EQ(CodeName(answer->error().code()), CodeName(v1::UNAUTHENTICATED));
  }
  // A drop: a reply subject outside sin's inbox; never answered, still counted.
  RequestForge forge(bb.sin, bb.segip.pub);
  ASSERT_TRUE(client.bus()
                  .Publish(subject, forge.Seal(forge.Header("persona_consulta"), "x"),
                           "_INBOX.test.aduana.stolen.1")
                  .ok());
  ASSERT_TRUE(client.bus().Flush(absl::Seconds(2)).ok());
  ASSERT_TRUE(WaitFor([&] {
    Counts c = RefusalCounts(bb);
    return c.sum["sin/BAD_REQUEST"] == kGarbage + 1 && c.sum["sin/UNAUTHENTICATED"] == 2;
  })) << "counts in the chain: BAD_REQUEST " << RefusalCounts(bb).sum["sin/BAD_REQUEST"]
      << ", UNAUTHENTICATED " << RefusalCounts(bb).sum["sin/UNAUTHENTICATED"];
  Counts c = RefusalCounts(bb);
  EXPECT_LE(c.entries["sin/BAD_REQUEST"], 3) << "counts, not one entry per refusal";
  for (const v1::ChainEntry& e : bb.AuditEntries()) {
    EXPECT_FALSE(e.has_record()) << "a refusal before authentication was recorded: "
                                 << CodeName(e.record().outcome());
  }
}

}  // namespace
}  // namespace chasqui::testing
