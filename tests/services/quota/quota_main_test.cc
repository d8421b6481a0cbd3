// The chasqui-quota executable: policies from a JSON file, counters that survive kill -9 of
// the real process, a router that keeps enforcing from its lease while the service is down
// (and reports it), /metrics and /readyz, and a clear refusal of an unknown time zone.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "common/bus/bus.h"
#include "common/bus/request_mux.h"
#include "common/core/files.h"
#include "common/core/status.h"
#include "fmt/format.h"
#include "gtest/gtest.h"
#include "tests/services/quota/quota_test_support.h"
#include "tests/support/child_process.h"
#include "tests/support/nats_server.h"
#include "tests/support/run_command.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait_for.h"

namespace chasqui::testing {
namespace {

const std::string kBin = CHASQUI_QUOTA_BIN;
const std::string kKey = GrantKeyString("test", "sin", "segip", "persona");

// A chasqui-quota child (tests/support/child_process.h) that reports its ops port.
class QuotaProcess : public TestProcess {
 public:
  QuotaProcess(const std::vector<std::string>& args, std::string log_path)
      : TestProcess(kBin, args, std::move(log_path)) {}
  // The ops port from the `occurrence`th "ready: ops port N", or -1 if it never got ready.
  int WaitReady(size_t occurrence) const {
    if (!WaitForLog("ready: ops port", occurrence)) return -1;
    const std::string log = Log();
    std::regex re("ready: ops port ([0-9]+)");
    size_t seen = 0;
    for (auto it = std::sregex_iterator(log.begin(), log.end(), re); it != std::sregex_iterator();
         ++it) {
      if (++seen == occurrence) return std::stoi((*it)[1].str());
    }
    return -1;
  }
};

uint64_t DayConsumed(RequestMux& mux) {
  absl::Notification done;
  v1::UsageReply reply;
  absl::Status s = mux.Request(kQuotaUsageSubject, v1::UsageRequest().SerializeAsString(),
                               absl::Seconds(3), [&](MuxOutcome o, const BusMessage* m) {
                                 if (m != nullptr) reply.ParseFromArray(m->data.data(),
                                                                        static_cast<int>(m->data.size()));
                                 done.Notify();
                               });
  EXPECT_TRUE(s.ok()) << s;
  done.WaitForNotificationWithTimeout(absl::Seconds(5));
  EXPECT_EQ(reply.status().code(), 0) << reply.status().message();
  for (const auto& g : reply.grants()) {
    if (GrantKeyString(g.policy().grant()) == kKey) return g.day_consumed();
  }
  return 0;
}

TEST(QuotaMain, UnknownZoneStopsTheServiceWithAClearMessage) {
  TempDir dir;
  auto out = RunCommand(fmt::format("timeout 20 {} serve --data {} --zone America/Atlantis "
                                    "--nats nats://127.0.0.1:1",
                                    kBin, dir.File("data")));
  EXPECT_EQ(out.exit_code, 2) << out.output;
  EXPECT_NE(out.output.find("unknown time zone \"America/Atlantis\""), std::string::npos)
      << out.output;
}

TEST(QuotaMain, CountersSurviveKillDashNineAndRoutersEnforceThroughTheOutage) {
  constexpr uint64_t kCap = 1500;
  TempDir dir;
  std::ofstream(dir.File("policy.json"))
      << fmt::format(R"({{"grants": [{{"env": "test", "consumer": "sin", "provider": "segip",
                          "service": "persona", "per_day": {}}}]}})",
                     kCap);
  auto nats = NatsServer::Start();
  ASSERT_TRUE(nats.ok()) << nats.status();
  const std::vector<std::string> args = {"serve",   "--data",  dir.File("data"),
                                         "--policy", dir.File("policy.json"),
                                         "--nats",  (*nats)->url(), "--tick-ms", "100"};
  QuotaProcess quota(args, dir.File("quota.log"));
  const int port = quota.WaitReady(1);
  ASSERT_GT(port, 0) << quota.Log();

  BusOptions bo;
  bo.url = (*nats)->url();
  bo.name = "router-r1";
  bo.send_asap = true;
  auto bus = Bus::Connect(bo);
  ASSERT_TRUE(bus.ok()) << bus.status();
  auto source = NatsLeaseSource::Create(bus->get(), "_INBOX._router.test.r1.quota",
                                        absl::Milliseconds(300));
  ASSERT_TRUE(source.ok()) << source.status();
  QuotaEnforcerOptions eo;
  eo.router_id = "r1";
  eo.min_lease = 40;
  eo.max_lease = 100;  // so the router holds only part of the cap at the kill
  eo.failure_backoff_ms = 100;
  auto enforcer = QuotaEnforcer::Create(eo, source->get(), SystemClock());
  ASSERT_TRUE(enforcer.ok()) << enforcer.status();
  QuotaEnforcer& e = **enforcer;
  ASSERT_TRUE(e.Prepare(kKey).ok());
  auto mux = RequestMux::Create(bus->get(), "_INBOX.test.quotamain");
  ASSERT_TRUE(mux.ok());

  uint64_t admitted = 0;
  auto admit_some = [&](uint64_t n) {
    return WaitFor([&] {
      QuotaAdmission a = e.Admit(kKey, SystemClock().NowUnixMillis());
      admitted += a.admitted;
      return admitted >= n || a.limit == v1::QUOTA_LIMIT_DAY;
    });
  };
  ASSERT_TRUE(admit_some(100));
  // Let the renewal the last admissions triggered finish: no lease is in flight at the kill.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const uint64_t before_kill = DayConsumed(**mux);
  EXPECT_GE(before_kill, admitted);  // consumed when granted: at least what was admitted
  EXPECT_LE(before_kill, admitted + e.Outstanding());
  // /metrics and /readyz from the real process.
  auto metrics = RunCommand(fmt::format("curl -s http://127.0.0.1:{}/metrics", port));
  EXPECT_NE(metrics.output.find("chasqui_quota_consumed{"), std::string::npos) << metrics.output;
  EXPECT_EQ(RunCommand(fmt::format("curl -sf http://127.0.0.1:{}/readyz", port)).exit_code, 0);

  quota.Kill9();
  // The router keeps admitting from what it holds, and never more; it reports the outage.
  const uint64_t held = e.Outstanding();
  uint64_t during = 0;
  ASSERT_TRUE(WaitFor([&] {
    QuotaAdmission a = e.Admit(kKey, SystemClock().NowUnixMillis());
    during += a.admitted;
    return !a.admitted;
  })) << "admitted " << during << " of " << held << " held; " << e.Outstanding() << " left";
  admitted += during;
  EXPECT_EQ(during, held);  // all it held, and not one more
  EXPECT_EQ(e.Admit(kKey, SystemClock().NowUnixMillis()).limit, v1::QUOTA_LIMIT_NO_LEASE);
  EXPECT_TRUE(WaitFor([&] { return !e.ServiceReachable(); }));

  QuotaProcess again(args, dir.File("quota.log"));
  ASSERT_GT(again.WaitReady(2), 0) << again.Log();
  // Nothing granted before the kill was lost or double-counted.
  EXPECT_EQ(DayConsumed(**mux), before_kill);
  EXPECT_LE(admitted, before_kill);
  ASSERT_TRUE(WaitFor([&] { return e.ServiceReachable(); }));
  // The router resumes and stops exactly at the cap (the policy file did not reset anything).
  ASSERT_TRUE(WaitFor([&] {
    QuotaAdmission a = e.Admit(kKey, SystemClock().NowUnixMillis());
    admitted += a.admitted;
    return a.limit == v1::QUOTA_LIMIT_DAY;
  }, std::chrono::seconds(20)));
  EXPECT_EQ(admitted, kCap);
  EXPECT_EQ(DayConsumed(**mux), kCap);
  EXPECT_NE(again.Log().find("quota ledger open: zone=America/La_Paz policies=1"),
            std::string::npos);
}

}  // namespace
}  // namespace chasqui::testing
