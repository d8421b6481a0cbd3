#pragma once
// Adaptive batch signatures (DESIGN.md, "The envelope"). A signing thread takes whatever has
// queued and signs it as one batch (up to kMaxTreeLeaves); while it computes a signature, newly
// submitted headers queue and the next round signs them together, as in X-Road. An idle signer
// signs a batch of one at once; no wait is ever added to grow a batch. The signing runs off the
// submitting thread on purpose: a single producer (one NATS subscription thread) keeps
// producing while a signature is computed, so batches form under load.

#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "chasqui/v1/envelope.pb.h"
#include "common/crypto/sodium.h"

namespace chasqui {

class BatchSigner {
 public:
  // Called exactly once per submitted header, with the header bytes and their signature, on
  // the signing thread. Must not block for long: the next round waits for it.
  using Done = std::function<void(std::string header_bytes, v1::Signature signature)>;

  // `key` must outlive the signer. `tag` is the domain tag (EnvelopeTag(env)). Starts the
  // signing thread.
  BatchSigner(const SigningKey& key, std::string tag);
  // Stop().
  ~BatchSigner();
  BatchSigner(const BatchSigner&) = delete;
  BatchSigner& operator=(const BatchSigner&) = delete;

  // Queues a header for the next round. Thread-safe. After Stop(), signs on the calling thread.
  void Submit(std::string header_bytes, Done done);
  // Signs everything queued, runs its completions, and joins the signing thread. Owners call
  // it before tearing down what completions use. Idempotent.
  void Stop();

  // Statistics: batches signed and headers signed, for the mean batch size.
  uint64_t batches() const;
  uint64_t signed_headers() const;

 private:
  struct Item {
    std::string header;
    Done done;
  };
  void Run();
  void SignRound(std::vector<Item>& batch);
  bool HasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !queue_.empty() || stopping_; }

  const SigningKey& key_;
  const std::string tag_;
  mutable absl::Mutex mu_;
  std::vector<Item> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t batches_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t signed_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

// Sets header.body_hash from `body`, signs the header in `signer`'s next batch and hands the
// envelope's wire bytes to `send` (on whichever thread signs that batch).
void SignEnvelope(BatchSigner& signer, v1::Header header, std::string body,
                  std::function<void(std::string wire)> send);

}  // namespace chasqui
