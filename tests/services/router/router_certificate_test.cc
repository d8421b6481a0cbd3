// The router on certificates (issue 3), end to end with real parts: a real nats-server, the
// crypto service in-process (the real ceremony, RocksDB in a temp dir), a router whose trust is
// a CertificateTrust (pinned roots, the directory, revocation lists), and sin's consumer and
// segip's provider gateways (the SDK) on certificates too. Every key is enrolled as
// `chasqui enrol` does it.
//
// The revocation bound this documents: a revoked consumer is refused UNAUTHENTICATED
// ("... was revoked at ...") by the router from the first request after the new list reaches
// it on chq.evt.crypto.revoked (milliseconds); a router that missed the event catches up when
// it starts, within a second of its bus reconnecting (router_rotation_test), else at its next
// refresh (--trust-refresh-s, 30 s by default, sooner as the held list nears its
// valid_until), and at the latest refuses everything UNAVAILABLE once its list is stale.

#include <atomic>
#include <chrono>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "common/bus/bus.h"
#include "common/core/clock.h"
#include "common/core/status.h"
#include "common/envelope/errors.h"
#include "common/envelope/subjects.h"
#include "common/trust/certificate_trust.h"
#include "fmt/format.h"
#include "gtest/gtest.h"
#include "services/gateway/sdk.h"
#include "services/router/router.h"
#include "tests/common/trust/crypto_fixture.h"
#include "tests/support/child_process.h"
#include "tests/support/metrics.h"
#include "tests/support/nats_server.h"
#include "tests/support/run_command.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait_for.h"

namespace chasqui::testing {
namespace {

constexpr int64_t kListValidityMs = 10 * 60'000;
constexpr auto kBound = std::chrono::seconds(10);

CallOptions Ana() {
  CallOptions o;
  o.end_user = "ana.perez";
  o.timeout = absl::Seconds(5);
  return o;
}

class RouterCertificateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto nats = NatsServer::Start();
    ASSERT_TRUE(nats.ok()) << nats.status();
    nats_ = *std::move(nats);
    crypto_ = std::make_unique<CryptoFixture>(nats_->url(), dir_.File("crypto"), kListValidityMs);
  }

  void TearDown() override {
    consumers_.clear();
    provider_.reset();
    router_.reset();
    trusts_.clear();
    crypto_.reset();
  }

  std::shared_ptr<CertificateTrust> StartGatewayTrust(const Enrolled& who) {
    CertificateTrustOptions o;
    o.entity = who.identity.pub.entity;
    o.env = "test";
    o.own_certificate = who.cert.certificate;
    Bus* bus = crypto_->NewBus("trust-" + o.entity);
    auto t = CertificateTrust::Start(bus, crypto_->anchors(),
                                     std::move(o), std::make_shared<prometheus::Registry>());
    CHASQUI_CHECK(t.ok(), MessageOf(t.status()));
    std::shared_ptr<CertificateTrust> shared = *std::move(t);
    trusts_.push_back(shared);
    return shared;
  }

