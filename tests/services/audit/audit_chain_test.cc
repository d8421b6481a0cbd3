// AuditChain against a fake store: the acknowledgement waits for the synced write, nothing is
// ever written unsynced, duplicates are answered REPLAYED and stored once (also after a
// restart), checkpoints are signed every N records or T ms, and a failed write fails its group
// and stops the chain.

#include "services/audit/audit_chain.h"

#include <set>
#include <thread>

#include "common/envelope/identity.h"
#include "gtest/gtest.h"
#include "services/audit/audit_schema.h"
#include "services/audit/checkpoint_signer.h"
#include "tests/services/audit/audit_test_support.h"
#include "tests/services/audit/fake_kv_store.h"
#include "tests/support/wait_for.h"

namespace chasqui::audit {
namespace {

using testing::FakeKvStore;
using testing::MakeRecord;
using testing::Outcomes;

class AuditChainTest : public ::testing::Test {
 protected:
  AuditChainTest() : signer_(GenerateIdentity("audit", "test", Role::kRouter)) {}

  std::unique_ptr<AuditChain> Open(AuditChainOptions options = {}) {
    auto chain = AuditChain::Open(options, &store_, &signer_, clock_);
    EXPECT_TRUE(chain.ok()) << chain.status();
    return chain.ok() ? *std::move(chain) : nullptr;
  }

  std::vector<v1::Checkpoint> Checkpoints() {
    std::vector<v1::Checkpoint> out;
    for (const auto& [k, v] : store_.data()) {
      if (k.rfind(kCheckpointPrefix, 0) != 0) continue;
      v1::Checkpoint cp;
      EXPECT_TRUE(cp.ParseFromString(v));
      out.push_back(cp);
    }
    return out;
  }

  size_t RecordCount() {
    size_t n = 0;
    for (const auto& [k, v] : store_.data()) n += k.rfind(kRecordPrefix, 0) == 0;
    return n;
  }

