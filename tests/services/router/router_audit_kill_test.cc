// kill -9 proof of "no trace, no data": the real chasqui-audit executable serves a router that
// carries a steady stream of calls; the audit process is killed with SIGKILL in the middle of
// it, left dead for a while, and restarted. Afterwards, with the service stopped, the store is
// read directly: every reply a consumer received has its record in the chain exactly once, no
// record is there twice, every call sent while the audit service was dead was answered
// AUDIT_UNAVAILABLE (never data without a trace), and the chain verifies.

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "common/core/status.h"
#include "common/crypto/sodium.h"
#include "common/envelope/errors.h"
#include "common/envelope/identity.h"
#include "common/store/kv_store.h"
#include "gtest/gtest.h"
#include "services/audit/audit_schema.h"
#include "tests/services/router/backbone.h"
#include "tests/support/child_process.h"
#include "tests/support/run_command.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait_for.h"

namespace chasqui::testing {
namespace {

using SteadyClock = std::chrono::steady_clock;

struct Call {
  SteadyClock::time_point sent;
  std::string request_id;  // hex
  v1::Code code = v1::OK;
  bool data = false;  // the provider's reply reached the consumer
};

// Keeps `inflight` calls going until stopped; each completion issues the next one.
class CallStream {
 public:
  CallStream(Consumer* consumer, int inflight) : consumer_(consumer), inflight_(inflight) {}

  void Start() {
    for (int i = 0; i < inflight_; ++i) Issue();
  }
  void Stop() { stopping_ = true; }
  bool WaitIdle() {
    return WaitFor([&] { return outstanding_.load() == 0; }, std::chrono::seconds(20));
  }
  // Calls sent at or after `since` that ended with `code`.
  int CountSince(SteadyClock::time_point since, v1::Code code) const {
    std::lock_guard<std::mutex> lock(mu_);
    int n = 0;
    for (const Call& c : calls_) n += (c.sent >= since && c.code == code) ? 1 : 0;
    return n;
  }
  std::vector<Call> calls() const {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }

 private:
  void Issue() {
    if (stopping_) return;
    ++outstanding_;
    const auto sent = SteadyClock::now();
    const std::string body = "ci-" + std::to_string(next_++);
    consumer_->CallAsync(
        "segip", "persona_consulta", body, {.end_user = "ana.perez", .timeout = absl::Seconds(10)},
        [this, sent, body](CallResult r) {
          Call c;
          c.sent = sent;
          c.request_id = r.request_id;
          c.code = r.status.ok() ? v1::OK : ChasquiCode(r.status);
          c.data = r.status.ok() && r.body == "segip:sin:" + body;
          {
            std::lock_guard<std::mutex> lock(mu_);
            calls_.push_back(std::move(c));
          }
          Issue();
          --outstanding_;
        });
  }

