// Rotations and missed revocations at the router (issue 3), under load, with real parts: a real
// nats-server, the crypto service in-process (the real ceremony, RocksDB in a temp dir), routers
// whose trust is a CertificateTrust, and sin's consumer and segip's provider gateways (the SDK)
// on certificates. A load of a few hundred calls runs through the router while keys change
// (the consumer's, the provider's, the router's, the root); every answer must be OK.
//
// How a consumer comes to seal for a provider's new key, here: its gateway asks the directory
// for the provider's certificates again (FetchEntity, as on first sight), and seals for the
// newest key it holds (TrustStore::Find: the latest not_before, whatever the random serial).

#include <algorithm>
#include <atomic>
#include <chrono>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

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
#include "tests/support/metrics.h"
#include "tests/support/nats_server.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait_for.h"

namespace chasqui::testing {
namespace {

constexpr int64_t kListValidityMs = 10 * 60'000;
constexpr auto kBound = std::chrono::seconds(15);
// Calls each phase of a load waits for: a few hundred in all.
constexpr int kCallsPerPhase = 60;

CallOptions Ana() {
  CallOptions o;
  o.end_user = "ana.perez";
  o.timeout = absl::Seconds(5);
  return o;
}

// Who the load calls as: a consumer and the serial it signs with.
struct Caller {
  Consumer* consumer;
  uint64_t serial;
};

// Two workers calling segip's persona_consulta through `*caller` (read before each call, so a
// switch takes effect on each worker's next call) until Stop(). Every outcome is recorded.
class Load {
 public:
  explicit Load(const std::atomic<const Caller*>* caller) : caller_(caller) {
    for (int w = 0; w < kWorkers; ++w) workers_.emplace_back([this, w] { Run(w); });
  }
  ~Load() { Stop(); }

  void Stop() {
    stop_ = true;
    for (std::thread& t : workers_) {
      if (t.joinable()) t.join();
    }
  }

  // Answers OK from `serial` so far.
  int OkFrom(uint64_t serial) const {
    absl::MutexLock lock(&mu_);
    auto it = ok_.find(serial);
    return it == ok_.end() ? 0 : it->second;
  }
  int ok() const {
    absl::MutexLock lock(&mu_);
    int n = 0;
    for (const auto& [serial, count] : ok_) n += count;
    return n;
  }
  std::vector<std::string> failures() const {
    absl::MutexLock lock(&mu_);
    return failures_;
  }
  int failed() const {
    absl::MutexLock lock(&mu_);
    return failed_;
  }
  // The pause each worker takes after a call (2 ms at first): longer while a test only waits
  // for time to pass, so the calls stay a few hundred.
  void SetPause(std::chrono::milliseconds pause) { pause_ms_ = pause.count(); }
  // Waits until every worker has finished a call it started after this was called: then no
  // call started before is still in flight (on a router about to go, say).
  bool WaitForEveryWorkerToFinishANewCall() {
    std::vector<int64_t> marks;
    {
      absl::MutexLock lock(&mu_);
      marks = started_;
    }
    return WaitFor(
        [&] {
          absl::MutexLock lock(&mu_);
          for (int w = 0; w < kWorkers; ++w) {
            if (finished_started_[w] <= marks[w]) return false;
          }
          return true;
        },
        kBound);
  }

 private:
  static constexpr int kWorkers = 2;

  void Run(int w) {
    int64_t n = 0;
    while (!stop_) {
      const Caller* c = caller_->load();
      const int64_t mine = ++n;
      {
        absl::MutexLock lock(&mu_);
        started_[w] = mine;
      }
      CallResult r = c->consumer->Call("segip", "persona_consulta",
                                       fmt::format("ci={}-{}", w, mine), Ana());
      absl::MutexLock lock(&mu_);
      finished_started_[w] = mine;
      if (r.status.ok()) {
        ++ok_[c->serial];
      } else {
        ++failed_;
        if (failures_.size() < 5) {
          failures_.push_back(fmt::format("as {}: {}", c->serial, r.status.ToString()));
        }
      }
      // Leave the two shared cores some room: the load is about continuity, not speed.
      std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms_.load()));
    }
  }