  FakeKvStore store_;
  LocalCheckpointSigner signer_;
  FakeClock clock_;
};

TEST_F(AuditChainTest, NoAcknowledgementBeforeTheSyncedWriteReturns) {
  auto chain = Open();
  store_.Hold();
  Outcomes outcomes;
  for (uint64_t i = 1; i <= 3; ++i) chain->Append(MakeRecord(i), outcomes.For(i));
  ASSERT_TRUE(store_.WaitForHeldWrite());
  // The writer is inside the sync; give it every chance to answer early.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(outcomes.size(), 0u) << "an append was acknowledged before its sync returned";
  EXPECT_EQ(store_.synced_writes_done(), 0);
  store_.Release();
  ASSERT_TRUE(outcomes.WaitFor(3));
  for (uint64_t i = 1; i <= 3; ++i) {
    auto seq = outcomes.Get(i);
    ASSERT_TRUE(seq.ok()) << seq.status();
    EXPECT_GE(*seq, 1u);
  }
  chain->Stop();
  EXPECT_EQ(store_.buffered_writes(), 0) << "a record was written without a sync";
  EXPECT_EQ(RecordCount(), 3u);
}

TEST_F(AuditChainTest, RecordsQueuedDuringASyncGoTogetherInTheNextGroup) {
  auto chain = Open();
  store_.Hold();
  Outcomes outcomes;
  chain->Append(MakeRecord(1), outcomes.For(1));
  ASSERT_TRUE(store_.WaitForHeldWrite());
  for (uint64_t i = 2; i <= 50; ++i) chain->Append(MakeRecord(i), outcomes.For(i));
  store_.Release();
  ASSERT_TRUE(outcomes.WaitFor(50));
  // One group for the first record, one for the 49 that queued behind its sync.
  EXPECT_EQ(chain->stats().groups, 2u);
  std::set<uint64_t> seqs;
  for (uint64_t i = 1; i <= 50; ++i) seqs.insert(*outcomes.Get(i));
  EXPECT_EQ(seqs.size(), 50u);
  EXPECT_EQ(*seqs.begin(), 1u);
  EXPECT_EQ(*seqs.rbegin(), 50u);
}

TEST_F(AuditChainTest, DuplicateSenderAndIdIsReplayedAndStoredOnceAlsoAfterRestart) {
  {
    auto chain = Open();
    Outcomes outcomes;
    chain->Append(MakeRecord(1), outcomes.For(1));
    ASSERT_TRUE(outcomes.WaitFor(1));
    // Same (sender, id) later, twice in one group, and the same id from another sender.
    store_.Hold();
    chain->Append(MakeRecord(2), outcomes.For(2));
    ASSERT_TRUE(store_.WaitForHeldWrite());
    chain->Append(MakeRecord(1), outcomes.For(3));
    chain->Append(MakeRecord(4), outcomes.For(4));
    chain->Append(MakeRecord(4), outcomes.For(5));
    chain->Append(MakeRecord(1, "sin", "ana.perez", /*sender=*/999), outcomes.For(6));
    store_.Release();
    ASSERT_TRUE(outcomes.WaitFor(6));
    EXPECT_EQ(*outcomes.Get(1), 1u);
    EXPECT_TRUE(absl::IsAlreadyExists(outcomes.Get(3).status())) << outcomes.Get(3).status();
    EXPECT_NE(outcomes.Get(3).status().message().find("seq 1"), std::string::npos);
    EXPECT_TRUE(outcomes.Get(4).ok());
    EXPECT_TRUE(absl::IsAlreadyExists(outcomes.Get(5).status()));
    EXPECT_TRUE(outcomes.Get(6).ok()) << "another sender may reuse an id";
    EXPECT_EQ(RecordCount(), 4u);
  }
  auto chain = Open();
  Outcomes outcomes;
  chain->Append(MakeRecord(1), outcomes.For(1));
  chain->Append(MakeRecord(7), outcomes.For(7));
  ASSERT_TRUE(outcomes.WaitFor(2));
  EXPECT_TRUE(absl::IsAlreadyExists(outcomes.Get(1).status())) << outcomes.Get(1).status();
  EXPECT_EQ(*outcomes.Get(7), 5u) << "the chain resumes after its last record";
  EXPECT_EQ(RecordCount(), 5u);
}

TEST_F(AuditChainTest, ChainLinksEachRecordToThePreviousOne) {
  auto chain = Open();
  Outcomes outcomes;
  for (uint64_t i = 1; i <= 5; ++i) chain->Append(MakeRecord(i), outcomes.For(i));
  ASSERT_TRUE(outcomes.WaitFor(5));
  chain->Stop();
  std::string prev = GenesisHash();
  for (uint64_t seq = 1; seq <= 5; ++seq) {
    auto value = store_.Get(RecordKey(seq));
    ASSERT_TRUE(value.ok());
    v1::StoredRecord rec;
    ASSERT_TRUE(rec.ParseFromString(*value));
    EXPECT_EQ(rec.seq(), seq);
    EXPECT_EQ(rec.prev_hash(), prev);
    EXPECT_EQ(rec.hash(), LinkHash(prev, rec.entry()));
    prev = rec.hash();
  }
}

TEST_F(AuditChainTest, CheckpointsEveryNRecordsAndAfterTMillisecondsAreSigned) {
  auto chain = Open({.env = "test", .checkpoint_every_records = 4, .checkpoint_every_ms = 1000});
  Outcomes outcomes;
  for (uint64_t i = 1; i <= 4; ++i) {
    chain->Append(MakeRecord(i), outcomes.For(i));
    ASSERT_TRUE(outcomes.WaitFor(i));
  }
  auto cps = Checkpoints();
  ASSERT_EQ(cps.size(), 1u);
  EXPECT_EQ(cps[0].seq(), 4u);
  EXPECT_TRUE(VerifyCheckpoint(cps[0], signer_.pub(), "test").ok());
  EXPECT_FALSE(VerifyCheckpoint(cps[0], signer_.pub(), "prod").ok())
      << "a checkpoint of one env must not verify in another";

  chain->Append(MakeRecord(5), outcomes.For(5));
  ASSERT_TRUE(outcomes.WaitFor(5));
  EXPECT_EQ(Checkpoints().size(), 1u) << "one record and no time passed: no checkpoint yet";
  clock_.AdvanceMillis(1001);
  ASSERT_TRUE(::chasqui::testing::WaitFor([&] { return Checkpoints().size() == 2; }))
      << "the timer did not checkpoint the head";
  EXPECT_EQ(Checkpoints()[1].seq(), 5u);
}

TEST_F(AuditChainTest, MalformedRecordIsRejectedAndNotStored) {
  auto chain = Open();
  Outcomes outcomes;
  v1::AuditRecord no_id = MakeRecord(1);
  no_id.clear_request_id();
  chain->Append(no_id, outcomes.For(1));
  v1::AuditRecord other_env = MakeRecord(2);
  other_env.set_env("prod");
  chain->Append(other_env, outcomes.For(2));
  v1::AuditRecord bad_hash = MakeRecord(3);
  bad_hash.set_request_body_hash("short");
  chain->Append(bad_hash, outcomes.For(3));
  ASSERT_TRUE(outcomes.WaitFor(3));
  for (uint64_t i = 1; i <= 3; ++i) {
    EXPECT_TRUE(absl::IsInvalidArgument(outcomes.Get(i).status())) << outcomes.Get(i).status();
  }
  EXPECT_NE(outcomes.Get(1).status().message().find("request_id"), std::string::npos);
  EXPECT_EQ(RecordCount(), 0u);
}

TEST_F(AuditChainTest, FailedWriteFailsItsGroupAndStopsTheChain) {
  auto chain = Open();
  store_.FailWrites(absl::UnavailableError("disk gone"));
  Outcomes outcomes;
  chain->Append(MakeRecord(1), outcomes.For(1));
  ASSERT_TRUE(outcomes.WaitFor(1));
  EXPECT_TRUE(absl::IsUnavailable(outcomes.Get(1).status())) << outcomes.Get(1).status();
  EXPECT_FALSE(chain->Healthy().ok());
  store_.FailWrites(absl::OkStatus());
  chain->Append(MakeRecord(2), outcomes.For(2));
  ASSERT_TRUE(outcomes.WaitFor(2));
  EXPECT_TRUE(absl::IsUnavailable(outcomes.Get(2).status()));
  EXPECT_EQ(RecordCount(), 0u);
}

TEST_F(AuditChainTest, FullQueueAnswersUnavailableAtOnce) {
  auto chain = Open({.env = "test", .max_queued_entries = 2});
  store_.Hold();
  Outcomes outcomes;
  chain->Append(MakeRecord(1), outcomes.For(1));
  ASSERT_TRUE(store_.WaitForHeldWrite());
  chain->Append(MakeRecord(2), outcomes.For(2));
  chain->Append(MakeRecord(3), outcomes.For(3));
  chain->Append(MakeRecord(4), outcomes.For(4));
  ASSERT_TRUE(outcomes.WaitFor(1));
  EXPECT_TRUE(absl::IsUnavailable(outcomes.Get(4).status())) << outcomes.Get(4).status();
  store_.Release();
  ASSERT_TRUE(outcomes.WaitFor(4));
  EXPECT_TRUE(outcomes.Get(3).ok());
}

}  // namespace
}  // namespace chasqui::audit
