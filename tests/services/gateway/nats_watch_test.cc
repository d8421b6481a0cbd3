// Revocation drives the bus (issue 3), with real parts only: `chasqui nats-config` writes the
// configuration, a real nats-server runs it (-P pid file), the crypto service runs in-process
// on RocksDB under its own nats-server user, `chasqui nats-config --watch` runs as a process
// beside the server, and `chasqui revoke` is the operator's command. Entities connect with the
// password files the first command wrote.

#include <sys/stat.h>

#include <chrono>
#include <iostream>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "chasqui/v1/crypto.pb.h"
#include "common/bus/bus.h"
#include "common/bus/nats_config.h"
#include "common/core/clock.h"
#include "common/core/files.h"
#include "common/core/status.h"
#include "common/envelope/identity.h"
#include "common/trust/anchors.h"
#include "common/trust/certificate_trust.h"
#include "common/trust/requests.h"
#include "common/trust/revocation.h"
#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "prometheus/registry.h"
#include "services/crypto/authority.h"
#include "services/crypto/ceremony.h"
#include "services/crypto/crypto_service.h"
#include "services/crypto/root_key.h"
#include "tests/support/child_process.h"
#include "tests/support/nats_server.h"
#include "tests/support/run_command.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait_for.h"

namespace chasqui {
namespace {

using ::chasqui::testing::NatsServer;
using ::chasqui::testing::RunCommand;
using ::chasqui::testing::TempDir;
using ::chasqui::testing::TestProcess;
using ::chasqui::testing::WaitFor;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr auto kBound = std::chrono::seconds(20);
constexpr int64_t kDay = 86'400'000;

// Who the configuration has users for: the flags of both `chasqui nats-config` runs.
const char kPlan[] =
    "--env test --router --service crypto --entity segip --entity sin --entity aduana "
    "--operator-entity agetic --nats-watch --bcrypt-cost 4 --listen 127.0.0.1:4222";

class NatsWatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto made = RunCommand(fmt::format("timeout 60 {} nats-config {} --out {} --secrets-dir {}",
                                             CHASQUI_BIN, kPlan, Config(), Secrets()));
    ASSERT_EQ(made.exit_code, 0) << made.output;
    auto server = NatsServer::Start({"-c", Config(), "-P", PidFile()});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);

    // The crypto service, as `chasqui-crypto init` and `serve` make it, under crypto.test.
    auto init = InitRoot(dir_.File("crypto"), Passphrase("a test passphrase"),
                         KdfCost::kTestOnlyMinimum, 3650 * kDay, SystemClock());
    ASSERT_TRUE(init.ok()) << init.status();
    roots_ = init->anchors_file;
    anchors_ = init->anchors;
    auto store = OpenAuthorityStore(dir_.File("crypto"));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    auto root = LoadCurrentRoot(dir_.File("crypto"), store_.get(), Passphrase("a test passphrase"));
    ASSERT_TRUE(root.ok()) << root.status();
    AuthorityOptions ao;
    ao.envs = {"test"};
    ao.revocation_validity_ms = 600'000;
    auto authority = CertificateAuthority::Open(ao, store_.get(), *std::move(root), SystemClock());
    ASSERT_TRUE(authority.ok()) << authority.status();
    authority_ = *std::move(authority);
    crypto_bus_ = Login("crypto.test");
    ASSERT_NE(crypto_bus_, nullptr);
    CryptoServiceOptions so;
    so.tick = absl::Milliseconds(100);
    auto service = CryptoService::Start(so, crypto_bus_.get(), authority_.get(),
                                        std::make_shared<prometheus::Registry>(), SystemClock());
    ASSERT_TRUE(service.ok()) << service.status();
    service_ = *std::move(service);

    // The operator (olga of agetic) enrols through agetic's user, and gets key and cert files.
    Identity olga = Enrol("agetic", Role::kOperator, "olga");
    ASSERT_TRUE(WriteIdentity(dir_.File("olga.key"), olga).ok());
    ASSERT_TRUE(WriteFileDurably(dir_.File("olga.cert"), olga_cert_, 0644, false).ok());