  const std::atomic<const Caller*>* caller_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> pause_ms_{2};
  mutable absl::Mutex mu_;
  std::map<uint64_t, int> ok_ ABSL_GUARDED_BY(mu_);
  int failed_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::string> failures_ ABSL_GUARDED_BY(mu_);
  std::vector<int64_t> started_ ABSL_GUARDED_BY(mu_) = std::vector<int64_t>(kWorkers, 0);
  std::vector<int64_t> finished_started_ ABSL_GUARDED_BY(mu_) =
      std::vector<int64_t>(kWorkers, 0);
  std::vector<std::thread> workers_;
};

class RouterRotationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto nats = NatsServer::Start();
    ASSERT_TRUE(nats.ok()) << nats.status();
    nats_ = *std::move(nats);
    crypto_ = std::make_unique<CryptoFixture>(nats_->url(), dir_.File("crypto"), kListValidityMs);
  }

  void TearDown() override {
    load_.reset();
    consumers_.clear();
    provider2_.reset();
    provider_.reset();
    routers_.clear();
    router_trusts_.clear();
    trusts_.clear();
    crypto_.reset();
  }

  std::shared_ptr<CertificateTrust> StartGatewayTrust(const Enrolled& who) {
    CertificateTrustOptions o;
    o.entity = who.identity.pub.entity;
    o.env = "test";
    o.own_certificate = who.cert.certificate;
    auto t = CertificateTrust::Start(crypto_->NewBus("trust-" + o.entity), crypto_->anchors(),
                                     std::move(o), std::make_shared<prometheus::Registry>());
    CHASQUI_CHECK(t.ok(), MessageOf(t.status()));
    std::shared_ptr<CertificateTrust> shared = *std::move(t);
    trusts_.push_back(shared);
    return shared;
  }

  // A router `id` on `key`, its trust pinned on the fixture's roots of the moment, ready.
  Router* StartRouter(const Enrolled& key, const std::string& id) {
    CertificateTrustOptions to;
    to.entity = "router";
    to.env = "test";
    to.own_certificate = key.cert.certificate;
    to.own_role = v1::CERTIFICATE_ROLE_ROUTER;
    to.check_unrequested = false;
    to.preload_gateways = true;
    to.metric_prefix = "chasqui_router";
    to.inbox_prefix = RouterInboxPrefix("test", id) + ".crypto";
    auto registry = std::make_shared<prometheus::Registry>();
    auto trust = CertificateTrust::Start(crypto_->NewBus("router-trust-" + id),
                                         crypto_->anchors(), std::move(to), registry);
    CHASQUI_CHECK(trust.ok(), MessageOf(trust.status()));
    std::shared_ptr<CertificateTrust> shared = *std::move(trust);
    router_trusts_.push_back(shared);
    registries_.push_back(registry);

    RouterOptions ro;
    ro.env = "test";
    ro.router_id = id;
    ro.startup_hold_ms = 0;
    ro.provider_timeout = absl::Seconds(3);
    auto router = Router::Start(ro, crypto_->NewBus("router-" + id), CopyIdentity(key.identity),
                                shared, registry);
    CHASQUI_CHECK(router.ok(), MessageOf(router.status()));
    routers_.push_back(*std::move(router));
    Router* r = routers_.back().get();
    CHASQUI_CHECK(WaitFor([&] { return r->Ready().ok(); }, kBound), "router never ready");
    return r;
  }

  // Router r1, segip's provider, sin's consumer (the load's first caller).
  void Deploy() {
    router_key_ = std::make_unique<Enrolled>(crypto_->Enrol("router", Role::kRouter));
    sin_ = std::make_unique<Enrolled>(crypto_->Enrol("sin", Role::kEntity));
    segip_ = std::make_unique<Enrolled>(crypto_->Enrol("segip", Role::kEntity));
    StartRouter(*router_key_, "r1");
    provider_ = StartProvider(*segip_, "segip");
    sin_caller_ = Caller{MakeConsumer(*sin_), sin_->cert.serial};
  }

  // A gateway of segip on `key` serving persona_consulta (each call counted under the key it
  // was sealed for), on its own connection and trust.
  std::unique_ptr<Provider> StartProvider(const Enrolled& key, const std::string& name) {
    std::shared_ptr<CertificateTrust> trust = StartGatewayTrust(key);
    // Serving before the first revocation list would answer UNAVAILABLE.
    CHASQUI_CHECK(WaitFor([&] { return trust->Current().ok(); }, kBound), "trust never ready");
    auto provider = Provider::Create(crypto_->NewBus(name), CopyIdentity(key.identity), trust);
    CHASQUI_CHECK(provider.ok(), MessageOf(provider.status()));
    absl::Status served = (*provider)->Serve(
        "persona_consulta",
        [this](const RequestContext& ctx, std::string_view body) -> absl::StatusOr<std::string> {
          ++provider_calls_;
          absl::MutexLock lock(&served_mu_);
          ++served_by_[ctx.provider_serial];
          return "segip:" + std::string(body);
        });
    CHASQUI_CHECK(served.ok(), MessageOf(served));
    return *std::move(provider);
  }

  // Calls segip's gateways answered that were sealed for its key `serial`.
  int ServedBy(uint64_t serial) {
    absl::MutexLock lock(&served_mu_);
    auto it = served_by_.find(serial);
    return it == served_by_.end() ? 0 : it->second;
  }

  bool WaitForServedBy(uint64_t serial, int at_least) {
    return WaitFor([&] { return ServedBy(serial) >= at_least || load_->failed() > 0; },
                   kBound) &&
           ServedBy(serial) >= at_least;
  }

  // The consumer gateway `trust` asks the directory for segip's certificates again (at most
  // once per fetch backoff) until it seals for `serial`.
  bool LearnProviderKey(CertificateTrust& trust, uint64_t serial) {
    return WaitFor(
        [&] {
          auto store = trust.FetchEntity("segip");
          if (!store.ok()) return false;
          const PublicIdentity* key = (*store)->Find("segip", Role::kEntity);
          if (key != nullptr && key->serial == serial) return true;
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
          return false;
        },
        std::chrono::seconds(10) + kBound);
  }

  Consumer* MakeConsumer(const Enrolled& who) {
    auto c = Consumer::Create(crypto_->NewBus("consumer-" + who.identity.pub.entity),
                              CopyIdentity(who.identity), StartGatewayTrust(who));
    CHASQUI_CHECK(c.ok(), MessageOf(c.status()));
    consumers_.push_back(*std::move(c));
    return consumers_.back().get();
  }

  // A consumer signing as `who` whose own view of trust is fixed (`known`; by default segip's
  // and the router's first certificates): whatever its gateway would think, its request reaches
  // the router.
  Consumer* MakeFixedConsumer(const Enrolled& who, std::vector<VerifiedCertificate> known = {}) {
    if (known.empty()) known = {segip_->cert, router_key_->cert};
    auto c = Consumer::Create(crypto_->NewBus("fixed-" + who.identity.pub.entity),
                              CopyIdentity(who.identity), BuildTrustStore(known, "test"));
    CHASQUI_CHECK(c.ok(), MessageOf(c.status()));
    consumers_.push_back(*std::move(c));
    return consumers_.back().get();
  }

  bool WaitForOk(uint64_t serial, int at_least) {
    return WaitFor([&] { return load_->OkFrom(serial) >= at_least || load_->failed() > 0; },
                   kBound) &&
           load_->OkFrom(serial) >= at_least;
  }

  TempDir dir_;
  std::unique_ptr<NatsServer> nats_;
  std::unique_ptr<CryptoFixture> crypto_;
  std::unique_ptr<Enrolled> router_key_, sin_, segip_;
  std::vector<std::shared_ptr<prometheus::Registry>> registries_;
  std::vector<std::shared_ptr<CertificateTrust>> router_trusts_;
  std::vector<std::shared_ptr<CertificateTrust>> trusts_;
  std::vector<std::unique_ptr<Router>> routers_;
  std::unique_ptr<Provider> provider_, provider2_;
  std::vector<std::unique_ptr<Consumer>> consumers_;
  absl::Mutex served_mu_;
  std::map<uint64_t, int> served_by_ ABSL_GUARDED_BY(served_mu_);
  Caller sin_caller_{nullptr, 0};
  std::atomic<int> provider_calls_{0};
  std::atomic<const Caller*> caller_{nullptr};
  std::unique_ptr<Load> load_;
};

