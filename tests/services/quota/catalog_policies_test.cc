// Quota policies from the catalog: a real catalog service and a real quota service in one
// process over a real nats-server, RocksDB in temp dirs, certificates from a test root. The
// quota follows the catalog: an approved grant gets its quota, a published service its
// capacity, each announced on chq.evt.quota.policy; an approved quota request wins over the
// catalog's default through later catalog changes; a promotion to prod reaches the ledger live.
// The ledger's side of the precedence (ApplyDefaults) is tested on its own first.

#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/bus/bus.h"
#include "common/bus/request_mux.h"
#include "common/core/status.h"
#include "common/store/kv_store.h"
#include "common/trust/requests.h"
#include "fmt/format.h"
#include "gtest/gtest.h"
#include "services/catalog/catalog_client.h"
#include "services/quota/catalog_policies.h"
#include "services/quota/quota_keys.h"
#include "services/quota/quota_ledger.h"
#include "tests/services/quota/catalog_quota_fixture.h"
#include "tests/support/run_command.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait_for.h"

namespace chasqui::testing {
namespace {

v1::GrantKey Key(const std::string& env) {
  v1::GrantKey g;
  g.set_env(env);
  g.set_consumer("sin");
  g.set_provider("segip");
  g.set_service("persona");
  return g;
}

v1::ServiceKey ServiceKeyOf(const std::string& env) { return ServiceOf(Key(env)); }

TEST(DerivePoliciesTest, GrantQuotaElseServiceDefaultActiveGrantsOnlyCapacityPerEnv) {
  v1::CatalogSnapshot s;
  v1::Service& svc = *s.add_services();
  svc.set_provider("segip");
  svc.set_state(v1::SERVICE_STATE_PUBLISHED);
  *svc.mutable_spec() = Spec("persona", v1::CLASSIFICATION_PRIVATE);
  svc.mutable_spec()->mutable_capacity()->set_rate_per_second(100);
  svc.mutable_spec()->mutable_capacity()->set_burst(200);
  auto grant = [&](const std::string& consumer, v1::GrantState st) -> v1::Grant& {
    v1::Grant& g = *s.add_grants();
    g.set_env("test");
    g.set_consumer(consumer);
    g.set_provider("segip");
    g.set_service("persona");
    g.set_state(st);
    return g;
  };
  grant("sin", v1::GRANT_STATE_ACTIVE);  // no quota of its own: the service's default
  v1::Grant& own = grant("aduana", v1::GRANT_STATE_ACTIVE);
  own.mutable_quota()->set_rate_per_second(3);
  own.mutable_quota()->set_per_month(500);
  grant("ypfb", v1::GRANT_STATE_PENDING);
  grant("bcb", v1::GRANT_STATE_REVOKED);
  v1::Grant& bad = grant("asfi", v1::GRANT_STATE_ACTIVE);
  bad.mutable_quota()->set_per_day(10);
  bad.mutable_quota()->set_per_month(5);  // a day cap above the month cap: left out, named

  std::vector<std::string> skipped;
  const PolicySet set = DerivePolicies(s, {"test", "prod"}, &skipped);
  ASSERT_EQ(set.grants.size(), 2u);
  EXPECT_EQ(set.grants[0].grant().consumer(), "sin");
  EXPECT_EQ(set.grants[0].rate_per_second(), 10);
  EXPECT_EQ(set.grants[0].burst(), 20u);
  EXPECT_EQ(set.grants[0].per_day(), 10000u);
  EXPECT_EQ(set.grants[1].grant().consumer(), "aduana");
  EXPECT_EQ(set.grants[1].rate_per_second(), 3);
  EXPECT_EQ(set.grants[1].per_month(), 500u);
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_NE(skipped[0].find("test/asfi/segip/persona"), std::string::npos) << skipped[0];
  EXPECT_NE(skipped[0].find("per_day"), std::string::npos) << skipped[0];
  ASSERT_EQ(set.providers.size(), 2u);
  EXPECT_EQ(set.providers[0].service().env(), "test");
  EXPECT_EQ(set.providers[1].service().env(), "prod");
  EXPECT_EQ(set.providers[1].rate_per_second(), 100);
  EXPECT_EQ(set.providers[1].burst(), 200u);
}

TEST(ApplyDefaultsTest, CatalogReplacesDefaultsOnlyAndKeepsWhatAPersonDecided) {
  TempDir dir;
  auto store = KvStore::Open({.path = dir.File("db")});
  ASSERT_TRUE(store.ok()) << store.status();
  FakeClock clock(1'700'000'000'000);
  auto ledger = QuotaLedger::Open({}, store->get(), clock);
  ASSERT_TRUE(ledger.ok()) << ledger.status();
  auto policy = [](const std::string& consumer, double rate) {
    v1::QuotaPolicy p;
    *p.mutable_grant() = Key("test");
    p.mutable_grant()->set_consumer(consumer);
    p.set_rate_per_second(rate);
    return p;
  };
  ASSERT_TRUE((*ledger)->SetPolicy(policy("sin", 1), "config").ok());
  ASSERT_TRUE((*ledger)->SetPolicy(policy("aduana", 2), "operator:1001").ok());
  ASSERT_TRUE((*ledger)->SetPolicy(policy("ypfb", 3), "decision:4").ok());
  PolicySet set;
  set.grants = {policy("sin", 10), policy("aduana", 10), policy("ypfb", 10), policy("bcb", 10)};
  v1::ProviderCapacity none;  // no limit and none stored: nothing to store
  *none.mutable_service() = ServiceKeyOf("test");
  set.providers = {none};
  auto r = (*ledger)->ApplyDefaults(set, "catalog:v7");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->grants.size(), 2u);  // sin (was config) and bcb (new)
  EXPECT_TRUE(r->services.empty());
  EXPECT_EQ(r->kept, 2);
  auto rate = [&](const std::string& consumer) {
    auto k = Key("test");
    k.set_consumer(consumer);
    auto p = (*ledger)->Policy(k);
    return p.ok() ? p->rate_per_second() : -1;
  };
  EXPECT_EQ(rate("sin"), 10);
  EXPECT_EQ(rate("aduana"), 2);
  EXPECT_EQ(rate("ypfb"), 3);
  EXPECT_EQ(rate("bcb"), 10);
  EXPECT_TRUE(absl::IsNotFound((*ledger)->Capacity(ServiceKeyOf("test")).status()));
  // The same again changes nothing (no write, nothing to announce).
  r = (*ledger)->ApplyDefaults(set, "catalog:v8");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->grants.empty());
  // A bad entry is refused naming it, and nothing is applied.
  set.grants.push_back(policy("sin", -1));
  r = (*ledger)->ApplyDefaults(set, "catalog:v9");
  EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();
  EXPECT_NE(std::string(MessageOf(r.status())).find("rate_per_second"), std::string::npos);
}

