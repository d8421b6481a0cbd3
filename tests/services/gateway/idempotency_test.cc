// The provider's memory of answers to requests with an Idempotency-Key: what a repeat gets,
// and what is forgotten when (a fake clock, no sleeps).

#include "services/gateway/idempotency.h"

#include <string>
#include <vector>

#include "common/core/status.h"
#include "common/envelope/errors.h"
#include "gtest/gtest.h"

namespace chasqui {
namespace {

using Begun = IdempotencyStore::Begun;

const IdempotencyKey kKey{"sin", "persona_consulta", "8c6e0d7a-key-1"};

Hash32 HashOf(const std::string& body) { return Blake2b256(body); }

class IdempotencyStoreTest : public ::testing::Test {
 protected:
  std::unique_ptr<IdempotencyStore> Store(IdempotencyOptions options = {}) {
    return NewMemoryIdempotencyStore(options, clock_);
  }
  // Begin with a waiter that records what it is handed.
  Begun BeginRecording(IdempotencyStore& store, const IdempotencyKey& key, const std::string& body,
                       RememberedAnswer* answer = nullptr) {
    RememberedAnswer ignored;
    return store.Begin(key, HashOf(body), answer != nullptr ? answer : &ignored,
                       [this](const RememberedAnswer& a) { handed_.push_back(a); });
  }

