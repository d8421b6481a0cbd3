// `chasqui catalog <verb>`: the catalog's change verbs exactly as chq.ctl.catalog.<verb> names
// them (CatalogChangeVerbs: register_entity, adhere, submit, publish, reject_service,
// deprecate, retire, request_access, approve, reject_access, suspend, revoke, promote,
// register_end_user, disable_end_user), each signed by the person; and three reads from the
// catalog's signed snapshot, verified against the pinned roots: services, grants, annex.

#include <unistd.h>

#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "CLI/CLI.hpp"
#include "chasqui/v1/catalog.pb.h"
#include "common/bus/bus.h"
#include "common/core/clock.h"
#include "common/core/files.h"
#include "common/core/log.h"
#include "common/core/names.h"
#include "common/core/status.h"
#include "common/crypto/sodium.h"
#include "common/envelope/subjects.h"
#include "common/trust/anchors.h"
#include "common/trust/followed_signers.h"
#include "common/trust/requests.h"
#include "fmt/format.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"
#include "services/catalog/catalog_client.h"
#include "services/catalog/catalog_signing.h"
#include "services/gateway/cli_people.h"

namespace chasqui::cli {

// ---- Shared with cli_quota.cc ----

void AddPersonFlags(CLI::App* verb, PersonFlags* f) {
  verb->add_option("--key", f->key, "your own key file (`chasqui keygen --role ...`)")->required();
  verb->add_option("--cert", f->cert, "its certificate (`chasqui enrol`)")->required();
  verb->add_option("--nats", f->nats_url, "NATS server URL");
  verb->add_option("--nats-user", f->nats_user, "nats-server user (your entity's, <entity>.<env>)");
  verb->add_option("--nats-password-file", f->nats_password_file,
                   "file holding that user's password (mode 0600)");
  verb->add_option("--nats-ca", f->nats_ca, "nats-server's CA (PEM): connect over TLS");
  verb->add_option("--timeout-ms", f->timeout_ms, "give up waiting for the answer after this long");
}

absl::StatusOr<Identity> LoadPerson(const PersonFlags& flags) {
  CHASQUI_ASSIGN_OR_RETURN(Identity id, LoadIdentity(flags.key, flags.cert));
  if (!IsPersonRole(id.pub.role)) {
    return absl::InvalidArgumentError(fmt::format(
        "{} is a {} key: catalog and quota changes are signed by people (keys of role mae, "
        "manager or operator, `chasqui keygen --role manager ...`)",
        flags.key, RoleName(id.pub.role)));
  }
  return id;
}

absl::StatusOr<PersonSession> OpenPerson(const PersonFlags& flags, std::string_view tool) {
  CHASQUI_ASSIGN_OR_RETURN(Identity identity, LoadPerson(flags));
  BusOptions options;
  options.url = flags.nats_url;
  options.user = flags.nats_user;
  options.ca_file = flags.nats_ca;
  options.name = fmt::format("chasqui-{}-{}", tool, identity.pub.entity);
  options.send_asap = true;
  CHASQUI_ASSIGN_OR_RETURN(std::unique_ptr<Bus> bus,
                           ConnectWithPasswordFile(options, flags.nats_password_file));
  return PersonSession{std::move(identity), std::move(bus)};
}

std::string PersonInbox(const PublicIdentity& who) {
  return fmt::format("{}.{}", EntityInboxPrefix(who.env, who.entity), ToHex(RandomString(8)));
}

void OnRun(CLI::App* verb, std::function<int()> run) {
  verb->callback([run = std::move(run)] {
    spdlog::set_level(spdlog::level::warn);
    const int rc = run();
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

int LocalFault(const absl::Status& status) {
  std::cerr << "chasqui: " << MessageOf(status) << "\n";
  return 2;
}

int Refused(std::string_view verb, const absl::Status& status) {
  std::cerr << fmt::format("chasqui: {} refused: {}: {}\n", verb,
                           absl::StatusCodeToString(status.code()), MessageOf(status));
  return 1;
}

namespace {

// ---- Connections ----

struct Session {
  PersonSession person;
  std::unique_ptr<CatalogClient> client;
};

absl::StatusOr<Session> Open(const PersonFlags& flags) {
  CHASQUI_ASSIGN_OR_RETURN(PersonSession person, OpenPerson(flags, "catalog"));
  CHASQUI_ASSIGN_OR_RETURN(
      std::unique_ptr<CatalogClient> client,
      CatalogClient::Create(person.bus.get(), PersonInbox(person.identity.pub),
                            absl::Milliseconds(flags.timeout_ms)));
  return Session{std::move(person), std::move(client)};
}

// ---- Describing what changed ----

std::string_view Word(v1::ServiceState s) {
  switch (s) {
    case v1::SERVICE_STATE_DRAFT: return "draft";
    case v1::SERVICE_STATE_SUBMITTED: return "submitted";
    case v1::SERVICE_STATE_PUBLISHED: return "published";
    case v1::SERVICE_STATE_REJECTED: return "rejected";
    case v1::SERVICE_STATE_DEPRECATED: return "deprecated";
    case v1::SERVICE_STATE_RETIRED: return "retired";
    default: return "unspecified";
  }
}

std::string_view Word(v1::GrantState s) {
  switch (s) {
    case v1::GRANT_STATE_PENDING: return "pending";
    case v1::GRANT_STATE_ACTIVE: return "active";
    case v1::GRANT_STATE_REJECTED: return "rejected";
    case v1::GRANT_STATE_SUSPENDED: return "suspended";
    case v1::GRANT_STATE_REVOKED: return "revoked";
    default: return "unspecified";
  }
}

std::string_view Word(v1::Classification c) {
  switch (c) {
    case v1::CLASSIFICATION_PUBLIC: return "public";
    case v1::CLASSIFICATION_PRIVATE: return "private";
    case v1::CLASSIFICATION_RESTRICTED: return "restricted";
    default: return "unspecified";
  }
}

std::string QuotaText(const v1::Quota& q) {
  return fmt::format("{}/s burst {}, per day {}, per month {}", q.rate_per_second(), q.burst(),
                     q.per_day() == 0 ? std::string("-") : std::to_string(q.per_day()),
                     q.per_month() == 0 ? std::string("-") : std::to_string(q.per_month()));
}

std::string Describe(const v1::Service& s) {
  std::string out = fmt::format("service {}/{} {} ({}{}) is {}", s.provider(), s.spec().name(),
                                s.spec().version(), Word(s.spec().classification()),
                                s.spec().personal_data() ? ", personal data" : "",
                                Word(s.state()));
  if (!s.reason().empty()) out += fmt::format(": {}", s.reason());
  if (!s.annex_id().empty()) out += fmt::format(" (annex {})", s.annex_id());
  return out;
}

std::string Describe(const v1::Grant& g) {
  std::string out = fmt::format("grant {} -> {}/{} in {} is {}", g.consumer(), g.provider(),
                                g.service(), g.env(), Word(g.state()));
  if (!g.reason().empty()) out += fmt::format(": {}", g.reason());
  if (!g.annex_id().empty()) out += fmt::format(" (annex {})", g.annex_id());
  return out;
}

std::string Describe(const v1::CatalogRecord& r) {
  switch (r.record_case()) {
    case v1::CatalogRecord::kEntity: {
      const v1::Entity& e = r.entity();
      if (e.adhesion() == v1::ADHESION_STATE_SIGNED) {
        return fmt::format("entity {} ({}) has adhered: NTA signed by its MAE {} (certificate {})",
                           e.id(), e.name(), e.agreement().mae_subject(),
                           e.agreement().mae_serial());
      }
      return fmt::format("entity {} ({}) is registered; its MAE must adhere (sign the NTA)",
                         e.id(), e.name());
    }
    case v1::CatalogRecord::kService:
      return Describe(r.service());
    case v1::CatalogRecord::kGrant:
      return Describe(r.grant());
    case v1::CatalogRecord::kEndUser:
      return fmt::format("end user {} of {} is {}", r.end_user().user_id(),
                         r.end_user().consumer(), r.end_user().enabled() ? "enabled" : "disabled");
    case v1::CatalogRecord::kAnnex:
      return fmt::format("annex {}", r.annex().id());
    default:
      return "nothing";
  }
}

int SendChange(const PersonFlags& flags, const std::string& verb, v1::CatalogControlBody body) {
  auto s = Open(flags);
  if (!s.ok()) return LocalFault(s.status());
  const PublicIdentity& who = s->person.identity.pub;
  v1::ControlRequest req = MakeCatalogRequest(std::move(body), who.env, who.serial,
                                              s->person.identity.sign, SystemClock().NowUnixMillis());
  auto reply = s->client->Change(verb, req);
  if (!reply.ok()) return Refused(verb, reply.status());
  std::string what = "done";
  for (const v1::CatalogRecord& r : reply->records()) {
    if (r.has_annex()) continue;
    what = Describe(r);
    break;
  }
  std::cout << fmt::format("{}: {} (catalog version {})\n", verb, what, reply->version());
  return 0;
}

// ---- Reads: the signed snapshot, verified ----

struct ReadFlags {
  PersonFlags person;
  std::string roots;
  bool json = false;
};

void AddReadFlags(CLI::App* verb, ReadFlags* f) {
  AddPersonFlags(verb, &f->person);
  verb->add_option("--roots", f->roots,
                   "pinned roots (roots.json): the catalog's signature is verified with them")
      ->required();
  verb->add_flag("--json", f->json, "a JSON array instead of one line per item");
}

// What a read holds: the session first, so the signers (which use its bus) go before it.
struct Read {
  Session session;
  std::unique_ptr<FollowedSigners> signers;
  v1::CatalogSnapshot snapshot;
};

// The snapshot, verified for the person's env with the catalog's certificate (fetched from the
// crypto service, checked against the roots, revocations applied). On failure returns the exit
// code in `rc`.
std::optional<Read> ReadSnapshot(const ReadFlags& f, int* rc) {
  auto anchors = LoadTrustAnchors(f.roots);
  if (!anchors.ok()) {
    *rc = LocalFault(anchors.status());
    return std::nullopt;
  }
  auto s = Open(f.person);
  if (!s.ok()) {
    *rc = LocalFault(s.status());
    return std::nullopt;
  }
  const std::string env = s->person.identity.pub.env;
  auto signers = FollowedSigners::Start(s->person.bus.get(), *anchors, {env},
                                        PersonInbox(s->person.identity.pub), SystemClock());
  if (!signers.ok()) {
    *rc = LocalFault(signers.status());
    return std::nullopt;
  }
  auto signed_snapshot = s->client->Snapshot();
  if (!signed_snapshot.ok()) {
    *rc = Refused("snapshot", signed_snapshot.status());
    return std::nullopt;
  }
  auto snapshot =
      VerifyCatalogSnapshot(*signed_snapshot, env, **signers, SystemClock().NowUnixMillis());
  if (!snapshot.ok()) {
    *rc = Refused("snapshot verification", snapshot.status());
    return std::nullopt;
  }
  return Read{*std::move(s), *std::move(signers), *std::move(snapshot)};
}

nlohmann::json ToJson(const google::protobuf::Message& m) {
  std::string text;
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &text, o);
  return nlohmann::json::parse(text, nullptr, false);
}

template <class Msg>
void PrintList(const std::vector<const Msg*>& items, bool json, const std::string& empty) {
  if (json) {
    nlohmann::json out = nlohmann::json::array();
    for (const Msg* m : items) out.push_back(ToJson(*m));
    std::cout << out.dump(2) << "\n";
    return;
  }
  if (items.empty()) std::cout << empty << "\n";
  for (const Msg* m : items) std::cout << Describe(*m) << "\n";
}

v1::CatalogControlBody GrantBody(const std::string& verb, const v1::GrantDecisionAction& a) {
  v1::CatalogControlBody b;
  v1::GrantDecisionAction* dst = verb == "approve"         ? b.mutable_approve()
                                 : verb == "reject_access" ? b.mutable_reject_access()
                                 : verb == "suspend"       ? b.mutable_suspend()
                                 : verb == "revoke"        ? b.mutable_revoke()
                                                           : b.mutable_promote();
  *dst = a;
  return b;
}

v1::CatalogControlBody ServiceBody(const std::string& verb, const v1::ServiceDecisionAction& a) {
  v1::CatalogControlBody b;
  v1::ServiceDecisionAction* dst = verb == "publish"          ? b.mutable_publish()
                                   : verb == "reject_service" ? b.mutable_reject_service()
                                   : verb == "deprecate"      ? b.mutable_deprecate()
                                                              : b.mutable_retire();
  *dst = a;
  return b;
}

absl::StatusOr<v1::Classification> ParseClassification(const std::string& name) {
  if (name == "public") return v1::CLASSIFICATION_PUBLIC;
  if (name == "private") return v1::CLASSIFICATION_PRIVATE;
  if (name == "restricted") return v1::CLASSIFICATION_RESTRICTED;
  return absl::InvalidArgumentError(fmt::format(
      "--classification {}: expected public, private or restricted", Printable(name)));
}

}  // namespace

void AddCatalogCommands(CLI::App& app) {
  CLI::App* catalog = app.add_subcommand(
      "catalog", "act on the catalog: adhere, publish and review services, grants, end users");
  catalog->require_subcommand(1);

  {  // register_entity (operator)
    struct F { PersonFlags p; v1::RegisterEntityAction a; std::vector<std::string> managers; };
    auto f = std::make_shared<F>();
    CLI::App* v = catalog->add_subcommand("register_entity", "operator: register an entity");
    AddPersonFlags(v, &f->p);
    v->add_option("--id", *f->a.mutable_id(), "entity id, e.g. segip")->required();
    v->add_option("--name", *f->a.mutable_name(), "its full name")->required();
    v->add_option("--manager", f->managers,
                  "a person id allowed to act as its manager (repeatable; none: any manager "
                  "certificate of the entity)");
    OnRun(v, [f] {
      v1::CatalogControlBody b;
      *b.mutable_register_entity() = f->a;
      for (const auto& m : f->managers) b.mutable_register_entity()->add_managers(m);
      return SendChange(f->p, "register_entity", std::move(b));
    });
  }
  {  // adhere (MAE, once)
    struct F { PersonFlags p; std::string entity, nta; };
    auto f = std::make_shared<F>();
    CLI::App* v = catalog->add_subcommand(
        "adhere", "MAE: sign the adhesion agreement (NTA) for your entity, once");
    AddPersonFlags(v, &f->p);
    v->add_option("--entity", f->entity, "your entity")->required();
    v->add_option("--nta", f->nta, "the NTA text you read (its BLAKE2b-256 hash is signed)")
        ->required();
    OnRun(v, [f] {
      auto text = ReadFileToString(f->nta, "NTA file");
      if (!text.ok()) return LocalFault(text.status());
      v1::CatalogControlBody b;
      b.mutable_adhere()->set_entity(f->entity);
      b.mutable_adhere()->set_nta_hash(std::string(AsView(Blake2b256(*text))));
      return SendChange(f->p, "adhere", std::move(b));
    });
  }
  {  // submit (provider's manager)
    struct F {
      PersonFlags p;
      std::string provider, classification, request_schema, response_schema;
      v1::ServiceSpec spec;
      bool draft = false;
      bool personal_data = false;
      double rate = 0, capacity_rate = 0;
      uint32_t burst = 0, capacity_burst = 0;
      uint64_t per_day = 0, per_month = 0;
    };
    auto f = std::make_shared<F>();
    CLI::App* v = catalog->add_subcommand(
        "submit", "provider's manager: submit a service for review (or keep it as a draft)");
    AddPersonFlags(v, &f->p);
    v->add_option("--provider", f->provider, "your entity")->required();
    v->add_option("--name", *f->spec.mutable_name(), "service name (one token)")->required();
    v->add_option("--version", *f->spec.mutable_version(), "service version")->required();
    v->add_option("--description", *f->spec.mutable_description(), "what it answers")
        ->required();
    v->add_option("--classification", f->classification, "public, private or restricted")
        ->required();
    v->add_flag("--personal-data", f->personal_data, "it carries personal data (sealed)");
    v->add_option("--legal-basis", *f->spec.mutable_legal_basis(),
                  "legal basis (required unless public without personal data)");
    v->add_option("--technical-conditions", *f->spec.mutable_technical_conditions(),
                  "technical conditions");
    v->add_option("--request-schema", f->request_schema, "JSON Schema file of the request");
    v->add_option("--response-schema", f->response_schema, "JSON Schema file of the response");
    v->add_option("--rate", f->rate, "default quota per grant: requests per second")->required();
    v->add_option("--burst", f->burst, "default quota per grant: burst")->required();
    v->add_option("--per-day", f->per_day, "default quota per grant: per day (0: none)");
    v->add_option("--per-month", f->per_month, "default quota per grant: per month (0: none)");
    v->add_option("--capacity-rate", f->capacity_rate,
                  "the service's total capacity over all consumers, per second (0: none)");
    v->add_option("--capacity-burst", f->capacity_burst, "burst of that capacity");
    v->add_flag("--draft", f->draft, "keep it as a draft (submit later)");
    OnRun(v, [f] {
      auto c = ParseClassification(f->classification);
      if (!c.ok()) return LocalFault(c.status());
      v1::CatalogControlBody b;
      v1::SubmitServiceAction& a = *b.mutable_submit();
      a.set_provider(f->provider);
      a.set_draft(f->draft);
      *a.mutable_spec() = f->spec;
      v1::ServiceSpec& s = *a.mutable_spec();
      s.set_classification(*c);
      s.set_personal_data(f->personal_data);
      for (auto [path, field] : {std::pair{&f->request_schema, s.mutable_request_schema()},
                                 std::pair{&f->response_schema, s.mutable_response_schema()}}) {
        if (path->empty()) continue;
        auto text = ReadFileToString(*path, "schema file");
        if (!text.ok()) return LocalFault(text.status());
        *field = *std::move(text);
      }
      s.mutable_default_quota()->set_rate_per_second(f->rate);
      s.mutable_default_quota()->set_burst(f->burst);
      s.mutable_default_quota()->set_per_day(f->per_day);
      s.mutable_default_quota()->set_per_month(f->per_month);
      if (f->capacity_rate > 0 || f->capacity_burst > 0) {
        s.mutable_capacity()->set_rate_per_second(f->capacity_rate);
        s.mutable_capacity()->set_burst(f->capacity_burst);
      }
      return SendChange(f->p, "submit", std::move(b));
    });
  }
  // publish, reject_service, deprecate, retire (operator)
  for (const std::string verb : {"publish", "reject_service", "deprecate", "retire"}) {
    struct F { PersonFlags p; v1::ServiceDecisionAction a; };
    auto f = std::make_shared<F>();
    CLI::App* v = catalog->add_subcommand(
        verb, verb == "publish"          ? "operator: approve a submitted service and publish it"
              : verb == "reject_service" ? "operator: reject a submitted service, with a reason"
              : verb == "deprecate"      ? "operator: deprecate a published service"
                                         : "operator: retire a service (routers: NOT_FOUND)");
    AddPersonFlags(v, &f->p);
    v->add_option("--provider", *f->a.mutable_provider(), "the publishing entity")->required();
    v->add_option("--service", *f->a.mutable_service(), "service name")->required();
    auto* reason = v->add_option("--reason", *f->a.mutable_reason(), "why");
    if (verb == "reject_service") reason->required();
    OnRun(v, [f, verb] { return SendChange(f->p, verb, ServiceBody(verb, f->a)); });
  }
  {  // request_access (consumer's manager)
    struct F { PersonFlags p; v1::RequestAccessAction a; };
    auto f = std::make_shared<F>();
    f->a.set_env("test");
    CLI::App* v = catalog->add_subcommand(
        "request_access", "consumer's manager: ask for access to a service (in test)");
    AddPersonFlags(v, &f->p);
    v->add_option("--env", *f->a.mutable_env(), "test (prod is a promotion)");
    v->add_option("--consumer", *f->a.mutable_consumer(), "your entity")->required();
    v->add_option("--provider", *f->a.mutable_provider(), "the publishing entity")->required();
    v->add_option("--service", *f->a.mutable_service(), "service name")->required();
    v->add_option("--justification", *f->a.mutable_justification(), "why you need it")
        ->required();
    v->add_option("--legal-basis", *f->a.mutable_legal_basis(),
                  "legal basis (required for personal data or restricted services)");
    OnRun(v, [f] {
      v1::CatalogControlBody b;
      *b.mutable_request_access() = f->a;
      return SendChange(f->p, "request_access", std::move(b));
    });
  }
  // approve, reject_access, suspend, revoke (provider's manager); promote (operator)
  for (const std::string verb : {"approve", "reject_access", "suspend", "revoke", "promote"}) {
    struct F { PersonFlags p; v1::GrantDecisionAction a; };
    auto f = std::make_shared<F>();
    f->a.set_env("test");
    CLI::App* v = catalog->add_subcommand(
        verb, verb == "approve"         ? "provider's manager: approve a pending access request"
              : verb == "reject_access" ? "provider's manager: reject an access request"
              : verb == "suspend"       ? "provider's manager: suspend an active grant"
              : verb == "revoke"        ? "provider's manager: revoke a grant"
                                        : "operator: promote an active test grant to prod");
    AddPersonFlags(v, &f->p);
    if (verb != "promote") {
      v->add_option("--env", *f->a.mutable_env(), "the grant's environment: test or prod");
    }
    v->add_option("--consumer", *f->a.mutable_consumer(), "the consuming entity")->required();
    v->add_option("--provider", *f->a.mutable_provider(), "the publishing entity")->required();
    v->add_option("--service", *f->a.mutable_service(), "service name")->required();
    if (verb != "approve" && verb != "promote") {
      v->add_option("--reason", *f->a.mutable_reason(), "why")->required();
    }
    OnRun(v, [f, verb] { return SendChange(f->p, verb, GrantBody(verb, f->a)); });
  }
  // register_end_user, disable_end_user (consumer's manager)
  for (const std::string verb : {"register_end_user", "disable_end_user"}) {
    struct F { PersonFlags p; v1::EndUserAction a; };
    auto f = std::make_shared<F>();
    CLI::App* v = catalog->add_subcommand(
        verb, verb == "register_end_user"
                  ? "consumer's manager: register an official who may appear as end_user"
                  : "consumer's manager: disable an end user (END_USER_UNKNOWN from then on)");
    AddPersonFlags(v, &f->p);
    v->add_option("--consumer", *f->a.mutable_consumer(), "your entity")->required();
    v->add_option("--user", *f->a.mutable_user_id(), "the official's id, e.g. ana.perez")
        ->required();
    OnRun(v, [f, verb] {
      v1::CatalogControlBody b;
      *(verb == "register_end_user" ? b.mutable_register_end_user()
                                    : b.mutable_disable_end_user()) = f->a;
      return SendChange(f->p, verb, std::move(b));
    });
  }

  {  // services
    struct F { ReadFlags r; std::string provider; };
    auto f = std::make_shared<F>();
    CLI::App* v = catalog->add_subcommand("services", "list services (verified snapshot)");
    AddReadFlags(v, &f->r);
    v->add_option("--provider", f->provider, "only this entity's");
    OnRun(v, [f] {
      int rc = 0;
      auto read = ReadSnapshot(f->r, &rc);
      if (!read) return rc;
      std::vector<const v1::Service*> items;
      for (const v1::Service& svc : read->snapshot.services()) {
        if (f->provider.empty() || svc.provider() == f->provider) items.push_back(&svc);
      }
      PrintList(items, f->r.json, "no services");
      return 0;
    });
  }
  {  // grants
    struct F { ReadFlags r; std::string env, consumer, provider; };
    auto f = std::make_shared<F>();
    CLI::App* v = catalog->add_subcommand(
        "grants", "list access requests and grants (verified snapshot)");
    AddReadFlags(v, &f->r);
    v->add_option("--env", f->env, "only this environment's");
    v->add_option("--consumer", f->consumer, "only this consumer's");
    v->add_option("--provider", f->provider, "only to this provider's services");
    OnRun(v, [f] {
      int rc = 0;
      auto read = ReadSnapshot(f->r, &rc);
      if (!read) return rc;
      std::vector<const v1::Grant*> items;
      for (const v1::Grant& g : read->snapshot.grants()) {
        if ((f->env.empty() || g.env() == f->env) &&
            (f->consumer.empty() || g.consumer() == f->consumer) &&
            (f->provider.empty() || g.provider() == f->provider)) {
          items.push_back(&g);
        }
      }
      PrintList(items, f->r.json, "no grants");
      return 0;
    });
  }
  {  // annex
    struct F { ReadFlags r; std::string id; };
    auto f = std::make_shared<F>();
    CLI::App* v = catalog->add_subcommand(
        "annex", "show an annex and verify the platform's signature on it");
    AddReadFlags(v, &f->r);
    v->add_option("id", f->id, "annex id, e.g. annex-9 (`catalog grants` names them)")
        ->required();
    OnRun(v, [f] {
      int rc = 0;
      auto read = ReadSnapshot(f->r, &rc);
      if (!read) return rc;
      const v1::CatalogSnapshot& s = read->snapshot;
      const v1::Annex* annex = nullptr;
      for (const v1::Annex& a : s.annexes()) {
        if (a.id() == f->id) annex = &a;
      }
      if (annex == nullptr) {
        return Refused("annex", absl::NotFoundError(fmt::format(
                                    "no annex {} in the catalog (version {})", f->id,
                                    s.version())));
      }
      const std::string& env = read->session.person.identity.pub.env;
      auto body = VerifyAnnex(*annex, env, *read->signers, SystemClock().NowUnixMillis());
      if (!body.ok()) return Refused("annex verification", body.status());
      if (f->r.json) {
        std::cout << ToJson(*body).dump(2) << "\n";
        return 0;
      }
      std::cout << fmt::format(
          "annex {} verified (signed by the catalog for {}): {}/{} {} {}; legal basis: {}; "
          "quota {}; issued at {} (Unix ms)\n",
          body->id(), env, body->provider(), body->service(), body->service_version(),
          body->consumer().empty() ? std::string("published for every environment")
                                   : fmt::format("to {} in {}", body->consumer(), body->env()),
          body->legal_basis().empty() ? "-" : body->legal_basis(), QuotaText(body->quota()),
          body->issued_at_ms());
      return 0;
    });
  }
}

}  // namespace chasqui::cli