class CatalogPoliciesTest : public CatalogQuotaTest {
 protected:
  void SetUp() override {
    CatalogQuotaTest::SetUp();
    if (HasFatalFailure()) return;
    people_bus_ = Connect("people");
    auto events = people_bus_->Subscribe(kQuotaPolicyEventSubject, [this](const BusMessage& m) {
      v1::PolicyChanged e;
      if (!e.ParseFromArray(m.data.data(), static_cast<int>(m.data.size()))) return;
      absl::MutexLock lock(&mu_);
      events_.push_back(e);
    });
    ASSERT_TRUE(events.ok()) << events.status();
    events_sub_ = *std::move(events);
    StartPolicies();
    auto client = CatalogClient::Create(people_bus_.get(), "_INBOX.test.agetic.cli");
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
    auto mux = RequestMux::Create(people_bus_.get(), "_INBOX.test.sin.quota");
    ASSERT_TRUE(mux.ok()) << mux.status();
    mux_ = *std::move(mux);
  }

  void TearDown() override {
    policies_.reset();
    CatalogQuotaTest::TearDown();
  }

  void StartPolicies() {
    CatalogPoliciesOptions po;
    po.follower.inbox_prefix = "_INBOX._quota.test.t.catalog";
    po.poll = absl::Milliseconds(20);
    auto p = CatalogPolicies::Start(po, bus_.get(), ledger_.get(), *world_.dirs.lookup, clock_);
    ASSERT_TRUE(p.ok()) << p.status();
    policies_ = *std::move(p);
  }

  uint64_t Change(const std::string& verb, const v1::CatalogControlBody& body, const Holder& who) {
    auto req = MakeCatalogRequest(body, who.env, who.serial, who.key, clock_.NowUnixMillis());
    auto r = client_->Change(verb, req);
    EXPECT_TRUE(r.ok()) << verb << ": " << r.status();
    return r.ok() ? r->version() : 0;
  }

