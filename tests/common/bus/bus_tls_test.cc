// The bus over TLS against a real TLS-only nats-server whose certificate a throwaway CA signed
// (deploy/tls-ca.sh): the right CA connects and exchanges; a plain client, a client trusting
// another CA, and a TLS client at a plain server are each refused with one line that names the
// cause and the flag, well within the connect timeout (no hang).

#include <atomic>
#include <chrono>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/bus/bus.h"
#include "common/bus/nats_config.h"
#include "common/core/files.h"
#include "common/core/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/nats_server.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait_for.h"

namespace chasqui {
namespace {

using ::chasqui::testing::MakeTestTls;
using ::chasqui::testing::NatsServer;
using ::chasqui::testing::TempDir;
using ::chasqui::testing::TestTls;
using ::chasqui::testing::WaitFor;
using ::testing::HasSubstr;
using ::testing::Not;

// Bounds the refusals: a handshake that hung would run to the test's own timeout instead.
constexpr auto kRefusalBound = std::chrono::seconds(8);

class BusTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tls = MakeTestTls(dir_.File("ca"));
    ASSERT_TRUE(tls.ok()) << tls.status();
    tls_ = *tls;
    auto server = NatsServer::StartTls(tls_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }

  BusOptions Options(const std::string& name) const {
    BusOptions options;
    options.url = server_->url();
    options.name = name;
    options.send_asap = true;
    options.max_reconnect = 0;
    options.connect_timeout = absl::Seconds(2);
    return options;
  }

  // Connect must fail, and quickly: returns its one-line message.
  std::string Refused(const BusOptions& options, absl::StatusCode code) {
    const auto start = std::chrono::steady_clock::now();
    auto bus = Bus::Connect(options);
    EXPECT_LT(std::chrono::steady_clock::now() - start, kRefusalBound);
    EXPECT_FALSE(bus.ok());
    if (bus.ok()) return {};
    EXPECT_EQ(bus.status().code(), code) << bus.status();
    const std::string message(MessageOf(bus.status()));
    EXPECT_THAT(message, Not(HasSubstr("\n")));
    std::cout << "refused: " << message << "\n";
    return message;
  }

