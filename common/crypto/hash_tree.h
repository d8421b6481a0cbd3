#pragma once
// RFC 6962 / RFC 9162 Merkle tree hashing over SHA-256, for batch signatures.
// Leaf hash = H(0x00 || data), node hash = H(0x01 || left || right). A tree of n leaves is the
// RFC's left-balanced tree: built level by level, an unpaired last node moves up unchanged.

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "common/crypto/sodium.h"

namespace chasqui {

inline constexpr uint32_t kMaxTreeLeaves = 1024;
inline constexpr size_t kMaxPathLength = 10;  // ceil(log2(1024))

Hash32 LeafHash(std::string_view data);
Hash32 NodeHash(const Hash32& left, const Hash32& right);

// All levels of one tree, so every leaf's path costs no hashing. Not thread-safe.
class HashTree {
 public:
  // Requires 1 <= leaves.size() <= kMaxTreeLeaves.
  explicit HashTree(std::vector<Hash32> leaves);
  uint32_t size() const { return static_cast<uint32_t>(levels_[0].size()); }
  const Hash32& root() const { return levels_.back()[0]; }
  // The audit path of leaf `index`, bottom-up (RFC 9162 section 2.1.3.1).
  std::vector<Hash32> Path(uint32_t index) const;

 private:
  std::vector<std::vector<Hash32>> levels_;
};

// The root implied by a leaf, its index, the tree size and its path (RFC 9162 2.1.3.2), or
// nullopt if the path cannot belong to such a tree (wrong length, index out of range).
std::optional<Hash32> RootFromPath(const Hash32& leaf, uint32_t index, uint32_t tree_size,
                                   const std::vector<Hash32>& path);

}  // namespace chasqui
