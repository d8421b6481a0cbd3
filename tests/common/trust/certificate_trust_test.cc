// CertificateTrust itself (common/trust/certificate_trust.h), for gateways and routers, against
// the real crypto service in-process: the own certificate's role, the preload of every gateway
// of the env (a router's), batched fetches of unknown serials with their backoff, the
// transparency check (gateways only), and the metrics under each prefix.

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "common/core/clock.h"
#include "common/core/status.h"
#include "common/trust/certificate_trust.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "tests/common/trust/crypto_fixture.h"
#include "tests/support/metrics.h"
#include "tests/support/nats_server.h"
#include "tests/support/temp_dir.h"

namespace chasqui::testing {
namespace {

class CertificateTrustTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto nats = NatsServer::Start();
    ASSERT_TRUE(nats.ok()) << nats.status();
    nats_ = *std::move(nats);
    crypto_ = std::make_unique<CryptoFixture>(nats_->url(), dir_.File("crypto"), 600'000);
  }

  absl::StatusOr<std::unique_ptr<CertificateTrust>> Start(
      CertificateTrustOptions o, std::shared_ptr<prometheus::Registry> registry = nullptr) {
    o.env = "test";
    Bus* bus = crypto_->NewBus("trust-" + o.entity);
    return CertificateTrust::Start(bus, crypto_->anchors(), std::move(o),
                                   registry != nullptr ? registry : registry_);
  }

  CertificateTrustOptions RouterOptions(const Enrolled& router) {
    CertificateTrustOptions o;
    o.entity = "router";
    o.own_certificate = router.cert.certificate;
    o.own_role = v1::CERTIFICATE_ROLE_ROUTER;
    o.check_unrequested = false;
    o.preload_gateways = true;
    o.metric_prefix = "chasqui_router";
    o.fetch_backoff = absl::Minutes(1);
    return o;
  }

  TempDir dir_;
  std::unique_ptr<NatsServer> nats_;
  std::unique_ptr<CryptoFixture> crypto_;
  std::shared_ptr<prometheus::Registry> registry_ = std::make_shared<prometheus::Registry>();
};

TEST_F(CertificateTrustTest, TheOwnCertificateMustBeOfTheRoleAsked) {
  Enrolled router = crypto_->Enrol("router", Role::kRouter);
  Enrolled sin = crypto_->Enrol("sin", Role::kEntity);
  CertificateTrustOptions as_gateway;
  as_gateway.entity = "router";
  as_gateway.own_certificate = router.cert.certificate;
  auto wrong = Start(as_gateway);
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(MessageOf(wrong.status())).find("needs an entity (gateway) certificate"),
            std::string::npos)
      << wrong.status();

  CertificateTrustOptions as_router = RouterOptions(sin);
  as_router.entity = "sin";
  auto wrong_router = Start(as_router);
  ASSERT_FALSE(wrong_router.ok());
  EXPECT_EQ(wrong_router.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(MessageOf(wrong_router.status())).find("needs a router certificate"),
            std::string::npos)
      << wrong_router.status();

  CertificateTrustOptions person = RouterOptions(router);
  person.own_role = v1::CERTIFICATE_ROLE_OPERATOR;
  auto not_supported = Start(person);
  ASSERT_FALSE(not_supported.ok());
  EXPECT_EQ(not_supported.status().code(), absl::StatusCode::kInvalidArgument);
}

// A router holds every gateway of its env from the start, without a fetch per entity, and
// shows its trust under its own prefix; no transparency counter (that check is a gateway's).
TEST_F(CertificateTrustTest, ARouterPreloadsEveryGatewayOfTheEnv) {
  Enrolled router = crypto_->Enrol("router", Role::kRouter);
  Enrolled sin = crypto_->Enrol("sin", Role::kEntity);
  Enrolled segip = crypto_->Enrol("segip", Role::kEntity);
  Enrolled mae = crypto_->Enrol("segip", Role::kMae, "mae-segip");
  auto trust = Start(RouterOptions(router));
  ASSERT_TRUE(trust.ok()) << trust.status();
  auto store = (*trust)->Current();
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_NE((*store)->BySerial(sin.cert.serial), nullptr);
  EXPECT_NE((*store)->BySerial(segip.cert.serial), nullptr);
  EXPECT_NE((*store)->BySerial(router.cert.serial), nullptr);
  EXPECT_EQ((*store)->BySerial(mae.cert.serial), nullptr) << "people are not envelope signers";
  EXPECT_TRUE((*trust)->fetches());
  EXPECT_GE(SeriesValue(*registry_, "chasqui_router_revocation_list_version", {}), 1);
  EXPECT_EQ(SeriesValue(*registry_, "chasqui_router_certificate_expiry_timestamp_seconds", {}),
            static_cast<double>(router.cert.not_after_ms) / 1000.0);
  EXPECT_EQ(SeriesValue(*registry_, "chasqui_router_unrequested_certificates_total", {}), -1);

  // Enrolled later: not held until a refresh or a fetch.
  Enrolled aduana = crypto_->Enrol("aduana", Role::kEntity);
  EXPECT_EQ((*(*trust)->Current())->BySerial(aduana.cert.serial), nullptr);
  ASSERT_TRUE((*trust)->Refresh().ok());
  EXPECT_NE((*(*trust)->Current())->BySerial(aduana.cert.serial), nullptr);
}

