// The gateway with the catalog (`--catalog`), end to end with real parts: a
// real nats-server, the crypto service in-process (RocksDB in a temp dir, the
// root from the real ceremony) that certifies every key (gateways, router,
// people, the catalog), the catalog service in-process (its own RocksDB)
// signing the events the gateways follow, a router WITHOUT a catalog (so it
// lets every request by), and sin's and segip's gateways on certificates,
// driven over HTTP.
//
// Covered: /readyz and GET /v1/openapi.json before and after the first
// snapshot, the snapshot metrics, the document listing exactly the granted
// services and following an approval, the provider gateway's own grant check,
// and mock mode (an example, no example, prod refused).

#include "services/gateway/gateway_catalog.h"

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "common/bus/bus.h"
#include "common/core/clock.h"
#include "common/core/status.h"
#include "common/envelope/errors.h"
#include "common/store/kv_store.h"
#include "common/trust/anchors.h"
#include "common/trust/certificate.h"
#include "common/trust/certificate_trust.h"
#include "common/trust/crypto_client.h"
#include "common/trust/directory.h"
#include "common/trust/requests.h"
#include "fmt/format.h"
#include "gtest/gtest.h"
#include "services/catalog/catalog.h"
#include "services/catalog/catalog_client.h"
#include "services/catalog/catalog_service.h"
#include "services/catalog/catalog_signing.h"
#include "services/gateway/http_gateway.h"
#include "services/gateway/mock_answer.h"
#include "services/router/router.h"
#include "tests/common/trust/crypto_fixture.h"
#include "tests/services/catalog/catalog_test_support.h"
#include "tests/services/gateway/gateway_test_support.h"
#include "tests/support/nats_server.h"
#include "tests/support/run_command.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait_for.h"

namespace chasqui::testing {
namespace {

constexpr auto kBound = std::chrono::seconds(10);
const httplib::Headers kAna = {{"X-Chasqui-End-User", "ana.perez"}};
constexpr char kPersona[] = "/v1/segip/persona_consulta";
constexpr char kCertificado[] = "/v1/segip/certificado";
constexpr char kPersonaExample[] = R"({"ci":"4567890","nombre":"Ana Perez"})";

nlohmann::json Json(const HttpReply& r) { return nlohmann::json::parse(r.body, nullptr, false); }
std::string Detail(const HttpReply& r) {
  auto doc = Json(r);
  return doc.is_object() ? doc.value("detail", "") : r.body;
}
std::string CodeOf(const HttpReply& r) {
  auto doc = Json(r);
  return doc.is_object() ? doc.value("code", "") : "";
}

// segip's services: persona_consulta's response schema carries an example;
// certificado's not.
v1::ServiceSpec Persona() {
  v1::ServiceSpec s = Spec("persona_consulta", v1::CLASSIFICATION_PRIVATE, true);
  s.set_request_schema(
      R"({"type":"object","required":["ci"],"properties":{"ci":{"type":"string"}}})");
  s.set_response_schema(fmt::format(R"({{"type":"object","properties":{{"ci":{{"type":"string"}},)"
                                    R"("nombre":{{"type":"string"}}}},"examples":[{}]}})",
                                    kPersonaExample));
  return s;
}
v1::ServiceSpec Certificado() {
  v1::ServiceSpec s = Spec("certificado", v1::CLASSIFICATION_PRIVATE, false);
  s.set_response_schema(R"({"type":"object"})");
  return s;
}

class GatewayCatalogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto nats = NatsServer::Start();
    ASSERT_TRUE(nats.ok()) << nats.status();
    nats_ = *std::move(nats);
    crypto_ = std::make_unique<CryptoFixture>(nats_->url(), dir_.File("crypto"), kDayMs);
    sin_ = std::make_unique<Enrolled>(crypto_->Enrol("sin", Role::kEntity));
    segip_ = std::make_unique<Enrolled>(crypto_->Enrol("segip", Role::kEntity));
    router_key_ = std::make_unique<Enrolled>(crypto_->Enrol("router", Role::kRouter));
    catalog_key_ = std::make_unique<Enrolled>(crypto_->Enrol("catalog", Role::kCatalog, "catalog"));
    op_ = std::make_unique<Enrolled>(crypto_->Enrol("agetic", Role::kOperator, "ana"));
    segip_mae_ = std::make_unique<Enrolled>(crypto_->Enrol("segip", Role::kMae, "maria"));
    segip_mgr_ = std::make_unique<Enrolled>(crypto_->Enrol("segip", Role::kManager, "pedro"));
    sin_mae_ = std::make_unique<Enrolled>(crypto_->Enrol("sin", Role::kMae, "juan"));
    sin_mgr_ = std::make_unique<Enrolled>(crypto_->Enrol("sin", Role::kManager, "lucia"));

