// Who may read the trace, over a real nats-server, a real RocksDB store and real certificates:
// an operator reads everything; an entity (its gateway, MAE, managers) reads the records where
// it is the consumer or the provider, its request narrowed to them; anyone else is refused
// FORBIDDEN naming the rule; unsigned, forged, replayed, stale and unknown-signer requests get
// their own codes. Reports follow the same rules and match the Prometheus series.

#include <map>
#include <set>
#include <string>

#include "common/core/files.h"
#include "common/envelope/identity.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "services/audit/audit_report.h"
#include "tests/services/audit/audit_service_fixture.h"
#include "tests/services/audit/audit_test_support.h"
#include "tests/support/metrics.h"
#include "tests/support/run_command.h"

namespace chasqui::audit {
namespace {

using ::chasqui::testing::SeriesValue;
using testing::Holder;
using testing::MakeRecord;
using testing::Outcomes;
using testing::RawRequest;
using testing::SignedQuery;
using testing::SignedReport;

class AuditAccessTest : public testing::AuditServiceFixture {
 protected:
  void SetUp() override {
    AuditServiceFixture::SetUp();
    if (HasFatalFailure()) return;
    // 1..40: sin and aduana consume segip's persona_consulta (every 5th FORBIDDEN);
    // 41..50: aduana consumes sin's padron.
    Outcomes outcomes;
    for (uint64_t n = 1; n <= 50; ++n) {
      v1::AuditRecord r = MakeRecord(n, n <= 40 && n % 2 ? "sin" : "aduana");
      if (n > 40) {
        r.set_provider("sin");
        r.set_service("padron");
      }
      chain_->Append(std::move(r), outcomes.For(n));
    }
    ASSERT_TRUE(outcomes.WaitFor(50));
  }

