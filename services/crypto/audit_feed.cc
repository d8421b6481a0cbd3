#include "services/crypto/audit_feed.h"

#include <utility>

#include "chasqui/v1/audit.pb.h"
#include "chasqui/v1/crypto.pb.h"
#include "common/core/log.h"
#include "common/core/status.h"
#include "fmt/format.h"

namespace chasqui {
namespace {

constexpr char kLogPrefix[] = "log/";  // authority.h's layout
constexpr char kLogEnd[] = "log0";

std::string CursorKey(std::string_view env) { return fmt::format("meta/audit_fed/{}", env); }

}  // namespace

std::string AuditCertificatesSubject(std::string_view env) {
  return fmt::format("chq.ctl.audit.certificates.{}", env);
}

absl::StatusOr<std::unique_ptr<AuditFeed>> AuditFeed::Start(const AuditFeedOptions& options,
                                                            Bus* bus, KvStore* store) {
  std::unique_ptr<AuditFeed> feed(new AuditFeed(options, bus, store));
  {
    absl::MutexLock lock(&feed->mu_);
    for (const std::string& env : options.envs) {
      uint64_t cursor = 0;
      auto stored = store->Get(CursorKey(env));
      if (stored.ok() && stored->size() == 8) {
        cursor = FromBigEndian64(*stored);
      } else if (!stored.ok() && !absl::IsNotFound(stored.status())) {
        return stored.status();
      }
      feed->cursors_.emplace_back(env, cursor);
    }
  }
  CHASQUI_ASSIGN_OR_RETURN(feed->mux_, RequestMux::Create(bus, options.inbox_prefix));
  feed->thread_ = std::thread([f = feed.get()] { f->Run(); });
  CHQ_LOG_INFO("audit feed: certificates issued go to chq.ctl.audit.certificates.<env> for {}",
               fmt::join(options.envs, ","));
  return feed;
}

AuditFeed::~AuditFeed() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
  mux_.reset();
}

void AuditFeed::Wake() {
  absl::MutexLock lock(&mu_);
  woken_ = true;
}

uint64_t AuditFeed::Acknowledged(std::string_view env) const {
  absl::MutexLock lock(&mu_);
  for (const auto& [e, c] : cursors_) {
    if (e == env) return c;
  }
  return 0;
}

void AuditFeed::Run() {
  // Logged once per outage, not once per retry.
  std::vector<bool> failing(options_.envs.size(), false);
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(
                               +[](AuditFeed* f) ABSL_EXCLUSIVE_LOCKS_REQUIRED(f->mu_) {
                                 return f->stop_ || f->woken_;
                               },
                               this),
                           options_.retry);
      if (stop_) return;
      woken_ = false;
    }
    for (size_t i = 0; i < options_.envs.size(); ++i) {
      for (;;) {
        auto moved = SendOnce(options_.envs[i]);
        if (!moved.ok()) {
          if (!failing[i]) {
            CHQ_LOG_WARN("audit feed {}: certificates not yet in the audit chain ({}); "
                         "retrying every {}",
                         options_.envs[i], MessageOf(moved.status()),
                         absl::FormatDuration(options_.retry));
          }
          failing[i] = true;
          break;
        }
        if (failing[i]) {
          CHQ_LOG_INFO("audit feed {}: the audit service acknowledges again",
                       options_.envs[i]);
          failing[i] = false;
        }
        if (!*moved) break;
        absl::MutexLock lock(&mu_);
        if (stop_) return;
      }
    }
  }
}

absl::StatusOr<bool> AuditFeed::SendOnce(const std::string& env) {
  const uint64_t cursor = Acknowledged(env);
  // The next entries of env after the cursor, and the last log sequence looked at (entries of
  // other envs are passed over).
  v1::AppendBatch batch;
  uint64_t scanned_to = cursor;
  absl::Status bad;
  CHASQUI_RETURN_IF_ERROR(store_->Scan(
      kLogPrefix + BigEndian64(cursor + 1), kLogEnd,
      [&](std::string_view key, std::string_view value) {
        v1::TransparencyLogEntry e;
        v1::Certificate cert;
        v1::CertificateBody body;
        if (key.size() != sizeof(kLogPrefix) - 1 + 8 ||
            !e.ParseFromArray(value.data(), static_cast<int>(value.size())) ||
            !cert.ParseFromString(e.certificate()) || !body.ParseFromString(cert.body())) {
          bad = absl::DataLossError("audit feed: a transparency log entry does not parse");
          return false;
        }
        if (body.env() == env) *batch.add_certificates() = std::move(e);
        scanned_to = FromBigEndian64(key.substr(sizeof(kLogPrefix) - 1));
        return static_cast<size_t>(batch.certificates_size()) < options_.max_batch;
      }));
  CHASQUI_RETURN_IF_ERROR(bad);
  if (scanned_to == cursor) return false;  // nothing new
  uint64_t reached = scanned_to;
  if (batch.certificates_size() > 0) {
    CHASQUI_ASSIGN_OR_RETURN(
        std::string wire,
        mux_->RequestAndWait(AuditCertificatesSubject(env), batch.SerializeAsString(),
                             options_.timeout, "audit service"));
    v1::AppendAck ack;
    if (!ack.ParseFromString(wire)) {
      return absl::InvalidArgumentError("audit feed: the audit's answer is not an AppendAck");
    }
    if (ack.has_error()) {
      return absl::InvalidArgumentError(
          fmt::format("audit feed: the audit service refused the batch: {}",
                      ack.error().message()));
    }
    if (ack.certificates_size() != batch.certificates_size()) {
      return absl::InvalidArgumentError(fmt::format(
          "audit feed: {} acks for {} certificates", ack.certificates_size(),
          batch.certificates_size()));
    }
    // The cursor stops before the first entry not acknowledged; it is sent again next round.
    for (int i = 0; i < ack.certificates_size(); ++i) {
      const v1::RecordAck& a = ack.certificates(i);
      const uint64_t seq = batch.certificates(i).sequence();
      if (a.status() == v1::ACK_DURABLE || a.status() == v1::ACK_REPLAYED) {
        if (a.status() == v1::ACK_DURABLE) {
          CHQ_LOG_INFO("audit feed {}: transparency log entry {} is audit seq {}", env, seq,
                       a.seq());
        }
        continue;
      }
      if (a.status() == v1::ACK_REJECTED) {
        // Never stored, and sending it again would not change that: say so loudly, move on
        // (the transparency log still holds it).
        CHQ_LOG_ERROR("audit feed {}: the audit service rejected transparency log entry {}: {}",
                      env, seq, a.error());
        continue;
      }
      reached = seq - 1;
      if (reached <= cursor) {
        return absl::UnavailableError(fmt::format(
            "audit feed: entry {} not stored by the audit service: {}", seq, a.error()));
      }
      break;
    }
  }
  CHASQUI_RETURN_IF_ERROR(store_->Put(CursorKey(env), BigEndian64(reached), Durability::kSynced));
  absl::MutexLock lock(&mu_);
  for (auto& [e, c] : cursors_) {
    if (e == env) c = reached;
  }
  return true;
}

}  // namespace chasqui
