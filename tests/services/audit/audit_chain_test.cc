// AuditChain against a fake store: the acknowledgement waits for the synced write, nothing is
// ever written unsynced, duplicates are answered REPLAYED and stored once (also after a
// restart), checkpoints are signed every N records or T ms on their own thread (a blocked or
// failing signer holds up no acknowledgement), and a failed write fails its group and stops
// the chain.

#include "services/audit/audit_chain.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include "common/envelope/identity.h"
#include "gtest/gtest.h"
#include "services/audit/audit_schema.h"
#include "services/audit/audit_verifier.h"
#include "services/audit/checkpoint_signer.h"
#include "spdlog/sinks/ringbuffer_sink.h"
#include "spdlog/spdlog.h"
#include "tests/services/audit/audit_test_support.h"
#include "tests/services/audit/fake_kv_store.h"
#include "tests/support/wait_for.h"

namespace chasqui::audit {
namespace {

using testing::FakeKvStore;
using testing::MakeRecord;
using testing::Outcomes;

// A signer the test holds inside Sign() (a crypto service that does not answer yet) or makes
// fail (one that is down); it signs with a real key otherwise and counts overlapping calls.
class GatedSigner final : public CheckpointSigner {
 public:
  GatedSigner() : inner_(GenerateIdentity("audit", "test", Role::kRouter)) {}

  absl::Status Sign(v1::Checkpoint& checkpoint) override {
    std::unique_lock<std::mutex> lock(mu_);
    ++calls_;
    ++in_flight_;
    max_in_flight_ = std::max(max_in_flight_, in_flight_);
    cv_.notify_all();
    cv_.wait(lock, [&] { return !hold_; });
    --in_flight_;
    if (failures_left_ > 0) {
      --failures_left_;
      return absl::UnavailableError("crypto service: no responders (test)");
    }
    lock.unlock();
    return inner_.Sign(checkpoint);
  }

  void Hold() {
    std::lock_guard<std::mutex> lock(mu_);
    hold_ = true;
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    hold_ = false;
    cv_.notify_all();
  }
  void FailNext(int n) {
    std::lock_guard<std::mutex> lock(mu_);
    failures_left_ = n;
  }
  // Waits (bounded) until Sign() was entered `n` times.
  bool WaitForCalls(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return calls_ >= n; });
  }
  int calls() const {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }
  int max_in_flight() const {
    std::lock_guard<std::mutex> lock(mu_);
    return max_in_flight_;
  }
  const PublicIdentity& pub() const { return inner_.pub(); }

 private:
  LocalCheckpointSigner inner_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool hold_ = false;
  int failures_left_ = 0;
  int calls_ = 0;
  int in_flight_ = 0;
  int max_in_flight_ = 0;
};

class AuditChainTest : public ::testing::Test {
 protected:
  AuditChainTest() : signer_(GenerateIdentity("audit", "test", Role::kRouter)) {}

