#include "services/audit/audit_chain.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "common/core/log.h"
#include "common/core/status.h"
#include "fmt/format.h"
#include "common/core/names.h"
#include "common/envelope/errors.h"
#include "services/audit/audit_metrics.h"
#include "services/audit/audit_report.h"
#include "services/audit/audit_schema.h"

namespace chasqui::audit {
namespace {

// The writer wakes at least this often to take time-based checkpoints and refresh gauges.
constexpr int64_t kMaxTickMs = 250;

}  // namespace

AuditChain::AuditChain(const AuditChainOptions& options, KvStore* store, CheckpointSigner* signer,
                       const Clock& clock, AuditMetrics* metrics)
    : options_(options), store_(store), signer_(signer), clock_(clock), metrics_(metrics) {}

absl::StatusOr<std::unique_ptr<AuditChain>> AuditChain::Open(const AuditChainOptions& options,
                                                             KvStore* store,
                                                             CheckpointSigner* signer,
                                                             const Clock& clock,
                                                             AuditMetrics* metrics) {
  if (store == nullptr || signer == nullptr) {
    return absl::InvalidArgumentError("audit chain: store and signer are required");
  }
  std::unique_ptr<AuditChain> chain(new AuditChain(options, store, signer, clock, metrics));
  CHASQUI_ASSIGN_OR_RETURN(chain->zone_, LoadReportZone(options.report_zone));
  CHASQUI_RETURN_IF_ERROR(chain->Recover());
  chain->writer_ = std::thread([c = chain.get()] { c->Run(); });
  return chain;
}

absl::Status AuditChain::Recover() {
  head_hash_ = GenesisHash();
  next_seq_ = 1;
  // A pruned store starts at the marker's first_seq, linked to the marker's genesis.
  auto pruned = store_->Get(kPruneKey);
  if (pruned.ok()) {
    v1::PruneMarker marker;
    if (!marker.ParseFromString(*pruned) || marker.genesis_hash().size() != kLinkHashBytes) {
      return absl::DataLossError(fmt::format(
          "audit store {}: the prune marker does not parse; run `chasqui-audit verify`",
          store_->path()));
    }
    head_hash_ = marker.genesis_hash();
    next_seq_ = marker.first_seq();
  } else if (!absl::IsNotFound(pruned.status())) {
    return pruned.status();
  }
  const uint64_t first_seq = next_seq_;
  auto last = store_->Last(kRecordPrefix, kRecordEnd);
  if (last.ok()) {
    v1::StoredRecord rec;
    if (!rec.ParseFromString(last->second) || rec.hash().size() != kLinkHashBytes) {
      return absl::DataLossError(fmt::format(
          "audit store {}: the last record (key seq {}) does not parse; run `chasqui-audit "
          "verify`",
          store_->path(), SeqFromKey(last->first)));
    }
    head_hash_ = rec.hash();
    next_seq_ = SeqFromKey(last->first) + 1;
  } else if (!absl::IsNotFound(last.status())) {
    return last.status();
  }
  // The head marker is written with every group: a marker past the last record means records
  // were removed from the end.
  auto head = store_->Get(kHeadKey);
  if (head.ok()) {
    CHASQUI_ASSIGN_OR_RETURN(SeqHash marker, ParseSeqAndHash(*head));
    if (marker.seq != next_seq_ - 1 || marker.hash != head_hash_) {
      return absl::DataLossError(fmt::format(
          "audit store {}: head marker says seq {}, the last record is seq {}: the chain was "
          "truncated or altered; run `chasqui-audit verify`",
          store_->path(), marker.seq, next_seq_ - 1));
    }
  } else if (!absl::IsNotFound(head.status())) {
    return head.status();
  } else if (next_seq_ != first_seq) {
    return absl::DataLossError(fmt::format(
        "audit store {}: records but no head marker; run `chasqui-audit verify`", store_->path()));
  }
  checkpoint_ms_ = clock_.NowUnixMillis();
  auto cp = store_->Last(kCheckpointPrefix, kCheckpointEnd);
  if (cp.ok()) {
    v1::Checkpoint c;
    if (c.ParseFromString(cp->second)) {
      checkpoint_seq_ = c.seq();
      checkpoint_ms_ = c.created_at_ms();
    }
  } else if (!absl::IsNotFound(cp.status())) {
    return cp.status();
  }
  absl::MutexLock lock(&mu_);
  stats_.next_seq = next_seq_;
  stats_.last_checkpoint_seq = checkpoint_seq_;
  stats_.last_checkpoint_ms = checkpoint_ms_;
  CHQ_LOG_INFO("audit chain {}: resumed at seq {} (last checkpoint seq {})", store_->path(),
               next_seq_ - 1, checkpoint_seq_);
  if (metrics_ != nullptr) metrics_->chain_length().Set(static_cast<double>(next_seq_ - 1));
  return absl::OkStatus();
}

AuditChain::~AuditChain() { Stop(); }

void AuditChain::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  std::lock_guard<std::mutex> join_lock(join_mu_);
  if (writer_.joinable()) writer_.join();
}

