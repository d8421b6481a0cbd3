#include "common/bus/nats_config.h"

#include <crypt.h>

#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/core/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace chasqui {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

// What one user block of the generated text grants, read back loosely: line by line, the
// way an operator would read it.
struct Granted {
  std::string password;
  std::vector<std::string> publish;
  std::vector<std::string> subscribe;
  bool allow_responses = false;
  int lines_with_allow = 0;
};

std::string Quoted(const std::string& line, size_t from = 0) {
  const size_t a = line.find('"', from);
  const size_t b = line.find('"', a + 1);
  return line.substr(a + 1, b - a - 1);
}

std::vector<std::string> QuotedAll(const std::string& line) {
  std::vector<std::string> out;
  size_t pos = line.find('[');
  while (true) {
    const size_t a = line.find('"', pos);
    if (a == std::string::npos) break;
    const size_t b = line.find('"', a + 1);
    out.push_back(line.substr(a + 1, b - a - 1));
    pos = b + 1;
  }
  return out;
}

std::map<std::string, Granted> ParseUsers(const std::string& text) {
  std::map<std::string, Granted> users;
  Granted* current = nullptr;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(start, end - start);
    start = end + 1;
    if (line.find("user:") != std::string::npos) {
      current = &users[Quoted(line)];
    } else if (current == nullptr) {
      continue;
    } else if (line.find("password:") != std::string::npos) {
      current->password = Quoted(line);
    } else if (line.find("publish:") != std::string::npos) {
      current->publish = QuotedAll(line);
      ++current->lines_with_allow;
    } else if (line.find("subscribe:") != std::string::npos) {
      current->subscribe = QuotedAll(line);
      ++current->lines_with_allow;
    } else if (line.find("allow_responses: true") != std::string::npos) {
      current->allow_responses = true;
    }
  }
  return users;
}

NatsUser Entity(const std::string& entity, const std::string& env, const std::string& password) {
  return {entity + "." + env, password, NatsUserRole::kEntity, entity, env};
}
NatsUser Service(const std::string& service, const std::string& env,
                 const std::string& password) {
  return {service + "." + env, password, NatsUserRole::kService, service, env};
}
NatsUser RouterUser(const std::string& env, const std::string& password) {
  return {"router." + env, password, NatsUserRole::kRouter, "router", env};
}

