#pragma once
// Retention (issue 6, "Reading it"): records older than a date leave the store only after an
// export that an auditor can verify offline.
//
//   export: the records stored before the date, up to the last checkpoint among them (so
//           every exported record is covered by a signed head), with the checkpoints that
//           cover them and, after an earlier prune, the one that signs the range's anchor.
//   verify: the export's links from its anchor (the genesis, or a signed earlier boundary)
//           to its last record, which a checkpoint in the export must sign; with a key, the
//           checkpoints' signatures. Reuses VerifyChain over a throwaway store.
//   prune:  removes exactly the range an export holds (records, their index and uniqueness
//           keys, the checkpoints below its last), after checking that the export verifies
//           and that its last record is the store's, in one synced batch with a PruneMarker
//           (m/pruned) whose genesis is the last exported record's hash; the checkpoint at
//           that record stays, so the remaining chain's start is signed.
// All of these run on a stopped service's store (KvStore's lock refuses a second opener).

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "chasqui/v1/audit.pb.h"
#include "common/store/kv_store.h"
#include "services/audit/audit_verifier.h"

namespace chasqui::audit {

// The range [first_seq, last_seq] of records an export --before `before_ms` would take.
// FailedPrecondition naming why when there is nothing to take (no record before the date, or
// no checkpoint among them yet).
struct RetentionRange {
  uint64_t first_seq = 0;
  uint64_t last_seq = 0;
  std::string anchor_hash;  // prev_hash of first_seq
};
absl::StatusOr<RetentionRange> RangeBefore(KvStore& store, int64_t before_ms);

// The export of RangeBefore(before_ms). The chain is verified first (with `verify`'s key if
// set): a tampered store is FailedPrecondition naming the finding, never exported.
absl::StatusOr<v1::AuditExport> ExportBefore(KvStore& store, int64_t before_ms,
                                             const VerifyOptions& verify, int64_t now_ms);

// Checks an export offline. `options.env` and `options.checkpoint_key` as for VerifyChain;
// from/to are ignored. Findings as VerifyChain's, plus kBadCheckpoint when no checkpoint
// signs the last record or (after a prune) the anchor. InvalidArgument if `file_bytes` is not
// an AuditExport; Internal/Unavailable if the throwaway store cannot be made.
absl::StatusOr<VerifyReport> VerifyExport(const std::string& file_bytes,
                                          const VerifyOptions& options);

// Prunes what `file_bytes` (an export of this store) holds. FailedPrecondition naming why:
// the export does not verify, it is not the range RangeBefore(before_ms) selects now, or its
// records are not this store's. Returns the number of records removed.
absl::StatusOr<uint64_t> PruneExported(KvStore& store, const std::string& file_bytes,
                                       int64_t before_ms, const VerifyOptions& verify,
                                       int64_t now_ms);

}  // namespace chasqui::audit
