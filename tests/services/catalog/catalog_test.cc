// The catalog's logic with real parts but no network: RocksDB in a temp dir, certificates
// issued by a test root (common/trust), real Ed25519 signatures; only time is injected. Every
// accepted change is verified and applied to router-side CatalogSnapshots, so the lookups a
// router makes are checked against what the people did.

#include <memory>
#include <string>

#include "common/core/clock.h"
#include "common/core/status.h"
#include "common/envelope/errors.h"
#include "common/store/kv_store.h"
#include "common/trust/requests.h"
#include "gtest/gtest.h"
#include "services/catalog/catalog.h"
#include "services/catalog/catalog_signing.h"
#include "services/catalog/catalog_snapshot.h"
#include "tests/services/catalog/catalog_test_support.h"
#include "tests/support/temp_dir.h"

namespace chasqui::testing {
namespace {

constexpr int64_t kNow = 1'800'000'000'000;

std::string Msg(const absl::Status& s) { return std::string(MessageOf(s)); }

#define EXPECT_REFUSED(expr, want, text)                                                 \
  do {                                                                                   \
    const absl::Status s_ = (expr);                                                      \
    EXPECT_EQ(s_.code(), absl::StatusCode::want) << s_;                                  \
    EXPECT_NE(Msg(s_).find(text), std::string::npos) << "message: " << Msg(s_);          \
  } while (0)

class CatalogTest : public ::testing::Test {
 protected:
  CatalogTest() : clock_(kNow), world_(kNow), signer_(world_.Signer()) {}

  void SetUp() override { Reopen(); }

  void Reopen() {
    catalog_.reset();
    store_.reset();
    auto store = KvStore::Open({.path = dir_.File("db")});
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    CatalogOptions o;
    o.nta_hash = NtaHash();
    auto c = Catalog::Open(o, store_.get(), *world_.dirs.lookup, *signer_, clock_);
    ASSERT_TRUE(c.ok()) << c.status();
    catalog_ = *std::move(c);
  }

  // The change as a person would send it; accepted events go to the router-side snapshots.
  absl::StatusOr<CatalogChange> Do(const std::string& verb, const v1::CatalogControlBody& body,
                                   const Holder& who) {
    auto c = catalog_->Change(verb, Signed(body, who, clock_.NowUnixMillis()));
    if (c.ok()) {
      for (CatalogSnapshot* s : {&test_, &prod_}) {
        auto e = VerifyCatalogEvent(c->event, s->env(), *world_.dirs.lookup, clock_.NowUnixMillis());
        EXPECT_TRUE(e.ok()) << e.status();
        if (e.ok()) {
          EXPECT_TRUE(s->Apply(*e).ok());
        }
      }
    }
    return c;
  }
  absl::Status St(const std::string& verb, const v1::CatalogControlBody& body, const Holder& who) {
    return Do(verb, body, who).status();
  }

  // Both entities registered and adhered.
  void Adhered() {
    ASSERT_TRUE(St("register_entity", RegisterEntity("segip", "SEGIP"), world_.op).ok());
    ASSERT_TRUE(St("register_entity", RegisterEntity("sin", "Impuestos Nacionales"), world_.op).ok());
    ASSERT_TRUE(St("adhere", Adhere("segip"), world_.segip_mae).ok());
    ASSERT_TRUE(St("adhere", Adhere("sin"), world_.sin_mae).ok());
  }
  // segip publishes `name` with classification `c`.
  void Published(const std::string& name, v1::Classification c) {
    ASSERT_TRUE(St("submit", Submit("segip", Spec(name, c, true)), world_.segip_mgr).ok());
    ASSERT_TRUE(St("publish", ServiceDecision("publish", "segip", name), world_.op).ok());
  }

  absl::Status Check(const CatalogSnapshot& s, const std::string& service,
                     const std::string& user = "ci-4455667") {
    return s.Check("sin", "segip", service, user).status();
  }

