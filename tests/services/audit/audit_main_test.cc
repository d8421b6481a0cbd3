// The chasqui-audit binary under kill -9: a stream of appends through AuditClient, the service
// killed with SIGKILL while appends are in flight, restarted, three times. Every record that
// was acknowledged is in the store exactly once, records sent again after a restart
// (redelivery) are answered REPLAYED with their original seq and not stored twice, and the
// chain verifies at the end.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <mutex>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/bus/bus.h"
#include "common/bus/request_mux.h"
#include "common/core/files.h"
#include "common/envelope/identity.h"
#include "common/store/kv_store.h"
#include "gtest/gtest.h"
#include "services/audit/audit_client.h"
#include "services/audit/audit_schema.h"
#include "tests/services/audit/audit_test_support.h"
#include "tests/support/child_process.h"
#include "services/audit/audit_report.h"
#include "tests/support/nats_server.h"
#include "tests/support/run_command.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait_for.h"

namespace chasqui::audit {
namespace {

using ::chasqui::testing::NatsServer;
using ::chasqui::testing::TempDir;
using ::chasqui::testing::WaitFor;
using testing::MakeRecord;
using ::chasqui::testing::TestProcess;

// What the router side knows about each record it sent.
class Ledger {
 public:
  void Acked(uint64_t id, uint64_t seq) {
    std::lock_guard<std::mutex> lock(mu_);
    acked_.emplace(id, seq);
    unknown_.erase(id);
    ++acks_;
  }
  void Unknown(uint64_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!acked_.contains(id)) unknown_.insert(id);
  }
  void Replayed(uint64_t id, const std::string& message) {
    std::lock_guard<std::mutex> lock(mu_);
    ++replays_;
    auto it = acked_.find(id);
    if (it != acked_.end() &&
        message.find(fmt::format("seq {}", it->second)) == std::string::npos) {
      wrong_replays_.push_back(fmt::format("id {} acked as seq {}, replay says: {}", id,
                                           it->second, message));
    }
    // A record whose first ack was lost is durable after all: the replay says so.
    unknown_.erase(id);
  }
  void Unexpected(const std::string& what) {
    std::lock_guard<std::mutex> lock(mu_);
    unexpected_.push_back(what);
  }
  uint64_t acks() const {
    std::lock_guard<std::mutex> lock(mu_);
    return acks_;
  }
  std::map<uint64_t, uint64_t> acked() const {
    std::lock_guard<std::mutex> lock(mu_);
    return acked_;
  }
  std::set<uint64_t> unknown() const {
    std::lock_guard<std::mutex> lock(mu_);
    return unknown_;
  }
  uint64_t replays() const {
    std::lock_guard<std::mutex> lock(mu_);
    return replays_;
  }
  std::vector<std::string> problems() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::string> all = wrong_replays_;
    all.insert(all.end(), unexpected_.begin(), unexpected_.end());
    return all;
  }

 private:
  mutable std::mutex mu_;
  std::map<uint64_t, uint64_t> acked_;
  std::set<uint64_t> unknown_;
  uint64_t acks_ = 0;
  uint64_t replays_ = 0;
  std::vector<std::string> wrong_replays_;
  std::vector<std::string> unexpected_;
};