// sin enrols a second key while the first is valid (the overlap), switches its calls to it,
// and the first is retired (revoked); then the router's own key rotates: a second router on a
// new key joins the queue group and the first drains and goes. Every call answers OK, both of
// sin's keys and both routers carried calls, and the retired key is refused from the first
// request after the router got the list (the time it took is printed).
TEST_F(RouterRotationTest, EntityAndRouterKeysRotateUnderLoadWithNoFailedCall) {
  ASSERT_NO_FATAL_FAILURE(Deploy());
  caller_ = &sin_caller_;
  load_ = std::make_unique<Load>(&caller_);
  ASSERT_TRUE(WaitForOk(sin_->cert.serial, kCallsPerPhase)) << load_->failed();

  // The new key, enrolled during the overlap; the router has never seen it (it preloaded the
  // env's certificates at start): its first request is fetched off the delivery thread.
  Enrolled sin2 = crypto_->Enrol("sin", Role::kEntity);
  ASSERT_NE(sin2.cert.serial, sin_->cert.serial);
  const Caller sin2_caller{MakeConsumer(sin2), sin2.cert.serial};
  caller_ = &sin2_caller;
  ASSERT_TRUE(load_->WaitForEveryWorkerToFinishANewCall());
  ASSERT_TRUE(WaitForOk(sin2.cert.serial, kCallsPerPhase)) << load_->failed();

  // The old key retired. The load no longer signs with it.
  CertificateTrust& r1_trust = *router_trusts_[0];
  const uint64_t before = r1_trust.revocation_version();
  const auto revoked_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(crypto_->Revoke(sin_->cert.serial).ok());
  ASSERT_TRUE(WaitFor([&] { return r1_trust.revocation_version() > before; }, kBound));
  const auto applied_at = std::chrono::steady_clock::now();
  CallResult old = MakeFixedConsumer(*sin_)->Call("segip", "persona_consulta", "old", Ana());
  const auto refused_at = std::chrono::steady_clock::now();
  ASSERT_FALSE(old.status.ok());
  EXPECT_EQ(ChasquiCode(old.status), v1::UNAUTHENTICATED) << old.status;
  EXPECT_NE(std::string(MessageOf(old.status)).find("revoked"), std::string::npos) << old.status;
  const auto ms = [](auto d) {
    return std::chrono::duration_cast<std::chrono::microseconds>(d).count() / 1000.0;
  };
  std::cout << fmt::format("revocation bound (push): list applied by the router {:.1f} ms after "
                           "the revoke call, revoked key refused {:.1f} ms after it\n",
                           ms(applied_at - revoked_at), ms(refused_at - revoked_at));
  RecordProperty("revocation_push_applied_ms", static_cast<int>(ms(applied_at - revoked_at)));

  // The router's key: r2 on a new certificate joins the queue group, r1 drains and goes.
  Enrolled router2 = crypto_->Enrol("router", Role::kRouter);
  StartRouter(router2, "r2");
  const int ok_before_handover = load_->ok();
  ASSERT_TRUE(routers_[0]->Drain(absl::Seconds(5)).ok());
  // Every call r1 had taken has been answered before r1 goes.
  ASSERT_TRUE(load_->WaitForEveryWorkerToFinishANewCall());
  routers_[0].reset();
  ASSERT_TRUE(WaitFor([&] { return load_->ok() >= ok_before_handover + kCallsPerPhase ||
                                   load_->failed() > 0; },
                      kBound));
  load_->Stop();

  EXPECT_EQ(load_->failed(), 0) << ::testing::PrintToString(load_->failures());
  EXPECT_GE(load_->OkFrom(sin_->cert.serial), kCallsPerPhase);
  EXPECT_GE(load_->OkFrom(sin2.cert.serial), 2 * kCallsPerPhase);
  EXPECT_GE(SeriesValue(*registries_[0], "chasqui_router_requests_total", {"code=\"OK\""}), 1);
  EXPECT_GE(SeriesValue(*registries_[1], "chasqui_router_requests_total", {"code=\"OK\""}), 1);
  EXPECT_GE(crypto_->DirectoryRequestsFor(sin2.cert.serial), 1)
      << "the router fetched sin's new key on first sight";
  EXPECT_EQ(provider_calls_.load(), load_->ok());
  std::cout << fmt::format("entity and router key rotation: {} calls OK ({} as key {}, {} as "
                           "key {}), {} failed\n",
                           load_->ok(), load_->OkFrom(sin_->cert.serial), sin_->cert.serial,
                           load_->OkFrom(sin2.cert.serial), sin2.cert.serial, load_->failed());
}

