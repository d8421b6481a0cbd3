#pragma once
// Idempotent requests on the provider's side. A consumer system may send an Idempotency-Key
// with a request (it travels signed, in Header.idempotency_key); the provider remembers, per
// (consumer, service, key), the answer its system gave, and answers a repeat with that same
// answer without calling its system again. So a consumer system can retry after a timeout
// without the query running twice.
//
// What is remembered is the answer's plaintext and code, not the sealed envelope: every repeat
// is a new exchange with its own id, seal and trace record.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "chasqui/v1/envelope.pb.h"
#include "common/core/clock.h"
#include "common/crypto/sodium.h"
#include "common/envelope/envelope.h"  // kMaxIdempotencyKeyBytes

namespace chasqui {

// BAD_REQUEST (a ChasquiError) unless `key` is 1 to 128 printable ASCII characters
// (0x20..0x7e).
absl::Status ValidateIdempotencyKey(std::string_view key);

// The answer a provider's system gave: OK with the reply body, or an error code with its
// detail (which travels sealed for the consumer, like the first time).
struct RememberedAnswer {
  v1::Code code = v1::OK;
  std::string body;
};

struct IdempotencyOptions {
  // How long an answer is remembered after it was given.
  absl::Duration ttl = absl::Hours(24);
  // Bounds on what is remembered; past either, the oldest answers are forgotten first. An
  // answer larger than max_bytes on its own is not remembered at all.
  size_t max_entries = 100'000;
  size_t max_bytes = 64u << 20;
};

struct IdempotencyKey {
  std::string consumer;
  std::string service;
  std::string key;
};

// Where a provider keeps its answers. Implementations are thread-safe.
class IdempotencyStore {
 public:
  enum class Begun {
    kStarted,     // first sight: the caller runs the request, then calls Finish or Abandon
    kAnswered,    // *answer holds the remembered answer
    kJoined,      // the same request is running: `waiter` will get its answer
    kConflict,    // the key was used with a different body
    kTooMany,     // the same request is running and too many repeats already wait for it
  };
  using Waiter = std::function<void(const RememberedAnswer&)>;

  virtual ~IdempotencyStore() = default;

  // Looks `key` up for a request whose plaintext body hashes to `body_hash`. `waiter` is kept
  // only when the result is kJoined.
  virtual Begun Begin(const IdempotencyKey& key, const Hash32& body_hash,
                      RememberedAnswer* answer, Waiter waiter) = 0;
  // The request begun with kStarted got `answer` from the provider's system: remember it and
  // hand it to the waiters (on this thread, outside any lock).
  virtual void Finish(const IdempotencyKey& key, RememberedAnswer answer) = 0;
  // The request begun with kStarted was not run (the system was never asked, e.g. the provider
  // was saturated): forget the key, and hand `answer` to the waiters without remembering it.
  virtual void Abandon(const IdempotencyKey& key, const RememberedAnswer& answer) = 0;

  // Answers remembered now.
  virtual size_t size() const = 0;
};

// In memory, per process: answers are lost on a restart, and replicas of a provider's gateway
// do not share them. Time-ordered: answers are forgotten in the order they were given (the
// TTL is the same for all, so that is also the order they expire). At most kMaxWaitersPerKey
// repeats wait for one running request.
inline constexpr size_t kMaxWaitersPerKey = 16;
std::unique_ptr<IdempotencyStore> NewMemoryIdempotencyStore(
    const IdempotencyOptions& options, const Clock& clock = SystemClock());

}  // namespace chasqui
