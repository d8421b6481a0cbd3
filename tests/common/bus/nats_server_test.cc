#include "tests/support/nats_server.h"

#include <signal.h>
#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <string>

#include "common/bus/bus.h"
#include "gtest/gtest.h"

namespace chasqui::testing {
namespace {

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

bool Alive(pid_t pid) { return ::kill(pid, 0) == 0; }

TEST(BusNatsServerTest, StartsOnItsOwnPortAndCleansUp) {
  auto a = NatsServer::Start();
  auto b = NatsServer::Start();
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_NE((*a)->port(), (*b)->port());
  EXPECT_EQ((*a)->url(), "nats://127.0.0.1:" + std::to_string((*a)->port()));
  const pid_t pid = (*a)->pid();
  const std::string dir = (*a)->dir();
  EXPECT_TRUE(Alive(pid));
  EXPECT_TRUE(Exists(dir));
  a->reset();
  EXPECT_FALSE(Alive(pid));  // terminated and reaped
  EXPECT_FALSE(Exists(dir));
}

TEST(BusNatsServerTest, RestartComesBackOnTheSamePort) {
  auto server = NatsServer::Start();
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  const pid_t first = (*server)->pid();
  (*server)->Kill9();
  EXPECT_EQ((*server)->pid(), -1);
  EXPECT_FALSE(Alive(first));
  ASSERT_TRUE((*server)->Restart().ok());
  EXPECT_EQ((*server)->port(), port);
  EXPECT_GT((*server)->pid(), 0);
  BusOptions options;
  options.url = (*server)->url();
  auto bus = Bus::Connect(options);
  EXPECT_TRUE(bus.ok()) << bus.status();
}

TEST(BusNatsServerTest, ABadArgumentFailsFastWithTheServersWords) {
  const auto start = std::chrono::steady_clock::now();
  auto server = NatsServer::Start({"--no-such-flag"});
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(std::string(server.status().message()).find("no-such-flag"), std::string::npos)
      << server.status();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

}  // namespace
}  // namespace chasqui::testing
