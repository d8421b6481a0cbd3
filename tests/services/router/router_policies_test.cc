// What chasqui-router runs with --catalog and --quota (issues 4 and 5): RouterPolicies keeping
// a router's catalog snapshot current and drawing its quota leases, over a real nats-server,
// with the catalog service and the quota service in-process (RocksDB in a temp dir, people's
// certificates from a test root, every catalog change a signed request over NATS). The routers
// are the real router library with the backbone's provider segip behind them.

#include "services/router/router_policies.h"

#include <atomic>
#include <chrono>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/core/clock.h"
#include "common/core/status.h"
#include "common/envelope/errors.h"
#include "common/envelope/subjects.h"
#include "common/store/kv_store.h"
#include "gtest/gtest.h"
#include "services/catalog/catalog.h"
#include "services/catalog/catalog_client.h"
#include "services/catalog/catalog_service.h"
#include "services/quota/quota_service.h"
#include "tests/services/catalog/catalog_test_support.h"
#include "tests/services/quota/quota_test_support.h"
#include "tests/services/router/backbone.h"
#include "tests/support/metrics.h"
#include "tests/support/run_command.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait_for.h"

namespace chasqui::testing {
namespace {

constexpr char kService[] = "persona_consulta";
constexpr char kUser[] = "ci-4455667";
const std::string kGrantKey = GrantKeyString("test", "sin", "segip", kService);
const std::string kSubject = RequestSubjectFor("test", "sin", "segip", kService);

std::string Msg(const absl::Status& s) { return std::string(MessageOf(s)); }

// A router with its policies, the way chasqui-router wires them.
struct PolicedRouter {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  std::unique_ptr<Bus> bus;
  std::unique_ptr<RouterPolicies> policies;
  std::unique_ptr<Router> router;
  // A series with labels through SeriesValue; one without is exposed as `name value`.
  double Metric(const std::string& name, const std::vector<std::string>& labels = {}) {
    if (!labels.empty()) return SeriesValue(*registry, name, labels);
    const std::string text = "\n" + ExpositionText(*registry);
    const size_t at = text.find("\n" + name + " ");
    return at == std::string::npos ? -1 : std::stod(text.substr(at + name.size() + 2));
  }
};

class RouterPoliciesTest : public ::testing::Test {
 protected:
  RouterPoliciesTest() : world_(SystemClock().NowUnixMillis()), signer_(world_.Signer()) {}

  void SetUp() override {
    bb_ = std::make_unique<Backbone>();
    bb_->router.reset();  // the backbone's r1 checks nothing: the tests' routers serve alone
    people_bus_ = bb_->Connect("people");
    auto client = CatalogClient::Create(people_bus_.get(), "_INBOX.test.agetic.cli");
    ASSERT_TRUE(client.ok()) << client.status();
    people_ = *std::move(client);
    ASSERT_NO_FATAL_FAILURE(StartCatalog());
  }
  void TearDown() override {
    // Routers first: they hold their policies' snapshot and enforcer.
    for (auto& r : routers_) r->router.reset();
    routers_.clear();
  }

  void StartCatalog() {
    auto store = KvStore::Open({.path = dir_.File("catalog")});
    ASSERT_TRUE(store.ok()) << store.status();
    catalog_store_ = *std::move(store);
    CatalogOptions co;
    co.nta_hash = NtaHash();
    auto c = Catalog::Open(co, catalog_store_.get(), *world_.dirs.lookup, *signer_, SystemClock());
    ASSERT_TRUE(c.ok()) << c.status();
    catalog_ = *std::move(c);
    catalog_bus_ = bb_->Connect("catalog");
    auto s = CatalogService::Start({}, catalog_bus_.get(), catalog_.get(),
                                   std::make_shared<prometheus::Registry>());
    ASSERT_TRUE(s.ok()) << s.status();
    catalog_service_ = *std::move(s);
  }
  void StopCatalog() {
    catalog_service_.reset();
    catalog_bus_.reset();
    catalog_.reset();
    catalog_store_.reset();
  }

