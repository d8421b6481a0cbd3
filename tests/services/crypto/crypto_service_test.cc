// The crypto service end to end in one process, with real parts: a real nats-server, RocksDB
// in a temp dir, libsodium, the root made by the real ceremony; only time is injected
// (FakeClock), so expiry and staleness are tested without waiting.

#include <chrono>
#include <memory>
#include <string>

#include "common/bus/bus.h"
#include "common/core/clock.h"
#include "common/core/status.h"
#include "common/trust/anchors.h"
#include "common/trust/certificate.h"
#include "common/trust/crypto_client.h"
#include "common/trust/directory.h"
#include "common/trust/requests.h"
#include "common/trust/statement.h"
#include "common/trust/transparency.h"
#include "gtest/gtest.h"
#include "services/crypto/authority.h"
#include "services/crypto/ceremony.h"
#include "services/crypto/crypto_service.h"
#include "tests/services/crypto/crypto_test_support.h"
#include "tests/support/nats_server.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait_for.h"

namespace chasqui::testing {
namespace {

constexpr int64_t kDay = 86'400'000;
constexpr int64_t kListValidity = 60'000;

std::string Msg(const absl::Status& s) { return std::string(MessageOf(s)); }

#define ASSERT_OK(expr)                          \
  do {                                           \
    const absl::Status s_ = (expr);              \
    ASSERT_TRUE(s_.ok()) << s_;                  \
  } while (0)

class CryptoServiceTest : public ::testing::Test {
 protected:
  CryptoServiceTest() : clock_(SystemClock().NowUnixMillis()) {}

  void SetUp() override {
    data_ = dir_.File("data");
    Passphrase pass("a test passphrase");
    auto init = InitRoot(data_, pass, KdfCost::kTestOnlyMinimum, 3650 * kDay, clock_);
    ASSERT_TRUE(init.ok()) << init.status();
    auto anchors = LoadTrustAnchors(init->anchors_file);
    ASSERT_TRUE(anchors.ok()) << anchors.status();
    anchors_ = *anchors;
    auto store = OpenAuthorityStore(data_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    auto root = LoadCurrentRoot(data_, store_.get(), pass);
    ASSERT_TRUE(root.ok()) << root.status();
    AuthorityOptions options;
    options.revocation_validity_ms = kListValidity;
    options.token_spool_dir = TokenSpoolDir(data_);
    auto authority = CertificateAuthority::Open(options, store_.get(), *std::move(root), clock_);
    ASSERT_TRUE(authority.ok()) << authority.status();
    authority_ = *std::move(authority);

    auto nats = NatsServer::Start();
    ASSERT_TRUE(nats.ok()) << nats.status();
    nats_ = *std::move(nats);
    BusOptions bo;
    bo.url = nats_->url();
    bo.name = "crypto";
    bo.send_asap = true;
    auto bus = Bus::Connect(bo);
    ASSERT_TRUE(bus.ok()) << bus.status();
    service_bus_ = *std::move(bus);
    registry_ = std::make_shared<prometheus::Registry>();
    CryptoServiceOptions so;
    so.tick = absl::Milliseconds(20);
    auto service = CryptoService::Start(so, service_bus_.get(), authority_.get(), registry_, clock_);
    ASSERT_TRUE(service.ok()) << service.status();
    service_ = *std::move(service);
    bo.name = "client";
    auto client_bus = Bus::Connect(bo);
    ASSERT_TRUE(client_bus.ok()) << client_bus.status();
    client_bus_ = *std::move(client_bus);
    auto client = CryptoClient::Create(client_bus_.get(), "_INBOX.test.crypto-client");
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
  }

  std::string Token(const std::string& entity, const std::string& role, const std::string& env,
                    const std::string& subject = "", int64_t ttl_ms = 3'600'000) {
    auto t = MakeEnrolmentToken(entity, subject, role, env, ttl_ms, clock_);
    EXPECT_TRUE(t.ok()) << t.status();
    if (!t.ok()) return "";
    EXPECT_TRUE(StoreToken(store_.get(), *t).ok());
    return t->token;
  }

  absl::StatusOr<v1::EnrolmentReply> EnrolRaw(const v1::EnrolmentRequestBody& body,
                                              const SigningKey& key) {
    return client_->Enrol(MakeEnrolmentRequest(body, key));
  }

  // Enrols `who` and fills its serial; the certificate verified against the pinned anchors.
  absl::StatusOr<VerifiedCertificate> Enrol(Requester& who, const std::string& entity,
                                            v1::CertificateRole role, const std::string& env,
                                            const std::string& subject = "") {
    const std::string token = Token(entity, std::string(CertificateRoleName(role)), env, subject);
    CHASQUI_ASSIGN_OR_RETURN(
        v1::EnrolmentReply reply,
        EnrolRaw(EnrolmentBody(who, token, entity, role, env, clock_.NowUnixMillis(), subject),
                 who.sign));
    CHASQUI_ASSIGN_OR_RETURN(
        VerifiedCertificate cert,
        VerifyCertificate(reply.certificate(), anchors_, env, clock_.NowUnixMillis()));
    who.serial = cert.serial;
    return cert;
  }

  TempDir dir_;
  FakeClock clock_;
  std::string data_;
  TrustAnchors anchors_;
  std::unique_ptr<KvStore> store_;
  std::unique_ptr<CertificateAuthority> authority_;
  std::unique_ptr<NatsServer> nats_;
  std::unique_ptr<Bus> service_bus_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<CryptoService> service_;
  std::unique_ptr<Bus> client_bus_;
  std::unique_ptr<CryptoClient> client_;
};

TEST_F(CryptoServiceTest, EnrolFetchFromDirectoryAndVerifyWithPinnedRoot) {
  Requester segip;
  const std::string token = Token("segip", "entity", "test");
  auto reply = EnrolRaw(EnrolmentBody(segip, token, "segip", v1::CERTIFICATE_ROLE_ENTITY, "test",
                                      clock_.NowUnixMillis()),
                        segip.sign);
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->log_sequence(), 1u);

