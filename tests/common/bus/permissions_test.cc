// The bus enforces the subject plan (DESIGN.md, "Names and subjects"): a real nats-server runs
// the configuration `chasqui nats-config` generates (NatsServerConfig, bcrypt hashes), and each
// user may do exactly what the plan says.
//
// "Nothing arrives" is asserted without sleeping: after the forbidden message, a permitted one
// follows the same path (same publisher connection, same receiving subscription or delivery
// thread), and NATS keeps that order; once the permitted one is seen, the forbidden one would
// have been seen first. Denials are also read from nats-server's own log.
//
// The server is TLS-only, as the bus is (the configuration's `tls` block with a throwaway CA's
// server certificate; every client trusts that CA): every check here runs over TLS.

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "common/bus/bus.h"
#include "common/bus/nats_config.h"
#include "common/core/files.h"
#include "common/core/status.h"
#include "common/envelope/identity.h"
#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "services/gateway/sdk.h"
#include "services/router/router.h"
#include "tests/support/nats_server.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait_for.h"

namespace chasqui {
namespace {

using ::chasqui::testing::NatsServer;
using ::chasqui::testing::TempDir;
using ::chasqui::testing::WaitFor;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

constexpr auto kBound = std::chrono::seconds(5);

// What a set of subscriptions received, in order of delivery.
class Received {
 public:
  BusHandler Handler() {
    return [this](const BusMessage& m) {
      std::lock_guard<std::mutex> lock(mu_);
      got_.emplace_back(std::string(m.subject), std::string(m.data));
    };
  }
  bool Has(const std::string& subject) const {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [s, d] : got_) {
      if (s == subject) return true;
    }
    return false;
  }
  std::vector<std::pair<std::string, std::string>> All() const {
    std::lock_guard<std::mutex> lock(mu_);
    return got_;
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::pair<std::string, std::string>> got_;
};

absl::Status WriteFile(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return absl::InternalError("cannot create " + path);
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  return ok ? absl::OkStatus() : absl::InternalError("cannot write " + path);
}

class PermissionsTest : public ::testing::Test {
 protected:
  // One configuration for the whole suite: bcrypt is slow on purpose.
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    passwords_ = new std::map<std::string, std::string>;
    tls_ = new chasqui::testing::TestTls;
    setup_ = new absl::Status(MakeConfig());
    if (setup_->ok()) *setup_ = StartServer(&server_);
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
    delete setup_;
    delete passwords_;
    delete tls_;
    delete dir_;
  }

  void SetUp() override { ASSERT_TRUE(setup_->ok()) << *setup_; }

  static absl::Status MakeConfig() {
    CHASQUI_ASSIGN_OR_RETURN(std::vector<NatsUser> users,
                             PlanNatsUsers({{"sin", "test", NatsUserRole::kEntity},
                                            {"segip", "test", NatsUserRole::kEntity},
                                            {"aduana", "test", NatsUserRole::kEntity},
                                            {"router", "test", NatsUserRole::kRouter},
                                            {"crypto", "test", NatsUserRole::kService},
                                            {"audit", "test", NatsUserRole::kService},
                                            {"catalog", "test", NatsUserRole::kService},
                                            {"quota", "test", NatsUserRole::kService},
                                            {"agetic", "test", NatsUserRole::kOperator},
                                            {"nats-watch", "test",
                                             NatsUserRole::kRevocationWatch}},
                                           {"test"}, "the test's trust list"));
    NatsConfigInput input;
    input.listen = "127.0.0.1:4222";  // the test server's -p -1 overrides the port
    CHASQUI_ASSIGN_OR_RETURN(*tls_, chasqui::testing::MakeTestTls(dir_->File("tls")));
    input.tls.cert_file = tls_->cert_file;
    input.tls.key_file = tls_->key_file;
    input.tls.ca_file = tls_->ca_file;
    for (NatsUser& u : users) {
      CHASQUI_ASSIGN_OR_RETURN(std::string password, NewNatsPassword());
      CHASQUI_ASSIGN_OR_RETURN(u.password, BcryptHash(password));
      (*passwords_)[u.name] = password;
      input.users.push_back(u);
    }
    CHASQUI_ASSIGN_OR_RETURN(std::string text, NatsServerConfig(input));
    return WriteFile(ConfigPath(), text);
  }

  static std::string ConfigPath() { return dir_->File("nats.conf"); }

  static absl::Status StartServer(NatsServer** out) {
    CHASQUI_ASSIGN_OR_RETURN(auto server, NatsServer::StartTlsConfig(ConfigPath()));
    *out = server.release();
    return absl::OkStatus();
  }

  static absl::StatusOr<std::unique_ptr<Bus>> ConnectAs(const NatsServer& server,
                                                        const std::string& user,
                                                        const std::string& password,
                                                        bool shared_delivery_thread = false) {
    BusOptions o;
    o.url = server.url();
    o.ca_file = tls_->ca_file;
    o.name = "perm-" + user;
    o.user = user;
    o.password = password;
    o.send_asap = true;
    o.max_reconnect = 0;
    o.shared_delivery_thread = shared_delivery_thread;
    return Bus::Connect(o);
  }