  std::unique_ptr<AuditChain> Open(AuditChainOptions options = {},
                                   CheckpointSigner* signer = nullptr) {
    auto chain = AuditChain::Open(options, &store_, signer != nullptr ? signer : &signer_, clock_);
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
  // Signed off the writer thread, then written: it follows the acknowledgement of record 4.
  ASSERT_TRUE(::chasqui::testing::WaitFor([&] { return Checkpoints().size() == 1; }));
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

VerifyReport VerifyWith(KvStore& store, const PublicIdentity& key) {
  VerifyOptions options;
  options.env = "test";
  options.checkpoint_key = [&key](uint64_t serial) {
    return serial == key.serial ? &key : nullptr;
  };
  auto report = VerifyChain(store, options);
  EXPECT_TRUE(report.ok()) << report.status();
  return report.ok() ? *report : VerifyReport{};
}

// Appends records first..last, each acknowledged before the next is sent.
bool AppendOneByOne(AuditChain& chain, Outcomes& outcomes, uint64_t first, uint64_t last) {
  for (uint64_t i = first; i <= last; ++i) {
    chain.Append(MakeRecord(i), outcomes.For(i));
    if (!outcomes.WaitFor(i)) return false;
  }
  return true;
}

TEST_F(AuditChainTest, AppendsAreAcknowledgedWhileTheSignerIsBlockedAndTheNextCheckpointCovers) {
  GatedSigner signer;
  auto chain = Open({.env = "test", .checkpoint_every_records = 2,
                     .checkpoint_every_ms = 3'600'000},
                    &signer);
  signer.Hold();
  Outcomes outcomes;
  ASSERT_TRUE(AppendOneByOne(*chain, outcomes, 1, 2));
  ASSERT_TRUE(signer.WaitForCalls(1)) << "a checkpoint was due at seq 2";
  // The signer does not answer: every append is still acknowledged durable.
  for (uint64_t i = 3; i <= 10; ++i) chain->Append(MakeRecord(i), outcomes.For(i));
  ASSERT_TRUE(outcomes.WaitFor(10)) << "an append waited for the checkpoint signature";
  for (uint64_t i = 1; i <= 10; ++i) {
    ASSERT_TRUE(outcomes.Get(i).ok()) << i << ": " << outcomes.Get(i).status();
  }
  EXPECT_EQ(RecordCount(), 10u);
  EXPECT_TRUE(Checkpoints().empty()) << "a checkpoint was written before it was signed";
  EXPECT_EQ(signer.calls(), 1) << "a second signature was asked while one was in flight";
  EXPECT_TRUE(chain->stats().signing);
  EXPECT_EQ(chain->stats().last_checkpoint_seq, 0u);

  signer.Release();
  ASSERT_TRUE(::chasqui::testing::WaitFor([&] { return chain->stats().last_checkpoint_seq == 10; }))
      << "last checkpoint " << chain->stats().last_checkpoint_seq;
  std::vector<v1::Checkpoint> cps = Checkpoints();
  ASSERT_EQ(cps.size(), 2u);
  EXPECT_EQ(cps[0].seq(), 2u) << "the head that was durable when it fell due";
  EXPECT_EQ(cps[1].seq(), 10u) << "the next checkpoint covers what was acknowledged meanwhile";
  EXPECT_EQ(signer.max_in_flight(), 1);
  chain->Stop();
  EXPECT_EQ(store_.buffered_writes(), 0);
  const VerifyReport report = VerifyWith(store_, signer.pub());
  EXPECT_EQ(report.finding, Finding::kIntact) << report.detail;
  EXPECT_EQ(report.records_checked, 10u);
  EXPECT_EQ(report.last_checkpoint_seq, 10u);
  EXPECT_EQ(report.checkpoint_signatures_checked, 2u);
}

TEST_F(AuditChainTest, FailedSignatureIsRetriedAfterTheIntervalWithOneLinePerOutage) {
  auto lines = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(256);
  spdlog::default_logger()->sinks().push_back(lines);
  GatedSigner signer;
  signer.FailNext(2);
  auto chain = Open({.env = "test", .checkpoint_every_records = 2,
                     .checkpoint_every_ms = 3'600'000, .checkpoint_retry_ms = 1'000},
                    &signer);
  Outcomes outcomes;
  ASSERT_TRUE(AppendOneByOne(*chain, outcomes, 1, 2));
  ASSERT_TRUE(::chasqui::testing::WaitFor([&] { return chain->stats().signature_failures == 1; }));
  // Before the retry interval: acknowledged, not signed, not asked again.
  for (uint64_t i = 3; i <= 4; ++i) {
    chain->Append(MakeRecord(i), outcomes.For(i));
    ASSERT_TRUE(outcomes.WaitFor(i));
    ASSERT_TRUE(outcomes.Get(i).ok()) << outcomes.Get(i).status();
  }
  EXPECT_EQ(signer.calls(), 1);
  EXPECT_TRUE(Checkpoints().empty());

  clock_.AdvanceMillis(1'000);  // the retry fails too
  ASSERT_TRUE(::chasqui::testing::WaitFor([&] { return chain->stats().signature_failures == 2; }));
  clock_.AdvanceMillis(1'000);  // and the next one is signed
  ASSERT_TRUE(::chasqui::testing::WaitFor([&] { return chain->stats().last_checkpoint_seq == 4; }))
      << "last checkpoint " << chain->stats().last_checkpoint_seq;
  EXPECT_EQ(signer.calls(), 3);
  chain->Append(MakeRecord(5), outcomes.For(5));
  ASSERT_TRUE(outcomes.WaitFor(5));
  chain->Stop();  // signs the rest: the whole chain
  EXPECT_EQ(chain->stats().last_checkpoint_seq, 5u);
  EXPECT_EQ(signer.max_in_flight(), 1);
  spdlog::default_logger()->sinks().pop_back();

  int not_signed = 0;
  int signed_again = 0;
  for (const std::string& line : lines->last_formatted()) {
    not_signed += line.find("not signed") != std::string::npos;
    signed_again += line.find("signed again") != std::string::npos;
  }
  EXPECT_EQ(not_signed, 1) << "one line per outage, not one per retry";
  EXPECT_EQ(signed_again, 1);
  const VerifyReport report = VerifyWith(store_, signer.pub());
  EXPECT_EQ(report.finding, Finding::kIntact) << report.detail;
  EXPECT_EQ(report.last_checkpoint_seq, 5u);
}

TEST_F(AuditChainTest, StopWaitsForTheSignatureInFlightAndLeavesTheWholeChainSigned) {
  GatedSigner signer;
  auto chain = Open({.env = "test", .checkpoint_every_records = 2,
                     .checkpoint_every_ms = 3'600'000},
                    &signer);
  signer.Hold();
  Outcomes outcomes;
  ASSERT_TRUE(AppendOneByOne(*chain, outcomes, 1, 2));
  ASSERT_TRUE(signer.WaitForCalls(1));
  for (uint64_t i = 3; i <= 5; ++i) chain->Append(MakeRecord(i), outcomes.For(i));
  ASSERT_TRUE(outcomes.WaitFor(5));
  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    chain->Stop();
    stopped = true;
  });
  ASSERT_TRUE(::chasqui::testing::WaitFor([&] { return !chain->Healthy().ok(); }));
  EXPECT_FALSE(stopped) << "Stop returned with a signature in flight";
  signer.Release();
  stopper.join();
  std::vector<v1::Checkpoint> cps = Checkpoints();
  ASSERT_EQ(cps.size(), 2u);
  EXPECT_EQ(cps[0].seq(), 2u);
  EXPECT_EQ(cps[1].seq(), 5u) << "the final checkpoint signs the whole chain";
  EXPECT_EQ(signer.max_in_flight(), 1);
  EXPECT_TRUE(VerifyCheckpoint(cps[1], signer.pub(), "test").ok());
}

}  // namespace
}  // namespace chasqui::audit
