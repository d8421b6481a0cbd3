#include "services/audit/audit_retention.h"

#include <stdlib.h>

#include <filesystem>
#include <optional>
#include <utility>

#include "common/core/status.h"
#include "common/crypto/sodium.h"
#include "fmt/format.h"
#include "services/audit/audit_schema.h"

namespace chasqui::audit {
namespace {

absl::StatusOr<v1::PruneMarker> ReadPruneMarker(KvStore& store) {
  v1::PruneMarker marker;
  marker.set_first_seq(1);
  marker.set_genesis_hash(GenesisHash());
  auto value = store.Get(kPruneKey);
  if (absl::IsNotFound(value.status())) return marker;
  if (!value.ok()) return value.status();
  if (!marker.ParseFromString(*value) || marker.genesis_hash().size() != kLinkHashBytes) {
    return absl::DataLossError(fmt::format(
        "audit store {}: the prune marker does not parse; run `chasqui-audit verify`",
        store.path()));
  }
  return marker;
}

absl::Status RequireIntact(KvStore& store, const VerifyOptions& verify, std::string_view what) {
  VerifyOptions whole = verify;
  whole.from = 1;
  whole.to = 0;
  CHASQUI_ASSIGN_OR_RETURN(VerifyReport report, VerifyChain(store, whole));
  if (report.finding != Finding::kIntact) {
    return absl::FailedPreconditionError(fmt::format(
        "{}: the chain in {} is not intact ({} at seq {}: {}); nothing done", what, store.path(),
        FindingName(report.finding), report.first_bad_seq, report.detail));
  }
  return absl::OkStatus();
}

// A directory that is removed with everything in it when it goes.
class ScratchDir {
 public:
  static absl::StatusOr<ScratchDir> Make() {
    std::string pattern = (std::filesystem::temp_directory_path() / "chasqui-audit-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      return absl::InternalError(fmt::format("cannot make a scratch directory in {}",
                                             std::filesystem::temp_directory_path().string()));
    }
    return ScratchDir(std::move(pattern));
  }
  ScratchDir(ScratchDir&& o) noexcept : path_(std::move(o.path_)) { o.path_.clear(); }
  ~ScratchDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  explicit ScratchDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

}  // namespace

absl::StatusOr<RetentionRange> RangeBefore(KvStore& store, int64_t before_ms) {
  CHASQUI_ASSIGN_OR_RETURN(v1::PruneMarker marker, ReadPruneMarker(store));
  RetentionRange range;
  range.first_seq = marker.first_seq();
  range.anchor_hash = marker.genesis_hash();
  // The records before the date: the chain's prefix whose entries' times are before it.
  uint64_t last_old = range.first_seq - 1;
  absl::Status bad;
  CHASQUI_RETURN_IF_ERROR(store.Scan(
      RecordKey(range.first_seq), kRecordEnd, [&](std::string_view key, std::string_view value) {
        v1::StoredRecord rec;
        v1::ChainEntry entry;
        if (!rec.ParseFromArray(value.data(), static_cast<int>(value.size())) ||
            !entry.ParseFromString(rec.entry())) {
          bad = absl::DataLossError(fmt::format("record {} does not parse", SeqFromKey(key)));
          return false;
        }
        if (EntryTimeMs(entry) >= before_ms) return false;
        last_old = SeqFromKey(key);
        return true;
      }));
  CHASQUI_RETURN_IF_ERROR(bad);
  if (last_old < range.first_seq) {
    return absl::FailedPreconditionError(fmt::format(
        "no record before {} ms from seq {} on: nothing to export or prune", before_ms,
        range.first_seq));
  }
  // Up to the last checkpoint among them, so that every record taken is signed.
  auto cp = store.Last(CheckpointKey(range.first_seq), CheckpointKey(last_old + 1));
  if (absl::IsNotFound(cp.status())) {
    return absl::FailedPreconditionError(fmt::format(
        "records {} to {} are before the date but no checkpoint signs any of them yet; wait "
        "for the next checkpoint (or stop the service: it signs the head on a clean stop)",
        range.first_seq, last_old));
  }
  if (!cp.ok()) return cp.status();
  range.last_seq = SeqFromKey(cp->first);
  return range;
}

