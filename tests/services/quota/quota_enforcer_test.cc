// QuotaEnforcer against a QuotaLedger in the same process, with a FakeClock and no worker
// thread (the test drives renewals with Pump()): retry_after is right for each limit, the day
// rolls over at midnight in La Paz, enforcement continues from the leases held while the
// quota service is unreachable, a dead router loses at most its lease, and a raised limit
// takes effect on a live enforcer.

#include <memory>
#include <string>

#include "common/core/status.h"
#include "common/store/kv_store.h"
#include "gtest/gtest.h"
#include "tests/services/quota/quota_test_support.h"
#include "tests/support/temp_dir.h"

namespace chasqui::testing {
namespace {

const std::string kKey = GrantKeyString("test", "sin", "segip", "persona");

class EnforcerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    KvOptions kv;
    kv.path = dir_.File("db");
    store_ = *KvStore::Open(kv);
    ledger_ = *QuotaLedger::Open(QuotaLedgerOptions(), store_.get(), clock_);
    source_ = std::make_unique<LedgerSource>(ledger_.get());
  }
  std::unique_ptr<QuotaEnforcer> MakeEnforcer(const std::string& router) {
    QuotaEnforcerOptions o;
    o.router_id = router;
    o.background = false;
    o.min_lease = 4;
    auto e = QuotaEnforcer::Create(o, source_.get(), clock_);
    EXPECT_TRUE(e.ok()) << e.status();
    EXPECT_TRUE((*e)->Prepare(kKey).ok());
    (*e)->Pump();
    return *std::move(e);
  }
  // Admits until refused by something other than NO_LEASE (renewing on NO_LEASE, as the
  // worker would); returns how many were admitted and the final refusal.
  std::pair<int, QuotaAdmission> AdmitUntilRefused(QuotaEnforcer& e, int bound = 10'000) {
    int admitted = 0;
    for (int i = 0; i < bound; ++i) {
      QuotaAdmission a = e.Admit(kKey, clock_.NowUnixMillis());
      if (a.admitted) {
        ++admitted;
      } else if (a.limit == v1::QUOTA_LIMIT_NO_LEASE) {
        e.Pump();
      } else {
        return {admitted, a};
      }
    }
    return {admitted, QuotaAdmission{}};
  }

  TempDir dir_;
  FakeClock clock_{LaPazMillis(2026, 3, 14, 20, 0, 0)};
  std::unique_ptr<KvStore> store_;
  std::unique_ptr<QuotaLedger> ledger_;
  std::unique_ptr<LedgerSource> source_;
};

TEST_F(EnforcerTest, RateRetryAfterIsTheTimeToTheNextToken) {
  ASSERT_TRUE(ledger_->SetPolicy(Policy(Grant(), 10, 2, 0, 0), "t").ok());
  auto e = MakeEnforcer("r1");
  const int64_t t0 = clock_.NowUnixMillis();
  EXPECT_TRUE(e->Admit(kKey, t0).admitted);
  EXPECT_TRUE(e->Admit(kKey, t0).admitted);  // the burst of 2
  QuotaAdmission a = e->Admit(kKey, t0);
  EXPECT_FALSE(a.admitted);
  EXPECT_EQ(a.limit, v1::QUOTA_LIMIT_RATE);
  EXPECT_EQ(a.retry_after_ms, 100);  // 10/s: one token every 100 ms
  a = e->Admit(kKey, t0 + 40);
  EXPECT_EQ(a.retry_after_ms, 60);
  EXPECT_TRUE(e->Admit(kKey, t0 + 100).admitted);
}

TEST_F(EnforcerTest, DayRetryAfterRunsToLaPazMidnight) {
  ASSERT_TRUE(ledger_->SetPolicy(Policy(Grant(), 0, 0, 5, 0), "t").ok());
  auto e = MakeEnforcer("r1");
  auto [admitted, refusal] = AdmitUntilRefused(*e);
  EXPECT_EQ(admitted, 5);
  EXPECT_EQ(refusal.limit, v1::QUOTA_LIMIT_DAY);
  EXPECT_EQ(refusal.retry_after_ms, 4 * 3'600'000);  // 20:00 -> 00:00 La Paz
}

