#include "common/envelope/replay_guard.h"

#include <string>

#include "common/core/clock.h"
#include "common/core/status.h"
#include "common/envelope/envelope.h"
#include "common/envelope/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace chasqui {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kWindowMs = 30'000;

class ReplayGuardTest : public ::testing::Test {
 protected:
  int64_t Now() const { return clock_.NowUnixMillis(); }

  FakeClock clock_;
  ReplayGuard guard_{clock_, kWindowMs};
  std::string id_ = NewEnvelopeId();
};

TEST_F(ReplayGuardTest, AFreshIdIsAccepted) {
  EXPECT_TRUE(guard_.Check(1, id_, Now()).ok());
  EXPECT_EQ(guard_.remembered(), 1u);
  EXPECT_EQ(guard_.window_ms(), kWindowMs);
}

TEST_F(ReplayGuardTest, TheSameSenderAndIdIsReplayed) {
  ASSERT_TRUE(guard_.Check(1, id_, Now()).ok());
  const absl::Status s = guard_.Check(1, id_, Now());
  EXPECT_EQ(ChasquiCode(s), v1::REPLAYED);
  EXPECT_THAT(std::string(MessageOf(s)), HasSubstr("already seen"));
  // A replay with another sent_at is still a replay.
  clock_.AdvanceMillis(1000);
  EXPECT_EQ(ChasquiCode(guard_.Check(1, id_, Now())), v1::REPLAYED);
  EXPECT_EQ(guard_.remembered(), 1u);
}

TEST_F(ReplayGuardTest, TheSameIdFromAnotherSenderIsAccepted) {
  ASSERT_TRUE(guard_.Check(1, id_, Now()).ok());
  EXPECT_TRUE(guard_.Check(2, id_, Now()).ok());
  EXPECT_TRUE(guard_.Check(1, NewEnvelopeId(), Now()).ok());
  EXPECT_EQ(ChasquiCode(guard_.Check(2, id_, Now())), v1::REPLAYED);
}

TEST_F(ReplayGuardTest, SentAtOutsideTheWindowIsExpired) {
  const absl::Status ahead = guard_.Check(1, NewEnvelopeId(), Now() + kWindowMs + 1);
  EXPECT_EQ(ChasquiCode(ahead), v1::EXPIRED);
  EXPECT_THAT(std::string(MessageOf(ahead)), HasSubstr("30001 ms ahead of"));
  const absl::Status behind = guard_.Check(1, NewEnvelopeId(), Now() - kWindowMs - 1);
  EXPECT_EQ(ChasquiCode(behind), v1::EXPIRED);
  EXPECT_THAT(std::string(MessageOf(behind)), HasSubstr("30001 ms behind"));
  EXPECT_EQ(ChasquiCode(guard_.Check(1, NewEnvelopeId(), 0)), v1::EXPIRED);
  EXPECT_EQ(guard_.remembered(), 0u);
}

TEST_F(ReplayGuardTest, AnExpiredAttemptDoesNotBurnTheId) {
  EXPECT_EQ(ChasquiCode(guard_.Check(1, id_, Now() - kWindowMs - 1)), v1::EXPIRED);
  EXPECT_TRUE(guard_.Check(1, id_, Now()).ok());
}

TEST_F(ReplayGuardTest, TheWindowEdgesAreAccepted) {
  EXPECT_TRUE(guard_.Check(1, NewEnvelopeId(), Now() + kWindowMs).ok());
  EXPECT_TRUE(guard_.Check(1, NewEnvelopeId(), Now() - kWindowMs).ok());
}

// An id seen with sent_at at the future edge stays acceptable, as far as freshness goes, until
// the clock is two windows further. Until then it must be refused as a replay, not accepted.
TEST_F(ReplayGuardTest, AnIdIsRefusedForAsLongAsItsSentAtIsAcceptable) {
  const int64_t sent_at = Now() + kWindowMs;
  ASSERT_TRUE(guard_.Check(1, id_, sent_at).ok());
  clock_.AdvanceMillis(2 * kWindowMs - 1);
  EXPECT_EQ(ChasquiCode(guard_.Check(1, id_, sent_at)), v1::REPLAYED);
  clock_.AdvanceMillis(1);
  EXPECT_EQ(ChasquiCode(guard_.Check(1, id_, sent_at)), v1::REPLAYED);  // at the edge
  clock_.AdvanceMillis(1);
  EXPECT_EQ(ChasquiCode(guard_.Check(1, id_, sent_at)), v1::EXPIRED);
}

// The same guarantee whatever the traffic that moves the guard's generations, and wherever in
// a generation the id arrives.
TEST(ReplayGuardGenerationsTest, NoReplayPassesWhateverTheTraffic) {
  constexpr int64_t kWindow = 50;
  for (int64_t step : {1, 7, 49, 50, 51, 99, 100, 101}) {
    for (int64_t arrives_at = 0; arrives_at < 5 * kWindow; arrives_at += 3) {
      for (int64_t skew : {kWindow, int64_t{0}, -kWindow}) {
        SCOPED_TRACE("step " + std::to_string(step) + ", arrives at " + std::to_string(arrives_at) +
                     ", skew " + std::to_string(skew));
        FakeClock clock;
        ReplayGuard guard(clock, kWindow);
        const int64_t start = clock.NowUnixMillis();
        uint64_t other = 1000;
        while (clock.NowUnixMillis() - start < arrives_at) {
          ASSERT_TRUE(guard.Check(other++, "filler", clock.NowUnixMillis()).ok());
          clock.AdvanceMillis(std::min(step, arrives_at - (clock.NowUnixMillis() - start)));
        }
        const int64_t sent_at = clock.NowUnixMillis() + skew;
        ASSERT_TRUE(guard.Check(1, "the id", sent_at).ok());
        // Replays at every step until the sent_at leaves the window, with traffic in between.
        while (sent_at - clock.NowUnixMillis() >= -kWindow) {
          const absl::Status replay = guard.Check(1, "the id", sent_at);
          ASSERT_EQ(ChasquiCode(replay), v1::REPLAYED)
              << "at " << clock.NowUnixMillis() - sent_at << " ms after sent_at: " << replay;
          ASSERT_TRUE(guard.Check(other++, "filler", clock.NowUnixMillis()).ok());
          clock.AdvanceMillis(step);
        }
        // And exactly at the last acceptable moment, without traffic before it.
        FakeClock quiet_clock;
        ReplayGuard quiet(quiet_clock, kWindow);
        quiet_clock.AdvanceMillis(arrives_at);
        const int64_t quiet_sent_at = quiet_clock.NowUnixMillis() + skew;
        ASSERT_TRUE(quiet.Check(1, "the id", quiet_sent_at).ok());
        quiet_clock.SetUnixMillis(quiet_sent_at + kWindow);
        ASSERT_EQ(ChasquiCode(quiet.Check(1, "the id", quiet_sent_at)), v1::REPLAYED);
      }
    }
  }
}

TEST(ReplayGuardGenerationsTest, OldIdsAreForgotten) {
  FakeClock clock;
  ReplayGuard guard(clock, kWindowMs);
  for (uint64_t i = 0; i < 100; ++i) ASSERT_TRUE(guard.Check(i, "id", clock.NowUnixMillis()).ok());
  EXPECT_EQ(guard.remembered(), 100u);
  for (int i = 0; i < 3; ++i) {
    clock.AdvanceMillis(2 * kWindowMs);
    ASSERT_TRUE(guard.Check(1000 + i, "id", clock.NowUnixMillis()).ok());
  }
  EXPECT_LE(guard.remembered(), 2u);
}

}  // namespace
}  // namespace chasqui
