#pragma once
// The audit service on NATS (DESIGN.md, "The parts"):
//   chq.ctl.audit.append  AppendBatch -> AppendAck, published only after the batch's entries
//                         were written by a synced group commit (or refused)
//   chq.ctl.audit.certificates.<env>  AppendBatch{certificates} -> AppendAck{certificates}:
//                         the crypto service's transparency log entries of env (certificates
//                         issued), each acknowledged once durable, REPLAYED if already stored
//                         (unique per log sequence), so the crypto service resends until
//                         acknowledged. Only the crypto service's NATS user may publish here.
//   chq.ctl.audit.query   ControlRequest{AuditControlBody{query}} -> QueryResponse
//   chq.ctl.audit.report  ControlRequest{AuditControlBody{report}} -> ReportResponse
// All in the queue group `chq.audit`. Queries and reports are signed and narrowed to what the
// signer may read (audit_access.h); a refusal comes back in .error with its Chasqui code
// (FORBIDDEN, UNAUTHENTICATED, BAD_REQUEST, EXPIRED, REPLAYED, UNAVAILABLE) and a message
// naming the rule. Malformed input gets an error reply naming what is
// wrong (BAD_REQUEST in AppendAck.error / QueryResponse.error), never a crash, hang or silent
// drop; a request without a reply subject cannot be answered, so it is counted, logged and
// not appended (nobody could learn its outcome).
// Handlers never block on the disk: acks are published from the chain's writer thread.

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/bus/bus.h"
#include "common/store/kv_store.h"
#include "services/audit/audit_access.h"
#include "services/audit/audit_chain.h"
#include "services/audit/audit_metrics.h"
#include "services/audit/audit_report.h"

namespace chasqui::audit {

inline constexpr char kAppendSubject[] = "chq.ctl.audit.append";
inline constexpr char kQuerySubject[] = "chq.ctl.audit.query";
inline constexpr char kReportSubject[] = "chq.ctl.audit.report";
inline std::string CertificatesSubject(std::string_view env) {
  return "chq.ctl.audit.certificates." + std::string(env);
}
inline constexpr char kQueueGroup[] = "chq.audit";
// Entries in one AppendBatch; a NATS payload (1 MiB) holds fewer anyway.
inline constexpr int kMaxBatchEntries = 4096;

struct AuditServiceOptions {
  // Verifies queries and reports; null: they are refused UNAVAILABLE (no --anchors).
  AuditAccess* access = nullptr;
  std::string report_zone = kDefaultReportZone;  // named in ReportResponse.zone
};

class AuditService {
 public:
  // `bus`, `chain`, `store`, `metrics` and `options.access` must outlive the service.
  // Subscribes the three subjects.
  static absl::StatusOr<std::unique_ptr<AuditService>> Start(
      Bus* bus, AuditChain* chain, KvStore* store, AuditMetrics* metrics,
      AuditServiceOptions options = {});
  ~AuditService();

  // OK while the chain takes appends and NATS is connected (for /readyz).
  absl::Status Ready() const;
  // Stops taking requests; those already queued are still answered by the chain.
  absl::Status Drain(absl::Duration timeout);

  // The handlers, public so tests can drive them without NATS.
  void HandleAppend(const BusMessage& msg);
  void HandleCertificates(const BusMessage& msg);
  void HandleQuery(const BusMessage& msg);
  void HandleReport(const BusMessage& msg);

 private:
  AuditService(Bus* bus, AuditChain* chain, KvStore* store, AuditMetrics* metrics,
               AuditServiceOptions options)
      : bus_(bus), chain_(chain), store_(store), metrics_(metrics), options_(std::move(options)) {}
  // The signed body of a query or report, or the refusal (logged and counted).
  absl::StatusOr<AuditAccess::Checked> CheckRead(std::string_view verb, const BusMessage& msg);
  // Checks, runs `run(body)` (-> StatusOr<Response>), answers, counts and logs one line.
  template <class Response, class Run>
  void AnswerRead(std::string_view verb, const BusMessage& msg, Run run);
  void ReplyError(std::string_view reply, std::string_view reason, std::string message);

  Bus* const bus_;
  AuditChain* const chain_;
  KvStore* const store_;
  AuditMetrics* const metrics_;
  const AuditServiceOptions options_;
  std::unique_ptr<Subscription> append_sub_;
  std::unique_ptr<Subscription> certificates_sub_;
  std::unique_ptr<Subscription> query_sub_;
  std::unique_ptr<Subscription> report_sub_;
};

}  // namespace chasqui::audit
