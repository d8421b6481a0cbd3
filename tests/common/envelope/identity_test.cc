#include "common/envelope/identity.h"

#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "chasqui/v1/crypto.pb.h"
#include "common/core/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/temp_dir.h"

namespace chasqui {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using json = nlohmann::json;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Written as a key file is: mode 0600 (LoadIdentity refuses anything wider).
void WriteAll(const std::string& path, const std::string& text) {
  {
    std::ofstream out(path, std::ios::trunc);
    out << text;
    ASSERT_TRUE(out.good()) << path;
  }
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0) << path;
}

class IdentityTest : public ::testing::Test {
 protected:
  IdentityTest() : identity_(GenerateIdentity("segip", "test", Role::kEntity)) {
    EXPECT_TRUE(WriteIdentity(key_path_, identity_).ok());
  }

  // Loads a copy of the valid key file after `edit`, expecting InvalidArgument whose message
  // names the file and `field`.
  void ExpectLoadError(const std::function<void(json&)>& edit, const std::string& field,
                       const std::string& expected = "") {
    json j = json::parse(ReadAll(key_path_));
    edit(j);
    const std::string path = dir_.File("edited.key");
    std::remove(path.c_str());
    WriteAll(path, j.dump());
    auto loaded = LoadIdentity(path);
    ASSERT_FALSE(loaded.ok()) << "field " << field;
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(MessageOf(loaded.status())),
                AllOf(HasSubstr(path), HasSubstr("\"" + field + "\""), HasSubstr(expected)));
  }

  chasqui::testing::TempDir dir_;
  std::string key_path_ = dir_.File("segip.key");
  Identity identity_;
};

TEST_F(IdentityTest, GeneratedIdentityIsComplete) {
  EXPECT_NE(identity_.pub.serial, 0u);
  EXPECT_LT(identity_.pub.serial, uint64_t{1} << 53);
  EXPECT_EQ(identity_.pub.entity, "segip");
  EXPECT_EQ(identity_.pub.env, "test");
  EXPECT_EQ(identity_.pub.role, Role::kEntity);
  EXPECT_EQ(identity_.pub.sign_pk, identity_.sign.public_key());
  EXPECT_EQ(identity_.pub.kx_pk, identity_.kx.public_key());
  const Identity other = GenerateIdentity("segip", "test", Role::kEntity);
  EXPECT_NE(other.pub.serial, identity_.pub.serial);
  EXPECT_NE(other.pub.sign_pk, identity_.pub.sign_pk);
}

TEST_F(IdentityTest, WriteThenLoadGivesTheSameKeys) {
  auto loaded = LoadIdentity(key_path_);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->pub.serial, identity_.pub.serial);
  EXPECT_EQ(loaded->pub.entity, "segip");
  EXPECT_EQ(loaded->pub.env, "test");
  EXPECT_EQ(loaded->pub.role, Role::kEntity);
  EXPECT_EQ(loaded->pub.sign_pk, identity_.pub.sign_pk);
  EXPECT_EQ(loaded->pub.kx_pk, identity_.pub.kx_pk);
  // Same signing key: each side's signatures verify under the other's public key.
  EXPECT_TRUE(VerifySignature(identity_.pub.sign_pk, "m", loaded->sign.Sign("m")));
  EXPECT_TRUE(VerifySignature(loaded->sign.public_key(), "m", identity_.sign.Sign("m")));
  // Same key-exchange key: both derive the same session keys with a peer.
  const KxKey peer = KxKey::Generate();
  auto a = ClientSessionKeys(identity_.kx, peer.public_key());
  auto b = ClientSessionKeys(loaded->kx, peer.public_key());
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(AsView(a->tx.data(), 32), AsView(b->tx.data(), 32));
}

