// `chasqui nats-config` end to end: the binary writes a TLS-only configuration from
// deploy/tls-ca.sh's files, a real nats-server runs it, and a user logs in over TLS with its
// password file and the CA; without the TLS flags the configuration has no tls block; half the
// TLS flags write nothing.

#include <sys/stat.h>

#include <string>

#include "common/bus/bus.h"
#include "common/core/files.h"
#include "common/core/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/nats_server.h"
#include "tests/support/run_command.h"
#include "tests/support/temp_dir.h"

namespace chasqui {
namespace {

using ::chasqui::testing::MakeTestTls;
using ::chasqui::testing::NatsServer;
using ::chasqui::testing::RunCommand;
using ::chasqui::testing::TempDir;
using ::testing::HasSubstr;
using ::testing::Not;

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

std::string NatsConfigCommand(const TempDir& dir, const std::string& out, const std::string& extra) {
  return "timeout 60 " CHASQUI_BIN " nats-config --env test --router --entity sin --bcrypt-cost 4 "
         "--listen 127.0.0.1:4222 --out " + dir.File(out) + " --secrets-dir " +
         dir.File(out + ".secrets") + " " + extra;
}

TEST(NatsConfigCliTest, TlsFlagsMakeATlsOnlyServerThatTheCaOpens) {
  TempDir dir;
  auto tls = MakeTestTls(dir.File("tls"));
  ASSERT_TRUE(tls.ok()) << tls.status();
  const auto run = RunCommand(NatsConfigCommand(
      dir, "nats.conf", "--tls-cert " + tls->cert_file + " --tls-key " + tls->key_file));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_THAT(run.output, HasSubstr("TLS only"));
  const std::string text = ReadFileOrEmpty(dir.File("nats.conf"));
  EXPECT_THAT(text, HasSubstr("cert_file: \"" + tls->cert_file + "\""));
  EXPECT_THAT(text, HasSubstr("key_file: \"" + tls->key_file + "\""));
  EXPECT_THAT(run.output + text, Not(HasSubstr("PRIVATE KEY")));

  auto server = NatsServer::StartTlsConfig(dir.File("nats.conf"));
  ASSERT_TRUE(server.ok()) << server.status();
  BusOptions options;
  options.url = (*server)->url();
  options.name = "cli-tls";
  options.user = "sin.test";
  options.ca_file = tls->ca_file;
  options.max_reconnect = 0;
  auto bus = ConnectWithPasswordFile(options, dir.File("nats.conf.secrets/sin.test.password"));
  ASSERT_TRUE(bus.ok()) << bus.status();
  EXPECT_TRUE((*bus)->Flush(absl::Seconds(5)).ok());

  // The same login without the CA is refused, naming the flag.
  options.ca_file.clear();
  auto plain = ConnectWithPasswordFile(options, dir.File("nats.conf.secrets/sin.test.password"));
  ASSERT_FALSE(plain.ok());
  EXPECT_THAT(std::string(MessageOf(plain.status())), HasSubstr("--nats-ca"));
}

TEST(NatsConfigCliTest, WithoutTlsFlagsThereIsNoTlsBlock) {
  TempDir dir;
  const auto run = RunCommand(NatsConfigCommand(dir, "plain.conf", ""));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_THAT(run.output, Not(HasSubstr("TLS")));
  const std::string text = ReadFileOrEmpty(dir.File("plain.conf"));
  EXPECT_THAT(text, HasSubstr("authorization {"));
  EXPECT_THAT(text, Not(HasSubstr("tls")));
}

TEST(NatsConfigCliTest, HalfTheTlsFlagsWriteNothing) {
  TempDir dir;
  auto tls = MakeTestTls(dir.File("tls"));
  ASSERT_TRUE(tls.ok()) << tls.status();
  auto run = RunCommand(NatsConfigCommand(dir, "half.conf", "--tls-cert " + tls->cert_file));
  EXPECT_EQ(run.exit_code, 2) << run.output;
  EXPECT_THAT(run.output, HasSubstr("--tls-key"));
  run = RunCommand(NatsConfigCommand(dir, "missing.conf", "--tls-cert " + dir.File("nope.crt") +
                                                              " --tls-key " + tls->key_file));
  EXPECT_EQ(run.exit_code, 2) << run.output;
  EXPECT_THAT(run.output, HasSubstr("nope.crt"));
  EXPECT_FALSE(Exists(dir.File("half.conf")));
  EXPECT_FALSE(Exists(dir.File("half.conf.secrets")));
  EXPECT_FALSE(Exists(dir.File("missing.conf")));
}

// Adding an entity to a running bus: --keep-passwords rewrites the configuration, keeps every
// existing password file byte for byte and makes one only for the new user.
TEST(NatsConfigCliTest, KeepPasswordsRewritesTheConfigWithoutChangingAnyonesPassword) {
  TempDir dir;
  ASSERT_EQ(RunCommand(NatsConfigCommand(dir, "nats.conf", "")).exit_code, 0);
  const std::string sin = ReadFileOrEmpty(dir.File("nats.conf.secrets/sin.test.password"));
  const std::string router = ReadFileOrEmpty(dir.File("nats.conf.secrets/router.test.password"));
  ASSERT_FALSE(sin.empty());

  // Without a mode the existing files are refused, naming both ways out.
  const auto refused = RunCommand(NatsConfigCommand(dir, "nats.conf", "--entity segip"));
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_THAT(refused.output, HasSubstr("--keep-passwords"));
  const auto both = RunCommand(NatsConfigCommand(dir, "nats.conf", "--force --keep-passwords"));
  EXPECT_EQ(both.exit_code, 2) << both.output;
  EXPECT_THAT(both.output, HasSubstr("choose one"));

  const auto kept = RunCommand(NatsConfigCommand(dir, "nats.conf", "--entity segip --keep-passwords"));
  ASSERT_EQ(kept.exit_code, 0) << kept.output;
  EXPECT_THAT(kept.output, HasSubstr("sin.test.password (kept)"));
  EXPECT_THAT(kept.output, HasSubstr("segip.test.password (new)"));
  EXPECT_EQ(ReadFileOrEmpty(dir.File("nats.conf.secrets/sin.test.password")), sin);
  EXPECT_EQ(ReadFileOrEmpty(dir.File("nats.conf.secrets/router.test.password")), router);
  EXPECT_THAT(ReadFileOrEmpty(dir.File("nats.conf")), HasSubstr("user: \"segip.test\""));

  // And the kept password still logs in under the rewritten configuration.
  auto server = NatsServer::Start({"-c", dir.File("nats.conf")});
  ASSERT_TRUE(server.ok()) << server.status();
  BusOptions options;
  options.url = (*server)->url();
  options.name = "cli-kept";
  options.user = "sin.test";
  options.max_reconnect = 0;
  auto bus = ConnectWithPasswordFile(options, dir.File("nats.conf.secrets/sin.test.password"));
  EXPECT_TRUE(bus.ok()) << bus.status();
}

}  // namespace
}  // namespace chasqui