TEST(NatsConfigTest, EachUserGetsExactlyItsSubjects) {
  NatsConfigInput in;
  in.listen = "0.0.0.0:4333";
  in.users = {RouterUser("test", "p1"),       Entity("sin", "test", "p2"),
              Entity("segip", "test", "p3"),     RouterUser("prod", "p4"),
              Entity("sin", "prod", "p5"),       Service("crypto", "test", "p6"),
              Service("audit", "test", "p7"),    Service("catalog", "prod", "p8"),
              Service("quota", "test", "p9")};
  auto text = NatsServerConfig(in);
  ASSERT_TRUE(text.ok()) << text.status();
  const auto users = ParseUsers(*text);
  ASSERT_EQ(users.size(), 9u) << *text;

  const Granted& sin = users.at("sin.test");
  EXPECT_EQ(sin.password, "p2");
  EXPECT_THAT(sin.publish, ElementsAre("chq.test.req.sin.>", "chq.ctl.crypto.enrol",
                                       "chq.ctl.crypto.directory", "chq.ctl.catalog.>",
                  "chq.ctl.audit.query", "chq.ctl.audit.report", "chq.ctl.quota.usage",
                  "chq.ctl.quota.request", "chq.ctl.quota.decide"));
  EXPECT_THAT(sin.subscribe, ElementsAre("chq.test.svc.sin.>", "_INBOX.test.sin.>",
                                         "chq.evt.crypto.revoked", "chq.evt.catalog.>"));
  EXPECT_TRUE(sin.allow_responses);
  EXPECT_EQ(sin.lines_with_allow, 2);

  const Granted& segip = users.at("segip.test");
  EXPECT_THAT(segip.publish, ElementsAre("chq.test.req.segip.>", "chq.ctl.crypto.enrol",
                                         "chq.ctl.crypto.directory", "chq.ctl.catalog.>",
                  "chq.ctl.audit.query", "chq.ctl.audit.report", "chq.ctl.quota.usage",
                  "chq.ctl.quota.request", "chq.ctl.quota.decide"));
  EXPECT_THAT(segip.subscribe, ElementsAre("chq.test.svc.segip.>", "_INBOX.test.segip.>",
                                           "chq.evt.crypto.revoked", "chq.evt.catalog.>"));
  EXPECT_TRUE(segip.allow_responses);

  const Granted& sin_prod = users.at("sin.prod");
  EXPECT_THAT(sin_prod.publish, ElementsAre("chq.prod.req.sin.>", "chq.ctl.crypto.enrol",
                                            "chq.ctl.crypto.directory", "chq.ctl.catalog.>",
                  "chq.ctl.audit.query", "chq.ctl.audit.report", "chq.ctl.quota.usage",
                  "chq.ctl.quota.request", "chq.ctl.quota.decide"));
  EXPECT_THAT(sin_prod.subscribe, ElementsAre("chq.prod.svc.sin.>", "_INBOX.prod.sin.>",
                                              "chq.evt.crypto.revoked", "chq.evt.catalog.>"));

  const Granted& router = users.at("router.test");
  EXPECT_THAT(router.publish,
              ElementsAre("chq.test.svc.>", "_INBOX.test.>", "chq.ctl.audit.append",
                          "chq.ctl.catalog.snapshot", "chq.ctl.catalog.events",
                          "chq.ctl.crypto.enrol", "chq.ctl.crypto.directory", "chq.ctl.quota.lease",
                          "chq.ctl.quota.return"));
  EXPECT_THAT(router.subscribe, ElementsAre("chq.test.req.>", "_INBOX._router.test.>",
                                            "chq.evt.crypto.>", "chq.evt.catalog.>",
                                            "chq.evt.quota.policy"));
  EXPECT_FALSE(router.allow_responses);

  const Granted& router_prod = users.at("router.prod");
  EXPECT_THAT(router_prod.publish,
              ElementsAre("chq.prod.svc.>", "_INBOX.prod.>", "chq.ctl.audit.append",
                          "chq.ctl.catalog.snapshot", "chq.ctl.catalog.events",
                          "chq.ctl.crypto.enrol", "chq.ctl.crypto.directory", "chq.ctl.quota.lease",
                          "chq.ctl.quota.return"));
  EXPECT_THAT(router_prod.subscribe, ElementsAre("chq.prod.req.>", "_INBOX._router.prod.>",
                                                 "chq.evt.crypto.>", "chq.evt.catalog.>",
                                                 "chq.evt.quota.policy"));

  // Each service serves its own control subjects in its queue group, publishes its own events.
  const Granted& crypto = users.at("crypto.test");
  EXPECT_THAT(crypto.publish,
              ElementsAre("chq.evt.crypto.>", "chq.ctl.audit.certificates.test"));
  EXPECT_THAT(crypto.subscribe, ElementsAre("chq.ctl.crypto.> chq.crypto", "_INBOX._crypto.test.>",
                                            "chq.evt.crypto.>"));
  EXPECT_TRUE(crypto.allow_responses);
  const Granted& audit = users.at("audit.test");
  EXPECT_THAT(audit.publish,
              ElementsAre("chq.evt.audit.>", "chq.ctl.crypto.enrol", "chq.ctl.crypto.sign",
                          "chq.ctl.crypto.directory"));
  EXPECT_THAT(audit.subscribe, ElementsAre("chq.ctl.audit.> chq.audit", "_INBOX._audit.test.>",
                                           "chq.evt.crypto.>"));
  EXPECT_TRUE(audit.allow_responses);
  EXPECT_THAT(users.at("catalog.prod").subscribe,
              ElementsAre("chq.ctl.catalog.> chq.catalog", "_INBOX._catalog.prod.>",
                          "chq.evt.crypto.>"));
  // The quota service also follows the catalog (its policies come from it).
  const Granted& quota = users.at("quota.test");
  EXPECT_THAT(quota.publish,
              ElementsAre("chq.evt.quota.>", "chq.ctl.crypto.enrol", "chq.ctl.crypto.sign",
                          "chq.ctl.crypto.directory",
                          "chq.ctl.catalog.snapshot", "chq.ctl.catalog.events"));
  EXPECT_THAT(quota.subscribe, ElementsAre("chq.ctl.quota.> chq.quota", "_INBOX._quota.test.>",
                                           "chq.evt.crypto.>", "chq.evt.catalog.>"));

  // Every connection must log in; the listen address is the one asked for; no deny lists or
  // wildcard users that would widen the plan.
  EXPECT_THAT(*text, Not(HasSubstr("no_auth_user")));
  EXPECT_THAT(*text, HasSubstr("listen: \"0.0.0.0:4333\""));
  EXPECT_THAT(*text, HasSubstr("authorization {"));
  EXPECT_THAT(*text, Not(HasSubstr("deny")));
  EXPECT_THAT(*text, Not(HasSubstr("\"*\"")));
  EXPECT_THAT(*text, Not(HasSubstr("\">\"")));
  EXPECT_THAT(*text, Not(HasSubstr("\"chq.evt.>\"")));
  EXPECT_THAT(*text, Not(HasSubstr("\"chq.ctl.>\"")));
  EXPECT_THAT(*text, HasSubstr("# audit.test: platform service audit in env test"));
}

