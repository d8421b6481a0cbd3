#pragma once
// The append-only, hash-chained audit trail over a KvStore (DESIGN.md, "State and scale").
//
// Group commit: Append() queues an entry and returns; one writer thread takes everything
// queued, refuses duplicates of (sender, request id) (and of a refusal count's key), gives each
// new entry the next sequence number, links it to the previous one
// (hash = BLAKE2b(tag || prev_hash || entry bytes)), writes records, indexes and head in ONE
// synced batch, and only after that write returned calls each entry's callback. The per-day
// aggregates of the new records (audit_report.h) are updated in that same batch. Nothing is
// ever written with Durability::kBuffered.
//
// Checkpoints (the signed head) are signed on a thread of their own, so a slow or absent signer
// (the crypto service, up to its timeout) never holds up a group commit or an acknowledgement.
// Once `checkpoint_every_records` records or `checkpoint_every_ms` passed since the last
// checkpoint, the writer, right after a synced write returned, hands that durable head (seq,
// hash, time) to the signer thread and carries on committing groups. At most one signature is
// in flight. The signed checkpoint is written, synced, in the batch of the next group that
// writes records, or alone when none comes; only then do the stats, the metrics and the next
// due point move. So a stored checkpoint never claims a head that is not durable, and records
// acknowledged meanwhile are covered by the next checkpoint. A failed signature is retried
// every `checkpoint_retry_ms` (one log line per outage, one when it is signed again).
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
#include <optional>
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
  // After the signer failed (the crypto service down), the next attempt waits this long; records
  // keep being acknowledged meanwhile (signing has its own thread) and the next checkpoint
  // covers them.
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

  struct Pending {
    v1::ChainEntry entry;  // a record or a refusal count (a certificate: AppendCertificate)
    AppendCallback done;
  };
  // Several entries at once (one AppendBatch): each is checked and answered exactly as by
  // Append / AppendRefusalCount, but those that pass are queued under one lock, so the writer
  // wakes once and commits them in one group (unless max_group_entries splits it).
  void AppendAll(std::vector<Pending> entries);

  // Writes what is queued, waits for the signature in flight, then signs and writes a final
  // checkpoint if records came since the last one, and joins the writer and the signer thread.
  // So it may wait for the signer's timeout (a remote one: --crypto-timeout-ms) twice: once for
  // the signature in flight, once for the final one. Later appends get Unavailable. Idempotent.
  void Stop();

  // OK while appends are taken; the reason otherwise (for /readyz).
  absl::Status Healthy() const;

  struct Stats {
    uint64_t next_seq = 1;
    uint64_t last_checkpoint_seq = 0;
    int64_t last_checkpoint_ms = 0;
    size_t queued = 0;
    uint64_t groups = 0;
    bool signing = false;             // a checkpoint signature is in flight
    uint64_t signature_failures = 0;  // signatures the signer refused or could not give
  };
  Stats stats() const;
  const std::string& env() const { return options_.env; }

 private:
  AuditChain(const AuditChainOptions& options, KvStore* store, CheckpointSigner* signer,
             const Clock& clock, AuditMetrics* metrics);
  absl::Status Recover();
  // InvalidArgument naming what is wrong with an entry (ValidateRecord and the env, ...).
  absl::Status Check(const v1::ChainEntry& entry) const;
  // Queues what it can; refuses the rest (chain stopped, queue full) Unavailable.
  void Enqueue(std::vector<Pending>& entries);
  void Run();
  // One group commit. A signed `checkpoint` goes into its batch (and is reset) when the group
  // writes records. Returns false if the chain must stop.
  bool CommitGroup(std::vector<Pending>& group, std::optional<v1::Checkpoint>& checkpoint);
  // Hands the durable head to the signer thread if a checkpoint is due (or `force`), none is in
  // flight and (unless `force`) the retry interval after a failure passed.
  void MaybeStartCheckpoint(bool force);
  struct SignResult {
    v1::Checkpoint checkpoint;
    absl::Status status;
  };
  // A finished signature: the checkpoint to write, or nullopt (failure logged, retry timed).
  std::optional<v1::Checkpoint> TakeSignature(SignResult result);
  // After the checkpoint's synced write returned.
  void NoteCheckpointWritten(const v1::Checkpoint& checkpoint);
  // The signer thread: one Sign() at a time, never touching the store.
  void SignLoop();

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
  // Set by the writer when it hands a head to the signer thread, cleared when it takes the
  // result; the result waits in signed_ (so the writer's wait wakes for it).
  bool signing_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<SignResult> signed_ ABSL_GUARDED_BY(mu_);

  absl::Mutex sign_mu_;
  std::optional<v1::Checkpoint> sign_job_ ABSL_GUARDED_BY(sign_mu_);
  bool sign_exit_ ABSL_GUARDED_BY(sign_mu_) = false;

  // Writer thread only (and Open before it starts).
  uint64_t next_seq_ = 1;
  std::string head_hash_;
  uint64_t checkpoint_seq_ = 0;
  int64_t checkpoint_ms_ = 0;
  int64_t sign_retry_at_ms_ = 0;
  bool sign_failing_ = false;
  bool sign_in_flight_ = false;  // the writer's copy of signing_

  std::mutex join_mu_;  // one joiner at a time
  std::thread writer_;
  std::thread signer_thread_;
};

}  // namespace chasqui::audit
