#pragma once
// Every certificate issued is also written to the audit chain (DESIGN.md, "Trust"). The
// transparency log (authority.h, log/<seq>) stays the crypto service's own append-only record;
// this feed sends its entries, in log order, to the audit service of each certificate's
// environment on chq.ctl.audit.certificates.<env> and moves a per-env cursor past an entry only
// once the audit service acknowledged it (durable, or already stored: the audit keeps each log
// sequence once). The cursor lives in the authority's store:
//   meta/audit_fed/<env>   be64: every entry of env up to this log sequence is in the audit chain
// So nothing is lost while the audit service is down or restarting: the feed resends from the
// cursor every `retry` until it is acknowledged, and a resend is never stored twice.
//
// One thread. Wake() after an enrolment sends at once; otherwise it looks every `retry`.
// Thread-safe.

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/bus/bus.h"
#include "common/bus/request_mux.h"
#include "common/store/kv_store.h"

namespace chasqui {

// The audit service's subject for certificates issued in `env` (services/audit/audit_service.h
// serves it; kept here too so the crypto service does not link the audit library).
std::string AuditCertificatesSubject(std::string_view env);

struct AuditFeedOptions {
  std::vector<std::string> envs = {"test", "prod"};
  // Where the audit service's acks come back (the crypto user's own inbox).
  std::string inbox_prefix = "_INBOX._crypto.feed";
  absl::Duration timeout = absl::Seconds(2);
  absl::Duration retry = absl::Seconds(1);
  size_t max_batch = 100;
};

class AuditFeed {
 public:
  // `bus` and `store` must outlive the feed. Starts the thread.
  static absl::StatusOr<std::unique_ptr<AuditFeed>> Start(const AuditFeedOptions& options,
                                                          Bus* bus, KvStore* store);
  ~AuditFeed();

  // Something new was logged: send now.
  void Wake();
  // The cursor of `env` (0 before anything was acknowledged).
  uint64_t Acknowledged(std::string_view env) const;

 private:
  AuditFeed(const AuditFeedOptions& options, Bus* bus, KvStore* store)
      : options_(options), bus_(bus), store_(store) {}
  void Run();
  // One batch for `env`; true if the cursor moved (there may be more).
  absl::StatusOr<bool> SendOnce(const std::string& env);

  const AuditFeedOptions options_;
  Bus* const bus_;
  KvStore* const store_;
  std::unique_ptr<RequestMux> mux_;
  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool woken_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::pair<std::string, uint64_t>> cursors_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace chasqui