    // The catalog's own view of people's certificates: the ones issued above,
    // and the crypto service's revocation list.
    people_ = std::make_unique<CertificateDirectory>("test", crypto_->anchors());
    std::vector<std::string> certs;
    for (const Enrolled* e :
         {op_.get(), segip_mae_.get(), segip_mgr_.get(), sin_mae_.get(), sin_mgr_.get()}) {
      certs.push_back(e->cert.certificate);
    }
    ASSERT_TRUE(people_->AddCertificates(certs, SystemClock().NowUnixMillis()).ok());
    auto crypto_client = CryptoClient::Create(NewBus("catalog-crypto"), "_INBOX._catalog.test");
    ASSERT_TRUE(crypto_client.ok()) << crypto_client.status();
    ASSERT_TRUE(CatchUpRevocations(**crypto_client, *people_, SystemClock()).ok());
    people_lookup_ = std::make_unique<DirectoryLookup>(
        std::map<std::string, CertificateDirectory*>{{"test", people_.get()}});

    auto client = CatalogClient::Create(NewBus("people"), "_INBOX.test.agetic.cli");
    ASSERT_TRUE(client.ok()) << client.status();
    people_client_ = *std::move(client);

    RouterOptions ro;
    ro.env = "test";
    ro.router_id = "r1";
    ro.startup_hold_ms = 0;
    ro.provider_timeout = absl::Seconds(3);
    // No catalog: this router lets every request by, so the provider's gateway
    // is the only one to check grants.
    auto router =
        Router::Start(ro, NewBus("router"), CopyIdentity(router_key_->identity),
                      BuildTrustStore({sin_->cert, segip_->cert, router_key_->cert}, "test"),
                      std::make_shared<prometheus::Registry>());
    ASSERT_TRUE(router.ok()) << router.status();
    router_ = *std::move(router);
    ASSERT_TRUE(WaitFor([&] { return router_->Ready().ok(); }, kBound));
  }

  void TearDown() override {
    consumer_gw_.reset();
    provider_gw_.reset();
    consumer_catalog_.reset();
    provider_catalog_.reset();
    router_.reset();
    catalog_service_.reset();
  }

  Bus* NewBus(const std::string& name) { return crypto_->NewBus(name); }

  void StartCatalogService() {
    auto store = KvStore::Open({.path = dir_.File("catalog")});
    ASSERT_TRUE(store.ok()) << store.status();
    catalog_store_ = *std::move(store);
    auto key = SigningKey::FromSecret(AsView(catalog_key_->identity.sign.secret().data(), 64));
    ASSERT_TRUE(key.ok());
    signer_ = std::make_unique<LocalCatalogSigner>(
        *std::move(key), std::map<std::string, uint64_t>{{"test", catalog_key_->cert.serial}});
    CatalogOptions o;
    o.envs = {"test"};
    o.nta_hash = NtaHash();
    auto catalog = Catalog::Open(o, catalog_store_.get(), *people_lookup_, *signer_, SystemClock());
    ASSERT_TRUE(catalog.ok()) << catalog.status();
    catalog_ = *std::move(catalog);
    auto service = CatalogService::Start({}, NewBus("catalog"), catalog_.get(),
                                         std::make_shared<prometheus::Registry>());
    ASSERT_TRUE(service.ok()) << service.status();
    catalog_service_ = *std::move(service);
  }

