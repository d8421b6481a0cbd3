#include "services/catalog/catalog_service.h"

#include <utility>

#include "common/core/log.h"
#include "common/core/status.h"
#include "common/trust/requests.h"
#include "fmt/format.h"
#include "services/catalog/catalog_client.h"

namespace chasqui {

absl::StatusOr<std::unique_ptr<CatalogService>> CatalogService::Start(
    const CatalogServiceOptions& options, Bus* bus, Catalog* catalog,
    std::shared_ptr<prometheus::Registry> registry) {
  std::unique_ptr<CatalogService> s(new CatalogService());
  s->options_ = options;
  s->bus_ = bus;
  s->catalog_ = catalog;
  s->registry_ = std::move(registry);
  prometheus::Registry& r = *s->registry_;
  s->changes_ = &prometheus::BuildCounter()
                     .Name("chasqui_catalog_changes_total")
                     .Help("Change requests answered by the catalog, by verb and status code")
                     .Register(r);
  for (const std::string& verb : CatalogChangeVerbs()) s->changes_->Add({{"verb", verb}, {"code", "OK"}});
  s->reads_ = &prometheus::BuildCounter()
                   .Name("chasqui_catalog_reads_total")
                   .Help("Snapshot and events requests answered, by verb and status code")
                   .Register(r);
  s->records_ = &prometheus::BuildGauge()
                     .Name("chasqui_catalog_records")
                     .Help("Records held by the catalog, by kind")
                     .Register(r);
  s->version_ = &prometheus::BuildGauge()
                     .Name("chasqui_catalog_version")
                     .Help("Version of the catalog's latest change (its snapshot version)")
                     .Register(r)
                     .Add({});
  s->published_ = &prometheus::BuildCounter()
                       .Name("chasqui_catalog_events_published_total")
                       .Help("Change events published on chq.evt.catalog.changed")
                       .Register(r)
                       .Add({});
  s->UpdateGauges();

  CatalogService* self = s.get();
  for (const std::string& verb : CatalogChangeVerbs()) {
    CHASQUI_ASSIGN_OR_RETURN(
        std::unique_ptr<Subscription> sub,
        bus->QueueSubscribe(kCatalogSubjectPrefix + verb, options.queue_group,
                            [self, verb](const BusMessage& m) { self->HandleChange(verb, m); }));
    s->subscriptions_.push_back(std::move(sub));
  }
  for (const std::string verb : {"snapshot", "events"}) {
    CHASQUI_ASSIGN_OR_RETURN(
        std::unique_ptr<Subscription> sub,
        bus->QueueSubscribe(kCatalogSubjectPrefix + verb, options.queue_group,
                            [self, verb](const BusMessage& m) { self->HandleRead(verb, m); }));
    s->subscriptions_.push_back(std::move(sub));
  }
  // The server knows the subscriptions before anyone is told we serve: a request sent right
  // after Start() returns is not answered "no responders".
  CHASQUI_RETURN_IF_ERROR(bus->Flush(absl::Seconds(5)));
  CHQ_LOG_INFO("catalog service serving chq.ctl.catalog.* at version {}", catalog->version());
  return s;
}

CatalogService::~CatalogService() { subscriptions_.clear(); }

absl::Status CatalogService::Ready() const {
  if (draining_) return absl::UnavailableError("draining");
  if (!bus_->Connected()) return absl::UnavailableError("not connected to NATS");
  return absl::OkStatus();
}

absl::Status CatalogService::Drain(absl::Duration timeout) {
  draining_ = true;
  absl::Status first = absl::OkStatus();
  for (auto& sub : subscriptions_) {
    absl::Status s = sub->Drain(timeout);
    if (first.ok()) first = s;
  }
  return first;
}

void CatalogService::Reply(std::string_view verb, const BusMessage& msg,
                           const std::string& answer) {
  if (absl::Status s = bus_->Publish(msg.reply, answer); !s.ok()) {
    CHQ_LOG_WARN("{} answer not sent: {}", verb, MessageOf(s));
  }
}

void CatalogService::HandleChange(const std::string& verb, const BusMessage& msg) {
  if (msg.reply.empty()) {
    changes_->Add({{"verb", verb}, {"code", "NO_REPLY_SUBJECT"}}).Increment();
    return;
  }
  v1::CatalogReply reply;
  absl::MutexLock ordered(&change_mu_);
  auto change = catalog_->Change(verb, msg.data);
  absl::Status status = change.status();
  if (change.ok()) {
    reply.set_version(change->version);
    for (const v1::CatalogRecord& r : change->records) *reply.add_records() = r;
    // Published before the reply, so a requester that then asks a router finds the change
    // already on its way; a lost event is caught up by followers (they resync).
    if (absl::Status p = bus_->Publish(kCatalogChangedSubject, change->event.SerializeAsString());
        p.ok()) {
      published_->Increment();
    } else {
      CHQ_LOG_WARN("catalog event version {} not published: {}", change->version, MessageOf(p));
    }
    UpdateGauges();
  } else {
    // The catalog's errors name serials, roles, entities and states: never a key.
    CHQ_LOG_WARN("{} refused: {}", verb, MessageOf(status));
  }
  *reply.mutable_status() = ToControlStatus(status);
  changes_->Add({{"verb", verb}, {"code", absl::StatusCodeToString(status.code())}}).Increment();
  Reply(verb, msg, reply.SerializeAsString());
}

void CatalogService::HandleRead(const std::string& verb, const BusMessage& msg) {
  if (msg.reply.empty()) {
    reads_->Add({{"verb", verb}, {"code", "NO_REPLY_SUBJECT"}}).Increment();
    return;
  }
  std::string answer;
  absl::Status status = absl::OkStatus();
  if (verb == "snapshot") {
    v1::SnapshotReply reply;
    v1::SnapshotRequest req;
    if (!req.ParseFromArray(msg.data.data(), static_cast<int>(msg.data.size()))) {
      status = absl::InvalidArgumentError("snapshot: not a SnapshotRequest");
    } else if (auto s = catalog_->Snapshot(); s.ok()) {
      *reply.mutable_snapshot() = *std::move(s);
    } else {
      status = s.status();
    }
    *reply.mutable_status() = ToControlStatus(status);
    answer = reply.SerializeAsString();
  } else {
    v1::EventsReply reply;
    v1::EventsRequest req;
    if (!req.ParseFromArray(msg.data.data(), static_cast<int>(msg.data.size()))) {
      status = absl::InvalidArgumentError("events: not an EventsRequest");
    } else if (auto e = catalog_->Events(req.after_version(), req.limit()); e.ok()) {
      reply = *std::move(e);
    } else {
      status = e.status();
    }
    *reply.mutable_status() = ToControlStatus(status);
    answer = reply.SerializeAsString();
  }
  if (!status.ok()) CHQ_LOG_WARN("{} refused: {}", verb, MessageOf(status));
  reads_->Add({{"verb", verb}, {"code", absl::StatusCodeToString(status.code())}}).Increment();
  Reply(verb, msg, answer);
}

void CatalogService::UpdateGauges() {
  const Catalog::Stats st = catalog_->GetStats();
  version_->Set(static_cast<double>(st.version));
  records_->Add({{"kind", "entity"}}).Set(static_cast<double>(st.entities));
  records_->Add({{"kind", "service"}}).Set(static_cast<double>(st.services));
  records_->Add({{"kind", "grant"}}).Set(static_cast<double>(st.grants));
  records_->Add({{"kind", "end_user"}}).Set(static_cast<double>(st.end_users));
  records_->Add({{"kind", "annex"}}).Set(static_cast<double>(st.annexes));
}

}  // namespace chasqui
