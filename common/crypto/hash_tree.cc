#include "common/crypto/hash_tree.h"

#include <sodium.h>

#include <utility>

#include "common/core/status.h"

namespace chasqui {

Hash32 LeafHash(std::string_view data) {
  Hash32 out;
  crypto_hash_sha256_state st;
  const uint8_t prefix = 0x00;
  crypto_hash_sha256_init(&st);
  crypto_hash_sha256_update(&st, &prefix, 1);
  crypto_hash_sha256_update(&st, reinterpret_cast<const uint8_t*>(data.data()), data.size());
  crypto_hash_sha256_final(&st, out.data());
  return out;
}

Hash32 NodeHash(const Hash32& left, const Hash32& right) {
  uint8_t buf[65];
  buf[0] = 0x01;
  std::copy(left.begin(), left.end(), buf + 1);
  std::copy(right.begin(), right.end(), buf + 33);
  Hash32 out;
  crypto_hash_sha256(out.data(), buf, sizeof buf);
  return out;
}

HashTree::HashTree(std::vector<Hash32> leaves) {
  CHASQUI_CHECK(!leaves.empty() && leaves.size() <= kMaxTreeLeaves, "hash tree size out of range");
  levels_.push_back(std::move(leaves));
  while (levels_.back().size() > 1) {
    const std::vector<Hash32>& below = levels_.back();
    std::vector<Hash32> up;
    up.reserve((below.size() + 1) / 2);
    for (size_t i = 0; i + 1 < below.size(); i += 2) up.push_back(NodeHash(below[i], below[i + 1]));
    if (below.size() % 2 == 1) up.push_back(below.back());
    levels_.push_back(std::move(up));
  }
}

std::vector<Hash32> HashTree::Path(uint32_t index) const {
  CHASQUI_CHECK(index < size(), "leaf index out of range");
  std::vector<Hash32> path;
  size_t i = index;
  for (size_t level = 0; level + 1 < levels_.size(); ++level) {
    const std::vector<Hash32>& nodes = levels_[level];
    const size_t sibling = i ^ 1;
    if (sibling < nodes.size()) path.push_back(nodes[sibling]);
    i /= 2;
  }
  return path;
}

std::optional<Hash32> RootFromPath(const Hash32& leaf, uint32_t index, uint32_t tree_size,
                                   const std::vector<Hash32>& path) {
  if (tree_size == 0 || tree_size > kMaxTreeLeaves || index >= tree_size ||
      path.size() > kMaxPathLength) {
    return std::nullopt;
  }
  uint32_t fn = index;
  uint32_t sn = tree_size - 1;
  Hash32 r = leaf;
  for (const Hash32& p : path) {
    if (sn == 0) return std::nullopt;
    if ((fn & 1) == 1 || fn == sn) {
      r = NodeHash(p, r);
      if ((fn & 1) == 0) {
        while ((fn & 1) == 0 && fn != 0) {
          fn >>= 1;
          sn >>= 1;
        }
      }
    } else {
      r = NodeHash(r, p);
    }
    fn >>= 1;
    sn >>= 1;
  }
  if (sn != 0) return std::nullopt;
  return r;
}

}  // namespace chasqui
