#pragma once
// chasqui-catalog serve: the Catalog on NATS (DESIGN.md, "Names and subjects").
//   chq.ctl.catalog.<verb>     ControlRequest (CatalogControlBody) -> CatalogReply, for each
//                              verb of CatalogChangeVerbs(); an accepted change is published
//                              as its signed event on chq.evt.catalog.changed before the reply
//   chq.ctl.catalog.snapshot   SnapshotRequest -> SnapshotReply (signed current snapshot)
//   chq.ctl.catalog.events     EventsRequest   -> EventsReply (signed events after a version)
// Every refusal is a reply whose ControlStatus carries the code and message; a request with
// no reply subject is dropped and counted. Subscriptions are in queue group "chq.catalog".
//
// Metrics: chasqui_catalog_changes_total{verb,code}, chasqui_catalog_version,
// chasqui_catalog_records{kind}, chasqui_catalog_events_published_total,
// chasqui_catalog_reads_total{verb,code}.

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/bus/bus.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "services/catalog/catalog.h"

namespace chasqui {

struct CatalogServiceOptions {
  std::string queue_group = "chq.catalog";
};

class CatalogService {
 public:
  // `bus` and `catalog` must outlive the service.
  static absl::StatusOr<std::unique_ptr<CatalogService>> Start(
      const CatalogServiceOptions& options, Bus* bus, Catalog* catalog,
      std::shared_ptr<prometheus::Registry> registry);
  ~CatalogService();

  // OK while subscribed and connected; else why not (for /readyz).
  absl::Status Ready() const;
  // Stops taking requests and lets those in flight finish, up to `timeout`.
  absl::Status Drain(absl::Duration timeout);

 private:
  CatalogService() = default;
  void HandleChange(const std::string& verb, const BusMessage& msg);
  void HandleRead(const std::string& verb, const BusMessage& msg);
  void UpdateGauges();
  void Reply(std::string_view verb, const BusMessage& msg, const std::string& answer);

  CatalogServiceOptions options_;
  Bus* bus_ = nullptr;
  Catalog* catalog_ = nullptr;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* changes_ = nullptr;
  prometheus::Family<prometheus::Counter>* reads_ = nullptr;
  prometheus::Family<prometheus::Gauge>* records_ = nullptr;
  prometheus::Gauge* version_ = nullptr;
  prometheus::Counter* published_ = nullptr;
  std::vector<std::unique_ptr<Subscription>> subscriptions_;
  // Held across a change and the publication of its event, so events leave in version order
  // although each verb has its own delivery thread.
  absl::Mutex change_mu_;
  std::atomic<bool> draining_{false};
};

}  // namespace chasqui