TEST(AuditBinaryTest, KillDashNineLosesNoAcknowledgedRecordAndNeverDuplicates) {
  auto nats = NatsServer::Start();
  ASSERT_TRUE(nats.ok()) << nats.status();
  TempDir dir;
  ASSERT_TRUE(
      WriteIdentity(dir.File("audit.key"), GenerateIdentity("audit", "test", Role::kRouter)).ok());
  const std::vector<std::string> args = {
      "serve", "--env", "test", "--data", dir.File("audit"), "--checkpoint-key",
      dir.File("audit.key"), "--nats", (*nats)->url(), "--ops-port", "0",
      "--checkpoint-every", "100"};

  auto bus = Bus::Connect({.url = (*nats)->url(), .name = "router", .send_asap = true});
  ASSERT_TRUE(bus.ok()) << bus.status();
  auto mux = RequestMux::Create(bus->get(), "_INBOX._router.kill");
  ASSERT_TRUE(mux.ok()) << mux.status();
  Ledger ledger;
  auto client = AuditClient::Create(
      mux->get(), {.max_backlog = 2000, .timeout = absl::Milliseconds(1500)});
  auto send = [&](uint64_t id) {
    client->Append(MakeRecord(id), [&ledger, id](absl::StatusOr<uint64_t> r) {
      if (r.ok()) {
        ledger.Acked(id, *r);
      } else if (absl::IsAlreadyExists(r.status())) {
        ledger.Replayed(id, std::string(r.status().message()));
      } else if (absl::IsUnavailable(r.status())) {
        ledger.Unknown(id);
      } else {
        ledger.Unexpected(fmt::format("id {}: {}", id, r.status().ToString()));
      }
    });
  };

  uint64_t next_id = 1;
  constexpr int kCycles = 4;
  size_t cut_in_flight = 0;  // records whose outcome a kill left unknown, over all cycles
  std::unique_ptr<TestProcess> audit;
  for (int cycle = 1; cycle <= kCycles; ++cycle) {
    audit = std::make_unique<TestProcess>(CHASQUI_AUDIT_BIN, args, dir.File("audit.log"));
    ASSERT_TRUE(audit->WaitForLog("audit serving", cycle)) << audit->Log();
    // Redelivery: everything whose outcome is unknown, and a sample of acknowledged records.
    for (uint64_t id : ledger.unknown()) send(id);
    int sample = 0;
    for (const auto& [id, seq] : ledger.acked()) {
      if (sample++ % 7 == 0) send(id);
    }
    // A stream of new records; kill -9 once enough were acknowledged, appends still flowing.
    const uint64_t target = ledger.acks() + 400;
    std::atomic<bool> stop{false};
    std::thread producer([&] {
      while (!stop.load()) {
        if (client->backlog() < 200) {
          send(next_id++);
        } else {
          std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
      }
    });
    const bool reached = WaitFor([&] { return ledger.acks() >= target; },
                                 std::chrono::seconds(20));
    if (cycle < kCycles) audit->Kill9();
    stop = true;
    producer.join();
    ASSERT_TRUE(reached) << "the service acknowledged too little in cycle " << cycle << "\n"
                         << audit->Log();
    // Every outcome arrives: acks from before the kill, Unavailable for the rest.
    ASSERT_TRUE(WaitFor([&] { return client->backlog() == 0; }, std::chrono::seconds(10)));
    if (cycle < kCycles) cut_in_flight += ledger.unknown().size();
  }
  EXPECT_GT(cut_in_flight, 0u) << "no kill landed while appends were in flight";
  // A last round so the unknown ones settle, then a clean stop.
  for (uint64_t id : ledger.unknown()) send(id);
  ASSERT_TRUE(WaitFor([&] { return client->backlog() == 0; }, std::chrono::seconds(10)));
  EXPECT_EQ(audit->Terminate(), 0) << audit->Log();
  client.reset();

  EXPECT_TRUE(ledger.problems().empty()) << ledger.problems().front();
  EXPECT_GT(ledger.replays(), 0u) << "redelivered records were never answered REPLAYED";

  auto verify = ::chasqui::testing::RunCommand(std::string("timeout 60 ") + CHASQUI_AUDIT_BIN +
                                               " verify --env test --data " + dir.File("audit"));
  EXPECT_EQ(verify.exit_code, 0) << verify.output;

  // Each acknowledged record exactly once, under the seq it was acknowledged with; no record
  // twice.
  auto store = KvStore::Open({.path = dir.File("audit")});
  ASSERT_TRUE(store.ok()) << store.status();
  std::map<std::string, std::vector<uint64_t>> by_id;
  ASSERT_TRUE((*store)
                  ->Scan(kRecordPrefix, kRecordEnd,
                         [&](std::string_view key, std::string_view value) {
                           v1::StoredRecord rec;
                           v1::ChainEntry entry;
                           EXPECT_TRUE(rec.ParseFromArray(value.data(), value.size()));
                           EXPECT_TRUE(entry.ParseFromString(rec.entry()));
                           by_id[entry.record().request_id()].push_back(rec.seq());
                           return true;
                         })
                  .ok());
  for (const auto& [id, seqs] : by_id) EXPECT_EQ(seqs.size(), 1u) << "stored twice: " << id;
  const auto acked = ledger.acked();
  EXPECT_GT(acked.size(), 900u);
  for (const auto& [id, seq] : acked) {
    auto it = by_id.find(MakeRecord(id).request_id());
    ASSERT_NE(it, by_id.end()) << "acknowledged record " << id << " (seq " << seq << ") is lost";
    EXPECT_EQ(it->second.front(), seq);
  }
  // The per-day aggregates went into the same synced batches: after the kills and the
  // redeliveries they count every stored record once.
  auto zone = LoadReportZone(kDefaultReportZone);
  ASSERT_TRUE(zone.ok());
  v1::ReportRequest days;
  days.set_from_day(DayOf(MakeRecord(1).received_at_ms(), *zone));
  days.set_to_day(DayOf(MakeRecord(next_id).received_at_ms(), *zone));
  auto report = RunReport(**store, days, kDefaultReportZone);
  ASSERT_TRUE(report.ok()) << report.status();
  uint64_t counted = 0;
  for (const v1::ReportRow& row : report->rows()) counted += row.total();
  EXPECT_EQ(counted, by_id.size());
}

}  // namespace
}  // namespace chasqui::audit
