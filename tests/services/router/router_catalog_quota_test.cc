// The router's catalog and quota checks (DESIGN.md, "One request, start to end", step 2: grant,
// end user, quota), over a real nats-server with the real router and segip's provider gateway.
// The catalog is the catalog library in-process (RocksDB in a temp dir, people with
// certificates from a test root); every change it accepts is verified as a signed event and
// applied to the router's CatalogSnapshot, as a CatalogFollower would. Quotas come from the
// quota service in-process over NATS (ledger on RocksDB), drawn by a real QuotaEnforcer through
// a NatsLeaseSource. Each refusal carries the check's own code and never reaches the provider's
// system; a cap of N admits exactly N; authenticated refusals are recorded in the audit chain.

#include <memory>
#include <string>

#include "absl/time/civil_time.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/core/clock.h"
#include "common/core/status.h"
#include "common/envelope/errors.h"
#include "common/envelope/subjects.h"
#include "common/store/kv_store.h"
#include "gtest/gtest.h"
#include "services/catalog/catalog.h"
#include "services/catalog/catalog_signing.h"
#include "services/catalog/catalog_snapshot.h"
#include "services/quota/quota_service.h"
#include "tests/services/catalog/catalog_test_support.h"
#include "tests/services/quota/quota_test_support.h"
#include "tests/services/router/backbone.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait_for.h"

namespace chasqui::testing {
namespace {

constexpr char kService[] = "persona_consulta";
constexpr char kUser[] = "ci-4455667";
const std::string kGrantKey = GrantKeyString("test", "sin", "segip", kService);

std::string ReqSubject(const std::string& consumer, const std::string& service) {
  return RequestSubjectFor("test", consumer, "segip", service);
}

std::string IdOf(const std::string& wire) {
  v1::Envelope e;
  CHASQUI_CHECK(e.ParseFromString(wire), "envelope");
  v1::Header h;
  CHASQUI_CHECK(h.ParseFromString(e.header()), "header");
  return h.id();
}

class RouterCatalogQuotaTest : public ::testing::Test {
 protected:
  RouterCatalogQuotaTest() : world_(SystemClock().NowUnixMillis()), signer_(world_.Signer()) {}

  // The backbone, the catalog (segip publishes persona_consulta, sin holds an active grant
  // for it in test and registers end user kUser), and, with `per_day` > 0, a quota service
  // capping that grant at `per_day` requests a day. Its router r1 is replaced by r2, which
  // checks the catalog (and the quota, if any).
  void Start(BackboneOptions options, uint64_t per_day) {
    bb_ = std::make_unique<Backbone>(std::move(options));
    auto store = KvStore::Open({.path = dir_.File("catalog")});
    ASSERT_TRUE(store.ok()) << store.status();
    catalog_store_ = *std::move(store);
    CatalogOptions co;
    co.nta_hash = NtaHash();
    auto c = Catalog::Open(co, catalog_store_.get(), *world_.dirs.lookup, *signer_, SystemClock());
    ASSERT_TRUE(c.ok()) << c.status();
    catalog_ = *std::move(c);
    Do("register_entity", RegisterEntity("segip", "SEGIP"), world_.op);
    Do("register_entity", RegisterEntity("sin", "Impuestos Nacionales"), world_.op);
    Do("adhere", Adhere("segip"), world_.segip_mae);
    Do("adhere", Adhere("sin"), world_.sin_mae);
    Do("submit", Submit("segip", Spec(kService, v1::CLASSIFICATION_PUBLIC)), world_.segip_mgr);
    Do("publish", ServiceDecision("publish", "segip", kService), world_.op);
    // Public: the grant is active on request.
    Do("request_access", RequestAccess("test", "sin", "segip", kService), world_.sin_mgr);
    Do("register_end_user", EndUser(true, "sin", kUser), world_.sin_mgr);
    ASSERT_TRUE(snapshot_.Check("sin", "segip", kService, kUser).ok());

    if (per_day > 0) {
      auto qs = KvStore::Open({.path = dir_.File("quota")});
      ASSERT_TRUE(qs.ok()) << qs.status();
      quota_store_ = *std::move(qs);
      auto ledger = QuotaLedger::Open(QuotaLedgerOptions(), quota_store_.get(), SystemClock());
      ASSERT_TRUE(ledger.ok()) << ledger.status();
      ledger_ = *std::move(ledger);
      ASSERT_TRUE(
          ledger_->SetPolicy(Policy(Grant("sin", "segip", kService), 0, 0, per_day, 0), "test")
              .ok());
      control_ = std::make_unique<QuotaControl>(QuotaControlOptions(), ledger_.get(), &signers_,
                                                SystemClock());
      quota_bus_ = bb_->Connect("quota");
      auto service = QuotaService::Start(QuotaServiceOptions(), quota_bus_.get(), ledger_.get(),
                                         control_.get(),
                                         std::make_shared<prometheus::Registry>());
      ASSERT_TRUE(service.ok()) << service.status();
      quota_service_ = *std::move(service);
      lease_bus_ = bb_->Connect("router-r2-quota");
      auto source = NatsLeaseSource::Create(lease_bus_.get(), "_INBOX._router.test.r2.quota");
      ASSERT_TRUE(source.ok()) << source.status();
      lease_source_ = *std::move(source);
      QuotaEnforcerOptions eo;
      eo.router_id = "r2";
      auto enforcer = QuotaEnforcer::Create(eo, lease_source_.get(), SystemClock());
      ASSERT_TRUE(enforcer.ok()) << enforcer.status();
      enforcer_ = *std::move(enforcer);
    }
    bb_->router.reset();  // r1 checks nothing; r2 alone serves the queue group
    bb_->router = bb_->StartRouter("r2", std::make_shared<prometheus::Registry>(),
                                   [this](RouterOptions& o) {
                                     o.catalog = &snapshot_;
                                     o.quota = enforcer_.get();
                                   });
  }
  void TearDown() override {
    // The router goes first: it holds pointers to the snapshot and the enforcer.
    if (bb_ != nullptr) bb_->router.reset();
  }

