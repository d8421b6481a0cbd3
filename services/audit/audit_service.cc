#include "services/audit/audit_service.h"

#include <mutex>
#include <utility>
#include <vector>

#include "common/core/log.h"
#include "common/core/status.h"
#include "fmt/format.h"
#include "common/envelope/errors.h"
#include "services/audit/audit_query.h"

namespace chasqui::audit {
namespace {

// The acks of one AppendBatch, filled from the writer thread; published when the last entry
// is answered.
struct PendingAck {
  std::mutex mu;
  v1::AppendAck ack;
  int remaining = 0;
  std::string reply;
};

void Fill(v1::RecordAck* ack, const absl::StatusOr<uint64_t>& result) {
  if (result.ok()) {
    ack->set_status(v1::ACK_DURABLE);
    ack->set_seq(*result);
    return;
  }
  const absl::Status& s = result.status();
  if (absl::IsAlreadyExists(s)) {
    ack->set_status(v1::ACK_REPLAYED);
    // The chain names the original seq in the message; keep it for the reader.
    ack->set_error(std::string(MessageOf(s)));
    return;
  }
  ack->set_status(absl::IsInvalidArgument(s) ? v1::ACK_REJECTED : v1::ACK_FAILED);
  ack->set_error(std::string(MessageOf(s)));
}

// What a read asked for, for the log: the filters that name entities, never an end user.
std::string Describe(const v1::AuditControlBody& body) {
  if (body.has_report()) {
    const v1::ReportRequest& r = body.report();
    return fmt::format("consumer={} provider={} service={} days {}..{}", r.consumer(),
                       r.provider(), r.service(), r.from_day(), r.to_day());
  }
  const v1::QueryRequest& q = body.query();
  return fmt::format("consumer={} provider={} service={} from_ms={} to_ms={}", q.consumer(),
                     q.provider(), q.service(), q.from_ms(), q.to_ms());
}

}  // namespace

absl::StatusOr<std::unique_ptr<AuditService>> AuditService::Start(
    Bus* bus, AuditChain* chain, KvStore* store, AuditMetrics* metrics,
    AuditServiceOptions options) {
  std::unique_ptr<AuditService> service(
      new AuditService(bus, chain, store, metrics, std::move(options)));
  AuditService* s = service.get();
  CHASQUI_ASSIGN_OR_RETURN(
      service->append_sub_,
      bus->QueueSubscribe(kAppendSubject, kQueueGroup,
                          [s](const BusMessage& m) { s->HandleAppend(m); }));
  CHASQUI_ASSIGN_OR_RETURN(
      service->query_sub_,
      bus->QueueSubscribe(kQuerySubject, kQueueGroup,
                          [s](const BusMessage& m) { s->HandleQuery(m); }));
  CHASQUI_ASSIGN_OR_RETURN(
      service->report_sub_,
      bus->QueueSubscribe(kReportSubject, kQueueGroup,
                          [s](const BusMessage& m) { s->HandleReport(m); }));
  const std::string certificates = CertificatesSubject(chain->env());
  CHASQUI_ASSIGN_OR_RETURN(
      service->certificates_sub_,
      bus->QueueSubscribe(certificates, kQueueGroup,
                          [s](const BusMessage& m) { s->HandleCertificates(m); }));
  CHASQUI_RETURN_IF_ERROR(bus->Flush(absl::Seconds(5)));
  CHQ_LOG_INFO("audit serving {}, {}, {} and {} (queue {}); reads {}", kAppendSubject,
               certificates, kQuerySubject, kReportSubject, kQueueGroup,
               service->options_.access == nullptr ? "refused (no --anchors)"
                                                   : "signed and narrowed by certificate");
  return service;
}

AuditService::~AuditService() {
  append_sub_.reset();
  certificates_sub_.reset();
  query_sub_.reset();
  report_sub_.reset();
}

absl::Status AuditService::Ready() const {
  CHASQUI_RETURN_IF_ERROR(chain_->Healthy());
  if (!bus_->Connected()) return absl::UnavailableError("not connected to NATS");
  return absl::OkStatus();
}

absl::Status AuditService::Drain(absl::Duration timeout) {
  absl::Status first;
  for (auto* sub : {&append_sub_, &certificates_sub_, &query_sub_, &report_sub_}) {
    if (*sub == nullptr) continue;
    absl::Status s = (*sub)->Drain(timeout);
    if (first.ok()) first = s;
  }
  return first;
}

void AuditService::ReplyError(std::string_view reply, std::string_view reason,
                              std::string message) {
  if (metrics_ != nullptr) metrics_->CountMalformed(reason);
  CHQ_LOG_WARN("audit append refused ({}): {}", reason, message);
  v1::AppendAck ack;
  ack.mutable_error()->set_code(v1::BAD_REQUEST);
  ack.mutable_error()->set_message(std::move(message));
  if (absl::Status s = bus_->Publish(reply, ack.SerializeAsString()); !s.ok()) {
    CHQ_LOG_WARN("audit: error reply not sent: {}", MessageOf(s));
  }
}

void AuditService::HandleAppend(const BusMessage& msg) {
  if (msg.reply.empty()) {
    if (metrics_ != nullptr) metrics_->CountMalformed("no_reply_subject");
    CHQ_LOG_WARN("audit append without a reply subject ({} bytes): not appended", msg.data.size());
    return;
  }
  auto batch = std::make_shared<v1::AppendBatch>();
  if (!batch->ParseFromArray(msg.data.data(), static_cast<int>(msg.data.size()))) {
    ReplyError(msg.reply, "parse",
               fmt::format("AppendBatch: {} bytes that do not parse", msg.data.size()));
    return;
  }
  const int n = batch->records_size() + batch->refusal_counts_size();
  if (n == 0) {
    ReplyError(msg.reply, "empty", "AppendBatch: no records and no refusal counts");
    return;
  }
  if (n > kMaxBatchEntries) {
    ReplyError(msg.reply, "too_large",
               fmt::format("AppendBatch: {} entries, at most {}", n, kMaxBatchEntries));
    return;
  }
  auto pending = std::make_shared<PendingAck>();
  pending->reply = std::string(msg.reply);
  pending->remaining = n;
  for (int i = 0; i < batch->records_size(); ++i) pending->ack.add_records();
  for (int i = 0; i < batch->refusal_counts_size(); ++i) pending->ack.add_refusal_counts();

  Bus* bus = bus_;
  auto answer = [bus, pending](bool refusal, int index, absl::StatusOr<uint64_t> result) {
    std::string wire;
    {
      std::lock_guard<std::mutex> lock(pending->mu);
      Fill(refusal ? pending->ack.mutable_refusal_counts(index)
                   : pending->ack.mutable_records(index),
           result);
      if (--pending->remaining > 0) return;
      wire = pending->ack.SerializeAsString();
    }
    if (absl::Status s = bus->Publish(pending->reply, wire); !s.ok()) {
      // The entries are durable; the client times out and retries, and gets REPLAYED.
      CHQ_LOG_WARN("audit ack not sent: {}", MessageOf(s));
    }
  };
  // The whole batch goes to the chain at once: one group commit takes it together.
  std::vector<AuditChain::Pending> entries;
  entries.reserve(static_cast<size_t>(n));
  for (int i = 0; i < batch->records_size(); ++i) {
    AuditChain::Pending& p = entries.emplace_back();
    *p.entry.mutable_record() = std::move(*batch->mutable_records(i));
    p.done = [answer, i](absl::StatusOr<uint64_t> r) { answer(false, i, std::move(r)); };
  }
  for (int i = 0; i < batch->refusal_counts_size(); ++i) {
    AuditChain::Pending& p = entries.emplace_back();
    *p.entry.mutable_refusal_count() = std::move(*batch->mutable_refusal_counts(i));
    p.done = [answer, i](absl::StatusOr<uint64_t> r) { answer(true, i, std::move(r)); };
  }
  chain_->AppendAll(std::move(entries));
}

void AuditService::HandleCertificates(const BusMessage& msg) {
  if (msg.reply.empty()) {
    if (metrics_ != nullptr) metrics_->CountMalformed("no_reply_subject");
    CHQ_LOG_WARN("audit certificates without a reply subject ({} bytes): not appended",
                 msg.data.size());
    return;
  }
  auto batch = std::make_shared<v1::AppendBatch>();
  if (!batch->ParseFromArray(msg.data.data(), static_cast<int>(msg.data.size()))) {
    ReplyError(msg.reply, "parse",
               fmt::format("AppendBatch: {} bytes that do not parse", msg.data.size()));
    return;
  }
  if (batch->records_size() > 0 || batch->refusal_counts_size() > 0) {
    ReplyError(msg.reply, "wrong_subject",
               "AppendBatch: records and refusal counts go to chq.ctl.audit.append");
    return;
  }
  const int n = batch->certificates_size();
  if (n == 0 || n > kMaxBatchEntries) {
    ReplyError(msg.reply, n == 0 ? "empty" : "too_large",
               fmt::format("AppendBatch: {} certificates, 1 to {} allowed", n, kMaxBatchEntries));
    return;
  }
  auto pending = std::make_shared<PendingAck>();
  pending->reply = std::string(msg.reply);
  pending->remaining = n;
  for (int i = 0; i < n; ++i) pending->ack.add_certificates();
  Bus* bus = bus_;
  for (int i = 0; i < n; ++i) {
    const uint64_t sequence = batch->certificates(i).sequence();
    chain_->AppendCertificate(
        std::move(*batch->mutable_certificates(i)),
        [bus, pending, i, sequence](absl::StatusOr<uint64_t> r) {
          if (r.ok()) {
            CHQ_LOG_INFO("certificate issued recorded: transparency log entry {} at seq {}",
                         sequence, *r);
          }
          std::string wire;
          {
            std::lock_guard<std::mutex> lock(pending->mu);
            Fill(pending->ack.mutable_certificates(i), r);
            if (--pending->remaining > 0) return;
            wire = pending->ack.SerializeAsString();
          }
          if (absl::Status s = bus->Publish(pending->reply, wire); !s.ok()) {
            CHQ_LOG_WARN("audit certificates ack not sent: {}", MessageOf(s));
          }
        });
  }
}

absl::StatusOr<AuditAccess::Checked> AuditService::CheckRead(std::string_view verb,
                                                             const BusMessage& msg) {
  absl::Status refused;
  if (options_.access == nullptr) {
    refused = absl::UnavailableError(fmt::format(
        "{}: this audit service verifies no signed requests (started without --anchors)", verb));
  } else {
    auto checked = options_.access->Check(verb, msg.data);
    if (checked.ok()) return checked;
    refused = checked.status();
  }
  const v1::Code code = ChasquiCode(refused);
  if (metrics_ != nullptr) metrics_->CountRead(verb, CodeName(code));
  CHQ_LOG_WARN("audit {} refused ({}): {}", verb, CodeName(code), MessageOf(refused));
  return refused;
}

template <class Response, class Run>
void AuditService::AnswerRead(std::string_view verb, const BusMessage& msg, Run run) {
  if (msg.reply.empty()) {
    if (metrics_ != nullptr) metrics_->CountMalformed("no_reply_subject");
    return;
  }
  Response response;
  absl::Status status;
  if (auto checked = CheckRead(verb, msg); !checked.ok()) {
    status = checked.status();
  } else if (auto result = run(checked->body); !result.ok()) {
    status = result.status();
    if (metrics_ != nullptr) metrics_->CountRead(verb, CodeName(ChasquiCode(status)));
    CHQ_LOG_WARN("audit {} by certificate {} failed: {}", verb, checked->reader.serial,
                 MessageOf(status));
  } else {
    response = *std::move(result);
    if (metrics_ != nullptr) metrics_->CountRead(verb, "OK");
    CHQ_LOG_INFO("audit {} by certificate {} ({}): {}", verb, checked->reader.serial,
                 checked->reader.all ? "operator" : checked->reader.entity,
                 Describe(checked->body));
  }
  if (!status.ok()) {
    response.mutable_error()->set_code(ChasquiCode(status));
    response.mutable_error()->set_message(std::string(MessageOf(status)));
  }
  if (absl::Status s = bus_->Publish(msg.reply, response.SerializeAsString()); !s.ok()) {
    CHQ_LOG_WARN("audit {} reply not sent: {}", verb, MessageOf(s));
  }
}

void AuditService::HandleQuery(const BusMessage& msg) {
  AnswerRead<v1::QueryResponse>("query", msg, [this](const v1::AuditControlBody& body) {
    auto r = RunQuery(*store_, body.query());
    if (r.ok() && metrics_ != nullptr) metrics_->queries().Increment();
    return r;
  });
}

void AuditService::HandleReport(const BusMessage& msg) {
  AnswerRead<v1::ReportResponse>("report", msg, [this](const v1::AuditControlBody& body) {
    return RunReport(*store_, body.report(), options_.report_zone);
  });
}

}  // namespace chasqui::audit