// segip's key rotates under load. A new key is enrolled during the overlap and added to its
// running gateway, which then holds both; sin's gateway learns the new certificate and seals
// for it from its next call on; a second gateway of segip on the new key alone joins the queue
// group; the first retires the old key, which is revoked. Every call answers OK, and calls were
// served under both keys.
TEST_F(RouterRotationTest, TheProvidersKeyRotatesUnderLoadWithNoFailedCall) {
  ASSERT_NO_FATAL_FAILURE(Deploy());
  const uint64_t old_key = segip_->cert.serial;
  caller_ = &sin_caller_;
  load_ = std::make_unique<Load>(&caller_);
  ASSERT_TRUE(WaitForServedBy(old_key, kCallsPerPhase)) << load_->failed();

  Enrolled segip2 = crypto_->Enrol("segip", Role::kEntity);
  const uint64_t new_key = segip2.cert.serial;
  ASSERT_TRUE(provider_->AddIdentity(CopyIdentity(segip2.identity)).ok());
  EXPECT_EQ(provider_->serials(), (std::vector<uint64_t>{old_key, new_key}));
  CertificateTrust& sin_trust = *trusts_[1];
  ASSERT_EQ(sin_trust.own_certificate().serial, sin_->cert.serial);
  load_->SetPause(std::chrono::milliseconds(50));  // the fetch backoff may take seconds
  ASSERT_TRUE(LearnProviderKey(sin_trust, new_key));
  load_->SetPause(std::chrono::milliseconds(2));
  // Calls started from now on are sealed for the new key.
  ASSERT_TRUE(load_->WaitForEveryWorkerToFinishANewCall());
  const int served_by_old = ServedBy(old_key);
  ASSERT_TRUE(WaitForServedBy(new_key, kCallsPerPhase)) << load_->failed();
  EXPECT_EQ(ServedBy(old_key), served_by_old);

  // A gateway on the new key alone shares the load; the old key leaves the first one, and is
  // revoked.
  provider2_ = StartProvider(segip2, "segip-2");
  ASSERT_TRUE(provider_->RetireIdentity(old_key).ok());
  CertificateTrust& r1_trust = *router_trusts_[0];
  const uint64_t before = r1_trust.revocation_version();
  ASSERT_TRUE(crypto_->Revoke(old_key).ok());
  ASSERT_TRUE(WaitFor([&] { return r1_trust.revocation_version() > before; }, kBound));
  const int ok_before = load_->ok();
  ASSERT_TRUE(WaitFor([&] { return load_->ok() >= ok_before + kCallsPerPhase ||
                                   load_->failed() > 0; },
                      kBound));
  load_->Stop();

  EXPECT_EQ(load_->failed(), 0) << ::testing::PrintToString(load_->failures());
  EXPECT_GE(ServedBy(old_key), kCallsPerPhase);
  EXPECT_GE(ServedBy(new_key), 2 * kCallsPerPhase);
  EXPECT_GE(provider2_->handled(), 1u) << "the second gateway joined the queue group";
  EXPECT_EQ(provider_calls_.load(), load_->ok());
  EXPECT_EQ(ServedBy(old_key) + ServedBy(new_key), load_->ok());
  std::cout << fmt::format("provider key rotation: {} calls OK ({} sealed for key {}, {} for "
                           "key {}; the second gateway served {}), {} failed\n",
                           load_->ok(), ServedBy(old_key), old_key, ServedBy(new_key), new_key,
                           provider2_->handled(), load_->failed());

  // A request still sealed for the old key is refused, naming it.
  CallResult old = MakeFixedConsumer(*sin_)->Call("segip", "persona_consulta", "old", Ana());
  ASSERT_FALSE(old.status.ok());
  EXPECT_NE(std::string(MessageOf(old.status)).find(std::to_string(old_key)), std::string::npos)
      << old.status;
}

