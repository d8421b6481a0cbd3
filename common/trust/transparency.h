#pragma once
// The transparency log's hash chain (crypto.proto, TransparencyLogEntry): anyone holding the
// entries can check that none was altered, dropped or reordered.

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "chasqui/v1/crypto.pb.h"
#include "common/crypto/sodium.h"

namespace chasqui {

Hash32 TransparencyEntryHash(uint64_t sequence, std::string_view prev_hash, int64_t logged_at_ms,
                             std::string_view certificate);

// Checks consecutive entries starting after `prev_hash` (32 zero bytes before entry 1) and
// `prev_sequence` (0 before entry 1). DataLoss naming the first entry that does not chain.
absl::Status VerifyTransparencyChain(const std::vector<v1::TransparencyLogEntry>& entries,
                                     uint64_t prev_sequence, std::string_view prev_hash);

}  // namespace chasqui