  // A person's signed change, as `chasqui` sends it.
  void Change(const std::string& verb, const v1::CatalogControlBody& body, const Enrolled& who) {
    auto r = people_client_->Change(
        verb, MakeCatalogRequest(body, "test", who.cert.serial, who.identity.sign,
                                 SystemClock().NowUnixMillis()));
    ASSERT_TRUE(r.ok()) << verb << ": " << r.status();
  }

  // Both entities adhered, segip's two private services published, ana.perez a
  // registered end user of sin. No grant yet.
  void Story() {
    ASSERT_NO_FATAL_FAILURE(Change("register_entity", RegisterEntity("segip", "SEGIP"), *op_));
    ASSERT_NO_FATAL_FAILURE(Change("register_entity", RegisterEntity("sin", "SIN"), *op_));
    ASSERT_NO_FATAL_FAILURE(Change("adhere", Adhere("segip"), *segip_mae_));
    ASSERT_NO_FATAL_FAILURE(Change("adhere", Adhere("sin"), *sin_mae_));
    for (const v1::ServiceSpec& spec : {Persona(), Certificado()}) {
      ASSERT_NO_FATAL_FAILURE(Change("submit", Submit("segip", spec), *segip_mgr_));
      ASSERT_NO_FATAL_FAILURE(
          Change("publish", ServiceDecision("publish", "segip", spec.name()), *op_));
    }
    ASSERT_NO_FATAL_FAILURE(
        Change("register_end_user", EndUser(true, "sin", "ana.perez"), *sin_mgr_));
  }

  // sin asks for `service` in test and segip's manager approves.
  void Grant(const std::string& service) {
    ASSERT_NO_FATAL_FAILURE(
        Change("request_access", RequestAccess("test", "sin", "segip", service), *sin_mgr_));
    ASSERT_NO_FATAL_FAILURE(
        Change("approve", GrantDecision("approve", "test", "sin", "segip", service), *segip_mgr_));
  }

  std::shared_ptr<CertificateTrust> StartTrust(const Enrolled& who,
                                               std::shared_ptr<prometheus::Registry> registry) {
    CertificateTrustOptions o;
    o.entity = who.identity.pub.entity;
    o.env = "test";
    o.own_certificate = who.cert.certificate;
    auto t = CertificateTrust::Start(NewBus("trust-" + o.entity), crypto_->anchors(), std::move(o),
                                     std::move(registry));
    CHASQUI_CHECK(t.ok(), MessageOf(t.status()));
    return *std::move(t);
  }

  std::shared_ptr<GatewayCatalog> FollowCatalog(const std::shared_ptr<CertificateTrust>& trust,
                                                const std::string& entity,
                                                std::shared_ptr<prometheus::Registry> registry) {
    GatewayCatalogOptions o;
    o.entity = entity;
    o.retry = absl::Milliseconds(100);
    o.resync = absl::Seconds(2);
    auto c = GatewayCatalog::Start(NewBus("catalog-" + entity), trust, o, std::move(registry));
    CHASQUI_CHECK(c.ok(), MessageOf(c.status()));
    return *std::move(c);
  }