  FakeClock clock_;
  World world_;
  std::unique_ptr<LocalCatalogSigner> signer_;
  TempDir dir_;
  std::unique_ptr<KvStore> store_;
  std::unique_ptr<Catalog> catalog_;
  CatalogSnapshot test_{"test"};
  CatalogSnapshot prod_{"prod"};
};

TEST_F(CatalogTest, WholeWorkflowFromAdhesionToProductionAndRevocation) {
  Adhered();
  Published("persona_consulta", v1::CLASSIFICATION_PRIVATE);
  Published("feriados", v1::CLASSIFICATION_PUBLIC);
  // Published but not granted: reachable by nobody.
  EXPECT_EQ(ChasquiCode(Check(test_, "persona_consulta")), v1::FORBIDDEN);

  // Public: granted on request, with its annex. Private: waits for the publisher.
  auto pub = Do("request_access", RequestAccess("test", "sin", "segip", "feriados"), world_.sin_mgr);
  ASSERT_TRUE(pub.ok()) << pub.status();
  ASSERT_GE(pub->records.size(), 2u);
  EXPECT_EQ(pub->records[0].grant().state(), v1::GRANT_STATE_ACTIVE);
  EXPECT_FALSE(pub->records[0].grant().annex_id().empty());
  auto priv =
      Do("request_access", RequestAccess("test", "sin", "segip", "persona_consulta"), world_.sin_mgr);
  ASSERT_TRUE(priv.ok()) << priv.status();
  EXPECT_EQ(priv->records[0].grant().state(), v1::GRANT_STATE_PENDING);

  // Granted but the end user is unknown; then registered.
  EXPECT_EQ(ChasquiCode(Check(test_, "feriados")), v1::END_USER_UNKNOWN);
  ASSERT_TRUE(St("register_end_user", EndUser(true, "sin", "ci-4455667"), world_.sin_mgr).ok());
  EXPECT_TRUE(Check(test_, "feriados").ok());
  const absl::Status pending = Check(test_, "persona_consulta");
  EXPECT_EQ(ChasquiCode(pending), v1::FORBIDDEN);
  EXPECT_NE(Msg(pending).find("pending"), std::string::npos) << pending;

  ASSERT_TRUE(St("approve", GrantDecision("approve", "test", "sin", "segip", "persona_consulta"),
                 world_.segip_mgr)
                  .ok());
  auto access = test_.Check("sin", "segip", "persona_consulta", "ci-4455667");
  ASSERT_TRUE(access.ok()) << access.status();
  EXPECT_TRUE(access->sealing_required);  // personal data
  EXPECT_FALSE(access->annex_id.empty());
  // Test and production have separate grants.
  EXPECT_EQ(ChasquiCode(Check(prod_, "persona_consulta")), v1::FORBIDDEN);
  ASSERT_TRUE(St("promote", GrantDecision("promote", "test", "sin", "segip", "persona_consulta"),
                 world_.op)
                  .ok());
  EXPECT_TRUE(Check(prod_, "persona_consulta").ok());

  // Each annex verifies for both envs; each adhesion carries the MAE's own signature.
  const v1::CatalogSnapshot all = test_.ToProto();
  EXPECT_EQ(all.annexes_size(), 5);  // 2 publications, 2 test grants, 1 promotion
  for (const v1::Annex& a : all.annexes()) {
    for (const std::string env : {"test", "prod"}) {
      auto body = VerifyAnnex(a, env, *world_.dirs.lookup, kNow);
      ASSERT_TRUE(body.ok()) << body.status();
      EXPECT_EQ(body->provider(), "segip");
      EXPECT_EQ(body->provider_nta_hash(), NtaHash());
    }
  }
  ASSERT_EQ(all.entities_size(), 2);
  for (const v1::Entity& e : all.entities()) {
    EXPECT_EQ(e.adhesion(), v1::ADHESION_STATE_SIGNED);
    EXPECT_TRUE(VerifyAdhesion(e.agreement(), *world_.dirs.lookup, kNow).ok());
    v1::AdhesionAgreement forged = e.agreement();
    forged.set_nta_hash(NtaHash("another text"));
    EXPECT_FALSE(VerifyAdhesion(forged, *world_.dirs.lookup, kNow).ok());
  }

  // Disabled end user, suspended and revoked grants: refused at once, each with its code.
  ASSERT_TRUE(St("disable_end_user", EndUser(false, "sin", "ci-4455667"), world_.sin_mgr).ok());
  EXPECT_EQ(ChasquiCode(Check(test_, "persona_consulta")), v1::END_USER_UNKNOWN);
  ASSERT_TRUE(St("register_end_user", EndUser(true, "sin", "ci-4455667"), world_.sin_mgr).ok());
  ASSERT_TRUE(St("suspend",
                 GrantDecision("suspend", "test", "sin", "segip", "persona_consulta", "audit"),
                 world_.segip_mgr)
                  .ok());
  const absl::Status suspended = Check(test_, "persona_consulta");
  EXPECT_EQ(ChasquiCode(suspended), v1::FORBIDDEN);
  EXPECT_NE(Msg(suspended).find("suspended"), std::string::npos);
  EXPECT_TRUE(Check(prod_, "persona_consulta").ok());  // the prod grant is its own
  ASSERT_TRUE(St("revoke",
                 GrantDecision("revoke", "prod", "sin", "segip", "persona_consulta", "misuse"),
                 world_.segip_mgr)
                  .ok());
  const absl::Status revoked = Check(prod_, "persona_consulta");
  EXPECT_EQ(ChasquiCode(revoked), v1::FORBIDDEN);
  EXPECT_NE(Msg(revoked).find("revoked"), std::string::npos);

  // Retired: no such service any more.
  ASSERT_TRUE(St("retire", ServiceDecision("retire", "segip", "feriados", "replaced"), world_.op).ok());
  EXPECT_EQ(ChasquiCode(Check(test_, "feriados")), v1::NOT_FOUND);
  EXPECT_EQ(ChasquiCode(Check(test_, "no_such_service")), v1::NOT_FOUND);

  // The change log holds every change, numbered without gaps, each event signed.
  auto events = catalog_->Events(0, 0);
  ASSERT_TRUE(events.ok()) << events.status();
  EXPECT_EQ(events->latest_version(), catalog_->version());
  ASSERT_EQ(static_cast<uint64_t>(events->events_size()), catalog_->version());
  for (int i = 0; i < events->events_size(); ++i) {
    auto e = VerifyCatalogEvent(events->events(i), "test", *world_.dirs.lookup, kNow);
    ASSERT_TRUE(e.ok()) << e.status();
    EXPECT_EQ(e->version(), static_cast<uint64_t>(i + 1));
  }
  EXPECT_EQ(test_.version(), catalog_->version());
}

TEST_F(CatalogTest, WrongPersonIsRefusedNamingTheRoleNeeded) {
  ASSERT_TRUE(St("register_entity", RegisterEntity("segip", "SEGIP"), world_.op).ok());
  ASSERT_TRUE(St("register_entity", RegisterEntity("sin", "SIN", {"lucia"}), world_.op).ok());
  EXPECT_REFUSED(St("register_entity", RegisterEntity("aduana", "Aduana"), world_.sin_mgr),
                 kPermissionDenied, "needs an operator; signer lucia");
  EXPECT_REFUSED(St("adhere", Adhere("segip"), world_.op), kPermissionDenied,
                 "needs the mae of segip");
  EXPECT_REFUSED(St("adhere", Adhere("segip"), world_.sin_mae), kPermissionDenied,
                 "needs the mae of segip; signer juan");
  ASSERT_TRUE(St("adhere", Adhere("segip"), world_.segip_mae).ok());
  ASSERT_TRUE(St("adhere", Adhere("sin"), world_.sin_mae).ok());
  EXPECT_REFUSED(St("submit", Submit("segip", Spec("persona", v1::CLASSIFICATION_PRIVATE)),
                    world_.segip_mae),
                 kPermissionDenied, "needs a manager of segip");
  EXPECT_REFUSED(St("submit", Submit("segip", Spec("persona", v1::CLASSIFICATION_PRIVATE)),
                    world_.sin_mgr),
                 kPermissionDenied, "needs a manager of segip");
  ASSERT_TRUE(St("submit", Submit("segip", Spec("persona", v1::CLASSIFICATION_PRIVATE)),
                 world_.segip_mgr)
                  .ok());
  EXPECT_REFUSED(St("publish", ServiceDecision("publish", "segip", "persona"), world_.segip_mgr),
                 kPermissionDenied, "needs an operator");
  ASSERT_TRUE(St("publish", ServiceDecision("publish", "segip", "persona"), world_.op).ok());
  ASSERT_TRUE(
      St("request_access", RequestAccess("test", "sin", "segip", "persona"), world_.sin_mgr).ok());
  // The consumer cannot approve its own request; only the publisher's manager can.
  EXPECT_REFUSED(
      St("approve", GrantDecision("approve", "test", "sin", "segip", "persona"), world_.sin_mgr),
      kPermissionDenied, "needs a manager of segip");
  EXPECT_REFUSED(
      St("approve", GrantDecision("approve", "test", "sin", "segip", "persona"), world_.op),
      kPermissionDenied, "needs a manager of segip");
  EXPECT_REFUSED(
      St("promote", GrantDecision("promote", "test", "sin", "segip", "persona"), world_.segip_mgr),
      kPermissionDenied, "needs an operator");
  // A gateway's key never approves anything.
  EXPECT_REFUSED(St("register_end_user", EndUser(true, "sin", "ci-1"), world_.sin_gateway),
                 kPermissionDenied, "signed by people");
  // A manager certificate of sin whose holder is not on sin's list of managers.
  Holder other;
  other.subject = "carlos";
  other.entity = "sin";
  world_.root.Issue(other, v1::CERTIFICATE_ROLE_MANAGER);
  ASSERT_TRUE(world_.dirs.Add(other, kNow).ok());
  EXPECT_REFUSED(St("register_end_user", EndUser(true, "sin", "ci-1"), other), kPermissionDenied,
                 "carlos is not among its registered managers");
  EXPECT_EQ(catalog_->version(), 7u);  // nothing refused was recorded
}

TEST_F(CatalogTest, WithoutAdhesionAnEntityNeitherPublishesNorConsumes) {
  ASSERT_TRUE(St("register_entity", RegisterEntity("segip", "SEGIP"), world_.op).ok());
  ASSERT_TRUE(St("register_entity", RegisterEntity("sin", "SIN"), world_.op).ok());
  EXPECT_REFUSED(St("submit", Submit("segip", Spec("persona", v1::CLASSIFICATION_PUBLIC)),
                    world_.segip_mgr),
                 kFailedPrecondition, "entity segip has not adhered");
  ASSERT_TRUE(St("adhere", Adhere("segip"), world_.segip_mae).ok());
  ASSERT_TRUE(St("submit", Submit("segip", Spec("persona", v1::CLASSIFICATION_PUBLIC)),
                 world_.segip_mgr)
                  .ok());
  ASSERT_TRUE(St("publish", ServiceDecision("publish", "segip", "persona"), world_.op).ok());
  EXPECT_REFUSED(
      St("request_access", RequestAccess("test", "sin", "segip", "persona"), world_.sin_mgr),
      kFailedPrecondition, "entity sin has not adhered");
  EXPECT_REFUSED(St("register_end_user", EndUser(true, "sin", "ci-1"), world_.sin_mgr),
                 kFailedPrecondition, "entity sin has not adhered");
  // An unregistered entity's MAE cannot adhere either.
  Holder mae;
  mae.subject = "rosa";
  mae.entity = "aduana";
  world_.root.Issue(mae, v1::CERTIFICATE_ROLE_MAE);
  ASSERT_TRUE(world_.dirs.Add(mae, kNow).ok());
  EXPECT_REFUSED(St("adhere", Adhere("aduana"), mae), kNotFound, "entity aduana is not registered");
}

TEST_F(CatalogTest, TheNtaIsSignedOnceAndOnlyTheTextInForce) {
  ASSERT_TRUE(St("register_entity", RegisterEntity("segip", "SEGIP"), world_.op).ok());
  EXPECT_REFUSED(St("adhere", Adhere("segip", NtaHash("an older NTA")), world_.segip_mae),
                 kFailedPrecondition, "is not the text in force");
  EXPECT_REFUSED(St("adhere", Adhere("segip", "short"), world_.segip_mae), kInvalidArgument,
                 "32 bytes");
  ASSERT_TRUE(St("adhere", Adhere("segip"), world_.segip_mae).ok());
  EXPECT_REFUSED(St("adhere", Adhere("segip"), world_.segip_mae), kAlreadyExists,
                 "it is signed only once");
}

TEST_F(CatalogTest, UnknownServicesAndProductionWithoutATestGrant) {
  Adhered();
  EXPECT_REFUSED(
      St("request_access", RequestAccess("test", "sin", "segip", "no_such"), world_.sin_mgr),
      kNotFound, "no published service segip/no_such");
  EXPECT_REFUSED(St("publish", ServiceDecision("publish", "segip", "no_such"), world_.op),
                 kNotFound, "no service segip/no_such");
  // Submitted but not yet published: not requestable, and not shown to consumers.
  ASSERT_TRUE(St("submit", Submit("segip", Spec("persona", v1::CLASSIFICATION_PRIVATE)),
                 world_.segip_mgr)
                  .ok());
  EXPECT_REFUSED(
      St("request_access", RequestAccess("test", "sin", "segip", "persona"), world_.sin_mgr),
      kNotFound, "no published service");
  EXPECT_REFUSED(St("submit", Submit("segip", Spec("persona", v1::CLASSIFICATION_PRIVATE)),
                    world_.segip_mgr),
                 kAlreadyExists, "already submitted");
  ASSERT_TRUE(St("publish", ServiceDecision("publish", "segip", "persona"), world_.op).ok());
  EXPECT_REFUSED(St("publish", ServiceDecision("publish", "segip", "persona"), world_.op),
                 kFailedPrecondition, "is published; only a submitted service is reviewed");

  EXPECT_REFUSED(
      St("request_access", RequestAccess("prod", "sin", "segip", "persona"), world_.sin_mgr),
      kFailedPrecondition, "production access is a promotion of an active test grant");
  EXPECT_REFUSED(
      St("promote", GrantDecision("promote", "test", "sin", "segip", "persona"), world_.op),
      kFailedPrecondition, "is not granted");
  ASSERT_TRUE(
      St("request_access", RequestAccess("test", "sin", "segip", "persona"), world_.sin_mgr).ok());
  EXPECT_REFUSED(
      St("promote", GrantDecision("promote", "test", "sin", "segip", "persona"), world_.op),
      kFailedPrecondition, "is pending");
  EXPECT_REFUSED(
      St("request_access", RequestAccess("test", "sin", "segip", "persona"), world_.sin_mgr),
      kAlreadyExists, "is already pending");
  EXPECT_REFUSED(St("reject_access",
                    GrantDecision("reject_access", "test", "sin", "segip", "persona"),
                    world_.segip_mgr),
                 kInvalidArgument, "reason is required");
  ASSERT_TRUE(St("reject_access",
                 GrantDecision("reject_access", "test", "sin", "segip", "persona", "no basis"),
                 world_.segip_mgr)
                  .ok());
  EXPECT_EQ(ChasquiCode(Check(test_, "persona")), v1::FORBIDDEN);
  EXPECT_REFUSED(St("approve", GrantDecision("approve", "test", "aduana", "segip", "persona"),
                    world_.segip_mgr),
                 kNotFound, "no access request aduana -> segip/persona in test");
}

TEST_F(CatalogTest, MalformedAndGarbageRequestsAreInvalidArgument) {
  EXPECT_REFUSED(catalog_->Change("register_entity", "\xff\x01garbage").status(), kInvalidArgument,
                 "truncated or garbage");
  std::string req = Signed(RegisterEntity("segip", "SEGIP"), world_.op, kNow);
  EXPECT_REFUSED(catalog_->Change("register_entity", req.substr(0, req.size() - 7)).status(),
                 kInvalidArgument, "truncated or garbage");
  // A request signed for one verb, sent on another.
  EXPECT_REFUSED(catalog_->Change("publish", req).status(), kInvalidArgument,
                 "control request on publish: its action is register_entity");
  // A crypto-service control request (revoke) is no catalog change.
  v1::ControlBody crypto_body;
  crypto_body.mutable_revoke()->add_serials(7);
  const std::string crypto_req =
      MakeControlRequest(crypto_body, "test", world_.op.serial, world_.op.key, kNow)
          .SerializeAsString();
  EXPECT_REFUSED(catalog_->Change("register_entity", crypto_req).status(), kInvalidArgument,
                 "its action is none");
  Holder staging;
  staging.env = "staging";
  EXPECT_REFUSED(catalog_->Change("register_entity",
                                  MakeCatalogRequest(RegisterEntity("a", "A"), "staging",
                                                     world_.op.serial, world_.op.key, kNow)
                                      .SerializeAsString())
                     .status(),
                 kInvalidArgument, "environment \"staging\" is not served");
  EXPECT_REFUSED(St("register_entity", RegisterEntity("Bad.Name", "x"), world_.op),
                 kInvalidArgument, "not a valid name");
  EXPECT_EQ(catalog_->version(), 0u);
}

TEST_F(CatalogTest, ReplayedStaleAndForgedRequestsAreRefused) {
  const std::string req = Signed(RegisterEntity("segip", "SEGIP"), world_.op, kNow);
  ASSERT_TRUE(catalog_->Change("register_entity", req).ok());
  EXPECT_REFUSED(catalog_->Change("register_entity", req).status(), kAlreadyExists,
                 "replayed (same signer and nonce)");
  // The nonce was stored with the change: still a replay after a restart.
  Reopen();
  EXPECT_REFUSED(catalog_->Change("register_entity", req).status(), kAlreadyExists, "replayed");

  EXPECT_REFUSED(catalog_->Change("register_entity",
                                  Signed(RegisterEntity("sin", "SIN"), world_.op, kNow - 60'000))
                     .status(),
                 kFailedPrecondition, "outside the");

  // Signed by another key claiming the operator's certificate.
  Holder forger;
  forger.serial = world_.op.serial;
  EXPECT_REFUSED(
      catalog_->Change("register_entity", Signed(RegisterEntity("sin", "SIN"), forger, kNow))
          .status(),
      kUnauthenticated, "signature does not verify");
  // A body altered after signing.
  v1::ControlRequest r;
  ASSERT_TRUE(r.ParseFromString(Signed(RegisterEntity("sin", "SIN"), world_.op, kNow)));
  v1::CatalogControlBody b;
  ASSERT_TRUE(b.ParseFromString(r.body()));
  b.mutable_register_entity()->set_id("sin2");
  r.set_body(b.SerializeAsString());
  EXPECT_REFUSED(catalog_->Change("register_entity", r.SerializeAsString()).status(),
                 kUnauthenticated, "signature does not verify");
  // A certificate nobody issued.
  Holder stranger;
  stranger.serial = 999'999;
  EXPECT_REFUSED(
      catalog_->Change("register_entity", Signed(RegisterEntity("sin", "SIN"), stranger, kNow))
          .status(),
      kUnauthenticated, "signer certificate 999999");
  // A revoked operator.
  ASSERT_TRUE(world_.dirs.by_env["test"]
                  ->ApplyRevocationList(world_.root.List("test", 2, {world_.op.serial}), kNow)
                  .ok());
  EXPECT_REFUSED(St("register_entity", RegisterEntity("sin", "SIN"), world_.op), kPermissionDenied,
                 "revoked");
  EXPECT_EQ(catalog_->version(), 1u);
}

TEST_F(CatalogTest, StateSurvivesReopenAndVersionsContinue) {
  Adhered();
  Published("persona", v1::CLASSIFICATION_PUBLIC);
  ASSERT_TRUE(
      St("request_access", RequestAccess("test", "sin", "segip", "persona"), world_.sin_mgr).ok());
  const uint64_t v = catalog_->version();
  auto before = catalog_->Snapshot();
  ASSERT_TRUE(before.ok());
  Reopen();
  EXPECT_EQ(catalog_->version(), v);
  auto after = catalog_->Snapshot();
  ASSERT_TRUE(after.ok());
  auto a = VerifyCatalogSnapshot(*after, "test", *world_.dirs.lookup, kNow);
  auto b = VerifyCatalogSnapshot(*before, "test", *world_.dirs.lookup, kNow);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->grants_size(), 1);
  EXPECT_EQ(a->services_size(), 1);
  EXPECT_EQ(a->entities_size(), 2);
  a->clear_at_ms();
  b->clear_at_ms();
  EXPECT_EQ(a->SerializeAsString(), b->SerializeAsString());
  auto next = Do("register_end_user", EndUser(true, "sin", "ci-1"), world_.sin_mgr);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->version, v + 1);
}

TEST_F(CatalogTest, SnapshotRefusesGapsAndForgedEvents) {
  Adhered();  // versions 1..4
  auto events = catalog_->Events(0, 0);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->events_size(), 4);
  CatalogSnapshot s("test");
  auto e1 = VerifyCatalogEvent(events->events(0), "test", *world_.dirs.lookup, kNow);
  auto e3 = VerifyCatalogEvent(events->events(2), "test", *world_.dirs.lookup, kNow);
  ASSERT_TRUE(e1.ok() && e3.ok());
  ASSERT_TRUE(s.Apply(*e1).ok());
  EXPECT_REFUSED(s.Apply(*e3), kOutOfRange, "needs catch-up");
  EXPECT_TRUE(s.Apply(*e1).ok());  // a duplicate changes nothing
  EXPECT_EQ(s.version(), 1u);
  // Limits and paging: events after 2, at most 1.
  auto page = catalog_->Events(2, 1);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->events_size(), 1);
  EXPECT_EQ(VerifyCatalogEvent(page->events(0), "test", *world_.dirs.lookup, kNow)->version(), 3u);

