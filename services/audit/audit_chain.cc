#include "services/audit/audit_chain.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
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
  chain->signer_thread_ = std::thread([c = chain.get()] { c->SignLoop(); });
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
  {
    absl::MutexLock lock(&sign_mu_);
    sign_exit_ = true;
  }
  // A signature still in flight (the writer stopped after a store error) ends within the
  // signer's own timeout; nobody writes it.
  if (signer_thread_.joinable()) signer_thread_.join();
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
  s.signing = signing_;
  return s;
}

absl::Status AuditChain::Check(const v1::ChainEntry& entry) const {
  if (entry.has_refusal_count()) return ValidateRefusalCount(entry.refusal_count());
  if (entry.has_certificate()) {
    if (entry.certificate().env() != options_.env) {
      return absl::InvalidArgumentError(fmt::format(
          "certificate: env {} (this audit service keeps the {} chain)",
          Printable(entry.certificate().env()), options_.env));
    }
    return ValidateCertificateIssued(entry.certificate()).status();
  }
  if (!entry.has_record()) return absl::InvalidArgumentError("entry: empty");
  const v1::AuditRecord& record = entry.record();
  CHASQUI_RETURN_IF_ERROR(ValidateRecord(record));
  if (!options_.env.empty() && !record.env().empty() && record.env() != options_.env) {
    return absl::InvalidArgumentError(
        fmt::format("env: {} (this audit service keeps the {} chain)", record.env(), options_.env));
  }
  return absl::OkStatus();
}

void AuditChain::Append(v1::AuditRecord record, AppendCallback done) {
  v1::ChainEntry entry;
  *entry.mutable_record() = std::move(record);
  std::vector<Pending> one;
  one.push_back(Pending{std::move(entry), std::move(done)});
  AppendAll(std::move(one));
}

void AuditChain::AppendRefusalCount(v1::RefusalCount count, AppendCallback done) {
  v1::ChainEntry entry;
  *entry.mutable_refusal_count() = std::move(count);
  std::vector<Pending> one;
  one.push_back(Pending{std::move(entry), std::move(done)});
  AppendAll(std::move(one));
}

void AuditChain::AppendAll(std::vector<Pending> entries) {
  std::vector<Pending> valid;
  valid.reserve(entries.size());
  for (Pending& p : entries) {
    if (absl::Status s = Check(p.entry); !s.ok()) {
      if (metrics_ != nullptr) metrics_->CountAppended("rejected");
      p.done(s);
      continue;
    }
    valid.push_back(std::move(p));
  }
  Enqueue(valid);
}

void AuditChain::AppendCertificate(v1::TransparencyLogEntry log_entry, AppendCallback done) {
  v1::ChainEntry entry;
  v1::CertificateIssued* c = entry.mutable_certificate();
  c->set_env(options_.env);
  *c->mutable_entry() = std::move(log_entry);
  std::vector<Pending> one;
  one.push_back(Pending{std::move(entry), std::move(done)});
  AppendAll(std::move(one));
}

void AuditChain::Enqueue(std::vector<Pending>& entries) {
  if (entries.empty()) return;
  absl::Status refused;
  size_t taken = 0;
  {
    absl::MutexLock lock(&mu_);
    if (!failed_.ok()) {
      refused = absl::UnavailableError(
          fmt::format("audit chain stopped after a store error: {}", MessageOf(failed_)));
    } else if (stopping_) {
      refused = absl::UnavailableError("audit chain: stopping");
    } else {
      // One lock and one wake-up of the writer for all of them.
      while (taken < entries.size() && queue_.size() < options_.max_queued_entries) {
        queue_.push_back(std::move(entries[taken]));
        ++taken;
      }
      if (taken < entries.size()) {
        refused = absl::UnavailableError(
            fmt::format("audit chain: {} entries queued (the limit)", queue_.size()));
      }
      if (metrics_ != nullptr) metrics_->backlog().Set(static_cast<double>(queue_.size()));
    }
  }
  if (taken == entries.size()) return;
  if (metrics_ != nullptr) {
    metrics_->CountAppended("failed", static_cast<double>(entries.size() - taken));
  }
  for (size_t i = taken; i < entries.size(); ++i) entries[i].done(refused);
}

