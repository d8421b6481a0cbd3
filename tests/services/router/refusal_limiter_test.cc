#include "services/router/refusal_limiter.h"

#include "common/core/clock.h"
#include "gtest/gtest.h"

namespace chasqui {
namespace {

TEST(RefusalLimiter, AConsumerNeverRefusedIsNeverBlocked) {
  FakeClock clock;
  RefusalLimiter limiter(clock, {.per_second = 1, .burst = 1});
  for (int i = 0; i < 1000; ++i) EXPECT_FALSE(limiter.Blocked("sin"));
  EXPECT_EQ(limiter.tracked_consumers(), 0u);
}

TEST(RefusalLimiter, BlocksAfterTheBurstAndRefillsAtTheRate) {
  FakeClock clock;
  RefusalLimiter limiter(clock, {.per_second = 10, .burst = 5});
  for (int i = 0; i < 5; ++i) {
    ASSERT_FALSE(limiter.Blocked("mallory")) << "refusal " << i << " is within the burst";
    limiter.Charge("mallory");
  }
  EXPECT_TRUE(limiter.Blocked("mallory"));
  EXPECT_FALSE(limiter.Blocked("sin")) << "another consumer is not throttled";
  clock.AdvanceMillis(99);
  EXPECT_TRUE(limiter.Blocked("mallory")) << "0.99 tokens after 99 ms at 10/s";
  clock.AdvanceMillis(1);
  EXPECT_FALSE(limiter.Blocked("mallory"));
  limiter.Charge("mallory");
  EXPECT_TRUE(limiter.Blocked("mallory"));
}

TEST(RefusalLimiter, AQuietConsumerIsForgottenOnceRefilled) {
  FakeClock clock;
  RefusalLimiter limiter(clock, {.per_second = 10, .burst = 5});
  limiter.Charge("aduana");
  EXPECT_EQ(limiter.tracked_consumers(), 1u);
  clock.AdvanceMillis(100);
  EXPECT_FALSE(limiter.Blocked("aduana"));
  EXPECT_EQ(limiter.tracked_consumers(), 0u);
}

TEST(RefusalLimiter, ConsumersBeyondTheTableShareOneBucket) {
  FakeClock clock;
  RefusalLimiter limiter(clock, {.per_second = 1, .burst = 2, .max_consumers = 1});
  limiter.Charge("first");
  limiter.Charge("x1");
  limiter.Charge("x2");
  EXPECT_TRUE(limiter.Blocked("x3")) << "x1 and x2 spent the shared bucket";
  EXPECT_FALSE(limiter.Blocked("first")) << "a tracked consumer keeps its own bucket";
  EXPECT_EQ(limiter.tracked_consumers(), 1u);
}

}  // namespace
}  // namespace chasqui