  // A snapshot never rolls the copy back.
  auto snap = catalog_->Snapshot();
  ASSERT_TRUE(snap.ok());
  auto full = VerifyCatalogSnapshot(*snap, "test", *world_.dirs.lookup, kNow);
  ASSERT_TRUE(full.ok());
  CatalogSnapshot t("test");
  ASSERT_TRUE(t.Reset(*full).ok());
  v1::CatalogSnapshot old = *full;
  old.set_version(2);
  EXPECT_REFUSED(t.Reset(old), kFailedPrecondition, "older");

  // An event altered after signing, or signed by a non-catalog key, is refused.
  v1::SignedCatalogMessage forged = events->events(1);
  forged.set_body(forged.body() + "x");
  EXPECT_REFUSED(VerifyCatalogEvent(forged, "test", *world_.dirs.lookup, kNow).status(),
                 kUnauthenticated, "signature does not verify");
  v1::SignedCatalogMessage by_person = events->events(1);
  for (auto& sig : *by_person.mutable_signatures()) sig.set_signer_serial(world_.op.serial);
  EXPECT_REFUSED(VerifyCatalogEvent(by_person, "test", *world_.dirs.lookup, kNow).status(),
                 kPermissionDenied, "not catalog");
  // A test-only signature does not pass in prod: tags are built by the verifier.
  v1::SignedCatalogMessage test_only = events->events(1);
  test_only.clear_signatures();
  *test_only.add_signatures() = events->events(1).signatures(1).env() == "test"
                                    ? events->events(1).signatures(1)
                                    : events->events(1).signatures(0);
  EXPECT_REFUSED(VerifyCatalogEvent(test_only, "prod", *world_.dirs.lookup, kNow).status(),
                 kPermissionDenied, "no signature for environment prod");
  v1::SignedCatalogMessage relabelled = test_only;
  relabelled.mutable_signatures(0)->set_env("prod");
  relabelled.mutable_signatures(0)->set_signer_serial(world_.catalog_serials["prod"]);
  EXPECT_REFUSED(VerifyCatalogEvent(relabelled, "prod", *world_.dirs.lookup, kNow).status(),
                 kUnauthenticated, "signature does not verify");
}

}  // namespace
}  // namespace chasqui::testing