absl::Status AuditChain::Healthy() const {
  absl::MutexLock lock(&mu_);
  if (!failed_.ok()) return failed_;
  if (stopping_) return absl::UnavailableError("audit chain: stopped");
  return absl::OkStatus();
}

AuditChain::Stats AuditChain::stats() const {
  absl::MutexLock lock(&mu_);
  Stats s = stats_;
  s.queued = queue_.size();
  return s;
}

void AuditChain::Append(v1::AuditRecord record, AppendCallback done) {
  if (absl::Status s = ValidateRecord(record); !s.ok()) {
    if (metrics_ != nullptr) metrics_->CountAppended("rejected");
    done(s);
    return;
  }
  if (!options_.env.empty() && !record.env().empty() && record.env() != options_.env) {
    if (metrics_ != nullptr) metrics_->CountAppended("rejected");
    done(absl::InvalidArgumentError(
        fmt::format("env: {} (this audit service keeps the {} chain)", record.env(), options_.env)));
    return;
  }
  v1::ChainEntry entry;
  *entry.mutable_record() = std::move(record);
  Enqueue(std::move(entry), std::move(done));
}

void AuditChain::AppendRefusalCount(v1::RefusalCount count, AppendCallback done) {
  if (absl::Status s = ValidateRefusalCount(count); !s.ok()) {
    if (metrics_ != nullptr) metrics_->CountAppended("rejected");
    done(s);
    return;
  }
  v1::ChainEntry entry;
  *entry.mutable_refusal_count() = std::move(count);
  Enqueue(std::move(entry), std::move(done));
}

void AuditChain::AppendCertificate(v1::TransparencyLogEntry log_entry, AppendCallback done) {
  v1::ChainEntry entry;
  v1::CertificateIssued* c = entry.mutable_certificate();
  c->set_env(options_.env);
  *c->mutable_entry() = std::move(log_entry);
  if (auto body = ValidateCertificateIssued(*c); !body.ok()) {
    if (metrics_ != nullptr) metrics_->CountAppended("rejected");
    done(body.status());
    return;
  }
  Enqueue(std::move(entry), std::move(done));
}

void AuditChain::Enqueue(v1::ChainEntry entry, AppendCallback done) {
  absl::Status refused;
  {
    absl::MutexLock lock(&mu_);
    if (!failed_.ok()) {
      refused = absl::UnavailableError(
          fmt::format("audit chain stopped after a store error: {}", MessageOf(failed_)));
    } else if (stopping_) {
      refused = absl::UnavailableError("audit chain: stopping");
    } else if (queue_.size() >= options_.max_queued_entries) {
      refused = absl::UnavailableError(
          fmt::format("audit chain: {} entries queued (the limit)", queue_.size()));
    } else {
      queue_.push_back(Pending{std::move(entry), std::move(done)});
      if (metrics_ != nullptr) metrics_->backlog().Set(static_cast<double>(queue_.size()));
      return;
    }
  }
  if (metrics_ != nullptr) metrics_->CountAppended("failed");
  done(refused);
}