  // The router (its trust driven by `trust_clock`), segip's provider and sin's consumer.
  void Deploy(const Clock& trust_clock = SystemClock(),
              absl::Duration fetch_backoff = absl::Seconds(5)) {
    router_key_ = std::make_unique<Enrolled>(crypto_->Enrol("router", Role::kRouter));
    sin_ = std::make_unique<Enrolled>(crypto_->Enrol("sin", Role::kEntity));
    segip_ = std::make_unique<Enrolled>(crypto_->Enrol("segip", Role::kEntity));

    CertificateTrustOptions to;
    to.entity = "router";
    to.env = "test";
    to.own_certificate = router_key_->cert.certificate;
    to.own_role = v1::CERTIFICATE_ROLE_ROUTER;
    to.check_unrequested = false;
    to.preload_gateways = true;
    to.metric_prefix = "chasqui_router";
    to.fetch_backoff = fetch_backoff;
    to.inbox_prefix = RouterInboxPrefix("test", "r1") + ".crypto";
    router_registry_ = std::make_shared<prometheus::Registry>();
    auto trust = CertificateTrust::Start(crypto_->NewBus("router-trust"), crypto_->anchors(),
                                         std::move(to), router_registry_, trust_clock);
    ASSERT_TRUE(trust.ok()) << trust.status();
    router_trust_ = *std::move(trust);

    RouterOptions ro;
    ro.env = "test";
    ro.router_id = "r1";
    ro.startup_hold_ms = 0;
    ro.provider_timeout = absl::Seconds(3);
    auto router = Router::Start(ro, crypto_->NewBus("router"), CopyIdentity(router_key_->identity),
                                router_trust_, router_registry_);
    ASSERT_TRUE(router.ok()) << router.status();
    router_ = *std::move(router);
    ASSERT_TRUE(WaitFor([&] { return router_->Ready().ok(); }, kBound)) << router_->Ready();

    auto provider = Provider::Create(crypto_->NewBus("segip"), CopyIdentity(segip_->identity),
                                     StartGatewayTrust(*segip_));
    ASSERT_TRUE(provider.ok()) << provider.status();
    provider_ = *std::move(provider);
    ASSERT_TRUE(provider_
                    ->Serve("persona_consulta",
                            [this](const RequestContext&, std::string_view body)
                                -> absl::StatusOr<std::string> {
                              ++provider_calls_;
                              return "segip:" + std::string(body);
                            })
                    .ok());
    sin_consumer_ = MakeConsumer(*sin_);
  }

  Consumer* MakeConsumer(const Enrolled& who) {
    auto c = Consumer::Create(crypto_->NewBus("consumer-" + who.identity.pub.entity),
                              CopyIdentity(who.identity), StartGatewayTrust(who));
    CHASQUI_CHECK(c.ok(), MessageOf(c.status()));
    consumers_.push_back(*std::move(c));
    return consumers_.back().get();
  }

  CallResult Call(Consumer* consumer, const std::string& body) {
    return consumer->Call("segip", "persona_consulta", body, Ana());
  }

  TempDir dir_;
  std::unique_ptr<NatsServer> nats_;
  std::unique_ptr<CryptoFixture> crypto_;
  std::unique_ptr<Enrolled> router_key_, sin_, segip_;
  std::shared_ptr<prometheus::Registry> router_registry_;
  std::shared_ptr<CertificateTrust> router_trust_;
  std::vector<std::shared_ptr<CertificateTrust>> trusts_;
  std::unique_ptr<Router> router_;
  std::unique_ptr<Provider> provider_;
  std::vector<std::unique_ptr<Consumer>> consumers_;
  Consumer* sin_consumer_ = nullptr;
  std::atomic<int> provider_calls_{0};
};

TEST_F(RouterCertificateTest, AnExchangeOnCertificatesSucceedsAndTheTrustIsShownInMetrics) {
  ASSERT_NO_FATAL_FAILURE(Deploy());
  CallResult r = Call(sin_consumer_, "ci=1");
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.body, "segip:ci=1");
  EXPECT_EQ(provider_calls_.load(), 1);
  // Preloaded: sin's first request needed no certificate lookup.
  EXPECT_EQ(SeriesValue(*router_registry_, "chasqui_router_certificate_fetch_requests_total",
                        {"outcome=\"queued\""}),
            0);
  EXPECT_GE(SeriesValue(*router_registry_, "chasqui_router_revocation_list_version", {}), 1);
  EXPECT_EQ(SeriesValue(*router_registry_, "chasqui_router_revocation_list_valid_until_seconds",
                        {}),
            static_cast<double>(router_trust_->revocation_valid_until_ms()) / 1000.0);
  EXPECT_EQ(SeriesValue(*router_registry_,
                        "chasqui_router_certificate_expiry_timestamp_seconds", {}),
            static_cast<double>(router_key_->cert.not_after_ms) / 1000.0);
}

