// The chasqui-gateway binary: two real processes (sin's consumer gateway and segip's provider
// gateway) over a real backbone, started with the commands the README shows, stopped with
// SIGTERM; and each malformed configuration stopping it at start with one line and exit 2.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "common/core/files.h"
#include "common/envelope/identity.h"
#include "gtest/gtest.h"
#include "tests/services/gateway/gateway_test_support.h"
#include "tests/services/router/backbone.h"
#include "tests/support/child_process.h"
#include "tests/support/run_command.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait_for.h"

namespace chasqui::testing {
namespace {

// A chasqui-gateway child process (tests/support/child_process.h).
class GatewayProcess : public TestProcess {
 public:
  GatewayProcess(const std::vector<std::string>& args, std::string log_path)
      : TestProcess(CHASQUI_GATEWAY_BIN, args, std::move(log_path)) {}
  std::optional<std::string> WaitForLog(const std::regex& re) const {
    return WaitForLogMatch(re, std::chrono::seconds(10));
  }
};

int PortFrom(const std::optional<std::string>& s) { return s ? std::stoi(*s) : -1; }

TEST(GatewayBinaryTest, ConsumerAndProviderGatewaysServeAndStopOnSigterm) {
  Backbone bb({.start_provider = false});
  TempDir dir;
  ASSERT_TRUE(WriteIdentity(dir.File("sin.test.key"), bb.sin).ok());
  ASSERT_TRUE(WriteIdentity(dir.File("segip.test.key"), bb.segip).ok());
  std::ofstream(dir.File("trust.json"))
      << TrustFileJson({bb.sin.pub, bb.aduana.pub, bb.segip.pub, bb.router_key.pub});
  std::ofstream(dir.File("api.key")) << "  s3cret-api-key-of-sin\n";
  UpstreamSystem segip_system([](const httplib::Request& req, httplib::Response& res) {
    res.set_content("{\"nombre\":\"ANA\",\"pedido\":" + req.body + "}", "application/json");
  });

  GatewayProcess provider({"--env", "test", "--nats", bb.nats->url(), "--key",
                           dir.File("segip.test.key"), "--trust", dir.File("trust.json"),
                           "--listen", "127.0.0.1:0", "--ops-port", "0", "--serve",
                           "persona_consulta=" + segip_system.Url("/persona")},
                          dir.File("provider.log"));
  ASSERT_TRUE(provider.WaitForLog(std::regex("gateway segip env=test listening")))
      << provider.Log();
  GatewayProcess consumer({"--env", "test", "--nats", bb.nats->url(), "--key",
                           dir.File("sin.test.key"), "--trust", dir.File("trust.json"),
                           "--listen", "127.0.0.1:0", "--ops-port", "0", "--api-key-file",
                           dir.File("api.key")},
                          dir.File("consumer.log"));
  const int port = PortFrom(consumer.WaitForLog(
      std::regex(R"(gateway sin env=test listening on http://127\.0\.0\.1:(\d+))")));
  ASSERT_GT(port, 0) << consumer.Log();
  const int ops_port =
      PortFrom(consumer.WaitForLog(std::regex(R"(ops listening on http://127\.0\.0\.1:(\d+))")));
  ASSERT_GT(ops_port, 0) << consumer.Log();

  HttpReply r = Send(port, "POST", "/v1/segip/persona_consulta", R"({"ci":"4567890"})",
                     {{"X-Chasqui-End-User", "ana.perez"},
                      {"Authorization", "Bearer s3cret-api-key-of-sin"}});
  EXPECT_EQ(r.status, 200) << r.error << " " << r.body << "\n" << consumer.Log() << provider.Log();
  EXPECT_EQ(r.body, R"({"nombre":"ANA","pedido":{"ci":"4567890"}})");
  EXPECT_EQ(segip_system.Last().Header("X-Chasqui-Request-Id"), r.Header("X-Chasqui-Request-Id"));
  HttpReply unauthorized = Send(port, "POST", "/v1/segip/persona_consulta", "{}",
                                {{"X-Chasqui-End-User", "ana.perez"}});
  EXPECT_EQ(unauthorized.status, 401);

  HttpReply ready = Send(ops_port, "GET", "/readyz", "", {});
  EXPECT_EQ(ready.status, 200) << ready.body;
  HttpReply metrics = Send(ops_port, "GET", "/metrics", "", {});
  EXPECT_NE(metrics.body.find("chasqui_gateway_requests_total{code=\"OK\",direction=\"consume\","
                              "env=\"test\",provider=\"segip\",service=\"persona_consulta\"} 1"),
            std::string::npos)
      << metrics.body;

  EXPECT_EQ(consumer.Terminate(), 0) << consumer.Log();
  EXPECT_EQ(provider.Terminate(), 0) << provider.Log();
  EXPECT_EQ(consumer.Log().find("s3cret-api-key"), std::string::npos) << "the key was logged";
  EXPECT_NE(consumer.Log().find("refused POST /v1/segip/persona_consulta"), std::string::npos)
      << consumer.Log();
}

using Outcome = CommandOutcome;

Outcome RunGateway(const std::string& args) {
  return RunCommand(std::string("timeout 10 ") + CHASQUI_GATEWAY_BIN + " " + args);
}

class GatewayConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Identity sin = GenerateIdentity("sin", "test", Role::kEntity);
    Identity router = GenerateIdentity("router", "test", Role::kRouter);
    ASSERT_TRUE(WriteIdentity(dir_.File("sin.key"), sin).ok());
    ASSERT_TRUE(WriteIdentity(dir_.File("router.key"), router).ok());
    std::ofstream(dir_.File("trust.json")) << TrustFileJson({sin.pub, router.pub});
  }
  std::string Args(const std::string& key = "sin.key") {
    return "--env test --nats nats://127.0.0.1:1 --key " + dir_.File(key) + " --trust " +
           dir_.File("trust.json") + " ";
  }
  void ExpectStops(const std::string& args, const std::string& says) {
    Outcome o = RunGateway(args);
    EXPECT_EQ(o.exit_code, 2) << o.output;
    EXPECT_NE(o.output.find(says), std::string::npos) << o.output;
  }