  // A change as a person sends it; its signed event is verified and applied to the router's
  // snapshot.
  void Do(const std::string& verb, const v1::CatalogControlBody& body, const Holder& who) {
    auto change = catalog_->Change(verb, Signed(body, who, SystemClock().NowUnixMillis()));
    ASSERT_TRUE(change.ok()) << verb << ": " << change.status();
    auto event = VerifyCatalogEvent(change->event, "test", *world_.dirs.lookup,
                                    SystemClock().NowUnixMillis());
    ASSERT_TRUE(event.ok()) << event.status();
    ASSERT_TRUE(snapshot_.Apply(*event).ok());
  }

  // A request from `consumer` for `service` on behalf of `end_user`; its wire bytes.
  std::string Wire(const Identity& consumer, const std::string& service,
                   const std::string& end_user = kUser) {
    auto& forge = consumer.pub.entity == "sin" ? sin_forge_ : aduana_forge_;
    if (forge == nullptr) forge = std::make_unique<RequestForge>(consumer, bb_->segip.pub);
    v1::Header h = forge->Header(service);
    h.set_end_user(end_user);
    return forge->Seal(h, R"({"ci":"4455667"})");
  }

  World world_;
  std::unique_ptr<LocalCatalogSigner> signer_;
  CatalogSnapshot snapshot_{"test"};
  TempDir dir_;
  std::unique_ptr<Backbone> bb_;
  std::unique_ptr<KvStore> catalog_store_;
  std::unique_ptr<Catalog> catalog_;
  FakeSigners signers_;
  std::unique_ptr<KvStore> quota_store_;
  std::unique_ptr<QuotaLedger> ledger_;
  std::unique_ptr<QuotaControl> control_;
  std::unique_ptr<Bus> quota_bus_;
  std::unique_ptr<QuotaService> quota_service_;
  std::unique_ptr<Bus> lease_bus_;
  std::unique_ptr<NatsLeaseSource> lease_source_;
  std::unique_ptr<QuotaEnforcer> enforcer_;
  std::unique_ptr<RequestForge> sin_forge_, aduana_forge_;
};

TEST_F(RouterCatalogQuotaTest, CatalogRefusalsCarryTheirCodeAndNeverReachTheProvider) {
  ASSERT_NO_FATAL_FAILURE(Start(BackboneOptions(), /*per_day=*/0));
  RawClient sin(*bb_, "sin");
  RawClient aduana(*bb_, "aduana");
  // Each refusal carries the catalog's own code and message, word for word.
  auto expect_refused = [&](RawClient& client, const std::string& consumer,
                            const std::string& service, const std::string& user, v1::Code want) {
    const Identity& id = consumer == "sin" ? bb_->sin : bb_->aduana;
    auto answer = client.Send(ReqSubject(consumer, service), Wire(id, service, user));
    ASSERT_TRUE(answer.ok()) << answer.status();
    ASSERT_EQ(answer->kind(), v1::KIND_ERROR) << consumer << " " << service << " " << user;
    EXPECT_EQ(CodeName(answer->error().code()), CodeName(want));
    const absl::Status expected = snapshot_.Check(consumer, "segip", service, user).status();
    EXPECT_EQ(answer->error().message(), MessageOf(expected));
  };

  // `slow` is served by segip's gateway but not published in the catalog.
  expect_refused(sin, "sin", "slow", kUser, v1::NOT_FOUND);
  // aduana holds no grant for persona_consulta.
  expect_refused(aduana, "aduana", kService, kUser, v1::FORBIDDEN);
  // Never registered, then registered and disabled.
  expect_refused(sin, "sin", kService, "ci-0000001", v1::END_USER_UNKNOWN);
  Do("register_end_user", EndUser(true, "sin", "ci-0000002"), world_.sin_mgr);
  Do("disable_end_user", EndUser(false, "sin", "ci-0000002"), world_.sin_mgr);
  expect_refused(sin, "sin", kService, "ci-0000002", v1::END_USER_UNKNOWN);
  // A grant suspended after the router started is refused from the next request on.
  auto ok = sin.Send(ReqSubject("sin", kService), Wire(bb_->sin, kService));
  ASSERT_TRUE(ok.ok()) << ok.status();
  ASSERT_EQ(ok->kind(), v1::KIND_REPLY) << ok->error().message();
  EXPECT_EQ(bb_->provider_system_calls.load(), 1);
  Do("suspend", GrantDecision("suspend", "test", "sin", "segip", kService, "audit"),
     world_.segip_mgr);
  expect_refused(sin, "sin", kService, kUser, v1::FORBIDDEN);
  // Only the one granted request reached segip's system.
  EXPECT_EQ(bb_->provider_system_calls.load(), 1);
}

// A router given a catalog it has not loaded yet answers UNAVAILABLE (retry), never NOT_FOUND.
TEST_F(RouterCatalogQuotaTest, AnUnloadedCatalogIsUnavailableNotNotFound) {
  ASSERT_NO_FATAL_FAILURE(Start(BackboneOptions(), /*per_day=*/0));
  CatalogSnapshot empty("test");
  ASSERT_FALSE(empty.loaded());
  bb_->router.reset();
  bb_->router = bb_->StartRouter("r3", std::make_shared<prometheus::Registry>(),
                                 [&empty](RouterOptions& o) { o.catalog = &empty; });
  RawClient sin(*bb_, "sin");
  auto answer = sin.Send(ReqSubject("sin", kService), Wire(bb_->sin, kService));
  ASSERT_TRUE(answer.ok()) << answer.status();
  ASSERT_EQ(answer->kind(), v1::KIND_ERROR);
  EXPECT_EQ(CodeName(answer->error().code()), CodeName(v1::UNAVAILABLE));
  EXPECT_NE(answer->error().message().find("no catalog snapshot yet"), std::string::npos)
      << answer->error().message();
  EXPECT_EQ(bb_->provider_system_calls.load(), 0);
  bb_->router.reset();  // before `empty` goes
}

TEST_F(RouterCatalogQuotaTest, ACapOfNAdmitsExactlyNThenQuotaExceededUntilLaPazMidnight) {
  constexpr int kCap = 3;
  ASSERT_NO_FATAL_FAILURE(Start(BackboneOptions(), kCap));
  RawClient sin(*bb_, "sin");
  const std::string subject = ReqSubject("sin", kService);

  // The router has drawn no lease for the grant yet: UNAVAILABLE, retry soon; nothing spent.
  auto first = sin.Send(subject, Wire(bb_->sin, kService));
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->kind(), v1::KIND_ERROR);
  EXPECT_EQ(CodeName(first->error().code()), CodeName(v1::UNAVAILABLE));
  EXPECT_EQ(first->error().retry_after_ms(), QuotaEnforcerOptions().no_lease_retry_ms);
  EXPECT_NE(first->error().message().find("no_lease"), std::string::npos)
      << first->error().message();

