#include "common/bus/bus.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/wait_for.h"
#include "tests/support/nats_server.h"

namespace chasqui {
namespace {

using ::chasqui::testing::NatsServer;
using ::chasqui::testing::WaitFor;
using ::testing::HasSubstr;
using ::testing::Not;

// A port nothing listens on: bound once by the kernel's choice, then released.
int UnusedPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return -1;
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

class BusTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = NatsServer::Start();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }

  std::unique_ptr<Bus> Connect(const std::string& name, bool send_asap = true) {
    BusOptions options;
    options.url = server_->url();
    options.name = name;
    options.send_asap = send_asap;
    options.reconnect_wait = absl::Milliseconds(50);
    auto bus = Bus::Connect(options);
    EXPECT_TRUE(bus.ok()) << bus.status();
    return bus.ok() ? std::move(*bus) : nullptr;
  }

  std::unique_ptr<NatsServer> server_;
};

struct Received {
  std::mutex mu;
  std::string subject, reply, data;
  bool no_responders = false;
  std::atomic<int> count{0};
};

TEST_F(BusTest, PublishSubscribeRoundTrip) {
  auto bus = Connect("roundtrip");
  ASSERT_NE(bus, nullptr);
  EXPECT_TRUE(bus->Connected());
  EXPECT_GT(bus->MaxPayload(), 0);
  Received got;
  auto sub = bus->Subscribe("chq.test.a", [&](const BusMessage& m) {
    std::lock_guard<std::mutex> lock(got.mu);
    got.subject = std::string(m.subject);
    got.reply = std::string(m.reply);
    got.data = std::string(m.data);
    got.no_responders = m.no_responders;
    ++got.count;
  });
  ASSERT_TRUE(sub.ok()) << sub.status();
  ASSERT_TRUE(bus->Flush(absl::Seconds(2)).ok());

  ASSERT_TRUE(bus->Publish("chq.test.a", std::string("hello\0world", 11), "chq.reply.1").ok());
  ASSERT_TRUE(WaitFor([&] { return got.count.load() == 1; }));
  std::lock_guard<std::mutex> lock(got.mu);
  EXPECT_EQ(got.subject, "chq.test.a");
  EXPECT_EQ(got.reply, "chq.reply.1");
  EXPECT_EQ(got.data, std::string("hello\0world", 11));
  EXPECT_FALSE(got.no_responders);
}

TEST_F(BusTest, PublishFromAnotherConnectionWithoutReply) {
  auto sub_bus = Connect("sub");
  auto pub_bus = Connect("pub", /*send_asap=*/false);
  ASSERT_NE(sub_bus, nullptr);
  ASSERT_NE(pub_bus, nullptr);
  Received got;
  auto sub = sub_bus->Subscribe("chq.test.>", [&](const BusMessage& m) {
    std::lock_guard<std::mutex> lock(got.mu);
    got.reply = std::string(m.reply);
    got.data = std::string(m.data);
    ++got.count;
  });
  ASSERT_TRUE(sub.ok()) << sub.status();
  ASSERT_TRUE(sub_bus->Flush(absl::Seconds(2)).ok());
  ASSERT_TRUE(pub_bus->Publish("chq.test.b.c", "").ok());
  ASSERT_TRUE(pub_bus->Flush(absl::Seconds(2)).ok());
  ASSERT_TRUE(WaitFor([&] { return got.count.load() == 1; }));
  std::lock_guard<std::mutex> lock(got.mu);
  EXPECT_EQ(got.reply, "");
  EXPECT_EQ(got.data, "");
}

