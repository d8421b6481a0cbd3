// RefusalTally: counts per (consumer, code) and interval, each interval cut once, with keys that
// never repeat (the audit chain's unique key for a refusal count includes the interval start).

#include "services/router/refusal_tally.h"

#include <map>
#include <string>

#include "gtest/gtest.h"

namespace chasqui {
namespace {

std::map<std::string, uint64_t> ByKey(const std::vector<v1::RefusalCount>& counts) {
  std::map<std::string, uint64_t> out;
  for (const auto& c : counts) {
    out[c.consumer() + "/" + std::string(v1::Code_Name(c.reason()))] += c.count();
  }
  return out;
}

TEST(RefusalTallyTest, CountsPerConsumerAndCodeOverOneInterval) {
  RefusalTally tally("test", "r1", 1000);
  tally.Count("sin", v1::BAD_REQUEST);
  tally.Count("sin", v1::BAD_REQUEST, 2);
  tally.Count("unknown", v1::UNAUTHENTICATED);
  tally.Count("sin", v1::REPLAYED);
  EXPECT_EQ(tally.pending(), 5u);
  auto cut = tally.Cut(11'000);
  EXPECT_EQ(ByKey(cut), (std::map<std::string, uint64_t>{
                            {"sin/BAD_REQUEST", 3}, {"sin/REPLAYED", 1},
                            {"unknown/UNAUTHENTICATED", 1}}));
  for (const auto& c : cut) {
    EXPECT_EQ(c.interval_start_ms(), 1000);
    EXPECT_EQ(c.interval_ms(), 10'000);
    EXPECT_EQ(c.router_id(), "r1");
    EXPECT_EQ(c.env(), "test");
  }
  EXPECT_EQ(tally.pending(), 0u);
}

TEST(RefusalTallyTest, EachIntervalIsCutOnceAndStartsWhereTheLastEnded) {
  RefusalTally tally("test", "r1", 1000);
  EXPECT_TRUE(tally.Cut(2000).empty()) << "nothing counted, nothing to send";
  tally.Count("sin", v1::EXPIRED);
  auto second = tally.Cut(3000);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].interval_start_ms(), 2000);
  EXPECT_TRUE(tally.Cut(4000).empty()) << "counted once";
  // Two cuts in one millisecond still get distinct interval starts (distinct unique keys).
  tally.Count("sin", v1::EXPIRED);
  auto a = tally.Cut(5000);
  tally.Count("sin", v1::EXPIRED);
  auto b = tally.Cut(5000);
  tally.Count("sin", v1::EXPIRED);
  auto c = tally.Cut(5000);
  ASSERT_EQ(a.size(), 1u);
  ASSERT_EQ(b.size(), 1u);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(b[0].interval_start_ms(), 5000);
  EXPECT_GT(c[0].interval_start_ms(), b[0].interval_start_ms());
}

}  // namespace
}  // namespace chasqui
