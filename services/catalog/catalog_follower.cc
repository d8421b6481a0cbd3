#include "services/catalog/catalog_follower.h"

#include <utility>

#include "common/core/log.h"
#include "common/core/status.h"
#include "fmt/format.h"

namespace chasqui {

absl::StatusOr<std::unique_ptr<CatalogFollower>> CatalogFollower::Start(
    const CatalogFollowerOptions& options, Bus* bus, CatalogSnapshot* snapshot,
    const CertificateLookup& certificates, const Clock& clock) {
  std::unique_ptr<CatalogFollower> f(new CatalogFollower());
  f->options_ = options;
  f->snapshot_ = snapshot;
  f->certificates_ = &certificates;
  f->clock_ = &clock;
  CHASQUI_ASSIGN_OR_RETURN(f->client_,
                           CatalogClient::Create(bus, options.inbox_prefix, options.request_timeout));
  CatalogFollower* self = f.get();
  CHASQUI_ASSIGN_OR_RETURN(
      f->subscription_,
      bus->Subscribe(kCatalogChangedSubject, [self](const BusMessage& m) { self->OnEvent(m); }));
  f->thread_ = std::thread([self] { self->Loop(); });
  return f;
}

CatalogFollower::~CatalogFollower() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
  subscription_.reset();
}

void CatalogFollower::Touch() { last_contact_ms_ = clock_->NowUnixMillis(); }

void CatalogFollower::OnEvent(const BusMessage& msg) {
  v1::SignedCatalogMessage m;
  if (!m.ParseFromArray(msg.data.data(), static_cast<int>(msg.data.size()))) {
    ++events_refused_;
    CHQ_LOG_WARN("catalog event refused: not a SignedCatalogMessage");
    return;
  }
  auto event = VerifyCatalogEvent(m, snapshot_->env(), *certificates_, clock_->NowUnixMillis());
  if (!event.ok()) {
    ++events_refused_;
    CHQ_LOG_WARN("catalog event refused: {}", MessageOf(event.status()));
    return;
  }
  absl::Status s = snapshot_->Apply(*event);
  if (absl::IsOutOfRange(s)) {
    CHQ_LOG_INFO("catalog event {} after version {}: catching up", event->version(),
                 snapshot_->version());
    absl::MutexLock lock(&mu_);
    need_catch_up_ = true;
    return;
  }
  if (!s.ok()) {
    ++events_refused_;
    CHQ_LOG_WARN("catalog event {} refused: {}", event->version(), MessageOf(s));
    return;
  }
  ++events_applied_;
  Touch();
}

absl::Status CatalogFollower::CatchUp() {
  absl::MutexLock one(&catch_up_mu_);
  ++catch_ups_;
  const std::string& env = snapshot_->env();
  if (!snapshot_->loaded()) {
    CHASQUI_ASSIGN_OR_RETURN(v1::SignedCatalogMessage signed_snapshot, client_->Snapshot());
    CHASQUI_ASSIGN_OR_RETURN(
        v1::CatalogSnapshot s,
        VerifyCatalogSnapshot(signed_snapshot, env, *certificates_, clock_->NowUnixMillis()));
    CHASQUI_RETURN_IF_ERROR(snapshot_->Reset(s));
    Touch();
    CHQ_LOG_INFO("catalog snapshot loaded: env={} version={}", env, s.version());
  }
  for (;;) {
    const uint64_t have = snapshot_->version();
    CHASQUI_ASSIGN_OR_RETURN(v1::EventsReply reply, client_->Events(have));
    Touch();
    if (reply.latest_version() < have) {
      return absl::FailedPreconditionError(fmt::format(
          "the catalog is at version {}, behind the version {} held: was it restored from an "
          "old backup? keeping the snapshot held",
          reply.latest_version(), have));
    }
    for (const v1::SignedCatalogMessage& m : reply.events()) {
      CHASQUI_ASSIGN_OR_RETURN(v1::CatalogEvent e,
                               VerifyCatalogEvent(m, env, *certificates_, clock_->NowUnixMillis()));
      CHASQUI_RETURN_IF_ERROR(snapshot_->Apply(e));
      ++events_applied_;
    }
    if (snapshot_->version() >= reply.latest_version()) return absl::OkStatus();
    if (reply.events().empty()) {
      return absl::DataLossError(fmt::format(
          "the catalog says version {} but sent no events after {}", reply.latest_version(), have));
    }
  }
}

void CatalogFollower::Loop() {
  // Real time, not the injected clock: these are waits, not timestamps.
  absl::Time next_resync = absl::Now() + options_.resync;
  bool failing = false;
  for (;;) {
    bool run = false;
    {
      absl::MutexLock lock(&mu_);
      auto wake = [this] { return stop_ || need_catch_up_; };
      mu_.AwaitWithTimeout(absl::Condition(&wake),
                           failing ? options_.retry : absl::Milliseconds(100));
      if (stop_) return;
      run = need_catch_up_ || failing || absl::Now() >= next_resync;
      need_catch_up_ = false;
    }
    if (!run) continue;
    const uint64_t before = snapshot_->version();
    absl::Status s = CatchUp();
    next_resync = absl::Now() + options_.resync;
    if (!s.ok()) {
      if (!failing) CHQ_LOG_WARN("catalog catch-up failed (serving version {}): {}", before,
                                 MessageOf(s));
      failing = true;
      continue;
    }
    if (failing) {
      CHQ_LOG_INFO("catalog reachable again: env={} version {} -> {}", snapshot_->env(), before,
                   snapshot_->version());
    } else if (before != 0 && snapshot_->version() != before) {
      // (From 0, CatchUp has just logged the snapshot it loaded.)
      CHQ_LOG_INFO("catalog caught up: env={} version {} -> {}", snapshot_->env(), before,
                   snapshot_->version());
    }
    failing = false;
  }
}

absl::Status CatalogFollower::Ready(absl::Duration max_age) const {
  if (!snapshot_->loaded()) return absl::UnavailableError("no catalog snapshot yet");
  const int64_t age = AgeMillis();
  if (age < 0 || age > absl::ToInt64Milliseconds(max_age)) {
    return absl::UnavailableError(fmt::format(
        "catalog snapshot version {} not confirmed for {} ms", snapshot_->version(), age));
  }
  return absl::OkStatus();
}

bool CatalogFollower::WaitLoaded(absl::Duration timeout) const {
  const absl::Time deadline = absl::Now() + timeout;
  while (!snapshot_->loaded()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return true;
}

int64_t CatalogFollower::AgeMillis() const {
  const int64_t last = last_contact_ms_.load();
  return last < 0 ? -1 : clock_->NowUnixMillis() - last;
}

}  // namespace chasqui