void AuditChain::Run() {
  std::vector<Pending> group;
  for (;;) {
    bool stopping = false;
    {
      absl::MutexLock lock(&mu_);
      const int64_t tick = std::clamp<int64_t>(options_.checkpoint_every_ms, 1, kMaxTickMs);
      mu_.AwaitWithTimeout(absl::Condition(
                               +[](AuditChain* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu_) {
                                 return !c->queue_.empty() || c->stopping_;
                               },
                               this),
                           absl::Milliseconds(tick));
      stopping = stopping_;
      const size_t n = std::min(queue_.size(), options_.max_group_entries);
      for (size_t i = 0; i < n; ++i) {
        group.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      if (metrics_ != nullptr) metrics_->backlog().Set(static_cast<double>(queue_.size()));
    }
    bool ok = true;
    const bool idle = group.empty();
    if (!idle) {
      ok = CommitGroup(group);
      group.clear();
    } else {
      // Idle: a time-based checkpoint if records came since the last one, and a final one when
      // stopping, so a clean shutdown leaves the whole chain signed.
      KvBatch batch;
      v1::Checkpoint cp;
      if (MaybeCheckpoint(batch, stopping, &cp)) {
        absl::Status s = store_->Write(batch, Durability::kSynced);
        if (s.ok()) {
          checkpoint_seq_ = cp.seq();
          checkpoint_ms_ = cp.created_at_ms();
          if (metrics_ != nullptr) metrics_->checkpoints().Increment();
          absl::MutexLock lock(&mu_);
          stats_.last_checkpoint_seq = checkpoint_seq_;
          stats_.last_checkpoint_ms = checkpoint_ms_;
        } else {
          CHQ_LOG_ERROR("audit checkpoint at seq {}: write failed: {}", cp.seq(), MessageOf(s));
          ok = false;
          absl::MutexLock lock(&mu_);
          failed_ = s;
        }
      }
    }
    if (metrics_ != nullptr) {
      metrics_->last_checkpoint_age().Set(
          static_cast<double>(clock_.NowUnixMillis() - checkpoint_ms_) / 1000.0);
    }
    if (!ok) {
      // Refuse everything still queued; new appends are refused by Enqueue.
      std::deque<Pending> left;
      absl::Status why;
      {
        absl::MutexLock lock(&mu_);
        left.swap(queue_);
        why = absl::UnavailableError(
            fmt::format("audit chain stopped after a store error: {}", MessageOf(failed_)));
      }
      for (Pending& p : left) p.done(why);
      if (metrics_ != nullptr) metrics_->CountAppended("failed", static_cast<double>(left.size()));
      return;
    }
    // Enqueue refuses once stopping, so an idle round after it has written everything.
    if (stopping && idle) return;
  }
}

bool AuditChain::MaybeCheckpoint(KvBatch& batch, bool force, v1::Checkpoint* out) {
  const uint64_t head_seq = next_seq_ - 1;
  if (head_seq == checkpoint_seq_) return false;
  const int64_t now = clock_.NowUnixMillis();
  const bool due = force || head_seq - checkpoint_seq_ >= options_.checkpoint_every_records ||
                   now - checkpoint_ms_ >= options_.checkpoint_every_ms;
  if (!due || (!force && now < sign_retry_at_ms_)) return false;
  v1::Checkpoint cp;
  cp.set_seq(head_seq);
  cp.set_head_hash(head_hash_);
  cp.set_created_at_ms(now);
  cp.set_env(options_.env);
  if (absl::Status s = signer_->Sign(cp); !s.ok()) {
    // The records stay durable; a later round tries again.
    sign_retry_at_ms_ = clock_.NowUnixMillis() + options_.checkpoint_retry_ms;
    // One line per outage, not one per retry.
    if (!sign_failing_) {
      CHQ_LOG_WARN("audit checkpoint at seq {}: not signed ({}); records are still "
                   "acknowledged, retrying every {} ms",
                   head_seq, MessageOf(s), options_.checkpoint_retry_ms);
    }
    sign_failing_ = true;
    return false;
  }
  if (sign_failing_) {
    CHQ_LOG_INFO("audit checkpoint at seq {}: signed again", head_seq);
    sign_failing_ = false;
  }
  batch.Put(CheckpointKey(head_seq), cp.SerializeAsString());
  *out = std::move(cp);
  return true;
}

bool AuditChain::CommitGroup(std::vector<Pending>& group) {
  struct Outcome {
    absl::StatusOr<uint64_t> result = absl::InternalError("unset");
    bool durable = false;
  };
  std::vector<Outcome> outcomes(group.size());
  // Duplicates within this group are found here; earlier ones in the store.
  absl::flat_hash_map<std::string, uint64_t> in_group;
  KvBatch batch;
  const uint64_t first_seq = next_seq_;
  uint64_t seq = next_seq_;
  std::string hash = head_hash_;
  const int64_t now = clock_.NowUnixMillis();
  absl::Status store_error;
  // The per-day aggregates this group touches, read once from the store, written with it.
  absl::flat_hash_map<std::string, v1::DayAggregate> aggregates;
  // Refusals before authentication per (day, consumer, reason), likewise.
  absl::flat_hash_map<std::string, uint64_t> refusal_days;
  std::vector<const v1::AuditRecord*> recorded;

  for (size_t i = 0; i < group.size(); ++i) {
    v1::ChainEntry& entry = group[i].entry;
    const std::string unique = UniqueKey(entry);
    if (auto it = in_group.find(unique); it != in_group.end()) {
      outcomes[i].result = absl::AlreadyExistsError(
          fmt::format("duplicate (sender, request id): stored as seq {}", it->second));
      continue;
    }
    auto existing = store_->Get(unique);
    if (existing.ok()) {
      auto prior = ParseSeqAndHash(*existing);
      outcomes[i].result = absl::AlreadyExistsError(fmt::format(
          "duplicate (sender, request id): stored as seq {}", prior.ok() ? prior->seq : 0));
      continue;
    }
    if (!absl::IsNotFound(existing.status())) {
      store_error = existing.status();
      break;
    }
    entry.set_stored_at_ms(now);
    v1::StoredRecord stored;
    stored.set_seq(seq);
    stored.set_prev_hash(hash);
    // Deterministic bytes once; the hash covers exactly these, and they are stored as is.
    stored.set_entry(entry.SerializeAsString());
    hash = LinkHash(hash, stored.entry());
    stored.set_hash(hash);
    batch.Put(RecordKey(seq), stored.SerializeAsString());
    batch.Put(unique, SeqAndHash(seq, hash));
    for (const std::string& k : IndexKeys(entry, seq)) batch.Put(k, "");
    if (entry.has_record()) {
      const v1::AuditRecord& r = entry.record();
      const std::string key = AggregateKey(DayOf(r.received_at_ms(), zone_), r);
      auto [it, fresh] = aggregates.try_emplace(key);
      if (fresh) {
        auto stored_aggregate = store_->Get(key);
        if (stored_aggregate.ok()) {
          if (!it->second.ParseFromString(*stored_aggregate)) {
            store_error = absl::DataLossError(fmt::format(
                "audit store {}: aggregate {} does not parse", store_->path(), Printable(key)));
            break;
          }
        } else if (!absl::IsNotFound(stored_aggregate.status())) {
          store_error = stored_aggregate.status();
          break;
        }
      }
      AddToAggregate(r, it->second);
      recorded.push_back(&r);
    } else if (entry.has_refusal_count()) {
      const v1::RefusalCount& c = entry.refusal_count();
      const std::string key =
          RefusalDayKey(DayOf(c.interval_start_ms(), zone_), c.consumer(), c.reason());
      auto [it, fresh] = refusal_days.try_emplace(key, 0);
      if (fresh) {
        auto stored_count = store_->Get(key);
        if (stored_count.ok()) {
          if (stored_count->size() != 8) {
            store_error = absl::DataLossError(fmt::format(
                "audit store {}: refusal count {} does not parse", store_->path(), Printable(key)));
            break;
          }
          it->second = FromBigEndian64(*stored_count);
        } else if (!absl::IsNotFound(stored_count.status())) {
          store_error = stored_count.status();
          break;
        }
      }
      it->second += c.count();
    }
    in_group.emplace(unique, seq);
    outcomes[i].result = seq;
    outcomes[i].durable = true;
    ++seq;
  }

  uint64_t written = seq - first_seq;
  if (store_error.ok() && written > 0) {
    for (const auto& [key, aggregate] : aggregates) batch.Put(key, aggregate.SerializeAsString());
    for (const auto& [key, count] : refusal_days) batch.Put(key, BigEndian64(count));
    batch.Put(kHeadKey, SeqAndHash(seq - 1, hash));
    const uint64_t saved_next = next_seq_;
    const std::string saved_hash = head_hash_;
    next_seq_ = seq;
    head_hash_ = hash;
    v1::Checkpoint cp;
    const bool checkpointed = MaybeCheckpoint(batch, false, &cp);
    const int64_t t0 = clock_.NowMonoNanos();
    store_error = store_->Write(batch, Durability::kSynced);
    if (metrics_ != nullptr) {
      metrics_->sync_seconds().Observe(static_cast<double>(clock_.NowMonoNanos() - t0) / 1e9);
      metrics_->group_size().Observe(static_cast<double>(written));
    }
    if (!store_error.ok()) {
      next_seq_ = saved_next;
      head_hash_ = saved_hash;
    } else if (checkpointed) {
      checkpoint_seq_ = cp.seq();
      checkpoint_ms_ = cp.created_at_ms();
      if (metrics_ != nullptr) metrics_->checkpoints().Increment();
    }
  }

  if (!store_error.ok()) {
    CHQ_LOG_ERROR("audit group commit of {} entries failed: {}; the chain stops", group.size(),
                  MessageOf(store_error));
    {
      absl::MutexLock lock(&mu_);
      failed_ = store_error;
    }
    for (Pending& p : group) p.done(store_error);
    if (metrics_ != nullptr) metrics_->CountAppended("failed", static_cast<double>(group.size()));
    return false;
  }
  {
    absl::MutexLock lock(&mu_);
    stats_.next_seq = next_seq_;
    stats_.last_checkpoint_seq = checkpoint_seq_;
    stats_.last_checkpoint_ms = checkpoint_ms_;
    ++stats_.groups;
  }
  if (metrics_ != nullptr) {
    metrics_->chain_length().Set(static_cast<double>(next_seq_ - 1));
    metrics_->CountAppended("durable", static_cast<double>(written));
    metrics_->CountAppended("replayed", static_cast<double>(group.size() - written));
    for (const v1::AuditRecord* r : recorded) {
      metrics_->CountExchange(r->env().empty() ? options_.env : r->env(), r->consumer(),
                              r->provider(), r->service(), CodeName(r->outcome()),
                              LatencyMs(*r));
    }
  }
  // Only now, after the synced write returned, does anyone learn an outcome.
  for (size_t i = 0; i < group.size(); ++i) group[i].done(std::move(outcomes[i].result));
  return true;
}

}  // namespace chasqui::audit
