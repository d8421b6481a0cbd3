#include "services/catalog/catalog_snapshot.h"

#include <utility>

#include "common/core/names.h"
#include "common/envelope/errors.h"
#include "fmt/format.h"

namespace chasqui {

struct CatalogSnapshot::View {
  uint64_t version = 0;
  bool loaded = false;
  int64_t at_ms = 0;
  // "provider/service", "consumer/provider/service" (this env only), "consumer/user".
  absl::flat_hash_map<std::string, v1::Service> services;
  absl::flat_hash_map<std::string, v1::Grant> grants;
  absl::flat_hash_map<std::string, v1::EndUser> end_users;
  // Everything else is kept for ToProto (grants of every env included).
  absl::flat_hash_map<std::string, v1::Entity> entities;
  absl::flat_hash_map<std::string, v1::Grant> all_grants;
  absl::flat_hash_map<std::string, v1::Annex> annexes;
};

namespace {

std::string Key2(std::string_view a, std::string_view b) { return fmt::format("{}/{}", a, b); }
std::string Key3(std::string_view a, std::string_view b, std::string_view c) {
  return fmt::format("{}/{}/{}", a, b, c);
}

std::string_view GrantStateWord(v1::GrantState s) {
  switch (s) {
    case v1::GRANT_STATE_PENDING:
      return "is still pending approval";
    case v1::GRANT_STATE_REJECTED:
      return "was rejected";
    case v1::GRANT_STATE_SUSPENDED:
      return "is suspended";
    case v1::GRANT_STATE_REVOKED:
      return "was revoked";
    default:
      return "is not active";
  }
}

}  // namespace

CatalogSnapshot::CatalogSnapshot(std::string env)
    : env_(std::move(env)), view_(std::make_shared<const View>()) {}

std::shared_ptr<const CatalogSnapshot::View> CatalogSnapshot::Current() const {
  absl::MutexLock lock(&mu_);
  return view_;
}

void CatalogSnapshot::Index(View& v, const v1::CatalogRecord& r, std::string_view env) {
  switch (r.record_case()) {
    case v1::CatalogRecord::kEntity:
      v.entities[r.entity().id()] = r.entity();
      break;
    case v1::CatalogRecord::kService:
      v.services[Key2(r.service().provider(), r.service().spec().name())] = r.service();
      break;
    case v1::CatalogRecord::kGrant: {
      const v1::Grant& g = r.grant();
      v.all_grants[fmt::format("{}/{}", g.env(), Key3(g.consumer(), g.provider(), g.service()))] = g;
      if (g.env() == env) v.grants[Key3(g.consumer(), g.provider(), g.service())] = g;
      break;
    }
    case v1::CatalogRecord::kEndUser:
      v.end_users[Key2(r.end_user().consumer(), r.end_user().user_id())] = r.end_user();
      break;
    case v1::CatalogRecord::kAnnex:
      v.annexes[r.annex().id()] = r.annex();
      break;
    default:
      break;
  }
}

absl::Status CatalogSnapshot::Reset(const v1::CatalogSnapshot& s) {
  absl::MutexLock writer(&write_mu_);
  std::shared_ptr<const View> cur = Current();
  if (cur->loaded && s.version() < cur->version) {
    return absl::FailedPreconditionError(fmt::format(
        "catalog snapshot version {} is older than the version {} held", s.version(),
        cur->version));
  }
  auto next = std::make_shared<View>();
  next->version = s.version();
  next->at_ms = s.at_ms();
  next->loaded = true;
  v1::CatalogRecord r;
  for (const auto& e : s.entities()) *r.mutable_entity() = e, Index(*next, r, env_);
  for (const auto& e : s.services()) *r.mutable_service() = e, Index(*next, r, env_);
  for (const auto& e : s.grants()) *r.mutable_grant() = e, Index(*next, r, env_);
  for (const auto& e : s.end_users()) *r.mutable_end_user() = e, Index(*next, r, env_);
  for (const auto& e : s.annexes()) *r.mutable_annex() = e, Index(*next, r, env_);
  absl::MutexLock lock(&mu_);
  view_ = std::move(next);
  return absl::OkStatus();
}

absl::Status CatalogSnapshot::Apply(const v1::CatalogEvent& e) {
  absl::MutexLock writer(&write_mu_);
  std::shared_ptr<const View> cur = Current();
  if (cur->loaded && e.version() <= cur->version) return absl::OkStatus();
  if (e.version() != cur->version + 1) {
    return absl::OutOfRangeError(fmt::format(
        "catalog event version {} does not follow the version {} held: needs catch-up",
        e.version(), cur->version));
  }
  for (const v1::CatalogRecord& r : e.records()) {
    if (r.record_case() == v1::CatalogRecord::RECORD_NOT_SET) {
      return absl::InvalidArgumentError(
          fmt::format("catalog event version {} holds an empty record", e.version()));
    }
  }
  auto next = std::make_shared<View>(*cur);
  for (const v1::CatalogRecord& r : e.records()) Index(*next, r, env_);
  next->version = e.version();
  next->at_ms = e.at_ms();
  next->loaded = true;
  absl::MutexLock lock(&mu_);
  view_ = std::move(next);
  return absl::OkStatus();
}

absl::StatusOr<CatalogAccess> CatalogSnapshot::Check(std::string_view consumer,
                                                     std::string_view provider,
                                                     std::string_view service,
                                                     std::string_view end_user) const {
  std::shared_ptr<const View> v = Current();
  auto sit = v->services.find(Key2(provider, service));
  if (sit == v->services.end() || (sit->second.state() != v1::SERVICE_STATE_PUBLISHED &&
                                   sit->second.state() != v1::SERVICE_STATE_DEPRECATED)) {
    return ChasquiError(v1::NOT_FOUND, fmt::format("no published service {}/{}",
                                                   Printable(provider), Printable(service)));
  }
  auto git = v->grants.find(Key3(consumer, provider, service));
  if (git == v->grants.end()) {
    return ChasquiError(v1::FORBIDDEN, fmt::format("{} has no grant for {}/{} in {}",
                                                   Printable(consumer), provider, service, env_));
  }
  if (git->second.state() != v1::GRANT_STATE_ACTIVE) {
    return ChasquiError(v1::FORBIDDEN,
                        fmt::format("the grant of {} for {}/{} in {} {}", consumer, provider,
                                    service, env_, GrantStateWord(git->second.state())));
  }
  auto uit = v->end_users.find(Key2(consumer, end_user));
  if (uit == v->end_users.end() || !uit->second.enabled()) {
    return ChasquiError(
        v1::END_USER_UNKNOWN,
        fmt::format("end user \"{}\" is {} of {}", Printable(end_user),
                    uit == v->end_users.end() ? "not a registered end user" : "disabled as an end user",
                    consumer));
  }
  const v1::ServiceSpec& spec = sit->second.spec();
  CatalogAccess a;
  a.annex_id = git->second.annex_id();
  a.service_version = spec.version();
  a.classification = spec.classification();
  a.sealing_required =
      spec.personal_data() || spec.classification() == v1::CLASSIFICATION_RESTRICTED;
  a.quota = git->second.quota();
  a.deprecated = sit->second.state() == v1::SERVICE_STATE_DEPRECATED;
  return a;
}

uint64_t CatalogSnapshot::version() const { return Current()->version; }
bool CatalogSnapshot::loaded() const { return Current()->loaded; }

v1::CatalogSnapshot CatalogSnapshot::ToProto() const {
  std::shared_ptr<const View> v = Current();
  v1::CatalogSnapshot s;
  s.set_version(v->version);
  s.set_at_ms(v->at_ms);
  for (const auto& [k, e] : v->entities) *s.add_entities() = e;
  for (const auto& [k, e] : v->services) *s.add_services() = e;
  for (const auto& [k, e] : v->all_grants) *s.add_grants() = e;
  for (const auto& [k, e] : v->end_users) *s.add_end_users() = e;
  for (const auto& [k, e] : v->annexes) *s.add_annexes() = e;
  return s;
}

}  // namespace chasqui