  // The records a signed query returns (one page of up to 1000), or its error.
  struct Answer {
    std::vector<v1::AuditRecord> records;
    v1::ErrorInfo error;
  };
  Answer Ask(const std::string& wire, const std::string& subject = kQuerySubject) {
    Answer a;
    auto reply = RawRequest(*mux_, subject, wire);
    EXPECT_TRUE(reply.has_value());
    if (!reply) return a;
    v1::QueryResponse response;
    EXPECT_TRUE(response.ParseFromString(*reply));
    a.error = response.error();
    for (const auto& rec : response.records()) {
      v1::ChainEntry e;
      EXPECT_TRUE(e.ParseFromString(rec.entry()));
      a.records.push_back(e.record());
    }
    return a;
  }
  Answer Query(const Holder& who, const std::string& consumer, const std::string& provider) {
    v1::QueryRequest q;
    q.set_consumer(consumer);
    q.set_provider(provider);
    q.set_page_size(1000);
    return Ask(SignedQuery(who, q, Now()).SerializeAsString());
  }
};

TEST_F(AuditAccessTest, AnOperatorReadsEverything) {
  Answer a = Query(operator_, "", "");
  ASSERT_EQ(a.error.code(), v1::OK) << a.error.message();
  EXPECT_EQ(a.records.size(), 50u);
}

TEST_F(AuditAccessTest, AConsumerReadsOnlyItsOwnRecordsNarrowedToThem) {
  Holder gateway = readers_.Make("sin", v1::CERTIFICATE_ROLE_ENTITY);
  Holder manager = readers_.Make("sin", v1::CERTIFICATE_ROLE_MANAGER, "marta");

  // Nothing asked: its own consumption.
  for (const Holder* who : {&gateway, &manager}) {
    Answer a = Query(*who, "", "");
    ASSERT_EQ(a.error.code(), v1::OK) << a.error.message();
    EXPECT_EQ(a.records.size(), 20u);
    for (const auto& r : a.records) EXPECT_EQ(r.consumer(), "sin");
  }
  // provider=segip: its own records with segip, not aduana's.
  Answer with_segip = Query(gateway, "", "segip");
  ASSERT_EQ(with_segip.error.code(), v1::OK) << with_segip.error.message();
  EXPECT_EQ(with_segip.records.size(), 20u);
  for (const auto& r : with_segip.records) EXPECT_EQ(r.consumer(), "sin");
  // consumer=aduana: what aduana consumed of sin's services, nothing of segip's.
  Answer of_aduana = Query(gateway, "aduana", "");
  ASSERT_EQ(of_aduana.error.code(), v1::OK) << of_aduana.error.message();
  EXPECT_EQ(of_aduana.records.size(), 10u);
  for (const auto& r : of_aduana.records) EXPECT_EQ(r.provider(), "sin");
  // Someone else's exchange with a third party: refused, naming the rule.
  Answer refused = Query(gateway, "aduana", "segip");
  EXPECT_EQ(refused.error.code(), v1::FORBIDDEN);
  EXPECT_NE(refused.error.message().find("reads only records where sin is the consumer or the "
                                         "provider"),
            std::string::npos)
      << refused.error.message();
  EXPECT_TRUE(refused.records.empty());
}

TEST_F(AuditAccessTest, APublisherReadsTheConsumptionOfItsServices) {
  Holder mae = readers_.Make("segip", v1::CERTIFICATE_ROLE_MAE, "maria");
  Answer a = Query(mae, "", "segip");
  ASSERT_EQ(a.error.code(), v1::OK) << a.error.message();
  EXPECT_EQ(a.records.size(), 40u);
  std::set<std::string> consumers;
  for (const auto& r : a.records) consumers.insert(r.consumer());
  EXPECT_EQ(consumers, (std::set<std::string>{"sin", "aduana"}));
  // Nothing asked: its own consumption, of which there is none.
  Answer own = Query(mae, "", "");
  ASSERT_EQ(own.error.code(), v1::OK) << own.error.message();
  EXPECT_TRUE(own.records.empty());
}

TEST_F(AuditAccessTest, EveryOtherRequestIsRefusedWithItsOwnCode) {
  Holder router = readers_.Make("router", v1::CERTIFICATE_ROLE_ROUTER);
  Holder sin = readers_.Make("sin", v1::CERTIFICATE_ROLE_ENTITY);
  v1::QueryRequest all;
  auto expect = [&](const std::string& wire, v1::Code code, const std::string& text,
                    const std::string& subject = kQuerySubject) {
    Answer a = Ask(wire, subject);
    EXPECT_EQ(a.error.code(), code) << text << ": " << a.error.message();
    EXPECT_NE(a.error.message().find(text), std::string::npos) << a.error.message();
    EXPECT_TRUE(a.records.empty()) << text;
  };
  // A platform service's key reads nothing.
  expect(SignedQuery(router, all, Now()).SerializeAsString(), v1::FORBIDDEN, "is a router key");
  // The old unsigned QueryRequest.
  expect(all.SerializeAsString(), v1::BAD_REQUEST, "not a ControlRequest");
  // Signed by another key than the certificate's.
  Holder forger;  // a fresh key, claiming sin's certificate
  forger.serial = sin.serial;
  expect(SignedQuery(forger, all, Now()).SerializeAsString(), v1::UNAUTHENTICATED,
         "signature does not verify");
  // A serial nobody issued.
  Holder unknown;
  unknown.serial = 999'999;
  expect(SignedQuery(unknown, all, Now()).SerializeAsString(), v1::UNAUTHENTICATED,
         "signer certificate 999999");
  // Sent ten minutes ago.
  expect(SignedQuery(sin, all, Now() - 600'000).SerializeAsString(), v1::EXPIRED, "outside the");
  // The same signed bytes twice.
  const std::string once = SignedQuery(sin, all, Now()).SerializeAsString();
  ASSERT_EQ(Ask(once).error.code(), v1::OK);
  expect(once, v1::REPLAYED, "replayed");
  // A report signed for the query subject.
  v1::ReportRequest report;
  report.set_from_day("2027-01-15");
  expect(SignedReport(sin, report, Now()).SerializeAsString(), v1::BAD_REQUEST,
         "the request's action is report, not query");
}

TEST_F(AuditAccessTest, ASignedReadCannotBeReplayedAfterARestart) {
  Holder sin = readers_.Make("sin", v1::CERTIFICATE_ROLE_ENTITY);
  const std::string once = SignedQuery(sin, v1::QueryRequest(), Now()).SerializeAsString();
  const std::string path = dir_.File("nonces");
  {
    auto store = KvStore::Open({.path = path});
    ASSERT_TRUE(store.ok()) << store.status();
    AuditAccess access({.nonce_store = store->get()}, readers_.dirs.lookup.get(), SystemClock());
    ASSERT_TRUE(access.Check("query", once).ok());
    EXPECT_TRUE(absl::IsAlreadyExists(access.Check("query", once).status()));
  }
  // The process restarts: a new AuditAccess over the reopened store still knows the nonce.
  auto store = KvStore::Open({.path = path});
  ASSERT_TRUE(store.ok()) << store.status();
  AuditAccess restarted({.nonce_store = store->get()}, readers_.dirs.lookup.get(), SystemClock());
  auto replay = restarted.Check("query", once);
  EXPECT_TRUE(absl::IsAlreadyExists(replay.status())) << replay.status();
  // A fresh request from the same signer is still served.
  EXPECT_TRUE(
      restarted.Check("query", SignedQuery(sin, v1::QueryRequest(), Now()).SerializeAsString())
          .ok());
  // Memory alone forgets on restart (what the store is for).
  AuditAccess in_memory(AuditAccessOptions{}, readers_.dirs.lookup.get(), SystemClock());
  EXPECT_TRUE(in_memory.Check("query", once).ok());
}

TEST_F(AuditAccessTest, WithoutAnchorsReadsAreRefusedUnavailable) {
  AuditAccess none(AuditAccessOptions{}, nullptr, SystemClock());
  auto checked =
      none.Check("query", SignedQuery(operator_, v1::QueryRequest(), Now()).SerializeAsString());
  EXPECT_TRUE(absl::IsUnavailable(checked.status())) << checked.status();
  EXPECT_NE(checked.status().message().find("--anchors"), std::string::npos);
}

TEST_F(AuditAccessTest, ReportsFollowTheSameRulesAndMatchTheMetrics) {
  auto zone = LoadReportZone(kDefaultReportZone);
  ASSERT_TRUE(zone.ok());
  const std::string day = DayOf(MakeRecord(1).received_at_ms(), *zone);
  auto report = [&](const Holder& who, const std::string& consumer, const std::string& provider) {
    v1::ReportRequest r;
    r.set_consumer(consumer);
    r.set_provider(provider);
    r.set_from_day(day);
    auto wire = RawRequest(*mux_, kReportSubject, SignedReport(who, r, Now()).SerializeAsString());
    v1::ReportResponse response;
    EXPECT_TRUE(wire.has_value() && response.ParseFromString(*wire));
    return response;
  };

  v1::ReportResponse all = report(operator_, "", "");
  ASSERT_FALSE(all.has_error()) << all.error().message();
  EXPECT_EQ(all.zone(), kDefaultReportZone);
  ASSERT_EQ(all.rows_size(), 3);  // (aduana, segip), (aduana, sin), (sin, segip)
  std::map<std::string, v1::ReportRow> rows;
  for (const auto& r : all.rows()) rows[r.consumer() + "/" + r.provider()] = r;
  const v1::ReportRow& sin_segip = rows["sin/segip"];
  EXPECT_EQ(sin_segip.day(), day);
  EXPECT_EQ(sin_segip.service(), "persona_consulta");
  EXPECT_EQ(sin_segip.total(), 20u);
  EXPECT_EQ(sin_segip.errors(), 4u);  // 5, 15, 25, 35
  EXPECT_EQ(sin_segip.by_outcome().at("OK"), 16u);
  EXPECT_EQ(sin_segip.by_outcome().at("FORBIDDEN"), 4u);
  // MakeRecord replies 3 ms after receiving: the 2-5 ms bucket.
  EXPECT_EQ(sin_segip.latency_p50_ms(), 5u);
  EXPECT_EQ(sin_segip.latency_p95_ms(), 5u);
  EXPECT_EQ(sin_segip.latency_max_ms(), 3u);
  EXPECT_DOUBLE_EQ(sin_segip.latency_mean_ms(), 3.0);
  EXPECT_EQ(rows["aduana/sin"].total(), 10u);

  // The metrics count the same exchanges.
  EXPECT_EQ(SeriesValue(registry_, "chasqui_audit_exchanges_total",
                        {"consumer=\"sin\"", "provider=\"segip\"", "outcome=\"OK\""}),
            16);
  EXPECT_EQ(SeriesValue(registry_, "chasqui_audit_exchanges_total",
                        {"consumer=\"sin\"", "provider=\"segip\"", "outcome=\"FORBIDDEN\"",
                         "env=\"test\"", "service=\"persona_consulta\""}),
            4);
  EXPECT_EQ(SeriesValue(registry_, "chasqui_audit_exchange_latency_seconds_count",
                        {"service=\"padron\"", "outcome=\"OK\""}),
            rows["aduana/sin"].by_outcome().at("OK"));

  // sin: its consumption and the consumption of its padron; never aduana's use of segip.
  Holder sin = readers_.Make("sin", v1::CERTIFICATE_ROLE_ENTITY);
  v1::ReportResponse own = report(sin, "", "");
  ASSERT_FALSE(own.has_error()) << own.error().message();
  ASSERT_EQ(own.rows_size(), 1);
  EXPECT_EQ(own.rows(0).consumer(), "sin");
  v1::ReportResponse as_publisher = report(sin, "", "sin");
  ASSERT_EQ(as_publisher.rows_size(), 1);
  EXPECT_EQ(as_publisher.rows(0).consumer(), "aduana");
  v1::ReportResponse refused = report(sin, "aduana", "segip");
  EXPECT_EQ(refused.error().code(), v1::FORBIDDEN);
  EXPECT_EQ(refused.rows_size(), 0);
  // A bad day is BAD_REQUEST naming the field.
  v1::ReportRequest bad;
  bad.set_from_day("15/01/2027");
  auto wire =
      RawRequest(*mux_, kReportSubject, SignedReport(operator_, bad, Now()).SerializeAsString());
  v1::ReportResponse bad_response;
  ASSERT_TRUE(wire.has_value() && bad_response.ParseFromString(*wire));
  EXPECT_EQ(bad_response.error().code(), v1::BAD_REQUEST);
  EXPECT_NE(bad_response.error().message().find("from_day"), std::string::npos);
}

TEST_F(AuditAccessTest, TheCommandLineSignsWithKeyAndCertificate) {
  // A manager of sin with a key file and its certificate, as `chasqui enrol` leaves them.
  Identity marta = GenerateIdentity("sin", "test", Role::kManager);
  auto [serial, cert] = readers_.root.IssueKey(marta.sign.public_key(), "marta", "sin", "test",
                                               v1::CERTIFICATE_ROLE_MANAGER);
  ASSERT_TRUE(readers_.dirs.Add("test", cert, Now()).ok());
  marta.pub.serial = serial;
  const std::string key = dir_.File("marta.key");
  const std::string cert_file = dir_.File("marta.cert");
  ASSERT_TRUE(WriteIdentity(key, marta).ok());
  ASSERT_TRUE(WriteFileDurably(cert_file, cert, 0600, false).ok());
  const std::string bin = std::string("timeout 30 ") + CHASQUI_AUDIT_BIN;
  const std::string as_marta =
      " --key " + key + " --cert " + cert_file + " --nats " + nats_->url();

  auto own = ::chasqui::testing::RunCommand(bin + " query" + as_marta + " --json");
  ASSERT_EQ(own.exit_code, 0) << own.output;
  const auto json_start = own.output.find('{');
  ASSERT_NE(json_start, std::string::npos) << own.output;
  auto doc = nlohmann::json::parse(own.output.substr(json_start), nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << own.output;
  ASSERT_EQ(doc["records"].size(), 20u) << own.output;
  for (const auto& r : doc["records"]) EXPECT_EQ(r["entry"]["record"]["consumer"], "sin");

  auto refused = ::chasqui::testing::RunCommand(bin + " query" + as_marta +
                                                " --consumer aduana --provider segip");
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_NE(refused.output.find("FORBIDDEN"), std::string::npos) << refused.output;

  auto zone = LoadReportZone(kDefaultReportZone);
  ASSERT_TRUE(zone.ok());
  auto report = ::chasqui::testing::RunCommand(
      bin + " report" + as_marta + " --from-day " + DayOf(MakeRecord(1).received_at_ms(), *zone));
  ASSERT_EQ(report.exit_code, 0) << report.output;
  EXPECT_NE(report.output.find("persona_consulta"), std::string::npos) << report.output;
  EXPECT_NE(report.output.find("FORBIDDEN=4 OK=16"), std::string::npos) << report.output;

  // Neither --data nor --key: told what to give.
  auto neither = ::chasqui::testing::RunCommand(bin + " query");
  EXPECT_EQ(neither.exit_code, 2) << neither.output;
  EXPECT_NE(neither.output.find("give --data DIR"), std::string::npos) << neither.output;
}

}  // namespace
}  // namespace chasqui::audit