  FakeClock clock_;
  std::vector<RememberedAnswer> handed_;
};

TEST_F(IdempotencyStoreTest, RepeatGetsTheFirstAnswer) {
  auto store = Store();
  ASSERT_EQ(BeginRecording(*store, kKey, "{\"ci\":1}"), Begun::kStarted);
  store->Finish(kKey, RememberedAnswer{v1::OK, "{\"nombre\":\"Ana\"}"});
  RememberedAnswer answer;
  EXPECT_EQ(BeginRecording(*store, kKey, "{\"ci\":1}", &answer), Begun::kAnswered);
  EXPECT_EQ(answer.code, v1::OK);
  EXPECT_EQ(answer.body, "{\"nombre\":\"Ana\"}");
  EXPECT_EQ(store->size(), 1u);
  // An error the system gave is remembered too.
  const IdempotencyKey other{"sin", "persona_consulta", "key-2"};
  ASSERT_EQ(BeginRecording(*store, other, "{}"), Begun::kStarted);
  store->Finish(other, RememberedAnswer{v1::BAD_REQUEST, "ci must have 7 digits"});
  EXPECT_EQ(BeginRecording(*store, other, "{}", &answer), Begun::kAnswered);
  EXPECT_EQ(answer.code, v1::BAD_REQUEST);
  EXPECT_EQ(answer.body, "ci must have 7 digits");
}

TEST_F(IdempotencyStoreTest, SameKeyWithAnotherBodyIsAConflictRunningOrAnswered) {
  auto store = Store();
  ASSERT_EQ(BeginRecording(*store, kKey, "a"), Begun::kStarted);
  EXPECT_EQ(BeginRecording(*store, kKey, "b"), Begun::kConflict);
  store->Finish(kKey, RememberedAnswer{v1::OK, "A"});
  EXPECT_EQ(BeginRecording(*store, kKey, "b"), Begun::kConflict);
  EXPECT_TRUE(handed_.empty());
}

TEST_F(IdempotencyStoreTest, KeysAreSeparatePerConsumerAndService) {
  auto store = Store();
  ASSERT_EQ(BeginRecording(*store, kKey, "a"), Begun::kStarted);
  store->Finish(kKey, RememberedAnswer{v1::OK, "A"});
  EXPECT_EQ(BeginRecording(*store, {"aduana", kKey.service, kKey.key}, "a"), Begun::kStarted);
  EXPECT_EQ(BeginRecording(*store, {kKey.consumer, "padron", kKey.key}, "a"), Begun::kStarted);
  // No ambiguity from joining the parts.
  EXPECT_EQ(BeginRecording(*store, {"sin", "persona_consultax", "y"}, "a"), Begun::kStarted);
  EXPECT_EQ(BeginRecording(*store, {"sin", "persona_consulta", "xy"}, "a"), Begun::kStarted);
}

TEST_F(IdempotencyStoreTest, RepeatsWhileRunningGetTheAnswerWhenItComes) {
  auto store = Store();
  ASSERT_EQ(BeginRecording(*store, kKey, "a"), Begun::kStarted);
  EXPECT_EQ(BeginRecording(*store, kKey, "a"), Begun::kJoined);
  EXPECT_EQ(BeginRecording(*store, kKey, "a"), Begun::kJoined);
  EXPECT_TRUE(handed_.empty());
  store->Finish(kKey, RememberedAnswer{v1::OK, "A"});
  ASSERT_EQ(handed_.size(), 2u);
  EXPECT_EQ(handed_[0].body, "A");
  EXPECT_EQ(handed_[1].body, "A");
}

TEST_F(IdempotencyStoreTest, WaitersAreBounded) {
  auto store = Store();
  ASSERT_EQ(BeginRecording(*store, kKey, "a"), Begun::kStarted);
  for (size_t i = 0; i < kMaxWaitersPerKey; ++i) {
    ASSERT_EQ(BeginRecording(*store, kKey, "a"), Begun::kJoined);
  }
  EXPECT_EQ(BeginRecording(*store, kKey, "a"), Begun::kTooMany);
  store->Finish(kKey, RememberedAnswer{v1::OK, "A"});
  EXPECT_EQ(handed_.size(), kMaxWaitersPerKey);
}

TEST_F(IdempotencyStoreTest, AbandonedKeyRunsAgainAndItsWaitersHearWhy) {
  auto store = Store();
  ASSERT_EQ(BeginRecording(*store, kKey, "a"), Begun::kStarted);
  ASSERT_EQ(BeginRecording(*store, kKey, "a"), Begun::kJoined);
  store->Abandon(kKey, RememberedAnswer{v1::UNAVAILABLE, "saturated"});
  ASSERT_EQ(handed_.size(), 1u);
  EXPECT_EQ(handed_[0].code, v1::UNAVAILABLE);
  EXPECT_EQ(store->size(), 0u);
  EXPECT_EQ(BeginRecording(*store, kKey, "a"), Begun::kStarted);
}

TEST_F(IdempotencyStoreTest, AnswersAreForgottenAfterTheTtl) {
  IdempotencyOptions options;
  options.ttl = absl::Hours(24);
  auto store = Store(options);
  ASSERT_EQ(BeginRecording(*store, kKey, "a"), Begun::kStarted);
  store->Finish(kKey, RememberedAnswer{v1::OK, "A"});
  clock_.AdvanceMillis(24 * 3600 * 1000 - 1);
  EXPECT_EQ(BeginRecording(*store, kKey, "a"), Begun::kAnswered);
  clock_.AdvanceMillis(1);
  EXPECT_EQ(BeginRecording(*store, kKey, "a"), Begun::kStarted) << "expired: runs again";
  EXPECT_EQ(store->size(), 0u);
}

TEST_F(IdempotencyStoreTest, OldestAnswersAreForgottenPastMaxEntries) {
  IdempotencyOptions options;
  options.max_entries = 2;
  auto store = Store(options);
  for (const char* k : {"k1", "k2", "k3"}) {
    const IdempotencyKey key{"sin", "s", k};
    ASSERT_EQ(BeginRecording(*store, key, "a"), Begun::kStarted);
    store->Finish(key, RememberedAnswer{v1::OK, k});
    clock_.AdvanceMillis(1);
  }
  EXPECT_EQ(store->size(), 2u);
  EXPECT_EQ(BeginRecording(*store, {"sin", "s", "k3"}, "a"), Begun::kAnswered);
  EXPECT_EQ(BeginRecording(*store, {"sin", "s", "k2"}, "a"), Begun::kAnswered);
  EXPECT_EQ(BeginRecording(*store, {"sin", "s", "k1"}, "a"), Begun::kStarted) << "the oldest";
}

TEST_F(IdempotencyStoreTest, OldestAnswersAreForgottenPastMaxBytesAndAHugeOneIsNotKept) {
  IdempotencyOptions options;
  options.max_bytes = 4096;
  auto store = Store(options);
  const IdempotencyKey k1{"sin", "s", "k1"}, k2{"sin", "s", "k2"}, big{"sin", "s", "big"};
  ASSERT_EQ(BeginRecording(*store, k1, "a"), Begun::kStarted);
  store->Finish(k1, RememberedAnswer{v1::OK, std::string(2000, 'x')});
  ASSERT_EQ(BeginRecording(*store, k2, "a"), Begun::kStarted);
  store->Finish(k2, RememberedAnswer{v1::OK, std::string(2000, 'y')});
  EXPECT_EQ(store->size(), 1u) << "two of 2000 bytes and their keys exceed 4096";
  EXPECT_EQ(BeginRecording(*store, k1, "a"), Begun::kStarted);
  store->Abandon(k1, {});
  EXPECT_EQ(BeginRecording(*store, k2, "a"), Begun::kAnswered);

  ASSERT_EQ(BeginRecording(*store, big, "a"), Begun::kStarted);
  ASSERT_EQ(BeginRecording(*store, big, "a"), Begun::kJoined);
  store->Finish(big, RememberedAnswer{v1::OK, std::string(5000, 'z')});
  ASSERT_EQ(handed_.size(), 1u) << "a waiter still gets an answer too large to keep";
  EXPECT_EQ(handed_[0].body.size(), 5000u);
  EXPECT_EQ(BeginRecording(*store, big, "a"), Begun::kStarted);
  EXPECT_EQ(BeginRecording(*store, k2, "a"), Begun::kAnswered) << "kept: nothing was added";
}

TEST(ValidateIdempotencyKeyTest, AcceptsPrintableAsciiUpTo128) {
  EXPECT_TRUE(ValidateIdempotencyKey("a").ok());
  EXPECT_TRUE(ValidateIdempotencyKey("3f2b9c1e-5a7d-4e8f-9b0a-1c2d3e4f5a6b").ok());
  EXPECT_TRUE(ValidateIdempotencyKey(std::string(128, '~')).ok());
  EXPECT_TRUE(ValidateIdempotencyKey("order 42/retry").ok());
  for (const std::string& bad : {std::string(), std::string(129, 'a'), std::string("tab\there"),
                                std::string("nul\0x", 5), std::string("\xc3\xb1" "and" "\xc3\xba"),
                                std::string("del\x7f")}) {
    absl::Status s = ValidateIdempotencyKey(bad);
    EXPECT_EQ(ChasquiCode(s), v1::BAD_REQUEST) << bad;
    EXPECT_NE(MessageOf(s).find("Idempotency-Key"), std::string::npos) << s;
  }
}

}  // namespace
}  // namespace chasqui
