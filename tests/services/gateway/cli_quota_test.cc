// `chasqui quota <verb>` run as a child process against a real nats-server and the real quota
// service: a consumer's manager asks for more, the provider's manager approves, usage shows
// the new limits; the wrong person and a second decision are refused with the reason.

#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/services/gateway/cli_people_test_support.h"

namespace chasqui::testing {
namespace {

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
  EXPECT_TRUE(Has(r.output, " 0/50000, month ")) << r.output;
  EXPECT_TRUE(Has(r.output, "(limits by decision:1)")) << r.output;
  EXPECT_TRUE(Has(r.output, "days and months in America/La_Paz")) << r.output;
  r = Chasqui(ana_, "quota usage --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json j = nlohmann::json::parse(r.output, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.output;
  EXPECT_EQ(j["grants"][0]["policy"]["per_day"], "50000") << r.output;  // uint64 as a string
  EXPECT_EQ(j["zone"], "America/La_Paz");
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