TEST(NatsConfigTest, PermissionsForMatchTheSubjectPlan) {
  const NatsPermissions e = NatsPermissionsFor(NatsUserRole::kEntity, "aduana", "prod");
  EXPECT_THAT(e.publish_allow, ElementsAre("chq.prod.req.aduana.>", "chq.ctl.crypto.enrol",
                                           "chq.ctl.crypto.directory", "chq.ctl.catalog.>",
                  "chq.ctl.audit.query", "chq.ctl.audit.report", "chq.ctl.quota.usage",
                  "chq.ctl.quota.request", "chq.ctl.quota.decide"));
  EXPECT_THAT(e.subscribe_allow, ElementsAre("chq.prod.svc.aduana.>", "_INBOX.prod.aduana.>",
                                             "chq.evt.crypto.revoked", "chq.evt.catalog.>"));
  EXPECT_TRUE(e.allow_responses);
  const NatsPermissions r = NatsPermissionsFor(NatsUserRole::kRouter, "ignored", "test");
  EXPECT_THAT(r.publish_allow,
              ElementsAre("chq.test.svc.>", "_INBOX.test.>", "chq.ctl.audit.append",
                          "chq.ctl.catalog.snapshot", "chq.ctl.catalog.events",
                          "chq.ctl.crypto.enrol", "chq.ctl.crypto.directory", "chq.ctl.quota.lease",
                          "chq.ctl.quota.return"));
  EXPECT_THAT(r.subscribe_allow, ElementsAre("chq.test.req.>", "_INBOX._router.test.>",
                                             "chq.evt.crypto.>", "chq.evt.catalog.>",
                                             "chq.evt.quota.policy"));
  EXPECT_FALSE(r.allow_responses);
  EXPECT_EQ(NatsUserName(NatsUserRole::kService, "audit", "prod"), "audit.prod");
  EXPECT_EQ(NatsServiceInboxPrefix("catalog", "test"), "_INBOX._catalog.test");
  EXPECT_EQ(NatsUserName(NatsUserRole::kRouter, "router", "prod"), "router.prod");
  EXPECT_EQ(NatsUserName(NatsUserRole::kEntity, "segip", "test"), "segip.test");
}

TEST(NatsConfigTest, RefusesAReusedPassword) {
  NatsConfigInput in;
  in.users = {Entity("sin", "test", "Xy7pw"), Entity("segip", "test", "Xy7pw")};
  auto text = NatsServerConfig(in);
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(MessageOf(text.status()), HasSubstr("segip.test"));
  EXPECT_THAT(MessageOf(text.status()), Not(HasSubstr("Xy7pw")));
}

TEST(NatsConfigTest, NewPasswordsAreLongRandomAndNeverRepeat) {
  std::set<std::string> seen;
  for (int i = 0; i < 200; ++i) {
    auto p = NewNatsPassword();
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ(p->size(), 64u);
    EXPECT_EQ(p->find_first_not_of("0123456789abcdef"), std::string::npos) << *p;
    EXPECT_TRUE(seen.insert(*p).second) << "password repeated";
  }
}