TEST_F(EnforcerTest, MonthRetryAfterRunsToTheNextMonthStart) {
  clock_.SetUnixMillis(LaPazMillis(2026, 3, 31, 22, 30, 0));
  ASSERT_TRUE(ledger_->SetPolicy(Policy(Grant(), 0, 0, 0, 7), "t").ok());
  auto e = MakeEnforcer("r1");
  auto [admitted, refusal] = AdmitUntilRefused(*e);
  EXPECT_EQ(admitted, 7);
  EXPECT_EQ(refusal.limit, v1::QUOTA_LIMIT_MONTH);
  EXPECT_EQ(refusal.retry_after_ms, 90 * 60'000);  // to 2026-04-01 00:00 La Paz
}

TEST_F(EnforcerTest, ProviderCapacityIsSharedByEveryGrantOfTheService) {
  v1::ProviderCapacity cap;
  cap.mutable_service()->set_env("test");
  cap.mutable_service()->set_provider("segip");
  cap.mutable_service()->set_service("persona");
  cap.set_rate_per_second(4);
  cap.set_burst(1);
  ASSERT_TRUE(ledger_->SetCapacity(cap, "t").ok());
  auto e = MakeEnforcer("r1");
  const std::string other = GrantKeyString("test", "aduana", "segip", "persona");
  ASSERT_TRUE(e->Prepare(other).ok());
  e->Pump();
  const int64_t t0 = clock_.NowUnixMillis();
  EXPECT_TRUE(e->Admit(kKey, t0).admitted);
  QuotaAdmission a = e->Admit(other, t0);  // another consumer, the same provider's capacity
  EXPECT_FALSE(a.admitted);
  EXPECT_EQ(a.limit, v1::QUOTA_LIMIT_PROVIDER_CAPACITY);
  EXPECT_EQ(a.retry_after_ms, 250);
  EXPECT_TRUE(e->Admit(other, t0 + 250).admitted);
}

TEST_F(EnforcerTest, WhenSeveralLimitsRefuseTheLongerWaitIsGiven) {
  ASSERT_TRUE(ledger_->SetPolicy(Policy(Grant(), 1, 1, 0, 0), "t").ok());
  v1::ProviderCapacity cap;
  cap.mutable_service()->set_env("test");
  cap.mutable_service()->set_provider("segip");
  cap.mutable_service()->set_service("persona");
  cap.set_rate_per_second(20);
  cap.set_burst(1);
  ASSERT_TRUE(ledger_->SetCapacity(cap, "t").ok());
  auto e = MakeEnforcer("r1");
  const int64_t t0 = clock_.NowUnixMillis();
  EXPECT_TRUE(e->Admit(kKey, t0).admitted);
  QuotaAdmission a = e->Admit(kKey, t0);
  EXPECT_EQ(a.limit, v1::QUOTA_LIMIT_RATE);
  EXPECT_EQ(a.retry_after_ms, 1000);  // not the provider's 50 ms
}

TEST_F(EnforcerTest, DayRollsOverAtMidnightInLaPaz) {
  clock_.SetUnixMillis(LaPazMillis(2026, 3, 14, 23, 59, 59));
  ASSERT_TRUE(ledger_->SetPolicy(Policy(Grant(), 0, 0, 3, 0), "t").ok());
  auto e = MakeEnforcer("r1");
  auto [admitted, refusal] = AdmitUntilRefused(*e);
  EXPECT_EQ(admitted, 3);
  EXPECT_EQ(refusal.limit, v1::QUOTA_LIMIT_DAY);
  EXPECT_EQ(refusal.retry_after_ms, 1000);
  clock_.AdvanceMillis(1000);  // 00:00:00 in La Paz (04:00 UTC)
  auto [next_day, refusal2] = AdmitUntilRefused(*e);
  EXPECT_EQ(next_day, 3);
  EXPECT_EQ(refusal2.limit, v1::QUOTA_LIMIT_DAY);
  EXPECT_EQ(refusal2.retry_after_ms, 86'400'000);
  EXPECT_EQ(e->View(kKey)->day, "2026-03-15");
}

TEST_F(EnforcerTest, KeepsEnforcingFromItsLeasesWhileTheServiceIsUnreachable) {
  ASSERT_TRUE(ledger_->SetPolicy(Policy(Grant(), 0, 0, 1000, 0), "t").ok());
  auto e = MakeEnforcer("r1");
  const uint64_t held = e->View(kKey)->allowance;
  ASSERT_GT(held, 0u);
  EXPECT_TRUE(e->ServiceReachable());
  source_->down = true;
  uint64_t admitted = 0;
  for (int i = 0; i < 2000; ++i) {
    QuotaAdmission a = e->Admit(kKey, clock_.NowUnixMillis());
    if (!a.admitted) {
      EXPECT_EQ(a.limit, v1::QUOTA_LIMIT_NO_LEASE);
      break;
    }
    ++admitted;
    e->Pump();  // renewals fail; admission goes on from what is held
    clock_.AdvanceMillis(300);
  }
  EXPECT_EQ(admitted, held);  // everything held, and not one more
  EXPECT_FALSE(e->ServiceReachable());
  EXPECT_GT(e->LeaseFailures(), 0);
  source_->down = false;
  clock_.AdvanceMillis(1000);
  e->Pump();
  EXPECT_TRUE(e->ServiceReachable());
  EXPECT_TRUE(e->Admit(kKey, clock_.NowUnixMillis()).admitted);
}

TEST_F(EnforcerTest, ADeadRouterLosesAtMostItsLeaseAndNothingPassesTheCap) {
  constexpr int kCap = 100;
  ASSERT_TRUE(ledger_->SetPolicy(Policy(Grant(), 0, 0, kCap, 0), "t").ok());
  int admitted = 0;
  uint64_t lost = 0;
  {
    auto dying = MakeEnforcer("r1");
    for (int i = 0; i < 10; ++i) admitted += dying->Admit(kKey, clock_.NowUnixMillis()).admitted;
    dying->Pump();
    lost = dying->Outstanding();
  }  // dies without Drain: its unspent allowance is never returned
  auto survivor = MakeEnforcer("r2");
  auto [more, refusal] = AdmitUntilRefused(*survivor);
  admitted += more;
  EXPECT_EQ(refusal.limit, v1::QUOTA_LIMIT_DAY);
  EXPECT_LE(admitted, kCap);
  EXPECT_GE(admitted, kCap - static_cast<int>(lost));
  EXPECT_EQ(admitted + static_cast<int>(lost), kCap);
}

TEST_F(EnforcerTest, DrainReturnsTheUnspentAllowance) {
  ASSERT_TRUE(ledger_->SetPolicy(Policy(Grant(), 0, 0, 1000, 0), "t").ok());
  auto e = MakeEnforcer("r1");
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(e->Admit(kKey, clock_.NowUnixMillis()).admitted);
  ASSERT_TRUE(e->Drain().ok());
  auto usage = ledger_->Usage(v1::UsageRequest());
  ASSERT_TRUE(usage.ok());
  EXPECT_EQ(usage->grants(0).day_consumed(), 3u);
  EXPECT_EQ(usage->grants(0).outstanding(), 0u);
  EXPECT_EQ(e->Admit(kKey, clock_.NowUnixMillis()).limit, v1::QUOTA_LIMIT_NO_LEASE);
}

TEST_F(EnforcerTest, ARaisedLimitTakesEffectWithoutRestart) {
  ASSERT_TRUE(ledger_->SetPolicy(Policy(Grant(), 0, 0, 5, 0), "t").ok());
  auto e = MakeEnforcer("r1");
  auto [admitted, refusal] = AdmitUntilRefused(*e);
  ASSERT_EQ(admitted, 5);
  ASSERT_EQ(refusal.limit, v1::QUOTA_LIMIT_DAY);
  ASSERT_TRUE(ledger_->SetPolicy(Policy(Grant(), 0, 0, 12, 0), "t").ok());
  v1::PolicyChanged event;
  *event.mutable_grant() = Grant();
  e->OnPolicyChanged(event);
  e->Pump();
  auto [more, refusal2] = AdmitUntilRefused(*e);
  EXPECT_EQ(more, 7);
  EXPECT_EQ(refusal2.limit, v1::QUOTA_LIMIT_DAY);
}

TEST_F(EnforcerTest, UnknownGrantIsRefusedAsNoLeaseUntilTheFirstLease) {
  auto e = MakeEnforcer("r1");
  const std::string fresh = GrantKeyString("test", "aduana", "sin", "nit");
  QuotaAdmission a = e->Admit(fresh, clock_.NowUnixMillis());
  EXPECT_EQ(a.limit, v1::QUOTA_LIMIT_NO_LEASE);
  EXPECT_GT(a.retry_after_ms, 0);
  e->Pump();
  EXPECT_TRUE(e->Admit(fresh, clock_.NowUnixMillis()).admitted);  // no policy: no grant limits
  EXPECT_EQ(e->Admit("not/a key", clock_.NowUnixMillis()).limit, v1::QUOTA_LIMIT_NO_LEASE);
  EXPECT_TRUE(absl::IsInvalidArgument(e->Prepare("test/sin")));
}

}  // namespace
}  // namespace chasqui::testing