// The root rotates (`chasqui-crypto rotate-root`, the service stopped meanwhile) while calls
// flow, and the load runs on past the end of the overlap. The routers and gateways, pinned on
// the old root only, learn the new one from its endorsement. During the overlap every key is
// re-issued under the new root: segip's new key is added to its running gateway, sin's new key
// takes the load (its gateway seals for segip's new key from its first call), segip's gateway
// retires the old key, and a router on a new certificate takes over from the old one. No call
// fails, before or after the overlap ends; past it, a certificate under the old root is refused.
TEST_F(RouterRotationTest, TheRootRotatesUnderLoadWithNoFailedCallThenTheOldRootIsRefused) {
  // Long enough for the steps below on a loaded machine; waited out before the last phase.
  constexpr int64_t kOverlapMs = 10'000;
  ASSERT_NO_FATAL_FAILURE(Deploy());
  const TrustAnchors old_roots = crypto_->anchors();
  ASSERT_EQ(old_roots.anchors().size(), 1u);
  const std::string old_root = old_roots.anchors()[0].key_id;
  caller_ = &sin_caller_;
  load_ = std::make_unique<Load>(&caller_);
  ASSERT_TRUE(WaitForOk(sin_->cert.serial, kCallsPerPhase)) << load_->failed();

  crypto_->RotateRoot(kOverlapMs);
  const TrustAnchors both = crypto_->anchors();
  ASSERT_EQ(both.anchors().size(), 2u);
  const TrustAnchor* shortened = both.Find(old_root);
  ASSERT_NE(shortened, nullptr);
  // Every trust (router and gateways) learns the new root and the old one's end from the
  // directory: the service's first list after the rotation is signed by the new root.
  for (const auto& t : router_trusts_) {
    ASSERT_TRUE(WaitFor([&] { return t->directory().anchors().anchors().size() == 2; }, kBound));
    const TrustAnchors learnt = t->directory().anchors();
    ASSERT_NE(learnt.Find(old_root), nullptr);
    EXPECT_EQ(learnt.Find(old_root)->not_after_ms, shortened->not_after_ms);
  }
  for (const auto& t : trusts_) {
    ASSERT_TRUE(WaitFor([&] { return t->directory().anchors().anchors().size() == 2; }, kBound));
  }

  // segip's new key, held by its running gateway beside the old one.
  Enrolled segip2 = crypto_->Enrol("segip", Role::kEntity);
  ASSERT_NE(segip2.cert.issuer_key_id, old_root) << "issued under the new root";
  ASSERT_TRUE(provider_->AddIdentity(CopyIdentity(segip2.identity)).ok());
  // sin's new key: its gateway's first call fetches segip's certificates, both keys.
  Enrolled sin2 = crypto_->Enrol("sin", Role::kEntity);
  ASSERT_NE(sin2.cert.issuer_key_id, old_root) << "re-issued under the new root";
  const Caller sin2_caller{MakeConsumer(sin2), sin2.cert.serial};
  caller_ = &sin2_caller;
  ASSERT_TRUE(load_->WaitForEveryWorkerToFinishANewCall());
  ASSERT_TRUE(WaitForOk(sin2.cert.serial, kCallsPerPhase)) << load_->failed();
  EXPECT_GE(ServedBy(segip2.cert.serial), kCallsPerPhase) << "sin's new gateway seals for it";
  // Nothing is sealed for segip's old key any more: its gateway lets it go.
  ASSERT_TRUE(provider_->RetireIdentity(segip_->cert.serial).ok());

  // The router's certificate: r2 on one under the new root joins, r1 drains and goes.
  Enrolled router2 = crypto_->Enrol("router", Role::kRouter);
  ASSERT_NE(router2.cert.issuer_key_id, old_root);
  StartRouter(router2, "r2");
  ASSERT_TRUE(routers_[0]->Drain(absl::Seconds(5)).ok());
  ASSERT_TRUE(load_->WaitForEveryWorkerToFinishANewCall());
  routers_[0].reset();
  ASSERT_LT(SystemClock().NowUnixMillis(), shortened->not_after_ms)
      << "the overlap ended before every key was re-issued: the machine is too slow for this "
         "test";
  const int ok_in_overlap = load_->ok();

  // Past the end of the overlap the load runs on, on keys under the new root only (slower
  // while the test waits for the end).
  load_->SetPause(std::chrono::milliseconds(50));
  ASSERT_TRUE(WaitFor([&] { return SystemClock().NowUnixMillis() > shortened->not_after_ms ||
                                   load_->failed() > 0; },
                      std::chrono::milliseconds(kOverlapMs) + kBound));
  load_->SetPause(std::chrono::milliseconds(2));
  // The old root's certificates leave the snapshots at the next rebuild (a refresh, here
  // asked for).
  for (const auto& t : router_trusts_) (void)t->Refresh();
  for (const auto& t : trusts_) (void)t->Refresh();
  const int ok_at_end = load_->ok();
  ASSERT_TRUE(WaitFor([&] { return load_->ok() >= ok_at_end + kCallsPerPhase ||
                                   load_->failed() > 0; },
                      kBound));
  load_->Stop();
  EXPECT_EQ(load_->failed(), 0) << ::testing::PrintToString(load_->failures());
  EXPECT_GE(load_->OkFrom(sin_->cert.serial), kCallsPerPhase);
  EXPECT_GE(load_->OkFrom(sin2.cert.serial), 2 * kCallsPerPhase);
  EXPECT_GE(ServedBy(segip_->cert.serial), kCallsPerPhase);
  EXPECT_EQ(provider_calls_.load(), load_->ok());
  std::cout << fmt::format("root rotation: {} calls OK ({} as sin's key under the old root, {} "
                           "under the new one; {} sealed for segip's old key, {} for its new "
                           "one; {} in the overlap, {} after it), {} failed\n",
                           load_->ok(), load_->OkFrom(sin_->cert.serial),
                           load_->OkFrom(sin2.cert.serial), ServedBy(segip_->cert.serial),
                           ServedBy(segip2.cert.serial), ok_in_overlap,
                           load_->ok() - ok_at_end, load_->failed());

  // The old root withdrawn: its certificates are refused.
  CertificateTrust& r2_trust = *router_trusts_[1];
  auto looked_up = r2_trust.FetchSerial(sin_->cert.serial);
  EXPECT_TRUE(absl::IsFailedPrecondition(looked_up.status())) << looked_up.status();
  CallResult old = MakeFixedConsumer(*sin_, {segip2.cert, router2.cert})
                       ->Call("segip", "persona_consulta", "old", Ana());
  ASSERT_FALSE(old.status.ok());
  EXPECT_EQ(ChasquiCode(old.status), v1::UNAUTHENTICATED) << old.status;
  EXPECT_NE(std::string(MessageOf(old.status)).find(std::to_string(sin_->cert.serial)),
            std::string::npos)
      << old.status;
}

