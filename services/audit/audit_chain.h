#pragma once
// The append-only, hash-chained audit trail over a KvStore (DESIGN.md, "State and scale").
//
// Group commit: Append() queues an entry and returns; one writer thread takes everything
// queued, refuses duplicates of (sender, request id) (and of a refusal count's key), gives each
// new entry the next sequence number, links it to the previous one
// (hash = BLAKE2b(tag || prev_hash || entry bytes)), writes records, indexes and head in ONE
// synced batch, and only after that write returned calls each entry's callback. The per-day
// aggregates of the new records (audit_report.h) are updated in that same batch. Nothing is
// ever written with Durability::kBuffered. A checkpoint (the signed head) is written every
// `checkpoint_every_records` records or `checkpoint_every_ms`, whichever comes first, in the
// same synced batch as the records it covers, or alone when the timer fires.
//
// On Open the chain resumes from its last stored record (head hash, next seq); uniqueness is
// kept in the store itself, so it holds across restarts. A head marker that lies beyond the
// last record (a truncated store) refuses to open (DataLoss).
//
// A failed write fails that whole group (callbacks get the store's error, Unavailable or
// DataLoss), and the chain stops taking appends: RocksDB may have dropped to read-only, and the
// head in memory could no longer be trusted. Restart the process.
//
// Thread-safe. Callbacks run on the writer thread and must not block for long.

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "chasqui/v1/audit.pb.h"
#include "common/core/clock.h"
#include "common/store/kv_store.h"
#include "services/audit/checkpoint_signer.h"

namespace chasqui::audit {

class AuditMetrics;

struct AuditChainOptions {
  std::string env = "test";
  uint64_t checkpoint_every_records = 10'000;
  int64_t checkpoint_every_ms = 60'000;
  // After the signer failed (the crypto service down), the next attempt waits this long, so a
  // signer that times out holds up at most one group commit per interval; records keep being
  // acknowledged meanwhile and the next checkpoint covers them.
  int64_t checkpoint_retry_ms = 1'000;
  // Most entries in one group commit (one synced batch).
  size_t max_group_entries = 4096;
  // Most entries waiting for the writer; beyond it Append answers Unavailable at once.
  size_t max_queued_entries = 100'000;
  // The zone whose days the per-day aggregates (audit_report.h) are kept in.
  std::string report_zone = "America/La_Paz";
};

// The outcome of one append: the durable seq; AlreadyExists for a duplicate (the message names
// the seq it was stored under); InvalidArgument for a malformed entry; Unavailable when the
// queue is full or the chain stopped; the store's error when the write failed.
using AppendCallback = std::function<void(absl::StatusOr<uint64_t> seq)>;

class AuditChain {
 public:
  // `store`, `signer`, `clock` and `metrics` (may be null) must outlive the chain. Reads the
  // head and starts the writer thread. The store's errors (DataLoss for corruption);
  // InvalidArgument for an unknown report zone.
  static absl::StatusOr<std::unique_ptr<AuditChain>> Open(const AuditChainOptions& options,
                                                          KvStore* store,
                                                          CheckpointSigner* signer,
                                                          const Clock& clock = SystemClock(),
                                                          AuditMetrics* metrics = nullptr);
  // Stop().
  ~AuditChain();
  AuditChain(const AuditChain&) = delete;
  AuditChain& operator=(const AuditChain&) = delete;

  // Queues one entry; `done` is called exactly once (on the writer thread, or on the calling
  // thread when refused at once).
  void Append(v1::AuditRecord record, AppendCallback done);
  void AppendRefusalCount(v1::RefusalCount count, AppendCallback done);
  // A certificate the crypto service issued (its transparency log entry); unique per log
  // sequence. InvalidArgument for an entry that does not hold or is for another env.
  void AppendCertificate(v1::TransparencyLogEntry entry, AppendCallback done);

  // Writes what is queued, then a final checkpoint if records came since the last one, and
  // joins the writer. Later appends get Unavailable. Idempotent.
  void Stop();

  // OK while appends are taken; the reason otherwise (for /readyz).
  absl::Status Healthy() const;

  struct Stats {
    uint64_t next_seq = 1;
    uint64_t last_checkpoint_seq = 0;
    int64_t last_checkpoint_ms = 0;
    size_t queued = 0;
    uint64_t groups = 0;
  };
  Stats stats() const;
  const std::string& env() const { return options_.env; }

 private:
  struct Pending {
    v1::ChainEntry entry;
    AppendCallback done;
  };

  AuditChain(const AuditChainOptions& options, KvStore* store, CheckpointSigner* signer,
             const Clock& clock, AuditMetrics* metrics);
  absl::Status Recover();
  void Enqueue(v1::ChainEntry entry, AppendCallback done);
  void Run();
  // One group commit. Returns false if the chain must stop.
  bool CommitGroup(std::vector<Pending>& group);
  // Adds a signed checkpoint of the current head to `batch` if one is due (or `force`).
  bool MaybeCheckpoint(KvBatch& batch, bool force, v1::Checkpoint* out);

  const AuditChainOptions options_;
  KvStore* const store_;
  CheckpointSigner* const signer_;
  const Clock& clock_;
  AuditMetrics* const metrics_;
  absl::TimeZone zone_;

  mutable absl::Mutex mu_;
  std::deque<Pending> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status failed_ ABSL_GUARDED_BY(mu_);
  Stats stats_ ABSL_GUARDED_BY(mu_);

  // Writer thread only (and Open before it starts).
  uint64_t next_seq_ = 1;
  std::string head_hash_;
  uint64_t checkpoint_seq_ = 0;
  int64_t checkpoint_ms_ = 0;
  int64_t sign_retry_at_ms_ = 0;
  bool sign_failing_ = false;

  std::mutex join_mu_;  // one joiner at a time
  std::thread writer_;
};

}  // namespace chasqui::audit