TEST_F(IdentityTest, RouterRoleRoundTrips) {
  const Identity router = GenerateIdentity("router", "prod", Role::kRouter);
  ASSERT_TRUE(WriteIdentity(dir_.File("router.key"), router).ok());
  auto loaded = LoadIdentity(dir_.File("router.key"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->pub.role, Role::kRouter);
  EXPECT_EQ(loaded->pub.env, "prod");
  EXPECT_EQ(RoleName(Role::kRouter), "router");
  EXPECT_EQ(RoleName(Role::kEntity), "entity");
}

TEST_F(IdentityTest, KeyFileIsPrivate) {
  struct stat st {};
  ASSERT_EQ(::stat(key_path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
}

TEST_F(IdentityTest, WriteRefusesToOverwrite) {
  const std::string before = ReadAll(key_path_);
  const Identity other = GenerateIdentity("segip", "test", Role::kEntity);
  absl::Status s = WriteIdentity(key_path_, other);
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(MessageOf(s)), AllOf(HasSubstr(key_path_), HasSubstr("overwrite")));
  EXPECT_EQ(ReadAll(key_path_), before);
  auto loaded = LoadIdentity(key_path_);
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->pub.serial, identity_.pub.serial);
}

TEST_F(IdentityTest, WriteToAMissingDirectoryFails) {
  absl::Status s = WriteIdentity(dir_.File("no/such/dir.key"), identity_);
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(MessageOf(s)), HasSubstr("no/such/dir.key"));
}

TEST_F(IdentityTest, LoadErrorNamesAMissingFile) {
  const std::string path = dir_.File("absent.key");
  auto loaded = LoadIdentity(path);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(MessageOf(loaded.status())), HasSubstr(path));
}

TEST_F(IdentityTest, LoadErrorNamesAFileThatIsNotJson) {
  const std::string path = dir_.File("garbage.key");
  WriteAll(path, "{\"version\": 1, \"serial\": ");
  auto loaded = LoadIdentity(path);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(MessageOf(loaded.status())), AllOf(HasSubstr(path), HasSubstr("JSON")));
}

TEST_F(IdentityTest, LoadErrorNamesTheField) {
  ExpectLoadError([](json& j) { j.erase("serial"); }, "serial", "positive integer");
  ExpectLoadError([](json& j) { j["serial"] = 0; }, "serial");
  ExpectLoadError([](json& j) { j["serial"] = -5; }, "serial");
  ExpectLoadError([](json& j) { j["serial"] = "12"; }, "serial");
  ExpectLoadError([](json& j) { j["version"] = 2; }, "version");
  ExpectLoadError([](json& j) { j["entity"] = "SEGIP"; }, "entity", "[a-z0-9_-]");
  ExpectLoadError([](json& j) { j["entity"] = "se.gip"; }, "entity");
  ExpectLoadError([](json& j) { j.erase("entity"); }, "entity");
  ExpectLoadError([](json& j) { j["env"] = "dev"; }, "env", "\"test\" or \"prod\"");
  ExpectLoadError([](json& j) { j["role"] = "admin"; }, "role",
                  "\"entity\", \"router\", \"catalog\"");
  ExpectLoadError([](json& j) { j["sign_pk"] = ToBase64(std::string(31, 'k')); }, "sign_pk",
                  "base64 of 32 bytes");
  ExpectLoadError([](json& j) { j["sign_pk"] = ToBase64(std::string(33, 'k')); }, "sign_pk");
  ExpectLoadError([](json& j) { j["sign_pk"] = "not base64!"; }, "sign_pk");
  ExpectLoadError([](json& j) { j["kx_pk"] = 12; }, "kx_pk");
  ExpectLoadError([](json& j) { j["sign_sk"] = ToBase64(std::string(63, 'k')); }, "sign_sk");
  ExpectLoadError([](json& j) { j.erase("kx_sk"); }, "kx_sk");
}

TEST_F(IdentityTest, LoadRefusesASecretKeyThatDoesNotMatchItsPublicKey) {
  const Identity other = GenerateIdentity("segip", "test", Role::kEntity);
  // A well-formed secret key, but another one.
  ExpectLoadError([&](json& j) { j["sign_sk"] = ToBase64(AsView(other.sign.secret().data(), 64)); },
                  "sign_pk", "the public half of sign_sk");
  ExpectLoadError([&](json& j) { j["sign_pk"] = ToBase64(AsView(other.pub.sign_pk)); }, "sign_pk",
                  "the public half of sign_sk");
  ExpectLoadError([&](json& j) { j["kx_sk"] = ToBase64(AsView(other.kx.secret().data(), 32)); },
                  "kx_pk", "the public half of kx_sk");
  // A secret key whose embedded public half was damaged.
  ExpectLoadError(
      [&](json& j) {
        std::string sk(AsView(identity_.sign.secret().data(), 64));
        sk[50] ^= 1;
        j["sign_sk"] = ToBase64(sk);
      },
      "sign_sk", "valid Ed25519 secret key");
}