  TempDir dir_;
  TestTls tls_;
  std::unique_ptr<NatsServer> server_;
};

TEST_F(BusTlsTest, TheRightCaConnectsAndExchanges) {
  EXPECT_THAT(server_->url(), HasSubstr("tls://127.0.0.1:"));
  BusOptions options = Options("tls-ok");
  options.ca_file = tls_.ca_file;
  options.tls_hostname = "localhost";  // the certificate's SAN: checked too
  auto a = Bus::Connect(options);
  ASSERT_TRUE(a.ok()) << a.status();
  // The same CA with a nats:// url: --nats-ca alone makes the connection TLS.
  options.url = "nats://127.0.0.1:" + std::to_string(server_->port());
  options.tls_hostname.clear();
  auto b = Bus::Connect(options);
  ASSERT_TRUE(b.ok()) << b.status();

  std::mutex mu;
  std::string got;
  std::atomic<int> count{0};
  auto sub = (*a)->Subscribe("chq.test.tls", [&](const BusMessage& m) {
    std::lock_guard<std::mutex> lock(mu);
    got = std::string(m.data);
    ++count;
  });
  ASSERT_TRUE(sub.ok()) << sub.status();
  ASSERT_TRUE((*a)->Flush(absl::Seconds(5)).ok());
  ASSERT_TRUE((*b)->Publish("chq.test.tls", "over tls").ok());
  ASSERT_TRUE((*b)->Flush(absl::Seconds(5)).ok());
  ASSERT_TRUE(WaitFor([&] { return count.load() == 1; }));
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(got, "over tls");
}

TEST_F(BusTlsTest, APlainClientIsRefusedNamingTheFlag) {
  BusOptions options = Options("plain");
  options.url = "nats://127.0.0.1:" + std::to_string(server_->port());
  const std::string message = Refused(options, absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(message, HasSubstr("requires TLS"));
  EXPECT_THAT(message, HasSubstr("--nats-ca"));
  // A tls:// url without a CA trusts nothing: the same advice.
  options.url = server_->url();
  EXPECT_THAT(Refused(options, absl::StatusCode::kFailedPrecondition), HasSubstr("--nats-ca"));
}

TEST_F(BusTlsTest, AClientTrustingAnotherCaIsRefused) {
  auto other = MakeTestTls(dir_.File("other-ca"));
  ASSERT_TRUE(other.ok()) << other.status();
  BusOptions options = Options("other-ca");
  options.ca_file = other->ca_file;
  const std::string message = Refused(options, absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(message, HasSubstr("not signed by the CA in --nats-ca " + other->ca_file));
}

TEST_F(BusTlsTest, AWrongHostNameIsRefused) {
  BusOptions options = Options("wrong-host");
  options.ca_file = tls_.ca_file;
  options.tls_hostname = "nats.example.org";
  EXPECT_THAT(Refused(options, absl::StatusCode::kFailedPrecondition),
              HasSubstr("does not name host nats.example.org"));
}

TEST_F(BusTlsTest, AnUnreadableCaFileIsAnArgumentError) {
  BusOptions options = Options("no-ca");
  options.ca_file = dir_.File("missing.crt");
  EXPECT_THAT(Refused(options, absl::StatusCode::kInvalidArgument),
              HasSubstr("--nats-ca " + dir_.File("missing.crt")));
  // A private key is no CA certificate; and its bytes never reach the message.
  options.ca_file = tls_.key_file;
  EXPECT_THAT(Refused(options, absl::StatusCode::kInvalidArgument), Not(HasSubstr("PRIVATE")));
}

TEST_F(BusTlsTest, TlsAskedOfAPlainServerIsRefused) {
  auto plain = NatsServer::Start();
  ASSERT_TRUE(plain.ok()) << plain.status();
  BusOptions options = Options("tls-at-plain");
  options.url = (*plain)->url();
  options.ca_file = tls_.ca_file;
  EXPECT_THAT(Refused(options, absl::StatusCode::kFailedPrecondition),
              HasSubstr("does not offer it"));
}

// DESIGN.md: "the NATS user of a revoked entity is removed by a configuration reload of
// nats-server". The configuration is regenerated without the entity's user, nats-server is
// told to reload (SIGHUP, as `nats-server --signal reload`), and the entity's TLS connection is
// closed and its login refused, while the other users stay connected.
TEST_F(BusTlsTest, AUserRemovedFromTheConfigIsDisconnectedByAReload) {
  auto config_with = [&](const std::vector<NatsUser>& users) {
    NatsConfigInput input;
    input.users = users;
    input.tls.cert_file = tls_.cert_file;
    input.tls.key_file = tls_.key_file;
    return NatsServerConfig(input);
  };
  std::map<std::string, std::string> passwords;
  auto user = [&](NatsUserRole role, const std::string& entity) {
    NatsUser u{NatsUserName(role, entity, "test"), "", role, entity, "test"};
    auto password = NewNatsPassword();
    EXPECT_TRUE(password.ok());
    auto hash = BcryptHash(*password, 4);  // low cost: a test, not a deployment
    EXPECT_TRUE(hash.ok());
    passwords[u.name] = *password;
    u.password = *hash;
    return u;
  };
  const NatsUser router = user(NatsUserRole::kRouter, "router");
  const NatsUser sin = user(NatsUserRole::kEntity, "sin");
  const std::string path = dir_.File("nats.conf");
  auto before = config_with({router, sin});
  ASSERT_TRUE(before.ok()) << before.status();
  ASSERT_TRUE(WriteFileDurably(path, *before, 0600, /*replace=*/false).ok());
  auto server = NatsServer::StartTlsConfig(path);
  ASSERT_TRUE(server.ok()) << server.status();

  auto login = [&](const NatsUser& u) {
    BusOptions options;
    options.url = (*server)->url();
    options.ca_file = tls_.ca_file;
    options.name = "reload-" + u.name;
    options.user = u.name;
    options.password = passwords[u.name];
    options.max_reconnect = 0;
    return Bus::Connect(options);
  };
  auto router_bus = login(router);
  auto sin_bus = login(sin);
  ASSERT_TRUE(router_bus.ok()) << router_bus.status();
  ASSERT_TRUE(sin_bus.ok()) << sin_bus.status();

  auto after = config_with({router});  // sin revoked: no user any more
  ASSERT_TRUE(after.ok()) << after.status();
  ASSERT_TRUE(WriteFileDurably(path, *after, 0600, /*replace=*/true).ok());
  ASSERT_TRUE((*server)->Reload().ok());

  EXPECT_TRUE(WaitFor([&] { return !(*sin_bus)->Connected(); })) << "sin still connected";
  auto again = login(sin);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kUnauthenticated) << again.status();
  EXPECT_TRUE((*router_bus)->Connected());
  EXPECT_TRUE((*router_bus)->Flush(absl::Seconds(5)).ok());
}

}  // namespace
}  // namespace chasqui