// Unknown serials asked together go in one directory request; the same serials again within
// the backoff cost none, and FetchSerial then says why one is missing without asking.
TEST_F(CertificateTrustTest, FetchSerialsBatchesAndBacksOff) {
  Enrolled router = crypto_->Enrol("router", Role::kRouter);
  auto trust = Start(RouterOptions(router));
  ASSERT_TRUE(trust.ok()) << trust.status();
  Enrolled aduana = crypto_->Enrol("aduana", Role::kEntity);
  constexpr uint64_t kMadeUp = 9'000'000'003;
  const uint64_t before = (*trust)->directory_requests();
  auto store = (*trust)->FetchSerials({aduana.cert.serial, kMadeUp});
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_NE((*store)->BySerial(aduana.cert.serial), nullptr);
  EXPECT_EQ((*trust)->directory_requests(), before + 1);
  ASSERT_TRUE((*trust)->FetchSerials({kMadeUp, kMadeUp}).ok());
  auto why = (*trust)->FetchSerial(kMadeUp);
  EXPECT_EQ(why.status().code(), absl::StatusCode::kNotFound) << why.status();
  EXPECT_EQ((*trust)->directory_requests(), before + 1);
}

// Someone enrols a second gateway key in segip's name: segip's gateway reports it once (one
// ERROR line and the counter), however often it looks again; a person of segip (its MAE) is
// not reported: the gateway cannot know who asked for it.
TEST_F(CertificateTrustTest, AnUnrequestedCertificateInTheEntitysNameIsReportedOnce) {
  crypto_->Enrol("router", Role::kRouter);
  Enrolled segip = crypto_->Enrol("segip", Role::kEntity);
  Enrolled sin = crypto_->Enrol("sin", Role::kEntity);
  CertificateTrustOptions o;
  o.entity = "segip";
  o.own_certificate = segip.cert.certificate;
  auto provider = Start(o);
  ASSERT_TRUE(provider.ok()) << provider.status();
  o.entity = "sin";
  o.own_certificate = sin.cert.certificate;
  auto consumer = Start(o, std::make_shared<prometheus::Registry>());
  ASSERT_TRUE(consumer.ok()) << consumer.status();
  EXPECT_EQ((*provider)->unrequested_certificates(), 0u);

  crypto_->Enrol("segip", Role::kEntity);
  crypto_->Enrol("segip", Role::kMae, "mae-segip");
  ASSERT_TRUE((*provider)->Refresh().ok());
  EXPECT_EQ((*provider)->unrequested_certificates(), 1u);
  EXPECT_EQ(SeriesValue(*registry_, "chasqui_gateway_unrequested_certificates_total",
                        {"entity=\"segip\""}),
            1);
  ASSERT_TRUE((*provider)->Refresh().ok());
  EXPECT_EQ((*provider)->unrequested_certificates(), 1u);
  // sin's gateway watches sin's name only.
  ASSERT_TRUE((*consumer)->Refresh().ok());
  EXPECT_EQ((*consumer)->unrequested_certificates(), 0u);
}

// FetchSerial's contract when the directory cannot be asked: Unavailable (cannot tell), not
// NotFound; within the backoff the failure is remembered (nobody is asked again); once the
// service answers (after the backoff) an unknown serial is NotFound and a known one is held.
TEST_F(CertificateTrustTest, ASerialThatCannotBeLookedUpIsUnavailableNotUnknown) {
  Enrolled sin = crypto_->Enrol("sin", Role::kEntity);
  CertificateTrustOptions o;
  o.entity = "sin";
  o.own_certificate = sin.cert.certificate;
  o.fetch_backoff = absl::Milliseconds(300);
  auto trust = Start(o);
  ASSERT_TRUE(trust.ok()) << trust.status();
  Enrolled aduana = crypto_->Enrol("aduana", Role::kEntity);
  constexpr uint64_t kMadeUp = 9'000'000'003;

  crypto_->StopService();
  for (uint64_t serial : {kMadeUp, aduana.cert.serial}) {
    auto down = (*trust)->FetchSerial(serial);
    EXPECT_TRUE(absl::IsUnavailable(down.status())) << down.status();
    EXPECT_NE(std::string(MessageOf(down.status())).find(std::to_string(serial)),
              std::string::npos)
        << down.status();
  }
  const uint64_t asked = (*trust)->directory_requests();
  auto again = (*trust)->FetchSerial(kMadeUp);  // within the backoff: remembered
  EXPECT_TRUE(absl::IsUnavailable(again.status())) << again.status();
  EXPECT_EQ((*trust)->directory_requests(), asked);
  auto entity = (*trust)->FetchEntity("aduana");
  EXPECT_TRUE(absl::IsUnavailable(entity.status())) << entity.status();

  crypto_->StartService();
  std::this_thread::sleep_for(std::chrono::milliseconds(400));  // past the backoff
  auto unknown = (*trust)->FetchSerial(kMadeUp);
  EXPECT_TRUE(absl::IsNotFound(unknown.status())) << unknown.status();
  auto known = (*trust)->FetchSerial(aduana.cert.serial);
  ASSERT_TRUE(known.ok()) << known.status();
  EXPECT_NE((*known)->BySerial(aduana.cert.serial), nullptr);
}

}  // namespace
}  // namespace chasqui::testing
