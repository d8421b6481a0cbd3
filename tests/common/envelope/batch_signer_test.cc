#include "common/envelope/batch_signer.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/notification.h"
#include "common/core/burst.h"
#include "common/core/clock.h"
#include "common/envelope/envelope.h"
#include "common/envelope/identity.h"
#include "common/envelope/verifier.h"
#include "gtest/gtest.h"
#include "tests/common/envelope/envelope_fixtures.h"

namespace chasqui {
namespace {

using ::chasqui::testing::RequestHeader;

SignatureBytes SigBytes(const v1::Signature& s) {
  SignatureBytes sig{};
  if (s.root_signature().size() == sig.size()) {
    std::copy(s.root_signature().begin(), s.root_signature().end(),
              reinterpret_cast<char*>(sig.data()));
  }
  return sig;
}

class BatchSignerTest : public ::testing::Test {
 protected:
  std::string Header() { return RequestHeader(sender_.pub.serial).SerializeAsString(); }

  Identity sender_ = GenerateIdentity("segip", "test", Role::kEntity);
  FakeClock clock_;
  RootCache cache_{clock_, 30'000};
  EnvelopeVerifier verifier_{"test", &cache_};
  // Last, so it stops (and runs any pending completion) before what completions use goes.
  BatchSigner signer_{sender_.sign, EnvelopeTag("test")};
};

TEST_F(BatchSignerTest, AnIdleSignerSignsABatchOfOneOnItsThread) {
  const std::string header = Header();
  absl::Notification done;
  int calls = 0;
  v1::Signature got;
  std::string got_header;
  std::thread::id signed_on;
  signer_.Submit(header, [&](std::string h, v1::Signature s) {
    ++calls;
    got_header = std::move(h);
    got = std::move(s);
    signed_on = std::this_thread::get_id();
    done.Notify();
  });
  done.WaitForNotification();
  EXPECT_NE(signed_on, std::this_thread::get_id());
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(got_header, header);
  EXPECT_EQ(got.tree_size(), 1u);
  EXPECT_EQ(got.leaf_index(), 0u);
  EXPECT_EQ(got.path_size(), 0);
  EXPECT_EQ(signer_.batches(), 1u);
  EXPECT_EQ(signer_.signed_headers(), 1u);
  // A batch of one signs the header's leaf hash as the root.
  EXPECT_TRUE(VerifySignature(sender_.pub.sign_pk,
                              BatchSignedMessage(EnvelopeTag("test"), 1, LeafHash(got_header)),
                              SigBytes(got)));
}

TEST_F(BatchSignerTest, SignEnvelopeSetsTheBodyHashAndVerifies) {
  const std::string wire = testing::SignOne(signer_, RequestHeader(sender_.pub.serial), "the body");
  auto parsed = ParseEnvelope(wire);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->header.body_hash(), std::string(AsView(Blake2b256("the body"))));
  EXPECT_EQ(parsed->envelope.body(), "the body");
  EXPECT_TRUE(verifier_.Verify(*parsed, sender_.pub).ok());
}

TEST_F(BatchSignerTest, HeadersQueuedWhileSigningAreSignedTogether) {
  constexpr int kQueued = 5;
  std::vector<v1::Signature> sigs(kQueued);
  std::vector<int> calls(kQueued, 0);
  absl::BlockingCounter pending(kQueued);
  signer_.Submit(Header(), [&](std::string, v1::Signature) {
    // The signer is busy here: these queue, and the next round signs them as one tree.
    for (int i = 0; i < kQueued; ++i) {
      signer_.Submit(Header(), [&, i](std::string, v1::Signature s) {
        ++calls[i];
        sigs[i] = std::move(s);
        pending.DecrementCount();
      });
    }
    EXPECT_EQ(calls, std::vector<int>(kQueued, 0)) << "no completion may run inside another";
  });
  pending.Wait();
  EXPECT_EQ(calls, std::vector<int>(kQueued, 1));
  EXPECT_EQ(signer_.batches(), 2u);
  EXPECT_EQ(signer_.signed_headers(), 1u + kQueued);
  std::vector<bool> index_seen(kQueued, false);
  for (const v1::Signature& s : sigs) {
    EXPECT_EQ(s.tree_size(), static_cast<uint32_t>(kQueued));
    ASSERT_LT(s.leaf_index(), static_cast<uint32_t>(kQueued));
    EXPECT_FALSE(index_seen[s.leaf_index()]);
    index_seen[s.leaf_index()] = true;
    EXPECT_EQ(s.root_signature(), sigs[0].root_signature());  // one Ed25519 signature
  }
}

TEST_F(BatchSignerTest, ABacklogIsSplitIntoTreesOfAtMost1024) {
  constexpr int kQueued = 1500;
  std::vector<std::string> wires(kQueued);
  absl::BlockingCounter pending(kQueued);
  signer_.Submit(Header(), [&](std::string, v1::Signature) {
    for (int i = 0; i < kQueued; ++i) {
      SignEnvelope(signer_, RequestHeader(sender_.pub.serial), "b" + std::to_string(i),
                   [&, i](std::string w) {
                     wires[i] = std::move(w);
                     pending.DecrementCount();
                   });
    }
  });
  pending.Wait();
  EXPECT_EQ(signer_.batches(), 3u);
  EXPECT_EQ(signer_.signed_headers(), 1u + kQueued);
  for (int i = 0; i < kQueued; ++i) {
    auto parsed = ParseEnvelope(wires[i]);
    ASSERT_TRUE(parsed.ok()) << i << ": " << parsed.status();
    // First in, first signed.
    EXPECT_EQ(parsed->envelope.sig().tree_size(), i < 1024 ? 1024u : 476u) << i;
    EXPECT_EQ(parsed->envelope.sig().leaf_index(), static_cast<uint32_t>(i < 1024 ? i : i - 1024));
    ASSERT_TRUE(verifier_.Verify(*parsed, sender_.pub).ok()) << i;
  }
  // Two roots: one Ed25519 verify each, the rest are cache hits.
  EXPECT_EQ(cache_.misses(), 2u);
  EXPECT_EQ(cache_.hits(), kQueued - 2u);
}

TEST_F(BatchSignerTest, ManyThreadsEachGetExactlyOneVerifiableSignature) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 500;
  constexpr int kTotal = kThreads * kPerThread;
  // Headers are prepared up front so the threads spend their time in Submit.
  std::vector<v1::Header> headers;
  for (int i = 0; i < kTotal; ++i) headers.push_back(RequestHeader(sender_.pub.serial));
  std::unique_ptr<std::atomic<int>[]> calls(new std::atomic<int>[kTotal]);
  for (int i = 0; i < kTotal; ++i) calls[i] = 0;
  std::vector<std::string> wires(kTotal);  // slot i written once, on the signing thread
  absl::BlockingCounter pending(kTotal);

  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int k = 0; k < kPerThread; ++k) {
        const int i = t * kPerThread + k;
        SignEnvelope(signer_, headers[i], "body " + std::to_string(i), [&, i](std::string wire) {
          if (calls[i].fetch_add(1) == 0) {
            wires[i] = std::move(wire);
            pending.DecrementCount();
          }
        });
      }
    });
  }
  for (std::thread& t : threads) t.join();
  pending.Wait();
  signer_.Stop();  // any duplicate completion would have run by now

  for (int i = 0; i < kTotal; ++i) {
    ASSERT_EQ(calls[i].load(), 1) << "submission " << i;
    auto parsed = ParseEnvelope(wires[i]);
    ASSERT_TRUE(parsed.ok()) << i << ": " << parsed.status();
    EXPECT_EQ(parsed->header.id(), headers[i].id())
        << "submission " << i << " got another's envelope";
    EXPECT_EQ(parsed->envelope.body(), "body " + std::to_string(i));
    const absl::Status s = verifier_.Verify(*parsed, sender_.pub);
    ASSERT_TRUE(s.ok()) << i << ": " << s;
  }
  EXPECT_EQ(signer_.signed_headers(), static_cast<uint64_t>(kTotal));
  EXPECT_LE(signer_.batches(), signer_.signed_headers());
  EXPECT_GE(signer_.batches(), 2u);               // at most 1024 per tree
  EXPECT_EQ(cache_.misses(), signer_.batches());  // one Ed25519 verify per batch
}

