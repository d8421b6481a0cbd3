// The per-day aggregates behind consumption reports, over a real RocksDB store: days are the
// report zone's (America/La_Paz by default, configurable), a redelivered record is not counted
// twice, the aggregates are read back after a restart exactly as written with the records,
// and bad report requests are refused naming the field.

#include "services/audit/audit_report.h"

#include <memory>

#include "absl/time/civil_time.h"
#include "gtest/gtest.h"
#include "services/audit/audit_chain.h"
#include "tests/services/audit/audit_test_support.h"
#include "tests/support/temp_dir.h"

namespace chasqui::audit {
namespace {

using ::chasqui::testing::TempDir;
using testing::MakeRecord;
using testing::Outcomes;

class NullSigner final : public CheckpointSigner {
 public:
  absl::Status Sign(v1::Checkpoint& cp) override {
    cp.set_signer_serial(1);
    cp.set_signature(std::string(64, 's'));
    return absl::OkStatus();
  }
};

// Unix ms of a UTC civil time.
int64_t Utc(int y, int mo, int d, int h, int mi) {
  return absl::ToUnixMillis(absl::FromCivil(absl::CivilMinute(y, mo, d, h, mi), absl::UTCTimeZone()));
}

class AuditReportTest : public ::testing::Test {
 protected:
  void Open(const std::string& zone = kDefaultReportZone) {
    chain_.reset();
    store_.reset();
    auto store = KvStore::Open({.path = dir_.File("audit")});
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    AuditChainOptions options;
    options.report_zone = zone;
    auto chain = AuditChain::Open(options, store_.get(), &signer_);
    ASSERT_TRUE(chain.ok()) << chain.status();
    chain_ = *std::move(chain);
  }
  // Appends records n with the given received time; returns the outcomes.
  absl::StatusOr<uint64_t> Append(uint64_t n, int64_t received_ms, v1::Code outcome = v1::OK,
                                  int64_t latency_ms = 40) {
    v1::AuditRecord r = MakeRecord(n);
    r.set_received_at_ms(received_ms);
    r.set_replied_at_ms(received_ms + latency_ms);
    r.set_outcome(outcome);
    Outcomes out;
    chain_->Append(std::move(r), out.For(n));
    EXPECT_TRUE(out.WaitFor(1));
    return out.Get(n);
  }
  v1::ReportResponse Report(const std::string& from, const std::string& to = "") {
    v1::ReportRequest q;
    q.set_from_day(from);
    q.set_to_day(to);
    auto r = RunReport(*store_, q, kDefaultReportZone);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : v1::ReportResponse();
  }