absl::StatusOr<v1::AuditExport> ExportBefore(KvStore& store, int64_t before_ms,
                                             const VerifyOptions& verify, int64_t now_ms) {
  CHASQUI_RETURN_IF_ERROR(RequireIntact(store, verify, "export"));
  CHASQUI_ASSIGN_OR_RETURN(RetentionRange range, RangeBefore(store, before_ms));
  v1::AuditExport out;
  out.set_env(verify.env);
  out.set_first_seq(range.first_seq);
  out.set_last_seq(range.last_seq);
  out.set_anchor_hash(range.anchor_hash);
  out.set_before_ms(before_ms);
  out.set_created_at_ms(now_ms);
  absl::Status bad;
  CHASQUI_RETURN_IF_ERROR(store.Scan(
      RecordKey(range.first_seq), RecordKey(range.last_seq + 1),
      [&](std::string_view key, std::string_view value) {
        if (!out.add_records()->ParseFromArray(value.data(), static_cast<int>(value.size()))) {
          bad = absl::DataLossError(fmt::format("record {} does not parse", SeqFromKey(key)));
          return false;
        }
        return true;
      }));
  // The checkpoint signing the anchor (kept by an earlier prune) and those in the range.
  CHASQUI_RETURN_IF_ERROR(store.Scan(
      CheckpointKey(range.first_seq - 1), CheckpointKey(range.last_seq + 1),
      [&](std::string_view key, std::string_view value) {
        if (!out.add_checkpoints()->ParseFromArray(value.data(), static_cast<int>(value.size()))) {
          bad = absl::DataLossError(fmt::format("checkpoint {} does not parse", SeqFromKey(key)));
          return false;
        }
        return true;
      }));
  CHASQUI_RETURN_IF_ERROR(bad);
  return out;
}

absl::StatusOr<VerifyReport> VerifyExport(const std::string& file_bytes,
                                          const VerifyOptions& options) {
  v1::AuditExport ex;
  if (!ex.ParseFromString(file_bytes) || ex.records_size() == 0 || ex.first_seq() == 0) {
    return absl::InvalidArgumentError(
        "export: not an AuditExport with records (written by `chasqui-audit export`)");
  }
  VerifyReport report;
  const uint64_t held_last = ex.first_seq() + static_cast<uint64_t>(ex.records_size()) - 1;
  if (ex.last_seq() != held_last) {
    report.finding = ex.last_seq() > held_last ? Finding::kTruncated : Finding::kInserted;
    report.first_bad_seq = std::min(ex.last_seq(), held_last) + 1;
    report.detail = fmt::format("the export says records {} to {} but holds {} records",
                                ex.first_seq(), ex.last_seq(), ex.records_size());
    return report;
  }
  if (ex.first_seq() == 1 && ex.anchor_hash() != GenesisHash()) {
    report.finding = Finding::kChanged;
    report.first_bad_seq = 1;
    report.detail = "the export starts at seq 1 but its anchor is not the genesis hash";
    return report;
  }
  // The export laid out as a (pruned) store, so VerifyChain walks it exactly as a store.
  CHASQUI_ASSIGN_OR_RETURN(ScratchDir dir, ScratchDir::Make());
  CHASQUI_ASSIGN_OR_RETURN(std::unique_ptr<KvStore> scratch, KvStore::Open({.path = dir.path()}));
  KvBatch batch;
  for (int i = 0; i < ex.records_size(); ++i) {
    batch.Put(RecordKey(ex.first_seq() + static_cast<uint64_t>(i)),
              ex.records(i).SerializeAsString());
  }
  for (const v1::Checkpoint& cp : ex.checkpoints()) {
    batch.Put(CheckpointKey(cp.seq()), cp.SerializeAsString());
  }
  if (ex.first_seq() > 1) {
    v1::PruneMarker marker;
    marker.set_first_seq(ex.first_seq());
    marker.set_genesis_hash(ex.anchor_hash());
    batch.Put(kPruneKey, marker.SerializeAsString());
  }
  batch.Put(kHeadKey, SeqAndHash(held_last, ex.records(ex.records_size() - 1).hash()));
  CHASQUI_RETURN_IF_ERROR(scratch->Write(batch, Durability::kBuffered));
  VerifyOptions whole = options;
  whole.from = 1;
  whole.to = 0;
  CHASQUI_ASSIGN_OR_RETURN(report, VerifyChain(*scratch, whole));
  if (report.finding == Finding::kIntact && report.last_checkpoint_seq != held_last) {
    report.finding = Finding::kBadCheckpoint;
    report.first_bad_seq = report.last_checkpoint_seq + 1;
    report.detail = fmt::format("records {} to {} are not signed by a checkpoint in the export",
                                report.last_checkpoint_seq + 1, held_last);
  }
  return report;
}