TEST_F(BatchSignerTest, StopSignsEverythingQueuedBeforeReturning) {
  constexpr int kQueued = 50;
  std::atomic<int> calls{0};
  for (int i = 0; i < kQueued; ++i) {
    signer_.Submit(Header(), [&](std::string, v1::Signature) { calls.fetch_add(1); });
  }
  signer_.Stop();
  EXPECT_EQ(calls.load(), kQueued);
  EXPECT_EQ(signer_.signed_headers(), static_cast<uint64_t>(kQueued));
  signer_.Stop();  // idempotent
}

TEST_F(BatchSignerTest, AfterStopSubmitSignsOnTheCallingThread) {
  signer_.Stop();
  bool called = false;
  v1::Signature got;
  std::string got_header;
  const std::string header = Header();
  signer_.Submit(header, [&](std::string h, v1::Signature s) {
    called = true;
    got_header = std::move(h);
    got = std::move(s);
  });
  ASSERT_TRUE(called) << "a stopped signer must sign before Submit returns";
  EXPECT_EQ(got_header, header);
  EXPECT_EQ(got.tree_size(), 1u);
  EXPECT_EQ(signer_.batches(), 1u);
  EXPECT_TRUE(VerifySignature(sender_.pub.sign_pk,
                              BatchSignedMessage(EnvelopeTag("test"), 1, LeafHash(header)),
                              SigBytes(got)));
}

}  // namespace
}  // namespace chasqui

