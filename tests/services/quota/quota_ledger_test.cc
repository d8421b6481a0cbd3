// QuotaLedger and QuotaControl on a real RocksDB in a temp dir with a FakeClock: slices never
// exceed a cap, refusals name the limit and the right retry_after, periods roll over at
// midnight in America/La_Paz, returns are bounded, rates are split, signed changes are checked
// in order with precise codes.

#include <memory>
#include <string>

#include "common/core/status.h"
#include "common/store/kv_store.h"
#include "fmt/format.h"
#include "gtest/gtest.h"
#include "tests/services/quota/quota_test_support.h"
#include "tests/support/temp_dir.h"

namespace chasqui::testing {
namespace {

class LedgerTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }
  void Open() {
    ledger_.reset();
    store_.reset();
    KvOptions kv;
    kv.path = dir_.File("db");
    auto s = KvStore::Open(kv);
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = *std::move(s);
    auto l = QuotaLedger::Open(options_, store_.get(), clock_);
    ASSERT_TRUE(l.ok()) << l.status();
    ledger_ = *std::move(l);
  }
  v1::LeaseReply Lease(const std::string& router, uint64_t wanted,
                       const v1::GrantKey& grant = Grant()) {
    v1::LeaseRequest r;
    r.set_router_id(router);
    *r.mutable_grant() = grant;
    r.set_wanted(wanted);
    auto reply = ledger_->Lease(r);
    EXPECT_TRUE(reply.ok()) << reply.status();
    return reply.ok() ? *reply : v1::LeaseReply();
  }
  v1::GrantUsage Usage() {
    auto u = ledger_->Usage(v1::UsageRequest());
    EXPECT_TRUE(u.ok()) << u.status();
    EXPECT_EQ(u->grants_size(), 1);
    return u->grants_size() > 0 ? u->grants(0) : v1::GrantUsage();
  }

  TempDir dir_;
  FakeClock clock_{LaPazMillis(2026, 3, 14, 10, 0, 0)};
  QuotaLedgerOptions options_;
  std::unique_ptr<KvStore> store_;
  std::unique_ptr<QuotaLedger> ledger_;
};

