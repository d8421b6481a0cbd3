// The router binary refuses to start on a missing or malformed key or trust file, with one
// line naming the file, the field and what was expected, and exit status 2.

#include <sys/stat.h>
#include <sys/wait.h>

#include <fstream>
#include <string>

#include "common/envelope/identity.h"
#include "gtest/gtest.h"
#include "tests/support/run_command.h"
#include "tests/support/temp_dir.h"

namespace chasqui::testing {
namespace {

using Outcome = CommandOutcome;

// Runs the router with `args`; it must stop by itself (it never reaches NATS here).
Outcome RunRouter(const std::string& args) {
  return RunCommand(std::string("timeout 10 ") + CHASQUI_ROUTER_BIN + " " + args);
}

class RouterConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Identity router = GenerateIdentity("router", "test", Role::kRouter);
    ASSERT_TRUE(WriteIdentity(dir_.File("router.key"), router).ok());
    pub_ = router.pub;
  }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_.File(name)) << text;
  }
  std::string Args(const std::string& trust) {
    return "--env test --nats nats://127.0.0.1:1 --key " + dir_.File("router.key") +
           " --trust " + dir_.File(trust);
  }

  TempDir dir_;
  PublicIdentity pub_;
};

TEST_F(RouterConfigTest, MissingTrustFileNamesTheFile) {
  Outcome o = RunRouter(Args("nope.json"));
  EXPECT_EQ(o.exit_code, 2) << o.output;
  EXPECT_NE(o.output.find("cannot read trust file " + dir_.File("nope.json")), std::string::npos)
      << o.output;
}

TEST_F(RouterConfigTest, TrustFileThatIsNotJsonSaysSo) {
  Write("trust.json", "{\"version\": 1, \"identities\": [");
  Outcome o = RunRouter(Args("trust.json"));
  EXPECT_EQ(o.exit_code, 2) << o.output;
  EXPECT_NE(o.output.find("trust.json: not valid JSON"), std::string::npos) << o.output;
}

TEST_F(RouterConfigTest, BadFieldNamesTheEntryTheFieldAndWhatWasExpected) {
  std::string entry = PublicIdentityJson(pub_);
  const std::string key = "\"sign_pk\": \"";
  entry.replace(entry.find(key) + key.size(), 8, "!!!!!!!!");  // no longer base64
  Write("trust.json", "{\"version\": 1, \"identities\": [" + entry + "]}");
  Outcome o = RunRouter(Args("trust.json"));
  EXPECT_EQ(o.exit_code, 2) << o.output;
  EXPECT_NE(o.output.find("identities[0]: field \"sign_pk\": expected base64 of 32 bytes"),
            std::string::npos)
      << o.output;
}

TEST_F(RouterConfigTest, UnreachableNatsStopsTheRouterWithTheUrl) {
  Write("trust.json", TrustFileJson({pub_}));
  Outcome o = RunRouter(Args("trust.json"));
  EXPECT_EQ(o.exit_code, 2) << o.output;
  EXPECT_NE(o.output.find("nats://127.0.0.1:1"), std::string::npos) << o.output;
}

TEST_F(RouterConfigTest, AnEntityKeyIsNotARouterKey) {
  Identity entity = GenerateIdentity("segip", "test", Role::kEntity);
  ASSERT_TRUE(WriteIdentity(dir_.File("segip.key"), entity).ok());
  Write("trust.json", TrustFileJson({pub_, entity.pub}));
  Outcome o = RunRouter("--env test --nats nats://127.0.0.1:1 --key " + dir_.File("segip.key") +
                        " --trust " + dir_.File("trust.json"));
  EXPECT_EQ(o.exit_code, 2) << o.output;
  EXPECT_NE(o.output.find("key file"), std::string::npos) << o.output;
}

}  // namespace
}  // namespace chasqui::testing

namespace chasqui::testing {
namespace {

TEST_F(RouterConfigTest, APasswordFileOthersCanReadIsRefused) {
  Write("trust.json", TrustFileJson({pub_}));
  Write("router.password", "0123456789abcdef");
  ASSERT_EQ(::chmod(dir_.File("router.password").c_str(), 0644), 0);
  Outcome o = RunRouter(Args("trust.json") + " --nats-user router.test --nats-password-file " +
                        dir_.File("router.password"));
  EXPECT_EQ(o.exit_code, 2) << o.output;
  EXPECT_NE(o.output.find("chmod 600"), std::string::npos) << o.output;
  EXPECT_EQ(o.output.find("0123456789abcdef"), std::string::npos) << "the password was printed";
}

TEST_F(RouterConfigTest, APasswordFileWithoutAUserIsRefused) {
  Write("trust.json", TrustFileJson({pub_}));
  Write("router.password", "0123456789abcdef");
  ASSERT_EQ(::chmod(dir_.File("router.password").c_str(), 0600), 0);
  Outcome o = RunRouter(Args("trust.json") + " --nats-password-file " +
                        dir_.File("router.password"));
  EXPECT_EQ(o.exit_code, 2) << o.output;
  EXPECT_NE(o.output.find("needs --nats-user"), std::string::npos) << o.output;
}

}  // namespace
}  // namespace chasqui::testing
