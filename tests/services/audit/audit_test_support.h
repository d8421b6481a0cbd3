#pragma once
// Records and a collector of append outcomes, shared by the audit tests.

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "chasqui/v1/audit.pb.h"
#include "fmt/format.h"
#include "services/audit/audit_chain.h"

namespace chasqui::audit::testing {

inline v1::AuditRecord MakeRecord(uint64_t n, std::string consumer = "sin",
                                  std::string end_user = "ana.perez", uint64_t sender = 4242) {
  v1::AuditRecord r;
  r.set_request_id(fmt::format("req-{:012}", n));
  r.set_sender_cert(sender);
  r.set_env("test");
  r.set_consumer(std::move(consumer));
  r.set_provider("segip");
  r.set_service("persona_consulta");
  r.set_service_version("1");
  r.set_end_user(std::move(end_user));
  r.set_purpose("tramite");
  r.set_received_at_ms(1'800'000'000'000 + static_cast<int64_t>(n) * 10);
  r.set_forwarded_at_ms(r.received_at_ms() + 1);
  r.set_replied_at_ms(r.received_at_ms() + 3);
  r.set_outcome(n % 5 == 0 ? v1::FORBIDDEN : v1::OK);
  r.set_request_body_bytes(100);
  r.set_request_body_hash(std::string(32, 'a'));
  r.set_reply_body_bytes(200);
  r.set_reply_body_hash(std::string(32, 'b'));
  r.mutable_request()->set_header("consumer-signed-header");
  r.mutable_request()->mutable_sig()->set_root_signature(std::string(64, 's'));
  r.mutable_request()->mutable_sig()->set_tree_size(1);
  r.mutable_reply()->set_header("provider-signed-header");
  r.mutable_reply()->mutable_sig()->set_root_signature(std::string(64, 't'));
  r.set_replier_cert(77);
  r.set_router_id("r1");
  return r;
}

// Collects outcomes by a caller-chosen key; thread-safe; waits are bounded.
class Outcomes {
 public:
  AppendCallback For(uint64_t key) {
    return [this, key](absl::StatusOr<uint64_t> r) {
      std::lock_guard<std::mutex> lock(mu_);
      results_.insert_or_assign(key, std::move(r));
      cv_.notify_all();
    };
  }
  bool WaitFor(size_t n, std::chrono::milliseconds bound = std::chrono::seconds(10)) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, bound, [&] { return results_.size() >= n; });
  }
  size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return results_.size();
  }
  absl::StatusOr<uint64_t> Get(uint64_t key) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = results_.find(key);
    if (it == results_.end()) return absl::NotFoundError("no outcome yet");
    return it->second;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, absl::StatusOr<uint64_t>> results_;
};

}  // namespace chasqui::audit::testing
