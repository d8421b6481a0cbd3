#include "common/bus/request_mux.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fmt/format.h"
#include "gtest/gtest.h"
#include "tests/support/wait_for.h"
#include "tests/support/nats_server.h"

namespace chasqui {
namespace {

using ::chasqui::testing::NatsServer;
using ::chasqui::testing::WaitFor;

constexpr char kPrefix[] = "_INBOX.test.consumer.c1";

// What one request's callback saw; `calls` catches a second call.
struct Outcome {
  std::atomic<int> calls{0};
  std::atomic<int> outcome{-1};
  std::atomic<bool> data_ok{false};
};

class BusRequestMuxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = NatsServer::Start();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    responder_bus_ = Connect("responder");
    client_bus_ = Connect("client");
    ASSERT_NE(responder_bus_, nullptr);
    ASSERT_NE(client_bus_, nullptr);
    // Echo: answers with the request's data.
    auto echo = responder_bus_->Subscribe("svc.echo", [this](const BusMessage& m) {
      ++echoed_;
      EXPECT_TRUE(responder_bus_->Publish(m.reply, m.data).ok());
    });
    ASSERT_TRUE(echo.ok()) << echo.status();
    echo_ = std::move(*echo);
    // Silent: listens (so there are responders) and never answers.
    auto silent = responder_bus_->Subscribe("svc.silent", [](const BusMessage&) {});
    ASSERT_TRUE(silent.ok()) << silent.status();
    silent_ = std::move(*silent);
    ASSERT_TRUE(responder_bus_->Flush(absl::Seconds(2)).ok());
  }

  void TearDown() override {
    echo_.reset();
    silent_.reset();
  }

  std::unique_ptr<Bus> Connect(const std::string& name) {
    BusOptions options;
    options.url = server_->url();
    options.name = name;
    options.send_asap = true;
    auto bus = Bus::Connect(options);
    EXPECT_TRUE(bus.ok()) << bus.status();
    return bus.ok() ? std::move(*bus) : nullptr;
  }

  std::unique_ptr<RequestMux> NewMux() {
    auto mux = RequestMux::Create(client_bus_.get(), kPrefix);
    EXPECT_TRUE(mux.ok()) << mux.status();
    if (!mux.ok()) return nullptr;
    // The wildcard subscription is in place before any request goes out.
    EXPECT_TRUE(client_bus_->Flush(absl::Seconds(2)).ok());
    return std::move(*mux);
  }

  MuxCallback Record(Outcome* out, std::string expected = {}) {
    return [out, expected = std::move(expected)](MuxOutcome outcome, const BusMessage* reply) {
      out->outcome = static_cast<int>(outcome);
      if (reply != nullptr) out->data_ok = reply->data == expected;
      ++out->calls;  // last: a waiter that sees it sees the fields above
    };
  }

  std::unique_ptr<NatsServer> server_;
  std::unique_ptr<Bus> responder_bus_;
  std::unique_ptr<Bus> client_bus_;
  std::unique_ptr<Subscription> echo_;
  std::unique_ptr<Subscription> silent_;
  std::atomic<int> echoed_{0};
};

TEST_F(BusRequestMuxTest, ManyRequestsInFlightAreEachAnsweredOnceWithTheirData) {
  auto mux = NewMux();
  ASSERT_NE(mux, nullptr);
  constexpr int kRequests = 2000;
  std::vector<Outcome> outcomes(kRequests);
  for (int i = 0; i < kRequests; ++i) {
    const std::string data = fmt::format("request-{}", i);
    ASSERT_TRUE(mux->Request("svc.echo", data, absl::Seconds(20), Record(&outcomes[i], data)).ok());
  }
  ASSERT_TRUE(WaitFor(
      [&] {
        for (const Outcome& o : outcomes) {
          if (o.calls.load() == 0) return false;
        }
        return true;
      },
      std::chrono::seconds(20)))
      << "in flight: " << mux->InFlight();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_EQ(outcomes[i].calls.load(), 1) << i;
    ASSERT_EQ(outcomes[i].outcome.load(), static_cast<int>(MuxOutcome::kReply)) << i;
    ASSERT_TRUE(outcomes[i].data_ok.load()) << i;
  }
  EXPECT_EQ(mux->InFlight(), 0);
  EXPECT_EQ(mux->LateReplies(), 0);
}