    watch_ = std::make_unique<TestProcess>(
        CHASQUI_BIN,
        std::vector<std::string>{
            "nats-config", "--watch",    "--env",          "test",       "--router",
            "--service",   "crypto",     "--entity",       "segip",      "--entity",
            "sin",         "--entity",   "aduana",         "--operator-entity", "agetic",
            "--nats-watch", "--bcrypt-cost", "4",          "--listen",   "127.0.0.1:4222",
            "--out",       Config(),     "--secrets-dir",  Secrets(),    "--roots",
            roots_,        "--nats-pid-file", PidFile(),   "--nats",     server_->url(),
            "--nats-user", "nats-watch.test", "--nats-password-file",
            Secrets() + "/nats-watch.test.password"},
        dir_.File("watch.log"));
    // Its first rewrite: every env has a verified list.
    ASSERT_TRUE(watch_->WaitForLog("rewritten", 1, kBound)) << watch_->Log();
  }

  void TearDown() override {
    if (watch_ != nullptr) {
      EXPECT_EQ(watch_->Terminate(), 0) << watch_->Log();
    }
    service_.reset();
    crypto_bus_.reset();
  }

  std::string Config() const { return dir_.File("nats.conf"); }
  std::string Secrets() const { return dir_.File("secrets"); }
  std::string PidFile() const { return dir_.File("nats.pid"); }
  std::string PasswordFile(const std::string& user) const {
    return Secrets() + "/" + user + ".password";
  }

  // A connection as `user` with its password file; null (and the status in *why) if refused.
  std::unique_ptr<Bus> Login(const std::string& user, absl::Status* why = nullptr) {
    BusOptions o;
    o.url = server_->url();
    o.name = "watch-test-" + user;
    o.user = user;
    o.send_asap = true;
    o.max_reconnect = 0;
    auto bus = ConnectWithPasswordFile(o, PasswordFile(user));
    if (why != nullptr) *why = bus.status();
    return bus.ok() ? *std::move(bus) : nullptr;
  }

  // A fresh key of `entity` enrolled through that entity's own user.
  Identity Enrol(const std::string& entity, Role role, const std::string& subject = "") {
    Identity id = GenerateIdentity(entity, "test", role);
    auto token = MakeEnrolmentToken(entity, subject, RoleName(role), "test", 3'600'000,
                                    SystemClock());
    EXPECT_TRUE(token.ok()) << token.status();
    EXPECT_TRUE(StoreToken(store_.get(), *token).ok());
    auto bus = Login(entity + ".test");
    EXPECT_NE(bus, nullptr);
    auto cert = EnrolIdentity(bus.get(), CryptoInboxPrefix(id.pub), id, token->token, subject,
                              anchors_, absl::Seconds(5), SystemClock());
    EXPECT_TRUE(cert.ok()) << cert.status();
    id.pub.serial = cert->serial;
    if (role == Role::kOperator) olga_cert_ = cert->certificate;
    return id;
  }

  // `chasqui revoke` as `key`/`cert` through `user`.
  testing::CommandOutcome Revoke(const std::string& args, const std::string& key = "olga.key",
                                 const std::string& cert = "olga.cert",
                                 const std::string& user = "agetic.test") {
    return RunCommand(fmt::format(
        "timeout 60 {} revoke {} --key {} --cert {} --roots {} --nats {} --nats-user {} "
        "--nats-password-file {} --timeout-ms 3000",
        CHASQUI_BIN, args, dir_.File(key), dir_.File(cert), roots_, server_->url(), user,
        PasswordFile(user)));
  }

  // The list version `chasqui revoke` printed.
  static std::string VersionIn(const std::string& output) {
    std::smatch m;
    const std::regex re("is now version ([0-9]+)");
    return std::regex_search(output, m, re) ? m[1].str() : "";
  }

  TempDir dir_;
  std::unique_ptr<NatsServer> server_;
  std::string roots_;
  TrustAnchors anchors_;
  std::unique_ptr<KvStore> store_;
  std::unique_ptr<CertificateAuthority> authority_;
  std::unique_ptr<Bus> crypto_bus_;
  std::unique_ptr<CryptoService> service_;
  std::string olga_cert_;
  std::unique_ptr<TestProcess> watch_;
};