  // segip's gateway serving `serve` (--serve values) and sin's, both following
  // the catalog.
  void StartGateways(const std::vector<std::string>& serve, const std::string& sin_api_key = "") {
    provider_registry_ = std::make_shared<prometheus::Registry>();
    consumer_registry_ = std::make_shared<prometheus::Registry>();
    auto provider_trust = StartTrust(*segip_, provider_registry_);
    auto consumer_trust = StartTrust(*sin_, consumer_registry_);
    provider_catalog_ = FollowCatalog(provider_trust, "segip", provider_registry_);
    consumer_catalog_ = FollowCatalog(consumer_trust, "sin", consumer_registry_);

    HttpGatewayOptions po;
    po.port = 0;
    for (const std::string& spec : serve) ASSERT_TRUE(AddServeSpec(spec, po).ok()) << spec;
    auto p = HttpGateway::Start(po, NewBus("gateway-segip"), CopyIdentity(segip_->identity),
                                provider_trust, provider_registry_, provider_catalog_);
    ASSERT_TRUE(p.ok()) << p.status();
    provider_gw_ = *std::move(p);
    HttpGatewayOptions co;
    co.port = 0;
    co.api_key = sin_api_key;
    auto c = HttpGateway::Start(co, NewBus("gateway-sin"), CopyIdentity(sin_->identity),
                                consumer_trust, consumer_registry_, consumer_catalog_);
    ASSERT_TRUE(c.ok()) << c.status();
    consumer_gw_ = *std::move(c);
  }

  // Both gateways hold at least the catalog's current version.
  void WaitForCatalog() {
    const uint64_t version = catalog_->version();
    ASSERT_TRUE(WaitFor(
        [&] {
          return provider_catalog_->snapshot().version() >= version &&
                 consumer_catalog_->snapshot().version() >= version;
        },
        kBound))
        << "catalog at " << version << ", segip at " << provider_catalog_->snapshot().version()
        << ", sin at " << consumer_catalog_->snapshot().version();
  }

  HttpReply Post(const std::string& path, const std::string& body) {
    return Send(consumer_gw_->port(), "POST", path, body, kAna);
  }
  HttpReply OpenApi(const httplib::Headers& headers = {}) {
    return Send(consumer_gw_->port(), "GET", "/v1/openapi.json", "", headers);
  }

  TempDir dir_;
  std::unique_ptr<NatsServer> nats_;
  std::unique_ptr<CryptoFixture> crypto_;  // before everything that uses its buses
  std::unique_ptr<Enrolled> sin_, segip_, router_key_, catalog_key_, op_, segip_mae_, segip_mgr_,
      sin_mae_, sin_mgr_;
  std::unique_ptr<CertificateDirectory> people_;
  std::unique_ptr<DirectoryLookup> people_lookup_;
  std::unique_ptr<CatalogClient> people_client_;
  std::unique_ptr<KvStore> catalog_store_;
  std::unique_ptr<LocalCatalogSigner> signer_;
  std::unique_ptr<Catalog> catalog_;
  std::unique_ptr<CatalogService> catalog_service_;
  std::unique_ptr<Router> router_;
  std::shared_ptr<prometheus::Registry> provider_registry_, consumer_registry_;
  std::shared_ptr<GatewayCatalog> provider_catalog_, consumer_catalog_;
  std::unique_ptr<HttpGateway> provider_gw_, consumer_gw_;
};

UpstreamSystem::Handler Echo() {
  return [](const httplib::Request& req, httplib::Response& res) {
    res.set_content("{\"segip\":" + req.body + "}", "application/json");
  };
}

std::vector<std::string> PathsOf(const nlohmann::json& doc) {
  std::vector<std::string> out;
  for (const auto& [path, item] : doc["paths"].items()) out.push_back(path);
  return out;
}

