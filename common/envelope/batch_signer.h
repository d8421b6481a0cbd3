#pragma once
// Adaptive batch signatures (DESIGN.md, "The envelope"). An idle signer signs a batch of one at
// once; while a signature is being computed, newly submitted headers queue and the next round
// signs them together (up to kMaxTreeLeaves), as in X-Road. No wait is ever added to grow a
// batch. The thread that finds the signer idle does the signing (leader/follower, like a
// database's group commit), so no thread hand-off is paid when idle.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "chasqui/v1/envelope.pb.h"
#include "common/crypto/sodium.h"

namespace chasqui {

class BatchSigner {
 public:
  // Called exactly once per submitted header, with its signature, possibly on another
  // submitter's thread. Must not block for long: it runs while others wait for the next round.
  // Gets the header bytes back, so callers need not keep a copy.
  using Done = std::function<void(std::string header_bytes, v1::Signature signature)>;

  // `key` must outlive the signer. `tag` is the domain tag (EnvelopeTag(env)).
  BatchSigner(const SigningKey& key, std::string tag);

  // Thread-safe. May run other submitters' completions before returning.
  void Submit(std::string header_bytes, Done done);

  // Statistics: batches signed and headers signed, for the mean batch size.
  uint64_t batches() const;
  uint64_t signed_headers() const;

 private:
  struct Item {
    std::string header;
    Done done;
  };
  void SignRound(std::vector<Item>& batch);

  const SigningKey& key_;
  const std::string tag_;
  mutable absl::Mutex mu_;
  std::vector<Item> queue_ ABSL_GUARDED_BY(mu_);
  bool signing_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t batches_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t signed_ ABSL_GUARDED_BY(mu_) = 0;
};

// Sets header.body_hash from `body`, signs the header in `signer`'s next batch and hands the
// envelope's wire bytes to `send` (on whichever thread signs that batch).
void SignEnvelope(BatchSigner& signer, v1::Header header, std::string body,
                  std::function<void(std::string wire)> send);

}  // namespace chasqui