// The router is stopped, sin's key is revoked while it is down (the event goes unheard), and
// the router starts again: the very first request with the revoked key is refused, naming the
// revocation.
TEST_F(RouterRotationTest, ARouterRestartedAfterMissingARevocationRefusesTheKeyAtOnce) {
  ASSERT_NO_FATAL_FAILURE(Deploy());
  ASSERT_TRUE(sin_caller_.consumer->Call("segip", "persona_consulta", "1", Ana()).status.ok());
  routers_.clear();
  router_trusts_.clear();

  ASSERT_TRUE(crypto_->Revoke(sin_->cert.serial).ok());
  StartRouter(*router_key_, "r1");
  CallResult r = sin_caller_.consumer->Call("segip", "persona_consulta", "2", Ana());
  ASSERT_FALSE(r.status.ok());
  EXPECT_EQ(ChasquiCode(r.status), v1::UNAUTHENTICATED) << r.status;
  const std::string msg(MessageOf(r.status));
  EXPECT_NE(msg.find(std::to_string(sin_->cert.serial)), std::string::npos) << msg;
  EXPECT_NE(msg.find("revoked"), std::string::npos) << msg;
  EXPECT_EQ(provider_calls_.load(), 1);
}

// The router stays up but its NATS connection drops (nats-server killed); sin's key is revoked
// meanwhile and the list is never published (nobody could have heard it). When the server is
// back on the same port, the router's trust catches up on reconnect, well before its next
// periodic refresh (30 s here), and refuses the key (the time it took is printed).
TEST_F(RouterRotationTest, ARouterWhoseConnectionDroppedCatchesUpOnReconnect) {
  ASSERT_NO_FATAL_FAILURE(Deploy());
  ASSERT_TRUE(sin_caller_.consumer->Call("segip", "persona_consulta", "1", Ana()).status.ok());
  CertificateTrust& trust = *router_trusts_[0];
  const uint64_t before = trust.revocation_version();

  crypto_->EnrolOperator();  // while the bus is up
  nats_->Kill9();
  ASSERT_TRUE(crypto_->RevokeUnpublished(sin_->cert.serial).ok());
  const auto restarted_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(nats_->Restart().ok());
  ASSERT_TRUE(WaitFor([&] { return trust.revocation_version() > before; }, kBound))
      << "the router did not catch up after reconnecting";
  const auto caught_up_at = std::chrono::steady_clock::now();
  std::cout << fmt::format(
      "revocation bound (reconnect): caught up {:.1f} ms after nats-server was back\n",
      std::chrono::duration_cast<std::chrono::microseconds>(caught_up_at - restarted_at)
              .count() /
          1000.0);

  // The consumer's connection may take a moment more to come back: a call that never reached
  // the router (TIMEOUT, or UNAVAILABLE without the router's word) is tried again.
  CallResult r;
  ASSERT_TRUE(WaitFor(
      [&] {
        r = sin_caller_.consumer->Call("segip", "persona_consulta", "2", Ana());
        return ChasquiCode(r.status) == v1::UNAUTHENTICATED || r.status.ok();
      },
      kBound))
      << r.status;
  ASSERT_FALSE(r.status.ok());
  EXPECT_NE(std::string(MessageOf(r.status)).find("revoked"), std::string::npos) << r.status;
  EXPECT_EQ(provider_calls_.load(), 1);
}

}  // namespace
}  // namespace chasqui::testing