  v1::CertificateBody body;
  ASSERT_TRUE(body.ParseFromString(reply->certificate().body()));
  v1::DirectoryRequest req;
  req.set_env("test");
  req.add_serials(body.serial());
  req.set_revocation_list(true);
  req.set_log_limit(10);
  auto dir_reply = client_->Directory(req);
  ASSERT_TRUE(dir_reply.ok()) << dir_reply.status();
  ASSERT_EQ(dir_reply->certificates_size(), 1);

  CertificateDirectory directory("test", anchors_);
  ASSERT_OK(directory.AddCertificates({dir_reply->certificates(0).SerializeAsString()},
                                      clock_.NowUnixMillis()));
  ASSERT_OK(directory.ApplyRevocationList(dir_reply->revocation_list().SerializeAsString(),
                                          clock_.NowUnixMillis()));
  auto cert = directory.Lookup(body.serial(), clock_.NowUnixMillis());
  ASSERT_TRUE(cert.ok()) << cert.status();
  EXPECT_EQ((*cert)->entity, "segip");
  EXPECT_EQ((*cert)->sign_pk, segip.sign.public_key());
  EXPECT_EQ((*cert)->kx_pk, segip.kx.public_key());
  auto store = directory.BuildTrustStore(clock_.NowUnixMillis());
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_NE(store->Find("segip", Role::kEntity), nullptr);

  // The transparency log holds it, and its chain verifies.
  ASSERT_EQ(dir_reply->log_entries_size(), 1);
  std::vector<v1::TransparencyLogEntry> log(dir_reply->log_entries().begin(),
                                            dir_reply->log_entries().end());
  ASSERT_OK(VerifyTransparencyChain(log, 0, std::string(32, '\0')));
  EXPECT_EQ(log[0].certificate(), reply->certificate().SerializeAsString());

  // By entity, and nothing for the same entity in prod.
  v1::DirectoryRequest by_entity;
  by_entity.set_env("test");
  by_entity.set_entity("segip");
  auto listed = client_->Directory(by_entity);
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->certificates_size(), 1);
  by_entity.set_env("prod");
  listed = client_->Directory(by_entity);
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->certificates_size(), 0);
}