TEST(NatsConfigTest, BcryptHashIsARealBcryptOfThePassword) {
  auto password = NewNatsPassword();
  ASSERT_TRUE(password.ok());
  auto h1 = BcryptHash(*password, 4);
  auto h2 = BcryptHash(*password, 4);
  ASSERT_TRUE(h1.ok()) << h1.status();
  ASSERT_TRUE(h2.ok()) << h2.status();
  EXPECT_EQ(h1->rfind("$2b$04$", 0), 0u) << *h1;
  EXPECT_EQ(h1->size(), 60u);
  EXPECT_NE(*h1, *h2) << "each hash needs its own salt";
  // Checked the way nats-server checks it: hashing the password with the hash as salt.
  auto data = std::make_unique<crypt_data>();
  std::memset(data.get(), 0, sizeof(crypt_data));
  const char* again = crypt_rn(password->c_str(), h1->c_str(), data.get(), sizeof(crypt_data));
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(std::string(again), *h1);
  const char* wrong = crypt_rn("not-the-password", h1->c_str(), data.get(), sizeof(crypt_data));
  ASSERT_NE(wrong, nullptr);
  EXPECT_NE(std::string(wrong), *h1);
  // And the hash is acceptable as a config password.
  NatsConfigInput in;
  in.users = {Entity("sin", "test", *h1)};
  auto text = NatsServerConfig(in);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_THAT(*text, HasSubstr("password: \"" + *h1 + "\""));
}

