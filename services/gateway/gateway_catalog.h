#pragma once
// A gateway's copy of the catalog (issue 4, "How routers and gateways use it";
// issue 8, "For an entity's developer"): a CatalogSnapshot kept current by a
// CatalogFollower, the catalog's signatures checked against the certificates of
// the gateway's own CertificateTrust (a signer serial it does not hold yet is
// fetched from the crypto service and verified against the pinned roots).
// Replies come to `_INBOX.<env>.<entity>.catalog.*`, which the entity's NATS
// user may read; events arrive on chq.evt.catalog.changed.
//
// The gateway uses it for three things: its own grant check on the provider
// side (a consumer without an active grant is refused FORBIDDEN before the
// entity's system is called), the OpenAPI document of what the entity may call,
// and mock answers from the services' schemas.
//
// Metrics (labels env, entity): chasqui_gateway_catalog_snapshot_version (0
// before the first snapshot) and chasqui_gateway_catalog_snapshot_age_seconds
// (since the catalog last answered or an event was applied; -1 before that),
// refreshed every second. Thread-safe.

#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/bus/bus.h"
#include "common/core/clock.h"
#include "common/trust/certificate_trust.h"
#include "common/trust/directory.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "services/catalog/catalog_follower.h"
#include "services/catalog/catalog_snapshot.h"

namespace chasqui {

struct GatewayCatalogOptions {
  std::string entity;  // the gateway's own
  // Empty: `_INBOX.<env>.<entity>.catalog`.
  std::string inbox_prefix;
  absl::Duration request_timeout = absl::Seconds(2);
  absl::Duration retry = absl::Milliseconds(500);
  absl::Duration resync = absl::Seconds(30);
};

class GatewayCatalog {
 public:
  // Starts following at once and returns without waiting for the first snapshot
  // (Ready says when it is there). `bus` and `clock` must outlive it; `trust`
  // is kept. Metrics go to `registry` (may be null).
  static absl::StatusOr<std::unique_ptr<GatewayCatalog>> Start(
      Bus* bus, std::shared_ptr<CertificateTrust> trust, GatewayCatalogOptions options,
      std::shared_ptr<prometheus::Registry> registry, const Clock& clock = SystemClock());
  ~GatewayCatalog();  // stops following

  // Unavailable until the first snapshot is loaded; OK after that, also while
  // the catalog is down (the gateway keeps serving the snapshot it has; the age
  // metric shows how old it is).
  absl::Status Ready() const;
  bool WaitLoaded(absl::Duration timeout) const { return follower_->WaitLoaded(timeout); }

  const CatalogSnapshot& snapshot() const { return snapshot_; }
  const std::string& env() const { return snapshot_.env(); }

 private:
  explicit GatewayCatalog(std::shared_ptr<CertificateTrust> trust);
  void UpdateGauges();

  const std::shared_ptr<CertificateTrust> trust_;
  CatalogSnapshot snapshot_;
  DirectoryLookup lookup_;
  std::unique_ptr<CatalogFollower> follower_;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Gauge* version_gauge_ = nullptr;
  prometheus::Gauge* age_gauge_ = nullptr;
  absl::Notification stop_;
  std::thread gauges_;
};

}  // namespace chasqui
