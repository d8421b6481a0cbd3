#pragma once
// Adaptive batch signatures (DESIGN.md, "The envelope"): one Ed25519 signature covers every
// header that is ready, up to kMaxTreeLeaves; no wait is ever added to grow a batch.
// - Submitted from a NATS handler (common/core/burst.h), a header waits only for the backlog
//   of messages already queued on that subscription to be handled; when the backlog is drained,
//   the whole burst's headers are signed together, on that thread. Under load, bursts grow by
//   themselves; an idle sender's burst is one message.
// - Submitted from any other thread, a header wakes the signing thread at once; while it signs,
//   newly submitted headers queue and the next round signs them together, as in X-Road.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "chasqui/v1/envelope.pb.h"
#include "common/core/burst.h"
#include "common/crypto/sodium.h"

namespace chasqui {

class BatchSigner {
 public:
  // Called exactly once per submitted header, with the header bytes and their signature, on
  // the thread that signs its batch. Must not block for long: the next round waits for it.
  using Done = std::function<void(std::string header_bytes, v1::Signature signature)>;

  // `key` must outlive the signer. `tag` is the domain tag (EnvelopeTag(env)). Starts the
  // signing thread.
  BatchSigner(const SigningKey& key, std::string tag);
  // Stop().
  ~BatchSigner();
  BatchSigner(const BatchSigner&) = delete;
  BatchSigner& operator=(const BatchSigner&) = delete;

  // Queues a header for the next round. Thread-safe. After Stop(), signs on the calling thread.
  // Inside a burst, the signer must outlive that burst.
  void Submit(std::string header_bytes, Done done);
  // Signs everything queued (held in a burst or not), runs its completions, and joins the
  // signing thread. Owners call it before tearing down what completions use. Idempotent; not
  // from inside a completion.
  void Stop();

  // Statistics: batches signed and headers signed, for the mean batch size.
  uint64_t batches() const;
  uint64_t signed_headers() const;

 private:
  struct Item {
    std::string header;
    Done done;
  };
  // What a burst holds a weak reference to: it outlives the signer only as a disarmed shell.
  struct BurstHook : BurstListener {
    void OnBurstEnd() override;
    absl::Mutex mu;
    BatchSigner* signer ABSL_GUARDED_BY(mu) = nullptr;
  };

  void Run();
  void SignHeld();
  // Moves up to kMaxTreeLeaves queued items into `batch` and counts the round.
  void TakeLocked(std::vector<Item>& batch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SignRound(std::vector<Item>& batch);
  bool HasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return wake_ || stopping_; }

  const SigningKey& key_;
  const std::string tag_;
  mutable absl::Mutex mu_;
  std::vector<Item> queue_ ABSL_GUARDED_BY(mu_);
  bool wake_ ABSL_GUARDED_BY(mu_) = false;  // items outside any burst are waiting
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t batches_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t signed_ ABSL_GUARDED_BY(mu_) = 0;
  std::shared_ptr<BurstHook> hook_;
  std::thread thread_;
};

// Sets header.body_hash from `body`, signs the header in `signer`'s next batch and hands the
// envelope's wire bytes to `send` (on whichever thread signs that batch).
void SignEnvelope(BatchSigner& signer, v1::Header header, std::string body,
                  std::function<void(std::string wire)> send);

}  // namespace chasqui