TEST(NatsConfigTest, BcryptRefusesWhatItWouldSilentlyWeaken) {
  EXPECT_EQ(BcryptHash("x", 3).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BcryptHash(std::string(73, 'a'), 4).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BcryptHash("", 4).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(NatsConfigTest, RefusesMalformedUsers) {
  auto refused = [](NatsUser u, const std::string& why) {
    NatsConfigInput in;
    in.users = {std::move(u)};
    auto text = NatsServerConfig(in);
    EXPECT_FALSE(text.ok()) << why;
    if (!text.ok()) {
      EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument) << why;
    }
    return text.ok() ? std::string() : std::string(MessageOf(text.status()));
  };
  EXPECT_THAT(refused({"sin.prod", "p", NatsUserRole::kEntity, "sin", "test"}, "name/env mismatch"),
              HasSubstr("sin.test"));
  EXPECT_THAT(refused(Entity("Sin", "test", "p"), "uppercase entity"), HasSubstr("Sin"));
  EXPECT_THAT(refused(Entity("sin", "qa", "p"), "unknown env"), HasSubstr("qa"));
  EXPECT_THAT(refused(Entity("router", "test", "p"), "entity named router"), HasSubstr("router"));
  EXPECT_THAT(refused(Entity("crypto", "test", "p"), "entity named like a service"),
              HasSubstr("platform service's"));
  EXPECT_THAT(refused(Service("billing", "test", "p"), "unknown service"),
              HasSubstr("not a platform service"));
  EXPECT_THAT(refused({"audit.test", "p", NatsUserRole::kService, "catalog", "test"},
                      "name not the service's"),
              HasSubstr("catalog.test"));
  EXPECT_THAT(refused({"router.test", "p", NatsUserRole::kRouter, "r1", "test"}, "router entity"),
              HasSubstr("router"));
  EXPECT_THAT(refused(Entity("sin", "test", ""), "empty password"), HasSubstr("empty password"));
  const std::string msg = refused(Entity("sin", "test", "bad\"quote"), "quote in password");
  EXPECT_THAT(msg, Not(HasSubstr("bad")));
  EXPECT_THAT(msg, HasSubstr("sin.test"));

  NatsConfigInput none;
  EXPECT_EQ(NatsServerConfig(none).status().code(), absl::StatusCode::kInvalidArgument);
  NatsConfigInput twice;
  twice.users = {Entity("sin", "test", "a"), Entity("sin", "test", "b")};
  EXPECT_THAT(std::string(MessageOf(NatsServerConfig(twice).status())), HasSubstr("twice"));
  for (const char* listen : {"4222", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:99999",
                             "127.0.0.1:42\n22", "a b:4222", "\"x\":1"}) {
    NatsConfigInput in;
    in.listen = listen;
    in.users = {Entity("sin", "test", "p")};
    EXPECT_EQ(NatsServerConfig(in).status().code(), absl::StatusCode::kInvalidArgument) << listen;
  }
}

std::vector<NatsTrustedName> Trusted() {
  return {{"sin", "test", NatsUserRole::kEntity},    {"segip", "test", NatsUserRole::kEntity},
          {"segip", "test", NatsUserRole::kEntity},  // a rotation: a second key, one user
          {"router", "test", NatsUserRole::kRouter}, {"router", "test", NatsUserRole::kRouter},
          {"aduana", "prod", NatsUserRole::kEntity}};
}

TEST(NatsConfigTest, PlansOneUserPerEntityAndEnvAndOnePerEnvsRouters) {
  auto users = PlanNatsUsers(Trusted(), {"test"}, "trust.json");
  ASSERT_TRUE(users.ok()) << users.status();
  std::vector<std::string> names;
  for (const NatsUser& u : *users) {
    names.push_back(u.name);
    EXPECT_TRUE(u.password.empty());
    EXPECT_EQ(u.env, "test");
  }
  EXPECT_THAT(names, ElementsAre("router.test", "segip.test", "sin.test"));
  EXPECT_EQ((*users)[0].role, NatsUserRole::kRouter);

  // Services come after the routers, one user each however many keys.
  auto with_services = Trusted();
  with_services.push_back({"crypto", "test", NatsUserRole::kService});
  with_services.push_back({"audit", "test", NatsUserRole::kService});
  with_services.push_back({"audit", "test", NatsUserRole::kService});
  auto planned = PlanNatsUsers(with_services, {"test"}, "trust.json");
  ASSERT_TRUE(planned.ok()) << planned.status();
  names.clear();
  for (const NatsUser& u : *planned) names.push_back(u.name);
  EXPECT_THAT(names,
              ElementsAre("router.test", "audit.test", "crypto.test", "segip.test", "sin.test"));
  EXPECT_EQ((*planned)[1].role, NatsUserRole::kService);
  EXPECT_EQ((*planned)[1].entity, "audit");

  auto both = PlanNatsUsers(Trusted(), {"test", "prod"}, "trust.json");
  ASSERT_TRUE(both.ok()) << both.status();
  ASSERT_EQ(both->size(), 4u);
  EXPECT_EQ(both->back().name, "aduana.prod");  // prod has no router key: no router.prod
}

TEST(NatsConfigTest, RefusesAnEnvTheTrustFileDoesNotHave) {
  std::vector<NatsTrustedName> only_test = {{"sin", "test", NatsUserRole::kEntity}};
  auto users = PlanNatsUsers(only_test, {"test", "prod"}, "trust.json");
  ASSERT_FALSE(users.ok());
  EXPECT_EQ(users.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string msg(MessageOf(users.status()));
  EXPECT_THAT(msg, HasSubstr("\"prod\""));
  EXPECT_THAT(msg, HasSubstr("trust.json"));
  EXPECT_THAT(msg, HasSubstr("its envs: test"));

  EXPECT_THAT(std::string(MessageOf(PlanNatsUsers(only_test, {"qa"}, "t").status())),
              HasSubstr("qa"));
  EXPECT_THAT(std::string(MessageOf(PlanNatsUsers(only_test, {"test", "test"}, "t").status())),
              HasSubstr("twice"));
  EXPECT_EQ(PlanNatsUsers(only_test, {}, "t").status().code(), absl::StatusCode::kInvalidArgument);
  std::vector<NatsTrustedName> squatter = {{"router", "test", NatsUserRole::kEntity}};
  EXPECT_THAT(std::string(MessageOf(PlanNatsUsers(squatter, {"test"}, "t").status())),
              HasSubstr("routers' NATS user"));
  std::vector<NatsTrustedName> service_squatter = {{"audit", "test", NatsUserRole::kEntity}};
  EXPECT_THAT(std::string(MessageOf(PlanNatsUsers(service_squatter, {"test"}, "t").status())),
              HasSubstr("platform service's NATS user"));
  std::vector<NatsTrustedName> unknown_service = {{"billing", "test", NatsUserRole::kService}};
  EXPECT_THAT(std::string(MessageOf(PlanNatsUsers(unknown_service, {"test"}, "t").status())),
              HasSubstr("not a platform service"));
}

TEST(NatsConfigTest, PlannedUsersWithFreshPasswordsMakeAValidConfig) {
  auto users = PlanNatsUsers(Trusted(), {"test", "prod"}, "trust.json");
  ASSERT_TRUE(users.ok());
  NatsConfigInput in;
  for (NatsUser u : *users) {
    auto p = NewNatsPassword();
    ASSERT_TRUE(p.ok());
    u.password = *p;
    in.users.push_back(u);
  }
  auto text = NatsServerConfig(in);
  ASSERT_TRUE(text.ok()) << text.status();
  const auto parsed = ParseUsers(*text);
  std::set<std::string> passwords;
  for (const auto& [name, g] : parsed) passwords.insert(g.password);
  EXPECT_EQ(parsed.size(), 4u);
  EXPECT_EQ(passwords.size(), 4u);
}

TEST(NatsConfigTest, TlsFilesAddATlsBlockAndChangeNothingElse) {
  NatsConfigInput in;
  in.users = {RouterUser("test", "p1"), Entity("sin", "test", "p2")};
  auto plain = NatsServerConfig(in);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_THAT(*plain, Not(HasSubstr("tls")));

  in.tls.cert_file = "/etc/chasqui/tls/server.crt";
  in.tls.key_file = "/etc/chasqui/tls/server.key";
  auto tls = NatsServerConfig(in);
  ASSERT_TRUE(tls.ok()) << tls.status();
  const std::string block =
      "tls {\n"
      "  cert_file: \"/etc/chasqui/tls/server.crt\"\n"
      "  key_file: \"/etc/chasqui/tls/server.key\"\n"
      "  timeout: 2\n"
      "}\n\n";
  const size_t at = tls->find(block);
  ASSERT_NE(at, std::string::npos) << *tls;
  // The block sits before the users, and taking it out gives back the plain text exactly.
  EXPECT_LT(at, tls->find("authorization {"));
  EXPECT_EQ(std::string(*tls).erase(at, block.size()), *plain);

  in.tls.ca_file = "/etc/chasqui/tls/ca.crt";
  in.tls.timeout_seconds = 5;
  auto with_ca = NatsServerConfig(in);
  ASSERT_TRUE(with_ca.ok()) << with_ca.status();
  EXPECT_THAT(*with_ca, HasSubstr("  ca_file: \"/etc/chasqui/tls/ca.crt\"\n  timeout: 5\n}"));
  EXPECT_THAT(*with_ca, Not(HasSubstr("verify")));  // clients need no certificate of their own
}

TEST(NatsConfigTest, RefusesHalfOrUnsafeTlsFiles) {
  auto refused = [](NatsTlsFiles tls) {
    NatsConfigInput in;
    in.users = {Entity("sin", "test", "p2")};
    in.tls = std::move(tls);
    auto text = NatsServerConfig(in);
    EXPECT_FALSE(text.ok());
    return text.ok() ? std::string() : std::string(MessageOf(text.status()));
  };
  EXPECT_THAT(refused({"/a/server.crt", "", "", 2}), HasSubstr("--tls-key"));
  EXPECT_THAT(refused({"", "/a/server.key", "", 2}), HasSubstr("--tls-cert"));
  EXPECT_THAT(refused({"", "", "/a/ca.crt", 2}), HasSubstr("--tls-ca needs both"));
  EXPECT_THAT(refused({"server.crt", "/a/server.key", "", 2}), HasSubstr("absolute path"));
  EXPECT_THAT(refused({"/a/server.crt", "/a/k\"ey", "", 2}), HasSubstr("--tls-key"));
  EXPECT_THAT(refused({"/a/server.crt", "/a/key\n", "", 2}), HasSubstr("control byte"));
  EXPECT_THAT(refused({"/a/server.crt", "/a/server.key", "/a/c\\a", 2}), HasSubstr("--tls-ca"));
  EXPECT_THAT(refused({"/a/server.crt", "/a/server.key", "", 0}), HasSubstr("timeout"));
}

}  // namespace
}  // namespace chasqui
