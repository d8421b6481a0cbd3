// The audit service and AuditClient over a real nats-server and a real RocksDB store: appends
// are acknowledged with their seq and can be queried back; a duplicate (sender, id) is
// AlreadyExists (REPLAYED) and stored once; malformed appends get a precise error reply; the
// client answers Unavailable when its backlog is full, when nobody serves the subject and when
// the service does not answer in time.

#include "services/audit/audit_service.h"

#include <atomic>
#include <memory>
#include <set>
#include <string>

#include "common/bus/bus.h"
#include "common/bus/request_mux.h"
#include "common/envelope/identity.h"
#include "gtest/gtest.h"
#include "services/audit/audit_client.h"
#include "services/audit/audit_query.h"
#include "tests/services/audit/audit_service_fixture.h"
#include "tests/services/audit/audit_test_support.h"
#include "tests/support/nats_server.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait_for.h"

namespace chasqui::audit {
namespace {

using ::chasqui::testing::NatsServer;
using ::chasqui::testing::TempDir;
using testing::MakeRecord;
using testing::RawRequest;
using testing::SignedQuery;
using testing::Outcomes;

using AuditServiceTest = testing::AuditServiceFixture;

TEST_F(AuditServiceTest, AppendsAreAcknowledgedDurableAndQueryable) {
  client_ = AuditClient::Create(mux_.get());
  Outcomes outcomes;
  constexpr uint64_t kN = 200;
  for (uint64_t i = 1; i <= kN; ++i) {
    client_->Append(MakeRecord(i, i % 2 ? "sin" : "aduana", i % 4 == 1 ? "ana" : "luis"),
                    outcomes.For(i));
  }
  ASSERT_TRUE(outcomes.WaitFor(kN));
  std::set<uint64_t> seqs;
  for (uint64_t i = 1; i <= kN; ++i) {
    auto seq = outcomes.Get(i);
    ASSERT_TRUE(seq.ok()) << i << ": " << seq.status();
    seqs.insert(*seq);
  }
  EXPECT_EQ(seqs.size(), kN);
  EXPECT_LT(client_->batches_sent(), kN) << "records sent while others were in flight batch up";

  // Query over NATS: sin's records for end user ana, FORBIDDEN only, in pages of 7.
  v1::QueryRequest q;
  q.set_consumer("sin");
  q.set_end_user("ana");
  q.set_page_size(7);
  std::vector<uint64_t> found;
  for (int page = 0; page < 100; ++page) {
    auto wire = RawRequest(*mux_, kQuerySubject,
                           SignedQuery(operator_, q, Now()).SerializeAsString());
    ASSERT_TRUE(wire.has_value());
    v1::QueryResponse response;
    ASSERT_TRUE(response.ParseFromString(*wire));
    ASSERT_FALSE(response.has_error()) << response.error().message();
    for (const auto& rec : response.records()) {
      v1::ChainEntry entry;
      ASSERT_TRUE(entry.ParseFromString(rec.entry()));
      EXPECT_EQ(entry.record().consumer(), "sin");
      EXPECT_EQ(entry.record().end_user(), "ana");
      found.push_back(rec.seq());
    }
    if (response.next_page_token().empty()) break;
    q.set_page_token(response.next_page_token());
  }
  EXPECT_EQ(found.size(), kN / 4);  // i % 4 == 1: all odd, so all sin
  EXPECT_TRUE(std::is_sorted(found.begin(), found.end()));

  v1::QueryRequest forbidden;
  forbidden.set_provider("segip");
  forbidden.set_service("persona_consulta");
  forbidden.set_has_outcome(true);
  forbidden.set_outcome(v1::FORBIDDEN);
  forbidden.set_page_size(1000);
  forbidden.set_from_ms(1'800'000'000'000 + 1000);  // records 100 and later
  auto result = RunQuery(*store_, forbidden);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->records_size(), 21);  // 100, 105, ..., 200
}

TEST_F(AuditServiceTest, DuplicateSenderAndIdIsAlreadyExistsAndStoredOnce) {
  client_ = AuditClient::Create(mux_.get());
  Outcomes outcomes;
  client_->Append(MakeRecord(1), outcomes.For(1));
  ASSERT_TRUE(outcomes.WaitFor(1));
  client_->Append(MakeRecord(1), outcomes.For(2));
  ASSERT_TRUE(outcomes.WaitFor(2));
  ASSERT_TRUE(outcomes.Get(1).ok());
  EXPECT_TRUE(absl::IsAlreadyExists(outcomes.Get(2).status())) << outcomes.Get(2).status();
  v1::QueryRequest all;
  auto result = RunQuery(*store_, all);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->records_size(), 1);
}

