#include "services/catalog/catalog.h"

#include <utility>

#include "common/core/log.h"
#include "common/core/names.h"
#include "common/core/status.h"
#include "common/trust/control_check.h"
#include "common/trust/signed_message.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace chasqui {
namespace {

constexpr char kVersionKey[] = "meta/version";
constexpr char kLogPrefix[] = "log/";
constexpr char kLogEnd[] = "log0";  // '0' follows '/'
constexpr char kNoncePrefix[] = "nonce/";
constexpr char kNonceEnd[] = "nonce0";
constexpr size_t kMaxText = 4096;
constexpr size_t kMaxSchema = 64 * 1024;

std::string LogKey(uint64_t version) { return kLogPrefix + BigEndian64(version); }
std::string AnnexKey(std::string_view id) { return fmt::format("annex/{}", id); }

std::string RecordKey(const v1::CatalogRecord& r) {
  switch (r.record_case()) {
    case v1::CatalogRecord::kEntity:
      return EntityKey(r.entity().id());
    case v1::CatalogRecord::kService:
      return ServiceKey(r.service().provider(), r.service().spec().name());
    case v1::CatalogRecord::kGrant:
      return GrantKey(r.grant().env(), r.grant().consumer(), r.grant().provider(),
                      r.grant().service());
    case v1::CatalogRecord::kEndUser:
      return EndUserKey(r.end_user().consumer(), r.end_user().user_id());
    case v1::CatalogRecord::kAnnex:
      return AnnexKey(r.annex().id());
    default:
      return "";
  }
}

std::string RecordValue(const v1::CatalogRecord& r) {
  switch (r.record_case()) {
    case v1::CatalogRecord::kEntity:
      return r.entity().SerializeAsString();
    case v1::CatalogRecord::kService:
      return r.service().SerializeAsString();
    case v1::CatalogRecord::kGrant:
      return r.grant().SerializeAsString();
    case v1::CatalogRecord::kEndUser:
      return r.end_user().SerializeAsString();
    case v1::CatalogRecord::kAnnex:
      return r.annex().SerializeAsString();
    default:
      return "";
  }
}

v1::CatalogRecord Rec(const v1::Entity& e) {
  v1::CatalogRecord r;
  *r.mutable_entity() = e;
  return r;
}
v1::CatalogRecord Rec(const v1::Service& s) {
  v1::CatalogRecord r;
  *r.mutable_service() = s;
  return r;
}
v1::CatalogRecord Rec(const v1::Grant& g) {
  v1::CatalogRecord r;
  *r.mutable_grant() = g;
  return r;
}
v1::CatalogRecord Rec(const v1::EndUser& u) {
  v1::CatalogRecord r;
  *r.mutable_end_user() = u;
  return r;
}
v1::CatalogRecord Rec(const v1::Annex& a) {
  v1::CatalogRecord r;
  *r.mutable_annex() = a;
  return r;
}

std::string_view StateName(v1::ServiceState s) {
  switch (s) {
    case v1::SERVICE_STATE_DRAFT:
      return "a draft";
    case v1::SERVICE_STATE_SUBMITTED:
      return "submitted";
    case v1::SERVICE_STATE_PUBLISHED:
      return "published";
    case v1::SERVICE_STATE_REJECTED:
      return "rejected";
    case v1::SERVICE_STATE_DEPRECATED:
      return "deprecated";
    case v1::SERVICE_STATE_RETIRED:
      return "retired";
    default:
      return "unspecified";
  }
}

std::string_view StateName(v1::GrantState s) {
  switch (s) {
    case v1::GRANT_STATE_PENDING:
      return "pending";
    case v1::GRANT_STATE_ACTIVE:
      return "active";
    case v1::GRANT_STATE_REJECTED:
      return "rejected";
    case v1::GRANT_STATE_SUSPENDED:
      return "suspended";
    case v1::GRANT_STATE_REVOKED:
      return "revoked";
    default:
      return "unspecified";
  }
}

absl::Status CheckText(std::string_view what, std::string_view text, bool required,
                       size_t max = kMaxText) {
  if (required && text.empty()) {
    return absl::InvalidArgumentError(fmt::format("{} is required", what));
  }
  if (text.size() > max) {
    return absl::InvalidArgumentError(
        fmt::format("{} is {} bytes; at most {}", what, text.size(), max));
  }
  return absl::OkStatus();
}

absl::Status CheckSchema(std::string_view what, std::string_view schema) {
  CHASQUI_RETURN_IF_ERROR(CheckText(what, schema, false, kMaxSchema));
  if (schema.empty()) return absl::OkStatus();
  const nlohmann::json j = nlohmann::json::parse(schema, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(fmt::format("{} is not a JSON object", what));
  }
  return absl::OkStatus();
}

std::string GrantName(std::string_view env, std::string_view consumer, std::string_view provider,
                      std::string_view service) {
  return fmt::format("{} -> {}/{} in {}", consumer, provider, service, env);
}

}  // namespace

