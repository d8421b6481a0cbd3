// The catalog over a real nats-server: people's signed changes on chq.ctl.catalog.<verb> with
// precise refusals on the wire, events followed by a router-side CatalogFollower, catch-up
// after missed events and after a catalog restart, and a follower that keeps serving its
// snapshot while the catalog is down. RocksDB in a temp dir; certificates from a test root.

#include <chrono>
#include <memory>
#include <string>

#include "common/bus/bus.h"
#include "common/core/clock.h"
#include "common/core/status.h"
#include "common/envelope/errors.h"
#include "common/store/kv_store.h"
#include "gtest/gtest.h"
#include "services/catalog/catalog.h"
#include "services/catalog/catalog_client.h"
#include "services/catalog/catalog_follower.h"
#include "services/catalog/catalog_service.h"
#include "services/catalog/catalog_snapshot.h"
#include "tests/services/catalog/catalog_test_support.h"
#include "tests/support/metrics.h"
#include "tests/support/nats_server.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait_for.h"

namespace chasqui::testing {
namespace {

std::string Msg(const absl::Status& s) { return std::string(MessageOf(s)); }

class CatalogServiceTest : public ::testing::Test {
 protected:
  CatalogServiceTest()
      : clock_(SystemClock().NowUnixMillis()), world_(clock_.NowUnixMillis()),
        signer_(world_.Signer()) {}

  void SetUp() override {
    auto nats = NatsServer::Start();
    ASSERT_TRUE(nats.ok()) << nats.status();
    nats_ = *std::move(nats);
    StartCatalog();
    BusOptions bo;
    bo.url = nats_->url();
    bo.name = "people";
    bo.send_asap = true;
    auto bus = Bus::Connect(bo);
    ASSERT_TRUE(bus.ok()) << bus.status();
    client_bus_ = *std::move(bus);
    auto client = CatalogClient::Create(client_bus_.get(), "_INBOX.test.agetic.cli");
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
    bo.name = "router";
    auto rbus = Bus::Connect(bo);
    ASSERT_TRUE(rbus.ok()) << rbus.status();
    router_bus_ = *std::move(rbus);
  }

  void StartCatalog() {
    auto store = KvStore::Open({.path = dir_.File("db")});
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    CatalogOptions o;
    o.nta_hash = NtaHash();
    auto c = Catalog::Open(o, store_.get(), *world_.dirs.lookup, *signer_, clock_);
    ASSERT_TRUE(c.ok()) << c.status();
    catalog_ = *std::move(c);
    BusOptions bo;
    bo.url = nats_->url();
    bo.name = "catalog";
    bo.send_asap = true;
    auto bus = Bus::Connect(bo);
    ASSERT_TRUE(bus.ok()) << bus.status();
    service_bus_ = *std::move(bus);
    registry_ = std::make_shared<prometheus::Registry>();
    auto s = CatalogService::Start({}, service_bus_.get(), catalog_.get(), registry_);
    ASSERT_TRUE(s.ok()) << s.status();
    service_ = *std::move(s);
  }

  void StopCatalog() {
    service_.reset();
    service_bus_.reset();
    catalog_.reset();
    store_.reset();
  }

  std::unique_ptr<CatalogFollower> Follow(CatalogSnapshot* snapshot) {
    CatalogFollowerOptions fo;
    fo.inbox_prefix = "_INBOX._router.test.r1.catalog";
    fo.retry = absl::Milliseconds(50);
    fo.resync = absl::Milliseconds(300);
    auto f = CatalogFollower::Start(fo, router_bus_.get(), snapshot, *world_.dirs.lookup, clock_);
    EXPECT_TRUE(f.ok()) << f.status();
    return f.ok() ? *std::move(f) : nullptr;
  }

  absl::StatusOr<v1::CatalogReply> Send(const std::string& verb,
                                        const v1::CatalogControlBody& body, const Holder& who) {
    return client_->Change(verb, MakeCatalogRequest(body, who.env, who.serial, who.key,
                                                    clock_.NowUnixMillis()));
  }
  void Ok(const std::string& verb, const v1::CatalogControlBody& body, const Holder& who) {
    auto r = Send(verb, body, who);
    ASSERT_TRUE(r.ok()) << verb << ": " << r.status();
  }

  // Two adhered entities, segip's private persona_consulta published, sin's end user known.
  void Story() {
    Ok("register_entity", RegisterEntity("segip", "SEGIP"), world_.op);
    Ok("register_entity", RegisterEntity("sin", "SIN"), world_.op);
    Ok("adhere", Adhere("segip"), world_.segip_mae);
    Ok("adhere", Adhere("sin"), world_.sin_mae);
    Ok("submit", Submit("segip", Spec("persona_consulta", v1::CLASSIFICATION_PRIVATE, true)),
       world_.segip_mgr);
    Ok("publish", ServiceDecision("publish", "segip", "persona_consulta"), world_.op);
    Ok("register_end_user", EndUser(true, "sin", "ci-1"), world_.sin_mgr);
  }

  v1::Code Code(const CatalogSnapshot& s) {
    return ChasquiCode(s.Check("sin", "segip", "persona_consulta", "ci-1").status());
  }