TEST_F(BusRequestMuxTest, NoReplyWithinTheTimeoutFiresTimeout) {
  auto mux = NewMux();
  ASSERT_NE(mux, nullptr);
  Outcome out;
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(mux->Request("svc.silent", "x", absl::Milliseconds(100), Record(&out)).ok());
  EXPECT_EQ(mux->InFlight(), 1);
  ASSERT_TRUE(WaitFor([&] { return out.calls.load() > 0; }));
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(out.outcome.load(), static_cast<int>(MuxOutcome::kTimeout));
  EXPECT_GE(elapsed, std::chrono::milliseconds(95));
  EXPECT_LT(elapsed, std::chrono::seconds(2));
  EXPECT_EQ(mux->InFlight(), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(out.calls.load(), 1);
}

TEST_F(BusRequestMuxTest, AnEarlierDeadlineWakesTheTimeoutThread) {
  auto mux = NewMux();
  ASSERT_NE(mux, nullptr);
  Outcome slow, fast;
  ASSERT_TRUE(mux->Request("svc.silent", "x", absl::Seconds(30), Record(&slow)).ok());
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(mux->Request("svc.silent", "x", absl::Milliseconds(50), Record(&fast)).ok());
  ASSERT_TRUE(WaitFor([&] { return fast.calls.load() > 0; }));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  EXPECT_EQ(fast.outcome.load(), static_cast<int>(MuxOutcome::kTimeout));
  EXPECT_EQ(slow.calls.load(), 0);
  EXPECT_EQ(mux->InFlight(), 1);
  mux.reset();  // answers `slow` while it is still alive
  EXPECT_EQ(slow.outcome.load(), static_cast<int>(MuxOutcome::kClosed));
}

TEST_F(BusRequestMuxTest, NobodyListeningFiresNoResponders) {
  auto mux = NewMux();
  ASSERT_NE(mux, nullptr);
  Outcome out;
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(mux->Request("svc.nobody", "x", absl::Seconds(10), Record(&out)).ok());
  ASSERT_TRUE(WaitFor([&] { return out.calls.load() > 0; }));
  EXPECT_EQ(out.outcome.load(), static_cast<int>(MuxOutcome::kNoResponders));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_EQ(mux->InFlight(), 0);
}

TEST_F(BusRequestMuxTest, AReplyAfterTheTimeoutIsCountedAndNotDelivered) {
  auto slow_sub = responder_bus_->Subscribe("svc.slow", [this](const BusMessage& m) {
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    EXPECT_TRUE(responder_bus_->Publish(m.reply, "late").ok());
  });
  ASSERT_TRUE(slow_sub.ok()) << slow_sub.status();
  ASSERT_TRUE(responder_bus_->Flush(absl::Seconds(2)).ok());
  auto mux = NewMux();
  ASSERT_NE(mux, nullptr);
  Outcome out;
  ASSERT_TRUE(mux->Request("svc.slow", "x", absl::Milliseconds(50), Record(&out)).ok());
  ASSERT_TRUE(WaitFor([&] { return mux->LateReplies() == 1; }));
  EXPECT_EQ(out.calls.load(), 1);
  EXPECT_EQ(out.outcome.load(), static_cast<int>(MuxOutcome::kTimeout));
  EXPECT_EQ(mux->InFlight(), 0);
}

// Replies and timeouts race on purpose (timeouts of 0-39 ms against a live echo of a burst
// that takes about as long to answer): whichever
// wins, each callback runs exactly once, and every request that timed out has its reply
// counted as late.
TEST_F(BusRequestMuxTest, ReplyRacingTimeoutCallsEachCallbackExactlyOnce) {
  auto mux = NewMux();
  ASSERT_NE(mux, nullptr);
  constexpr int kRounds = 3;
  constexpr int kRequests = 1000;
  int timeouts = 0;
  int replies = 0;
  for (int round = 0; round < kRounds; ++round) {
    std::vector<Outcome> outcomes(kRequests);
    const int echoed_before = echoed_.load();
    for (int i = 0; i < kRequests; ++i) {
      const std::string data = fmt::format("r{}-{}", round, i);
      ASSERT_TRUE(mux->Request("svc.echo", data, absl::Milliseconds(i % 40),
                               Record(&outcomes[i], data))
                      .ok());
    }
    ASSERT_TRUE(WaitFor([&] {
      for (const Outcome& o : outcomes) {
        if (o.calls.load() == 0) return false;
      }
      return echoed_.load() - echoed_before == kRequests;
    }));
    int round_timeouts = 0;
    for (const Outcome& o : outcomes) {
      if (o.outcome.load() == static_cast<int>(MuxOutcome::kTimeout)) ++round_timeouts;
    }
    timeouts += round_timeouts;
    // Every echo was sent; the ones for timed-out requests come back as late replies.
    ASSERT_TRUE(WaitFor([&] { return mux->LateReplies() == timeouts; }))
        << "late=" << mux->LateReplies() << " timeouts=" << timeouts;
    ASSERT_TRUE(client_bus_->Flush(absl::Seconds(2)).ok());
    for (int i = 0; i < kRequests; ++i) {
      ASSERT_EQ(outcomes[i].calls.load(), 1) << "round " << round << " request " << i;
      const int outcome = outcomes[i].outcome.load();
      ASSERT_TRUE(outcome == static_cast<int>(MuxOutcome::kReply) ||
                  outcome == static_cast<int>(MuxOutcome::kTimeout))
          << outcome;
      if (outcome == static_cast<int>(MuxOutcome::kReply)) {
        ++replies;
        ASSERT_TRUE(outcomes[i].data_ok.load());
      }
    }
  }
  EXPECT_EQ(replies + timeouts, kRounds * kRequests);
  EXPECT_EQ(mux->LateReplies(), timeouts);
  EXPECT_EQ(mux->InFlight(), 0);
  std::printf("race: %d replies, %d timeouts\n", replies, timeouts);
}

TEST_F(BusRequestMuxTest, DestructionAnswersPendingRequestsWithClosed) {
  auto mux = NewMux();
  ASSERT_NE(mux, nullptr);
  constexpr int kRequests = 10;
  std::vector<Outcome> outcomes(kRequests);
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(mux->Request("svc.silent", "x", absl::Seconds(30), Record(&outcomes[i])).ok());
  }
  ASSERT_TRUE(client_bus_->Flush(absl::Seconds(2)).ok());
  EXPECT_EQ(mux->InFlight(), kRequests);
  const auto start = std::chrono::steady_clock::now();
  mux.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  for (const Outcome& o : outcomes) {
    EXPECT_EQ(o.calls.load(), 1);
    EXPECT_EQ(o.outcome.load(), static_cast<int>(MuxOutcome::kClosed));
  }
}

