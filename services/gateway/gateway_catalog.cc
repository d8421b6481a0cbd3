#include "services/gateway/gateway_catalog.h"

#include <map>
#include <utility>

#include "common/core/log.h"
#include "common/core/names.h"
#include "common/core/status.h"
#include "fmt/format.h"
#include "prometheus/family.h"

namespace chasqui {

namespace {

// DirectoryLookup asks through a mutable pointer, but with a `fetch` of its own
// it never writes through it: every write to the trust's directory goes through
// the trust itself.
std::map<std::string, CertificateDirectory*> DirectoryOf(const CertificateTrust& trust) {
  return {{trust.env(), const_cast<CertificateDirectory*>(&trust.directory())}};
}

}  // namespace

GatewayCatalog::GatewayCatalog(std::shared_ptr<CertificateTrust> trust)
    : trust_(std::move(trust)),
      snapshot_(trust_->env()),
      lookup_(DirectoryOf(*trust_),
              // The catalog's certificate is fetched on first sight (and verified
              // against the pinned roots by the directory), as a peer's is.
              [t = trust_.get()](CertificateDirectory&, uint64_t serial, int64_t) {
                return t->FetchSerial(serial).status();
              }) {}

absl::StatusOr<std::unique_ptr<GatewayCatalog>> GatewayCatalog::Start(
    Bus* bus, std::shared_ptr<CertificateTrust> trust, GatewayCatalogOptions options,
    std::shared_ptr<prometheus::Registry> registry, const Clock& clock) {
  if (bus == nullptr || trust == nullptr) {
    return absl::InvalidArgumentError("gateway catalog: no bus or no certificate trust");
  }
  CHASQUI_RETURN_IF_ERROR(ValidateName("entity", options.entity));
  std::unique_ptr<GatewayCatalog> c(new GatewayCatalog(std::move(trust)));
  c->registry_ =
      registry != nullptr ? std::move(registry) : std::make_shared<prometheus::Registry>();
  const std::map<std::string, std::string> labels = {{"env", c->trust_->env()},
                                                     {"entity", options.entity}};
  c->version_gauge_ = &prometheus::BuildGauge()
                           .Name("chasqui_gateway_catalog_snapshot_version")
                           .Help("Version of the catalog snapshot this gateway holds (0: none)")
                           .Register(*c->registry_)
                           .Add(labels);
  c->age_gauge_ =
      &prometheus::BuildGauge()
           .Name("chasqui_gateway_catalog_snapshot_age_seconds")
           .Help("Seconds since the catalog last answered or an event was applied (-1: never)")
           .Register(*c->registry_)
           .Add(labels);
  c->UpdateGauges();

  CatalogFollowerOptions fo;
  fo.inbox_prefix = options.inbox_prefix.empty()
                        ? fmt::format("_INBOX.{}.{}.catalog", c->trust_->env(), options.entity)
                        : options.inbox_prefix;
  fo.request_timeout = options.request_timeout;
  fo.retry = options.retry;
  fo.resync = options.resync;
  CHASQUI_ASSIGN_OR_RETURN(c->follower_,
                           CatalogFollower::Start(fo, bus, &c->snapshot_, c->lookup_, clock));
  GatewayCatalog* self = c.get();
  c->gauges_ = std::thread([self] {
    while (!self->stop_.WaitForNotificationWithTimeout(absl::Seconds(1))) self->UpdateGauges();
  });
  CHQ_LOG_INFO("following the catalog for {} in {} (replies to {}.*, resync every {} s)",
               options.entity, c->trust_->env(), fo.inbox_prefix, absl::ToInt64Seconds(fo.resync));
  return c;
}

GatewayCatalog::~GatewayCatalog() {
  stop_.Notify();
  if (gauges_.joinable()) gauges_.join();
  follower_.reset();
}

void GatewayCatalog::UpdateGauges() {
  version_gauge_->Set(static_cast<double>(snapshot_.version()));
  const int64_t age_ms = follower_ ? follower_->AgeMillis() : -1;
  age_gauge_->Set(age_ms < 0 ? -1.0 : static_cast<double>(age_ms) / 1000.0);
}

absl::Status GatewayCatalog::Ready() const {
  if (!snapshot_.loaded()) {
    return absl::UnavailableError(
        "no catalog snapshot yet: waiting for chasqui-catalog to answer on "
        "chq.ctl.catalog.snapshot");
  }
  return absl::OkStatus();
}

}  // namespace chasqui
