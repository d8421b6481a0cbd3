#include "common/store/kv_store.h"

#include <filesystem>

#include "fmt/format.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/write_batch.h"

namespace chasqui {
namespace {

absl::Status FromRocks(const rocksdb::Status& s, std::string_view path, std::string_view what) {
  if (s.ok()) return absl::OkStatus();
  std::string message = fmt::format("store {}: {}: {}", path, what, s.ToString());
  if (s.IsCorruption()) return absl::DataLossError(message);
  if (s.IsIOError() || s.IsBusy() || s.IsTryAgain() || s.IsTimedOut() || s.IsIncomplete()) {
    return absl::UnavailableError(message);
  }
  if (s.IsNotFound()) return absl::NotFoundError(message);
  if (s.IsInvalidArgument()) return absl::InvalidArgumentError(message);
  return absl::InternalError(message);
}

rocksdb::Slice ToSlice(std::string_view s) { return rocksdb::Slice(s.data(), s.size()); }

class RocksKvStore final : public KvStore {
 public:
  RocksKvStore(std::unique_ptr<rocksdb::DB> db, KvOptions options)
      : db_(std::move(db)), options_(std::move(options)) {}

  absl::StatusOr<std::string> Get(std::string_view key) override {
    rocksdb::ReadOptions read;
    read.verify_checksums = options_.verify_checksums;
    std::string value;
    rocksdb::Status s = db_->Get(read, ToSlice(key), &value);
    if (s.IsNotFound()) return absl::NotFoundError("no such key");
    if (!s.ok()) return FromRocks(s, options_.path, "get");
    return value;
  }

  absl::Status Write(const KvBatch& batch, Durability durability) override {
    rocksdb::WriteBatch wb;
    for (const KvBatch::Op& op : batch.ops()) {
      rocksdb::Status s = op.is_delete ? wb.Delete(ToSlice(op.key))
                                       : wb.Put(ToSlice(op.key), ToSlice(op.value));
      if (!s.ok()) return FromRocks(s, options_.path, "batch");
    }
    rocksdb::WriteOptions write;
    write.sync = durability == Durability::kSynced;
    return FromRocks(db_->Write(write, &wb), options_.path, "write");
  }

  absl::Status Scan(std::string_view start, std::string_view end, const Visitor& visit,
                    bool reverse) override {
    rocksdb::ReadOptions read;
    read.verify_checksums = options_.verify_checksums;
    std::string end_copy(end);
    rocksdb::Slice upper(end_copy);
    if (!end.empty()) read.iterate_upper_bound = &upper;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read));
    if (!reverse) {
      it->Seek(ToSlice(start));
    } else if (end.empty()) {
      it->SeekToLast();
    } else {
      it->SeekForPrev(ToSlice(end));
      if (it->Valid() && it->key() == upper) it->Prev();
    }
    for (; it->Valid(); reverse ? it->Prev() : it->Next()) {
      std::string_view key(it->key().data(), it->key().size());
      if (reverse && key < start) break;
      if (!visit(key, std::string_view(it->value().data(), it->value().size()))) break;
    }
    return FromRocks(it->status(), options_.path, "scan");
  }

  const std::string& path() const override { return options_.path; }

 private:
  std::unique_ptr<rocksdb::DB> db_;
  const KvOptions options_;
};

}  // namespace

void KvBatch::Put(std::string_view key, std::string_view value) {
  ops_.push_back(Op{false, std::string(key), std::string(value)});
}

void KvBatch::Delete(std::string_view key) { ops_.push_back(Op{true, std::string(key), {}}); }

absl::Status KvStore::Put(std::string_view key, std::string_view value, Durability durability) {
  KvBatch batch;
  batch.Put(key, value);
  return Write(batch, durability);
}

absl::StatusOr<std::pair<std::string, std::string>> KvStore::Last(std::string_view start,
                                                                  std::string_view end) {
  std::pair<std::string, std::string> last;
  bool found = false;
  absl::Status s = Scan(
      start, end,
      [&](std::string_view k, std::string_view v) {
        last = {std::string(k), std::string(v)};
        found = true;
        return false;
      },
      /*reverse=*/true);
  if (!s.ok()) return s;
  if (!found) return absl::NotFoundError("empty range");
  return last;
}

absl::StatusOr<std::unique_ptr<KvStore>> KvStore::Open(const KvOptions& options) {
  if (options.path.empty()) return absl::InvalidArgumentError("store path is empty");
  std::error_code ec;
  if (options.create_if_missing) std::filesystem::create_directories(options.path, ec);
  if (ec) {
    return absl::UnavailableError(
        fmt::format("store {}: cannot create the directory: {}", options.path, ec.message()));
  }
  rocksdb::Options rocks;
  rocks.create_if_missing = options.create_if_missing;
  rocks.paranoid_checks = true;
  // Our processes log one line per event; RocksDB's own LOG stays in the store directory.
  rocks.keep_log_file_num = 3;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(rocks, options.path, &raw);
  if (!s.ok()) return FromRocks(s, options.path, "open");
  return std::unique_ptr<KvStore>(
      new RocksKvStore(std::unique_ptr<rocksdb::DB>(raw), options));
}

std::string BigEndian64(uint64_t value) {
  std::string out(8, '\0');
  for (int i = 7; i >= 0; --i) {
    out[i] = static_cast<char>(value & 0xff);
    value >>= 8;
  }
  return out;
}

uint64_t FromBigEndian64(std::string_view bytes) {
  uint64_t value = 0;
  for (size_t i = 0; i < 8 && i < bytes.size(); ++i) {
    value = (value << 8) | static_cast<unsigned char>(bytes[i]);
  }
  return value;
}

}  // namespace chasqui
