#pragma once
// An in-memory KvStore for unit tests of the audit chain. It can hold a write inside Write()
// (as if the fsync were slow) until the test releases it, records whether any write was not
// synced, and can fail writes on demand.

#include <condition_variable>
#include <map>
#include <mutex>
#include <string>

#include "common/store/kv_store.h"

namespace chasqui::audit::testing {

class FakeKvStore final : public KvStore {
 public:
  absl::StatusOr<std::string> Get(std::string_view key) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = data_.find(std::string(key));
    if (it == data_.end()) return absl::NotFoundError("no such key");
    return it->second;
  }

  absl::Status Write(const KvBatch& batch, Durability durability) override {
    std::unique_lock<std::mutex> lock(mu_);
    ++writes_;
    if (durability != Durability::kSynced) ++buffered_writes_;
    ++in_write_;
    cv_.notify_all();
    // The "sync": until released, nothing written here is durable, so nothing may be acked.
    cv_.wait(lock, [&] { return !hold_; });
    --in_write_;
    if (!fail_.ok()) return fail_;
    for (const KvBatch::Op& op : batch.ops()) {
      if (op.is_delete) {
        data_.erase(op.key);
      } else {
        data_[op.key] = op.value;
      }
    }
    ++synced_writes_done_;
    return absl::OkStatus();
  }

  absl::Status Scan(std::string_view start, std::string_view end, const Visitor& visit,
                    bool reverse) override {
    std::map<std::string, std::string> snapshot;
    {
      std::lock_guard<std::mutex> lock(mu_);
      snapshot = data_;
    }
    auto lo = snapshot.lower_bound(std::string(start));
    auto hi = end.empty() ? snapshot.end() : snapshot.lower_bound(std::string(end));
    if (!reverse) {
      for (auto it = lo; it != hi; ++it) {
        if (!visit(it->first, it->second)) break;
      }
    } else {
      for (auto it = hi; it != lo;) {
        --it;
        if (!visit(it->first, it->second)) break;
      }
    }
    return absl::OkStatus();
  }

  const std::string& path() const override { return path_; }

  void Hold() {
    std::lock_guard<std::mutex> lock(mu_);
    hold_ = true;
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    hold_ = false;
    cv_.notify_all();
  }
  // Waits (bounded) until a write is inside Write(), held.
  bool WaitForHeldWrite() {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return in_write_ > 0; });
  }
  void FailWrites(absl::Status s) {
    std::lock_guard<std::mutex> lock(mu_);
    fail_ = std::move(s);
  }
  int buffered_writes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return buffered_writes_;
  }
  int synced_writes_done() const {
    std::lock_guard<std::mutex> lock(mu_);
    return synced_writes_done_;
  }
  std::map<std::string, std::string> data() const {
    std::lock_guard<std::mutex> lock(mu_);
    return data_;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::string> data_;
  bool hold_ = false;
  int in_write_ = 0;
  int writes_ = 0;
  int buffered_writes_ = 0;
  int synced_writes_done_ = 0;
  absl::Status fail_;
  std::string path_ = "fake-store";
};

}  // namespace chasqui::audit::testing