// segip rotated its key once (the old certificate superseded) and is then withdrawn: its newest
// certificate revoked with entity_withdrawn leaves it none usable.
TEST_F(NatsWatchTest, AWithdrawnEntityIsDisconnectedAndRefusedWhileOthersKeepTheirPasswords) {
  Identity segip_old = Enrol("segip", Role::kEntity);
  Identity segip = Enrol("segip", Role::kEntity);
  Enrol("sin", Role::kEntity);
  auto segip_bus = Login("segip.test");
  auto sin_bus = Login("sin.test");
  ASSERT_TRUE(segip_bus && sin_bus);
  const std::string sin_password = ReadFileOrEmpty(PasswordFile("sin.test"));
  ASSERT_FALSE(sin_password.empty());
  const auto rotated =
      Revoke(fmt::format("--serial {} --reason superseded", segip_old.pub.serial));
  ASSERT_EQ(rotated.exit_code, 0) << rotated.output;
  ASSERT_TRUE(watch_->WaitForLog(fmt::format("version {} (event", VersionIn(rotated.output)), 1,
                                 kBound))
      << watch_->Log();
  EXPECT_TRUE(segip_bus->Connected()) << "a rotation alone removes nobody";

  const auto t0 = std::chrono::steady_clock::now();
  const auto revoked =
      Revoke(fmt::format("--serial {} --reason entity_withdrawn", segip.pub.serial));
  ASSERT_EQ(revoked.exit_code, 0) << revoked.output;
  ASSERT_TRUE(WaitFor([&] { return !segip_bus->Connected(); }, kBound))
      << "segip still connected; watch log:\n"
      << watch_->Log();
  const auto bound = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - t0);
  // A figure, not a threshold: from starting `chasqui revoke` (a process that connects, signs
  // and waits for the signed list) to nats-server closing segip's connection.
  std::cout << "[ FIGURE ] chasqui revoke started -> withdrawn entity disconnected: "
            << bound.count() << " ms\n";
  EXPECT_THAT(revoked.output, HasSubstr(fmt::format("certificate {} revoked in test: "
                                                    "entity_withdrawn",
                                                    segip.pub.serial)));
  EXPECT_FALSE(VersionIn(revoked.output).empty()) << revoked.output;
  EXPECT_TRUE(watch_->WaitForLog("removed users: segip.test", 1, kBound)) << watch_->Log();
  EXPECT_THAT(watch_->Log(), HasSubstr("reload signalled to nats-server pid"));

  absl::Status why;
  EXPECT_EQ(Login("segip.test", &why), nullptr);
  EXPECT_EQ(why.code(), absl::StatusCode::kUnauthenticated) << why;
  EXPECT_THAT(ReadFileOrEmpty(Config()), Not(HasSubstr("\"segip.test\"")));

  // Everyone else: still connected, same password, and a new login works.
  EXPECT_TRUE(sin_bus->Connected());
  EXPECT_TRUE(sin_bus->Flush(absl::Seconds(5)).ok());
  EXPECT_EQ(ReadFileOrEmpty(PasswordFile("sin.test")), sin_password);
  EXPECT_NE(Login("sin.test"), nullptr);
  EXPECT_NE(Login("aduana.test"), nullptr) << "an entity that never enrolled keeps its user";
  EXPECT_NE(Login("agetic.test"), nullptr);
}

TEST_F(NatsWatchTest, AnEntityThatOnlyRotatedKeysKeepsItsUser) {
  Identity old_key = Enrol("sin", Role::kEntity);
  Identity new_key = Enrol("sin", Role::kEntity);
  auto sin_bus = Login("sin.test");
  ASSERT_NE(sin_bus, nullptr);
  const std::string config = ReadFileOrEmpty(Config());

  const auto revoked = Revoke(fmt::format("--serial {} --reason superseded", old_key.pub.serial));
  ASSERT_EQ(revoked.exit_code, 0) << revoked.output;
  const std::string version = VersionIn(revoked.output);
  ASSERT_FALSE(version.empty()) << revoked.output;
  ASSERT_TRUE(watch_->WaitForLog(fmt::format("version {} (event", version), 1, kBound))
      << watch_->Log();
  EXPECT_THAT(watch_->Log(), HasSubstr("users withdrawn in test: none (unchanged)"));
  EXPECT_EQ(ReadFileOrEmpty(Config()), config);
  EXPECT_TRUE(sin_bus->Connected());
  EXPECT_NE(Login("sin.test"), nullptr);

  // Even a compromised key with no newer one does not withdraw: sin must enrol again, through
  // its user.
  const auto compromised = Revoke(fmt::format("--serial {} --reason key_compromise",
                                              new_key.pub.serial));
  ASSERT_EQ(compromised.exit_code, 0) << compromised.output;
  ASSERT_TRUE(watch_->WaitForLog(
      fmt::format("version {} (event", VersionIn(compromised.output)), 1, kBound))
      << watch_->Log();
  EXPECT_EQ(ReadFileOrEmpty(Config()), config);
  EXPECT_NE(Login("sin.test"), nullptr);
}