namespace chasqui {
namespace {

class BurstSignerTest : public BatchSignerTest {};

TEST_F(BurstSignerTest, HeadersSubmittedDuringABurstAreSignedTogetherWhenItEnds) {
  std::vector<v1::Signature> sigs;
  std::vector<std::thread::id> threads;
  auto done = [&](std::string, v1::Signature s) {
    sigs.push_back(std::move(s));
    threads.push_back(std::this_thread::get_id());
  };
  for (int message = 0; message < 3; ++message) {
    BurstDelivery delivery;
    signer_.Submit(Header(), done);
    delivery.End(/*more_pending=*/message < 2);
    if (message < 2) {
      EXPECT_TRUE(sigs.empty()) << "signed before the backlog was drained";
    }
  }
  ASSERT_EQ(sigs.size(), 3u);
  for (size_t i = 0; i < sigs.size(); ++i) {
    EXPECT_EQ(sigs[i].tree_size(), 3u);
    EXPECT_EQ(sigs[i].leaf_index(), i);
    EXPECT_EQ(threads[i], std::this_thread::get_id()) << "signed on the delivering thread";
  }
  EXPECT_EQ(signer_.batches(), 1u);
}

TEST_F(BurstSignerTest, AFullTreeIsSignedWithoutWaitingForTheBurstToEnd) {
  std::atomic<int> signed_count{0};
  BurstDelivery delivery;
  for (uint32_t i = 0; i < kMaxTreeLeaves; ++i) {
    signer_.Submit(Header(), [&](std::string, v1::Signature s) {
      EXPECT_EQ(s.tree_size(), kMaxTreeLeaves);
      ++signed_count;
    });
  }
  EXPECT_EQ(signed_count.load(), static_cast<int>(kMaxTreeLeaves));
  delivery.End(/*more_pending=*/true);
}

TEST_F(BurstSignerTest, ANeverEndingBacklogStillEndsABurstEveryFewHundredMessages) {
  int signed_count = 0;
  size_t messages = 0;
  while (signed_count == 0 && messages < 10 * kMaxBurstMessages) {
    BurstDelivery delivery;
    signer_.Submit(Header(), [&](std::string, v1::Signature) { ++signed_count; });
    delivery.End(/*more_pending=*/true);
    ++messages;
  }
  // (A burst left open by an earlier test on this thread may have counted a message already.)
  EXPECT_GT(signed_count, 0) << "a backlog that never drains must not hold signatures forever";
  EXPECT_LE(messages, kMaxBurstMessages);
  EXPECT_EQ(signed_count, static_cast<int>(messages));
}

}  // namespace
}  // namespace chasqui