TEST_F(LedgerTest, SlicesNeverExceedTheCapAndTheRefusalWaitsForLaPazMidnight) {
  ASSERT_TRUE(ledger_->SetPolicy(Policy(Grant(), 0, 0, 100, 0), "test").ok());
  uint64_t granted = 0;
  for (int i = 0; i < 50; ++i) {
    v1::LeaseReply r = Lease(i % 2 ? "r1" : "r2", 30);
    granted += r.lease().allowance();
    ASSERT_LE(granted, 100u);
    if (r.has_refusal()) break;
  }
  EXPECT_EQ(granted, 100u);
  v1::LeaseReply refused = Lease("r1", 30);
  ASSERT_TRUE(refused.has_refusal());
  EXPECT_EQ(refused.status().code(), static_cast<int>(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(refused.refusal().limit(), v1::QUOTA_LIMIT_DAY);
  // 10:00 in La Paz: 14 h to local midnight.
  EXPECT_EQ(refused.refusal().retry_after_ms(), 14 * 3'600'000);
  EXPECT_EQ(refused.lease().allowance(), 0u);
  EXPECT_EQ(Usage().day_consumed(), 100u);
}

TEST_F(LedgerTest, MonthCapWaitsForTheNextMonthEvenWhenTheDayIsAlsoSpent) {
  clock_.SetUnixMillis(LaPazMillis(2026, 3, 31, 22, 0, 0));
  ASSERT_TRUE(ledger_->SetPolicy(Policy(Grant(), 0, 0, 5, 5), "test").ok());
  uint64_t granted = 0;
  for (int i = 0; i < 10 && granted < 5; ++i) granted += Lease("r1", 5).lease().allowance();
  ASSERT_EQ(granted, 5u);
  v1::LeaseReply refused = Lease("r1", 5);
  ASSERT_TRUE(refused.has_refusal());
  EXPECT_EQ(refused.refusal().limit(), v1::QUOTA_LIMIT_MONTH);
  EXPECT_EQ(refused.refusal().retry_after_ms(), 2 * 3'600'000);  // to 2026-04-01 00:00 La Paz
}

TEST_F(LedgerTest, DayRollsOverAtMidnightInLaPaz) {
  clock_.SetUnixMillis(LaPazMillis(2026, 3, 14, 23, 59, 59));
  ASSERT_TRUE(ledger_->SetPolicy(Policy(Grant(), 0, 0, 3, 0), "test").ok());
  uint64_t granted = 0;
  for (int i = 0; i < 10 && granted < 3; ++i) granted += Lease("r1", 3).lease().allowance();
  v1::LeaseReply refused = Lease("r1", 3);
  ASSERT_TRUE(refused.has_refusal());
  EXPECT_EQ(refused.lease().day(), "2026-03-14");  // 03:59:59 UTC is still the 14th there
  EXPECT_EQ(refused.refusal().retry_after_ms(), 1000);
  clock_.AdvanceMillis(1000);  // 00:00:00 La Paz
  v1::LeaseReply fresh = Lease("r1", 3);
  EXPECT_FALSE(fresh.has_refusal());
  EXPECT_EQ(fresh.lease().day(), "2026-03-15");
  EXPECT_GT(fresh.lease().allowance(), 0u);
  EXPECT_EQ(fresh.lease().day_ends_at_ms(), LaPazMillis(2026, 3, 16, 0, 0, 0));
}

TEST_F(LedgerTest, ReturnsCreditOnlyWhatTheRouterHoldsInThatPeriod) {
  ASSERT_TRUE(ledger_->SetPolicy(Policy(Grant(), 0, 0, 1000, 0), "test").ok());
  const uint64_t got = Lease("r1", 10).lease().allowance();
  ASSERT_EQ(got, 10u);
  v1::LeaseReturn r;
  r.set_router_id("r1");
  *r.mutable_grant() = Grant();
  r.set_day("2026-03-14");
  r.set_month("2026-03");
  r.set_unspent(4);
  auto credited = ledger_->Return(r);
  ASSERT_TRUE(credited.ok()) << credited.status();
  EXPECT_EQ(credited->credited(), 4u);
  EXPECT_EQ(Usage().day_consumed(), 6u);
  r.set_unspent(100);  // more than it holds: only the 6 still outstanding
  EXPECT_EQ(ledger_->Return(r)->credited(), 6u);
  EXPECT_EQ(Usage().day_consumed(), 0u);
  r.set_router_id("r2");
  EXPECT_TRUE(absl::IsNotFound(ledger_->Return(r).status()));
  r.set_router_id("R 2");
  EXPECT_TRUE(absl::IsInvalidArgument(ledger_->Return(r).status()));
}

TEST_F(LedgerTest, RateAndCapacityAreSplitAcrossLiveHolders) {
  options_.share_ttl_ms = 1000;
  Open();
  ASSERT_TRUE(ledger_->SetPolicy(Policy(Grant(), 100, 50, 0, 0), "test").ok());
  v1::ProviderCapacity cap;
  cap.mutable_service()->set_env("test");
  cap.mutable_service()->set_provider("segip");
  cap.mutable_service()->set_service("persona");
  cap.set_rate_per_second(30);
  ASSERT_TRUE(ledger_->SetCapacity(cap, "test").ok());
  EXPECT_DOUBLE_EQ(Lease("r1", 0).lease().rate_share(), 100);
  v1::Lease second = Lease("r2", 0).lease();
  EXPECT_EQ(second.holders(), 2u);
  EXPECT_DOUBLE_EQ(second.rate_share(), 50);
  EXPECT_DOUBLE_EQ(second.burst_share(), 25);
  EXPECT_DOUBLE_EQ(second.provider_rate_share(), 15);
  // Another consumer's grant of the same service shares the provider's capacity too.
  v1::Lease other = Lease("r3", 0, Grant("aduana")).lease();
  EXPECT_EQ(other.provider_holders(), 3u);
  EXPECT_DOUBLE_EQ(other.provider_rate_share(), 10);
  clock_.AdvanceMillis(1500);  // r2's and r3's shares lapse
  EXPECT_DOUBLE_EQ(Lease("r1", 0).lease().rate_share(), 100);
}

TEST_F(LedgerTest, CountersAndPoliciesSurviveReopen) {
  ASSERT_TRUE(ledger_->SetPolicy(Policy(Grant(), 0, 0, 100, 1000), "test").ok());
  const uint64_t got = Lease("r1", 20).lease().allowance();
  ASSERT_GT(got, 0u);
  Open();
  EXPECT_EQ(Usage().day_consumed(), got);
  EXPECT_EQ(Usage().month_consumed(), got);
  EXPECT_EQ(Usage().policy().per_day(), 100u);
  // Config seeds never override what is stored.
  PolicySet seed;
  seed.grants.push_back(Policy(Grant(), 0, 0, 7, 0));
  EXPECT_EQ(*ledger_->ApplyInitial(seed, "config"), 0);
  EXPECT_EQ(ledger_->Policy(Grant())->per_day(), 100u);
}

TEST_F(LedgerTest, ALeaseIsBoundedByTheCapByWhatIsLeftAndByWhatTheRouterHolds) {
  options_.max_lease_fraction = 0.05;
  Open();
  ASSERT_TRUE(ledger_->SetPolicy(Policy(Grant(), 0, 0, 1000, 0), "test").ok());
  // 5 % of the day cap, however much is wanted: what a router killed can strand.
  v1::LeaseReply first = Lease("r1", 500);
  EXPECT_EQ(first.lease().allowance(), 50u);
  EXPECT_EQ(first.lease().max_held(), 50u);
  // A router that says it still holds 30 gets only what brings it back to the bound.
  v1::LeaseRequest r;
  r.set_router_id("r1");
  *r.mutable_grant() = Grant();
  r.set_wanted(500);
  r.set_unspent(30);
  r.set_unspent_day("2026-03-14");
  EXPECT_EQ(ledger_->Lease(r)->lease().allowance(), 20u);
  // Holding the bound, it gets nothing more, and that is no refusal.
  r.set_unspent(50);
  auto full = ledger_->Lease(r);
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(full->lease().allowance(), 0u);
  EXPECT_FALSE(full->has_refusal());
  // An unspent count for another day is not believed.
  r.set_unspent(10);
  r.set_unspent_day("2026-03-13");
  EXPECT_EQ(ledger_->Lease(r)->lease().allowance(), 50u);
  EXPECT_EQ(Usage().day_consumed(), 120u);

  // Near the cap the bound shrinks with what is left, and with the routers sharing it.
  options_.max_lease_fraction = 0.5;
  Open();
  const v1::GrantKey other = Grant("aduana");
  ASSERT_TRUE(ledger_->SetPolicy(Policy(other, 0, 0, 100, 0), "test").ok());
  EXPECT_EQ(Lease("r1", 1000, other).lease().allowance(), 50u);  // min(50 % of 100, 100 / 2)
  v1::Lease second = Lease("r2", 1000, other).lease();           // 50 left, two routers
  EXPECT_EQ(second.holders(), 2u);
  EXPECT_EQ(second.allowance(), 13u);  // ceil(50 / (2 * 2))
  EXPECT_EQ(second.max_held(), 13u);
  EXPECT_EQ(Lease("r3", 1000, other).lease().allowance(), 7u);  // ceil(37 / (2 * 3))
}

TEST_F(LedgerTest, UsageTellsWhatIsSpentFromWhatIsOnlyLeased) {
  ASSERT_TRUE(ledger_->SetPolicy(Policy(Grant(), 0, 0, 1000, 0), "test").ok());
  ASSERT_EQ(Lease("r1", 20).lease().allowance(), 20u);
  EXPECT_EQ(Usage().day_consumed(), 20u);
  EXPECT_EQ(Usage().day_unspent_at_most(), 20u);  // nothing known spent yet
  // The router renews its share and says it holds 7: 13 are spent.
  v1::LeaseRequest report;
  report.set_router_id("r1");
  *report.mutable_grant() = Grant();
  report.set_unspent(7);
  report.set_unspent_day("2026-03-14");
  ASSERT_TRUE(ledger_->Lease(report).ok());
  EXPECT_EQ(Usage().day_consumed(), 20u);
  EXPECT_EQ(Usage().day_unspent_at_most(), 7u);
  // It returns 7 on drain: exactly 13 were used, nothing is leased.
  v1::LeaseReturn back;
  back.set_router_id("r1");
  *back.mutable_grant() = Grant();
  back.set_day("2026-03-14");
  back.set_month("2026-03");
  back.set_unspent(7);
  back.set_release_share(true);
  ASSERT_EQ(ledger_->Return(back)->credited(), 7u);
  EXPECT_EQ(Usage().day_consumed(), 13u);
  EXPECT_EQ(Usage().day_unspent_at_most(), 0u);
  // Survives a restart.
  ASSERT_EQ(Lease("r2", 10).lease().allowance(), 10u);
  Open();
  EXPECT_EQ(Usage().day_unspent_at_most(), 10u);
}

TEST(QuotaPeriodsTest, UnknownZoneIsRefusedNamingIt) {
  auto p = QuotaPeriods::Load("America/Atlantis");
  ASSERT_TRUE(absl::IsInvalidArgument(p.status()));
  EXPECT_NE(std::string(MessageOf(p.status())).find("unknown time zone \"America/Atlantis\""),
            std::string::npos)
      << p.status();
  ASSERT_TRUE(QuotaPeriods::Load("America/La_Paz").ok());
}

TEST(PolicyFileTest, ErrorsNameTheEntryAndField) {
  auto expect = [](const std::string& text, const std::string& needle) {
    auto s = JsonPolicyFile::Parse(text, "p.json");
    ASSERT_TRUE(absl::IsInvalidArgument(s.status())) << text;
    EXPECT_NE(std::string(MessageOf(s.status())).find(needle), std::string::npos)
        << s.status() << " lacks " << needle;
  };
  expect("{", "not valid JSON");
  expect(R"({"grant": []})", "unknown field \"grant\"");
  const std::string base = R"("env":"test","consumer":"sin","provider":"segip","service":"p")";
  expect(R"({"grants": [{)" + base + R"(,"per_dya": 5}]})", "grants[0]: unknown field \"per_dya\"");
  expect(R"({"grants": [{)" + base + R"(,"per_day": -1}]})", "grants[0].per_day");
  expect(R"({"grants": [{)" + base + R"(,"per_day": 10, "per_month": 5}]})",
         "per_day (10) exceeds policy.per_month (5)");
  expect(R"({"grants": [{"env":"test","consumer":"Sin.X","provider":"segip","service":"p"}]})",
         "policy.grant.consumer");
  expect(R"({"providers": [{"env":"dev","provider":"segip","service":"p"}]})",
         "providers[0]: capacity.service.env");
  auto ok = JsonPolicyFile::Parse(R"({"grants": [{)" + base +
                                      R"(,"rate_per_second": 2.5,"burst": 5,"per_day": 10}],
                                      "providers": []})",
                                  "p.json");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_DOUBLE_EQ(ok->grants[0].rate_per_second(), 2.5);
}