TEST_F(NatsWatchTest, AForgedListChangesNothing) {
  Identity segip = Enrol("segip", Role::kEntity);
  auto segip_bus = Login("segip.test");
  ASSERT_NE(segip_bus, nullptr);
  const std::string config = ReadFileOrEmpty(Config());

  // A list withdrawing segip, signed by a key that is no pinned root but claiming the real
  // root's id, sent on the event subject by the only user that may publish there.
  v1::RevocationListBody body;
  body.set_env("test");
  body.set_version(1000);
  body.set_issued_at_ms(SystemClock().NowUnixMillis());
  body.set_valid_until_ms(SystemClock().NowUnixMillis() + 600'000);
  body.set_issuer_key_id(anchors_.anchors().front().key_id);
  v1::RevokedCertificate* r = body.add_revoked();
  r->set_serial(segip.pub.serial);
  r->set_reason(v1::REVOCATION_REASON_ENTITY_WITHDRAWN);
  r->set_revoked_at_ms(SystemClock().NowUnixMillis());
  const v1::SignedRevocationList forged = SignRevocationList(body, SigningKey::Generate());
  ASSERT_TRUE(crypto_bus_->Publish(kRevokedEventSubject, forged.SerializeAsString()).ok());
  ASSERT_TRUE(crypto_bus_->Publish(kRevokedEventSubject, "not a list at all").ok());

  ASSERT_TRUE(watch_->WaitForLog("revocation list of test (event) refused", 1, kBound))
      << watch_->Log();
  ASSERT_TRUE(watch_->WaitForLog("not a SignedRevocationList", 1, kBound)) << watch_->Log();
  EXPECT_EQ(ReadFileOrEmpty(Config()), config);
  EXPECT_TRUE(segip_bus->Connected());
  EXPECT_TRUE(segip_bus->Flush(absl::Seconds(5)).ok());
  EXPECT_NE(Login("segip.test"), nullptr);
}

// `chasqui-crypto rotate-root` while the watch runs: the lists come signed by a root it was not
// started with; it pins that root once the directory shows it endorsed by the old one, and a
// withdrawal after the rotation still removes the user.
TEST_F(NatsWatchTest, AfterARootRotationAWithdrawalStillRemovesTheUser) {
  Identity segip = Enrol("segip", Role::kEntity);
  service_.reset();
  authority_.reset();
  store_.reset();
  auto rotated = RotateRoot(dir_.File("crypto"), Passphrase("a test passphrase"),
                            Passphrase("the next passphrase"), KdfCost::kTestOnlyMinimum,
                            3650 * kDay, /*overlap_ms=*/3'600'000, SystemClock());
  ASSERT_TRUE(rotated.ok()) << rotated.status();
  auto store = OpenAuthorityStore(dir_.File("crypto"));
  ASSERT_TRUE(store.ok()) << store.status();
  store_ = *std::move(store);
  auto root =
      LoadCurrentRoot(dir_.File("crypto"), store_.get(), Passphrase("the next passphrase"));
  ASSERT_TRUE(root.ok()) << root.status();
  AuthorityOptions ao;
  ao.envs = {"test"};
  ao.revocation_validity_ms = 600'000;
  auto authority = CertificateAuthority::Open(ao, store_.get(), *std::move(root), SystemClock());
  ASSERT_TRUE(authority.ok()) << authority.status();
  authority_ = *std::move(authority);
  auto service = CryptoService::Start(CryptoServiceOptions{}, crypto_bus_.get(), authority_.get(),
                                      std::make_shared<prometheus::Registry>(), SystemClock());
  ASSERT_TRUE(service.ok()) << service.status();
  service_ = *std::move(service);
  ASSERT_TRUE(watch_->WaitForLog("now pinned too", 1, kBound)) << watch_->Log();

  auto segip_bus = Login("segip.test");
  ASSERT_NE(segip_bus, nullptr);
  // olga's certificate was issued by the old root, still valid in the overlap.
  const auto revoked =
      Revoke(fmt::format("--serial {} --reason entity_withdrawn", segip.pub.serial));
  ASSERT_EQ(revoked.exit_code, 0) << revoked.output;
  ASSERT_TRUE(WaitFor([&] { return !segip_bus->Connected(); }, kBound)) << watch_->Log();
  EXPECT_EQ(Login("segip.test"), nullptr);
}

TEST_F(NatsWatchTest, RevokeRefusesNonOperatorsUnknownSerialsAndNoCryptoService) {
  Identity segip = Enrol("segip", Role::kEntity);
  // People who are no operators: agetic's manager (through agetic's user, which may publish
  // the request: the crypto service refuses it) and sin's manager (through sin's user, which
  // may not: nats-server drops it, and the command says which user may).
  auto person = [&](const std::string& entity, const std::string& subject) {
    Identity id = Enrol(entity, Role::kManager, subject);
    EXPECT_TRUE(WriteIdentity(dir_.File(subject + ".key"), id).ok());
    v1::DirectoryRequest req;
    req.set_env("test");
    req.add_serials(id.pub.serial);
    auto reply = authority_->Directory(req.SerializeAsString());
    ASSERT_TRUE(reply.ok() && reply->certificates_size() == 1);
    ASSERT_TRUE(WriteFileDurably(dir_.File(subject + ".cert"),
                                 reply->certificates(0).SerializeAsString(), 0644, false)
                    .ok());
  };
  person("agetic", "maria");
  person("sin", "mario");
  const auto not_operator =
      Revoke(fmt::format("--serial {} --reason entity_withdrawn", segip.pub.serial), "maria.key",
             "maria.cert", "agetic.test");
  EXPECT_EQ(not_operator.exit_code, 1) << not_operator.output;
  EXPECT_THAT(not_operator.output, HasSubstr("revoke refused: PERMISSION_DENIED"));
  EXPECT_THAT(not_operator.output, HasSubstr("only an operator may revoke"));
  const auto not_the_operators_entity =
      Revoke(fmt::format("--serial {} --reason entity_withdrawn", segip.pub.serial), "mario.key",
             "mario.cert", "sin.test");
  EXPECT_EQ(not_the_operators_entity.exit_code, 1) << not_the_operators_entity.output;
  EXPECT_THAT(not_the_operators_entity.output, HasSubstr("revoke refused: DEADLINE_EXCEEDED"));
  EXPECT_THAT(not_the_operators_entity.output, HasSubstr("--operator-entity"));

  const auto unknown = Revoke("--serial 987654321 --reason entity_withdrawn");
  EXPECT_EQ(unknown.exit_code, 1) << unknown.output;
  EXPECT_THAT(unknown.output, HasSubstr("revoke refused: NOT_FOUND"));
  EXPECT_THAT(unknown.output, HasSubstr("987654321"));

  const auto bad_reason = Revoke(fmt::format("--serial {} --reason bored", segip.pub.serial));
  EXPECT_EQ(bad_reason.exit_code, 2) << bad_reason.output;
  EXPECT_THAT(bad_reason.output, HasSubstr("--reason bored: expected key_compromise"));

  // The happy path as JSON: the list's version and the serial with its reason.
  const auto json = Revoke(fmt::format("--serial {} --reason role_ended --json", segip.pub.serial));
  ASSERT_EQ(json.exit_code, 0) << json.output;
  const nlohmann::json j = nlohmann::json::parse(json.output, nullptr, false);
  ASSERT_TRUE(j.is_object()) << json.output;
  EXPECT_EQ(j["env"], "test");
  EXPECT_GE(j["version"].get<uint64_t>(), 2u);
  ASSERT_EQ(j["revoked"].size(), 1u);
  EXPECT_EQ(j["revoked"][0]["serial"].get<uint64_t>(), segip.pub.serial);
  EXPECT_EQ(j["revoked"][0]["reason"], "role_ended");

  // Nobody serves chq.ctl.crypto.revoke: refused at once, saying so.
  service_.reset();
  const auto down = Revoke(fmt::format("--serial {} --reason entity_withdrawn", segip.pub.serial));
  EXPECT_EQ(down.exit_code, 1) << down.output;
  EXPECT_THAT(down.output, HasSubstr("revoke refused: UNAVAILABLE"));
}

}  // namespace
}  // namespace chasqui