// Before the catalog answers, both gateways are unready and the document is
// 503; once the first snapshot is in, they are ready and the metrics show its
// version and age.
TEST_F(GatewayCatalogTest, UnreadyUntilTheFirstSnapshotThenMetricsShowItsVersionAndAge) {
  ASSERT_NO_FATAL_FAILURE(StartGateways({}));
  const absl::Status before = consumer_gw_->Ready();
  EXPECT_TRUE(absl::IsUnavailable(before)) << before;
  EXPECT_NE(std::string(MessageOf(before)).find("no catalog snapshot yet"), std::string::npos)
      << before;
  EXPECT_TRUE(absl::IsUnavailable(provider_gw_->Ready()));
  HttpReply early = OpenApi();
  EXPECT_EQ(early.status, 503) << early.body;
  EXPECT_EQ(CodeOf(early), "UNAVAILABLE") << early.body;
  EXPECT_EQ(SeriesValue(*consumer_registry_, "chasqui_gateway_catalog_snapshot_version",
                        {"entity=\"sin\""}),
            0);
  EXPECT_EQ(SeriesValue(*consumer_registry_, "chasqui_gateway_catalog_snapshot_age_seconds",
                        {"entity=\"sin\""}),
            -1);

  ASSERT_NO_FATAL_FAILURE(StartCatalogService());
  ASSERT_NO_FATAL_FAILURE(Story());
  ASSERT_NO_FATAL_FAILURE(WaitForCatalog());
  ASSERT_TRUE(
      WaitFor([&] { return consumer_gw_->Ready().ok() && provider_gw_->Ready().ok(); }, kBound))
      << consumer_gw_->Ready() << " / " << provider_gw_->Ready();
  const double version = static_cast<double>(catalog_->version());
  ASSERT_TRUE(WaitFor(
      [&] {
        return SeriesValue(*consumer_registry_, "chasqui_gateway_catalog_snapshot_version",
                           {"entity=\"sin\""}) == version;
      },
      kBound));
  const double age = SeriesValue(
      *consumer_registry_, "chasqui_gateway_catalog_snapshot_age_seconds", {"entity=\"sin\""});
  EXPECT_GE(age, 0);
  EXPECT_LT(age, 30);
}