  // The quota service capping sin's grant at `per_day` a day (and aduana's, unused, likewise).
  void StartQuota(uint64_t per_day) {
    if (ledger_ == nullptr) {
      auto store = KvStore::Open({.path = dir_.File("quota")});
      ASSERT_TRUE(store.ok()) << store.status();
      quota_store_ = *std::move(store);
      auto ledger = QuotaLedger::Open(QuotaLedgerOptions(), quota_store_.get(), SystemClock());
      ASSERT_TRUE(ledger.ok()) << ledger.status();
      ledger_ = *std::move(ledger);
      ASSERT_TRUE(
          ledger_->SetPolicy(Policy(Grant("sin", "segip", kService), 0, 0, per_day, 0), "test")
              .ok());
      control_ = std::make_unique<QuotaControl>(QuotaControlOptions(), ledger_.get(), &signers_,
                                                SystemClock());
    }
    quota_bus_ = bb_->Connect("quota");
    auto service = QuotaService::Start(QuotaServiceOptions(), quota_bus_.get(), ledger_.get(),
                                       control_.get(), std::make_shared<prometheus::Registry>());
    ASSERT_TRUE(service.ok()) << service.status();
    quota_service_ = *std::move(service);
  }
  // As far as the routers can tell, a kill: its subscriptions and connection are gone.
  void StopQuota() {
    quota_service_.reset();
    quota_bus_.reset();
  }
  uint64_t DayConsumed() {
    v1::UsageRequest req;
    auto u = ledger_->Usage(req);
    EXPECT_TRUE(u.ok()) << u.status();
    for (const v1::GrantUsage& g : u->grants()) {
      if (GrantKeyString(g.policy().grant()) == kGrantKey) return g.day_consumed();
    }
    return 0;
  }

  absl::Status Change(const std::string& verb, const v1::CatalogControlBody& body,
                      const Holder& who) {
    return people_
        ->Change(verb, MakeCatalogRequest(body, who.env, who.serial, who.key,
                                          SystemClock().NowUnixMillis()))
        .status();
  }
  void Ok(const std::string& verb, const v1::CatalogControlBody& body, const Holder& who) {
    absl::Status s = Change(verb, body, who);
    ASSERT_TRUE(s.ok()) << verb << ": " << s;
  }
  // segip publishes kService with `c`; sin adheres and registers kUser. With a public service,
  // sin's access request is granted at once.
  void Story(v1::Classification c) {
    Ok("register_entity", RegisterEntity("segip", "SEGIP"), world_.op);
    Ok("register_entity", RegisterEntity("sin", "Impuestos Nacionales"), world_.op);
    Ok("adhere", Adhere("segip"), world_.segip_mae);
    Ok("adhere", Adhere("sin"), world_.sin_mae);
    Ok("submit", Submit("segip", Spec(kService, c)), world_.segip_mgr);
    Ok("publish", ServiceDecision("publish", "segip", kService), world_.op);
    Ok("register_end_user", EndUser(true, "sin", kUser), world_.sin_mgr);
    Ok("request_access", RequestAccess("test", "sin", "segip", kService), world_.sin_mgr);
  }

  static RouterPoliciesOptions Options(bool catalog, bool quota) {
    RouterPoliciesOptions o;
    o.catalog = catalog;
    o.quota = quota;
    o.follower.retry = absl::Milliseconds(50);
    o.follower.resync = absl::Milliseconds(200);  // notice a catalog that went away soon
    o.quota_timeout = absl::Milliseconds(500);
    o.tick = absl::Milliseconds(20);
    return o;
  }

  // Starts `id`'s policies, loads the catalog, and puts a router in the queue group that
  // enforces them.
  PolicedRouter* AddRouter(const std::string& id, const RouterPoliciesOptions& options) {
    auto r = std::make_unique<PolicedRouter>();
    r->bus = bb_->Connect("policies-" + id);
    auto p = RouterPolicies::Start(options, r->bus.get(), "test", id, world_.dirs.lookup.get(),
                                   r->registry);
    EXPECT_TRUE(p.ok()) << p.status();
    if (!p.ok()) return nullptr;
    r->policies = *std::move(p);
    absl::Status loaded = r->policies->LoadCatalog(absl::Seconds(10));
    EXPECT_TRUE(loaded.ok()) << loaded;
    EXPECT_TRUE(r->policies->Ready().ok()) << r->policies->Ready();
    RouterPolicies* policies = r->policies.get();
    r->router = bb_->StartRouter(id, r->registry, [policies](RouterOptions& o) {
      o.catalog = policies->catalog();
      o.quota = policies->quota();
    });
    routers_.push_back(std::move(r));
    return routers_.back().get();
  }
  static bool HasLease(const PolicedRouter& r, const std::string& key = kGrantKey) {
    auto v = r.policies->quota()->View(key);
    return v.ok() && v->has_lease;
  }

