// The chasqui-crypto executable: the ceremony's output, a wrong passphrase refused clearly
// with nothing of the key logged, and a spent token that stays spent across kill -9 of the
// real process (its answer was written synced before it was sent).

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "common/bus/bus.h"
#include "common/core/files.h"
#include "common/core/status.h"
#include "common/trust/anchors.h"
#include "common/trust/certificate.h"
#include "common/trust/crypto_client.h"
#include "fmt/format.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/services/crypto/crypto_test_support.h"
#include "tests/support/child_process.h"
#include "tests/support/nats_server.h"
#include "tests/support/run_command.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait_for.h"

namespace chasqui::testing {
namespace {

const std::string kBin = CHASQUI_CRYPTO_BIN;

// A chasqui-crypto child whose output goes to `log_path`; SIGKILLed on destruction.
void WriteSecretFile(const std::string& path, const std::string& text) {
  std::ofstream(path) << text << "\n";
  ::chmod(path.c_str(), 0600);
}

std::string TokenFrom(const std::string& output) {
  std::smatch m;
  return std::regex_search(output, m, std::regex("token: ([0-9a-f]{64})")) ? m[1].str() : "";
}

TEST(CryptoMain, InitPrintsWhatToPinAndHowToBackUp) {
  TempDir dir;
  WriteSecretFile(dir.File("pass"), "ceremony passphrase 1");
  const std::string data = dir.File("data");
  auto out = RunCommand(fmt::format("timeout 30 {} init --data {} --passphrase-file {} --kdf "
                                    "test-minimum",
                                    kBin, data, dir.File("pass")));
  ASSERT_EQ(out.exit_code, 0) << out.output;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(out.output, m, std::regex("root key id: +([0-9a-f]{16})")))
      << out.output;
  EXPECT_NE(out.output.find("Back up now"), std::string::npos);
  auto anchors = LoadTrustAnchors(data + "/roots.json");
  ASSERT_TRUE(anchors.ok()) << anchors.status();
  ASSERT_NE(anchors->Find(m[1].str()), nullptr);
  struct stat st;
  ASSERT_EQ(::stat((data + "/root-" + m[1].str() + ".key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  // A second init on the same directory is refused.
  auto again = RunCommand(fmt::format("timeout 30 {} init --data {} --passphrase-file {} --kdf "
                                      "test-minimum",
                                      kBin, data, dir.File("pass")));
  EXPECT_EQ(again.exit_code, 2);
  EXPECT_NE(again.output.find("already has root"), std::string::npos) << again.output;
}

TEST(CryptoMain, WrongPassphraseRefusedClearlyAndNothingOfTheKeyLogged) {
  TempDir dir;
  WriteSecretFile(dir.File("pass"), "the right passphrase");
  WriteSecretFile(dir.File("wrong"), "not the passphrase");
  const std::string data = dir.File("data");
  auto init = RunCommand(fmt::format("timeout 30 {} init --data {} --passphrase-file {} --kdf "
                                     "test-minimum",
                                     kBin, data, dir.File("pass")));
  ASSERT_EQ(init.exit_code, 0) << init.output;
  auto out = RunCommand(fmt::format("timeout 30 {} serve --data {} --passphrase-file {} --nats "
                                    "nats://127.0.0.1:1",
                                    kBin, data, dir.File("wrong")));
  EXPECT_EQ(out.exit_code, 2) << out.output;
  EXPECT_NE(out.output.find("wrong passphrase"), std::string::npos) << out.output;
  // Neither passphrase, nor the sealed key, nor its salt appear anywhere in what it printed.
  EXPECT_EQ(out.output.find("not the passphrase"), std::string::npos);
  EXPECT_EQ(out.output.find("the right passphrase"), std::string::npos);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(init.output, m, std::regex("root key id: +([0-9a-f]{16})")));
  auto key_file = nlohmann::json::parse(ReadFileOrEmpty(data + "/root-" + m[1].str() + ".key"));
  for (const char* field : {"box", "salt", "nonce"}) {
    const std::string value = key_file[field].get<std::string>();
    EXPECT_EQ(out.output.find(value), std::string::npos) << field;
    EXPECT_EQ(init.output.find(value), std::string::npos) << field;
  }

  // A passphrase file others can read is refused before it is used.
  ::chmod(dir.File("pass").c_str(), 0644);
  auto open = RunCommand(fmt::format("timeout 30 {} serve --data {} --passphrase-file {}", kBin,
                                     data, dir.File("pass")));
  EXPECT_EQ(open.exit_code, 2);
  EXPECT_NE(open.output.find("mode 0600"), std::string::npos) << open.output;
}

TEST(CryptoMain, SpentTokenSurvivesKillDashNine) {
  TempDir dir;
  WriteSecretFile(dir.File("pass"), "kill nine passphrase");
  const std::string data = dir.File("data");
  ASSERT_EQ(RunCommand(fmt::format("timeout 30 {} init --data {} --passphrase-file {} --kdf "
                                   "test-minimum",
                                   kBin, data, dir.File("pass")))
                .exit_code,
            0);
  auto token_out = RunCommand(fmt::format(
      "timeout 30 {} token --data {} --entity segip --role entity --env test", kBin, data));
  ASSERT_EQ(token_out.exit_code, 0) << token_out.output;
  const std::string token = TokenFrom(token_out.output);
  ASSERT_FALSE(token.empty()) << token_out.output;
  EXPECT_EQ(token_out.output.find(token), token_out.output.rfind(token));  // shown once

  auto nats = NatsServer::Start();
  ASSERT_TRUE(nats.ok()) << nats.status();
  const std::vector<std::string> args = {"serve",        "--data",   data, "--passphrase-file",
                                         dir.File("pass"), "--nats", (*nats)->url(),
                                         "--tick-ms",    "100"};
  auto anchors = LoadTrustAnchors(data + "/roots.json");
  ASSERT_TRUE(anchors.ok());

  BusOptions bo;
  bo.url = (*nats)->url();
  bo.name = "test-client";
  auto bus = Bus::Connect(bo);
  ASSERT_TRUE(bus.ok()) << bus.status();
  auto client = CryptoClient::Create(bus->get(), "_INBOX.test.kill9");
  ASSERT_TRUE(client.ok()) << client.status();
  auto now = [] { return SystemClock().NowUnixMillis(); };

  {
    TestProcess crypto(kBin, args, dir.File("crypto1.log"));
    ASSERT_TRUE(crypto.WaitForLog("ready: ops port")) << crypto.Log();
    Requester segip;
    auto reply = (*client)->Enrol(MakeEnrolmentRequest(
        EnrolmentBody(segip, token, "segip", v1::CERTIFICATE_ROLE_ENTITY, "test", now()),
        segip.sign));
    ASSERT_TRUE(reply.ok()) << reply.status();
    ASSERT_TRUE(VerifyCertificate(reply->certificate(), *anchors, "test", now()).ok());

    // A token issued while the service runs goes through the spool.
    auto spooled = RunCommand(fmt::format(
        "timeout 30 {} token --data {} --entity sin --role entity --env test", kBin, data));
    ASSERT_EQ(spooled.exit_code, 0) << spooled.output;
    Requester sin;
    auto sin_reply = (*client)->Enrol(MakeEnrolmentRequest(
        EnrolmentBody(sin, TokenFrom(spooled.output), "sin", v1::CERTIFICATE_ROLE_ENTITY, "test",
                      now()),
        sin.sign));
    ASSERT_TRUE(sin_reply.ok()) << sin_reply.status();
    EXPECT_EQ(crypto.Log().find(token), std::string::npos) << "the token was logged";
    crypto.Kill9();
  }

  TestProcess restarted(kBin, args, dir.File("crypto2.log"));
  ASSERT_TRUE(restarted.WaitForLog("ready: ops port")) << restarted.Log();
  Requester thief;
  auto again = (*client)->Enrol(MakeEnrolmentRequest(
      EnrolmentBody(thief, token, "segip", v1::CERTIFICATE_ROLE_ENTITY, "test", now()),
      thief.sign));
  EXPECT_TRUE(absl::IsPermissionDenied(again.status())) << again.status();
  EXPECT_NE(std::string(MessageOf(again.status())).find("already used"), std::string::npos);

  // The directory still lists both certificates issued before the kill.
  v1::DirectoryRequest req;
  req.set_env("test");
  req.set_log_limit(10);
  auto listed = (*client)->Directory(req);
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->log_entries_size(), 2);
}

}  // namespace
}  // namespace chasqui::testing
