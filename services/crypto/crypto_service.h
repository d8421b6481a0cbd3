#pragma once
// chasqui-crypto serve: the CertificateAuthority on NATS (DESIGN.md, "Names and subjects").
//   chq.ctl.crypto.enrol      EnrolmentRequest  -> EnrolmentReply
//   chq.ctl.crypto.directory  DirectoryRequest  -> DirectoryReply
//   chq.ctl.crypto.revoke     ControlRequest    -> RevokeReply (and the event below)
//   chq.ctl.crypto.sign       ControlRequest    -> SignReply
//   chq.evt.crypto.revoked    SignedRevocationList, published at start, on every change and
//                             each time a list is re-issued before its valid_until.
// Every refusal is a reply whose ControlStatus carries the code and message; a request with
// no reply subject is dropped and counted. Subscriptions are in queue group "chq.crypto".

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/bus/bus.h"
#include "common/core/clock.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "services/crypto/authority.h"

namespace chasqui {

class AuditFeed;

struct CryptoServiceOptions {
  // How often to re-issue due lists and refresh the gauges.
  absl::Duration tick = absl::Seconds(1);
  std::string queue_group = "chq.crypto";
  // Told after each certificate issued, so it reaches the audit chain at once (may be null).
  AuditFeed* audit_feed = nullptr;
};

class CryptoService {
 public:
  // `bus`, `authority` and `clock` must outlive the service.
  static absl::StatusOr<std::unique_ptr<CryptoService>> Start(
      const CryptoServiceOptions& options, Bus* bus, CertificateAuthority* authority,
      std::shared_ptr<prometheus::Registry> registry, const Clock& clock = SystemClock());
  ~CryptoService();

  // OK while subscribed and connected; else why not (for /readyz).
  absl::Status Ready() const;
  // Stops taking requests and lets those in flight finish, up to `timeout`.
  absl::Status Drain(absl::Duration timeout);

 private:
  CryptoService() = default;
  void Handle(std::string_view verb, const BusMessage& msg);
  void PublishList(const v1::SignedRevocationList& list);
  void Tick();
  void UpdateGauges();

  CryptoServiceOptions options_;
  Bus* bus_ = nullptr;
  CertificateAuthority* authority_ = nullptr;
  const Clock* clock_ = nullptr;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* requests_ = nullptr;
  prometheus::Family<prometheus::Gauge>* list_version_ = nullptr;
  prometheus::Family<prometheus::Gauge>* list_seconds_left_ = nullptr;
  prometheus::Counter* issued_ = nullptr;
  prometheus::Counter* published_ = nullptr;
  prometheus::Gauge* log_size_ = nullptr;
  prometheus::Gauge* earliest_expiry_ = nullptr;
  prometheus::Gauge* root_seconds_left_ = nullptr;
  std::vector<std::unique_ptr<Subscription>> subscriptions_;
  std::atomic<bool> draining_{false};
  absl::Notification stop_;
  std::thread ticker_;
};

}  // namespace chasqui
