// kill -9 proof of issue 5's counters: real processes only (nats-server, chasqui-quota with a
// policy file, chasqui-router with --quota), a consumer and the provider segip in this process.
// Sin's grant has a day cap of kCap. Four callers call until refused; chasqui-quota is killed
// with SIGKILL mid-traffic and restarted on the same data dir; later the router is killed with
// SIGKILL mid-traffic and a second router takes over. Afterwards: the callers got at most kCap
// answers, and at least kCap minus what the killed router held unspent; the quota service
// counts exactly kCap (answers plus the dead router's stranded lease); the last refusals are
// QUOTA_EXCEEDED on the day limit with retry_after pointing at La Paz midnight.

#include <atomic>
#include <chrono>
#include <fstream>
#include <mutex>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/civil_time.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/bus/request_mux.h"
#include "common/core/status.h"
#include "common/envelope/errors.h"
#include "common/envelope/identity.h"
#include "fmt/format.h"
#include "gtest/gtest.h"
#include "services/quota/quota_keys.h"
#include "tests/services/router/backbone.h"
#include "tests/support/child_process.h"
#include "tests/support/run_command.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait_for.h"

namespace chasqui::testing {
namespace {

constexpr uint64_t kCap = 300;
constexpr int kCallers = 4;
constexpr char kService[] = "persona_consulta";
const std::string kGrantKey = GrantKeyString("test", "sin", "segip", kService);

// The ops port a chasqui-router or chasqui-quota child logged, or -1.
int OpsPort(const TestProcess& p, const std::regex& re) {
  auto port = p.WaitForLogMatch(re);
  return port ? std::stoi(*port) : -1;
}

// One unlabelled series from a process's /metrics, or -1.
double ScrapeMetric(int port, const std::string& name) {
  auto out = RunCommand(fmt::format("curl -s http://127.0.0.1:{}/metrics", port));
  std::smatch m;
  if (!std::regex_search(out.output, m, std::regex("\n" + name + " ([0-9.e+-]+)"))) return -1;
  return std::stod(m[1].str());
}

// The quota service's own count for sin's grant (chq.ctl.quota.usage), or -1 if it did not
// answer.
int64_t DayConsumed(RequestMux& mux) {
  absl::Notification done;
  v1::UsageReply reply;
  bool answered = false;
  absl::Status s = mux.Request(kQuotaUsageSubject, v1::UsageRequest().SerializeAsString(),
                               absl::Seconds(3), [&](MuxOutcome, const BusMessage* m) {
                                 if (m != nullptr) {
                                   answered = reply.ParseFromArray(
                                       m->data.data(), static_cast<int>(m->data.size()));
                                 }
                                 done.Notify();
                               });
  if (!s.ok() || !done.WaitForNotificationWithTimeout(absl::Seconds(5)) || !answered ||
      reply.status().code() != 0) {
    return -1;
  }
  for (const auto& g : reply.grants()) {
    if (GrantKeyString(g.policy().grant()) == kGrantKey) {
      return static_cast<int64_t>(g.day_consumed());
    }
  }
  return 0;
}

// Milliseconds from `now` to the next midnight in La Paz.
int64_t MillisToLaPazMidnight(absl::Time now) {
  absl::TimeZone tz;
  CHASQUI_CHECK(absl::LoadTimeZone("America/La_Paz", &tz), "no America/La_Paz zone");
  const absl::CivilDay tomorrow = absl::ToCivilDay(now, tz) + 1;
  return absl::ToInt64Milliseconds(absl::FromCivil(tomorrow, tz) - now);
}

// kCallers threads calling segip through whichever router answers, until stopped; a pause
// lets the in-flight calls finish without issuing more.
class Callers {
 public:
  explicit Callers(Consumer* consumer) : consumer_(consumer) {}
  ~Callers() { Stop(); }

  void Start() {
    for (int i = 0; i < kCallers; ++i) threads_.emplace_back([this, i] { Run(i); });
  }
  void Stop() {
    stopping_ = true;
    for (auto& t : threads_) t.join();
    threads_.clear();
  }
  void Pause() {
    paused_ = true;
    WaitFor([&] { return in_flight_.load() == 0; }, std::chrono::seconds(5));
  }
  void Resume() { paused_ = false; }

  int ok() const { return ok_.load(); }
  int day_refusals_in_a_row() const { return day_in_a_row_.load(); }
  int64_t last_retry_after_ms() const { return last_retry_after_ms_.load(); }
  int64_t last_expected_ms() const { return last_expected_ms_.load(); }
  int other_refusals() const { return other_.load(); }
  std::string codes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return codes_;
  }