  // A client that retries UNAVAILABLE after its retry_after (the enforcer may be between
  // leases: the quota service hands out the cap in slices) until it is told QUOTA_EXCEEDED.
  int replies = 0;
  absl::StatusOr<v1::Header> over;
  int64_t before_ms = 0, after_ms = 0;
  for (int i = 0; i < 200; ++i) {
    // In whole milliseconds, as the router's clock reads them.
    before_ms = SystemClock().NowUnixMillis();
    over = sin.Send(subject, Wire(bb_->sin, kService));
    after_ms = SystemClock().NowUnixMillis();
    ASSERT_TRUE(over.ok()) << over.status();
    if (over->kind() == v1::KIND_REPLY) {
      ++replies;
      continue;
    }
    if (over->error().code() != v1::UNAVAILABLE) break;
    absl::SleepFor(absl::Milliseconds(over->error().retry_after_ms()));
  }
  EXPECT_EQ(replies, kCap);
  EXPECT_EQ(bb_->provider_system_calls.load(), kCap);

  absl::TimeZone la_paz;
  ASSERT_TRUE(absl::LoadTimeZone("America/La_Paz", &la_paz));
  ASSERT_EQ(over->kind(), v1::KIND_ERROR);
  EXPECT_EQ(CodeName(over->error().code()), CodeName(v1::QUOTA_EXCEEDED));
  EXPECT_NE(over->error().message().find("day limit"), std::string::npos)
      << over->error().message();
  // Until the next midnight in La Paz, as seen between sending and the answer.
  const int64_t midnight_ms = absl::ToUnixMillis(absl::FromCivil(
      absl::ToCivilDay(absl::FromUnixMillis(before_ms), la_paz) + 1, la_paz));
  EXPECT_GE(over->error().retry_after_ms(), midnight_ms - after_ms);
  EXPECT_LE(over->error().retry_after_ms(), midnight_ms - before_ms);
}

TEST_F(RouterCatalogQuotaTest, CatalogAndQuotaRefusalsAreRecordedInTheAuditChain) {
  BackboneOptions o;
  o.audit = BackboneOptions::Audit::kInProcess;
  ASSERT_NO_FATAL_FAILURE(Start(std::move(o), /*per_day=*/1));
  RawClient sin(*bb_, "sin");
  RawClient aduana(*bb_, "aduana");
  const std::string subject = ReqSubject("sin", kService);
  ASSERT_TRUE(enforcer_->Prepare(kGrantKey).ok());
  ASSERT_TRUE(WaitFor([&] {
    auto v = enforcer_->View(kGrantKey);
    return v.ok() && v->allowance > 0;
  })) << "no allowance drawn from the quota service";

  // One refusal of each kind, and the one request the cap allows.
  auto expect_recorded = [&](RawClient& client, const std::string& subj, const std::string& wire,
                             v1::Code want) {
    auto answer = client.SendForEnvelope(subj, wire);
    ASSERT_TRUE(answer.ok()) << answer.status();
    EXPECT_EQ(CodeName(answer->header.kind() == v1::KIND_ERROR ? answer->header.error().code()
                                                                 : v1::OK),
              CodeName(want));
    std::vector<v1::AuditRecord> records;
    ASSERT_TRUE(WaitFor([&] {
      records = bb_->AuditRecordsFor(IdOf(wire));
      return !records.empty();
    })) << CodeName(want) << " was not recorded";
    ASSERT_EQ(records.size(), 1u);
    EXPECT_EQ(CodeName(records[0].outcome()), CodeName(want));
    // The router's signed answer, exactly as the consumer got it.
    EXPECT_EQ(records[0].reply().header(), answer->envelope.header());
  };
  expect_recorded(sin, ReqSubject("sin", "slow"), Wire(bb_->sin, "slow"), v1::NOT_FOUND);
  expect_recorded(aduana, ReqSubject("aduana", kService), Wire(bb_->aduana, kService),
                  v1::FORBIDDEN);
  expect_recorded(sin, subject, Wire(bb_->sin, kService, "ci-0000001"), v1::END_USER_UNKNOWN);
  expect_recorded(sin, subject, Wire(bb_->sin, kService), v1::OK);
  ASSERT_TRUE(WaitFor([&] {
    auto v = enforcer_->View(kGrantKey);
    return v.ok() && v->cap_reached == v1::QUOTA_LIMIT_DAY;
  }));
  expect_recorded(sin, subject, Wire(bb_->sin, kService), v1::QUOTA_EXCEEDED);
  EXPECT_EQ(bb_->provider_system_calls.load(), 1);
}

}  // namespace
}  // namespace chasqui::testing