  // A request from sin on behalf of `user`; its answer's header.
  absl::StatusOr<v1::Header> Send(RawClient& client, RequestForge& forge,
                                  const std::string& user = kUser) {
    v1::Header h = forge.Header(kService);
    h.set_end_user(user);
    return client.Send(kSubject, forge.Seal(h, R"({"ci":"4455667"})"));
  }
  static std::string Code(const absl::StatusOr<v1::Header>& answer) {
    if (!answer.ok()) return Msg(answer.status());
    return answer->kind() == v1::KIND_REPLY ? "OK" : std::string(CodeName(answer->error().code()));
  }

  World world_;
  std::unique_ptr<LocalCatalogSigner> signer_;
  TempDir dir_;
  std::unique_ptr<Backbone> bb_;
  std::unique_ptr<Bus> people_bus_;
  std::unique_ptr<CatalogClient> people_;
  std::unique_ptr<KvStore> catalog_store_;
  std::unique_ptr<Catalog> catalog_;
  std::unique_ptr<Bus> catalog_bus_;
  std::unique_ptr<CatalogService> catalog_service_;
  FakeSigners signers_;
  std::unique_ptr<KvStore> quota_store_;
  std::unique_ptr<QuotaLedger> ledger_;
  std::unique_ptr<QuotaControl> control_;
  std::unique_ptr<Bus> quota_bus_;
  std::unique_ptr<QuotaService> quota_service_;
  std::vector<std::unique_ptr<PolicedRouter>> routers_;
};

TEST_F(RouterPoliciesTest, GrantedPassesUngrantedIsForbiddenAndAnApprovalTakesEffectLive) {
  ASSERT_NO_FATAL_FAILURE(StartQuota(1000));
  ASSERT_NO_FATAL_FAILURE(Story(v1::CLASSIFICATION_PRIVATE));  // sin's request is pending
  PolicedRouter* r = AddRouter("r2", Options(true, true));
  ASSERT_NE(r, nullptr);
  EXPECT_TRUE(WaitFor([&] { return r->Metric("chasqui_router_catalog_snapshot_version") == 8; }));
  RawClient sin(*bb_, "sin");
  RequestForge forge(bb_->sin, bb_->segip.pub);
  RawClient aduana(*bb_, "aduana");
  RequestForge aduana_forge(bb_->aduana, bb_->segip.pub);

  // Pending: refused with the catalog's reason; aduana never asked at all.
  auto pending = Send(sin, forge);
  EXPECT_EQ(Code(pending), "FORBIDDEN");
  v1::Header h = aduana_forge.Header(kService);
  h.set_end_user(kUser);
  auto stranger = aduana.Send(RequestSubjectFor("test", "aduana", "segip", kService),
                              aduana_forge.Seal(h, "{}"));
  EXPECT_EQ(Code(stranger), "FORBIDDEN");
  EXPECT_EQ(bb_->provider_system_calls.load(), 0);

  // segip's manager approves while the router runs: the event reaches the snapshot, and the
  // new grant's first lease is drawn before any request, so the first one passes.
  Ok("approve", GrantDecision("approve", "test", "sin", "segip", kService), world_.segip_mgr);
  ASSERT_TRUE(WaitFor([&] { return HasLease(*r); })) << "no lease drawn for the new grant";
  EXPECT_EQ(Code(Send(sin, forge)), "OK");
  EXPECT_EQ(Code(Send(sin, forge)), "OK");
  EXPECT_EQ(bb_->provider_system_calls.load(), 2);
  // An end user the consumer never registered is still refused.
  EXPECT_EQ(Code(Send(sin, forge, "ci-0000001")), "END_USER_UNKNOWN");

  // Revoked while the router runs: refused from the next request on.
  Ok("revoke", GrantDecision("revoke", "test", "sin", "segip", kService, "misuse"),
     world_.segip_mgr);
  ASSERT_TRUE(WaitFor([&] { return r->policies->catalog()->version() == 10; }));
  EXPECT_EQ(Code(Send(sin, forge)), "FORBIDDEN");
  EXPECT_EQ(bb_->provider_system_calls.load(), 2);

  EXPECT_TRUE(WaitFor([&] {
    return r->Metric("chasqui_router_catalog_events_total", {"outcome=\"applied\""}) == 2;
  })) << r->Metric("chasqui_router_catalog_events_total", {"outcome=\"applied\""});
  EXPECT_EQ(r->Metric("chasqui_router_catalog_events_total", {"outcome=\"refused\""}), 0);
  EXPECT_EQ(r->Metric("chasqui_router_quota_grants_prepared"), 1);
  // Drain gives back what the router did not spend: the ledger counts exactly the two served.
  ASSERT_TRUE(r->router->Drain(absl::Seconds(2)).ok());
  ASSERT_TRUE(r->policies->Drain().ok());
  EXPECT_EQ(DayConsumed(), 2u);
}

TEST_F(RouterPoliciesTest, ACapOfNAcrossTwoRoutersAdmitsAtMostNAndAtLeastNMinusTheLeases) {
  constexpr int kCap = 200;
  constexpr int kCallers = 8;
  ASSERT_NO_FATAL_FAILURE(StartQuota(kCap));
  ASSERT_NO_FATAL_FAILURE(Story(v1::CLASSIFICATION_PUBLIC));  // granted on request
  PolicedRouter* r2 = AddRouter("r2", Options(true, true));
  PolicedRouter* r3 = AddRouter("r3", Options(true, true));
  ASSERT_TRUE(r2 != nullptr && r3 != nullptr);
  ASSERT_TRUE(WaitFor([&] { return HasLease(*r2) && HasLease(*r3); }));

  RawClient sin(*bb_, "sin");
  std::atomic<int> admitted{0}, over{0}, other{0};
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  std::vector<std::thread> callers;
  for (int i = 0; i < kCallers; ++i) {
    callers.emplace_back([&] {
      RequestForge forge(bb_->sin, bb_->segip.pub);
      while (std::chrono::steady_clock::now() < deadline) {
        auto answer = Send(sin, forge);
        if (!answer.ok()) {
          ++other;
          return;
        }
        if (answer->kind() == v1::KIND_REPLY) {
          ++admitted;
        } else if (answer->error().code() == v1::QUOTA_EXCEEDED) {
          ++over;
          return;  // told to come back tomorrow
        } else if (answer->error().code() == v1::UNAVAILABLE) {
          // Between leases: the quota service hands the cap out in slices.
          std::this_thread::sleep_for(std::chrono::milliseconds(answer->error().retry_after_ms()));
        } else {
          ++other;
          return;
        }
      }
    });
  }
  for (auto& t : callers) t.join();
  const uint64_t held = r2->policies->quota()->Outstanding() + r3->policies->quota()->Outstanding();
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(over.load(), kCallers) << "callers ran out of time";
  EXPECT_LE(admitted.load(), kCap);
  EXPECT_GE(admitted.load(), kCap - static_cast<int>(held));
  EXPECT_EQ(bb_->provider_system_calls.load(), admitted.load());
  // The ledger counts what was admitted plus what the routers still hold; after their drain,
  // exactly what was admitted.
  EXPECT_EQ(DayConsumed(), static_cast<uint64_t>(admitted.load()) + held);
  for (PolicedRouter* r : {r2, r3}) {
    ASSERT_TRUE(r->router->Drain(absl::Seconds(2)).ok());
    ASSERT_TRUE(r->policies->Drain().ok());
  }
  EXPECT_EQ(DayConsumed(), static_cast<uint64_t>(admitted.load()));
  std::printf("cap %d: admitted %d through 2 routers x %d callers, %llu held at the end\n", kCap,
              admitted.load(), kCallers, static_cast<unsigned long long>(held));
}

TEST_F(RouterPoliciesTest, TheCatalogGoingDownLeavesTheRouterServingItsSnapshot) {
  ASSERT_NO_FATAL_FAILURE(Story(v1::CLASSIFICATION_PUBLIC));
  PolicedRouter* r = AddRouter("r2", Options(true, false));
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->policies->quota(), nullptr);
  RawClient sin(*bb_, "sin");
  RequestForge forge(bb_->sin, bb_->segip.pub);
  EXPECT_EQ(Code(Send(sin, forge)), "OK");