TEST_F(BusTest, QueueGroupSplitsMessagesBetweenMembers) {
  auto a_bus = Connect("member-a");
  auto b_bus = Connect("member-b");
  auto pub = Connect("publisher");
  ASSERT_NE(a_bus, nullptr);
  ASSERT_NE(b_bus, nullptr);
  ASSERT_NE(pub, nullptr);
  std::atomic<int> a{0}, b{0};
  auto sa = a_bus->QueueSubscribe("chq.test.work", "workers", [&](const BusMessage&) { ++a; });
  auto sb = b_bus->QueueSubscribe("chq.test.work", "workers", [&](const BusMessage&) { ++b; });
  ASSERT_TRUE(sa.ok()) << sa.status();
  ASSERT_TRUE(sb.ok()) << sb.status();
  ASSERT_TRUE(a_bus->Flush(absl::Seconds(2)).ok());
  ASSERT_TRUE(b_bus->Flush(absl::Seconds(2)).ok());

  constexpr int kMessages = 200;
  for (int i = 0; i < kMessages; ++i) ASSERT_TRUE(pub->Publish("chq.test.work", "x").ok());
  ASSERT_TRUE(pub->Flush(absl::Seconds(2)).ok());
  ASSERT_TRUE(WaitFor([&] { return a + b >= kMessages; })) << a << " + " << b;
  // Anything delivered twice would have arrived by the end of these round trips.
  ASSERT_TRUE(a_bus->Flush(absl::Seconds(2)).ok());
  ASSERT_TRUE(b_bus->Flush(absl::Seconds(2)).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(a + b, kMessages);
  EXPECT_GT(a.load(), 0);
  EXPECT_GT(b.load(), 0);
}

TEST_F(BusTest, QueueSubscribeRejectsBadQueueName) {
  auto bus = Connect("badqueue");
  ASSERT_NE(bus, nullptr);
  auto empty = bus->QueueSubscribe("chq.test.q", "", [](const BusMessage&) {});
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  auto spaced = bus->QueueSubscribe("chq.test.q", "a b", [](const BusMessage&) {});
  EXPECT_EQ(spaced.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(BusConnectTest, NothingListeningIsUnavailableQuicklyAndActionable) {
  const int port = UnusedPort();
  ASSERT_GT(port, 0);
  BusOptions options;
  options.url = "nats://127.0.0.1:" + std::to_string(port);
  options.name = "nobody-home";
  const auto start = std::chrono::steady_clock::now();
  auto bus = Bus::Connect(options);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(bus.ok());
  EXPECT_EQ(bus.status().code(), absl::StatusCode::kUnavailable) << bus.status();
  EXPECT_LT(elapsed, std::chrono::seconds(3));
  const std::string message(bus.status().message());
  std::printf("connect error: %s\n", message.c_str());
  EXPECT_THAT(message, HasSubstr(options.url));
  EXPECT_THAT(message, HasSubstr("nobody-home"));
  EXPECT_THAT(message, HasSubstr("nats-server"));
}

TEST(BusConnectTest, ErrorsNeverCarryCredentials) {
  const int port = UnusedPort();
  ASSERT_GT(port, 0);
  BusOptions options;
  options.url = "nats://alice:s3cr3t-pw@127.0.0.1:" + std::to_string(port);
  auto bus = Bus::Connect(options);
  ASSERT_FALSE(bus.ok());
  const std::string message(bus.status().message());
  EXPECT_THAT(message, Not(HasSubstr("s3cr3t-pw")));
  EXPECT_THAT(message, Not(HasSubstr("alice")));
  EXPECT_THAT(message, HasSubstr("127.0.0.1:" + std::to_string(port)));
}

TEST_F(BusTest, BadSubjectsAreInvalidArgumentAndTheConnectionSurvives) {
  auto bus = Connect("badsubject");
  ASSERT_NE(bus, nullptr);
  EXPECT_EQ(bus->Publish("", "x").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bus->Publish("chq.a b", "x").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bus->Publish("chq.a\r\nPUB x 1", "x").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bus->Publish("chq..a", "x").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bus->Publish("chq.*", "x").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bus->Publish("chq.a", "x", "reply with space").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bus->Subscribe("chq.>.a", [](const BusMessage&) {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bus->Subscribe("chq.a.", [](const BusMessage&) {}).status().code(),
            absl::StatusCode::kInvalidArgument);

  std::atomic<int> got{0};
  auto sub = bus->Subscribe("chq.ok", [&](const BusMessage&) { ++got; });
  ASSERT_TRUE(sub.ok()) << sub.status();
  ASSERT_TRUE(bus->Publish("chq.ok", "x").ok());
  ASSERT_TRUE(bus->Flush(absl::Seconds(2)).ok());
  EXPECT_TRUE(WaitFor([&] { return got.load() == 1; }));
  EXPECT_TRUE(bus->Connected());
}

TEST_F(BusTest, DestroyingASubscriptionWaitsForItsHandlerWhileMessagesArrive) {
  auto bus = Connect("sub-destroy");
  auto pub = Connect("flooder", /*send_asap=*/false);
  ASSERT_NE(bus, nullptr);
  ASSERT_NE(pub, nullptr);
  std::atomic<bool> in_handler{false};
  std::atomic<int> handled{0};
  auto sub = bus->Subscribe("chq.test.flood", [&](const BusMessage&) {
    in_handler = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    ++handled;
    in_handler = false;
  });
  ASSERT_TRUE(sub.ok()) << sub.status();
  ASSERT_TRUE(bus->Flush(absl::Seconds(2)).ok());

  std::atomic<bool> stop{false};
  std::thread flooder([&] {
    while (!stop) {
      if (!pub->Publish("chq.test.flood", "x").ok()) break;
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  });
  ASSERT_TRUE(WaitFor([&] { return handled.load() > 5; }));
  sub->reset();
  // The destructor returned: no handler call is running and none starts afterwards.
  EXPECT_FALSE(in_handler.load());
  const int after = handled.load();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(handled.load(), after);
  stop = true;
  flooder.join();
}

TEST_F(BusTest, AHandlerMayDestroyItsOwnSubscription) {
  auto bus = Connect("self-destroy");
  ASSERT_NE(bus, nullptr);
  std::mutex mu;
  std::unique_ptr<Subscription> sub;
  std::atomic<int> calls{0};
  std::atomic<bool> destroyed{false};
  auto created = bus->Subscribe("chq.test.once", [&](const BusMessage&) {
    ++calls;
    std::unique_ptr<Subscription> mine;
    {
      std::lock_guard<std::mutex> lock(mu);
      mine = std::move(sub);
    }
    mine.reset();
    destroyed = true;
  });
  ASSERT_TRUE(created.ok()) << created.status();
  {
    std::lock_guard<std::mutex> lock(mu);
    sub = std::move(*created);
  }
  ASSERT_TRUE(bus->Flush(absl::Seconds(2)).ok());
  ASSERT_TRUE(bus->Publish("chq.test.once", "1").ok());
  ASSERT_TRUE(WaitFor([&] { return destroyed.load(); }));
  ASSERT_TRUE(bus->Publish("chq.test.once", "2").ok());
  ASSERT_TRUE(bus->Flush(absl::Seconds(2)).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(calls.load(), 1);
}

TEST_F(BusTest, SubscriptionDrainDeliversQueuedMessages) {
  auto bus = Connect("sub-drain");
  ASSERT_NE(bus, nullptr);
  std::atomic<int> handled{0};
  auto sub = bus->Subscribe("chq.test.drain", [&](const BusMessage&) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ++handled;
  });
  ASSERT_TRUE(sub.ok()) << sub.status();
  ASSERT_TRUE(bus->Flush(absl::Seconds(2)).ok());
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(bus->Publish("chq.test.drain", "x").ok());
  ASSERT_TRUE(bus->Flush(absl::Seconds(2)).ok());
  EXPECT_TRUE((*sub)->Drain(absl::Seconds(5)).ok());
  EXPECT_EQ(handled.load(), 50);
}

TEST_F(BusTest, DrainClosesTheConnection) {
  auto bus = Connect("drainer");
  ASSERT_NE(bus, nullptr);
  std::atomic<int> got{0};
  auto sub = bus->Subscribe("chq.test.d", [&](const BusMessage&) { ++got; });
  ASSERT_TRUE(sub.ok()) << sub.status();
  ASSERT_TRUE(bus->Drain(absl::Seconds(2)).ok());
  EXPECT_FALSE(bus->Connected());
  EXPECT_EQ(bus->Publish("chq.test.d", "x").code(), absl::StatusCode::kUnavailable);
  sub->reset();  // after the connection closed: must not hang
}

TEST_F(BusTest, ReconnectsAfterTheServerComesBackOnTheSamePort) {
  auto bus = Connect("reconnector");
  ASSERT_NE(bus, nullptr);
  std::atomic<int> got{0};
  auto sub = bus->Subscribe("chq.test.r", [&](const BusMessage&) { ++got; });
  ASSERT_TRUE(sub.ok()) << sub.status();
  ASSERT_TRUE(bus->Publish("chq.test.r", "before").ok());
  ASSERT_TRUE(WaitFor([&] { return got.load() == 1; }));
  EXPECT_EQ(bus->Reconnects(), 0);

  const int port = server_->port();
  server_->Kill9();
  ASSERT_TRUE(WaitFor([&] { return !bus->Connected(); }));
  ASSERT_TRUE(server_->Restart().ok());
  ASSERT_EQ(server_->port(), port);
  ASSERT_TRUE(WaitFor([&] { return bus->Reconnects() >= 1 && bus->Connected(); }))
      << "reconnects=" << bus->Reconnects();

  // The subscription was renewed on the new server.
  ASSERT_TRUE(bus->Flush(absl::Seconds(2)).ok());
  ASSERT_TRUE(bus->Publish("chq.test.r", "after").ok());
  EXPECT_TRUE(WaitFor([&] { return got.load() == 2; })) << got.load();
}

}  // namespace
}  // namespace chasqui
