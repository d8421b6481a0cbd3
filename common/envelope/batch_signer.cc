#include "common/envelope/batch_signer.h"

#include <utility>

#include "common/crypto/hash_tree.h"
#include "common/envelope/envelope.h"

namespace chasqui {

BatchSigner::BatchSigner(const SigningKey& key, std::string tag)
    : key_(key), tag_(std::move(tag)), hook_(std::make_shared<BurstHook>()) {
  {
    absl::MutexLock lock(&hook_->mu);
    hook_->signer = this;
  }
  thread_ = std::thread([this] { Run(); });
}

BatchSigner::~BatchSigner() {
  Stop();
  // A burst on another thread may still name the hook; it must find nothing to call. Waits for
  // a SignHeld() already running through the hook.
  absl::MutexLock lock(&hook_->mu);
  hook_->signer = nullptr;
}

void BatchSigner::BurstHook::OnBurstEnd() {
  absl::MutexLock lock(&mu);
  if (signer != nullptr) signer->SignHeld();
}

void BatchSigner::Submit(std::string header_bytes, Done done) {
  std::vector<Item> full;
  {
    absl::MutexLock lock(&mu_);
    if (!stopped_) {
      queue_.push_back(Item{std::move(header_bytes), std::move(done)});
      if (!DeferToBurstEnd(hook_)) {
        wake_ = true;
      } else if (queue_.size() >= kMaxTreeLeaves) {
        TakeLocked(full);  // a full tree: no reason to hold it
      }
      if (full.empty()) return;
    } else {
      ++batches_;
      ++signed_;
      full.push_back(Item{std::move(header_bytes), std::move(done)});
    }
  }
  SignRound(full);
}

void BatchSigner::SignHeld() {
  std::vector<Item> batch;
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (queue_.empty()) return;
      TakeLocked(batch);
    }
    SignRound(batch);
    batch.clear();
  }
}

void BatchSigner::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  thread_.join();
}

void BatchSigner::TakeLocked(std::vector<Item>& batch) {
  if (queue_.size() <= kMaxTreeLeaves) {
    batch.swap(queue_);
  } else {
    batch.assign(std::make_move_iterator(queue_.begin()),
                 std::make_move_iterator(queue_.begin() + kMaxTreeLeaves));
    queue_.erase(queue_.begin(), queue_.begin() + kMaxTreeLeaves);
  }
  ++batches_;
  signed_ += batch.size();
}

void BatchSigner::Run() {
  std::vector<Item> batch;
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &BatchSigner::HasWork));
      if (queue_.empty()) {
        wake_ = false;
        if (stopping_) {
          stopped_ = true;
          return;
        }
        continue;
      }
      TakeLocked(batch);
      wake_ = !queue_.empty();
    }
    SignRound(batch);
    batch.clear();
  }
}

void BatchSigner::SignRound(std::vector<Item>& batch) {
  std::vector<Hash32> leaves;
  leaves.reserve(batch.size());
  for (const Item& item : batch) leaves.push_back(LeafHash(item.header));
  const HashTree tree(std::move(leaves));
  const uint32_t size = tree.size();
  const SignatureBytes sig = key_.Sign(BatchSignedMessage(tag_, size, tree.root()));
  for (uint32_t i = 0; i < size; ++i) {
    v1::Signature s;
    s.mutable_root_signature()->assign(reinterpret_cast<const char*>(sig.data()), sig.size());
    s.set_tree_size(size);
    s.set_leaf_index(i);
    for (const Hash32& node : tree.Path(i)) {
      s.add_path()->assign(reinterpret_cast<const char*>(node.data()), node.size());
    }
    batch[i].done(std::move(batch[i].header), std::move(s));
  }
}

uint64_t BatchSigner::batches() const {
  absl::MutexLock lock(&mu_);
  return batches_;
}

uint64_t BatchSigner::signed_headers() const {
  absl::MutexLock lock(&mu_);
  return signed_;
}

void SignEnvelope(BatchSigner& signer, v1::Header header, std::string body,
                  std::function<void(std::string wire)> send) {
  const Hash32 body_hash = Blake2b256(body);
  header.mutable_body_hash()->assign(reinterpret_cast<const char*>(body_hash.data()),
                                     body_hash.size());
  signer.Submit(header.SerializeAsString(),
                [body = std::move(body), send = std::move(send)](std::string header_bytes,
                                                                 v1::Signature sig) mutable {
                  v1::Envelope envelope;
                  envelope.set_header(std::move(header_bytes));
                  envelope.set_body(std::move(body));
                  *envelope.mutable_sig() = std::move(sig);
                  send(envelope.SerializeAsString());
                });
}

}  // namespace chasqui