// The document parses, is OpenAPI-shaped, lists exactly what sin is granted
// (nothing, then persona_consulta, then both) with the catalog's schemas, the
// headers and every error status, and asks for the API key sin's gateway
// requires.
TEST_F(GatewayCatalogTest, OpenApiListsExactlyTheGrantedServicesAndFollowsApprovals) {
  ASSERT_NO_FATAL_FAILURE(StartCatalogService());
  ASSERT_NO_FATAL_FAILURE(Story());
  ASSERT_NO_FATAL_FAILURE(StartGateways({}, "sin-local-key"));
  ASSERT_NO_FATAL_FAILURE(WaitForCatalog());
  const httplib::Headers key = {{"Authorization", "Bearer sin-local-key"}};

  HttpReply refused = OpenApi();
  EXPECT_EQ(refused.status, 401) << refused.body;
  EXPECT_EQ(CodeOf(refused), "UNAUTHENTICATED");

  HttpReply none = OpenApi(key);
  ASSERT_EQ(none.status, 200) << none.body;
  auto empty = Json(none);
  ASSERT_TRUE(empty.is_object()) << none.body;
  EXPECT_TRUE(empty["paths"].empty()) << "published but not granted: " << none.body;

  ASSERT_NO_FATAL_FAILURE(Grant("persona_consulta"));
  ASSERT_NO_FATAL_FAILURE(WaitForCatalog());
  HttpReply one = OpenApi(key);
  ASSERT_EQ(one.status, 200) << one.body;
  auto doc = Json(one);
  ASSERT_TRUE(doc.is_object()) << one.body;
  EXPECT_EQ(doc.value("openapi", "").substr(0, 4), "3.1.") << one.body;
  ASSERT_TRUE(doc["info"].is_object());
  EXPECT_FALSE(doc["info"].value("title", "").empty());
  EXPECT_FALSE(doc["info"].value("version", "").empty());
  EXPECT_EQ(PathsOf(doc), std::vector<std::string>{kPersona});
  EXPECT_EQ(doc["servers"][0].value("url", ""),
            fmt::format("http://127.0.0.1:{}", consumer_gw_->port()));
  EXPECT_EQ(doc["security"][0].count("localApiKey"), 1u) << one.body;

  const auto& op = doc["paths"][kPersona]["post"];
  ASSERT_TRUE(op.is_object()) << one.body;
  EXPECT_EQ(op["requestBody"]["content"]["application/json"]["schema"],
            nlohmann::json::parse(Persona().request_schema()));
  EXPECT_EQ(op["responses"]["200"]["content"]["application/json"]["schema"],
            nlohmann::json::parse(Persona().response_schema()));
  // The headers: end user mandatory, the rest optional.
  std::map<std::string, bool> headers;
  for (const auto& p : op["parameters"]) {
    const std::string ref = p.value("$ref", "");
    const auto& param = doc["components"]["parameters"][ref.substr(ref.rfind('/') + 1)];
    EXPECT_EQ(param.value("in", ""), "header") << ref;
    headers[param.value("name", "")] = param.value("required", false);
  }
  EXPECT_EQ(headers, (std::map<std::string, bool>{{"X-Chasqui-End-User", true},
                                                  {"X-Chasqui-Purpose", false},
                                                  {"X-Chasqui-Consent-Ref", false},
                                                  {"Idempotency-Key", false}}));
  // Every status the gateway answers, each with the problem document.
  for (const char* status :
       {"400", "401", "403", "404", "409", "413", "429", "502", "503", "504"}) {
    const std::string ref = op["responses"][status].value("$ref", "");
    ASSERT_FALSE(ref.empty()) << status;
    const auto& r = doc["components"]["responses"][ref.substr(ref.rfind('/') + 1)];
    EXPECT_TRUE(r["content"].contains("application/problem+json")) << status;
  }
  EXPECT_EQ(op["responses"].size(), 11u) << op["responses"].dump();
  EXPECT_NE(doc["components"]["responses"]["Problem403"]
                .value("description", "")
                .find("END_USER_UNKNOWN"),
            std::string::npos);
  EXPECT_TRUE(doc["components"]["responses"]["Problem429"]["headers"].contains("Retry-After"));

  // The publisher approves another request: the next document has it.
  ASSERT_NO_FATAL_FAILURE(Grant("certificado"));
  ASSERT_NO_FATAL_FAILURE(WaitForCatalog());
  HttpReply two = OpenApi(key);
  ASSERT_EQ(two.status, 200);
  EXPECT_EQ(PathsOf(Json(two)), (std::vector<std::string>{kCertificado, kPersona}));
  // segip holds no grant: its document is empty, whatever it publishes.
  HttpReply segip_doc = Send(provider_gw_->port(), "GET", "/v1/openapi.json", "", {});
  ASSERT_EQ(segip_doc.status, 200);
  EXPECT_TRUE(Json(segip_doc)["paths"].empty()) << segip_doc.body;
}