// ---- Signed changes ----

class ControlTest : public LedgerTest {
 protected:
  void SetUp() override {
    LedgerTest::SetUp();
    control_ = std::make_unique<QuotaControl>(QuotaControlOptions(), ledger_.get(), &signers_,
                                              clock_);
    operator_ = signers_.Add(1, v1::CERTIFICATE_ROLE_OPERATOR, "agetic");
    sin_manager_ = signers_.Add(2, v1::CERTIFICATE_ROLE_MANAGER, "sin");
    segip_manager_ = signers_.Add(3, v1::CERTIFICATE_ROLE_MANAGER, "segip");
  }
  static std::string Bytes(const v1::ControlRequest& r) { return r.SerializeAsString(); }
  void ExpectRefused(const absl::Status& s, absl::StatusCode code, const std::string& needle) {
    EXPECT_EQ(s.code(), code) << s;
    EXPECT_NE(std::string(MessageOf(s)).find(needle), std::string::npos) << s;
  }

  FakeSigners signers_;
  std::unique_ptr<QuotaControl> control_;
  Person operator_, sin_manager_, segip_manager_;
};

TEST_F(ControlTest, RequestThenApproveChangesThePolicyAndIsRecorded) {
  ASSERT_TRUE(ledger_->SetPolicy(Policy(Grant(), 1, 1, 5, 0), "test").ok());
  auto asked = control_->Request(
      Bytes(RequestIncrease(sin_manager_, Policy(Grant(), 10, 20, 500, 0), clock_.NowUnixMillis())));
  ASSERT_TRUE(asked.ok()) << asked.status();
  EXPECT_EQ(asked->state(), v1::QUOTA_REQUEST_STATE_PENDING);
  EXPECT_EQ(asked->before().per_day(), 5u);
  EXPECT_EQ(ledger_->Policy(Grant())->per_day(), 5u);  // nothing changes before the decision
  auto decided = control_->Decide(
      Bytes(DecideRequest(segip_manager_, asked->id(), v1::QUOTA_OUTCOME_APPROVE,
                          clock_.NowUnixMillis())));
  ASSERT_TRUE(decided.ok()) << decided.status();
  EXPECT_EQ(decided->state(), v1::QUOTA_REQUEST_STATE_APPROVED);
  EXPECT_EQ(decided->decided_by(), 3u);
  EXPECT_FALSE(decided->signed_request().empty());
  EXPECT_FALSE(decided->signed_decision().empty());
  EXPECT_EQ(ledger_->Policy(Grant())->per_day(), 500u);
  EXPECT_EQ(ledger_->Policy(Grant())->changed_by(), fmt::format("decision:{}", asked->id()));
  // Decided once only.
  ExpectRefused(control_->Decide(Bytes(DecideRequest(segip_manager_, asked->id(),
                                                     v1::QUOTA_OUTCOME_REJECT,
                                                     clock_.NowUnixMillis())))
                    .status(),
                absl::StatusCode::kFailedPrecondition, "already decided");
  // Adjust applies the decider's limits, on the request's grant.
  auto again = control_->Request(
      Bytes(RequestIncrease(sin_manager_, Policy(Grant(), 10, 20, 9000, 0), clock_.NowUnixMillis())));
  ASSERT_TRUE(again.ok());
  v1::QuotaPolicy adjusted = Policy(Grant("someone"), 10, 20, 800, 0);
  auto adj = control_->Decide(Bytes(DecideRequest(segip_manager_, again->id(),
                                                  v1::QUOTA_OUTCOME_ADJUST,
                                                  clock_.NowUnixMillis(), &adjusted)));
  ASSERT_TRUE(adj.ok()) << adj.status();
  EXPECT_EQ(ledger_->Policy(Grant())->per_day(), 800u);
  EXPECT_FALSE(ledger_->Policy(Grant("someone")).ok());
}

