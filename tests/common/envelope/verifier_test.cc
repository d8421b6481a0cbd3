#include "common/envelope/verifier.h"

#include <string>
#include <utility>
#include <vector>

#include "common/core/clock.h"
#include "common/core/status.h"
#include "common/envelope/batch_signer.h"
#include "common/envelope/errors.h"
#include "common/envelope/identity.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/common/envelope/envelope_fixtures.h"

namespace chasqui {
namespace {

using ::chasqui::testing::RequestHeader;
using ::chasqui::testing::SignBatch;
using ::chasqui::testing::SignOne;
using ::testing::HasSubstr;

constexpr int64_t kTtlMs = 30'000;

ParsedEnvelope MustParse(const std::string& wire) {
  auto parsed = ParseEnvelope(wire);
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return parsed.ok() ? *std::move(parsed) : ParsedEnvelope{};
}

void ExpectUnauthenticated(const absl::Status& s, std::string_view expected) {
  ASSERT_FALSE(s.ok()) << "verified; expected a refusal mentioning " << expected;
  EXPECT_EQ(ChasquiCode(s), v1::UNAUTHENTICATED) << s;
  EXPECT_THAT(std::string(MessageOf(s)), HasSubstr(std::string(expected)));
}

class VerifierTest : public ::testing::Test {
 protected:
  // Three envelopes signed as one batch, to consumers segip, sedem and segip.
  std::vector<std::string> Batch3() {
    std::vector<std::pair<v1::Header, std::string>> items;
    for (const char* consumer : {"segip", "sedem", "segip"}) {
      v1::Header h = RequestHeader(sender_.pub.serial);
      h.set_consumer(consumer);
      items.emplace_back(std::move(h), std::string("body for ") + consumer);
    }
    std::vector<std::string> wires = SignBatch(signer_, std::move(items), sender_.pub.serial);
    for (const std::string& w : wires) EXPECT_EQ(MustParse(w).envelope.sig().tree_size(), 3u);
    return wires;
  }

  absl::Status Verify(const std::string& wire) {
    return verifier_.Verify(MustParse(wire), sender_.pub);
  }