  TempDir dir_;
  NullSigner signer_;
  std::unique_ptr<KvStore> store_;
  std::unique_ptr<AuditChain> chain_;
};

TEST_F(AuditReportTest, DaysAreLaPazDaysAndARedeliveryIsNotCountedTwice) {
  Open();
  // 03:30 UTC on the 16th is 23:30 on the 15th in La Paz (UTC-4).
  ASSERT_TRUE(Append(1, Utc(2027, 1, 16, 3, 30)).ok());
  ASSERT_TRUE(Append(2, Utc(2027, 1, 16, 4, 30), v1::TIMEOUT, 9000).ok());
  ASSERT_TRUE(Append(3, Utc(2027, 1, 16, 12, 0), v1::OK, 700).ok());
  // The same (sender, request id) again: refused, and the aggregate does not move.
  EXPECT_TRUE(absl::IsAlreadyExists(Append(1, Utc(2027, 1, 16, 3, 30)).status()));

  v1::ReportResponse r = Report("2027-01-15", "2027-01-16");
  ASSERT_EQ(r.rows_size(), 2);
  EXPECT_EQ(r.rows(0).day(), "2027-01-15");
  EXPECT_EQ(r.rows(0).total(), 1u);
  EXPECT_EQ(r.rows(0).latency_p95_ms(), 50u);
  EXPECT_EQ(r.rows(1).day(), "2027-01-16");
  EXPECT_EQ(r.rows(1).total(), 2u);
  EXPECT_EQ(r.rows(1).errors(), 1u);
  EXPECT_EQ(r.rows(1).by_outcome().at("TIMEOUT"), 1u);
  EXPECT_EQ(r.rows(1).latency_p50_ms(), 1000u);   // 700 ms: the 500-1000 bucket
  EXPECT_EQ(r.rows(1).latency_p95_ms(), 10000u);  // 9000 ms: the 5000-10000 bucket
  EXPECT_EQ(r.rows(1).latency_max_ms(), 9000u);
  // One day only.
  EXPECT_EQ(Report("2027-01-16").rows_size(), 1);

  // After a restart the aggregates are what was written with the records, and keep counting.
  Open();
  EXPECT_TRUE(absl::IsAlreadyExists(Append(3, Utc(2027, 1, 16, 12, 0)).status()));
  ASSERT_TRUE(Append(4, Utc(2027, 1, 16, 13, 0)).ok());
  r = Report("2027-01-16");
  ASSERT_EQ(r.rows_size(), 1);
  EXPECT_EQ(r.rows(0).total(), 3u);
}

TEST_F(AuditReportTest, TheZoneIsConfigurable) {
  Open("UTC");
  ASSERT_TRUE(Append(1, Utc(2027, 1, 16, 3, 30)).ok());
  EXPECT_EQ(Report("2027-01-15").rows_size(), 0);
  ASSERT_EQ(Report("2027-01-16").rows_size(), 1);

  chain_.reset();
  AuditChainOptions options;
  options.report_zone = "America/Nowhere";
  auto bad = AuditChain::Open(options, store_.get(), &signer_);
  ASSERT_TRUE(absl::IsInvalidArgument(bad.status())) << bad.status();
  EXPECT_NE(bad.status().message().find("America/Nowhere"), std::string::npos);
}

TEST_F(AuditReportTest, BadRequestsNameTheField) {
  Open();
  struct Case {
    std::string from, to, service, expect;
  };
  for (const Case& c : std::vector<Case>{
           {"", "", "", "from_day is missing"},
           {"2027-13-01", "", "", "from_day \"2027-13-01\" is not a day"},
           {"2027-01-15", "15.01.2027", "", "to_day"},
           {"2027-01-15", "2027-01-14", "", "is before from_day"},
           {"2026-01-01", "2027-12-31", "", "at most 366"},
           {"2027-01-15", "", "padron", "service needs provider"},
       }) {
    v1::ReportRequest q;
    q.set_from_day(c.from);
    q.set_to_day(c.to);
    q.set_service(c.service);
    auto r = RunReport(*store_, q, kDefaultReportZone);
    ASSERT_TRUE(absl::IsInvalidArgument(r.status())) << c.expect << ": " << r.status();
    EXPECT_NE(r.status().message().find(c.expect), std::string::npos) << r.status();
  }
}

TEST_F(AuditReportTest, RefusalsBeforeAuthenticationHaveTheirOwnSectionPerDay) {
  Open();
  auto count = [&](uint64_t key, const std::string& router, const std::string& consumer,
                   v1::Code reason, int64_t start_ms, uint64_t n) {
    v1::RefusalCount c;
    c.set_env("test");
    c.set_router_id(router);
    c.set_consumer(consumer);
    c.set_reason(reason);
    c.set_interval_start_ms(start_ms);
    c.set_interval_ms(10'000);
    c.set_count(n);
    Outcomes out;
    chain_->AppendRefusalCount(c, out.For(key));
    EXPECT_TRUE(out.WaitFor(1));
    return out.Get(key);
  };
  // 03:30 UTC on the 16th is the 15th in La Paz; 15:00 UTC the 16th.
  ASSERT_TRUE(count(1, "r1", "sin", v1::UNAUTHENTICATED, Utc(2026, 3, 16, 3, 30), 7).ok());
  ASSERT_TRUE(count(2, "r2", "sin", v1::UNAUTHENTICATED, Utc(2026, 3, 16, 3, 30), 5).ok());
  ASSERT_TRUE(count(3, "r1", "unknown", v1::BAD_REQUEST, Utc(2026, 3, 16, 15, 0), 40).ok());
  ASSERT_TRUE(count(4, "r1", "sin", v1::UNAUTHENTICATED, Utc(2026, 3, 16, 15, 0), 2).ok());
  // A redelivered count (same router, consumer, reason, interval) is not counted twice.
  EXPECT_TRUE(absl::IsAlreadyExists(
      count(5, "r1", "sin", v1::UNAUTHENTICATED, Utc(2026, 3, 16, 3, 30), 7).status()));
  ASSERT_TRUE(Append(10, Utc(2026, 3, 16, 15, 0)).ok());

  const v1::ReportResponse all = Report("2026-03-15", "2026-03-16");
  ASSERT_EQ(all.refusals_size(), 3);
  EXPECT_EQ(all.refusals(0).day(), "2026-03-15");
  EXPECT_EQ(all.refusals(0).consumer(), "sin");
  EXPECT_EQ(all.refusals(0).reason(), v1::UNAUTHENTICATED);
  EXPECT_EQ(all.refusals(0).count(), 12u);
  EXPECT_EQ(all.refusals(1).day(), "2026-03-16");
  EXPECT_EQ(all.refusals(1).consumer(), "sin");
  EXPECT_EQ(all.refusals(1).count(), 2u);
  EXPECT_EQ(all.refusals(2).consumer(), "unknown");
  EXPECT_EQ(all.refusals(2).reason(), v1::BAD_REQUEST);
  EXPECT_EQ(all.refusals(2).count(), 40u);
  // The exchanges' rows are unchanged by the refusals.
  ASSERT_EQ(all.rows_size(), 1);
  EXPECT_EQ(all.rows(0).total(), 1u);

  // One day only; a consumer filter; a provider filter (refusals name none) shows none.
  EXPECT_EQ(Report("2026-03-16").refusals_size(), 2);
  v1::ReportRequest q;
  q.set_from_day("2026-03-15");
  q.set_to_day("2026-03-16");
  q.set_consumer("unknown");
  auto r = RunReport(*store_, q, kDefaultReportZone);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->refusals_size(), 1);
  EXPECT_EQ(r->refusals(0).count(), 40u);
  q.set_consumer("");
  q.set_provider("segip");
  r = RunReport(*store_, q, kDefaultReportZone);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->refusals_size(), 0);

  // Durable like the records: the same after a restart.
  Open();
  EXPECT_EQ(Report("2026-03-15", "2026-03-16").refusals(0).count(), 12u);
}

}  // namespace
}  // namespace chasqui::audit