TEST_F(BusRequestMuxTest, AFailedPublishReturnsTheErrorAndNeverCallsBack) {
  auto mux = NewMux();
  ASSERT_NE(mux, nullptr);
  Outcome out;
  absl::Status st = mux->Request("svc.bad subject", "x", absl::Milliseconds(1), Record(&out));
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_EQ(mux->InFlight(), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(out.calls.load(), 0);
}

TEST_F(BusRequestMuxTest, RepliesToUnknownTokensAreCounted) {
  auto mux = NewMux();
  ASSERT_NE(mux, nullptr);
  ASSERT_TRUE(responder_bus_->Publish(std::string(kPrefix) + ".999999", "stray").ok());
  ASSERT_TRUE(responder_bus_->Publish(std::string(kPrefix) + ".not-a-number", "stray").ok());
  ASSERT_TRUE(responder_bus_->Flush(absl::Seconds(2)).ok());
  EXPECT_TRUE(WaitFor([&] { return mux->LateReplies() == 2; })) << mux->LateReplies();
}

TEST_F(BusRequestMuxTest, CreateRejectsBadPrefixes) {
  EXPECT_EQ(RequestMux::Create(client_bus_.get(), "").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RequestMux::Create(client_bus_.get(), "_INBOX.x.").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RequestMux::Create(client_bus_.get(), "_INBOX.*").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RequestMux::Create(nullptr, kPrefix).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace chasqui