  FakeClock clock_;
  RootCache cache_{clock_, kTtlMs};
  EnvelopeVerifier verifier_{"test", &cache_};
  Identity sender_ = GenerateIdentity("segip", "test", Role::kEntity);
  Identity other_ = GenerateIdentity("sedem", "test", Role::kEntity);
  BatchSigner signer_{sender_.sign, EnvelopeTag("test")};
};

TEST_F(VerifierTest, AValidEnvelopeVerifies) {
  const absl::Status s = Verify(SignOne(signer_, RequestHeader(sender_.pub.serial)));
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(cache_.misses(), 1u);
  EXPECT_EQ(cache_.hits(), 0u);
}

TEST_F(VerifierTest, EveryEnvelopeOfABatchVerifiesWithOneSignatureCheck) {
  const std::vector<std::string> wires = Batch3();
  ASSERT_TRUE(Verify(wires[0]).ok());
  EXPECT_EQ(cache_.misses(), 1u);
  EXPECT_EQ(cache_.hits(), 0u);
  ASSERT_TRUE(Verify(wires[1]).ok());
  EXPECT_EQ(cache_.hits(), 1u);
  ASSERT_TRUE(Verify(wires[2]).ok());
  EXPECT_EQ(cache_.hits(), 2u);
  EXPECT_EQ(cache_.misses(), 1u);
}

TEST_F(VerifierTest, ACachedRootWithOtherSignatureBytesIsNotAHit) {
  const std::vector<std::string> wires = Batch3();
  ASSERT_TRUE(Verify(wires[0]).ok());
  v1::Envelope e;
  ASSERT_TRUE(e.ParseFromString(wires[1]));
  for (size_t i : {0, 31, 63}) {
    v1::Envelope bad = e;
    (*bad.mutable_sig()->mutable_root_signature())[i] ^= 0x01;
    ExpectUnauthenticated(Verify(bad.SerializeAsString()), "bad signature");
  }
  // Another genuine signature of the same key over something else does not fit either.
  v1::Envelope foreign = e;
  const SignatureBytes sig = sender_.sign.Sign("something else");
  foreign.mutable_sig()->mutable_root_signature()->assign(reinterpret_cast<const char*>(sig.data()),
                                                          sig.size());
  ExpectUnauthenticated(Verify(foreign.SerializeAsString()), "bad signature");
  EXPECT_EQ(cache_.hits(), 0u);
  // The refusals did not disturb the cached root.
  ASSERT_TRUE(Verify(wires[1]).ok());
  EXPECT_EQ(cache_.hits(), 1u);
}

TEST_F(VerifierTest, ASignatureForTestDoesNotPassInProd) {
  // A test-environment signer whose header claims prod.
  v1::Header h = RequestHeader(sender_.pub.serial, "prod");
  const std::string wire = SignOne(signer_, h);
  RootCache prod_cache(clock_, kTtlMs);
  EnvelopeVerifier prod(std::string_view("prod"), &prod_cache);
  ExpectUnauthenticated(prod.Verify(MustParse(wire), sender_.pub), "bad signature");
  // Where the tag they were signed for is in force, the header's env still has to match.
  ExpectUnauthenticated(Verify(wire), "another environment");

  // And the other way round.
  BatchSigner prod_signer(sender_.sign, EnvelopeTag("prod"));
  const std::string prod_wire = SignOne(prod_signer, RequestHeader(sender_.pub.serial, "test"));
  RootCache test_cache(clock_, kTtlMs);
  EnvelopeVerifier test(std::string_view("test"), &test_cache);
  ExpectUnauthenticated(test.Verify(MustParse(prod_wire), sender_.pub), "bad signature");
  ExpectUnauthenticated(prod.Verify(MustParse(prod_wire), sender_.pub), "another environment");
  // Tag and header agreeing, prod verifies prod.
  const std::string good = SignOne(prod_signer, RequestHeader(sender_.pub.serial, "prod"));
  EXPECT_TRUE(prod.Verify(MustParse(good), sender_.pub).ok());
}

TEST_F(VerifierTest, TheWrongSignerFails) {
  const std::string wire = SignOne(signer_, RequestHeader(sender_.pub.serial));
  // Checked against another identity than the one sender_cert names.
  ExpectUnauthenticated(verifier_.Verify(MustParse(wire), other_.pub),
                        "sender_cert does not name the expected signer");
  // sender_cert names another serial, but sender_ signed: other_'s key does not verify it.
  const std::string claimed = SignOne(signer_, RequestHeader(other_.pub.serial));
  ExpectUnauthenticated(verifier_.Verify(MustParse(claimed), other_.pub), "bad signature");
}

TEST_F(VerifierTest, ATamperedHeaderByteFails) {
  const std::string wire = SignOne(signer_, RequestHeader(sender_.pub.serial));
  ASSERT_TRUE(Verify(wire).ok());  // its root is cached now
  v1::Envelope e;
  ASSERT_TRUE(e.ParseFromString(wire));
  int verified_refusals = 0;
  for (size_t i = 0; i < e.header().size(); ++i) {
    for (uint8_t bit : {0x01, 0x20}) {
      v1::Envelope bad = e;
      (*bad.mutable_header())[i] ^= static_cast<char>(bit);
      auto parsed = ParseEnvelope(bad.SerializeAsString());
      if (!parsed.ok()) continue;  // refused earlier, as a bad request
      // A flip inside sender_cert makes the header name another signer: also a refusal.
      const absl::Status s = verifier_.Verify(*parsed, sender_.pub);
      ASSERT_FALSE(s.ok()) << "byte " << i << " bit " << int(bit);
      EXPECT_EQ(ChasquiCode(s), v1::UNAUTHENTICATED);
      ++verified_refusals;
    }
  }
  EXPECT_GT(verified_refusals, 20);  // the text fields alone give that many well-formed edits
}

TEST_F(VerifierTest, ATamperedBodyFails) {
  const std::string wire = SignOne(signer_, RequestHeader(sender_.pub.serial), "original body");
  for (bool warm : {false, true}) {
    SCOPED_TRACE(warm ? "root cached" : "cold cache");
    ParsedEnvelope p = MustParse(wire);
    p.envelope.set_body("original bodY");
    ExpectUnauthenticated(verifier_.Verify(p, sender_.pub),
                          "the body does not match the signed body_hash");
    p.envelope.set_body("");
    ExpectUnauthenticated(verifier_.Verify(p, sender_.pub), "body_hash");
  }
}

TEST_F(VerifierTest, ASplicedLeafFails) {
  const std::vector<std::string> wires = Batch3();
  for (const std::string& w : wires) ASSERT_TRUE(Verify(w).ok());  // the root is cached
  const ParsedEnvelope to_segip = MustParse(wires[0]);
  const ParsedEnvelope to_sedem = MustParse(wires[1]);

  // sedem's header with segip's signature (index and path).
  ParsedEnvelope spliced = to_sedem;
  *spliced.envelope.mutable_sig() = to_segip.envelope.sig();
  ExpectUnauthenticated(verifier_.Verify(spliced, sender_.pub), "");

  // sedem's header with segip's path but its own index.
  spliced = to_sedem;
  spliced.envelope.mutable_sig()->mutable_path()->CopyFrom(to_segip.envelope.sig().path());
  ExpectUnauthenticated(verifier_.Verify(spliced, sender_.pub), "");

  // segip's header re-addressed to another consumer, keeping its own signature.
  v1::Header readdressed = to_segip.header;
  readdressed.set_consumer("otra-entidad");
  ParsedEnvelope moved = MustParse(chasqui::testing::WithHeader(wires[0], readdressed));
  ExpectUnauthenticated(verifier_.Verify(moved, sender_.pub), "");
  // ... or with the signature of the leaf that does name another consumer.
  *moved.envelope.mutable_sig() = to_sedem.envelope.sig();
  ExpectUnauthenticated(verifier_.Verify(moved, sender_.pub), "");
}

// The batch signature covers tree_size. A path may imply the same root under another
// tree_size (the last leaf of 3 has the path a leaf of 2 would have), so a cache hit must
// not let an envelope through that a cold verifier refuses.
TEST_F(VerifierTest, ACacheHitRequiresTheSignedTreeSize) {
  const std::vector<std::string> wires = Batch3();
  ParsedEnvelope resized = MustParse(wires[2]);
  ASSERT_EQ(resized.envelope.sig().leaf_index(), 2u);
  resized.envelope.mutable_sig()->set_tree_size(2);
  resized.envelope.mutable_sig()->set_leaf_index(1);

  RootCache cold_cache(clock_, kTtlMs);
  EnvelopeVerifier cold(std::string_view("test"), &cold_cache);
  ExpectUnauthenticated(cold.Verify(resized, sender_.pub), "bad signature");

  ASSERT_TRUE(Verify(wires[2]).ok());
  const absl::Status warm = verifier_.Verify(resized, sender_.pub);
  EXPECT_FALSE(warm.ok()) << "a cached root accepted a tree_size its signature does not cover";
}

TEST_F(VerifierTest, ForgetSignerDropsItsRoots) {
  const std::vector<std::string> wires = Batch3();
  ASSERT_TRUE(Verify(wires[0]).ok());
  cache_.ForgetSigner(other_.pub.serial);  // someone else's revocation changes nothing
  ASSERT_TRUE(Verify(wires[1]).ok());
  EXPECT_EQ(cache_.hits(), 1u);
  cache_.ForgetSigner(sender_.pub.serial);
  ASSERT_TRUE(Verify(wires[2]).ok());  // still a valid signature, but checked again
  EXPECT_EQ(cache_.hits(), 1u);
  EXPECT_EQ(cache_.misses(), 2u);
}

TEST_F(VerifierTest, CachedRootsExpireAfterTheTtl) {
  const std::vector<std::string> wires = Batch3();
  ASSERT_TRUE(Verify(wires[0]).ok());
  clock_.AdvanceMillis(kTtlMs);
  ASSERT_TRUE(Verify(wires[1]).ok());
  EXPECT_EQ(cache_.hits(), 0u) << "a root verified one TTL ago was still a hit";
  EXPECT_EQ(cache_.misses(), 2u);
}

// ---- RootCache on its own

class RootCacheTest : public ::testing::Test {
 protected:
  static Hash32 Root(uint8_t n) {
    Hash32 r{};
    r[0] = n;
    return r;
  }
  static SignatureBytes Sig(uint8_t n) {
    SignatureBytes s{};
    s[63] = n;
    return s;
  }
  FakeClock clock_;
};

TEST_F(RootCacheTest, AHitNeedsSerialRootAndSignatureBytes) {
  RootCache cache(clock_, kTtlMs);
  cache.Insert(7, 1, Root(1), Sig(1));
  EXPECT_TRUE(cache.Contains(7, 1, Root(1), Sig(1)));
  EXPECT_FALSE(cache.Contains(8, 1, Root(1), Sig(1)));
  EXPECT_FALSE(cache.Contains(7, 1, Root(2), Sig(1)));
  EXPECT_FALSE(cache.Contains(7, 1, Root(1), Sig(2)));
  EXPECT_FALSE(cache.Contains(7, 2, Root(1), Sig(1)));  // the signature covers the size
  EXPECT_EQ(cache.hits(), 1u);
  EXPECT_EQ(cache.misses(), 4u);
}

TEST_F(RootCacheTest, AnEntryIsGoneOneTtlLaterWithoutTraffic) {
  RootCache cache(clock_, kTtlMs);
  cache.Insert(7, 1, Root(1), Sig(1));
  clock_.AdvanceMillis(kTtlMs);
  EXPECT_FALSE(cache.Contains(7, 1, Root(1), Sig(1)));
}

// Whatever the traffic, no entry answers once it is a TTL old, and each answers for half a TTL.
TEST_F(RootCacheTest, NoEntryOutlivesTheTtlWhateverTheTraffic) {
  constexpr int64_t kTtl = 100;
  for (int64_t step : {1, 7, 33, 49, 50, 51, 99, 100}) {
    for (int64_t inserted_at = 0; inserted_at < 2 * kTtl; inserted_at += 3) {
      SCOPED_TRACE("step " + std::to_string(step) + " inserted at " + std::to_string(inserted_at));
      FakeClock clock;
      RootCache cache(clock, kTtl);
      for (int64_t t = 0; t < inserted_at; t += step) {
        cache.Insert(1, 1, Root(static_cast<uint8_t>(t)), Sig(1));  // other traffic
        clock.AdvanceMillis(std::min(step, inserted_at - t));
      }
      cache.Insert(7, 1, Root(200), Sig(200));
      ASSERT_TRUE(cache.Contains(7, 1, Root(200), Sig(200)));
      for (int64_t age = step; age <= 3 * kTtl; age += step) {
        clock.AdvanceMillis(step);
        const bool hit = cache.Contains(7, 1, Root(200), Sig(200));
        if (age >= kTtl) {
          ASSERT_FALSE(hit) << "hit at age " << age;
        } else if (age < kTtl / 2) {
          ASSERT_TRUE(hit) << "a cache that forgets this early saves no verify; age " << age;
        }
      }
    }
  }
}

TEST_F(RootCacheTest, SizeIsBounded) {
  RootCache cache(clock_, kTtlMs, /*max_entries=*/8);
  for (uint8_t i = 0; i < 40; ++i) cache.Insert(7, 1, Root(i), Sig(i));
  EXPECT_TRUE(cache.Contains(7, 1, Root(39), Sig(39)));
  EXPECT_FALSE(cache.Contains(7, 1, Root(0), Sig(0)));
}

}  // namespace
}  // namespace chasqui