  Consumer* const consumer_;
  const int inflight_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> outstanding_{0};
  std::atomic<uint64_t> next_{0};
  mutable std::mutex mu_;
  std::vector<Call> calls_;
};

TEST(RouterAuditKillTest, KillDashNineOfAuditNeverLetsDataOutWithoutItsRecord) {
  BackboneOptions o;
  o.audit = BackboneOptions::Audit::kExternal;
  o.audit_client.timeout = absl::Seconds(1);
  o.audit_retry_interval = absl::Milliseconds(100);
  TempDir dir;
  ASSERT_TRUE(
      WriteIdentity(dir.File("audit.key"), GenerateIdentity("audit", "test", Role::kRouter)).ok());
  // The backbone owns the nats-server; the audit process comes up on its URL before any call.
  auto bb = std::make_unique<Backbone>(o);
  const std::vector<std::string> args = {
      "serve", "--env", "test", "--data", dir.File("audit"), "--checkpoint-key",
      dir.File("audit.key"), "--nats", bb->nats->url(), "--ops-port", "0",
      "--checkpoint-every", "100"};
  auto audit = std::make_unique<TestProcess>(CHASQUI_AUDIT_BIN, args, dir.File("audit.log"));
  ASSERT_TRUE(audit->WaitForLog("audit serving", 1)) << audit->Log();

  auto consumer = bb->MakeConsumer(bb->sin);
  CallStream stream(consumer.get(), 16);
  const auto t0 = SteadyClock::now();
  stream.Start();
  ASSERT_TRUE(WaitFor([&] { return stream.CountSince(t0, v1::OK) >= 300; },
                      std::chrono::seconds(30)))
      << "the stream never got going\n"
      << audit->Log();

  audit->Kill9();  // in the middle of the stream: appends in flight, replies waiting on them
  const auto killed = SteadyClock::now();
  ASSERT_TRUE(WaitFor([&] { return stream.CountSince(killed, v1::AUDIT_UNAVAILABLE) >= 50; },
                      std::chrono::seconds(20)))
      << "calls during the outage were not refused AUDIT_UNAVAILABLE";
  const auto restarting = SteadyClock::now();
  audit = std::make_unique<TestProcess>(CHASQUI_AUDIT_BIN, args, dir.File("audit.log"));
  ASSERT_TRUE(audit->WaitForLog("audit serving", 2)) << audit->Log();
  ASSERT_TRUE(WaitFor([&] { return stream.CountSince(restarting, v1::OK) >= 300; },
                      std::chrono::seconds(30)))
      << "not served again after the restart\n"
      << audit->Log();
  stream.Stop();
  ASSERT_TRUE(stream.WaitIdle());
  EXPECT_EQ(audit->Terminate(), 0) << audit->Log();

  const std::vector<Call> calls = stream.calls();
  int with_data = 0, during_outage = 0, cut_by_the_kill = 0;
  std::map<std::string, int> codes;
  for (const Call& c : calls) {
    ++codes[std::string(CodeName(c.code))];
    if (c.code == v1::OK) {
      EXPECT_TRUE(c.data) << "OK without the provider's reply";
      ++with_data;
    }
    if (c.sent < killed && c.code == v1::AUDIT_UNAVAILABLE) ++cut_by_the_kill;
    if (c.sent >= killed && c.sent < restarting) {
      ++during_outage;
      EXPECT_EQ(CodeName(c.code), CodeName(v1::AUDIT_UNAVAILABLE))
          << "a call sent while audit was dead";
    }
  }
  EXPECT_GT(during_outage, 0);
  EXPECT_GT(cut_by_the_kill, 0) << "the kill landed while no reply waited for its record";
  std::string code_list;
  for (const auto& [code, n] : codes) code_list += " " + code + "=" + std::to_string(n);
  EXPECT_EQ(codes.size(), 2u) << "only OK and AUDIT_UNAVAILABLE expected:" << code_list;

  auto verify = RunCommand(std::string("timeout 60 ") + CHASQUI_AUDIT_BIN +
                           " verify --env test --data " + dir.File("audit"));
  EXPECT_EQ(verify.exit_code, 0) << verify.output;

  auto store = KvStore::Open({.path = dir.File("audit"), .create_if_missing = false});
  ASSERT_TRUE(store.ok()) << store.status();
  std::map<std::string, std::vector<v1::AuditRecord>> by_id;  // hex request id
  ASSERT_TRUE((*store)
                  ->Scan(audit::kRecordPrefix, audit::kRecordEnd,
                         [&](std::string_view, std::string_view value) {
                           v1::StoredRecord rec;
                           v1::ChainEntry entry;
                           EXPECT_TRUE(rec.ParseFromArray(value.data(),
                                                          static_cast<int>(value.size())));
                           EXPECT_TRUE(entry.ParseFromString(rec.entry()));
                           if (entry.has_record()) {
                             by_id[ToHex(entry.record().request_id())].push_back(entry.record());
                           }
                           return true;
                         })
                  .ok());
  for (const auto& [id, records] : by_id) EXPECT_EQ(records.size(), 1u) << "twice: " << id;
  int missing = 0;
  for (const Call& c : calls) {
    if (c.code != v1::OK) continue;
    auto it = by_id.find(c.request_id);
    if (it == by_id.end()) {
      ++missing;
      continue;
    }
    EXPECT_EQ(CodeName(it->second.front().outcome()), CodeName(v1::OK)) << c.request_id;
  }
  EXPECT_EQ(missing, 0) << "replies the consumer received without a record in the chain";
  EXPECT_GE(with_data, 600);
  std::cout << "calls " << calls.size() << ":" << code_list << "; sent during the outage "
            << during_outage << "; in flight at the kill and withheld " << cut_by_the_kill
            << "; records " << by_id.size() << "\n";
  consumer.reset();
}

}  // namespace
}  // namespace chasqui::testing
