#include "services/top/top.h"

#include <atomic>
#include <thread>

#include "common/ops/ops_server.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "prometheus/registry.h"
#include "tests/support/run_command.h"
#include "prometheus/counter.h"

namespace chasqui {
namespace {

using ::testing::HasSubstr;

TEST(ParseMetricsText, ReadsNamesLabelsAndValues) {
  auto samples = ParseMetricsText(
      "# HELP x help\n# TYPE x counter\n"
      "x{a=\"1\",b=\"say \\\"hi\\\"\\\\\"} 42\n"
      "y 1.5e3\r\n"
      "z_bucket{le=\"+Inf\"} +Inf\n");
  ASSERT_TRUE(samples.ok()) << samples.status();
  ASSERT_EQ(samples->size(), 3u);
  EXPECT_EQ((*samples)[0].name, "x");
  EXPECT_EQ((*samples)[0].labels.at("a"), "1");
  EXPECT_EQ((*samples)[0].labels.at("b"), "say \"hi\"\\");
  EXPECT_EQ((*samples)[0].value, 42);
  EXPECT_EQ((*samples)[1].value, 1500);
  EXPECT_TRUE(std::isinf((*samples)[2].value));
}

TEST(ParseMetricsText, NamesTheLineOfGarbage) {
  EXPECT_THAT(std::string(ParseMetricsText("ok 1\nbad{a=\"1\" 2\n").status().message()),
              HasSubstr("line 2"));
  EXPECT_THAT(std::string(ParseMetricsText("ok one\n").status().message()),
              HasSubstr("bad value \"one\""));
}

std::vector<MetricSample> Requests(double sin_ok, double sin_refused, double aduana_ok) {
  auto s = [](std::string consumer, std::string code, double v) {
    return MetricSample{"chasqui_router_requests_total",
                        {{"env", "test"},
                         {"consumer", consumer},
                         {"provider", "segip"},
                         {"service", "persona_consulta"},
                         {"code", code}},
                        v};
  };
  return {s("sin", "OK", sin_ok), s("sin", "FORBIDDEN", sin_refused), s("aduana", "OK", aduana_ok),
          MetricSample{"chasqui_router_in_flight", {{"env", "test"}}, 3}};
}

TEST(ComputeTop, RatesPerConsumerAndServiceSummedOverRoutersBusiestFirst) {
  // Two routers; the second restarted between the scrapes (its counter went down).
  const TopView view = ComputeTop({Requests(100, 0, 10), Requests(50, 0, 500)},
                                  {Requests(300, 20, 30), Requests(40, 0, 20)}, 2.0);
  ASSERT_EQ(view.rows.size(), 2u);
  EXPECT_EQ(view.rows[0].consumer, "sin");
  // Router 1: 200 OK + 20 refused; router 2 restarted: 40 OK counted from zero.
  EXPECT_DOUBLE_EQ(view.rows[0].per_second, (200 + 20 + 40) / 2.0);
  EXPECT_DOUBLE_EQ(view.rows[0].ok_per_second, 240 / 2.0);
  EXPECT_DOUBLE_EQ(view.rows[0].refused_per_second.at("FORBIDDEN"), 10);
  EXPECT_EQ(view.rows[1].consumer, "aduana");
  EXPECT_DOUBLE_EQ(view.rows[1].per_second, (20 + 20) / 2.0);
  EXPECT_DOUBLE_EQ(view.in_flight, 6);
  EXPECT_EQ(view.added_latency_p50_ms, -1) << "no latency histogram given";
}

TEST(ComputeTop, LatencyQuantilesFromTheHistogramIncrease) {
  auto buckets = [](double a, double b, double inf) {
    auto s = [](std::string le, double v) {
      return MetricSample{"chasqui_router_added_latency_seconds_bucket", {{"le", le}}, v};
    };
    return std::vector<MetricSample>{s("0.0001", a), s("0.001", b), s("+Inf", inf)};
  };
  // 100 new observations: 50 below 0.1 ms, 50 in (0.1 ms, 1 ms].
  const TopView view = ComputeTop({buckets(10, 10, 10)}, {buckets(60, 110, 110)}, 1.0);
  EXPECT_NEAR(view.added_latency_p50_ms, 0.1, 1e-9);
  EXPECT_NEAR(view.added_latency_p99_ms, 0.1 + 0.9 * 49.0 / 50.0, 1e-9);
}

TEST(ComputeTop, TableShowsRefusalsByCode) {
  const TopView view = ComputeTop({Requests(0, 0, 0)}, {Requests(10, 4, 0)}, 1.0);
  const std::string table = RenderTopTable(view, {"http://r1"});
  EXPECT_THAT(table, HasSubstr("persona_consulta"));
  EXPECT_THAT(table, HasSubstr("FORBIDDEN 4.0"));
  EXPECT_THAT(table, HasSubstr("1 router(s)"));
}

// Against a real /metrics endpoint serving the router's own series.
TEST(RunTop, ReadsALiveRouterEndpointAndReportsAnUnreachableOne) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto& requests = prometheus::BuildCounter().Name("chasqui_router_requests_total").Register(*registry);
  auto series = [&](const char* code) -> prometheus::Counter& {
    return requests.Add({{"env", "test"},
                         {"consumer", "sin"},
                         {"provider", "segip"},
                         {"service", "persona_consulta"},
                         {"code", code}});
  };
  prometheus::Counter& ok = series("OK");
  prometheus::Counter& over_quota = series("QUOTA_EXCEEDED");
  auto ops = OpsServer::Start({}, registry, [] { return absl::OkStatus(); });
  ASSERT_TRUE(ops.ok()) << ops.status();
  const std::string url = "http://127.0.0.1:" + std::to_string((*ops)->port());
  std::atomic<bool> stop{false};
  std::thread traffic([&] {
    while (!stop) {
      ok.Increment();
      over_quota.Increment();
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });
  ::testing::internal::CaptureStdout();
  const int rc = RunTop({.routers = {url}, .interval_seconds = 0.5, .once = true, .json = true});
  const std::string out = ::testing::internal::GetCapturedStdout();
  stop = true;
  traffic.join();
  EXPECT_EQ(rc, 0);
  auto view = nlohmann::json::parse(out);
  ASSERT_EQ(view["rows"].size(), 1u) << out;
  EXPECT_EQ(view["rows"][0]["consumer"], "sin");
  EXPECT_GT(view["rows"][0]["ok_per_second"].get<double>(), 0);
  EXPECT_GT(view["rows"][0]["refused_per_second"]["QUOTA_EXCEEDED"].get<double>(), 0);

  ::testing::internal::CaptureStderr();
  ::testing::internal::CaptureStdout();
  const int down = RunTop({.routers = {"http://127.0.0.1:1"}, .interval_seconds = 0.1,
                           .once = true, .json = true});
  const std::string err = ::testing::internal::GetCapturedStderr();
  (void)::testing::internal::GetCapturedStdout();
  EXPECT_EQ(down, 1);
  EXPECT_THAT(err, HasSubstr("http://127.0.0.1:1/metrics"));
}

// The operator's command: `chasqui top --once --json` against a live endpoint.
TEST(ChasquiTopCommand, PrintsOneViewAndExits) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto& requests = prometheus::BuildCounter().Name("chasqui_router_requests_total").Register(*registry);
  prometheus::Counter& ok = requests.Add({{"env", "test"},
                                          {"consumer", "aduana"},
                                          {"provider", "sin"},
                                          {"service", "estado_tributario"},
                                          {"code", "OK"}});
  auto ops = OpsServer::Start({}, registry, [] { return absl::OkStatus(); });
  ASSERT_TRUE(ops.ok()) << ops.status();
  std::atomic<bool> stop{false};
  std::thread traffic([&] {
    while (!stop) {
      ok.Increment();
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });
  auto out = ::chasqui::testing::RunCommand(
      std::string("timeout 20 ") + CHASQUI_BIN + " top --once --interval 0.5 --router " +
      "http://127.0.0.1:" + std::to_string((*ops)->port()));
  stop = true;
  traffic.join();
  ASSERT_EQ(out.exit_code, 0) << out.output;
  EXPECT_THAT(out.output, HasSubstr("aduana"));
  EXPECT_THAT(out.output, HasSubstr("estado_tributario"));
  EXPECT_THAT(out.output, HasSubstr("REQ/S"));
}

}  // namespace
}  // namespace chasqui