  // Both entities adhere; segip publishes a private service with a capacity; sin asks and
  // segip approves. Returns the version of the approval.
  uint64_t Story() {
    Change("register_entity", RegisterEntity("segip", "SEGIP"), world_.op);
    Change("register_entity", RegisterEntity("sin", "SIN"), world_.op);
    Change("adhere", Adhere("segip"), world_.segip_mae);
    Change("adhere", Adhere("sin"), world_.sin_mae);
    v1::ServiceSpec spec = Spec("persona", v1::CLASSIFICATION_PRIVATE, true);
    spec.mutable_capacity()->set_rate_per_second(100);
    spec.mutable_capacity()->set_burst(200);
    Change("submit", Submit("segip", spec), world_.segip_mgr);
    Change("publish", ServiceDecision("publish", "segip", "persona"), world_.op);
    Change("request_access", RequestAccess("test", "sin", "segip", "persona"), world_.sin_mgr);
    return Change("approve", GrantDecision("approve", "test", "sin", "segip", "persona"),
                  world_.segip_mgr);
  }

  bool Announced(const v1::GrantKey& g) {
    absl::MutexLock lock(&mu_);
    for (const auto& e : events_) {
      if (e.has_grant() && GrantKeyString(e.grant()) == GrantKeyString(g)) return true;
    }
    return false;
  }
  bool Announced(const v1::ServiceKey& k) {
    absl::MutexLock lock(&mu_);
    for (const auto& e : events_) {
      if (e.has_service() && ServiceKeyString(e.service()) == ServiceKeyString(k)) return true;
    }
    return false;
  }

  absl::StatusOr<v1::QuotaRequestRecord> Quota(const std::string& verb,
                                               const v1::QuotaControlBody& body,
                                               const Holder& who) {
    auto req = MakeQuotaControlRequest(body, who.env, who.serial, who.key, clock_.NowUnixMillis());
    CHASQUI_ASSIGN_OR_RETURN(std::string answer,
                             mux_->RequestAndWait("chq.ctl.quota." + verb,
                                                  req.SerializeAsString(), absl::Seconds(5),
                                                  "the quota service"));
    v1::QuotaRequestReply reply;
    if (!reply.ParseFromString(answer)) return absl::InvalidArgumentError("not a reply");
    CHASQUI_RETURN_IF_ERROR(FromControlStatus(reply.status()));
    return reply.record();
  }

  std::unique_ptr<Bus> people_bus_;
  std::unique_ptr<CatalogPolicies> policies_;
  std::unique_ptr<CatalogClient> client_;
  std::unique_ptr<RequestMux> mux_;
  std::unique_ptr<Subscription> events_sub_;
  absl::Mutex mu_;
  std::vector<v1::PolicyChanged> events_ ABSL_GUARDED_BY(mu_);
};

