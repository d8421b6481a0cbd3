#pragma once
// How the audit chain lies in its KvStore, and the bytes its hashes and signatures cover.
// One definition for the writer (AuditChain), the verifier and the queries.
//
//   r/<seq BE64>                    -> StoredRecord
//   u/<unique key>                  -> seq BE64 || link hash (32): (sender, id) uniqueness
//   c/<seq BE64>                    -> Checkpoint (signed head at seq)
//   i/<field><len-prefixed value>…<time BE64><seq BE64> -> "" (secondary indexes for queries)
//   m/head                          -> seq BE64 || link hash: the head as of the last write
//   m/pruned                        -> PruneMarker: records before its first_seq were pruned
//   a/<day><len-prefixed consumer, provider, service><outcome BE32> -> DayAggregate
//   f/<day><len-prefixed consumer><reason BE32> -> count BE64: refusals before authentication
//   n/<signer BE64><nonce>          -> expiry BE64: signed reads seen (replay memory)
//
// Everything for one group commit goes into one synced KvBatch, so the indexes, the head and
// the records never disagree after a crash.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "chasqui/v1/audit.pb.h"
#include "common/crypto/sodium.h"

namespace chasqui::audit {

inline constexpr char kRecordPrefix[] = "r/";
inline constexpr char kRecordEnd[] = "r0";  // '0' follows '/': the end of the r/ range
inline constexpr char kUniquePrefix[] = "u/";
inline constexpr char kCheckpointPrefix[] = "c/";
inline constexpr char kCheckpointEnd[] = "c0";
inline constexpr char kIndexPrefix[] = "i/";
inline constexpr char kHeadKey[] = "m/head";
inline constexpr char kPruneKey[] = "m/pruned";
inline constexpr char kAggregatePrefix[] = "a/";
inline constexpr char kAggregateEnd[] = "a0";
inline constexpr char kRefusalDayPrefix[] = "f/";
inline constexpr char kRefusalDayEnd[] = "f0";
inline constexpr char kNoncePrefix[] = "n/";
inline constexpr char kNonceEnd[] = "n0";

inline constexpr size_t kLinkHashBytes = 32;

std::string RecordKey(uint64_t seq);
std::string CheckpointKey(uint64_t seq);
// Seq from a record or checkpoint key; 0 if the key has the wrong shape.
uint64_t SeqFromKey(std::string_view key);

// The prev_hash of the first record.
std::string GenesisHash();
// BLAKE2b-256("chasqui/v1/audit-link" || prev_hash || entry_bytes).
std::string LinkHash(std::string_view prev_hash, std::string_view entry_bytes);

// The key that must be unique in the chain: (sender_cert, request_id) for a record;
// (router, consumer, reason, interval) for a refusal count.
std::string UniqueKey(const v1::ChainEntry& entry);
// seq BE64 || hash, as stored under u/ and m/head.
std::string SeqAndHash(uint64_t seq, std::string_view hash);
struct SeqHash {
  uint64_t seq = 0;
  std::string hash;
};
// InvalidArgument if `value` is not 8 + 32 bytes.
absl::StatusOr<SeqHash> ParseSeqAndHash(std::string_view value);

// Secondary index fields. Values are length-prefixed so a value never runs into the next part.
enum class IndexField : char {
  kTime = 't',          // every entry
  kConsumer = 'c',      // consumer
  kProvider = 'p',      // provider
  kService = 's',       // provider, service
  kEndUser = 'e',       // consumer, end user
  kOutcome = 'o',       // outcome (refusal counts: the reason)
  kKind = 'k',          // "certificate": certificates issued (records and counts have others)
};
// The prefix of one index value: i/<field><values…>; time and seq follow it.
std::string IndexPrefix(IndexField field, const std::vector<std::string_view>& values);
// The index keys of one entry stored under `seq`.
std::vector<std::string> IndexKeys(const v1::ChainEntry& entry, uint64_t seq);
// The time an entry is indexed under (received_at_ms, or interval_start_ms).
int64_t EntryTimeMs(const v1::ChainEntry& entry);

// The per-day aggregate of a record: day is YYYY-MM-DD in the report zone.
std::string AggregateKey(std::string_view day, const v1::AuditRecord& record);
// The first key of `day` (scan from here to AggregateDayStart of the day after).
std::string AggregateDayStart(std::string_view day);
struct AggregateKeyParts {
  std::string day;
  std::string consumer;
  std::string provider;
  std::string service;
  v1::Code outcome = v1::OK;
};
// InvalidArgument if `key` is not an aggregate key.
absl::StatusOr<AggregateKeyParts> ParseAggregateKey(std::string_view key);

// The per-day refusal count key of a RefusalCount (day of interval_start_ms).
std::string RefusalDayKey(std::string_view day, std::string_view consumer, v1::Code reason);
struct RefusalDayParts {
  std::string day;
  std::string consumer;
  v1::Code reason = v1::OK;
};
absl::StatusOr<RefusalDayParts> ParseRefusalDayKey(std::string_view key);

// Domain tag and signed bytes of a checkpoint (DESIGN.md: the verifier builds the tag from its
// own environment).
std::string CheckpointTag(std::string_view env);
std::string CheckpointSignedBytes(std::string_view env, const v1::Checkpoint& checkpoint);
// What the crypto service signs for a checkpoint: BLAKE2b-256 of CheckpointSignedBytes.
Hash32 CheckpointDigest(std::string_view env, const v1::Checkpoint& checkpoint);

// Shape checks on what a router sends; InvalidArgument naming the field.
absl::Status ValidateRecord(const v1::AuditRecord& record);
absl::Status ValidateRefusalCount(const v1::RefusalCount& count);
// A certificate issued: the log entry's hash holds and its certificate is for `env`; returns
// the certificate's body (not its root signature: the chain records what the crypto service
// logged, and the transparency log's own chain vouches for it).
absl::StatusOr<v1::CertificateBody> ValidateCertificateIssued(const v1::CertificateIssued& c);

}  // namespace chasqui::audit
