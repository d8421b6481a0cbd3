// Gateways on certificates, end to end with real parts: a real nats-server, the crypto service
// in-process (its library, RocksDB in a temp dir, the root made by the real ceremony), a router
// whose TrustStore is built from the issued certificates (BuildTrustStore), and sin's and
// segip's gateways on `--roots/--cert` (CertificateTrust + HttpGateway). Keys are enrolled the
// way `chasqui enrol` does it (EnrolIdentity); the CLI itself is run once.

#include <sys/stat.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <string>

#include "common/bus/bus.h"
#include "common/core/clock.h"
#include "common/core/files.h"
#include "common/core/status.h"
#include "common/trust/anchors.h"
#include "common/trust/certificate.h"
#include "common/trust/crypto_client.h"
#include "common/trust/requests.h"
#include "fmt/format.h"
#include "gtest/gtest.h"
#include "services/crypto/authority.h"
#include "services/crypto/ceremony.h"
#include "services/crypto/crypto_service.h"
#include "common/trust/certificate_trust.h"
#include "services/gateway/http_gateway.h"
#include "services/router/router.h"
#include "tests/common/trust/crypto_fixture.h"
#include "tests/services/gateway/gateway_test_support.h"
#include "tests/support/nats_server.h"
#include "tests/support/run_command.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait_for.h"

namespace chasqui::testing {
namespace {

constexpr int64_t kListValidityMs = 10 * 60'000;
constexpr auto kBound = std::chrono::seconds(10);
const httplib::Headers kAna = {{"X-Chasqui-End-User", "ana.perez"}};
constexpr char kPersona[] = "/v1/segip/persona_consulta";

class CertificateGatewayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto nats = NatsServer::Start();
    ASSERT_TRUE(nats.ok()) << nats.status();
    nats_ = *std::move(nats);
    crypto_ = std::make_unique<CryptoFixture>(nats_->url(), dir_.File("crypto"), kListValidityMs);
    roots_file_ = crypto_->roots_file();
    anchors_ = crypto_->anchors();
  }

  void TearDown() override {
    consumer_gw_.reset();
    provider_gw_.reset();
    consumer_trust_.reset();
    provider_trust_.reset();
    router_.reset();
    crypto_.reset();
  }

  Bus* NewBus(const std::string& name) { return crypto_->NewBus(name); }
  std::string Token(const std::string& entity, const std::string& role,
                    const std::string& subject = "") {
    return crypto_->Token(entity, role, subject);
  }
  Enrolled Enrol(const std::string& entity, Role role, const std::string& subject = "") {
    return crypto_->Enrol(entity, role, subject);
  }

  std::unique_ptr<CertificateTrust> StartTrust(const Enrolled& who, const Clock& clock,
                                               std::shared_ptr<prometheus::Registry> registry) {
    CertificateTrustOptions o;
    o.entity = who.identity.pub.entity;
    o.env = "test";
    o.own_certificate = who.cert.certificate;
    auto t = CertificateTrust::Start(NewBus("trust-" + o.entity), anchors_, std::move(o),
                                     std::move(registry), clock);
    CHASQUI_CHECK(t.ok(), MessageOf(t.status()));
    return *std::move(t);
  }

  // The router, sin's consumer gateway and segip's provider gateway (serving `upstream_url`);
  // `provider_clock` drives segip's trust (its freshness), so a test can make its list stale.
  void Deploy(const std::string& upstream_url, const Clock& provider_clock = SystemClock()) {
    sin_ = std::make_unique<Enrolled>(Enrol("sin", Role::kEntity));
    segip_ = std::make_unique<Enrolled>(Enrol("segip", Role::kEntity));
    router_key_ = std::make_unique<Enrolled>(Enrol("router", Role::kRouter));

    RouterOptions ro;
    ro.env = "test";
    ro.router_id = "r1";
    ro.startup_hold_ms = 0;
    ro.provider_timeout = absl::Seconds(3);
    // The router's side is not on the directory yet: its store is built once, from the
    // certificates issued (BuildTrustStore), so revocations reach only the gateways here.
    auto router = Router::Start(
        ro, NewBus("router"), CopyIdentity(router_key_->identity),
        BuildTrustStore({sin_->cert, segip_->cert, router_key_->cert}, "test"),
        std::make_shared<prometheus::Registry>());
    ASSERT_TRUE(router.ok()) << router.status();
    router_ = *std::move(router);
    ASSERT_TRUE(WaitFor([&] { return router_->Ready().ok(); }, kBound));

    provider_registry_ = std::make_shared<prometheus::Registry>();
    consumer_registry_ = std::make_shared<prometheus::Registry>();
    provider_trust_ = StartTrust(*segip_, provider_clock, provider_registry_);
    consumer_trust_ = StartTrust(*sin_, SystemClock(), consumer_registry_);
    ASSERT_TRUE(provider_trust_->Current().ok()) << provider_trust_->Current().status();
    ASSERT_TRUE(consumer_trust_->Current().ok()) << consumer_trust_->Current().status();

    HttpGatewayOptions po;
    po.port = 0;
    auto spec = ParseServeSpec("persona_consulta=" + upstream_url);
    ASSERT_TRUE(spec.ok()) << spec.status();
    po.serve.push_back(*spec);
    auto p = HttpGateway::Start(po, NewBus("gateway-segip"), CopyIdentity(segip_->identity),
                                std::shared_ptr<TrustSource>(provider_trust_), provider_registry_);
    ASSERT_TRUE(p.ok()) << p.status();
    provider_gw_ = *std::move(p);
    HttpGatewayOptions co;
    co.port = 0;
    auto c = HttpGateway::Start(co, NewBus("gateway-sin"), CopyIdentity(sin_->identity),
                                std::shared_ptr<TrustSource>(consumer_trust_), consumer_registry_);
    ASSERT_TRUE(c.ok()) << c.status();
    consumer_gw_ = *std::move(c);
  }

