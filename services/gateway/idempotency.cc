#include "services/gateway/idempotency.h"

#include <list>
#include <utility>
#include <vector>

#include "absl/container/node_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "common/envelope/errors.h"
#include "fmt/format.h"

namespace chasqui {
namespace {

// Names never hold a NUL, and keys are printable ASCII: the joined key is unambiguous.
std::string JoinedKey(const IdempotencyKey& k) {
  std::string out;
  out.reserve(k.consumer.size() + k.service.size() + k.key.size() + 2);
  out.append(k.consumer).push_back('\0');
  out.append(k.service).push_back('\0');
  out.append(k.key);
  return out;
}

// What an answer costs beside its body: the key, the entry and the list node.
constexpr size_t kEntryOverheadBytes = 256;

class MemoryIdempotencyStore final : public IdempotencyStore {
 public:
  MemoryIdempotencyStore(const IdempotencyOptions& options, const Clock& clock)
      : options_(options), clock_(clock) {}

  Begun Begin(const IdempotencyKey& key, const Hash32& body_hash, RememberedAnswer* answer,
              Waiter waiter) override {
    const std::string joined = JoinedKey(key);
    absl::MutexLock lock(&mu_);
    ExpireLocked();
    auto [it, inserted] = entries_.try_emplace(joined);
    Entry& e = it->second;
    if (inserted) {
      e.body_hash = body_hash;
      return Begun::kStarted;
    }
    if (e.body_hash != body_hash) return Begun::kConflict;
    if (e.answered) {
      *answer = e.answer;
      return Begun::kAnswered;
    }
    if (e.waiters.size() >= kMaxWaitersPerKey) return Begun::kTooMany;
    e.waiters.push_back(std::move(waiter));
    return Begun::kJoined;
  }

  void Finish(const IdempotencyKey& key, RememberedAnswer answer) override {
    const std::string joined = JoinedKey(key);
    std::vector<Waiter> waiters;
    {
      absl::MutexLock lock(&mu_);
      auto it = entries_.find(joined);
      if (it == entries_.end() || it->second.answered) return;  // not ours to finish
      Entry& e = it->second;
      waiters.swap(e.waiters);
      const size_t cost = joined.size() + answer.body.size() + kEntryOverheadBytes;
      if (cost > options_.max_bytes || options_.max_entries == 0) {
        entries_.erase(it);  // too large to keep: the answer goes to the waiters only
      } else {
        e.answered = true;
        e.answer = answer;
        e.cost = cost;
        e.expires_ns = clock_.NowMonoNanos() + absl::ToInt64Nanoseconds(options_.ttl);
        e.order = order_.insert(order_.end(), joined);
        bytes_ += cost;
        while (order_.size() > options_.max_entries || bytes_ > options_.max_bytes) {
          ForgetOldestLocked();
        }
      }
    }
    for (Waiter& w : waiters) w(answer);
  }

  void Abandon(const IdempotencyKey& key, const RememberedAnswer& answer) override {
    std::vector<Waiter> waiters;
    {
      absl::MutexLock lock(&mu_);
      auto it = entries_.find(JoinedKey(key));
      if (it == entries_.end() || it->second.answered) return;
      waiters.swap(it->second.waiters);
      entries_.erase(it);
    }
    for (Waiter& w : waiters) w(answer);
  }

  size_t size() const override {
    absl::MutexLock lock(&mu_);
    return order_.size();
  }

 private:
  struct Entry {
    Hash32 body_hash{};
    bool answered = false;  // else: running, and `waiters` wait for it
    RememberedAnswer answer;
    std::vector<Waiter> waiters;
    size_t cost = 0;
    int64_t expires_ns = 0;
    std::list<std::string>::iterator order;  // valid when answered
  };

  void ExpireLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const int64_t now = clock_.NowMonoNanos();
    while (!order_.empty() && entries_.at(order_.front()).expires_ns <= now) {
      ForgetOldestLocked();
    }
  }

  void ForgetOldestLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = entries_.find(order_.front());
    bytes_ -= it->second.cost;
    entries_.erase(it);
    order_.pop_front();
  }

  const IdempotencyOptions options_;
  const Clock& clock_;
  mutable absl::Mutex mu_;
  // Running and answered requests; node-based, so an Entry stays put while it waits.
  absl::node_hash_map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
  std::list<std::string> order_ ABSL_GUARDED_BY(mu_);  // answered keys, oldest first
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace

absl::Status ValidateIdempotencyKey(std::string_view key) {
  if (key.empty() || key.size() > kMaxIdempotencyKeyBytes) {
    return ChasquiError(v1::BAD_REQUEST,
                        fmt::format("Idempotency-Key is {} bytes; expected 1 to {} printable "
                                    "ASCII characters",
                                    key.size(), kMaxIdempotencyKeyBytes));
  }
  for (unsigned char c : key) {
    if (c < 0x20 || c > 0x7e) {
      return ChasquiError(v1::BAD_REQUEST, "Idempotency-Key must be printable ASCII characters");
    }
  }
  return absl::OkStatus();
}

std::unique_ptr<IdempotencyStore> NewMemoryIdempotencyStore(const IdempotencyOptions& options,
                                                            const Clock& clock) {
  return std::make_unique<MemoryIdempotencyStore>(options, clock);
}

}  // namespace chasqui