TEST_F(CryptoServiceTest, EnrolmentRefusals) {
  const int64_t now = clock_.NowUnixMillis();
  Requester segip;

  auto wrong = EnrolRaw(EnrolmentBody(segip, "00" + std::string(62, 'a'), "segip",
                                      v1::CERTIFICATE_ROLE_ENTITY, "test", now),
                        segip.sign);
  EXPECT_TRUE(absl::IsUnauthenticated(wrong.status())) << wrong.status();
  EXPECT_NE(Msg(wrong.status()).find("token not recognised"), std::string::npos);

  // Signed by a key other than the one submitted: no proof of possession.
  const std::string token = Token("segip", "entity", "test");
  Requester other;
  auto body = EnrolmentBody(segip, token, "segip", v1::CERTIFICATE_ROLE_ENTITY, "test", now);
  auto forged = EnrolRaw(body, other.sign);
  EXPECT_TRUE(absl::IsUnauthenticated(forged.status())) << forged.status();
  EXPECT_NE(Msg(forged.status()).find("submitted sign_pk"), std::string::npos);

  // Role and entity must be the token's.
  auto role = EnrolRaw(EnrolmentBody(segip, token, "segip", v1::CERTIFICATE_ROLE_ROUTER, "test",
                                     now),
                       segip.sign);
  EXPECT_TRUE(absl::IsPermissionDenied(role.status())) << role.status();
  EXPECT_NE(Msg(role.status()).find("issued for role entity"), std::string::npos);
  auto entity = EnrolRaw(EnrolmentBody(segip, token, "sin", v1::CERTIFICATE_ROLE_ENTITY, "test",
                                       now),
                         segip.sign);
  EXPECT_TRUE(absl::IsPermissionDenied(entity.status())) << entity.status();
  EXPECT_NE(Msg(entity.status()).find("of entity segip"), std::string::npos);

  // A test token used for prod.
  auto env = EnrolRaw(EnrolmentBody(segip, token, "segip", v1::CERTIFICATE_ROLE_ENTITY, "prod",
                                    now),
                      segip.sign);
  EXPECT_TRUE(absl::IsPermissionDenied(env.status())) << env.status();
  EXPECT_NE(Msg(env.status()).find("environment test"), std::string::npos);

  // None of the refusals spent it: the right request succeeds once, then never again.
  ASSERT_TRUE(EnrolRaw(body, segip.sign).ok());
  Requester again;
  auto used = EnrolRaw(EnrolmentBody(again, token, "segip", v1::CERTIFICATE_ROLE_ENTITY, "test",
                                     now),
                       again.sign);
  EXPECT_TRUE(absl::IsPermissionDenied(used.status())) << used.status();
  EXPECT_NE(Msg(used.status()).find("already used"), std::string::npos);

  const std::string short_lived = Token("sin", "entity", "test", "", 1000);
  clock_.AdvanceMillis(1001);
  Requester sin;
  auto expired = EnrolRaw(EnrolmentBody(sin, short_lived, "sin", v1::CERTIFICATE_ROLE_ENTITY,
                                        "test", clock_.NowUnixMillis()),
                          sin.sign);
  EXPECT_TRUE(absl::IsPermissionDenied(expired.status())) << expired.status();
  EXPECT_NE(Msg(expired.status()).find("expired"), std::string::npos);

  // A person's certificate carries no kx key.
  const std::string person = Token("segip", "manager", "test", "ana");
  auto with_kx = EnrolmentBody(sin, person, "segip", v1::CERTIFICATE_ROLE_MANAGER, "test",
                               clock_.NowUnixMillis(), "ana");
  with_kx.set_kx_pk(std::string(AsView(sin.kx.public_key())));
  auto kx = EnrolRaw(with_kx, sin.sign);
  EXPECT_TRUE(absl::IsInvalidArgument(kx.status())) << kx.status();

  // Garbage and a truncated request.
  auto garbage = client_->Request(kEnrolSubject, "\xff\xfe not a protobuf");
  ASSERT_TRUE(garbage.ok()) << garbage.status();
  v1::EnrolmentReply g;
  ASSERT_TRUE(g.ParseFromString(*garbage));
  EXPECT_EQ(g.status().code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  std::string truncated = MakeEnrolmentRequest(body, segip.sign).SerializeAsString();
  truncated.resize(truncated.size() / 2);
  auto cut = client_->Request(kEnrolSubject, truncated);
  ASSERT_TRUE(cut.ok());
  ASSERT_TRUE(g.ParseFromString(*cut));
  EXPECT_EQ(g.status().code(), static_cast<int>(absl::StatusCode::kInvalidArgument))
      << g.status().message();
}

TEST_F(CryptoServiceTest, ControlRequestRefusals) {
  Requester op, gateway;
  ASSERT_TRUE(Enrol(op, "agetic", v1::CERTIFICATE_ROLE_OPERATOR, "test", "ana").ok());
  auto gw = Enrol(gateway, "segip", v1::CERTIFICATE_ROLE_ENTITY, "test");
  ASSERT_TRUE(gw.ok()) << gw.status();
  const int64_t now = clock_.NowUnixMillis();

  auto garbage = client_->Request(kRevokeSubject, "garbage");
  ASSERT_TRUE(garbage.ok());
  v1::RevokeReply r;
  ASSERT_TRUE(r.ParseFromString(*garbage));
  EXPECT_EQ(r.status().code(), static_cast<int>(absl::StatusCode::kInvalidArgument));

  auto by_gateway = client_->Revoke(RevokeRequest(gateway, "test", gateway.serial, now));
  EXPECT_TRUE(absl::IsPermissionDenied(by_gateway.status())) << by_gateway.status();
  EXPECT_NE(Msg(by_gateway.status()).find("only an operator"), std::string::npos);

  Requester impostor;  // claims the operator's serial with another key
  impostor.serial = op.serial;
  auto forged = client_->Revoke(RevokeRequest(impostor, "test", gateway.serial, now));
  EXPECT_TRUE(absl::IsUnauthenticated(forged.status())) << forged.status();

  Requester stranger;
  stranger.serial = 12345;
  auto unknown = client_->Revoke(RevokeRequest(stranger, "test", gateway.serial, now));
  EXPECT_TRUE(absl::IsUnauthenticated(unknown.status())) << unknown.status();

  auto old = client_->Revoke(RevokeRequest(op, "test", gateway.serial, now - 31'000));
  EXPECT_TRUE(absl::IsFailedPrecondition(old.status())) << old.status();

  auto unknown_serial = client_->Revoke(RevokeRequest(op, "test", 999, now));
  EXPECT_TRUE(absl::IsNotFound(unknown_serial.status())) << unknown_serial.status();

  const v1::ControlRequest once = RevokeRequest(op, "test", gateway.serial, now);
  ASSERT_TRUE(client_->Revoke(once).ok());
  auto replayed = client_->Revoke(once);
  EXPECT_TRUE(absl::IsAlreadyExists(replayed.status())) << replayed.status();

  // An operator certificate of test cannot act on prod.
  auto prod = client_->Revoke(RevokeRequest(op, "prod", gateway.serial, now));
  EXPECT_TRUE(absl::IsUnauthenticated(prod.status())) << prod.status();
}

TEST_F(CryptoServiceTest, RevocationPublishedVerifiedAndCaughtUpByFetch) {
  Requester op, segip;
  ASSERT_TRUE(Enrol(op, "agetic", v1::CERTIFICATE_ROLE_OPERATOR, "test", "ana").ok());
  auto cert = Enrol(segip, "segip", v1::CERTIFICATE_ROLE_ENTITY, "test");
  ASSERT_TRUE(cert.ok()) << cert.status();

  // A watching router's directory and one that misses the event.
  CertificateDirectory watching("test", anchors_);
  CertificateDirectory missed("test", anchors_);
  for (CertificateDirectory* d : {&watching, &missed}) {
    ASSERT_OK(d->AddCertificates({cert->certificate}, clock_.NowUnixMillis()));
    ASSERT_OK(CatchUpRevocations(*client_, *d, clock_));
    ASSERT_TRUE(d->Lookup(segip.serial, clock_.NowUnixMillis()).ok());
  }
  const uint64_t before = watching.revocation_version();
  auto sub = WatchRevocations(client_bus_.get(), &watching, clock_);
  ASSERT_TRUE(sub.ok()) << sub.status();
  ASSERT_OK(client_bus_->Flush(absl::Seconds(2)));

  auto revoked = client_->Revoke(RevokeRequest(op, "test", segip.serial, clock_.NowUnixMillis()));
  ASSERT_TRUE(revoked.ok()) << revoked.status();
  ASSERT_TRUE(WaitFor([&] { return watching.revocation_version() > before; }));
  auto refused = watching.Lookup(segip.serial, clock_.NowUnixMillis());
  EXPECT_TRUE(absl::IsPermissionDenied(refused.status())) << refused.status();

  EXPECT_TRUE(missed.Lookup(segip.serial, clock_.NowUnixMillis()).ok());  // not yet told
  ASSERT_OK(CatchUpRevocations(*client_, missed, clock_));
  auto caught_up = missed.Lookup(segip.serial, clock_.NowUnixMillis());
  EXPECT_TRUE(absl::IsPermissionDenied(caught_up.status())) << caught_up.status();
  EXPECT_EQ(missed.revocation_version(), watching.revocation_version());
}

TEST_F(CryptoServiceTest, StaleListRefusedUntilAReissuedOneArrives) {
  Requester segip;
  auto cert = Enrol(segip, "segip", v1::CERTIFICATE_ROLE_ENTITY, "test");
  ASSERT_TRUE(cert.ok()) << cert.status();
  CertificateDirectory directory("test", anchors_);
  ASSERT_OK(directory.AddCertificates({cert->certificate}, clock_.NowUnixMillis()));
  ASSERT_OK(CatchUpRevocations(*client_, directory, clock_));
  const uint64_t version = directory.revocation_version();

  clock_.AdvanceMillis(kListValidity + 1);
  auto stale = directory.Lookup(segip.serial, clock_.NowUnixMillis());
  EXPECT_TRUE(absl::IsUnavailable(stale.status())) << stale.status();
  EXPECT_TRUE(absl::IsUnavailable(directory.BuildTrustStore(clock_.NowUnixMillis()).status()));

  // The service re-issues on its own before (here: once past) valid_until; fetching it
  // makes the directory usable again.
  ASSERT_TRUE(WaitFor([&] { return CatchUpRevocations(*client_, directory, clock_).ok(); }));
  EXPECT_GT(directory.revocation_version(), version);
  EXPECT_TRUE(directory.Lookup(segip.serial, clock_.NowUnixMillis()).ok());
}

TEST_F(CryptoServiceTest, SignsDigestsOnlyForTheirService) {
  Requester audit, catalog, segip;
  ASSERT_TRUE(Enrol(audit, "audit", v1::CERTIFICATE_ROLE_AUDIT, "test").ok());
  ASSERT_TRUE(Enrol(catalog, "catalog", v1::CERTIFICATE_ROLE_CATALOG, "test").ok());
  ASSERT_TRUE(Enrol(segip, "segip", v1::CERTIFICATE_ROLE_ENTITY, "test").ok());
  const std::string digest(32, '\x42');
  const int64_t now = clock_.NowUnixMillis();

  auto signed_cp = client_->Sign(SignRequest(audit, "test", v1::STATEMENT_KIND_CHECKPOINT, digest, now));
  ASSERT_TRUE(signed_cp.ok()) << signed_cp.status();
  auto v = VerifyStatement(signed_cp->statement().SerializeAsString(),
                           v1::STATEMENT_KIND_CHECKPOINT, anchors_, "test");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(AsView(v->digest), digest);
  EXPECT_EQ(v->requester_serial, audit.serial);
  // Not an annex, whatever it says.
  EXPECT_FALSE(VerifyStatement(signed_cp->statement().SerializeAsString(),
                               v1::STATEMENT_KIND_ANNEX, anchors_, "test")
                   .ok());

  auto annex = client_->Sign(SignRequest(catalog, "test", v1::STATEMENT_KIND_ANNEX, digest, now));
  ASSERT_TRUE(annex.ok()) << annex.status();

  auto wrong_service =
      client_->Sign(SignRequest(catalog, "test", v1::STATEMENT_KIND_CHECKPOINT, digest, now));
  EXPECT_TRUE(absl::IsPermissionDenied(wrong_service.status())) << wrong_service.status();
  auto gateway = client_->Sign(SignRequest(segip, "test", v1::STATEMENT_KIND_ANNEX, digest, now));
  EXPECT_TRUE(absl::IsPermissionDenied(gateway.status())) << gateway.status();
  auto short_digest =
      client_->Sign(SignRequest(audit, "test", v1::STATEMENT_KIND_CHECKPOINT, "abc", now));
  EXPECT_TRUE(absl::IsInvalidArgument(short_digest.status())) << short_digest.status();
}

TEST_F(CryptoServiceTest, TokenSpooledWhileServingIsImported) {
  auto t = MakeEnrolmentToken("aduana", "", "entity", "test", 3'600'000, clock_);
  ASSERT_TRUE(t.ok());
  ASSERT_OK(SpoolToken(TokenSpoolDir(data_), *t));
  Requester aduana;
  auto reply = EnrolRaw(EnrolmentBody(aduana, t->token, "aduana", v1::CERTIFICATE_ROLE_ENTITY,
                                      "test", clock_.NowUnixMillis()),
                        aduana.sign);
  ASSERT_TRUE(reply.ok()) << reply.status();
  // Respooling the same record never revives the spent token.
  ASSERT_OK(SpoolToken(TokenSpoolDir(data_), *t));
  Requester again;
  auto used = EnrolRaw(EnrolmentBody(again, t->token, "aduana", v1::CERTIFICATE_ROLE_ENTITY,
                                     "test", clock_.NowUnixMillis()),
                       again.sign);
  EXPECT_TRUE(absl::IsPermissionDenied(used.status())) << used.status();
}

}  // namespace
}  // namespace chasqui::testing