TEST_F(CatalogPoliciesTest, ApprovedGrantGetsItsQuotaLiveAndADecisionWinsOverTheCatalog) {
  ASSERT_TRUE(WaitFor([&] { return policies_->Ready().ok(); })) << policies_->Ready();
  // Nothing granted yet: no policy.
  EXPECT_TRUE(absl::IsNotFound(ledger_->Policy(Key("test")).status()));

  const uint64_t approved = Story();
  ASSERT_GT(approved, 0u);
  ASSERT_TRUE(WaitFor([&] { return policies_->applied_version() >= approved; }));
  auto p = ledger_->Policy(Key("test"));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->rate_per_second(), 10);
  EXPECT_EQ(p->burst(), 20u);
  EXPECT_EQ(p->per_day(), 10000u);
  EXPECT_EQ(p->changed_by().rfind("catalog:v", 0), 0u) << p->changed_by();
  for (const std::string env : {"test", "prod"}) {
    auto c = ledger_->Capacity(ServiceKeyOf(env));
    ASSERT_TRUE(c.ok()) << env << ": " << c.status();
    EXPECT_EQ(c->rate_per_second(), 100);
    EXPECT_EQ(c->burst(), 200u);
  }
  EXPECT_TRUE(WaitFor([&] { return Announced(Key("test")); }));
  EXPECT_TRUE(WaitFor([&] { return Announced(ServiceKeyOf("prod")); }));
  EXPECT_TRUE(absl::IsNotFound(ledger_->Policy(Key("prod")).status()));

  // sin's manager asks for more; segip's manager approves: the decision is the policy.
  v1::QuotaControlBody ask;
  v1::QuotaPolicy& wanted = *ask.mutable_request()->mutable_wanted();
  *wanted.mutable_grant() = Key("test");
  wanted.set_rate_per_second(50);
  wanted.set_burst(100);
  wanted.set_per_day(50000);
  ask.mutable_request()->set_justification("census month");
  auto asked = Quota("request", ask, world_.sin_mgr);
  ASSERT_TRUE(asked.ok()) << asked.status();
  v1::QuotaControlBody decide;
  decide.mutable_decide()->set_request_id(asked->id());
  decide.mutable_decide()->set_outcome(v1::QUOTA_OUTCOME_APPROVE);
  auto decided = Quota("decide", decide, world_.segip_mgr);
  ASSERT_TRUE(decided.ok()) << decided.status();

  // The operator promotes the grant: the prod grant gets the catalog's quota live, and the
  // test grant keeps the decision although the catalog still says 10/s.
  const uint64_t promoted =
      Change("promote", GrantDecision("promote", "test", "sin", "segip", "persona"), world_.op);
  ASSERT_TRUE(WaitFor([&] { return policies_->applied_version() >= promoted; }));
  auto prod = ledger_->Policy(Key("prod"));
  ASSERT_TRUE(prod.ok()) << prod.status();
  EXPECT_EQ(prod->rate_per_second(), 10);
  EXPECT_EQ(prod->changed_by(), fmt::format("catalog:v{}", promoted));
  EXPECT_TRUE(WaitFor([&] { return Announced(Key("prod")); }));
  auto test = ledger_->Policy(Key("test"));
  ASSERT_TRUE(test.ok()) << test.status();
  EXPECT_EQ(test->rate_per_second(), 50);
  EXPECT_EQ(test->per_day(), 50000u);
  EXPECT_EQ(test->changed_by(), fmt::format("decision:{}", asked->id()));

  // After a restart of the quota service the decision still wins; the catalog's policies
  // come back from the catalog (and the store).
  policies_.reset();
  StopQuota();
  StartQuota();
  StartPolicies();
  ASSERT_TRUE(WaitFor([&] { return policies_->applied_version() >= promoted; }));
  test = ledger_->Policy(Key("test"));
  ASSERT_TRUE(test.ok()) << test.status();
  EXPECT_EQ(test->changed_by(), fmt::format("decision:{}", asked->id()));
  EXPECT_TRUE(ledger_->Policy(Key("prod")).ok());
}

TEST_F(CatalogPoliciesTest, UnverifiableCatalogLeavesTheServiceUnready) {
  // A quota service whose certificates do not know the catalog's key: every snapshot is
  // refused, no policy enters the ledger, and Ready says what is missing.
  Directories strangers(world_.root, clock_.NowUnixMillis());
  CatalogPoliciesOptions po;
  po.follower.inbox_prefix = "_INBOX._quota.test.t2.catalog";
  po.follower.retry = absl::Milliseconds(50);
  auto p = CatalogPolicies::Start(po, bus_.get(), ledger_.get(), *strangers.lookup, clock_);
  ASSERT_TRUE(p.ok()) << p.status();
  absl::SleepFor(absl::Milliseconds(300));
  absl::Status ready = (*p)->Ready();
  EXPECT_TRUE(absl::IsUnavailable(ready)) << ready;
  EXPECT_NE(std::string(MessageOf(ready)).find("first catalog snapshot"), std::string::npos)
      << ready;
  auto sync = (*p)->Sync();
  EXPECT_TRUE(absl::IsUnavailable(sync.status())) << sync.status();
}

#ifdef CHASQUI_QUOTA_BIN
TEST(CatalogPoliciesMainTest, CatalogWithoutAnchorsIsRefusedAtStart) {
  TempDir dir;
  auto r = RunCommand(fmt::format("timeout 20 {} serve --data {} --catalog --nats nats://127.0.0.1:1",
                                  CHASQUI_QUOTA_BIN, dir.File("db")));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--catalog needs --anchors"), std::string::npos) << r.output;
  auto both = RunCommand(fmt::format("timeout 20 {} serve --data {} --catalog --policy p.json",
                                     CHASQUI_QUOTA_BIN, dir.File("db")));
  EXPECT_NE(both.exit_code, 0) << both.output;
  EXPECT_NE(both.output.find("excludes"), std::string::npos) << both.output;
}
#endif

}  // namespace
}  // namespace chasqui::testing