std::string EntityKey(std::string_view id) { return fmt::format("ent/{}", id); }
std::string ServiceKey(std::string_view provider, std::string_view service) {
  return fmt::format("svc/{}/{}", provider, service);
}
std::string GrantKey(std::string_view env, std::string_view consumer, std::string_view provider,
                     std::string_view service) {
  return fmt::format("grant/{}/{}/{}/{}", env, consumer, provider, service);
}
std::string EndUserKey(std::string_view consumer, std::string_view user_id) {
  return fmt::format("user/{}/{}", consumer, user_id);
}

absl::Status ValidateEndUserId(std::string_view user_id) {
  bool ok = !user_id.empty() && user_id.size() <= 128;
  for (char c : user_id) {
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '.' || c == '_' || c == '@' || c == '-');
  }
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(fmt::format(
      "end user \"{}\" is not a valid id: expected 1-128 characters of [A-Za-z0-9._@-]",
      Printable(user_id)));
}

const std::vector<std::string>& CatalogChangeVerbs() {
  static const std::vector<std::string> kVerbs = {
      "register_entity", "adhere",        "submit",         "publish",
      "reject_service",  "deprecate",     "retire",         "request_access",
      "approve",         "reject_access", "suspend",        "revoke",
      "promote",         "register_end_user", "disable_end_user"};
  return kVerbs;
}

std::string_view VerbOf(const v1::CatalogControlBody& body) {
  using B = v1::CatalogControlBody;
  switch (body.action_case()) {
    case B::kRegisterEntity: return "register_entity";
    case B::kAdhere: return "adhere";
    case B::kSubmit: return "submit";
    case B::kPublish: return "publish";
    case B::kRejectService: return "reject_service";
    case B::kDeprecate: return "deprecate";
    case B::kRetire: return "retire";
    case B::kRequestAccess: return "request_access";
    case B::kApprove: return "approve";
    case B::kRejectAccess: return "reject_access";
    case B::kSuspend: return "suspend";
    case B::kRevoke: return "revoke";
    case B::kPromote: return "promote";
    case B::kRegisterEndUser: return "register_end_user";
    case B::kDisableEndUser: return "disable_end_user";
    default: return "";
  }
}

struct Catalog::Context {
  std::string verb;
  std::string_view request;
  v1::CatalogControlBody body;
  std::shared_ptr<const VerifiedCertificate> cert;
  std::string nonce_key;
  int64_t nonce_expiry = 0;
  int64_t now = 0;
  uint64_t version = 0;  // the version this change will get
  std::vector<v1::CatalogRecord> records;
};

Catalog::Catalog(const CatalogOptions& options, KvStore* store,
                 const CertificateLookup& certificates, const CatalogSigner& signer,
                 const Clock& clock)
    : options_(options), store_(store), certificates_(certificates), signer_(signer),
      clock_(clock) {}

absl::StatusOr<std::unique_ptr<Catalog>> Catalog::Open(const CatalogOptions& options,
                                                       KvStore* store,
                                                       const CertificateLookup& certificates,
                                                       const CatalogSigner& signer,
                                                       const Clock& clock) {
  if (options.nta_hash.size() != 32) {
    return absl::InvalidArgumentError("catalog: the NTA hash must be 32 bytes (BLAKE2b-256)");
  }
  for (const std::string& env : options.envs) CHASQUI_RETURN_IF_ERROR(ValidateEnv(env));
  std::unique_ptr<Catalog> c(new Catalog(options, store, certificates, signer, clock));
  absl::MutexLock lock(&c->mu_);
  CHASQUI_RETURN_IF_ERROR(c->Load());
  return c;
}

absl::Status Catalog::Load() {
  auto v = store_->Get(kVersionKey);
  if (v.ok()) {
    if (v->size() != 8) return absl::DataLossError("catalog: meta/version is not 8 bytes");
    version_ = FromBigEndian64(*v);
  } else if (!absl::IsNotFound(v.status())) {
    return v.status();
  }
  auto last = store_->Last(kLogPrefix, kLogEnd);
  const uint64_t last_logged =
      last.ok() && last->first.size() == 12 ? FromBigEndian64(last->first.substr(4)) : 0;
  if (!last.ok() && !absl::IsNotFound(last.status())) return last.status();
  if (last_logged != version_) {
    return absl::DataLossError(fmt::format(
        "catalog: the change log ends at version {} but meta/version says {}", last_logged,
        version_));
  }
  absl::Status bad = absl::OkStatus();
  auto load = [&](std::string_view prefix, auto& map) -> absl::Status {
    using Msg = typename std::decay_t<decltype(map)>::mapped_type;
    std::string end(prefix);
    end.back() = '0';
    return store_->Scan(prefix, end, [&](std::string_view k, std::string_view val) {
      Msg m;
      if (!m.ParseFromArray(val.data(), static_cast<int>(val.size()))) {
        bad = absl::DataLossError(fmt::format("catalog: record {} does not parse", Printable(k)));
        return false;
      }
      map.emplace(std::string(k), std::move(m));
      return true;
    });
  };
  CHASQUI_RETURN_IF_ERROR(load("ent/", state_.entities));
  CHASQUI_RETURN_IF_ERROR(load("svc/", state_.services));
  CHASQUI_RETURN_IF_ERROR(load("grant/", state_.grants));
  CHASQUI_RETURN_IF_ERROR(load("user/", state_.end_users));
  CHASQUI_RETURN_IF_ERROR(load("annex/", state_.annexes));
  CHASQUI_RETURN_IF_ERROR(bad);
  const int64_t now = clock_.NowUnixMillis();
  CHASQUI_RETURN_IF_ERROR(store_->Scan(kNoncePrefix, kNonceEnd,
                                       [&](std::string_view k, std::string_view val) {
                                         if (val.size() == 8) {
                                           const int64_t until =
                                               static_cast<int64_t>(FromBigEndian64(val));
                                           if (until >= now) {
                                             seen_.emplace(std::string(k.substr(6)), until);
                                           }
                                         }
                                         return true;
                                       }));
  CHQ_LOG_INFO("catalog loaded: version={} entities={} services={} grants={} end_users={}",
               version_, state_.entities.size(), state_.services.size(), state_.grants.size(),
               state_.end_users.size());
  return absl::OkStatus();
}