TEST_F(ControlTest, EachFaultHasItsOwnCodeAndMessage) {
  const int64_t now = clock_.NowUnixMillis();
  ExpectRefused(control_->Request("garbage \x01\x02").status(), absl::StatusCode::kInvalidArgument,
                "request: not a ControlRequest");
  v1::ControlRequest r = RequestIncrease(sin_manager_, Policy(Grant(), 10, 0, 0, 0), now);
  v1::ControlRequest bad_sig = r;
  bad_sig.mutable_signature()->assign(64, 'x');
  ExpectRefused(control_->Request(Bytes(bad_sig)).status(), absl::StatusCode::kUnauthenticated,
                "signature does not verify");
  Person stranger;
  stranger.serial = 99;
  ExpectRefused(control_->Request(Bytes(RequestIncrease(stranger, Policy(Grant(), 1, 0, 0, 0),
                                                        now)))
                    .status(),
                absl::StatusCode::kUnauthenticated, "signer certificate 99");
  ExpectRefused(control_->Request(Bytes(RequestIncrease(sin_manager_, Policy(Grant(), 1, 0, 0, 0),
                                                        now - 60'000)))
                    .status(),
                absl::StatusCode::kFailedPrecondition, "outside the");
  ASSERT_TRUE(control_->Request(Bytes(r)).ok());
  ExpectRefused(control_->Request(Bytes(r)).status(), absl::StatusCode::kAlreadyExists,
                "replayed");
  // A request's bytes on the decide verb.
  ExpectRefused(control_->Decide(Bytes(RequestIncrease(sin_manager_, Policy(Grant(), 1, 0, 0, 0),
                                                       now)))
                    .status(),
                absl::StatusCode::kInvalidArgument, "action is request, not decide");
  // The consumer's manager may ask but not decide; the provider's may not ask for sin.
  ExpectRefused(control_->Request(Bytes(RequestIncrease(segip_manager_,
                                                        Policy(Grant(), 1, 0, 0, 0), now)))
                    .status(),
                absl::StatusCode::kPermissionDenied, "needs a manager of sin");
  ExpectRefused(control_->Decide(Bytes(DecideRequest(sin_manager_, 1, v1::QUOTA_OUTCOME_APPROVE,
                                                     now)))
                    .status(),
                absl::StatusCode::kPermissionDenied, "needs a manager of segip");
  ExpectRefused(control_->Decide(Bytes(DecideRequest(segip_manager_, 42,
                                                     v1::QUOTA_OUTCOME_APPROVE, now)))
                    .status(),
                absl::StatusCode::kNotFound, "no quota request 42");
  v1::QuotaControlBody set;
  *set.mutable_set_policy()->mutable_policy() = Policy(Grant(), 1, 0, 0, 0);
  ExpectRefused(control_->SetPolicy(Bytes(MakeQuotaControlRequest(set, "test",
                                                                  sin_manager_.serial,
                                                                  sin_manager_.key, now)))
                    .status(),
                absl::StatusCode::kPermissionDenied, "needs an operator");
  auto ok = control_->SetPolicy(
      Bytes(MakeQuotaControlRequest(set, "test", operator_.serial, operator_.key, now)));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->policy().changed_by(), "operator:1");
  *set.mutable_set_policy()->mutable_policy() = Policy(Grant(), -3, 0, 0, 0);
  ExpectRefused(control_->SetPolicy(Bytes(MakeQuotaControlRequest(set, "test", operator_.serial,
                                                                  operator_.key, now)))
                    .status(),
                absl::StatusCode::kInvalidArgument, "policy.rate_per_second");
}

}  // namespace
}  // namespace chasqui::testing