void AuditChain::Run() {
  std::vector<Pending> group;
  // After Stop, one signature of the final head is asked for, whatever the retry interval.
  bool final_asked = false;
  for (;;) {
    bool stopping = false;
    std::optional<SignResult> result;
    {
      absl::MutexLock lock(&mu_);
      const int64_t tick = std::clamp<int64_t>(options_.checkpoint_every_ms, 1, kMaxTickMs);
      // Stopping wakes the writer only once no signature is in flight: it waits for that one.
      mu_.AwaitWithTimeout(absl::Condition(
                               +[](AuditChain* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu_) {
                                 return !c->queue_.empty() || c->signed_.has_value() ||
                                        (c->stopping_ && !c->signing_);
                               },
                               this),
                           absl::Milliseconds(tick));
      stopping = stopping_;
      const size_t n = std::min(queue_.size(), options_.max_group_entries);
      for (size_t i = 0; i < n; ++i) {
        group.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      if (signed_.has_value()) {
        result = std::move(signed_);
        signed_.reset();
        signing_ = false;
      }
      if (metrics_ != nullptr) metrics_->backlog().Set(static_cast<double>(queue_.size()));
    }
    std::optional<v1::Checkpoint> checkpoint;
    if (result.has_value()) {
      sign_in_flight_ = false;
      checkpoint = TakeSignature(*std::move(result));
    }
    bool ok = true;
    const bool idle = group.empty();
    if (!idle) {
      ok = CommitGroup(group, checkpoint);
      group.clear();
    }
    if (ok && checkpoint.has_value()) {
      // No group wrote records this round: the checkpoint goes alone.
      KvBatch batch;
      batch.Put(CheckpointKey(checkpoint->seq()), checkpoint->SerializeAsString());
      if (absl::Status s = store_->Write(batch, Durability::kSynced); s.ok()) {
        NoteCheckpointWritten(*checkpoint);
      } else {
        CHQ_LOG_ERROR("audit checkpoint at seq {}: write failed: {}", checkpoint->seq(),
                      MessageOf(s));
        ok = false;
        absl::MutexLock lock(&mu_);
        failed_ = s;
      }
    }
    bool done = false;
    if (ok) {
      if (!stopping || !idle) {
        MaybeStartCheckpoint(/*force=*/false);
      } else if (!sign_in_flight_) {
        // Enqueue refuses once stopping, so an idle round after it has written everything;
        // the final checkpoint leaves the whole chain signed.
        if (!final_asked && next_seq_ - 1 > checkpoint_seq_) {
          MaybeStartCheckpoint(/*force=*/true);
          final_asked = true;
        } else {
          done = true;
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
    if (done) return;
  }
}

void AuditChain::MaybeStartCheckpoint(bool force) {
  if (sign_in_flight_) return;
  const uint64_t head_seq = next_seq_ - 1;
  if (head_seq <= checkpoint_seq_) return;
  const int64_t now = clock_.NowUnixMillis();
  const bool due = force || head_seq - checkpoint_seq_ >= options_.checkpoint_every_records ||
                   now - checkpoint_ms_ >= options_.checkpoint_every_ms;
  if (!due || (!force && now < sign_retry_at_ms_)) return;
  // Called only after the synced write of everything up to head_seq returned.
  v1::Checkpoint cp;
  cp.set_seq(head_seq);
  cp.set_head_hash(head_hash_);
  cp.set_created_at_ms(now);
  cp.set_env(options_.env);
  sign_in_flight_ = true;
  {
    absl::MutexLock lock(&mu_);
    signing_ = true;
  }
  absl::MutexLock lock(&sign_mu_);
  sign_job_ = std::move(cp);
}

void AuditChain::SignLoop() {
  for (;;) {
    v1::Checkpoint cp;
    {
      absl::MutexLock lock(&sign_mu_);
      sign_mu_.Await(absl::Condition(
          +[](AuditChain* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->sign_mu_) {
            return c->sign_job_.has_value() || c->sign_exit_;
          },
          this));
      if (sign_exit_) return;
      cp = std::move(*sign_job_);
      sign_job_.reset();
    }
    absl::Status s = signer_->Sign(cp);
    absl::MutexLock lock(&mu_);
    signed_ = SignResult{std::move(cp), std::move(s)};
  }
}

std::optional<v1::Checkpoint> AuditChain::TakeSignature(SignResult result) {
  const uint64_t seq = result.checkpoint.seq();
  if (!result.status.ok()) {
    // The records stay durable; a later round tries again.
    sign_retry_at_ms_ = clock_.NowUnixMillis() + options_.checkpoint_retry_ms;
    // One line per outage, not one per retry.
    if (!sign_failing_) {
      CHQ_LOG_WARN("audit checkpoint at seq {}: not signed ({}); records are still "
                   "acknowledged, retrying every {} ms",
                   seq, MessageOf(result.status), options_.checkpoint_retry_ms);
    }
    sign_failing_ = true;
    absl::MutexLock lock(&mu_);
    ++stats_.signature_failures;
    return std::nullopt;
  }
  if (sign_failing_) {
    CHQ_LOG_INFO("audit checkpoint at seq {}: signed again", seq);
    sign_failing_ = false;
  }
  return std::move(result.checkpoint);
}

void AuditChain::NoteCheckpointWritten(const v1::Checkpoint& checkpoint) {
  checkpoint_seq_ = checkpoint.seq();
  checkpoint_ms_ = checkpoint.created_at_ms();
  if (metrics_ != nullptr) metrics_->checkpoints().Increment();
  absl::MutexLock lock(&mu_);
  stats_.last_checkpoint_seq = checkpoint_seq_;
  stats_.last_checkpoint_ms = checkpoint_ms_;
}

bool AuditChain::CommitGroup(std::vector<Pending>& group,
                              std::optional<v1::Checkpoint>& checkpoint) {
  struct Outcome {
    absl::StatusOr<uint64_t> result = absl::InternalError("unset");
    bool durable = false;
  };
  std::vector<Outcome> outcomes(group.size());
  // Duplicates within this group are found here; earlier ones in the store.
  absl::flat_hash_map<std::string, uint64_t> in_group;
  // Every key of the group, written in key order: RocksDB's memtable remembers where it
  // inserted last, so keys that arrive sorted are inserted without a search from the top
  // (interleaved records, unique keys and six index families would each cost a full skiplist
  // search). No key appears twice in one group, so the order changes nothing else.
  std::vector<std::pair<std::string, std::string>> puts;
  puts.reserve(group.size() * 9 + 4);
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
  // The day of a time in the report zone; a group's records nearly always share one, so the
  // day's bounds are kept and the zone is consulted only when a time falls outside them.
  struct DayCache {
    int64_t start_ms = 0;
    int64_t end_ms = 0;  // exclusive
    std::string day;
  } day_cache;
  auto day_of = [&](int64_t unix_ms) -> const std::string& {
    if (day_cache.day.empty() || unix_ms < day_cache.start_ms || unix_ms >= day_cache.end_ms) {
      const absl::CivilDay civil = absl::ToCivilDay(absl::FromUnixMillis(unix_ms), zone_);
      day_cache.start_ms = absl::ToUnixMillis(zone_.At(absl::CivilSecond(civil)).pre);
      day_cache.end_ms = absl::ToUnixMillis(zone_.At(absl::CivilSecond(civil + 1)).pre);
      day_cache.day = DayOf(unix_ms, zone_);
      if (unix_ms < day_cache.start_ms || unix_ms >= day_cache.end_ms ||
          zone_.At(absl::FromUnixMillis(day_cache.start_ms)).offset !=
              zone_.At(absl::FromUnixMillis(day_cache.end_ms - 1)).offset) {
        // A day with a zone transition in it: computed each time, never cached.
        day_cache.end_ms = day_cache.start_ms;
      }
    }
    return day_cache.day;
  };

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
    entry.SerializeToString(stored.mutable_entry());
    hash = LinkHash(hash, stored.entry());
    stored.set_hash(hash);
    puts.emplace_back(RecordKey(seq), stored.SerializeAsString());
    puts.emplace_back(unique, SeqAndHash(seq, hash));
    for (std::string& k : IndexKeys(entry, seq)) puts.emplace_back(std::move(k), std::string());
    if (entry.has_record()) {
      const v1::AuditRecord& r = entry.record();
      const std::string key = AggregateKey(day_of(r.received_at_ms()), r);
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
          RefusalDayKey(day_of(c.interval_start_ms()), c.consumer(), c.reason());
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
    for (const auto& [key, aggregate] : aggregates) {
      puts.emplace_back(key, aggregate.SerializeAsString());
    }
    for (const auto& [key, count] : refusal_days) puts.emplace_back(key, BigEndian64(count));
    puts.emplace_back(kHeadKey, SeqAndHash(seq - 1, hash));
    const uint64_t saved_next = next_seq_;
    const std::string saved_hash = head_hash_;
    next_seq_ = seq;
    head_hash_ = hash;
    // A checkpoint signed meanwhile covers an older head, durable since an earlier group.
    if (checkpoint.has_value()) {
      puts.emplace_back(CheckpointKey(checkpoint->seq()), checkpoint->SerializeAsString());
    }
    std::sort(puts.begin(), puts.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    KvBatch batch;
    for (const auto& [key, value] : puts) batch.Put(key, value);
    const int64_t t0 = clock_.NowMonoNanos();
    store_error = store_->Write(batch, Durability::kSynced);
    if (metrics_ != nullptr) {
      metrics_->sync_seconds().Observe(static_cast<double>(clock_.NowMonoNanos() - t0) / 1e9);
      metrics_->group_size().Observe(static_cast<double>(written));
    }
    if (!store_error.ok()) {
      next_seq_ = saved_next;
      head_hash_ = saved_hash;
    } else if (checkpoint.has_value()) {
      NoteCheckpointWritten(*checkpoint);
      checkpoint.reset();
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
  // The head is durable: a checkpoint that fell due goes to the signer thread before anyone
  // learns an outcome, so an acknowledged record that made one due finds it asked for.
  MaybeStartCheckpoint(/*force=*/false);
  // Only now, after the synced write returned, does anyone learn an outcome.
  for (size_t i = 0; i < group.size(); ++i) group[i].done(std::move(outcomes[i].result));
  return true;
}

}  // namespace chasqui::audit