TEST(PublicIdentityTest, JsonRoundTripHasNoSecrets) {
  const Identity id = GenerateIdentity("sedem", "prod", Role::kEntity);
  const std::string text = PublicIdentityJson(id.pub);
  EXPECT_EQ(text.find("sign_sk"), std::string::npos);
  EXPECT_EQ(text.find("kx_sk"), std::string::npos);
  auto back = ParsePublicIdentity(text, "sedem.pub");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->serial, id.pub.serial);
  EXPECT_EQ(back->entity, "sedem");
  EXPECT_EQ(back->env, "prod");
  EXPECT_EQ(back->sign_pk, id.pub.sign_pk);
  EXPECT_EQ(back->kx_pk, id.pub.kx_pk);
  auto bad = ParsePublicIdentity("[1,2]", "sedem.pub");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(MessageOf(bad.status())), HasSubstr("sedem.pub"));
}

class TrustStoreTest : public ::testing::Test {
 protected:
  std::string WriteTrust(const std::vector<PublicIdentity>& ids) {
    const std::string path = dir_.File("trust" + std::to_string(files_++) + ".json");
    WriteAll(path, TrustFileJson(ids));
    return path;
  }

  chasqui::testing::TempDir dir_;
  int files_ = 0;
  Identity router_ = GenerateIdentity("router", "test", Role::kRouter);
  Identity segip_ = GenerateIdentity("segip", "test", Role::kEntity);
  Identity sedem_ = GenerateIdentity("sedem", "test", Role::kEntity);
  Identity segip_prod_ = GenerateIdentity("segip", "prod", Role::kEntity);
};

TEST_F(TrustStoreTest, LoadsWhatTrustFileJsonWrote) {
  auto store =
      TrustStore::Load(WriteTrust({router_.pub, segip_.pub, sedem_.pub, segip_prod_.pub}), "test");
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(store->env(), "test");
  EXPECT_EQ(store->size(), 3u);
  const PublicIdentity* p = store->BySerial(segip_.pub.serial);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->entity, "segip");
  EXPECT_EQ(p->sign_pk, segip_.pub.sign_pk);
  EXPECT_EQ(p->kx_pk, segip_.pub.kx_pk);
  EXPECT_EQ(store->BySerial(12345), nullptr);
}

TEST_F(TrustStoreTest, BySerialFiltersByEnvironment) {
  const std::string path = WriteTrust({segip_.pub, segip_prod_.pub});
  auto test = TrustStore::Load(path, "test");
  auto prod = TrustStore::Load(path, "prod");
  ASSERT_TRUE(test.ok() && prod.ok());
  EXPECT_EQ(test->BySerial(segip_prod_.pub.serial), nullptr);
  EXPECT_NE(test->BySerial(segip_.pub.serial), nullptr);
  EXPECT_EQ(prod->BySerial(segip_.pub.serial), nullptr);
  ASSERT_NE(prod->BySerial(segip_prod_.pub.serial), nullptr);
  EXPECT_EQ(prod->BySerial(segip_prod_.pub.serial)->env, "prod");
  EXPECT_EQ(prod->Find("segip", Role::kEntity)->serial, segip_prod_.pub.serial);
}

TEST_F(TrustStoreTest, RefusesDuplicateSerialsNamingBothEntries) {
  PublicIdentity dup = sedem_.pub;
  dup.serial = router_.pub.serial;
  const std::string path = WriteTrust({router_.pub, segip_.pub, dup});
  auto store = TrustStore::Load(path, "test");
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(MessageOf(store.status())),
              AllOf(HasSubstr(path), HasSubstr("identities[0]"), HasSubstr("identities[2]"),
                    HasSubstr(std::to_string(router_.pub.serial))));
}

TEST_F(TrustStoreTest, DuplicateSerialsAreRefusedEvenAcrossEnvironments) {
  PublicIdentity dup = segip_prod_.pub;
  dup.serial = segip_.pub.serial;
  auto store = TrustStore::Load(WriteTrust({segip_.pub, dup}), "test");
  EXPECT_FALSE(store.ok());
}