// The router lets sin's request by (it has no catalog); segip's gateway refuses
// it, signed, with FORBIDDEN naming the missing grant, and segip's system is
// never called. Once segip approves, the same call goes through.
TEST_F(GatewayCatalogTest, TheProviderGatewayRefusesAnUngrantedConsumerTheRouterLetBy) {
  UpstreamSystem segip_system(Echo());
  ASSERT_NO_FATAL_FAILURE(StartCatalogService());
  ASSERT_NO_FATAL_FAILURE(Story());
  ASSERT_NO_FATAL_FAILURE(StartGateways({"persona_consulta=" + segip_system.Url("/persona")}));
  ASSERT_NO_FATAL_FAILURE(WaitForCatalog());

  HttpReply r = Post(kPersona, R"({"ci":"1"})");
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_EQ(CodeOf(r), "FORBIDDEN") << r.body;
  EXPECT_NE(Detail(r).find("refused by segip's gateway"), std::string::npos) << r.body;
  EXPECT_NE(Detail(r).find("sin has no grant for segip/persona_consulta in test"),
            std::string::npos)
      << r.body;
  EXPECT_FALSE(r.Header("X-Chasqui-Request-Id").empty());
  EXPECT_EQ(segip_system.calls(), 0);
  // A refusal is not remembered under an Idempotency-Key: nothing ran.
  const httplib::Headers keyed = {{"X-Chasqui-End-User", "ana.perez"},
                                  {"Idempotency-Key", "retry-after-approval-1"}};
  HttpReply keyed_refused = Send(consumer_gw_->port(), "POST", kPersona, R"({"ci":"9"})", keyed);
  EXPECT_EQ(keyed_refused.status, 403) << keyed_refused.body;

  // An unknown end user is refused by segip too, once there is a grant.
  ASSERT_NO_FATAL_FAILURE(Grant("persona_consulta"));
  ASSERT_NO_FATAL_FAILURE(WaitForCatalog());
  // The same key, retried once the grant exists, runs the query.
  HttpReply keyed_ok = Send(consumer_gw_->port(), "POST", kPersona, R"({"ci":"9"})", keyed);
  EXPECT_EQ(keyed_ok.status, 200) << keyed_ok.body;
  EXPECT_EQ(segip_system.calls(), 1);
  HttpReply stranger = Send(consumer_gw_->port(), "POST", kPersona, R"({"ci":"1"})",
                            {{"X-Chasqui-End-User", "nobody"}});
  EXPECT_EQ(stranger.status, 403) << stranger.body;
  EXPECT_EQ(CodeOf(stranger), "END_USER_UNKNOWN") << stranger.body;
  EXPECT_EQ(segip_system.calls(), 1);  // only the keyed retry above

  HttpReply ok = Post(kPersona, R"({"ci":"2"})");
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(ok.body, R"({"segip":{"ci":"2"}})");
  EXPECT_EQ(segip_system.calls(), 2);

  // Revoked: refused again from the next request on.
  ASSERT_NO_FATAL_FAILURE(
      Change("revoke", GrantDecision("revoke", "test", "sin", "segip", "persona_consulta", "audit"),
             *segip_mgr_));
  ASSERT_NO_FATAL_FAILURE(WaitForCatalog());
  HttpReply revoked = Post(kPersona, R"({"ci":"3"})");
  EXPECT_EQ(revoked.status, 403) << revoked.body;
  EXPECT_NE(Detail(revoked).find("was revoked"), std::string::npos) << revoked.body;
  EXPECT_EQ(segip_system.calls(), 2);
}