  // Connected as `user` with its own password; fails the test otherwise.
  static std::unique_ptr<Bus> As(const std::string& user, bool shared_delivery_thread = false) {
    auto bus = ConnectAs(*server_, user, passwords_->at(user), shared_delivery_thread);
    EXPECT_TRUE(bus.ok()) << bus.status();
    return bus.ok() ? *std::move(bus) : nullptr;
  }

  static std::unique_ptr<Subscription> Sub(Bus& bus, const std::string& subject, Received& r) {
    auto sub = bus.Subscribe(subject, r.Handler());
    EXPECT_TRUE(sub.ok()) << sub.status();
    return sub.ok() ? *std::move(sub) : nullptr;
  }

  // True once nats-server's log has a line holding every one of `needles` (waits up to kBound).
  static bool LogSoonHas(const NatsServer& server, const std::vector<std::string>& needles) {
    return WaitFor(
        [&] {
          const std::string log = ReadFileOrEmpty(server.dir() + "/nats.log");
          size_t start = 0;
          while (start < log.size()) {
            size_t end = log.find('\n', start);
            if (end == std::string::npos) end = log.size();
            const std::string_view line(log.data() + start, end - start);
            bool all = true;
            for (const std::string& n : needles)
              all = all && line.find(n) != std::string_view::npos;
            if (all) return true;
            start = end + 1;
          }
          return false;
        },
        kBound);
  }

  // nats-server 2.9 logs `... - "<client name>" - Publish Violation - User "<user>", Subject
  // "<subject>"`, and likewise `Subscription Violation`.
  static bool DeniedPublish(const std::string& user, const std::string& subject) {
    return LogSoonHas(*server_, {"Publish Violation", fmt::format("User \"{}\"", user),
                                 fmt::format("Subject \"{}\"", subject)});
  }
  static bool DeniedSubscription(const std::string& user, const std::string& subject) {
    return LogSoonHas(*server_, {"Subscription Violation", fmt::format("User \"{}\"", user),
                                 fmt::format("Subject \"{}\"", subject)});
  }