absl::Status Catalog::CheckControl(std::string_view request, Context& ctx) {
  CHASQUI_ASSIGN_OR_RETURN(
      v1::ControlRequest req,
      ParseControlRequest(request, ctx.body, "control request", "CatalogControlBody"));
  const v1::CatalogControlBody& b = ctx.body;
  bool served = false;
  for (const std::string& env : options_.envs) served = served || env == b.env();
  if (!served) {
    return absl::InvalidArgumentError(fmt::format(
        "control request: environment \"{}\" is not served here", Printable(b.env())));
  }
  ctx.now = clock_.NowUnixMillis();
  CHASQUI_ASSIGN_OR_RETURN(ctx.cert,
                           VerifyControlSigner(req, ControlFieldsOf(b), certificates_, ctx.now,
                                               options_.control_window_ms, "control request"));
  for (auto it = seen_.begin(); it != seen_.end();) {
    if (it->second < ctx.now) {
      seen_.erase(it++);
    } else {
      ++it;
    }
  }
  ctx.nonce_key = NonceKey(ctx.cert->serial, b.nonce());
  ctx.nonce_expiry = ctx.now + 2 * options_.control_window_ms;
  if (!seen_.emplace(ctx.nonce_key, ctx.nonce_expiry).second) {
    return absl::AlreadyExistsError("control request: replayed (same signer and nonce)");
  }
  const std::string_view action = VerbOf(b);
  if (action != ctx.verb) {
    return absl::InvalidArgumentError(fmt::format(
        "control request on {}: its action is {}", ctx.verb, action.empty() ? "none" : action));
  }
  if (ctx.cert->kind != v1::CERTIFICATE_KIND_PERSON) {
    return absl::PermissionDeniedError(fmt::format(
        "{}: signer certificate {} is a {} key; catalog changes are signed by people (MAE, "
        "manager, operator)",
        ctx.verb, ctx.cert->serial, CertificateRoleName(ctx.cert->role)));
  }
  return absl::OkStatus();
}

