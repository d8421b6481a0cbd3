#include "common/trust/transparency.h"

#include <string>

#include "fmt/format.h"

namespace chasqui {
namespace {
void PutU64(std::string& out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>(v >> shift));
}
}  // namespace

Hash32 TransparencyEntryHash(uint64_t sequence, std::string_view prev_hash, int64_t logged_at_ms,
                             std::string_view certificate) {
  std::string m = "chasqui/v1/transparency";
  m.push_back('\0');
  PutU64(m, sequence);
  m.append(prev_hash);
  PutU64(m, static_cast<uint64_t>(logged_at_ms));
  m.append(certificate);
  return Blake2b256(m);
}

absl::Status VerifyTransparencyChain(const std::vector<v1::TransparencyLogEntry>& entries,
                                     uint64_t prev_sequence, std::string_view prev_hash) {
  std::string prev(prev_hash);
  uint64_t seq = prev_sequence;
  for (const v1::TransparencyLogEntry& e : entries) {
    const Hash32 h =
        TransparencyEntryHash(e.sequence(), e.prev_hash(), e.logged_at_ms(), e.certificate());
    if (e.sequence() != seq + 1 || e.prev_hash() != prev || e.entry_hash() != AsView(h)) {
      return absl::DataLossError(fmt::format(
          "transparency log: entry {} does not chain to entry {}", e.sequence(), seq));
    }
    seq = e.sequence();
    prev = e.entry_hash();
  }
  return absl::OkStatus();
}

}  // namespace chasqui
