#pragma once
// Re-walks the audit chain in a KvStore and names the first record that breaks it
// (`chasqui-audit verify`). It tells tampering (values that no longer chain) from storage
// corruption (RocksDB's own checksums failed: KvStore's DataLoss), since the two call for
// different responses: an investigation versus a restore from backup.
//
// What each finding means, at the first record where the walk stops:
//   kChanged     the record's bytes no longer match its own hash, or (when it was re-hashed)
//                the next record's link; its seq label was altered
//   kRemoved     a seq is missing, or the records after it were renumbered down
//   kInserted    a record that is not in the original chain sits between two that link
//   kReordered   a record stands before one it links to
//   kTruncated   records at the end are gone (the head marker or a checkpoint lies beyond)
//   kRewritten   the records chain, but not to the signed head of a checkpoint (the whole
//                suffix was re-hashed); first_bad_seq is the first seq after the last
//                checkpoint that still matches
//   kBadCheckpoint a checkpoint's signature does not verify with the trusted key
//   kBadCertificate a `certificate` entry (a certificate the crypto service logged as issued)
//                does not verify against the pinned roots as of the time it was logged (root
//                not pinned or not valid then, another env, bad root signature, not valid then)
//                or its log entry does not hold; the detail names the seq, the serial and why.
//                Only checked with certificate_roots, and reported only for an otherwise
//                intact chain (tampering comes first); first_bad_seq is the first such record
//   kStorageCorruption RocksDB reported corruption; first_bad_seq is where the walk was
// A pruned store (m/pruned, audit_retention.h) is walked from its marker's first_seq, linked
// to the marker's genesis hash, which the checkpoint kept at first_seq - 1 signs.
// Not thread-safe with respect to the store's writer: run it on a stopped service's store
// (KvStore's lock refuses a second opener).

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/envelope/identity.h"
#include "common/store/kv_store.h"
#include "common/trust/anchors.h"

namespace chasqui::audit {

enum class Finding {
  kIntact,
  kChanged,
  kRemoved,
  kInserted,
  kReordered,
  kTruncated,
  kRewritten,
  kBadCheckpoint,
  kBadCertificate,
  kStorageCorruption,
};
std::string_view FindingName(Finding finding);

struct VerifyOptions {
  std::string env = "test";  // checkpoint tags are built from this, never from the store
  uint64_t from = 1;         // first seq to check; its predecessor's stored hash is the anchor
  uint64_t to = 0;           // last seq to check; 0 = the end of the chain
  // The key a checkpoint's signer_serial names, or null if unknown. Unset: signatures are not
  // checked (the report says so).
  std::function<const PublicIdentity*(uint64_t serial)> checkpoint_key;
  // The pinned roots that checkpoints signed by the crypto service (Checkpoint.statement) are
  // verified against; null: such checkpoints are not trusted when signatures are checked.
  // Signatures are checked when either this or checkpoint_key is set.
  const TrustAnchors* checkpoint_roots = nullptr;
  // The pinned roots each recorded certificate must verify against (at its logged_at_ms, for
  // `env`); null: certificates are not checked (the report's certificates_checked stays 0).
  const TrustAnchors* certificate_roots = nullptr;
};

struct VerifyReport {
  Finding finding = Finding::kIntact;
  uint64_t first_bad_seq = 0;  // 0 when intact
  std::string detail;          // one line for people
  uint64_t records_checked = 0;
  uint64_t last_seq = 0;       // the last record seen
  uint64_t checkpoints_checked = 0;
  uint64_t checkpoint_signatures_checked = 0;
  uint64_t last_checkpoint_seq = 0;
  uint64_t certificates_checked = 0;  // certificate entries verified against certificate_roots
  uint64_t first_seq = 0;      // the first record walked (after a prune: the marker's)
  bool anchor_signed = false;  // a pruned start's genesis is signed by a kept checkpoint
};

// Errors other than corruption (Unavailable, Internal) are returned as a status; corruption
// and tampering are findings.
absl::StatusOr<VerifyReport> VerifyChain(KvStore& store, const VerifyOptions& options);

}  // namespace chasqui::audit
