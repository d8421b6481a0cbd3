#include "common/crypto/hash_tree.h"

#include <sodium.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace chasqui {
namespace {

// An independent, deliberately naive RFC 6962 section 2.1 implementation: SHA-256 straight
// from libsodium, MTH and PATH exactly as the RFC's recursive definitions read.
Hash32 Sha256(std::string_view bytes) {
  Hash32 out;
  crypto_hash_sha256(out.data(), reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  return out;
}

std::string Bytes(const Hash32& h) { return std::string(AsView(h)); }

class ReferenceTree {
 public:
  explicit ReferenceTree(std::vector<std::string> data) : data_(std::move(data)) {}

  // MTH({d0}) = SHA-256(0x00 || d0); MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))
  // with k the largest power of two smaller than n.
  Hash32 Mth(size_t begin, size_t end) {
    auto key = std::make_pair(begin, end);
    if (auto it = memo_.find(key); it != memo_.end()) return it->second;
    Hash32 h;
    const size_t n = end - begin;
    if (n == 1) {
      h = Sha256(std::string(1, '\x00') + data_[begin]);
    } else {
      const size_t k = LargestPowerOfTwoBelow(n);
      h = Sha256(std::string(1, '\x01') + Bytes(Mth(begin, begin + k)) +
                 Bytes(Mth(begin + k, end)));
    }
    memo_.emplace(key, h);
    return h;
  }
  Hash32 Root() { return Mth(0, data_.size()); }

  // PATH(m, D[n]): PATH(m, D[0:k]) : MTH(D[k:n]) if m < k, else PATH(m - k, D[k:n]) : MTH(D[0:k]).
  std::vector<Hash32> Path(size_t m, size_t begin, size_t end) {
    const size_t n = end - begin;
    if (n == 1) return {};
    const size_t k = LargestPowerOfTwoBelow(n);
    std::vector<Hash32> path;
    if (m < k) {
      path = Path(m, begin, begin + k);
      path.push_back(Mth(begin + k, end));
    } else {
      path = Path(m - k, begin + k, end);
      path.push_back(Mth(begin, begin + k));
    }
    return path;
  }
  std::vector<Hash32> Path(size_t m) { return Path(m, 0, data_.size()); }

 private:
  static size_t LargestPowerOfTwoBelow(size_t n) {
    size_t k = 1;
    while (k * 2 < n) k *= 2;
    return k;
  }
  std::vector<std::string> data_;
  std::map<std::pair<size_t, size_t>, Hash32> memo_;
};

std::vector<std::string> LeafData(size_t n) {
  std::vector<std::string> data;
  for (size_t i = 0; i < n; ++i) data.push_back("header #" + std::to_string(i));
  return data;
}

std::vector<Hash32> LeafHashes(const std::vector<std::string>& data) {
  std::vector<Hash32> leaves;
  for (const std::string& d : data) leaves.push_back(LeafHash(d));
  return leaves;
}

std::vector<uint32_t> SizesToCheck() {
  std::vector<uint32_t> sizes;
  for (uint32_t n = 1; n <= 70; ++n) sizes.push_back(n);
  for (uint32_t n : {100u, 127u, 128u, 129u, 255u, 256u, 257u, 511u, 1000u, 1023u, 1024u}) {
    sizes.push_back(n);
  }
  return sizes;
}

TEST(HashTreeTest, LeafAndNodeHashesAreRfc6962) {
  EXPECT_EQ(LeafHash("abc"), Sha256(std::string("\x00"
                                                "abc",
                                                4)));
  const Hash32 l = LeafHash("l");
  const Hash32 r = LeafHash("r");
  EXPECT_EQ(NodeHash(l, r), Sha256("\x01" + Bytes(l) + Bytes(r)));
  EXPECT_NE(NodeHash(l, r), NodeHash(r, l));
  // The empty leaf is SHA-256(0x00), the RFC 9162 test value.
  EXPECT_EQ(ToHex(AsView(LeafHash(""))),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d");
}

TEST(HashTreeTest, RootAndEveryPathMatchTheRfcDefinitions) {
  for (uint32_t n : SizesToCheck()) {
    const std::vector<std::string> data = LeafData(n);
    ReferenceTree ref(data);
    const HashTree tree(LeafHashes(data));
    ASSERT_EQ(tree.size(), n);
    ASSERT_EQ(tree.root(), ref.Root()) << "size " << n;
    for (uint32_t i = 0; i < n; ++i) {
      ASSERT_EQ(tree.Path(i), ref.Path(i)) << "size " << n << " leaf " << i;
    }
  }
}

TEST(HashTreeTest, PathLengthIsBounded) {
  const HashTree tree(LeafHashes(LeafData(kMaxTreeLeaves)));
  for (uint32_t i = 0; i < kMaxTreeLeaves; ++i) EXPECT_EQ(tree.Path(i).size(), kMaxPathLength);
  const HashTree one(LeafHashes(LeafData(1)));
  EXPECT_TRUE(one.Path(0).empty());
  EXPECT_EQ(one.root(), LeafHash("header #0"));
}

TEST(RootFromPathTest, RecoversTheRootForEveryLeaf) {
  for (uint32_t n : SizesToCheck()) {
    const std::vector<Hash32> leaves = LeafHashes(LeafData(n));
    const HashTree tree(leaves);
    for (uint32_t i = 0; i < n; ++i) {
      auto root = RootFromPath(leaves[i], i, n, tree.Path(i));
      ASSERT_TRUE(root.has_value()) << "size " << n << " leaf " << i;
      ASSERT_EQ(*root, tree.root()) << "size " << n << " leaf " << i;
    }
  }
}

// The last leaf of a tree whose size is not a power of two has a shorter path whose nodes
// come from several levels: the case naive verifiers get wrong.
TEST(RootFromPathTest, RecoversTheRootForRightEdgeLeaves) {
  for (uint32_t n : {3u, 5u, 6u, 7u, 9u, 11u, 13u, 15u, 17u, 31u, 33u, 63u, 65u, 100u, 255u, 257u,
                     1000u, 1023u}) {
    const std::vector<std::string> data = LeafData(n);
    const std::vector<Hash32> leaves = LeafHashes(data);
    ReferenceTree ref(data);
    for (uint32_t i : {n - 1, n - 2}) {
      const std::vector<Hash32> path = ref.Path(i);
      auto root = RootFromPath(leaves[i], i, n, path);
      ASSERT_TRUE(root.has_value()) << "size " << n << " leaf " << i;
      EXPECT_EQ(*root, ref.Root()) << "size " << n << " leaf " << i;
    }
  }
}

// A proof that does not hold must give no root or another root; never the real one.
void ExpectNotTheRoot(const std::optional<Hash32>& got, const Hash32& root,
                      const std::string& what) {
  EXPECT_TRUE(!got.has_value() || *got != root) << what;
}

TEST(RootFromPathTest, RefusesAnotherIndex) {
  for (uint32_t n : {2u, 3u, 5u, 8u, 13u, 64u, 100u}) {
    const std::vector<Hash32> leaves = LeafHashes(LeafData(n));
    const HashTree tree(leaves);
    for (uint32_t i = 0; i < n; ++i) {
      const std::vector<Hash32> path = tree.Path(i);
      for (uint32_t j = 0; j < n; ++j) {
        if (j == i) continue;
        ExpectNotTheRoot(RootFromPath(leaves[i], j, n, path), tree.root(),
                         "size " + std::to_string(n) + " leaf " + std::to_string(i) +
                             " claimed as " + std::to_string(j));
      }
    }
  }
}

TEST(RootFromPathTest, RefusesIndexOutsideTheTree) {
  const std::vector<Hash32> leaves = LeafHashes(LeafData(5));
  const HashTree tree(leaves);
  EXPECT_FALSE(RootFromPath(leaves[4], 5, 5, tree.Path(4)).has_value());
  EXPECT_FALSE(RootFromPath(leaves[4], 6, 5, tree.Path(4)).has_value());
  EXPECT_FALSE(RootFromPath(leaves[0], 0xffffffffu, 5, tree.Path(0)).has_value());
}

TEST(RootFromPathTest, RefusesSizeZeroAndOversizeTrees) {
  const std::vector<Hash32> leaves = LeafHashes(LeafData(kMaxTreeLeaves));
  const HashTree tree(leaves);
  EXPECT_FALSE(RootFromPath(leaves[0], 0, 0, {}).has_value());
  EXPECT_FALSE(RootFromPath(leaves[0], 0, 0, tree.Path(0)).has_value());
  EXPECT_FALSE(RootFromPath(leaves[0], 0, kMaxTreeLeaves + 1, tree.Path(0)).has_value());
  std::vector<Hash32> longer = tree.Path(0);
  longer.push_back(leaves[1]);
  EXPECT_FALSE(RootFromPath(leaves[0], 0, 2048, longer).has_value());
  EXPECT_FALSE(RootFromPath(leaves[0], 0, 0xffffffffu, longer).has_value());
  // 1024 itself is allowed.
  EXPECT_EQ(RootFromPath(leaves[1023], 1023, kMaxTreeLeaves, tree.Path(1023)), tree.root());
}

TEST(RootFromPathTest, RefusesAPathOneNodeTooLongOrTooShort) {
  for (uint32_t n : {1u, 2u, 3u, 4u, 5u, 7u, 8u, 9u, 100u, 1000u, 1024u}) {
    const std::vector<Hash32> leaves = LeafHashes(LeafData(n));
    const HashTree tree(leaves);
    for (uint32_t i = 0; i < n; ++i) {
      const std::string what = "size " + std::to_string(n) + " leaf " + std::to_string(i);
      std::vector<Hash32> longer = tree.Path(i);
      longer.push_back(leaves[0]);
      EXPECT_FALSE(RootFromPath(leaves[i], i, n, longer).has_value()) << what << " longer";
      std::vector<Hash32> front = tree.Path(i);
      front.insert(front.begin(), leaves[i]);
      EXPECT_FALSE(RootFromPath(leaves[i], i, n, front).has_value()) << what << " longer front";
      std::vector<Hash32> shorter = tree.Path(i);
      if (shorter.empty()) continue;
      shorter.pop_back();
      EXPECT_FALSE(RootFromPath(leaves[i], i, n, shorter).has_value()) << what << " shorter";
      std::vector<Hash32> shorter_front = tree.Path(i);
      shorter_front.erase(shorter_front.begin());
      EXPECT_FALSE(RootFromPath(leaves[i], i, n, shorter_front).has_value())
          << what << " shorter front";
    }
  }
}

TEST(RootFromPathTest, RefusesAnAlteredOrSwappedPathNode) {
  for (uint32_t n : {2u, 3u, 4u, 7u, 12u, 100u, 257u}) {
    const std::vector<Hash32> leaves = LeafHashes(LeafData(n));
    const HashTree tree(leaves);
    for (uint32_t i = 0; i < n; ++i) {
      const std::vector<Hash32> path = tree.Path(i);
      const std::string what = "size " + std::to_string(n) + " leaf " + std::to_string(i);
      for (size_t k = 0; k < path.size(); ++k) {
        std::vector<Hash32> altered = path;
        altered[k][0] ^= 1;
        ExpectNotTheRoot(RootFromPath(leaves[i], i, n, altered), tree.root(), what + " altered");
        for (size_t m = k + 1; m < path.size(); ++m) {
          std::vector<Hash32> swapped = path;
          std::swap(swapped[k], swapped[m]);
          ExpectNotTheRoot(RootFromPath(leaves[i], i, n, swapped), tree.root(), what + " swapped");
        }
      }
      Hash32 leaf = leaves[i];
      leaf[31] ^= 1;
      ExpectNotTheRoot(RootFromPath(leaf, i, n, path), tree.root(), what + " altered leaf");
    }
  }
}

TEST(RootFromPathTest, RefusesThePathOfAnotherLeaf) {
  for (uint32_t n : {2u, 3u, 5u, 8u, 13u, 64u, 100u}) {
    const std::vector<Hash32> leaves = LeafHashes(LeafData(n));
    const HashTree tree(leaves);
    for (uint32_t i = 0; i < n; ++i) {
      for (uint32_t j = 0; j < n; ++j) {
        if (j == i) continue;
        const std::string what = "size " + std::to_string(n) + " leaf " + std::to_string(i) +
                                 " with the path of " + std::to_string(j);
        ExpectNotTheRoot(RootFromPath(leaves[i], i, n, tree.Path(j)), tree.root(), what);
        ExpectNotTheRoot(RootFromPath(leaves[i], j, n, tree.Path(j)), tree.root(), what);
      }
    }
  }
}

}  // namespace
}  // namespace chasqui