// Mock mode: persona_consulta answers with its schema's example, certificado
// (no example) with PROVIDER_ERROR saying so; no real system exists.
TEST_F(GatewayCatalogTest, MockModeAnswersFromTheSchemaExampleOrSaysThereIsNone) {
  ASSERT_NO_FATAL_FAILURE(StartCatalogService());
  ASSERT_NO_FATAL_FAILURE(Story());
  ASSERT_NO_FATAL_FAILURE(Grant("persona_consulta"));
  ASSERT_NO_FATAL_FAILURE(Grant("certificado"));
  ASSERT_NO_FATAL_FAILURE(StartGateways({"persona_consulta=mock", "certificado=mock"}));
  ASSERT_NO_FATAL_FAILURE(WaitForCatalog());

  HttpReply r = Post(kPersona, R"({"ci":"4567890"})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(nlohmann::json::parse(r.body), nlohmann::json::parse(kPersonaExample));

  HttpReply none = Post(kCertificado, R"({})");
  EXPECT_EQ(none.status, 502) << none.body;
  EXPECT_EQ(CodeOf(none), "PROVIDER_ERROR") << none.body;
  EXPECT_NE(Detail(none).find("has no example"), std::string::npos) << none.body;
}

// Mock mode is refused in prod and without the catalog, with a message saying
// what to do; the executable refuses both before it connects, and --catalog on
// a trust file.
TEST_F(GatewayCatalogTest, MockModeIsRefusedInProdAndWithoutTheCatalog) {
  HttpGatewayOptions o;
  o.port = 0;
  ASSERT_TRUE(AddServeSpec("persona_consulta=mock", o).ok());
  EXPECT_EQ(o.mock, std::vector<std::string>{"persona_consulta"});
  EXPECT_TRUE(o.serve.empty());

  Identity prod = GenerateIdentity("segip", "prod", Role::kEntity);
  auto in_prod =
      HttpGateway::Start(o, NewBus("prod"), CopyIdentity(prod),
                         FixedTrust(TrustStore::FromIdentities({prod.pub}, "prod")), nullptr);
  ASSERT_FALSE(in_prod.ok());
  EXPECT_EQ(in_prod.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(MessageOf(in_prod.status())).find("test environment only"),
            std::string::npos)
      << in_prod.status();

  auto no_catalog = HttpGateway::Start(
      o, NewBus("nocat"), CopyIdentity(segip_->identity),
      FixedTrust(TrustStore::FromIdentities({segip_->identity.pub}, "test")), nullptr);
  ASSERT_FALSE(no_catalog.ok());
  EXPECT_EQ(no_catalog.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(MessageOf(no_catalog.status())).find("--catalog"), std::string::npos)
      << no_catalog.status();

  HttpGatewayOptions twice;
  ASSERT_TRUE(AddServeSpec("x=mock", twice).ok());
  ASSERT_TRUE(AddServeSpec("x=http://127.0.0.1:1/", twice).ok());
  EXPECT_NE(std::string(MessageOf(ValidateGatewayOptions(twice))).find("given twice"),
            std::string::npos);
  EXPECT_FALSE(AddServeSpec("Bad=mock", twice).ok());

  const std::string bin = CHASQUI_GATEWAY_BIN;
  auto prod_run =
      RunCommand(fmt::format("timeout 10 {} --env prod --key /nonexistent --roots /nonexistent "
                             "--cert /nonexistent --catalog --serve persona_consulta=mock",
                             bin));
  EXPECT_EQ(prod_run.exit_code, 2) << prod_run.output;
  EXPECT_NE(prod_run.output.find("test environment only"), std::string::npos) << prod_run.output;
  auto trust_run = RunCommand(fmt::format(
      "timeout 10 {} --env test --key /nonexistent --trust /nonexistent --catalog", bin));
  EXPECT_EQ(trust_run.exit_code, 2) << trust_run.output;
  EXPECT_NE(trust_run.output.find("--catalog"), std::string::npos) << trust_run.output;
  EXPECT_NE(trust_run.output.find("--roots"), std::string::npos) << trust_run.output;
  auto mock_run = RunCommand(fmt::format(
      "timeout 10 {} --env test --key /nonexistent --roots /x --cert /y --serve a=mock", bin));
  EXPECT_EQ(mock_run.exit_code, 2) << mock_run.output;
  EXPECT_NE(mock_run.output.find("add --catalog"), std::string::npos) << mock_run.output;
}

// MockAnswer on its own: `examples` first, then `example`, else a precise
// PROVIDER_ERROR.
TEST(MockAnswerTest, TakesTheFirstExampleOrSaysWhyNot) {
  EXPECT_EQ(*MockAnswer("p", "s", R"({"examples":[{"a":1},{"a":2}],"example":{"b":1}})"),
            R"({"a":1})");
  EXPECT_EQ(*MockAnswer("p", "s", R"({"type":"string","example":"x"})"), R"("x")");
  auto none = MockAnswer("p", "s", R"({"type":"object","examples":[]})");
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(ChasquiCode(none.status()), v1::PROVIDER_ERROR);
  EXPECT_NE(std::string(MessageOf(none.status())).find("mock of p/s"), std::string::npos);
  auto garbage = MockAnswer("p", "s", "not json");
  ASSERT_FALSE(garbage.ok());
  EXPECT_NE(std::string(MessageOf(garbage.status())).find("not a JSON object"), std::string::npos);
  EXPECT_TRUE(CheckMockAllowed({"s"}, "test").ok());
  EXPECT_TRUE(CheckMockAllowed({}, "prod").ok());
  EXPECT_TRUE(absl::IsInvalidArgument(CheckMockAllowed({"s"}, "prod")));
}

}  // namespace
}  // namespace chasqui::testing
