// `chasqui quota <verb>` run as a child process against a real nats-server and the real quota
// service: a consumer's manager asks for more, the provider's manager approves, usage shows
// the new limits; the wrong person and a second decision are refused with the reason.

#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/services/gateway/cli_people_test_support.h"

namespace chasqui::testing {
namespace {

v1::GrantKey SinGrant() {
  v1::GrantKey g;
  g.set_env("test");
  g.set_consumer("sin");
  g.set_provider("segip");
  g.set_service("persona");
  return g;
}

class CliQuotaTest : public CliPeopleTest {
 protected:
  void SetUp() override {
    CliPeopleTest::SetUp();
    v1::QuotaPolicy p;
    p.mutable_grant()->set_env("test");
    p.mutable_grant()->set_consumer("sin");
    p.mutable_grant()->set_provider("segip");
    p.mutable_grant()->set_service("persona");
    p.set_rate_per_second(10);
    p.set_burst(20);
    p.set_per_day(10000);
    ASSERT_TRUE(ledger_->SetPolicy(p, "config").ok());
  }
  static constexpr char kAsk[] =
      "quota request --consumer sin --provider segip --service persona --rate 50 --burst 100 "
      "--per-day 50000 --justification 'census month'";
};

TEST_F(CliQuotaTest, RequestDecideAndUsage) {
  CommandOutcome r = Chasqui(lucia_, kAsk);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r.output,
                  "quota request 1 pending: sin -> segip/persona in test asks rate 50/s burst "
                  "100, per day 50000, per month - (now rate 10/s burst 20, per day 10000"))
      << r.output;
  r = Chasqui(pedro_, "quota decide --id 1 --outcome approve");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "quota request 1 approved: sin -> segip/persona in test now has rate "
                            "50/s burst 100, per day 50000"))
      << r.output;
  r = Chasqui(ana_, "quota usage --consumer sin");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "sin -> segip/persona in test: day ")) << r.output;
  EXPECT_TRUE(Has(r.output, " used 0/50000; month ")) << r.output;
  EXPECT_TRUE(Has(r.output, "(limits by decision:1)")) << r.output;
  EXPECT_TRUE(Has(r.output, "days and months in America/La_Paz")) << r.output;
  r = Chasqui(ana_, "quota usage --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json j = nlohmann::json::parse(r.output, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.output;
  EXPECT_EQ(j["grants"][0]["policy"]["per_day"], "50000") << r.output;  // uint64 as a string
  EXPECT_EQ(j["zone"], "America/La_Paz");
}

TEST_F(CliQuotaTest, UsageTellsSpentFromLeasedToRoutersAndUnspent) {
  // A router leases 40, later says it holds 13 unspent: 27 are spent, at most 13 are not.
  v1::LeaseRequest lease;
  lease.set_router_id("r1");
  *lease.mutable_grant() = SinGrant();
  lease.set_wanted(40);
  auto granted = ledger_->Lease(lease);
  ASSERT_TRUE(granted.ok()) << granted.status();
  ASSERT_EQ(granted->lease().allowance(), 40u);
  CommandOutcome r = Chasqui(ana_, "quota usage --consumer sin");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "sin -> segip/persona in test: day ")) << r.output;
  EXPECT_TRUE(Has(r.output, " used 0/10000 and leased to routers, unspent, at most 40 more; "))
      << r.output;
  lease.set_wanted(0);
  lease.set_unspent(13);
  lease.set_unspent_day(granted->lease().day());
  ASSERT_TRUE(ledger_->Lease(lease).ok());
  r = Chasqui(ana_, "quota usage --consumer sin");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r.output, " used 27/10000 and leased to routers, unspent, at most 13 more; "))
      << r.output;
  EXPECT_TRUE(Has(r.output, "; month " + granted->lease().month() + " used 27/-")) << r.output;
  EXPECT_TRUE(Has(r.output, " (limits by config)")) << r.output;
  r = Chasqui(ana_, "quota usage --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json j = nlohmann::json::parse(r.output, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.output;
  EXPECT_EQ(j["grants"][0]["day_consumed"], "40") << r.output;
  EXPECT_EQ(j["grants"][0]["day_unspent_at_most"], "13") << r.output;
}