  HttpReply Post(const std::string& body) {
    return Send(consumer_gw_->port(), "POST", kPersona, body, kAna);
  }

  TempDir dir_;
  std::string roots_file_;
  TrustAnchors anchors_;
  std::unique_ptr<NatsServer> nats_;
  std::unique_ptr<CryptoFixture> crypto_;
  std::unique_ptr<Enrolled> sin_, segip_, router_key_;
  std::unique_ptr<Router> router_;
  std::shared_ptr<prometheus::Registry> provider_registry_, consumer_registry_;
  std::shared_ptr<CertificateTrust> provider_trust_, consumer_trust_;
  std::unique_ptr<HttpGateway> provider_gw_, consumer_gw_;
};

UpstreamSystem::Handler Echo() {
  return [](const httplib::Request& req, httplib::Response& res) {
    res.set_content("{\"segip\":" + req.body + "}", "application/json");
  };
}

std::string Detail(const HttpReply& r) {
  auto doc = nlohmann::json::parse(r.body, nullptr, false);
  return doc.is_object() ? doc.value("detail", "") : r.body;
}

// `chasqui keygen` then `chasqui enrol`: the certificate file is public, verifies against the
// pinned roots, binds to the key (its serial becomes the identity's), and the token is spent.
TEST_F(CertificateGatewayTest, TheCliEnrolsAKeyAndWritesItsCertificate) {
  const std::string out = dir_.File("keys");
  auto keygen = RunCommand(fmt::format("{} keygen --entity aduana --env test --out {}",
                                       CHASQUI_BIN, out));
  ASSERT_EQ(keygen.exit_code, 0) << keygen.output;
  const std::string key = out + "/aduana.test.key";
  const std::string cert = out + "/aduana.test.cert";
  const std::string token = Token("aduana", "entity");
  const std::string enrol = fmt::format(
      "timeout 30 {} enrol --key {} --token {} --role entity --roots {} --nats {} --out {}",
      CHASQUI_BIN, key, token, roots_file_, nats_->url(), cert);
  auto r = RunCommand(enrol);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find(token), std::string::npos) << "the token is never echoed";

  struct stat st;
  ASSERT_EQ(::stat(cert.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
  auto bytes = ReadFileToString(cert, "cert");
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(bytes->find("sign_sk"), std::string::npos);
  auto verified = VerifyCertificate(*bytes, anchors_, "test", SystemClock().NowUnixMillis());
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(verified->entity, "aduana");
  auto certified = LoadCertifiedIdentity(key, cert, anchors_, SystemClock().NowUnixMillis());
  ASSERT_TRUE(certified.ok()) << certified.status();
  EXPECT_EQ(certified->identity.pub.serial, verified->serial);

  // The token is spent: a second enrolment with it is refused by the crypto service, and the
  // existing certificate file is left alone.
  auto again = RunCommand(enrol + " --force");
  EXPECT_EQ(again.exit_code, 2) << again.output;
  EXPECT_NE(again.output.find("used"), std::string::npos) << again.output;
  auto after = ReadFileToString(cert, "cert");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(*after, *bytes);
  // Without --force an existing file is refused before the token would be spent.
  auto exists = RunCommand(fmt::format("timeout 30 {} enrol --key {} --token {} --role entity "
                                       "--roots {} --nats {} --out {}",
                                       CHASQUI_BIN, key, Token("aduana", "entity"), roots_file_,
                                       nats_->url(), cert));
  EXPECT_EQ(exists.exit_code, 2);
  EXPECT_NE(exists.output.find("exists"), std::string::npos) << exists.output;
  // The role on the command line must be the key's.
  auto wrong = RunCommand(fmt::format("timeout 30 {} enrol --key {} --token x --role mae "
                                      "--roots {} --nats {} --out {}",
                                      CHASQUI_BIN, key, roots_file_, nats_->url(),
                                      dir_.File("x.cert")));
  EXPECT_EQ(wrong.exit_code, 2);
  EXPECT_NE(wrong.output.find("holds a key of role entity"), std::string::npos) << wrong.output;
}

TEST_F(CertificateGatewayTest, AnUnknownTokenIsRefusedAndNothingIsWritten) {
  Identity id = GenerateIdentity("aduana", "test", Role::kEntity);
  auto cert = EnrolIdentity(NewBus("enrol"), CryptoInboxPrefix(id.pub), id,
                            "00" + std::string(62, 'f'), "", anchors_, absl::Seconds(5),
                            SystemClock());
  ASSERT_FALSE(cert.ok());
  EXPECT_EQ(cert.status().code(), absl::StatusCode::kUnauthenticated) << cert.status();
}

// A real call: sin's gateway -> router (store from BuildTrustStore) -> segip's gateway -> its
// system, each gateway fetching its peer's certificate from the directory on demand.
TEST_F(CertificateGatewayTest, GatewaysOnCertificatesServeACallThroughTheRouter) {
  UpstreamSystem segip_system(Echo());
  ASSERT_NO_FATAL_FAILURE(Deploy(segip_system.Url("/persona")));
  HttpReply r = Post(R"({"ci":"4567890"})");
  ASSERT_EQ(r.status, 200) << r.error << " " << r.body;
  EXPECT_EQ(r.body, R"({"segip":{"ci":"4567890"}})");
  EXPECT_EQ(segip_system.calls(), 1);
  EXPECT_TRUE(provider_gw_->Ready().ok()) << provider_gw_->Ready();
  EXPECT_EQ(SeriesValue(*provider_registry_, "chasqui_gateway_unrequested_certificates_total", {}),
            0);
}

// The operator revokes sin's certificate: segip's gateway applies the new list from
// chq.evt.crypto.revoked and refuses sin from the next request on, naming the revocation;
// segip's system never sees it. (The router's store is static here: it still forwards.)
TEST_F(CertificateGatewayTest, ARevokedConsumerIsRefusedByTheProviderGateway) {
  UpstreamSystem segip_system(Echo());
  ASSERT_NO_FATAL_FAILURE(Deploy(segip_system.Url("/persona")));
  ASSERT_EQ(Post(R"({"ci":"1"})").status, 200);
  ASSERT_EQ(segip_system.calls(), 1);

  const uint64_t before = provider_trust_->revocation_version();
  const absl::Status revoked = crypto_->Revoke(sin_->cert.serial);
  ASSERT_TRUE(revoked.ok()) << revoked;
  ASSERT_TRUE(WaitFor([&] { return provider_trust_->revocation_version() > before; }, kBound));

  HttpReply r = Post(R"({"ci":"2"})");
  EXPECT_EQ(r.status, 401) << r.body;
  EXPECT_NE(Detail(r).find("revoked"), std::string::npos) << r.body;
  EXPECT_NE(Detail(r).find(std::to_string(sin_->cert.serial)), std::string::npos) << r.body;
  EXPECT_EQ(segip_system.calls(), 1);
}

// Fail closed: once segip's copy of the list is past valid_until (its clock moved on, no newer
// list verifies), /readyz is 503 and calls in both directions are UNAVAILABLE, saying why.
TEST_F(CertificateGatewayTest, AStaleRevocationListMakesTheGatewayUnreadyAndRefuseCalls) {
  UpstreamSystem segip_system(Echo());
  // A minute ahead, so certificates issued during Deploy are already valid at segip's now.
  FakeClock segip_clock(SystemClock().NowUnixMillis() + 60'000);
  ASSERT_NO_FATAL_FAILURE(Deploy(segip_system.Url("/persona"), segip_clock));
  ASSERT_EQ(Post(R"({"ci":"1"})").status, 200);
  ASSERT_TRUE(provider_gw_->Ready().ok());

  segip_clock.AdvanceMillis(kListValidityMs);
  const absl::Status ready = provider_gw_->Ready();
  EXPECT_TRUE(absl::IsUnavailable(ready)) << ready;
  EXPECT_NE(std::string(MessageOf(ready)).find("revocation list"), std::string::npos) << ready;
  EXPECT_NE(std::string(MessageOf(ready)).find("stale"), std::string::npos) << ready;
  // Catching up does not help: every list the service has verifies as stale at segip's now.
  EXPECT_FALSE(provider_trust_->Refresh().ok());
  EXPECT_TRUE(absl::IsUnavailable(provider_gw_->Ready()));

  // Into segip: its provider side refuses before its system is called.
  HttpReply in = Post(R"({"ci":"2"})");
  EXPECT_EQ(in.status, 503) << in.body;
  EXPECT_NE(Detail(in).find("stale"), std::string::npos) << in.body;
  EXPECT_EQ(segip_system.calls(), 1);
  // Out of segip: its consumer side refuses before sending.
  HttpReply out = Send(provider_gw_->port(), "POST", "/v1/sin/anything", "{}", kAna);
  EXPECT_EQ(out.status, 503) << out.body;
  EXPECT_NE(Detail(out).find("stale"), std::string::npos) << out.body;
}

// A certificate that belongs to another key is refused with a message naming both files and
// the field; so is one whose root is not pinned.
TEST_F(CertificateGatewayTest, AMismatchedOrForeignCertificateIsRefusedPrecisely) {
  Enrolled sin = Enrol("sin", Role::kEntity);
  const std::string key = dir_.File("other.key");
  ASSERT_TRUE(WriteIdentity(key, GenerateIdentity("sin", "test", Role::kEntity)).ok());
  const std::string cert = dir_.File("sin.cert");
  {
    std::ofstream f(cert, std::ios::binary);
    f << sin.cert.certificate;
  }
  auto mismatched = LoadCertifiedIdentity(key, cert, anchors_, SystemClock().NowUnixMillis());
  ASSERT_FALSE(mismatched.ok());
  EXPECT_EQ(mismatched.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string msg(MessageOf(mismatched.status()));
  EXPECT_NE(msg.find("does not belong to key file " + key), std::string::npos) << msg;
  EXPECT_NE(msg.find(cert), std::string::npos) << msg;
  EXPECT_NE(msg.find("sign_pk"), std::string::npos) << msg;

  const std::string own_key = dir_.File("sin.key");
  ASSERT_TRUE(WriteIdentity(own_key, sin.identity).ok());
  auto good = LoadCertifiedIdentity(own_key, cert, anchors_, SystemClock().NowUnixMillis());
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_EQ(good->identity.pub.serial, sin.cert.serial);
  auto foreign = LoadCertifiedIdentity(own_key, cert, TrustAnchors(),
                                       SystemClock().NowUnixMillis());
  ASSERT_FALSE(foreign.ok());
  EXPECT_EQ(foreign.status().code(), absl::StatusCode::kNotFound) << foreign.status();
  EXPECT_NE(std::string(MessageOf(foreign.status())).find(cert), std::string::npos);
}

// chasqui-gateway on --roots/--cert stops at start, with one line and exit 2, on a certificate
// of another key, and on --trust given together with --roots.
TEST_F(CertificateGatewayTest, TheGatewayBinaryRefusesACertificateOfAnotherKey) {
  Enrolled sin = Enrol("sin", Role::kEntity);
  const std::string other_key = dir_.File("other.key");
  ASSERT_TRUE(WriteIdentity(other_key, GenerateIdentity("sin", "test", Role::kEntity)).ok());
  const std::string cert = dir_.File("sin.cert");
  std::ofstream(cert, std::ios::binary) << sin.cert.certificate;
  auto r = RunCommand(fmt::format("timeout 20 {} --env test --nats {} --key {} --cert {} --roots {} "
                                  "--listen 127.0.0.1:0 --ops-port 0",
                                  CHASQUI_GATEWAY_BIN, nats_->url(), other_key, cert, roots_file_));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("does not belong to key file " + other_key), std::string::npos)
      << r.output;
  auto both = RunCommand(fmt::format("timeout 20 {} --env test --nats {} --key {} --cert {} "
                                     "--roots {} --trust {}",
                                     CHASQUI_GATEWAY_BIN, nats_->url(), other_key, cert,
                                     roots_file_, dir_.File("trust.json")));
  EXPECT_EQ(both.exit_code, 2) << both.output;
  EXPECT_NE(both.output.find("exactly one of the two"), std::string::npos) << both.output;
}

}  // namespace
}  // namespace chasqui::testing
