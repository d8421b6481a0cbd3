// The chasqui-catalog executable with real parts all the way: a real nats-server, the real
// crypto service (in this process, its root made by the real ceremony) issuing the
// catalog's and the operator's certificates, `chasqui-catalog init` and `enrol` as a person
// would run them, and `serve` as a child process. A change acknowledged before kill -9 is
// there after the restart, and its request stays a replay.

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "common/bus/bus.h"
#include "common/core/files.h"
#include "common/core/status.h"
#include "common/trust/anchors.h"
#include "common/trust/directory.h"
#include "common/trust/requests.h"
#include "fmt/format.h"
#include "gtest/gtest.h"
#include "services/catalog/catalog_client.h"
#include "services/catalog/catalog_signing.h"
#include "services/crypto/authority.h"
#include "services/crypto/ceremony.h"
#include "services/crypto/crypto_service.h"
#include "tests/services/catalog/catalog_test_support.h"
#include "tests/services/crypto/crypto_test_support.h"
#include "tests/support/child_process.h"
#include "tests/support/nats_server.h"
#include "tests/support/run_command.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait_for.h"

namespace chasqui::testing {
namespace {

const std::string kBin = CHASQUI_CATALOG_BIN;

void WriteSecretFile(const std::string& path, const std::string& text) {
  std::ofstream(path) << text << "\n";
  ::chmod(path.c_str(), 0600);
}

TEST(CatalogMain, AcknowledgedChangeSurvivesKill9AndItsRequestStaysAReplay) {
  TempDir dir;
  const Clock& clock = SystemClock();
  auto nats = NatsServer::Start();
  ASSERT_TRUE(nats.ok()) << nats.status();

  // The crypto service, as `chasqui-crypto init` + `serve` would run it.
  const std::string crypto_data = dir.File("crypto");
  Passphrase pass("crypto test passphrase");
  auto init = InitRoot(crypto_data, pass, KdfCost::kTestOnlyMinimum, 3650 * kDayMs, clock);
  ASSERT_TRUE(init.ok()) << init.status();
  auto crypto_store = OpenAuthorityStore(crypto_data);
  ASSERT_TRUE(crypto_store.ok()) << crypto_store.status();
  auto token = [&](const std::string& entity, const std::string& role, const std::string& env,
                   const std::string& subject) {
    auto t = MakeEnrolmentToken(entity, subject, role, env, 3'600'000, clock);
    EXPECT_TRUE(t.ok()) << t.status();
    EXPECT_TRUE(StoreToken(crypto_store->get(), *t).ok());
    return t->token;
  };
  const std::string catalog_token = token("catalog", "catalog", "test", "");
  const std::string operator_token = token("agetic", "operator", "test", "ana");
  auto root = LoadCurrentRoot(crypto_data, crypto_store->get(), pass);
  ASSERT_TRUE(root.ok()) << root.status();
  auto authority =
      CertificateAuthority::Open({}, crypto_store->get(), *std::move(root), clock);
  ASSERT_TRUE(authority.ok()) << authority.status();
  BusOptions bo;
  bo.url = (*nats)->url();
  bo.send_asap = true;
  auto crypto_bus = Bus::Connect(bo);
  ASSERT_TRUE(crypto_bus.ok()) << crypto_bus.status();
  auto crypto = CryptoService::Start({}, crypto_bus->get(), authority->get(),
                                     std::make_shared<prometheus::Registry>(), clock);
  ASSERT_TRUE(crypto.ok()) << crypto.status();

  // The operator enrols with her own key.
  Requester ana;
  auto enrolled = (*authority)->Enrol(
      MakeEnrolmentRequest(EnrolmentBody(ana, operator_token, "agetic",
                                         v1::CERTIFICATE_ROLE_OPERATOR, "test",
                                         clock.NowUnixMillis(), "ana"),
                           ana.sign)
          .SerializeAsString());
  ASSERT_TRUE(enrolled.ok()) << enrolled.status();
  v1::CertificateBody ana_body;
  ASSERT_TRUE(ana_body.ParseFromString(enrolled->certificate().body()));
  ana.serial = ana_body.serial();

  // The catalog's ceremony: init, then enrol in test.
  const std::string data = dir.File("catalog");
  WriteSecretFile(dir.File("pass"), "catalog key passphrase");
  std::ofstream(dir.File("nta.txt")) << kNtaText;
  auto out = RunCommand(fmt::format("timeout 30 {} init --data {} --passphrase-file {} --kdf "
                                    "test-minimum",
                                    kBin, data, dir.File("pass")));
  ASSERT_EQ(out.exit_code, 0) << out.output;
  out = RunCommand(fmt::format("timeout 30 {} enrol --data {} --passphrase-file {} --env test "
                               "--token {} --nats {}",
                               kBin, data, dir.File("pass"), catalog_token, (*nats)->url()));
  ASSERT_EQ(out.exit_code, 0) << out.output;
  EXPECT_EQ(out.output.find(catalog_token), std::string::npos) << "the token was printed";

  const std::vector<std::string> serve = {
      "serve", "--data", data, "--passphrase-file", dir.File("pass"), "--anchors",
      init->anchors_file, "--nta-file", dir.File("nta.txt"), "--env", "test", "--nats",
      (*nats)->url(), "--ops-port", "0"};
  auto process = std::make_unique<TestProcess>(kBin, serve, dir.File("catalog.log"));
  ASSERT_TRUE(process->WaitForLog("ready: ops port", 1, std::chrono::seconds(20))) << process->Log();

  bo.name = "operator";
  auto bus = Bus::Connect(bo);
  ASSERT_TRUE(bus.ok()) << bus.status();
  auto client = CatalogClient::Create(bus->get(), "_INBOX.test.agetic.cli");
  ASSERT_TRUE(client.ok()) << client.status();
  const v1::ControlRequest request = MakeCatalogRequest(RegisterEntity("segip", "SEGIP"), "test",
                                                        ana.serial, ana.sign,
                                                        clock.NowUnixMillis());
  auto reply = (*client)->Change("register_entity", request);
  ASSERT_TRUE(reply.ok()) << reply.status() << "\n" << process->Log();
  EXPECT_EQ(reply->version(), 1u);

  process->Kill9();
  process = std::make_unique<TestProcess>(kBin, serve, dir.File("catalog.log"));
  ASSERT_TRUE(process->WaitForLog("ready: ops port", 2, std::chrono::seconds(20))) << process->Log();
  EXPECT_NE(process->Log().find("catalog loaded: version=1"), std::string::npos) << process->Log();

  // The snapshot after the restart holds the change, signed by the catalog's certificate.
  auto anchors = LoadTrustAnchors(init->anchors_file);
  ASSERT_TRUE(anchors.ok());
  CertificateDirectory directory("test", *anchors);
  for (const auto& l : (*authority)->CurrentLists()) {
    (void)directory.ApplyRevocationList(l.SerializeAsString(), clock.NowUnixMillis());
  }
  auto catalog_cert = ReadFileToString(data + "/certificate-test.pb", "certificate");
  ASSERT_TRUE(catalog_cert.ok());
  ASSERT_TRUE(directory.AddCertificates({*catalog_cert}, clock.NowUnixMillis()).ok());
  DirectoryLookup lookup({{"test", &directory}});
  auto snapshot = (*client)->Snapshot();
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  auto verified = VerifyCatalogSnapshot(*snapshot, "test", lookup, clock.NowUnixMillis());
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(verified->version(), 1u);
  ASSERT_EQ(verified->entities_size(), 1);
  EXPECT_EQ(verified->entities(0).id(), "segip");

  auto replay = (*client)->Change("register_entity", request);
  EXPECT_TRUE(absl::IsAlreadyExists(replay.status())) << replay.status();
  auto next = (*client)->Change("register_entity",
                                MakeCatalogRequest(RegisterEntity("sin", "SIN"), "test",
                                                   ana.serial, ana.sign, clock.NowUnixMillis()));
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->version(), 2u);
  // Nothing secret in the logs: no passphrase, no token.
  EXPECT_EQ(process->Log().find("catalog key passphrase"), std::string::npos);
  EXPECT_EQ(process->Log().find(catalog_token), std::string::npos);
  process->Kill9();
  crypto->reset();
}

}  // namespace
}  // namespace chasqui::testing
