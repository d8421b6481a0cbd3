#pragma once
// A service's durable state: RocksDB behind a small interface (leveldb's DB / DBImpl), so
// logic can be unit-tested against a fake and integration tests use the real store.
//
// Durability: a write with Durability::kSynced returns only after RocksDB's WAL is fsynced,
// so what it acknowledges survives kill -9 and power loss. Group commit is the caller's
// (put many records in one KvBatch), and RocksDB also merges concurrent synced writers.
//
// Errors: RocksDB's status is converted once, here: Corruption -> DataLoss (the store's own
// checksums caught damaged data), IOError / Busy / TryAgain -> Unavailable, NotFound ->
// NotFound, InvalidArgument -> InvalidArgument, others -> Internal. Messages name the path.
// Thread-safe.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace chasqui {

struct KvOptions {
  std::string path;              // a directory; created when missing
  bool create_if_missing = true;
  // Verify block checksums on every read (RocksDB's paranoid read path); on for stores
  // whose readers must report corruption rather than return damaged bytes.
  bool verify_checksums = true;
};

enum class Durability { kBuffered, kSynced };

// Puts and deletes applied atomically by KvStore::Write.
class KvBatch {
 public:
  void Put(std::string_view key, std::string_view value);
  void Delete(std::string_view key);
  size_t size() const { return ops_.size(); }
  bool empty() const { return ops_.empty(); }
  void Clear() { ops_.clear(); }

  struct Op {
    bool is_delete = false;
    std::string key;
    std::string value;
  };
  const std::vector<Op>& ops() const { return ops_; }

 private:
  std::vector<Op> ops_;
};

class KvStore {
 public:
  // Opens (or creates) the store at options.path. Unavailable when another process holds it
  // (RocksDB's LOCK file) or the directory cannot be used; the message names the path.
  static absl::StatusOr<std::unique_ptr<KvStore>> Open(const KvOptions& options);
  virtual ~KvStore() = default;

  // NotFound if absent.
  virtual absl::StatusOr<std::string> Get(std::string_view key) = 0;
  virtual absl::Status Write(const KvBatch& batch, Durability durability) = 0;
  absl::Status Put(std::string_view key, std::string_view value, Durability durability);

  // Calls `visit(key, value)` for keys in [start, end) in byte order (end empty: to the end),
  // until it returns false. Reverse order when `reverse`. A consistent snapshot.
  using Visitor = std::function<bool(std::string_view key, std::string_view value)>;
  virtual absl::Status Scan(std::string_view start, std::string_view end, const Visitor& visit,
                            bool reverse = false) = 0;

  // The last key in [start, end) with its value; NotFound if the range is empty.
  absl::StatusOr<std::pair<std::string, std::string>> Last(std::string_view start,
                                                            std::string_view end);

  virtual const std::string& path() const = 0;
};

// Keys that sort like the numbers they hold: 8 bytes, big-endian.
std::string BigEndian64(uint64_t value);
uint64_t FromBigEndian64(std::string_view bytes);  // bytes.size() must be 8

}  // namespace chasqui