  FakeClock clock_;
  World world_;
  std::unique_ptr<LocalCatalogSigner> signer_;
  TempDir dir_;
  std::unique_ptr<NatsServer> nats_;
  std::unique_ptr<KvStore> store_;
  std::unique_ptr<Catalog> catalog_;
  std::unique_ptr<Bus> service_bus_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<CatalogService> service_;
  std::unique_ptr<Bus> client_bus_;
  std::unique_ptr<CatalogClient> client_;
  std::unique_ptr<Bus> router_bus_;
};

TEST_F(CatalogServiceTest, StoryOverNatsFollowedByARouter) {
  CatalogSnapshot router("test");
  auto follower = Follow(&router);
  ASSERT_NE(follower, nullptr);
  Story();
  ASSERT_TRUE(WaitFor([&] { return router.version() == 7; })) << router.version();
  EXPECT_EQ(Code(router), v1::FORBIDDEN);  // published, but no grant yet

  // Refusals travel with their code and message.
  auto wrong = Send("approve", GrantDecision("approve", "test", "sin", "segip", "persona_consulta"),
                    world_.sin_mgr);
  EXPECT_TRUE(absl::IsPermissionDenied(wrong.status())) << wrong.status();
  EXPECT_NE(Msg(wrong.status()).find("needs a manager of segip"), std::string::npos);
  auto garbage = client_->Change("publish", v1::ControlRequest());
  EXPECT_TRUE(absl::IsInvalidArgument(garbage.status())) << garbage.status();

  Ok("request_access", RequestAccess("test", "sin", "segip", "persona_consulta"), world_.sin_mgr);
  ASSERT_TRUE(WaitFor([&] { return router.version() == 8; }));
  EXPECT_EQ(Code(router), v1::FORBIDDEN);  // pending: refused until the publisher approves
  Ok("approve", GrantDecision("approve", "test", "sin", "segip", "persona_consulta"),
     world_.segip_mgr);
  EXPECT_TRUE(WaitFor([&] { return Code(router) == v1::OK; }));
  Ok("revoke", GrantDecision("revoke", "test", "sin", "segip", "persona_consulta", "misuse"),
     world_.segip_mgr);
  EXPECT_TRUE(WaitFor([&] { return Code(router) == v1::FORBIDDEN; }));  // the moment it arrives

  EXPECT_EQ(SeriesValue(*registry_, "chasqui_catalog_changes_total",
                        {"verb=\"approve\"", "code=\"PERMISSION_DENIED\""}),
            1);
  EXPECT_EQ(SeriesValue(*registry_, "chasqui_catalog_changes_total",
                        {"verb=\"publish\"", "code=\"INVALID_ARGUMENT\""}),
            1);
  // A gauge without labels is exposed as `name value`.
  EXPECT_NE(ExpositionText(*registry_).find("\nchasqui_catalog_version 10\n"), std::string::npos)
      << ExpositionText(*registry_);
  EXPECT_EQ(follower->events_refused(), 0);
}

TEST_F(CatalogServiceTest, FollowerCatchesUpAfterMissedEventsAndAfterItsRestart) {
  Story();  // before any follower: it starts from the snapshot
  CatalogSnapshot router("test");
  {
    auto follower = Follow(&router);
    ASSERT_TRUE(follower->WaitLoaded(absl::Seconds(10)));
    ASSERT_TRUE(WaitFor([&] { return router.version() == 7; }));
  }
  // Missed while the router was away.
  Ok("request_access", RequestAccess("test", "sin", "segip", "persona_consulta"), world_.sin_mgr);
  Ok("approve", GrantDecision("approve", "test", "sin", "segip", "persona_consulta"),
     world_.segip_mgr);
  auto follower = Follow(&router);
  EXPECT_TRUE(WaitFor([&] { return router.version() == 9; })) << router.version();
  EXPECT_EQ(Code(router), v1::OK);

  // Changes whose events never reached the bus (applied behind the service's back), then
  // one that does: the follower sees the gap and fetches what it missed.
  auto direct = catalog_->Change(
      "disable_end_user",
      Signed(EndUser(false, "sin", "ci-1"), world_.sin_mgr, clock_.NowUnixMillis()));
  ASSERT_TRUE(direct.ok()) << direct.status();
  Ok("register_end_user", EndUser(true, "sin", "ci-2"), world_.sin_mgr);
  EXPECT_TRUE(WaitFor([&] { return router.version() == 11; })) << router.version();
  EXPECT_EQ(Code(router), v1::END_USER_UNKNOWN);
  EXPECT_GE(follower->catch_ups(), 2);
}

TEST_F(CatalogServiceTest, FollowerServesItsSnapshotWhileTheCatalogIsDownAndCatchesUp) {
  Story();
  Ok("request_access", RequestAccess("test", "sin", "segip", "persona_consulta"), world_.sin_mgr);
  Ok("approve", GrantDecision("approve", "test", "sin", "segip", "persona_consulta"),
     world_.segip_mgr);
  CatalogSnapshot router("test");
  auto follower = Follow(&router);
  ASSERT_TRUE(WaitFor([&] { return router.version() == 9; }));
  EXPECT_TRUE(follower->Ready(absl::Seconds(60)).ok());

  StopCatalog();
  clock_.AdvanceMillis(120'000);
  // Still serving what it holds; readiness tells the age.
  EXPECT_EQ(Code(router), v1::OK);
  const absl::Status ready = follower->Ready(absl::Seconds(60));
  EXPECT_TRUE(absl::IsUnavailable(ready)) << ready;
  EXPECT_NE(Msg(ready).find("version 9"), std::string::npos) << ready;
  EXPECT_GE(follower->AgeMillis(), 120'000);

  // The catalog comes back with its state (same store), changes go on, the router follows.
  StartCatalog();
  ASSERT_EQ(catalog_->version(), 9u);
  Ok("suspend", GrantDecision("suspend", "test", "sin", "segip", "persona_consulta", "audit"),
     world_.segip_mgr);
  EXPECT_TRUE(WaitFor([&] { return Code(router) == v1::FORBIDDEN; }));
  EXPECT_TRUE(WaitFor([&] { return follower->Ready(absl::Seconds(60)).ok(); }));
}

}  // namespace
}  // namespace chasqui::testing