 private:
  void Run(int i) {
    int n = 0;
    while (!stopping_) {
      if (paused_) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        continue;
      }
      ++in_flight_;
      const std::string body = fmt::format("qk-{}-{}", i, n++);
      CallResult r = consumer_->Call("segip", kService, body,
                                     {.end_user = "ana.perez", .timeout = absl::Seconds(2)});
      const absl::Time answered = absl::Now();
      --in_flight_;
      if (r.status.ok()) {
        EXPECT_EQ(r.body, "segip:sin:" + body);
        ++ok_;
        day_in_a_row_ = 0;
        // About 350 answers a second in all: the cap lasts long enough for both kills to
        // land in the middle of it.
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        continue;
      }
      const v1::Code code = ChasquiCode(r.status);
      const std::string message(r.status.message());
      if (code == v1::QUOTA_EXCEEDED && message.find("(day limit)") != std::string::npos) {
        ++day_in_a_row_;
        last_retry_after_ms_ = r.retry_after_ms;
        last_expected_ms_ = MillisToLaPazMidnight(answered);
      } else {
        ++other_;
        day_in_a_row_ = 0;
        std::lock_guard<std::mutex> lock(mu_);
        if (codes_.find(CodeName(code)) == std::string::npos) {
          codes_ += std::string(" ") + std::string(CodeName(code)) + ": " + message + ";";
        }
      }
      // Refusals come back at once: do not spin the two cores.
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }

  Consumer* const consumer_;
  std::vector<std::thread> threads_;
  std::atomic<bool> stopping_{false}, paused_{false};
  std::atomic<int> in_flight_{0}, ok_{0}, other_{0}, day_in_a_row_{0};
  std::atomic<int64_t> last_retry_after_ms_{0}, last_expected_ms_{0};
  mutable std::mutex mu_;
  std::string codes_;
};

TEST(RouterQuotaKillTest, KillDashNineOfQuotaAndRouterNeverAdmitsMoreThanTheDayCap) {
  TempDir dir;
  BackboneOptions bo;
  auto bb = std::make_unique<Backbone>(bo);
  // Only the router processes serve: the backbone's in-process router (no quotas) goes.
  bb->router.reset();
  ASSERT_TRUE(WriteIdentity(dir.File("router.key"), bb->router_key).ok());
  std::ofstream(dir.File("trust.json"))
      << TrustFileJson({bb->sin.pub, bb->aduana.pub, bb->segip.pub, bb->router_key.pub});
  std::ofstream(dir.File("policy.json"))
      << fmt::format(R"({{"grants": [{{"env": "test", "consumer": "sin", "provider": "segip",
                          "service": "{}", "per_day": {}}}]}})",
                     kService, kCap);

  const std::vector<std::string> quota_args = {
      "serve", "--data", dir.File("quota"), "--policy", dir.File("policy.json"),
      "--nats", bb->nats->url(), "--tick-ms", "100"};
  auto quota = std::make_unique<TestProcess>(CHASQUI_QUOTA_BIN, quota_args, dir.File("quota.log"));
  ASSERT_TRUE(quota->WaitForLog("ready: ops port", 1)) << quota->Log();

  auto router_args = [&](const std::string& id) {
    return std::vector<std::string>{
        "--env", "test", "--nats", bb->nats->url(), "--key", dir.File("router.key"), "--trust",
        dir.File("trust.json"), "--quota", "--audit=false", "--startup-hold-ms", "0",
        "--ops-host", "127.0.0.1", "--ops-port", "0", "--id", id};
  };
  const std::regex ops_re("ops listening on http://[^ ]*:([0-9]+) ");
  auto r1 = std::make_unique<TestProcess>(CHASQUI_ROUTER_BIN, router_args("r1"),
                                          dir.File("r1.log"));
  ASSERT_TRUE(r1->WaitForLog("router r1 ready")) << r1->Log();
  const int r1_port = OpsPort(*r1, ops_re);
  ASSERT_GT(r1_port, 0) << r1->Log();

  auto usage_bus = bb->Connect("usage");
  auto mux = RequestMux::Create(usage_bus.get(), "_INBOX.test.quotakill");
  ASSERT_TRUE(mux.ok()) << mux.status();

  auto consumer = bb->MakeConsumer(bb->sin);
  Callers callers(consumer.get());
  const auto t0 = std::chrono::steady_clock::now();
  callers.Start();

  // 1. chasqui-quota dies mid-traffic and comes back on the same data dir: no reset.
  ASSERT_TRUE(WaitFor([&] { return callers.ok() >= static_cast<int>(kCap / 4); }))
      << "no traffic got through\n" << r1->Log() << quota->Log();
  const int64_t consumed_before_kill = DayConsumed(**mux);
  ASSERT_GT(consumed_before_kill, 0);
  // Leases take most of the cap early (each a slice of what is left), so the count may already
  // stand at the cap; the answers do not: the kill lands in the middle of them.
  const int ok_at_quota_kill = callers.ok();
  quota->Kill9();
  ASSERT_LT(ok_at_quota_kill, static_cast<int>(kCap)) << "the kill would not be mid-run";
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // routers keep going on leases
  quota = std::make_unique<TestProcess>(CHASQUI_QUOTA_BIN, quota_args, dir.File("quota.log"));
  ASSERT_TRUE(quota->WaitForLog("ready: ops port", 2)) << quota->Log();
  const int64_t consumed_after_restart = DayConsumed(**mux);
  EXPECT_GE(consumed_after_restart, consumed_before_kill) << "the counter went back";
  EXPECT_GE(consumed_after_restart, callers.ok()) << "the counter forgot answers given";

  // 2. The router dies mid-traffic. Its unspent allowance is read once renewals have settled;
  // the kill lands a few answers after the traffic resumes, so it holds no more than that.
  ASSERT_TRUE(WaitFor([&] { return callers.ok() >= static_cast<int>(kCap / 2); },
                      std::chrono::seconds(15)))
      << "not served again after the quota restart: " << callers.codes() << "\n"
      << r1->Log();
  callers.Pause();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const double unspent = ScrapeMetric(r1_port, "chasqui_quota_enforcer_allowance_unspent");
  ASSERT_GE(unspent, 0) << "no chasqui_quota_enforcer_allowance_unspent on r1's /metrics";
  const int ok_at_pause = callers.ok();
  const int provider_at_sample = bb->provider_system_calls.load();
  callers.Resume();
  ASSERT_TRUE(WaitFor([&] { return callers.ok() >= ok_at_pause + 3; }));
  r1->Kill9();
  const int ok_before_router_kill = callers.ok();
  ASSERT_LT(ok_before_router_kill, static_cast<int>(kCap)) << "the kill would not be mid-run";
  EXPECT_GT(unspent, 0) << "r1 held nothing to lose at the kill";
  // What r1 forwarded after the sample has reached segip once this settles; nobody serves now.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const int r1_spent_after_sample = bb->provider_system_calls.load() - provider_at_sample;
  const int stranded = static_cast<int>(unspent) - r1_spent_after_sample;

  auto r2 = std::make_unique<TestProcess>(CHASQUI_ROUTER_BIN, router_args("r2"),
                                          dir.File("r2.log"));
  ASSERT_TRUE(r2->WaitForLog("router r2 ready")) << r2->Log();
  const int r2_port = OpsPort(*r2, ops_re);
  ASSERT_TRUE(WaitFor([&] { return callers.day_refusals_in_a_row() >= 20; },
                      std::chrono::seconds(15)))
      << "never refused steadily on the day limit; ok=" << callers.ok() << callers.codes()
      << "\n" << r2->Log();
  callers.Stop();
  const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - t0);

  const int ok = callers.ok();
  const int provider_calls = bb->provider_system_calls.load();
  const int64_t consumed = DayConsumed(**mux);
  const double r2_unspent = ScrapeMetric(r2_port, "chasqui_quota_enforcer_allowance_unspent");

  // Never more than the cap, through both routers and both quota processes.
  EXPECT_LE(ok, static_cast<int>(kCap));
  EXPECT_LE(provider_calls, static_cast<int>(kCap));
  EXPECT_LE(ok, provider_calls);
  // The quota service counted the whole cap: the answers plus what the dead router stranded.
  EXPECT_EQ(consumed, static_cast<int64_t>(kCap));
  EXPECT_EQ(r2_unspent, 0) << "the second router still holds allowance at the day cap";
  const int lost = static_cast<int>(kCap) - provider_calls;
  EXPECT_GE(lost, 0);
  // The dead router lost at most its unspent lease (plus calls it admitted whose answers died
  // with it: those reached the provider and are in provider_calls).
  EXPECT_LE(lost, static_cast<int>(unspent)) << "lost more than r1 held unspent";
  // Exactly: the count is the answers' calls plus r1's allowance unspent at the kill (give or
  // take a call r1 admitted and had not forwarded when it died).
  EXPECT_GE(lost, stranded);
  EXPECT_LE(lost, stranded + kCallers);
  EXPECT_GE(ok, static_cast<int>(kCap) - static_cast<int>(unspent) - kCallers);
  // retry_after points at the next midnight in La Paz.
  const int64_t retry = callers.last_retry_after_ms();
  const int64_t expected = callers.last_expected_ms();
  EXPECT_GT(retry, 0);
  EXPECT_NEAR(static_cast<double>(retry), static_cast<double>(expected), 5000.0)
      << "retry_after " << retry << " ms; La Paz midnight in " << expected << " ms";

  std::cout << "cap " << kCap << ": ok " << ok << " (before the router kill "
            << ok_before_router_kill << "), provider calls " << provider_calls
            << ", quota service counts " << consumed << "; r1 held " << unspent
            << " unspent at the sample, " << stranded << " at the kill, lost " << lost
            << "; ok at the quota kill "
            << ok_at_quota_kill << ", quota count before/after its kill "
            << consumed_before_kill << "/" << consumed_after_restart << "; other refusals "
            << callers.other_refusals() << ":" << callers.codes() << "; retry_after " << retry
            << " ms; " << elapsed.count() << " ms\n";

  EXPECT_EQ(r2->Terminate(), 0) << r2->Log();
  EXPECT_EQ(quota->Terminate(), 0) << quota->Log();
  consumer.reset();
}

}  // namespace
}  // namespace chasqui::testing