TEST_F(AuditServiceTest, MalformedAppendsGetAPreciseErrorReply) {
  struct Case {
    std::string data;
    std::string expect;
  };
  v1::AppendBatch empty;
  v1::AppendBatch one_bad;
  *one_bad.add_records() = MakeRecord(1);
  one_bad.mutable_records(0)->clear_sender_cert();
  *one_bad.add_records() = MakeRecord(2);
  for (const Case& c : {Case{"\xff\xff\xff garbage", "do not parse"},
                        Case{empty.SerializeAsString(), "no records"}}) {
    auto wire = RawRequest(*mux_, kAppendSubject, c.data);
    ASSERT_TRUE(wire.has_value()) << "no reply for " << c.expect;
    v1::AppendAck ack;
    ASSERT_TRUE(ack.ParseFromString(*wire));
    EXPECT_EQ(ack.error().code(), v1::BAD_REQUEST);
    EXPECT_NE(ack.error().message().find(c.expect), std::string::npos) << ack.error().message();
  }
  // One malformed record does not sink its batch.
  auto wire = RawRequest(*mux_, kAppendSubject, one_bad.SerializeAsString());
  ASSERT_TRUE(wire.has_value());
  v1::AppendAck ack;
  ASSERT_TRUE(ack.ParseFromString(*wire));
  ASSERT_EQ(ack.records_size(), 2);
  EXPECT_EQ(ack.records(0).status(), v1::ACK_REJECTED);
  EXPECT_NE(ack.records(0).error().find("sender_cert"), std::string::npos);
  EXPECT_EQ(ack.records(1).status(), v1::ACK_DURABLE);
  EXPECT_EQ(ack.records(1).seq(), 1u);
  // The service still serves.
  EXPECT_TRUE(service_->Ready().ok());
}

TEST_F(AuditServiceTest, ClientAnswersUnavailableWhenTheBacklogIsFullOrNobodyAnswers) {
  // A subject that a silent subscriber holds: requests go out and are never answered.
  auto silent = client_bus_->Subscribe("chq.ctl.audit.silent", [](const BusMessage&) {});
  ASSERT_TRUE(silent.ok());
  client_ = AuditClient::Create(mux_.get(), {.subject = "chq.ctl.audit.silent",
                                             .max_backlog = 3,
                                             .max_in_flight_batches = 1,
                                             .timeout = absl::Milliseconds(300)});
  Outcomes outcomes;
  for (uint64_t i = 1; i <= 4; ++i) client_->Append(MakeRecord(i), outcomes.For(i));
  // The fourth is refused at once: three already await the audit service.
  ASSERT_TRUE(outcomes.WaitFor(1, std::chrono::milliseconds(100)));
  EXPECT_TRUE(absl::IsUnavailable(outcomes.Get(4).status())) << outcomes.Get(4).status();
  EXPECT_NE(outcomes.Get(4).status().message().find("backlog full"), std::string::npos);
  // Then the timeout answers the rest; nothing stays pending.
  ASSERT_TRUE(outcomes.WaitFor(4));
  for (uint64_t i = 1; i <= 3; ++i) {
    EXPECT_TRUE(absl::IsUnavailable(outcomes.Get(i).status())) << outcomes.Get(i).status();
  }
  EXPECT_TRUE(::chasqui::testing::WaitFor([&] { return client_->backlog() == 0; }));

  // Nobody subscribed at all: no responders, Unavailable.
  auto nobody = AuditClient::Create(mux_.get(), {.subject = "chq.ctl.audit.nobody"});
  Outcomes none;
  nobody->Append(MakeRecord(9), none.For(9));
  ASSERT_TRUE(none.WaitFor(1));
  EXPECT_TRUE(absl::IsUnavailable(none.Get(9).status())) << none.Get(9).status();
}

}  // namespace
}  // namespace chasqui::audit