absl::Status Catalog::RequireRole(const Context& ctx, v1::CertificateRole role,
                                  std::string_view entity) const {
  const VerifiedCertificate& c = *ctx.cert;
  const bool role_ok = c.role == role && (entity.empty() || c.entity == entity);
  if (!role_ok) {
    const std::string needed =
        entity.empty() ? fmt::format("an {}", CertificateRoleName(role))
                       : fmt::format("{} {} of {}", role == v1::CERTIFICATE_ROLE_MAE ? "the" : "a",
                                     CertificateRoleName(role), Printable(entity));
    return absl::PermissionDeniedError(fmt::format(
        "{}: needs {}; signer {} (certificate {}) is {} of {}", ctx.verb, needed, c.subject,
        c.serial, CertificateRoleName(c.role), c.entity));
  }
  if (role == v1::CERTIFICATE_ROLE_MANAGER) {
    auto it = state_.entities.find(EntityKey(entity));
    if (it != state_.entities.end() && !it->second.managers().empty()) {
      bool listed = false;
      for (const std::string& m : it->second.managers()) listed = listed || m == c.subject;
      if (!listed) {
        return absl::PermissionDeniedError(fmt::format(
            "{}: needs a manager of {}; {} is not among its registered managers", ctx.verb,
            entity, c.subject));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<const v1::Entity*> Catalog::RequireAdhesion(std::string_view entity,
                                                           std::string_view what) const {
  auto it = state_.entities.find(EntityKey(entity));
  if (it == state_.entities.end()) {
    return absl::NotFoundError(
        fmt::format("{}: entity {} is not registered", what, Printable(entity)));
  }
  if (it->second.adhesion() != v1::ADHESION_STATE_SIGNED) {
    return absl::FailedPreconditionError(fmt::format(
        "{}: entity {} has not adhered: its MAE must sign the adhesion agreement (NTA) first",
        what, entity));
  }
  return &it->second;
}

absl::StatusOr<std::string> Catalog::MakeAnnex(Context& ctx, const v1::Service& service,
                                               const v1::Grant* grant) {
  v1::AnnexBody b;
  b.set_id(fmt::format("annex-{}", ctx.version));
  b.set_provider(service.provider());
  b.set_service(service.spec().name());
  b.set_service_version(service.spec().version());
  b.set_issued_at_ms(ctx.now);
  if (auto it = state_.entities.find(EntityKey(service.provider())); it != state_.entities.end()) {
    b.set_provider_nta_hash(it->second.agreement().nta_hash());
  }
  if (grant == nullptr) {
    b.set_legal_basis(service.spec().legal_basis());
    *b.mutable_quota() = service.spec().default_quota();
  } else {
    b.set_env(grant->env());
    b.set_consumer(grant->consumer());
    b.set_legal_basis(grant->legal_basis().empty() ? service.spec().legal_basis()
                                                   : grant->legal_basis());
    *b.mutable_quota() = grant->quota();
    if (auto it = state_.entities.find(EntityKey(grant->consumer()));
        it != state_.entities.end()) {
      b.set_consumer_nta_hash(it->second.agreement().nta_hash());
    }
  }
  v1::Annex a;
  a.set_id(b.id());
  CHASQUI_ASSIGN_OR_RETURN(*a.mutable_signed_message(),
                           signer_.Sign(CatalogSignedKind::kAnnex, b.SerializeAsString()));
  ctx.records.push_back(Rec(a));
  return a.id();
}

absl::StatusOr<CatalogChange> Catalog::Change(std::string_view verb, std::string_view request) {
  absl::MutexLock lock(&mu_);
  Context ctx;
  ctx.verb = std::string(verb);
  ctx.request = request;
  CHASQUI_RETURN_IF_ERROR(CheckControl(request, ctx));
  ctx.version = version_ + 1;
  CHASQUI_RETURN_IF_ERROR(Dispatch(ctx));
  CatalogChange out;
  CHASQUI_RETURN_IF_ERROR(Commit(ctx, &out));
  return out;
}

absl::Status Catalog::Dispatch(Context& ctx) {
  using B = v1::CatalogControlBody;
  switch (ctx.body.action_case()) {
    case B::kRegisterEntity:
      return RegisterEntity(ctx);
    case B::kAdhere:
      return Adhere(ctx);
    case B::kSubmit:
      return Submit(ctx);
    case B::kPublish:
    case B::kRejectService:
    case B::kDeprecate:
    case B::kRetire:
      return DecideService(ctx);
    case B::kRequestAccess:
      return RequestAccess(ctx);
    case B::kApprove:
    case B::kRejectAccess:
    case B::kSuspend:
    case B::kRevoke:
      return DecideGrant(ctx);
    case B::kPromote:
      return Promote(ctx);
    case B::kRegisterEndUser:
    case B::kDisableEndUser:
      return EndUserChange(ctx);
    default:
      return absl::InvalidArgumentError("control request: no action");
  }
}

absl::Status Catalog::RegisterEntity(Context& ctx) {
  const v1::RegisterEntityAction& a = ctx.body.register_entity();
  CHASQUI_RETURN_IF_ERROR(RequireRole(ctx, v1::CERTIFICATE_ROLE_OPERATOR, ""));
  CHASQUI_RETURN_IF_ERROR(ValidateName("entity", a.id()));
  CHASQUI_RETURN_IF_ERROR(CheckText("entity name", a.name(), true, 256));
  for (const std::string& m : a.managers()) CHASQUI_RETURN_IF_ERROR(ValidateName("manager", m));
  if (state_.entities.contains(EntityKey(a.id()))) {
    return absl::AlreadyExistsError(fmt::format("entity {} is already registered", a.id()));
  }
  v1::Entity e;
  e.set_id(a.id());
  e.set_name(a.name());
  *e.mutable_managers() = a.managers();
  e.set_adhesion(v1::ADHESION_STATE_PENDING);
  e.set_registered_at_ms(ctx.now);
  ctx.records.push_back(Rec(e));
  return absl::OkStatus();
}

absl::Status Catalog::Adhere(Context& ctx) {
  const v1::AdhereAction& a = ctx.body.adhere();
  CHASQUI_RETURN_IF_ERROR(RequireRole(ctx, v1::CERTIFICATE_ROLE_MAE, a.entity()));
  auto it = state_.entities.find(EntityKey(a.entity()));
  if (it == state_.entities.end()) {
    return absl::NotFoundError(
        fmt::format("adhere: entity {} is not registered (an operator registers it first)",
                    Printable(a.entity())));
  }
  if (it->second.adhesion() == v1::ADHESION_STATE_SIGNED) {
    const v1::AdhesionAgreement& g = it->second.agreement();
    return absl::AlreadyExistsError(fmt::format(
        "adhere: entity {} already adhered: its MAE {} (certificate {}) signed the NTA at {}; it "
        "is signed only once",
        a.entity(), g.mae_subject(), g.mae_serial(), g.signed_at_ms()));
  }
  if (a.nta_hash().size() != 32) {
    return absl::InvalidArgumentError("adhere: nta_hash must be 32 bytes (BLAKE2b-256 of the text)");
  }
  if (a.nta_hash() != options_.nta_hash) {
    return absl::FailedPreconditionError(fmt::format(
        "adhere: the NTA signed (hash {}) is not the text in force (hash {})",
        ToHex(a.nta_hash()).substr(0, 16), ToHex(options_.nta_hash).substr(0, 16)));
  }
  v1::Entity e = it->second;
  e.set_adhesion(v1::ADHESION_STATE_SIGNED);
  v1::AdhesionAgreement* g = e.mutable_agreement();
  g->set_entity(a.entity());
  g->set_nta_hash(a.nta_hash());
  g->set_mae_serial(ctx.cert->serial);
  g->set_mae_subject(ctx.cert->subject);
  g->set_env(ctx.body.env());
  g->set_signed_at_ms(ctx.now);
  g->set_signed_request(std::string(ctx.request));
  ctx.records.push_back(Rec(e));
  return absl::OkStatus();
}

absl::Status Catalog::Submit(Context& ctx) {
  const v1::SubmitServiceAction& a = ctx.body.submit();
  const v1::ServiceSpec& s = a.spec();
  CHASQUI_RETURN_IF_ERROR(RequireRole(ctx, v1::CERTIFICATE_ROLE_MANAGER, a.provider()));
  CHASQUI_RETURN_IF_ERROR(RequireAdhesion(a.provider(), "submit").status());
  CHASQUI_RETURN_IF_ERROR(ValidateName("service", s.name()));
  CHASQUI_RETURN_IF_ERROR(CheckText("version", s.version(), true, 64));
  CHASQUI_RETURN_IF_ERROR(CheckText("description", s.description(), true));
  if (s.classification() == v1::CLASSIFICATION_UNSPECIFIED ||
      !v1::Classification_IsValid(s.classification())) {
    return absl::InvalidArgumentError(
        "submit: classification must be public, private or restricted");
  }
  CHASQUI_RETURN_IF_ERROR(CheckText("legal basis", s.legal_basis(),
                                    s.personal_data() ||
                                        s.classification() != v1::CLASSIFICATION_PUBLIC));
  CHASQUI_RETURN_IF_ERROR(CheckText("technical conditions", s.technical_conditions(), false));
  CHASQUI_RETURN_IF_ERROR(CheckSchema("request schema", s.request_schema()));
  CHASQUI_RETURN_IF_ERROR(CheckSchema("response schema", s.response_schema()));
  const v1::Quota& q = s.default_quota();
  if (!(q.rate_per_second() > 0) || q.burst() == 0) {
    return absl::InvalidArgumentError(
        "submit: default quota needs a rate per second above 0 and a burst of at least 1");
  }
  v1::Service svc;
  if (auto it = state_.services.find(ServiceKey(a.provider(), s.name()));
      it != state_.services.end()) {
    const v1::ServiceState st = it->second.state();
    if (st != v1::SERVICE_STATE_DRAFT && st != v1::SERVICE_STATE_REJECTED) {
      return absl::AlreadyExistsError(fmt::format("submit: service {}/{} is already {}",
                                                  a.provider(), s.name(), StateName(st)));
    }
    svc = it->second;
  }
  svc.set_provider(a.provider());
  *svc.mutable_spec() = s;
  svc.set_state(a.draft() ? v1::SERVICE_STATE_DRAFT : v1::SERVICE_STATE_SUBMITTED);
  svc.clear_reason();
  if (!a.draft()) svc.set_submitted_at_ms(ctx.now);
  svc.set_changed_at_ms(ctx.now);
  ctx.records.push_back(Rec(svc));
  return absl::OkStatus();
}

absl::Status Catalog::DecideService(Context& ctx) {
  using B = v1::CatalogControlBody;
  const B& b = ctx.body;
  const v1::ServiceDecisionAction& a =
      b.has_publish() ? b.publish()
                      : b.has_reject_service() ? b.reject_service()
                                               : b.has_deprecate() ? b.deprecate() : b.retire();
  CHASQUI_RETURN_IF_ERROR(RequireRole(ctx, v1::CERTIFICATE_ROLE_OPERATOR, ""));
  auto it = state_.services.find(ServiceKey(a.provider(), a.service()));
  if (it == state_.services.end()) {
    return absl::NotFoundError(fmt::format("{}: no service {}/{}", ctx.verb,
                                           Printable(a.provider()), Printable(a.service())));
  }
  v1::Service svc = it->second;
  const v1::ServiceState st = svc.state();
  auto wrong = [&](std::string_view needed) {
    return absl::FailedPreconditionError(fmt::format("{}: service {}/{} is {}; only {}", ctx.verb,
                                                     a.provider(), a.service(), StateName(st),
                                                     needed));
  };
  CHASQUI_RETURN_IF_ERROR(CheckText("reason", a.reason(), b.has_reject_service()));
  if (b.has_publish() || b.has_reject_service()) {
    if (st != v1::SERVICE_STATE_SUBMITTED) return wrong("a submitted service is reviewed");
    if (b.has_publish()) {
      svc.set_state(v1::SERVICE_STATE_PUBLISHED);
      svc.set_published_at_ms(ctx.now);
      svc.clear_reason();
      CHASQUI_ASSIGN_OR_RETURN(std::string annex, MakeAnnex(ctx, svc, nullptr));
      svc.set_annex_id(annex);
    } else {
      svc.set_state(v1::SERVICE_STATE_REJECTED);
      svc.set_reason(a.reason());
    }
  } else if (b.has_deprecate()) {
    if (st != v1::SERVICE_STATE_PUBLISHED) return wrong("a published service is deprecated");
    svc.set_state(v1::SERVICE_STATE_DEPRECATED);
    svc.set_reason(a.reason());
  } else {
    if (st != v1::SERVICE_STATE_PUBLISHED && st != v1::SERVICE_STATE_DEPRECATED) {
      return wrong("a published or deprecated service is retired");
    }
    svc.set_state(v1::SERVICE_STATE_RETIRED);
    svc.set_reason(a.reason());
  }
  svc.set_changed_at_ms(ctx.now);
  ctx.records.insert(ctx.records.begin(), Rec(svc));
  return absl::OkStatus();
}

absl::Status Catalog::RequestAccess(Context& ctx) {
  const v1::RequestAccessAction& a = ctx.body.request_access();
  CHASQUI_RETURN_IF_ERROR(RequireRole(ctx, v1::CERTIFICATE_ROLE_MANAGER, a.consumer()));
  CHASQUI_RETURN_IF_ERROR(ValidateEnv(a.env()));
  CHASQUI_RETURN_IF_ERROR(RequireAdhesion(a.consumer(), "request_access").status());
  if (a.env() == "prod") {
    return absl::FailedPreconditionError(
        "request_access: production access is a promotion of an active test grant; request it "
        "in test, then ask an operator to promote it");
  }
  auto sit = state_.services.find(ServiceKey(a.provider(), a.service()));
  if (sit == state_.services.end() || (sit->second.state() != v1::SERVICE_STATE_PUBLISHED &&
                                       sit->second.state() != v1::SERVICE_STATE_DEPRECATED)) {
    return absl::NotFoundError(fmt::format("request_access: no published service {}/{}",
                                           Printable(a.provider()), Printable(a.service())));
  }
  const v1::Service& svc = sit->second;
  if (svc.state() == v1::SERVICE_STATE_DEPRECATED) {
    return absl::FailedPreconditionError(fmt::format(
        "request_access: service {}/{} is deprecated and takes no new consumers", a.provider(),
        a.service()));
  }
  CHASQUI_RETURN_IF_ERROR(RequireAdhesion(a.provider(), "request_access").status());
  CHASQUI_RETURN_IF_ERROR(CheckText("justification", a.justification(), true));
  CHASQUI_RETURN_IF_ERROR(
      CheckText("legal basis", a.legal_basis(),
                svc.spec().personal_data() ||
                    svc.spec().classification() == v1::CLASSIFICATION_RESTRICTED));
  const std::string key = GrantKey(a.env(), a.consumer(), a.provider(), a.service());
  if (auto git = state_.grants.find(key); git != state_.grants.end()) {
    const v1::GrantState st = git->second.state();
    if (st == v1::GRANT_STATE_PENDING || st == v1::GRANT_STATE_ACTIVE ||
        st == v1::GRANT_STATE_SUSPENDED) {
      return absl::AlreadyExistsError(
          fmt::format("request_access: {} is already {}",
                      GrantName(a.env(), a.consumer(), a.provider(), a.service()), StateName(st)));
    }
  }
  v1::Grant g;
  g.set_env(a.env());
  g.set_consumer(a.consumer());
  g.set_provider(a.provider());
  g.set_service(a.service());
  g.set_justification(a.justification());
  g.set_legal_basis(a.legal_basis());
  *g.mutable_quota() = svc.spec().default_quota();
  g.set_requested_at_ms(ctx.now);
  g.set_changed_at_ms(ctx.now);
  if (svc.spec().classification() == v1::CLASSIFICATION_PUBLIC) {
    g.set_state(v1::GRANT_STATE_ACTIVE);
    CHASQUI_ASSIGN_OR_RETURN(std::string annex, MakeAnnex(ctx, svc, &g));
    g.set_annex_id(annex);
  } else {
    g.set_state(v1::GRANT_STATE_PENDING);
  }
  ctx.records.insert(ctx.records.begin(), Rec(g));
  return absl::OkStatus();
}

absl::Status Catalog::DecideGrant(Context& ctx) {
  const v1::CatalogControlBody& b = ctx.body;
  const v1::GrantDecisionAction& a =
      b.has_approve() ? b.approve()
                      : b.has_reject_access() ? b.reject_access()
                                              : b.has_suspend() ? b.suspend() : b.revoke();
  CHASQUI_RETURN_IF_ERROR(RequireRole(ctx, v1::CERTIFICATE_ROLE_MANAGER, a.provider()));
  CHASQUI_RETURN_IF_ERROR(ValidateEnv(a.env()));
  CHASQUI_RETURN_IF_ERROR(CheckText("reason", a.reason(), !b.has_approve()));
  const std::string name = GrantName(a.env(), a.consumer(), a.provider(), a.service());
  auto git = state_.grants.find(GrantKey(a.env(), a.consumer(), a.provider(), a.service()));
  if (git == state_.grants.end()) {
    return absl::NotFoundError(
        fmt::format("{}: no access request {}", ctx.verb, Printable(name, 200)));
  }
  v1::Grant g = git->second;
  const v1::GrantState st = g.state();
  auto wrong = [&](std::string_view needed) {
    return absl::FailedPreconditionError(
        fmt::format("{}: {} is {}; only {}", ctx.verb, name, StateName(st), needed));
  };
  if (b.has_approve()) {
    if (st != v1::GRANT_STATE_PENDING) return wrong("a pending request is approved");
    auto sit = state_.services.find(ServiceKey(a.provider(), a.service()));
    if (sit == state_.services.end() || (sit->second.state() != v1::SERVICE_STATE_PUBLISHED &&
                                         sit->second.state() != v1::SERVICE_STATE_DEPRECATED)) {
      return absl::FailedPreconditionError(
          fmt::format("approve: service {}/{} is no longer published", a.provider(), a.service()));
    }
    g.set_state(v1::GRANT_STATE_ACTIVE);
    g.clear_reason();
    CHASQUI_ASSIGN_OR_RETURN(std::string annex, MakeAnnex(ctx, sit->second, &g));
    g.set_annex_id(annex);
  } else if (b.has_reject_access()) {
    if (st != v1::GRANT_STATE_PENDING) return wrong("a pending request is rejected");
    g.set_state(v1::GRANT_STATE_REJECTED);
    g.set_reason(a.reason());
  } else if (b.has_suspend()) {
    if (st != v1::GRANT_STATE_ACTIVE) return wrong("an active grant is suspended");
    g.set_state(v1::GRANT_STATE_SUSPENDED);
    g.set_reason(a.reason());
  } else {
    if (st != v1::GRANT_STATE_ACTIVE && st != v1::GRANT_STATE_SUSPENDED &&
        st != v1::GRANT_STATE_PENDING) {
      return wrong("a pending, active or suspended grant is revoked");
    }
    g.set_state(v1::GRANT_STATE_REVOKED);
    g.set_reason(a.reason());
  }
  g.set_changed_at_ms(ctx.now);
  ctx.records.insert(ctx.records.begin(), Rec(g));
  return absl::OkStatus();
}

absl::Status Catalog::Promote(Context& ctx) {
  const v1::GrantDecisionAction& a = ctx.body.promote();
  CHASQUI_RETURN_IF_ERROR(RequireRole(ctx, v1::CERTIFICATE_ROLE_OPERATOR, ""));
  if (!a.env().empty() && a.env() != "test") {
    return absl::InvalidArgumentError("promote: a grant is promoted from test to prod");
  }
  const std::string name = GrantName("test", a.consumer(), a.provider(), a.service());
  auto git = state_.grants.find(GrantKey("test", a.consumer(), a.provider(), a.service()));
  if (git == state_.grants.end() || git->second.state() != v1::GRANT_STATE_ACTIVE) {
    return absl::FailedPreconditionError(fmt::format(
        "promote: production access is a promotion of an active test grant; {} is {}",
        Printable(name, 200),
        git == state_.grants.end() ? "not granted" : StateName(git->second.state())));
  }
  auto sit = state_.services.find(ServiceKey(a.provider(), a.service()));
  if (sit == state_.services.end() || sit->second.state() != v1::SERVICE_STATE_PUBLISHED) {
    return absl::FailedPreconditionError(fmt::format(
        "promote: service {}/{} is not published (deprecated services take no new production "
        "consumers)",
        a.provider(), a.service()));
  }
  const std::string prod_key = GrantKey("prod", a.consumer(), a.provider(), a.service());
  if (auto pit = state_.grants.find(prod_key); pit != state_.grants.end()) {
    const v1::GrantState st = pit->second.state();
    if (st == v1::GRANT_STATE_ACTIVE || st == v1::GRANT_STATE_SUSPENDED) {
      return absl::AlreadyExistsError(fmt::format(
          "promote: {} is already {} in prod", Printable(name, 200), StateName(st)));
    }
  }
  v1::Grant g = git->second;
  g.set_env("prod");
  g.set_state(v1::GRANT_STATE_ACTIVE);
  g.clear_reason();
  g.set_changed_at_ms(ctx.now);
  g.set_promoted_from_version(ctx.version);
  CHASQUI_ASSIGN_OR_RETURN(std::string annex, MakeAnnex(ctx, sit->second, &g));
  g.set_annex_id(annex);
  ctx.records.insert(ctx.records.begin(), Rec(g));
  return absl::OkStatus();
}

absl::Status Catalog::EndUserChange(Context& ctx) {
  const bool enable = ctx.body.has_register_end_user();
  const v1::EndUserAction& a =
      enable ? ctx.body.register_end_user() : ctx.body.disable_end_user();
  CHASQUI_RETURN_IF_ERROR(RequireRole(ctx, v1::CERTIFICATE_ROLE_MANAGER, a.consumer()));
  CHASQUI_RETURN_IF_ERROR(RequireAdhesion(a.consumer(), ctx.verb).status());
  CHASQUI_RETURN_IF_ERROR(ValidateEndUserId(a.user_id()));
  auto it = state_.end_users.find(EndUserKey(a.consumer(), a.user_id()));
  if (enable && it != state_.end_users.end() && it->second.enabled()) {
    return absl::AlreadyExistsError(fmt::format("register_end_user: {} of {} is already enabled",
                                                a.user_id(), a.consumer()));
  }
  if (!enable) {
    if (it == state_.end_users.end()) {
      return absl::NotFoundError(
          fmt::format("disable_end_user: {} is not an end user of {}", a.user_id(), a.consumer()));
    }
    if (!it->second.enabled()) {
      return absl::FailedPreconditionError(fmt::format(
          "disable_end_user: {} of {} is already disabled", a.user_id(), a.consumer()));
    }
  }
  v1::EndUser u;
  u.set_consumer(a.consumer());
  u.set_user_id(a.user_id());
  u.set_enabled(enable);
  u.set_changed_at_ms(ctx.now);
  ctx.records.push_back(Rec(u));
  return absl::OkStatus();
}

absl::Status Catalog::Commit(Context& ctx, CatalogChange* out) {
  v1::CatalogEvent e;
  e.set_version(ctx.version);
  e.set_at_ms(ctx.now);
  e.set_verb(ctx.verb);
  e.set_actor_serial(ctx.cert->serial);
  e.set_actor(ctx.cert->subject);
  for (const v1::CatalogRecord& r : ctx.records) *e.add_records() = r;
  e.set_request(std::string(ctx.request));
  CHASQUI_ASSIGN_OR_RETURN(v1::SignedCatalogMessage signed_event,
                           signer_.Sign(CatalogSignedKind::kEvent, e.SerializeAsString()));
  KvBatch batch;
  for (const v1::CatalogRecord& r : ctx.records) batch.Put(RecordKey(r), RecordValue(r));
  batch.Put(LogKey(ctx.version), signed_event.SerializeAsString());
  batch.Put(kVersionKey, BigEndian64(ctx.version));
  batch.Put(kNoncePrefix + ctx.nonce_key, BigEndian64(static_cast<uint64_t>(ctx.nonce_expiry)));
  if (absl::Status s = store_->Write(batch, Durability::kSynced); !s.ok()) {
    CHQ_LOG_ERROR("catalog: change {} version {} not stored: {}", ctx.verb, ctx.version,
                  MessageOf(s));
    return s;
  }
  for (const v1::CatalogRecord& r : ctx.records) {
    const std::string key = RecordKey(r);
    switch (r.record_case()) {
      case v1::CatalogRecord::kEntity:
        state_.entities[key] = r.entity();
        break;
      case v1::CatalogRecord::kService:
        state_.services[key] = r.service();
        break;
      case v1::CatalogRecord::kGrant:
        state_.grants[key] = r.grant();
        break;
      case v1::CatalogRecord::kEndUser:
        state_.end_users[key] = r.end_user();
        break;
      case v1::CatalogRecord::kAnnex:
        state_.annexes[key] = r.annex();
        break;
      default:
        break;
    }
  }
  version_ = ctx.version;
  CHQ_LOG_INFO("catalog change: version={} verb={} by {} (certificate {}, {} of {}) records={}",
               ctx.version, ctx.verb, ctx.cert->subject, ctx.cert->serial,
               CertificateRoleName(ctx.cert->role), ctx.cert->entity, ctx.records.size());
  out->verb = ctx.verb;
  out->version = ctx.version;
  out->records = std::move(ctx.records);
  out->event = std::move(signed_event);
  return absl::OkStatus();
}

absl::StatusOr<v1::SignedCatalogMessage> Catalog::Snapshot() const {
  v1::CatalogSnapshot s;
  {
    absl::MutexLock lock(&mu_);
    s.set_version(version_);
    s.set_at_ms(clock_.NowUnixMillis());
    for (const auto& [k, v] : state_.entities) *s.add_entities() = v;
    for (const auto& [k, v] : state_.services) *s.add_services() = v;
    for (const auto& [k, v] : state_.grants) *s.add_grants() = v;
    for (const auto& [k, v] : state_.end_users) *s.add_end_users() = v;
    for (const auto& [k, v] : state_.annexes) *s.add_annexes() = v;
  }
  return signer_.Sign(CatalogSignedKind::kSnapshot, s.SerializeAsString());
}

absl::StatusOr<v1::EventsReply> Catalog::Events(uint64_t after_version, uint32_t limit) const {
  const uint32_t max = (limit == 0 || limit > options_.max_events_per_answer)
                           ? options_.max_events_per_answer
                           : limit;
  v1::EventsReply reply;
  reply.set_latest_version(version());
  absl::Status bad = absl::OkStatus();
  uint64_t expect = after_version + 1;
  CHASQUI_RETURN_IF_ERROR(store_->Scan(
      LogKey(after_version + 1), kLogEnd, [&](std::string_view k, std::string_view v) {
        v1::SignedCatalogMessage m;
        if (k.size() != 12 || FromBigEndian64(k.substr(4)) != expect ||
            !m.ParseFromArray(v.data(), static_cast<int>(v.size()))) {
          bad = absl::DataLossError(
              fmt::format("catalog: change log entry {} is missing or damaged", expect));
          return false;
        }
        *reply.add_events() = std::move(m);
        ++expect;
        return static_cast<uint32_t>(reply.events_size()) < max;
      }));
  CHASQUI_RETURN_IF_ERROR(bad);
  return reply;
}

uint64_t Catalog::version() const {
  absl::MutexLock lock(&mu_);
  return version_;
}

Catalog::Stats Catalog::GetStats() const {
  absl::MutexLock lock(&mu_);
  return {version_, state_.entities.size(), state_.services.size(), state_.grants.size(),
          state_.end_users.size(), state_.annexes.size()};
}

}  // namespace chasqui