TEST_F(TrustStoreTest, FindReturnsTheRouterAndTheNewestKey) {
  auto store = TrustStore::Load(WriteTrust({router_.pub, segip_.pub, sedem_.pub}), "test");
  ASSERT_TRUE(store.ok()) << store.status();
  const PublicIdentity* router = store->Find("router", Role::kRouter);
  ASSERT_NE(router, nullptr);
  EXPECT_EQ(router->serial, router_.pub.serial);
  EXPECT_EQ(router->sign_pk, router_.pub.sign_pk);
  EXPECT_EQ(store->Find("router", Role::kEntity), nullptr);
  EXPECT_EQ(store->Find("segip", Role::kRouter), nullptr);
  EXPECT_EQ(store->Find("nadie", Role::kEntity), nullptr);
  ASSERT_NE(store->Find("sedem", Role::kEntity), nullptr);
  EXPECT_EQ(store->Find("sedem", Role::kEntity)->serial, sedem_.pub.serial);

  // A rotation: two keys of one entity from a trust file (no not_before): the higher serial
  // wins whatever the order.
  PublicIdentity older = segip_.pub;
  PublicIdentity newer = GenerateIdentity("segip", "test", Role::kEntity).pub;
  older.serial = 100;
  newer.serial = 200;
  for (auto ids :
       {std::vector<PublicIdentity>{older, newer}, std::vector<PublicIdentity>{newer, older}}) {
    const TrustStore t = TrustStore::FromIdentities(ids, "test");
    ASSERT_NE(t.Find("segip", Role::kEntity), nullptr);
    EXPECT_EQ(t.Find("segip", Role::kEntity)->serial, 200u);
    EXPECT_EQ(t.Find("segip", Role::kEntity)->sign_pk, newer.sign_pk);
  }

  // From certificates: the newest certificate wins, whatever its (random) serial.
  older.not_before_ms = 1'000;
  newer.not_before_ms = 2'000;
  older.serial = 900;
  newer.serial = 300;
  for (auto ids :
       {std::vector<PublicIdentity>{older, newer}, std::vector<PublicIdentity>{newer, older}}) {
    const TrustStore t = TrustStore::FromIdentities(ids, "test");
    ASSERT_NE(t.Find("segip", Role::kEntity), nullptr);
    EXPECT_EQ(t.Find("segip", Role::kEntity)->serial, 300u);
  }
}

TEST_F(TrustStoreTest, LoadErrorsNameTheFileAndTheEntry) {
  auto missing = TrustStore::Load(dir_.File("absent.json"), "test");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(MessageOf(missing.status())), HasSubstr("absent.json"));

  json j = json::parse(TrustFileJson({router_.pub, segip_.pub}));
  j["identities"][1]["env"] = "staging";
  const std::string path = dir_.File("bad-entry.json");
  WriteAll(path, j.dump());
  auto bad = TrustStore::Load(path, "test");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(MessageOf(bad.status())),
              AllOf(HasSubstr(path), HasSubstr("identities[1]"), HasSubstr("\"env\"")));

  const std::string no_list = dir_.File("no-list.json");
  WriteAll(no_list, R"({"version":1})");
  EXPECT_THAT(std::string(MessageOf(TrustStore::Load(no_list, "test").status())),
              HasSubstr("identities"));
  const std::string not_object = dir_.File("array.json");
  WriteAll(not_object, "[]");
  EXPECT_FALSE(TrustStore::Load(not_object, "test").ok());
}

TEST_F(TrustStoreTest, AnEmptyTrustFileIsAnEmptyStore) {
  auto store = TrustStore::Load(WriteTrust({}), "test");
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(store->size(), 0u);
  EXPECT_EQ(store->Find("router", Role::kRouter), nullptr);
}

TEST_F(IdentityTest, LoadRefusesAKeyFileOthersCanRead) {
  ASSERT_EQ(::chmod(key_path_.c_str(), 0644), 0);
  auto loaded = LoadIdentity(key_path_);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(loaded.status().message()),
              AllOf(HasSubstr(key_path_), HasSubstr("mode 644"), HasSubstr("chmod 600")));
}