  static TempDir* dir_;
  static std::map<std::string, std::string>* passwords_;
  static absl::Status* setup_;
  static NatsServer* server_;
  static chasqui::testing::TestTls* tls_;
};
chasqui::testing::TestTls* PermissionsTest::tls_ = nullptr;

TempDir* PermissionsTest::dir_ = nullptr;
std::map<std::string, std::string>* PermissionsTest::passwords_ = nullptr;
absl::Status* PermissionsTest::setup_ = nullptr;
NatsServer* PermissionsTest::server_ = nullptr;

TEST_F(PermissionsTest, TheConfigStoresHashesNotPasswords) {
  const std::string text = ReadFileOrEmpty(ConfigPath());
  ASSERT_THAT(text, HasSubstr("authorization"));
  for (const auto& [user, password] : *passwords_) {
    EXPECT_THAT(text, HasSubstr(fmt::format("user: \"{}\"", user)));
    EXPECT_THAT(text, Not(HasSubstr(password))) << user;
  }
  EXPECT_THAT(text, HasSubstr("password: \"$2b$11$"));
}

TEST_F(PermissionsTest, AWrongPasswordIsUnauthenticatedAndNeverQuoted) {
  const std::string wrong = "wrong-password-0123456789abcdef";
  auto bus = ConnectAs(*server_, "sin.test", wrong);
  ASSERT_FALSE(bus.ok());
  EXPECT_EQ(bus.status().code(), absl::StatusCode::kUnauthenticated) << bus.status();
  const std::string msg(MessageOf(bus.status()));
  EXPECT_THAT(msg, HasSubstr("sin.test"));
  EXPECT_THAT(msg, HasSubstr(server_->url()));
  EXPECT_THAT(msg, Not(HasSubstr(wrong)));

  // Another user's real password is no better, and is not quoted either.
  auto borrowed = ConnectAs(*server_, "sin.test", passwords_->at("segip.test"));
  ASSERT_FALSE(borrowed.ok());
  EXPECT_EQ(borrowed.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(std::string(MessageOf(borrowed.status())),
              Not(HasSubstr(passwords_->at("segip.test"))));

  // Nobody gets in anonymously.
  auto anonymous = ConnectAs(*server_, "", "");
  ASSERT_FALSE(anonymous.ok());
  EXPECT_EQ(anonymous.status().code(), absl::StatusCode::kUnauthenticated) << anonymous.status();

  // A password without a user is a caller's mistake, caught before connecting.
  auto no_user = ConnectAs(*server_, "", passwords_->at("sin.test"));
  ASSERT_FALSE(no_user.ok());
  EXPECT_EQ(no_user.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(MessageOf(no_user.status())), Not(HasSubstr(passwords_->at("sin.test"))));

  auto right = ConnectAs(*server_, "sin.test", passwords_->at("sin.test"));
  EXPECT_TRUE(right.ok()) << right.status();
}

TEST_F(PermissionsTest, TheGeneratedConfigAdmitsOnlyTls) {
  ASSERT_THAT(ReadFileOrEmpty(ConfigPath()), HasSubstr("tls {"));
  ASSERT_THAT(server_->url(), HasSubstr("tls://"));
  // The right user and password over a plain connection: refused before any login, with the
  // flag that fixes it, and the password never quoted.
  BusOptions plain;
  plain.url = "nats://127.0.0.1:" + std::to_string(server_->port());
  plain.name = "perm-plain";
  plain.user = "sin.test";
  plain.password = passwords_->at("sin.test");
  plain.max_reconnect = 0;
  auto bus = Bus::Connect(plain);
  ASSERT_FALSE(bus.ok());
  EXPECT_EQ(bus.status().code(), absl::StatusCode::kFailedPrecondition) << bus.status();
  EXPECT_THAT(std::string(MessageOf(bus.status())), HasSubstr("--nats-ca"));
  EXPECT_THAT(std::string(MessageOf(bus.status())), Not(HasSubstr(plain.password)));
}

TEST_F(PermissionsTest, AnEntityPublishesOnlyItsOwnRequests) {
  auto router = As("router.test");
  auto sin = As("sin.test");
  ASSERT_TRUE(router && sin);
  Received at_router;
  auto sub = Sub(*router, "chq.test.req.>", at_router);
  ASSERT_TRUE(router->Flush(absl::Seconds(5)).ok());

  // sin forges a request in aduana's name, then sends its own.
  ASSERT_TRUE(sin->Publish("chq.test.req.aduana.segip.x", "forged").ok());
  ASSERT_TRUE(sin->Publish("chq.test.req.sin.segip.x", "own").ok());
  ASSERT_TRUE(WaitFor([&] { return at_router.Has("chq.test.req.sin.segip.x"); }, kBound));
  EXPECT_THAT(at_router.All(), ElementsAre(Pair("chq.test.req.sin.segip.x", "own")));
  EXPECT_TRUE(DeniedPublish("sin.test", "chq.test.req.aduana.segip.x"));
}

TEST_F(PermissionsTest, AnEntityReadsNeitherAnotherProvidersServiceNorAnotherEntitysInbox) {
  auto router = As("router.test");
  auto segip = As("segip.test");
  auto aduana = As("aduana.test");
  // One delivery thread for all of sin's subscriptions: what reaches sin is seen in order.
  auto sin = As("sin.test", /*shared_delivery_thread=*/true);
  ASSERT_TRUE(router && segip && aduana && sin);
  Received at_segip, at_aduana, at_sin;
  auto s1 = Sub(*segip, "chq.test.svc.segip.>", at_segip);
  auto s2 = Sub(*aduana, "_INBOX.test.aduana.>", at_aduana);
  // sin tries both; nats-server refuses them asynchronously (the calls themselves succeed).
  auto spy1 = sin->Subscribe("chq.test.svc.segip.>", at_sin.Handler());
  auto spy2 = sin->Subscribe("_INBOX.test.aduana.>", at_sin.Handler());
  auto own = Sub(*sin, "_INBOX.test.sin.>", at_sin);
  for (Bus* b : {segip.get(), aduana.get(), sin.get()})
    ASSERT_TRUE(b->Flush(absl::Seconds(5)).ok());

  ASSERT_TRUE(router->Publish("chq.test.svc.segip.persona_consulta", "for segip").ok());
  ASSERT_TRUE(router->Publish("_INBOX.test.aduana.c1.1", "for aduana").ok());
  ASSERT_TRUE(router->Publish("_INBOX.test.sin.c1.1", "for sin").ok());

  ASSERT_TRUE(WaitFor([&] { return at_sin.Has("_INBOX.test.sin.c1.1"); }, kBound));
  EXPECT_THAT(at_sin.All(), ElementsAre(Pair("_INBOX.test.sin.c1.1", "for sin")));
  // The rightful readers did get theirs.
  EXPECT_TRUE(WaitFor([&] { return at_segip.Has("chq.test.svc.segip.persona_consulta"); }, kBound));
  EXPECT_TRUE(WaitFor([&] { return at_aduana.Has("_INBOX.test.aduana.c1.1"); }, kBound));
  EXPECT_TRUE(DeniedSubscription("sin.test", "chq.test.svc.segip.>"));
  EXPECT_TRUE(DeniedSubscription("sin.test", "_INBOX.test.aduana.>"));
}

TEST_F(PermissionsTest, AnEntityPublishesNeitherOnServiceNorOnEventSubjects) {
  auto router = As("router.test");
  auto segip = As("segip.test");
  auto sin = As("sin.test");
  ASSERT_TRUE(router && segip && sin);
  Received at_segip;
  auto sub = Sub(*segip, "chq.test.svc.segip.>", at_segip);
  ASSERT_TRUE(segip->Flush(absl::Seconds(5)).ok());

  ASSERT_TRUE(sin->Publish("chq.test.svc.segip.persona_consulta", "bypassing the router").ok());
  ASSERT_TRUE(sin->Publish("chq.evt.anything", "forged event").ok());
  // Once sin's flush returns, nats-server has handled both publishes: anything it delivered to
  // segip is queued before the router's message that follows.
  ASSERT_TRUE(sin->Flush(absl::Seconds(5)).ok());
  ASSERT_TRUE(router->Publish("chq.test.svc.segip.persona_consulta", "via the router").ok());

  ASSERT_TRUE(WaitFor([&] { return !at_segip.All().empty(); }, kBound));
  EXPECT_THAT(at_segip.All(),
              ElementsAre(Pair("chq.test.svc.segip.persona_consulta", "via the router")));
  EXPECT_TRUE(DeniedPublish("sin.test", "chq.test.svc.segip.persona_consulta"));
  EXPECT_TRUE(DeniedPublish("sin.test", "chq.evt.anything"));
}

TEST_F(PermissionsTest, AProviderAnswersARouterOnlyThroughTheResponsePermission) {
  auto router = As("router.test");
  auto segip = As("segip.test");
  ASSERT_TRUE(router && segip);
  Received at_router;
  auto inbox = Sub(*router, "_INBOX._router.test.>", at_router);
  ASSERT_TRUE(router->Flush(absl::Seconds(5)).ok());
  Bus* provider = segip.get();
  auto svc = segip->Subscribe("chq.test.svc.segip.>", [provider](const BusMessage& m) {
    const std::string data(m.data);
    const std::string reply(m.reply);
    if (data == "first") {
      // Unasked: no response permission for this subject.
      (void)provider->Publish("_INBOX._router.test.r1.999", "unsolicited");
      (void)provider->Publish(reply, "answer 1");
      // The permission covers one response.
      (void)provider->Publish(reply, "answer 1 again");
    } else {
      (void)provider->Publish(reply, "answer 2");
    }
  });
  ASSERT_TRUE(svc.ok()) << svc.status();
  ASSERT_TRUE(segip->Flush(absl::Seconds(5)).ok());

  ASSERT_TRUE(router->Publish("chq.test.svc.segip.x", "first", "_INBOX._router.test.r1.1").ok());
  ASSERT_TRUE(WaitFor([&] { return at_router.Has("_INBOX._router.test.r1.1"); }, kBound));
  // A second request: its answer follows whatever segip sent before, on the same path.
  ASSERT_TRUE(router->Publish("chq.test.svc.segip.x", "second", "_INBOX._router.test.r1.2").ok());
  ASSERT_TRUE(WaitFor([&] { return at_router.Has("_INBOX._router.test.r1.2"); }, kBound));
  EXPECT_THAT(at_router.All(), ElementsAre(Pair("_INBOX._router.test.r1.1", "answer 1"),
                                           Pair("_INBOX._router.test.r1.2", "answer 2")));
  EXPECT_TRUE(DeniedPublish("segip.test", "_INBOX._router.test.r1.999"));
  EXPECT_TRUE(DeniedPublish("segip.test", "_INBOX._router.test.r1.1"));
}

TEST_F(PermissionsTest, TheRouterForgesNoRequestsAndStaysInItsEnv) {
  auto router = As("router.test");
  auto sin = As("sin.test");
  ASSERT_TRUE(router && sin);
  Received at_router;
  auto sub = Sub(*router, "chq.test.req.>", at_router);
  // Another env's routers' inbox: their forwarded replies are not this router's to read.
  auto spy = router->Subscribe("_INBOX._router.prod.>", at_router.Handler());
  ASSERT_TRUE(router->Flush(absl::Seconds(5)).ok());

  ASSERT_TRUE(router->Publish("chq.test.req.sin.segip.x", "forged by the router").ok());
  ASSERT_TRUE(router->Publish("_INBOX.prod.sin.c1.1", "to another env").ok());
  ASSERT_TRUE(router->Publish("chq.evt.anything", "forged event").ok());
  ASSERT_TRUE(router->Flush(absl::Seconds(5)).ok());
  ASSERT_TRUE(sin->Publish("chq.test.req.sin.segip.x", "own").ok());
  ASSERT_TRUE(WaitFor([&] { return !at_router.All().empty(); }, kBound));
  EXPECT_THAT(at_router.All(), ElementsAre(Pair("chq.test.req.sin.segip.x", "own")));
  EXPECT_TRUE(DeniedPublish("router.test", "chq.test.req.sin.segip.x"));
  EXPECT_TRUE(DeniedPublish("router.test", "_INBOX.prod.sin.c1.1"));
  EXPECT_TRUE(DeniedPublish("router.test", "chq.evt.anything"));
  EXPECT_TRUE(DeniedSubscription("router.test", "_INBOX._router.prod.>"));
}

std::unique_ptr<Subscription> QueueSub(Bus& bus, const std::string& subject,
                                       const std::string& queue, Received& r) {
  auto sub = bus.QueueSubscribe(subject, queue, r.Handler());
  EXPECT_TRUE(sub.ok()) << sub.status();
  return sub.ok() ? *std::move(sub) : nullptr;
}

// A platform service serves its own control subjects, in its own queue group only, and answers
// an entity's request through the response permission into that entity's inbox.
TEST_F(PermissionsTest, AServiceServesItsControlSubjectsInItsQueueGroupAndAnswersOnce) {
  auto crypto = As("crypto.test", /*shared_delivery_thread=*/true);
  auto sin = As("sin.test");
  ASSERT_TRUE(crypto && sin);
  Received at_crypto, at_sin;
  Bus* service = crypto.get();
  // Its own subjects outside its queue group, and another service's: refused by the server.
  auto spy1 = crypto->Subscribe("chq.ctl.crypto.>", at_crypto.Handler());
  auto spy2 = crypto->QueueSubscribe("chq.ctl.audit.>", "chq.audit", at_crypto.Handler());
  auto serve = crypto->QueueSubscribe(
      "chq.ctl.crypto.>", "chq.crypto", [&at_crypto, service](const BusMessage& m) {
        at_crypto.Handler()(m);
        const std::string reply(m.reply);
        (void)service->Publish(reply, "certificate");
        (void)service->Publish(reply, "second answer");  // the permission covers one
        (void)service->Publish("_INBOX.test.sin.unasked", "unsolicited");
      });
  ASSERT_TRUE(serve.ok()) << serve.status();
  auto inbox = Sub(*sin, "_INBOX.test.sin.>", at_sin);
  for (Bus* b : {crypto.get(), sin.get()}) ASSERT_TRUE(b->Flush(absl::Seconds(5)).ok());

  auto router = As("router.test");
  ASSERT_TRUE(router);
  // Nobody else may speak for the audit service: this must not reach crypto's spy.
  ASSERT_TRUE(router->Publish("chq.ctl.audit.append", "a trace").ok());
  ASSERT_TRUE(router->Flush(absl::Seconds(5)).ok());
  ASSERT_TRUE(sin->Publish("chq.ctl.crypto.enrol", "request", "_INBOX.test.sin.c1.1").ok());
  ASSERT_TRUE(WaitFor([&] { return at_sin.Has("_INBOX.test.sin.c1.1"); }, kBound));
  // A second request's answer follows whatever crypto sent before, on the same path.
  ASSERT_TRUE(sin->Publish("chq.ctl.crypto.directory", "request 2", "_INBOX.test.sin.c1.2").ok());
  ASSERT_TRUE(WaitFor([&] { return at_sin.All().size() >= 2; }, kBound));
  EXPECT_THAT(at_sin.All(), ElementsAre(Pair("_INBOX.test.sin.c1.1", "certificate"),
                                        Pair("_INBOX.test.sin.c1.2", "certificate")));
  EXPECT_THAT(at_crypto.All(), ElementsAre(Pair("chq.ctl.crypto.enrol", "request"),
                                           Pair("chq.ctl.crypto.directory", "request 2")));
  EXPECT_TRUE(DeniedSubscription("crypto.test", "chq.ctl.crypto.>"));
  EXPECT_TRUE(DeniedSubscription("crypto.test", "chq.ctl.audit.>"));
  EXPECT_TRUE(DeniedPublish("crypto.test", "_INBOX.test.sin.unasked"));
}

// The router traces to audit, asks catalog and crypto, and follows their events; an entity
// follows revocations and the catalog's changes and asks crypto and catalog; each service
// publishes only its own events.
TEST_F(PermissionsTest, RoutersEntitiesAndServicesReachExactlyTheControlPlaneTheyMay) {
  auto audit = As("audit.test");
  auto catalog = As("catalog.test");
  auto crypto = As("crypto.test");
  auto router = As("router.test", /*shared_delivery_thread=*/true);
  auto sin = As("sin.test", /*shared_delivery_thread=*/true);
  ASSERT_TRUE(audit && catalog && crypto && router && sin);
  Received at_audit, at_catalog, at_crypto, at_router, at_sin;
  auto s1 = QueueSub(*audit, "chq.ctl.audit.>", "chq.audit", at_audit);
  auto s2 = QueueSub(*catalog, "chq.ctl.catalog.>", "chq.catalog", at_catalog);
  auto s3 = QueueSub(*crypto, "chq.ctl.crypto.>", "chq.crypto", at_crypto);
  auto s4 = Sub(*router, "chq.evt.crypto.>", at_router);
  auto s5 = Sub(*router, "chq.evt.catalog.>", at_router);
  auto s6 = Sub(*sin, "chq.evt.crypto.revoked", at_sin);
  auto s7 = Sub(*sin, "chq.evt.catalog.>", at_sin);
  // sin may not read crypto's other events; the router not audit's.
  auto spy2 = sin->Subscribe("chq.evt.crypto.>", at_sin.Handler());
  auto spy3 = router->Subscribe("chq.evt.audit.>", at_router.Handler());
  for (Bus* b : {audit.get(), catalog.get(), crypto.get(), router.get(), sin.get()}) {
    ASSERT_TRUE(b->Flush(absl::Seconds(5)).ok());
  }

  // Allowed.
  ASSERT_TRUE(router->Publish("chq.ctl.audit.append", "trace").ok());
  ASSERT_TRUE(router->Publish("chq.ctl.catalog.snapshot", "grants?").ok());
  ASSERT_TRUE(router->Publish("chq.ctl.crypto.directory", "certs?").ok());
  ASSERT_TRUE(sin->Publish("chq.ctl.catalog.request_access", "please").ok());
  ASSERT_TRUE(audit->Publish("chq.ctl.crypto.sign", "checkpoint").ok());
  // Refused: sin revoking or tracing, the router revoking or editing the catalog, a service
  // forging another's events or calling a third service's control subjects.
  ASSERT_TRUE(sin->Publish("chq.ctl.crypto.revoke", "revoke segip").ok());
  ASSERT_TRUE(sin->Publish("chq.ctl.audit.append", "forged trace").ok());
  ASSERT_TRUE(router->Publish("chq.ctl.crypto.revoke", "revoke").ok());
  ASSERT_TRUE(router->Publish("chq.ctl.catalog.approve", "grant").ok());
  ASSERT_TRUE(audit->Publish("chq.evt.crypto.revoked", "forged list").ok());
  ASSERT_TRUE(audit->Publish("chq.ctl.catalog.snapshot", "not audit's").ok());
  for (Bus* b : {audit.get(), router.get(), sin.get()}) ASSERT_TRUE(b->Flush(absl::Seconds(5)).ok());
  // Events last: what reaches router and sin after them would have come first.
  ASSERT_TRUE(crypto->Publish("chq.evt.crypto.revoked", "list v2").ok());
  ASSERT_TRUE(catalog->Publish("chq.evt.catalog.grants", "grants changed").ok());
  ASSERT_TRUE(audit->Publish("chq.evt.audit.checkpoint", "head").ok());

  ASSERT_TRUE(WaitFor([&] { return at_router.Has("chq.evt.catalog.grants"); }, kBound));
  ASSERT_TRUE(WaitFor([&] { return at_sin.Has("chq.evt.crypto.revoked"); }, kBound));
  ASSERT_TRUE(WaitFor([&] { return at_sin.Has("chq.evt.catalog.grants"); }, kBound));
  ASSERT_TRUE(WaitFor([&] { return at_crypto.All().size() >= 2; }, kBound));
  EXPECT_THAT(at_audit.All(), ElementsAre(Pair("chq.ctl.audit.append", "trace")));
  // From several connections: their order among themselves is not NATS's to keep.
  ASSERT_TRUE(WaitFor([&] { return at_catalog.All().size() >= 2; }, kBound));
  ASSERT_TRUE(WaitFor([&] { return at_router.Has("chq.evt.crypto.revoked"); }, kBound));
  EXPECT_THAT(at_catalog.All(),
              UnorderedElementsAre(Pair("chq.ctl.catalog.snapshot", "grants?"),
                                   Pair("chq.ctl.catalog.request_access", "please")));
  EXPECT_THAT(at_crypto.All(), UnorderedElementsAre(Pair("chq.ctl.crypto.directory", "certs?"),
                                                    Pair("chq.ctl.crypto.sign", "checkpoint")));
  EXPECT_THAT(at_router.All(),
              UnorderedElementsAre(Pair("chq.evt.crypto.revoked", "list v2"),
                                   Pair("chq.evt.catalog.grants", "grants changed")));
  EXPECT_THAT(at_sin.All(), UnorderedElementsAre(Pair("chq.evt.crypto.revoked", "list v2"),
                                                 Pair("chq.evt.catalog.grants", "grants changed")));
  EXPECT_TRUE(DeniedPublish("sin.test", "chq.ctl.crypto.revoke"));
  EXPECT_TRUE(DeniedPublish("sin.test", "chq.ctl.audit.append"));
  EXPECT_TRUE(DeniedPublish("router.test", "chq.ctl.crypto.revoke"));
  EXPECT_TRUE(DeniedPublish("router.test", "chq.ctl.catalog.approve"));
  EXPECT_TRUE(DeniedPublish("audit.test", "chq.evt.crypto.revoked"));
  EXPECT_TRUE(DeniedPublish("audit.test", "chq.ctl.catalog.snapshot"));
  EXPECT_TRUE(DeniedSubscription("sin.test", "chq.evt.crypto.>"));
  EXPECT_TRUE(DeniedSubscription("router.test", "chq.evt.audit.>"));
}

// The operator's entity (agetic, `--operator-entity`) may send revocations, which nobody else
// may; the revocation watch (`--nats-watch`) reads the lists and asks the directory, and does
// nothing else: no revoking, no requests, no other events, no forged lists.
TEST_F(PermissionsTest, TheOperatorsEntityRevokesAndTheWatchOnlyFollowsRevocations) {
  auto crypto = As("crypto.test");
  auto agetic = As("agetic.test");
  auto watch = As("nats-watch.test", /*shared_delivery_thread=*/true);
  ASSERT_TRUE(crypto && agetic && watch);
  Received at_crypto, at_watch;
  // crypto records what reaches it and answers the directory request (its response permission).
  Bus* responder = crypto.get();
  auto s1 = crypto->QueueSubscribe("chq.ctl.crypto.>", "chq.crypto",
                                   [&at_crypto, responder](const BusMessage& m) {
                                     at_crypto.Handler()(m);
                                     if (!m.reply.empty()) {
                                       (void)responder->Publish(m.reply, "the directory's answer");
                                     }
                                   });
  ASSERT_TRUE(s1.ok()) << s1.status();
  auto s2 = Sub(*watch, "chq.evt.crypto.revoked", at_watch);
  auto s3 = Sub(*watch, "_INBOX._nats-watch.test.>", at_watch);
  auto spy1 = watch->Subscribe("chq.evt.crypto.>", at_watch.Handler());
  auto spy2 = watch->Subscribe("chq.test.svc.>", at_watch.Handler());
  for (Bus* b : {crypto.get(), agetic.get(), watch.get()}) {
    ASSERT_TRUE(b->Flush(absl::Seconds(5)).ok());
  }

  ASSERT_TRUE(agetic->Publish("chq.ctl.crypto.revoke", "revoke by the operator").ok());
  ASSERT_TRUE(watch->Publish("chq.ctl.crypto.revoke", "forged revoke").ok());
  ASSERT_TRUE(watch->Publish("chq.test.req.sin.segip.x", "forged request").ok());
  ASSERT_TRUE(watch->Publish("chq.evt.crypto.revoked", "forged list").ok());
  // Events first (a forbidden one reaching the watch would come before the list), then the
  // request whose answer comes last.
  ASSERT_TRUE(crypto->Publish("chq.evt.crypto.rotated", "not the watch's").ok());
  ASSERT_TRUE(crypto->Publish("chq.evt.crypto.revoked", "list v3").ok());
  ASSERT_TRUE(crypto->Flush(absl::Seconds(5)).ok());
  ASSERT_TRUE(WaitFor([&] { return at_watch.Has("chq.evt.crypto.revoked"); }, kBound));
  ASSERT_TRUE(
      watch->Publish("chq.ctl.crypto.directory", "lists?", "_INBOX._nats-watch.test.1.1").ok());

  ASSERT_TRUE(WaitFor([&] { return at_crypto.All().size() >= 2; }, kBound));
  ASSERT_TRUE(WaitFor([&] { return at_watch.Has("_INBOX._nats-watch.test.1.1"); }, kBound));
  EXPECT_THAT(at_crypto.All(),
              UnorderedElementsAre(Pair("chq.ctl.crypto.revoke", "revoke by the operator"),
                                   Pair("chq.ctl.crypto.directory", "lists?")));
  EXPECT_THAT(at_watch.All(),
              ElementsAre(Pair("chq.evt.crypto.revoked", "list v3"),
                          Pair("_INBOX._nats-watch.test.1.1", "the directory's answer")));
  EXPECT_TRUE(DeniedPublish("nats-watch.test", "chq.ctl.crypto.revoke"));
  EXPECT_TRUE(DeniedPublish("nats-watch.test", "chq.test.req.sin.segip.x"));
  EXPECT_TRUE(DeniedPublish("nats-watch.test", "chq.evt.crypto.revoked"));
  EXPECT_TRUE(DeniedSubscription("nats-watch.test", "chq.evt.crypto.>"));
  EXPECT_TRUE(DeniedSubscription("nats-watch.test", "chq.test.svc.>"));
}

// A router with --quota (RouterPolicies): it draws and returns leases, gets the answers in its
// own inbox, and follows policy changes; it may not change policies nor read quota's other
// events.
TEST_F(PermissionsTest, TheRouterDrawsQuotaLeasesAndFollowsPolicyChanges) {
  auto quota = As("quota.test", /*shared_delivery_thread=*/true);
  auto router = As("router.test", /*shared_delivery_thread=*/true);
  ASSERT_TRUE(quota && router);
  Received at_quota, at_router;
  Bus* service = quota.get();
  auto serve = quota->QueueSubscribe("chq.ctl.quota.>", "chq.quota",
                                     [&at_quota, service](const BusMessage& m) {
                                       at_quota.Handler()(m);
                                       (void)service->Publish(std::string(m.reply), "answer");
                                     });
  ASSERT_TRUE(serve.ok()) << serve.status();
  auto inbox = Sub(*router, "_INBOX._router.test.r1.quota.*", at_router);
  auto events = Sub(*router, "chq.evt.quota.policy", at_router);
  auto spy = router->Subscribe("chq.evt.quota.>", at_router.Handler());
  for (Bus* b : {quota.get(), router.get()}) ASSERT_TRUE(b->Flush(absl::Seconds(5)).ok());

  const std::string inbox_prefix = "_INBOX._router.test.r1.quota.";
  ASSERT_TRUE(router->Publish("chq.ctl.quota.set_policy", "unlimited", inbox_prefix + "0").ok());
  ASSERT_TRUE(router->Publish("chq.ctl.quota.lease", "20 more", inbox_prefix + "1").ok());
  ASSERT_TRUE(router->Publish("chq.ctl.quota.return", "5 unspent", inbox_prefix + "2").ok());
  ASSERT_TRUE(WaitFor([&] { return at_router.Has("_INBOX._router.test.r1.quota.2"); }, kBound));
  ASSERT_TRUE(quota->Publish("chq.evt.quota.policy", "sin's grant changed").ok());
  ASSERT_TRUE(WaitFor([&] { return at_router.Has("chq.evt.quota.policy"); }, kBound));
  EXPECT_THAT(at_quota.All(), ElementsAre(Pair("chq.ctl.quota.lease", "20 more"),
                                          Pair("chq.ctl.quota.return", "5 unspent")));
  EXPECT_THAT(at_router.All(), ElementsAre(Pair("_INBOX._router.test.r1.quota.1", "answer"),
                                           Pair("_INBOX._router.test.r1.quota.2", "answer"),
                                           Pair("chq.evt.quota.policy", "sin's grant changed")));
  EXPECT_TRUE(DeniedPublish("router.test", "chq.ctl.quota.set_policy"));
  EXPECT_TRUE(DeniedSubscription("router.test", "chq.evt.quota.>"));
}

// The whole path (consumer SDK -> router -> provider SDK and back) under the generated
// permissions, on a server of its own so its log shows only this exchange.
TEST_F(PermissionsTest, ACallSucceedsThroughRouterAndSdkUnderThePermissions) {
  NatsServer* raw = nullptr;
  ASSERT_TRUE(StartServer(&raw).ok());
  std::unique_ptr<NatsServer> server(raw);

  Identity sin_key = GenerateIdentity("sin", "test", Role::kEntity);
  Identity segip_key = GenerateIdentity("segip", "test", Role::kEntity);
  Identity router_key = GenerateIdentity("router", "test", Role::kRouter);
  const std::vector<PublicIdentity> pubs = {sin_key.pub, segip_key.pub, router_key.pub};

  auto connect = [&](const std::string& user) {
    auto bus = ConnectAs(*server, user, passwords_->at(user));
    EXPECT_TRUE(bus.ok()) << bus.status();
    return bus.ok() ? *std::move(bus) : nullptr;
  };
  auto router_bus = connect("router.test");
  auto provider_bus = connect("segip.test");
  auto consumer_bus = connect("sin.test");
  ASSERT_TRUE(router_bus && provider_bus && consumer_bus);

  RouterOptions ro;
  ro.env = "test";
  ro.router_id = "r1";
  ro.startup_hold_ms = 0;
  ro.provider_timeout = absl::Seconds(3);
  auto router = Router::Start(ro, router_bus.get(), std::move(router_key),
                              TrustStore::FromIdentities(pubs, "test"),
                              std::make_shared<prometheus::Registry>());
  ASSERT_TRUE(router.ok()) << router.status();
  ASSERT_TRUE(WaitFor([&] { return (*router)->Ready().ok(); }, kBound));

  auto provider = Provider::Create(provider_bus.get(), std::move(segip_key),
                                   TrustStore::FromIdentities(pubs, "test"));
  ASSERT_TRUE(provider.ok()) << provider.status();
  ASSERT_TRUE((*provider)
                  ->Serve("persona_consulta",
                          [](const RequestContext& ctx,
                             std::string_view body) -> absl::StatusOr<std::string> {
                            return "segip answers " + ctx.consumer + ": " + std::string(body);
                          })
                  .ok());
  ASSERT_TRUE(provider_bus->Flush(absl::Seconds(5)).ok());

  auto consumer = Consumer::Create(consumer_bus.get(), std::move(sin_key),
                                   TrustStore::FromIdentities(pubs, "test"));
  ASSERT_TRUE(consumer.ok()) << consumer.status();
  CallOptions call;
  call.end_user = "ana.perez";
  call.timeout = absl::Seconds(5);
  CallResult r = (*consumer)->Call("segip", "persona_consulta", R"({"ci":"4567890"})", call);
  EXPECT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.body, R"(segip answers sin: {"ci":"4567890"})");

  consumer->reset();
  provider->reset();
  router->reset();
  const std::string log = ReadFileOrEmpty(server->dir() + "/nats.log");
  EXPECT_THAT(log, Not(HasSubstr("Violation"))) << log;
}

}  // namespace
}  // namespace chasqui