absl::StatusOr<uint64_t> PruneExported(KvStore& store, const std::string& file_bytes,
                                       int64_t before_ms, const VerifyOptions& verify,
                                       int64_t now_ms) {
  CHASQUI_ASSIGN_OR_RETURN(VerifyReport checked, VerifyExport(file_bytes, verify));
  if (checked.finding != Finding::kIntact) {
    return absl::FailedPreconditionError(fmt::format(
        "prune: the export does not verify ({} at seq {}: {}); nothing pruned",
        FindingName(checked.finding), checked.first_bad_seq, checked.detail));
  }
  v1::AuditExport ex;
  (void)ex.ParseFromString(file_bytes);  // VerifyExport parsed it
  CHASQUI_RETURN_IF_ERROR(RequireIntact(store, verify, "prune"));
  CHASQUI_ASSIGN_OR_RETURN(RetentionRange range, RangeBefore(store, before_ms));
  if (ex.first_seq() != range.first_seq || ex.last_seq() != range.last_seq ||
      ex.anchor_hash() != range.anchor_hash) {
    return absl::FailedPreconditionError(fmt::format(
        "prune: records before {} ms are seq {} to {} here, the export holds {} to {}; export "
        "with the same --before first; nothing pruned",
        before_ms, range.first_seq, range.last_seq, ex.first_seq(), ex.last_seq()));
  }
  auto last = store.Get(RecordKey(range.last_seq));
  if (!last.ok()) return last.status();
  v1::StoredRecord last_rec;
  if (!last_rec.ParseFromString(*last) ||
      last_rec.hash() != ex.records(ex.records_size() - 1).hash()) {
    return absl::FailedPreconditionError(fmt::format(
        "prune: record {} in the store is not the export's: the export is of another chain; "
        "nothing pruned",
        range.last_seq));
  }
  KvBatch batch;
  for (const v1::StoredRecord& rec : ex.records()) {
    v1::ChainEntry entry;
    if (!entry.ParseFromString(rec.entry())) {
      return absl::DataLossError(fmt::format("prune: record {} does not parse", rec.seq()));
    }
    batch.Delete(RecordKey(rec.seq()));
    batch.Delete(UniqueKey(entry));
    for (const std::string& k : IndexKeys(entry, rec.seq())) batch.Delete(k);
  }
  // Checkpoints below the last exported record go; the one at it signs the new genesis.
  CHASQUI_RETURN_IF_ERROR(store.Scan(CheckpointKey(range.first_seq - 1),
                                     CheckpointKey(range.last_seq),
                                     [&](std::string_view key, std::string_view) {
                                       batch.Delete(key);
                                       return true;
                                     }));
  v1::PruneMarker marker;
  marker.set_first_seq(range.last_seq + 1);
  marker.set_genesis_hash(last_rec.hash());
  const Hash32 h = Blake2b256(file_bytes);
  marker.set_export_hash(std::string(AsView(h)));
  marker.set_pruned_at_ms(now_ms);
  batch.Put(kPruneKey, marker.SerializeAsString());
  CHASQUI_RETURN_IF_ERROR(store.Write(batch, Durability::kSynced));
  return static_cast<uint64_t>(ex.records_size());
}

}  // namespace chasqui::audit
