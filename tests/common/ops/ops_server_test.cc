#include "common/ops/ops_server.h"

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/counter.h"
#include "prometheus/registry.h"

namespace chasqui {
namespace {

using ::testing::HasSubstr;

constexpr char kHost[] = "127.0.0.1";

// Every request is bounded: a hung server fails the test instead of stalling it.
httplib::Result Get(int port, const std::string& path) {
  httplib::Client client(kHost, port);
  client.set_connection_timeout(2);
  client.set_read_timeout(2);
  client.set_write_timeout(2);
  return client.Get(path.c_str());
}

std::unique_ptr<OpsServer> StartOrDie(std::shared_ptr<prometheus::Registry> registry,
                                      OpsServer::ReadyCheck ready = nullptr) {
  auto server = OpsServer::Start(OpsOptions{.host = kHost, .port = 0}, std::move(registry),
                                 std::move(ready));
  EXPECT_TRUE(server.ok()) << server.status();
  if (!server.ok()) return nullptr;
  return *std::move(server);
}

// Destroys the server on another thread so that a destructor that never returns fails the
// test after a bound instead of hanging it (the stuck thread is left behind).
[[nodiscard]] bool DestroyWithin(std::unique_ptr<OpsServer> server, std::chrono::seconds bound) {
  std::promise<void> done;
  std::future<void> destroyed = done.get_future();
  std::thread([server = std::move(server), done = std::move(done)]() mutable {
    server.reset();
    done.set_value();
  }).detach();
  return destroyed.wait_for(bound) == std::future_status::ready;
}

TEST(OpsServerTest, PortZeroPicksARealPort) {
  auto server = StartOrDie(std::make_shared<prometheus::Registry>());
  ASSERT_NE(server, nullptr);
  EXPECT_GT(server->port(), 0);
  EXPECT_LT(server->port(), 65536);
  auto res = Get(server->port(), "/healthz");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
}

TEST(OpsServerTest, MetricsShowsRegisteredCounter) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto& family = prometheus::BuildCounter()
                     .Name("chasqui_test_requests_total")
                     .Help("Requests seen by the test.")
                     .Register(*registry);
  auto& counter = family.Add({{"service", "router"}});
  counter.Increment(3);
  auto server = StartOrDie(registry);
  ASSERT_NE(server, nullptr);

  auto res = Get(server->port(), "/metrics");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_THAT(res->body, HasSubstr("# TYPE chasqui_test_requests_total counter"));
  EXPECT_THAT(res->body, HasSubstr("chasqui_test_requests_total{service=\"router\"} 3\n"));

  // Values are read at scrape time, not at Start.
  counter.Increment(2);
  res = Get(server->port(), "/metrics");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_THAT(res->body, HasSubstr("chasqui_test_requests_total{service=\"router\"} 5\n"));
}

TEST(OpsServerTest, HealthzIsOk) {
  auto server = StartOrDie(std::make_shared<prometheus::Registry>());
  ASSERT_NE(server, nullptr);
  auto res = Get(server->port(), "/healthz");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "ok");
}

TEST(OpsServerTest, ReadyzFollowsTheReadyCheck) {
  auto ready = std::make_shared<std::atomic<bool>>(false);
  auto server = StartOrDie(std::make_shared<prometheus::Registry>(), [ready]() -> absl::Status {
    if (ready->load()) return absl::OkStatus();
    return absl::UnavailableError("nats not connected");
  });
  ASSERT_NE(server, nullptr);

  auto res = Get(server->port(), "/readyz");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 503);
  EXPECT_EQ(res->body, "nats not connected");

  ready->store(true);
  res = Get(server->port(), "/readyz");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "ready");

  ready->store(false);
  res = Get(server->port(), "/readyz");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 503);
  EXPECT_EQ(res->body, "nats not connected");
}

TEST(OpsServerTest, ReadyzWithoutCheckIsReady) {
  auto server = StartOrDie(std::make_shared<prometheus::Registry>());
  ASSERT_NE(server, nullptr);
  auto res = Get(server->port(), "/readyz");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
}

TEST(OpsServerTest, UnknownPathIs404) {
  auto server = StartOrDie(std::make_shared<prometheus::Registry>());
  ASSERT_NE(server, nullptr);
  auto res = Get(server->port(), "/nope");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 404);
}

TEST(OpsServerTest, TakenPortIsUnavailable) {
  auto first = StartOrDie(std::make_shared<prometheus::Registry>());
  ASSERT_NE(first, nullptr);
  auto second = OpsServer::Start(OpsOptions{.host = kHost, .port = first->port()},
                                 std::make_shared<prometheus::Registry>(), nullptr);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(second.status().message()),
              HasSubstr(std::string(kHost) + ":" + std::to_string(first->port())));
  // The first server keeps serving.
  auto res = Get(first->port(), "/healthz");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
}

TEST(OpsServerTest, DestructionStopsServing) {
  auto server = StartOrDie(std::make_shared<prometheus::Registry>());
  ASSERT_NE(server, nullptr);
  const int port = server->port();
  auto res = Get(port, "/healthz");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  ASSERT_TRUE(DestroyWithin(std::move(server), std::chrono::seconds(10)));
  res = Get(port, "/healthz");
  EXPECT_FALSE(res);
  EXPECT_EQ(res.error(), httplib::Error::Connection);
}

TEST(OpsServerTest, DestroyRightAfterStartDoesNotHang) {
  for (int i = 0; i < 20; ++i) {
    auto server = StartOrDie(std::make_shared<prometheus::Registry>());
    ASSERT_NE(server, nullptr);
    ASSERT_TRUE(DestroyWithin(std::move(server), std::chrono::seconds(10))) << "iteration " << i;
  }
}

TEST(OpsServerTest, DestructionIsNotHeldByAnIdleKeepAliveClient) {
  auto server = StartOrDie(std::make_shared<prometheus::Registry>());
  ASSERT_NE(server, nullptr);
  httplib::Client client(kHost, server->port());
  client.set_connection_timeout(2);
  client.set_read_timeout(2);
  client.set_keep_alive(true);
  auto res = client.Get("/healthz");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  // The client keeps its connection open while the server goes away. The worker serving it
  // waits out the keep-alive timeout (1 s here; httplib's default of 5 s would fail this).
  ASSERT_TRUE(DestroyWithin(std::move(server), std::chrono::seconds(4)));
}

}  // namespace
}  // namespace chasqui