TEST_F(CliQuotaTest, AnOperatorSetsAGrantsLimitsAndAServicesCapacity) {
  CommandOutcome r = Chasqui(
      ana_,
      "quota set_policy --consumer sin --provider segip --service persona --rate 25 --burst 50 "
      "--per-day 2000 --per-month 40000");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "quota policy set: sin -> segip/persona in test now has rate 25/s "
                            "burst 50, per day 2000, per month 40000 (by operator:"))
      << r.output;
  auto p = ledger_->Policy(SinGrant());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->per_day(), 2000u);
  EXPECT_EQ(p->per_month(), 40000u);
  EXPECT_EQ(p->rate_per_second(), 25);

  r = Chasqui(ana_, "quota set_policy --provider segip --service persona --capacity 300 "
                    "--capacity-burst 600 --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json j = nlohmann::json::parse(r.output, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.output;
  EXPECT_EQ(j["capacity"]["rate_per_second"], 300) << r.output;
  EXPECT_EQ(j["capacity"]["burst"], 600) << r.output;
  EXPECT_EQ(j["capacity"]["service"]["provider"], "segip") << r.output;
  v1::ServiceKey service;
  service.set_env("test");
  service.set_provider("segip");
  service.set_service("persona");
  auto c = ledger_->Capacity(service);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rate_per_second(), 300);

  // Only an operator; and nothing to set is said before anything is signed.
  r = Chasqui(pedro_, "quota set_policy --consumer sin --provider segip --service persona "
                      "--per-day 99999999");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Has(r.output, "chasqui: quota set_policy refused: PERMISSION_DENIED: set_policy: "
                            "signer "))
      << r.output;
  EXPECT_TRUE(Has(r.output, "needs an operator")) << r.output;
  EXPECT_EQ(ledger_->Policy(SinGrant())->per_day(), 2000u);
  r = Chasqui(ana_, "quota set_policy --provider segip --service persona");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(Has(r.output, "give --consumer")) << r.output;
  // Bad limits are refused by the service, naming the field.
  r = Chasqui(ana_, "quota set_policy --consumer sin --provider segip --service persona "
                    "--per-day 50 --per-month 10");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Has(r.output, "INVALID_ARGUMENT")) << r.output;
}

TEST_F(CliQuotaTest, TheWrongPersonAndASecondDecisionAreRefused) {
  // segip's manager cannot ask on sin's behalf.
  CommandOutcome r = Chasqui(pedro_, kAsk);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Has(r.output, "chasqui: quota request refused: PERMISSION_DENIED: request: signer "))
      << r.output;
  EXPECT_TRUE(Has(r.output, "needs a manager of sin")) << r.output;
  r = Chasqui(lucia_, kAsk);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // The consumer cannot approve its own request.
  r = Chasqui(lucia_, "quota decide --id 1 --outcome approve");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Has(r.output, "PERMISSION_DENIED: decide: signer ")) << r.output;
  EXPECT_TRUE(Has(r.output, "needs a manager of segip")) << r.output;
  // A rejection needs a reason; then it is final.
  r = Chasqui(pedro_, "quota decide --id 1 --outcome reject");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Has(r.output, "INVALID_ARGUMENT: decide: a rejection must give a reason"))
      << r.output;
  r = Chasqui(pedro_, "quota decide --id 1 --outcome reject --reason 'capacity is full'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "quota request 1 rejected: sin -> segip/persona in test keeps rate "
                            "10/s burst 20, per day 10000, per month -; reason: capacity is full"))
      << r.output;
  r = Chasqui(pedro_, "quota decide --id 1 --outcome approve");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Has(r.output, "FAILED_PRECONDITION: quota request 1 was already decided")) << r.output;
  // An unknown request.
  r = Chasqui(pedro_, "quota decide --id 42 --outcome approve");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Has(r.output, "NOT_FOUND: no quota request 42")) << r.output;
}

}  // namespace
}  // namespace chasqui::testing