// UNAUTHENTICATED, not FORBIDDEN: the key no longer authenticates anyone (FORBIDDEN is for an
// authenticated consumer without a grant). The message names the serial and the revocation.
TEST_F(RouterCertificateTest, ARevokedConsumerIsRefusedByTheRouterFromItsNextRequest) {
  ASSERT_NO_FATAL_FAILURE(Deploy());
  ASSERT_TRUE(Call(sin_consumer_, "ci=1").status.ok());
  const uint64_t before = router_trust_->revocation_version();
  ASSERT_TRUE(crypto_->Revoke(sin_->cert.serial).ok());
  ASSERT_TRUE(WaitFor([&] { return router_trust_->revocation_version() > before; }, kBound));

  CallResult r = Call(sin_consumer_, "ci=2");
  ASSERT_FALSE(r.status.ok());
  EXPECT_EQ(ChasquiCode(r.status), v1::UNAUTHENTICATED) << r.status;
  const std::string msg(MessageOf(r.status));
  EXPECT_NE(msg.find("sender_cert " + std::to_string(sin_->cert.serial)), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("revoked"), std::string::npos) << msg;
  EXPECT_EQ(provider_calls_.load(), 1) << "segip's system never saw the revoked consumer";
}

// Fail closed: once the router's copy of the list is past valid_until and no newer one
// verifies, /readyz is 503 and every request is answered UNAVAILABLE, saying why.
TEST_F(RouterCertificateTest, AStaleListMakesTheRouterUnreadyAndRefuseWithUnavailable) {
  // A minute ahead, so certificates issued during Deploy are already valid at its now.
  FakeClock trust_clock(SystemClock().NowUnixMillis() + 60'000);
  ASSERT_NO_FATAL_FAILURE(Deploy(trust_clock));
  ASSERT_TRUE(Call(sin_consumer_, "ci=1").status.ok());

  trust_clock.AdvanceMillis(kListValidityMs);
  const absl::Status ready = router_->Ready();
  EXPECT_TRUE(absl::IsUnavailable(ready)) << ready;
  EXPECT_NE(std::string(MessageOf(ready)).find("stale"), std::string::npos) << ready;
  EXPECT_FALSE(router_trust_->Refresh().ok()) << "every list the service has is stale then";

  CallResult r = Call(sin_consumer_, "ci=2");
  ASSERT_FALSE(r.status.ok());
  EXPECT_EQ(ChasquiCode(r.status), v1::UNAVAILABLE) << r.status;
  EXPECT_NE(std::string(MessageOf(r.status)).find("revocation list"), std::string::npos)
      << r.status;
  EXPECT_NE(std::string(MessageOf(r.status)).find("stale"), std::string::npos) << r.status;
  EXPECT_EQ(provider_calls_.load(), 1);
  EXPECT_GE(SeriesValue(*router_registry_, "chasqui_router_requests_total",
                        {"code=\"UNAVAILABLE\""}),
            1);
}

// aduana enrols after the router loaded the env's certificates: its first request goes to the
// fetch worker (off the delivery thread), the certificate is fetched and verified, and it is
// served; sin's traffic flows meanwhile.
TEST_F(RouterCertificateTest, AnEntityEnrolledAfterTheRouterStartedIsServed) {
  ASSERT_NO_FATAL_FAILURE(Deploy());
  Enrolled aduana = crypto_->Enrol("aduana", Role::kEntity);
  Consumer* aduana_consumer = MakeConsumer(aduana);

  absl::Mutex mu;
  bool aduana_done = false;
  CallResult aduana_result;
  aduana_consumer->CallAsync("segip", "persona_consulta", "ci=a", Ana(), [&](CallResult r) {
    absl::MutexLock lock(&mu);
    aduana_result = std::move(r);
    aduana_done = true;
  });
  for (int i = 0; i < 10; ++i) {
    CallResult r = Call(sin_consumer_, "ci=" + std::to_string(i));
    ASSERT_TRUE(r.status.ok()) << r.status;
  }
  ASSERT_TRUE(WaitFor([&] { absl::MutexLock lock(&mu); return aduana_done; }, kBound));
  absl::MutexLock lock(&mu);
  ASSERT_TRUE(aduana_result.status.ok()) << aduana_result.status;
  EXPECT_EQ(aduana_result.body, "segip:ci=a");
  EXPECT_GE(SeriesValue(*router_registry_, "chasqui_router_certificate_fetch_requests_total",
                        {"outcome=\"queued\""}),
            1);
  EXPECT_EQ(crypto_->DirectoryRequestsFor(aduana.cert.serial) >= 1, true);
}

// Requests signed under a serial nobody issued, as aduana (so sin's pre-authentication limit
// is untouched): each is answered UNAUTHENTICATED by the router, the directory is asked about
// that serial once per backoff (here a minute) however many come, and sin keeps being served.
TEST_F(RouterCertificateTest, AFloodOfUnknownSerialsCostsOneDirectoryRequestPerBackoff) {
  ASSERT_NO_FATAL_FAILURE(Deploy(SystemClock(), absl::Minutes(1)));
  constexpr uint64_t kMadeUp = 9'000'000'001;
  Identity forged = GenerateIdentity("aduana", "test", Role::kEntity);
  forged.pub.serial = kMadeUp;
  // The forger knows segip's and the router's public keys (they are public).
  std::vector<VerifiedCertificate> known = {segip_->cert, router_key_->cert};
  auto forger = Consumer::Create(crypto_->NewBus("forger"), std::move(forged),
                                 BuildTrustStore(known, "test"));
  ASSERT_TRUE(forger.ok()) << forger.status();

  constexpr int kFlood = 60;
  std::atomic<int> unauthenticated{0}, other{0};
  absl::Mutex mu;
  std::string last_message;
  for (int i = 0; i < kFlood; ++i) {
    (*forger)->CallAsync("segip", "persona_consulta", "x", Ana(), [&](CallResult r) {
      if (ChasquiCode(r.status) == v1::UNAUTHENTICATED) {
        ++unauthenticated;
        absl::MutexLock lock(&mu);
        last_message = std::string(MessageOf(r.status));
      } else {
        ++other;
      }
    });
  }
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(Call(sin_consumer_, "ci=during").status.ok());
  ASSERT_TRUE(WaitFor([&] { return unauthenticated + other == kFlood; }, kBound));
  EXPECT_EQ(unauthenticated.load(), kFlood);
  EXPECT_EQ(crypto_->DirectoryRequestsFor(kMadeUp), 1);
  {
    absl::MutexLock lock(&mu);
    EXPECT_NE(last_message.find(std::to_string(kMadeUp)), std::string::npos) << last_message;
    EXPECT_NE(last_message.find("not a known key"), std::string::npos) << last_message;
  }
  EXPECT_EQ(provider_calls_.load(), 5);
}

// The crypto service is down: a serial the router does not hold cannot be looked up, so it
// cannot be called unknown. The router answers UNAVAILABLE saying the directory could not be
// asked (not UNAUTHENTICATED), while known keys keep being served; once the service is back
// (and the backoff passed) the same serial is refused UNAUTHENTICATED as unknown.
TEST_F(RouterCertificateTest, AnUnknownSerialWhileTheCryptoServiceIsDownIsUnavailable) {
  ASSERT_NO_FATAL_FAILURE(Deploy(SystemClock(), absl::Milliseconds(200)));
  constexpr uint64_t kMadeUp = 9'000'000'002;
  Identity forged = GenerateIdentity("aduana", "test", Role::kEntity);
  forged.pub.serial = kMadeUp;
  std::vector<VerifiedCertificate> known = {segip_->cert, router_key_->cert};
  auto stranger = Consumer::Create(crypto_->NewBus("stranger"), std::move(forged),
                                   BuildTrustStore(known, "test"));
  ASSERT_TRUE(stranger.ok()) << stranger.status();
  ASSERT_TRUE(Call(sin_consumer_, "ci=before").status.ok());  // sin's gateway learns segip

  crypto_->StopService();
  CallResult down = (*stranger)->Call("segip", "persona_consulta", "x", Ana());
  ASSERT_FALSE(down.status.ok());
  EXPECT_EQ(ChasquiCode(down.status), v1::UNAVAILABLE) << down.status;
  const std::string msg(MessageOf(down.status));
  EXPECT_NE(msg.find(std::to_string(kMadeUp)), std::string::npos) << msg;
  EXPECT_NE(msg.find("could not be asked"), std::string::npos) << msg;
  ASSERT_TRUE(Call(sin_consumer_, "ci=during").status.ok()) << "known keys are still served";

  crypto_->StartService();
  CallResult up;
  ASSERT_TRUE(WaitFor(
      [&] {
        up = (*stranger)->Call("segip", "persona_consulta", "x", Ana());
        if (ChasquiCode(up.status) != v1::UNAVAILABLE) return true;
        // Paced below the router's limit on refusals before authentication (50 a second per
        // consumer after a burst of 100): beyond it the router drops the stranger's requests
        // unanswered, and the call would end DEADLINE_EXCEEDED instead.
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        return false;
      },
      kBound))
      << up.status;
  EXPECT_EQ(ChasquiCode(up.status), v1::UNAUTHENTICATED) << up.status;
  EXPECT_NE(std::string(MessageOf(up.status)).find("not a known key"), std::string::npos)
      << up.status;
  EXPECT_EQ(provider_calls_.load(), 2);
}

// The gateways likewise, with the crypto service down: segip's provider gateway, asked to
// serve aduana (enrolled after segip's trust started, so segip does not hold its key),
// answers UNAVAILABLE rather than UNAUTHENTICATED; and a consumer calling a provider whose key
// it never fetched gets UNAVAILABLE rather than NOT_FOUND.
TEST_F(RouterCertificateTest, GatewaysAnswerUnavailableForKeysTheyCannotLookUp) {
  ASSERT_NO_FATAL_FAILURE(Deploy());
  Enrolled aduana = crypto_->Enrol("aduana", Role::kEntity);
  Consumer* aduana_consumer = MakeConsumer(aduana);
  std::shared_ptr<CertificateTrust> aduana_trust = trusts_.back();
  // While the service is up: aduana's gateway learns segip's key, the router learns aduana's.
  ASSERT_TRUE(aduana_trust->FetchEntity("segip").ok());
  ASSERT_TRUE(router_trust_->FetchSerial(aduana.cert.serial).ok());
  ASSERT_TRUE(Call(sin_consumer_, "ci=0").status.ok());  // and sin's gateway segip's

  crypto_->StopService();
  CallResult r = aduana_consumer->Call("segip", "persona_consulta", "ci=a", Ana());
  ASSERT_FALSE(r.status.ok());
  EXPECT_EQ(ChasquiCode(r.status), v1::UNAVAILABLE) << r.status;
  EXPECT_NE(std::string(MessageOf(r.status)).find(std::to_string(aduana.cert.serial)),
            std::string::npos)
      << r.status;
  EXPECT_EQ(provider_calls_.load(), 1) << "segip's system never saw aduana's call";

  CallResult known = Call(sin_consumer_, "ci=1");  // keys held on both sides: served
  ASSERT_TRUE(known.status.ok()) << known.status;
  CallResult unknown_provider = sin_consumer_->Call("sin_never_seen", "x", "b", Ana());
  ASSERT_FALSE(unknown_provider.status.ok());
  EXPECT_EQ(ChasquiCode(unknown_provider.status), v1::UNAVAILABLE) << unknown_provider.status;
}

// chasqui-router on --roots/--cert: one config line naming the trust mode, ready once the list
// arrived; it refuses at start (one line, exit 2) both modes at once, neither, a --roots
// without --cert, and a certificate that belongs to another key.
TEST_F(RouterCertificateTest, TheRouterBinaryStartsOnCertificatesAndRefusesBadTrustFlags) {
  Enrolled router = crypto_->Enrol("router", Role::kRouter);
  const std::string key = dir_.File("router.key");
  const std::string cert = dir_.File("router.cert");
  ASSERT_TRUE(WriteIdentity(key, router.identity).ok());
  std::ofstream(cert, std::ios::binary) << router.cert.certificate;
  const std::string base = fmt::format("--env test --nats {} --key {} --audit=false "
                                       "--startup-hold-ms 0 --ops-port 0 --id rbin",
                                       nats_->url(), key);

  TestProcess good(CHASQUI_ROUTER_BIN,
                   {"--env", "test", "--nats", nats_->url(), "--key", key, "--cert", cert,
                    "--roots", crypto_->roots_file(), "--audit=false", "--startup-hold-ms", "0",
                    "--ops-port", "0", "--id", "rbin"},
                   dir_.File("router.log"));
  EXPECT_TRUE(good.WaitForLog("trust=certificates roots=" + crypto_->roots_file()))
      << good.Log();
  EXPECT_TRUE(good.WaitForLog("router rbin ready")) << good.Log();
  EXPECT_EQ(good.Terminate(), 0) << good.Log();

  auto run = [&](const std::string& extra) {
    return RunCommand(fmt::format("timeout 20 {} {} {}", CHASQUI_ROUTER_BIN, base, extra));
  };
  for (const std::string& extra :
       {fmt::format("--cert {} --roots {} --trust {}", cert, crypto_->roots_file(),
                    dir_.File("trust.json")),
        std::string(), fmt::format("--roots {}", crypto_->roots_file())}) {
    auto r = run(extra);
    EXPECT_EQ(r.exit_code, 2) << extra << ": " << r.output;
    EXPECT_NE(r.output.find("exactly one of the two"), std::string::npos) << r.output;
  }
  const std::string other_key = dir_.File("other.key");
  ASSERT_TRUE(WriteIdentity(other_key, GenerateIdentity("router", "test", Role::kRouter)).ok());
  auto other = RunCommand(fmt::format("timeout 20 {} --env test --nats {} --key {} --cert {} "
                                      "--roots {}",
                                      CHASQUI_ROUTER_BIN, nats_->url(), other_key, cert,
                                      crypto_->roots_file()));
  EXPECT_EQ(other.exit_code, 2) << other.output;
  EXPECT_NE(other.output.find("does not belong to key file " + other_key), std::string::npos)
      << other.output;
  // A gateway's certificate is not a router's.
  Enrolled sin = crypto_->Enrol("sin", Role::kEntity);
  const std::string sin_key = dir_.File("sin.key");
  const std::string sin_cert = dir_.File("sin.cert");
  ASSERT_TRUE(WriteIdentity(sin_key, sin.identity).ok());
  std::ofstream(sin_cert, std::ios::binary) << sin.cert.certificate;
  auto gateway = RunCommand(fmt::format("timeout 20 {} --env test --nats {} --key {} --cert {} "
                                        "--roots {}",
                                        CHASQUI_ROUTER_BIN, nats_->url(), sin_key, sin_cert,
                                        crypto_->roots_file()));
  EXPECT_EQ(gateway.exit_code, 2) << gateway.output;
  EXPECT_NE(gateway.output.find("expected a router key"), std::string::npos) << gateway.output;
}

}  // namespace
}  // namespace chasqui::testing