// Every role the crypto service certifies has a key file; people's have no kx key at all.
TEST_F(IdentityTest, EveryCertificateRoleRoundTripsAndPeopleHaveNoKxKey) {
  for (const char* name :
       {"entity", "router", "catalog", "crypto", "quota", "audit", "mae", "manager", "operator"}) {
    auto role = ParseRole(name);
    ASSERT_TRUE(role.ok()) << name;
    EXPECT_EQ(RoleName(*role), name);
    const Identity id = GenerateIdentity("segip", "test", *role);
    const std::string path = dir_.File(std::string(name) + ".key");
    ASSERT_TRUE(WriteIdentity(path, id).ok()) << name;
    const std::string text = ReadAll(path);
    EXPECT_EQ(text.find("kx_") == std::string::npos, IsPersonRole(*role)) << name << text;
    auto loaded = LoadIdentity(path);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(loaded->pub.role, *role);
    EXPECT_EQ(loaded->pub.has_kx, !IsPersonRole(*role));
    EXPECT_EQ(loaded->pub.sign_pk, id.pub.sign_pk);
    auto pub = ParsePublicIdentity(PublicIdentityJson(id.pub), "pub");
    ASSERT_TRUE(pub.ok()) << pub.status();
    EXPECT_EQ(pub->has_kx, !IsPersonRole(*role));
  }
  EXPECT_EQ(ParseRole("admin").status().code(), absl::StatusCode::kInvalidArgument);
  // A person's public entry that carries a kx key is refused: it could be used to seal.
  const Identity mae = GenerateIdentity("segip", "test", Role::kMae);
  json j = json::parse(PublicIdentityJson(mae.pub));
  j["kx_pk"] = ToBase64(std::string(32, 'k'));
  auto refused = ParsePublicIdentity(j.dump(), "mae.pub");
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(MessageOf(refused.status())), HasSubstr("kx_pk"));
}

// The certificate `chasqui enrol` wrote, with the given body; unsigned (LoadIdentity(key,
// cert) checks only that it belongs to the key).
std::string CertificateFile(chasqui::testing::TempDir& dir, const v1::CertificateBody& body) {
  v1::Certificate c;
  c.set_body(body.SerializeAsString());
  c.set_signature(std::string(64, 's'));
  const std::string path = dir.File("k.cert");
  std::remove(path.c_str());
  std::ofstream(path, std::ios::binary) << c.SerializeAsString();
  return path;
}

v1::CertificateBody BodyFor(const PublicIdentity& p, uint64_t serial) {
  v1::CertificateBody b;
  b.set_serial(serial);
  b.set_subject(p.entity);
  b.set_kind(v1::CERTIFICATE_KIND_ENTITY_GATEWAY);
  b.set_role(v1::CERTIFICATE_ROLE_ENTITY);
  b.set_entity(p.entity);
  b.set_env(p.env);
  b.set_sign_pk(std::string(AsView(p.sign_pk)));
  b.set_kx_pk(std::string(AsView(p.kx_pk)));
  b.set_issuer_key_id("0011223344556677");
  return b;
}

TEST_F(IdentityTest, TheCertificatesSerialReplacesTheKeyFilesOwn) {
  const std::string cert = CertificateFile(dir_, BodyFor(identity_.pub, 4242));
  auto loaded = LoadIdentity(key_path_, cert);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->pub.serial, 4242u);
  EXPECT_NE(identity_.pub.serial, 4242u);
  EXPECT_EQ(loaded->pub.sign_pk, identity_.pub.sign_pk);
}

TEST_F(IdentityTest, ACertificateOfAnotherKeyIsRefusedNamingBothFilesAndTheField) {
  const Identity other = GenerateIdentity("segip", "test", Role::kEntity);
  auto expect_refused = [&](const v1::CertificateBody& body, const std::string& field) {
    const std::string cert = CertificateFile(dir_, body);
    auto loaded = LoadIdentity(key_path_, cert);
    ASSERT_FALSE(loaded.ok()) << field;
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(MessageOf(loaded.status())),
                AllOf(HasSubstr(cert), HasSubstr("does not belong to key file " + key_path_),
                      HasSubstr("its " + field + " is")));
  };
  v1::CertificateBody b = BodyFor(identity_.pub, 7);
  b.set_sign_pk(std::string(AsView(other.pub.sign_pk)));
  expect_refused(b, "sign_pk");
  b = BodyFor(identity_.pub, 7);
  b.set_kx_pk(std::string(AsView(other.pub.kx_pk)));
  expect_refused(b, "kx_pk");
  b = BodyFor(identity_.pub, 7);
  b.set_entity("sin");
  expect_refused(b, "entity");
  b = BodyFor(identity_.pub, 7);
  b.set_env("prod");
  expect_refused(b, "env");
  b = BodyFor(identity_.pub, 7);
  b.set_role(v1::CERTIFICATE_ROLE_ROUTER);
  expect_refused(b, "role");

  const std::string garbage = dir_.File("garbage.cert");
  std::ofstream(garbage) << "not a certificate";
  auto bad = LoadIdentity(key_path_, garbage);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(MessageOf(bad.status())), HasSubstr(garbage));
  EXPECT_FALSE(LoadIdentity(key_path_, dir_.File("missing.cert")).ok());
}

}  // namespace
}  // namespace chasqui