  TempDir dir_;
};

TEST_F(GatewayConfigTest, MalformedServeSaysWhatWasExpected) {
  ExpectStops(Args() + "--serve persona_consulta", "expected SERVICE=URL");
  ExpectStops(Args() + "--serve persona_consulta=ftp://h/x",
              "expected http://HOST[:PORT][/PATH]");
}

TEST_F(GatewayConfigTest, MalformedListenSaysWhatWasExpected) {
  ExpectStops(Args() + "--listen 8080", "--listen \"8080\": expected HOST:PORT");
}

TEST_F(GatewayConfigTest, BodyLimitAtOrAboveNatsPayloadIsRefused) {
  ExpectStops(Args() + "--max-body-bytes 1048576", "--max-body-bytes 1048576: expected 1 to");
}

TEST_F(GatewayConfigTest, MissingKeyFileNamesTheFile) {
  ExpectStops(Args("nope.key"), dir_.File("nope.key"));
}

TEST_F(GatewayConfigTest, RouterKeyIsNotAGatewayKey) {
  ExpectStops(Args("router.key"), "expected an entity key for test");
}

TEST_F(GatewayConfigTest, EmptyApiKeyFileIsRefused) {
  std::ofstream(dir_.File("empty.key")) << " \n";
  ExpectStops(Args() + "--api-key-file " + dir_.File("empty.key"), "is empty");
  ExpectStops(Args() + "--api-key-file " + dir_.File("absent.key"), dir_.File("absent.key"));
}

TEST_F(GatewayConfigTest, NextKeyOfARotationIsCheckedBeforeAnythingStarts) {
  Identity other = GenerateIdentity("segip", "test", Role::kEntity);
  Identity prod = GenerateIdentity("sin", "prod", Role::kEntity);
  ASSERT_TRUE(WriteIdentity(dir_.File("segip.key"), other).ok());
  ASSERT_TRUE(WriteIdentity(dir_.File("sin.prod.key"), prod).ok());
  const std::string serve = "--serve persona_consulta=http://127.0.0.1:1/x ";
  ExpectStops(Args() + serve + "--next-key " + dir_.File("segip.key"),
              "expected sin's next entity key for test");
  ExpectStops(Args() + serve + "--next-key " + dir_.File("sin.prod.key"),
              "expected sin's next entity key for test");
  ExpectStops(Args() + serve + "--next-key " + dir_.File("sin.key"), "is the --key's own");
  ExpectStops(Args() + serve + "--next-key " + dir_.File("absent.key"), dir_.File("absent.key"));
  ExpectStops(Args() + "--next-key " + dir_.File("sin.key"),
              "only the provider side uses it");
  ExpectStops(Args() + serve + "--next-cert " + dir_.File("sin.key"), "give the key too");
  ExpectStops(Args() + serve + "--next-key " + dir_.File("segip.key") + " --next-cert " +
                  dir_.File("segip.key"),
              "certificates need --roots");
}

TEST_F(GatewayConfigTest, MissingEnvIsRefused) {
  Outcome o = RunGateway("--key " + dir_.File("sin.key") + " --trust " + dir_.File("trust.json"));
  EXPECT_EQ(o.exit_code, 2) << o.output;
  EXPECT_NE(o.output.find("--env"), std::string::npos) << o.output;
}

}  // namespace
}  // namespace chasqui::testing