  StopCatalog();
  // The age rises past a second while the router keeps serving what it holds, and stays ready.
  ASSERT_TRUE(WaitFor([&] {
    return r->Metric("chasqui_router_catalog_snapshot_age_seconds") > 1.0;
  })) << r->Metric("chasqui_router_catalog_snapshot_age_seconds");
  EXPECT_EQ(Code(Send(sin, forge)), "OK");
  EXPECT_EQ(Code(Send(sin, forge, "ci-0000001")), "END_USER_UNKNOWN");
  EXPECT_TRUE(r->policies->Ready().ok()) << r->policies->Ready();
  EXPECT_EQ(r->Metric("chasqui_router_catalog_snapshot_version"), 8);

  // Back (same store): the next resync confirms the snapshot and the age falls again.
  ASSERT_NO_FATAL_FAILURE(StartCatalog());
  EXPECT_TRUE(WaitFor([&] {
    return r->Metric("chasqui_router_catalog_snapshot_age_seconds") < 1.0;
  })) << r->Metric("chasqui_router_catalog_snapshot_age_seconds");
  Ok("disable_end_user", EndUser(false, "sin", kUser), world_.sin_mgr);
  ASSERT_TRUE(WaitFor([&] { return r->policies->catalog()->version() == 9; }));
  EXPECT_EQ(Code(Send(sin, forge)), "END_USER_UNKNOWN");
}

TEST_F(RouterPoliciesTest, WithTheQuotaServiceGoneRoutersEnforceWithTheirLeasesAndSayIt) {
  ASSERT_NO_FATAL_FAILURE(StartQuota(1000));
  ASSERT_NO_FATAL_FAILURE(Story(v1::CLASSIFICATION_PUBLIC));
  RouterPoliciesOptions o = Options(true, true);
  o.enforcer.min_lease = 10;
  o.enforcer.max_lease = 10;  // each lease is 10 requests: what a router may serve alone
  PolicedRouter* r = AddRouter("r2", o);
  ASSERT_NE(r, nullptr);
  ASSERT_TRUE(WaitFor([&] { return HasLease(*r); }));
  RawClient sin(*bb_, "sin");
  RequestForge forge(bb_->sin, bb_->segip.pub);
  EXPECT_EQ(Code(Send(sin, forge)), "OK");

  StopQuota();
  // Nothing can add to it now.
  const uint64_t held = r->policies->quota()->Outstanding();
  ASSERT_GT(held, 0u);
  // The router serves what it holds, never more, then refuses UNAVAILABLE (no lease) with a
  // retry_after; it stays ready and reports the quota service down.
  int served = 0;
  std::string last;
  for (int i = 0; i < 30; ++i) {
    auto answer = Send(sin, forge);
    last = Code(answer);
    if (last != "OK") break;
    ++served;
  }
  EXPECT_EQ(served, static_cast<int>(held));
  EXPECT_EQ(last, "UNAVAILABLE");
  ASSERT_TRUE(WaitFor([&] { return !r->policies->QuotaReachable(); }));
  EXPECT_EQ(r->Metric("chasqui_quota_enforcer_service_up"), 0);
  EXPECT_TRUE(r->policies->Ready().ok()) << r->policies->Ready();
  EXPECT_EQ(bb_->provider_system_calls.load(), 1 + served);

  // Back: leases are drawn again and requests pass.
  ASSERT_NO_FATAL_FAILURE(StartQuota(1000));
  ASSERT_TRUE(WaitFor([&] {
    if (Code(Send(sin, forge)) == "OK") return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    return false;
  })) << "no request passed after the quota service came back";
  EXPECT_TRUE(r->policies->QuotaReachable());
  EXPECT_EQ(r->Metric("chasqui_quota_enforcer_service_up"), 1);
  // The ledger never counted less than was served.
  EXPECT_GE(DayConsumed(), static_cast<uint64_t>(bb_->provider_system_calls.load()));
}

TEST_F(RouterPoliciesTest, StartAndLoadRefuseWhatCannotWork) {
  // The catalog needs certificates to verify what it signs.
  auto bus = bb_->Connect("policies-bad");
  auto no_certs =
      RouterPolicies::Start(Options(true, false), bus.get(), "test", "r9", nullptr, nullptr);
  ASSERT_FALSE(no_certs.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(no_certs.status())) << no_certs.status();
  EXPECT_NE(Msg(no_certs.status()).find("certificates"), std::string::npos);
  auto bad_id =
      RouterPolicies::Start(Options(false, true), bus.get(), "test", "r.9", nullptr, nullptr);
  ASSERT_FALSE(bad_id.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(bad_id.status())) << bad_id.status();
  auto bad_env =
      RouterPolicies::Start(Options(false, false), bus.get(), "staging", "r9", nullptr, nullptr);
  EXPECT_TRUE(absl::IsInvalidArgument(bad_env.status())) << bad_env.status();

  // Nothing enabled: nothing to enforce, always ready.
  auto none =
      RouterPolicies::Start(Options(false, false), bus.get(), "test", "r9", nullptr, nullptr);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ((*none)->catalog(), nullptr);
  EXPECT_EQ((*none)->quota(), nullptr);
  EXPECT_TRUE((*none)->Ready().ok());
  EXPECT_TRUE((*none)->LoadCatalog(absl::Seconds(1)).ok());

  // No catalog listening: unready, and LoadCatalog says why after its timeout.
  StopCatalog();
  auto p = RouterPolicies::Start(Options(true, false), bus.get(), "test", "r9",
                                 world_.dirs.lookup.get(), nullptr);
  ASSERT_TRUE(p.ok()) << p.status();
  absl::Status loaded = (*p)->LoadCatalog(absl::Milliseconds(300));
  EXPECT_TRUE(absl::IsUnavailable(loaded)) << loaded;
  EXPECT_NE(Msg(loaded).find("catalog"), std::string::npos) << loaded;
  absl::Status ready = (*p)->Ready();
  EXPECT_TRUE(absl::IsUnavailable(ready)) << ready;
  EXPECT_NE(Msg(ready).find("no snapshot yet"), std::string::npos) << ready;
  EXPECT_EQ((*p)->CatalogAgeMillis(), -1);

  // A snapshot signed by a catalog whose certificate nobody holds is never loaded.
  ASSERT_NO_FATAL_FAILURE(StartCatalog());
  Directories strangers(world_.root, SystemClock().NowUnixMillis());  // not the catalog's cert
  auto q = RouterPolicies::Start(Options(true, false), bus.get(), "test", "r8",
                                 strangers.lookup.get(), nullptr);
  ASSERT_TRUE(q.ok()) << q.status();
  absl::Status unverified = (*q)->LoadCatalog(absl::Milliseconds(300));
  EXPECT_TRUE(absl::IsUnavailable(unverified)) << unverified;
  EXPECT_FALSE((*q)->Ready().ok());
}

// chasqui-router --catalog on a trust file: stops at once, naming the flags it needs.
TEST_F(RouterPoliciesTest, TheExecutableRefusesTheCatalogWithoutCertificates) {
  Identity key = GenerateIdentity("router", "test", Role::kRouter);
  ASSERT_TRUE(WriteIdentity(dir_.File("router.key"), key).ok());
  {
    std::ofstream trust(dir_.File("trust.json"));
    trust << TrustFileJson({key.pub});
  }
  const CommandOutcome o = RunCommand(std::string("timeout 10 ") + CHASQUI_ROUTER_BIN +
                                      " --env test --nats " + bb_->nats->url() + " --key " +
                                      dir_.File("router.key") + " --trust " +
                                      dir_.File("trust.json") + " --catalog --quota");
  EXPECT_EQ(o.exit_code, 2) << o.output;
  EXPECT_NE(o.output.find("--catalog needs --roots and --cert"), std::string::npos) << o.output;
}

}  // namespace
}  // namespace chasqui::testing
