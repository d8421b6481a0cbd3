#pragma once
// chasqui-quota serve: the QuotaLedger and QuotaControl on NATS (quota.proto lists the
// subjects). Every refusal is a reply whose ControlStatus carries the code and a message
// naming what was wrong; a request with no reply subject is dropped and counted. Every policy
// change is announced on chq.evt.quota.policy so routers renew at once. Subscriptions are in
// queue group "chq.quota"; the ledger serialises writes, so several instances on one store
// are not supported (one process per store: RocksDB's lock enforces it).
//
// Lease, return and usage are not signed: the bus's permissions let only routers publish on
// chq.ctl.quota.{lease,return} and only operators' tools on usage (DESIGN.md, "Names and
// subjects"). The changes (set_policy, request, decide) are signed by people.
//
// Metrics (per grant labels env, consumer, provider, service):
//   chasqui_quota_requests_total{verb,code}
//   chasqui_quota_consumed{...,period="day"|"month"}   vs  chasqui_quota_limit{...,limit=...}
//   chasqui_quota_leases_outstanding{...}  chasqui_quota_lease_holders{...}
//   chasqui_quota_refusals_total{...,limit}  (leases refused because a cap was reached)

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

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
#include "services/quota/quota_control.h"
#include "services/quota/quota_ledger.h"

namespace chasqui {

struct QuotaServiceOptions {
  absl::Duration tick = absl::Seconds(1);  // how often the usage gauges are refreshed
  std::string queue_group = "chq.quota";
};

class QuotaService {
 public:
  // `bus`, `ledger`, `control` and `clock` must outlive the service.
  static absl::StatusOr<std::unique_ptr<QuotaService>> Start(
      const QuotaServiceOptions& options, Bus* bus, QuotaLedger* ledger, QuotaControl* control,
      std::shared_ptr<prometheus::Registry> registry, const Clock& clock = SystemClock());
  ~QuotaService();

  // OK while subscribed and connected; else why not (for /readyz).
  absl::Status Ready() const;
  // Stops taking requests and lets those in flight finish, up to `timeout`.
  absl::Status Drain(absl::Duration timeout);
  // Refreshes the usage gauges now (also done every tick).
  void UpdateGauges();

 private:
  QuotaService() = default;
  void Handle(const std::string& verb, const BusMessage& msg);
  std::string Answer(const std::string& verb, std::string_view data, absl::Status* status);
  void Announce(const v1::PolicyChanged& event);

  QuotaServiceOptions options_;
  Bus* bus_ = nullptr;
  QuotaLedger* ledger_ = nullptr;
  QuotaControl* control_ = nullptr;
  const Clock* clock_ = nullptr;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* requests_ = nullptr;
  prometheus::Family<prometheus::Counter>* refusals_ = nullptr;
  prometheus::Family<prometheus::Gauge>* consumed_ = nullptr;
  prometheus::Family<prometheus::Gauge>* limit_ = nullptr;
  prometheus::Family<prometheus::Gauge>* outstanding_ = nullptr;
  prometheus::Family<prometheus::Gauge>* holders_ = nullptr;
  std::vector<std::unique_ptr<Subscription>> subscriptions_;
  std::atomic<bool> draining_{false};
  absl::Notification stop_;
  std::thread ticker_;
};

}  // namespace chasqui
