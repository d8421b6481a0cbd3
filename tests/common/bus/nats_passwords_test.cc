// The users a regenerated configuration keeps: FillKeptNatsPasswords (existing password files
// kept, new ones only for new users, hashes cached while a file is unchanged, unsafe files
// refused), and the two roles issue 3 adds: the operator's entity and the revocation watch.

#include <crypt.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/bus/nats_config.h"
#include "common/core/files.h"
#include "common/core/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/temp_dir.h"

namespace chasqui {
namespace {

using ::chasqui::testing::TempDir;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

// The way nats-server checks a bcrypt password: hashing it with the hash as salt.
bool Matches(const std::string& password, const std::string& hash) {
  auto data = std::make_unique<crypt_data>();
  std::memset(data.get(), 0, sizeof(crypt_data));
  const char* again = crypt_rn(password.c_str(), hash.c_str(), data.get(), sizeof(crypt_data));
  return again != nullptr && std::string(again) == hash;
}

NatsUser Entity(const std::string& entity) {
  return {entity + ".test", "", NatsUserRole::kEntity, entity, "test"};
}

TEST(NatsPasswordsTest, KeepsExistingPasswordFilesAndMakesOnlyTheMissingOnes) {
  TempDir dir;
  const std::string secrets = dir.File("secrets");
  ASSERT_EQ(::mkdir(secrets.c_str(), 0700), 0);
  ASSERT_TRUE(WriteFileDurably(secrets + "/sin.test.password", "kept-password-of-sin\n", 0600,
                               false)
                  .ok());
  std::vector<NatsUser> users = {Entity("sin"), Entity("segip")};
  std::vector<std::string> created;
  ASSERT_TRUE(FillKeptNatsPasswords(&users, secrets, 4, nullptr, &created).ok());
  EXPECT_THAT(created, ElementsAre("segip.test"));
  EXPECT_TRUE(Matches("kept-password-of-sin", users[0].password)) << users[0].password;
  EXPECT_EQ(ReadFileOrEmpty(secrets + "/sin.test.password"), "kept-password-of-sin\n");
  const std::string segip = ReadFileOrEmpty(secrets + "/segip.test.password");
  EXPECT_EQ(segip.size(), 64u);
  EXPECT_TRUE(Matches(segip, users[1].password));
  struct stat st;
  ASSERT_EQ(::stat((secrets + "/segip.test.password").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  // A second run keeps both, and makes nothing.
  std::vector<NatsUser> again = {Entity("sin"), Entity("segip")};
  created.clear();
  ASSERT_TRUE(FillKeptNatsPasswords(&again, secrets, 4, nullptr, &created).ok());
  EXPECT_TRUE(created.empty());
  EXPECT_TRUE(Matches(segip, again[1].password));
  EXPECT_EQ(ReadFileOrEmpty(secrets + "/segip.test.password"), segip);

  // The config they make holds hashes only.
  NatsConfigInput in;
  in.users = again;
  auto text = NatsServerConfig(in);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_THAT(*text, Not(HasSubstr(segip)));
  EXPECT_THAT(*text, Not(HasSubstr("kept-password-of-sin")));
}

TEST(NatsPasswordsTest, TheCacheSkipsBcryptUntilTheFileChanges) {
  TempDir dir;
  const std::string secrets = dir.File("secrets");
  NatsHashCache cache;
  std::vector<NatsUser> first = {Entity("sin")};
  ASSERT_TRUE(FillKeptNatsPasswords(&first, secrets, 4, &cache, nullptr).ok());
  std::vector<NatsUser> second = {Entity("sin")};
  ASSERT_TRUE(FillKeptNatsPasswords(&second, secrets, 4, &cache, nullptr).ok());
  // Bcrypt salts each hash afresh: the same hash means it was not computed again.
  EXPECT_EQ(first[0].password, second[0].password);

  // The operator replaces the password: the cache notices and the new one is hashed.
  const std::string path = secrets + "/sin.test.password";
  ASSERT_TRUE(WriteFileDurably(path, "a-new-password-for-sin", 0600, /*replace=*/true).ok());
  std::vector<NatsUser> third = {Entity("sin")};
  ASSERT_TRUE(FillKeptNatsPasswords(&third, secrets, 4, &cache, nullptr).ok());
  EXPECT_TRUE(Matches("a-new-password-for-sin", third[0].password));
}

TEST(NatsPasswordsTest, RefusesUnsafeOrBrokenPasswordFiles) {
  TempDir dir;
  const std::string secrets = dir.File("secrets");
  ASSERT_EQ(::mkdir(secrets.c_str(), 0700), 0);
  auto fill = [&](const std::string& entity) {
    std::vector<NatsUser> users = {Entity(entity)};
    return FillKeptNatsPasswords(&users, secrets, 4, nullptr, nullptr);
  };
  ASSERT_EQ(::symlink("/etc/hostname", (secrets + "/sin.test.password").c_str()), 0);
  absl::Status link = fill("sin");
  EXPECT_EQ(link.code(), absl::StatusCode::kFailedPrecondition) << link;
  EXPECT_THAT(std::string(MessageOf(link)), HasSubstr("sin.test.password"));

  ASSERT_TRUE(WriteFileDurably(secrets + "/segip.test.password", "readable", 0644, false).ok());
  EXPECT_EQ(fill("segip").code(), absl::StatusCode::kPermissionDenied);

  ASSERT_TRUE(WriteFileDurably(secrets + "/aduana.test.password", "\n", 0600, false).ok());
  EXPECT_EQ(fill("aduana").code(), absl::StatusCode::kInvalidArgument);

  ASSERT_TRUE(WriteFileDurably(secrets + "/ypfb.test.password", "has\"quote", 0600, false).ok());
  absl::Status quote = fill("ypfb");
  EXPECT_EQ(quote.code(), absl::StatusCode::kInvalidArgument) << quote;
  EXPECT_THAT(std::string(MessageOf(quote)), Not(HasSubstr("has\"quote")));
}

TEST(NatsPasswordsTest, TheOperatorsEntityMayAlsoRevokeAndTheWatchMayOnlyFollowRevocations) {
  auto users = PlanNatsUsers({{"sin", "test", NatsUserRole::kEntity},
                              {"agetic", "test", NatsUserRole::kEntity},
                              {"agetic", "test", NatsUserRole::kOperator},
                              {"router", "test", NatsUserRole::kRouter},
                              {"nats-watch", "test", NatsUserRole::kRevocationWatch}},
                             {"test"}, "the flags");
  ASSERT_TRUE(users.ok()) << users.status();
  std::vector<std::string> names;
  for (const NatsUser& u : *users) names.push_back(u.name);
  EXPECT_THAT(names, ElementsAre("router.test", "nats-watch.test", "agetic.test", "sin.test"));
  EXPECT_EQ((*users)[1].role, NatsUserRole::kRevocationWatch);
  EXPECT_EQ((*users)[2].role, NatsUserRole::kOperator);
  EXPECT_EQ((*users)[3].role, NatsUserRole::kEntity);

  const NatsPermissions op = NatsPermissionsFor(NatsUserRole::kOperator, "agetic", "test");
  const NatsPermissions entity = NatsPermissionsFor(NatsUserRole::kEntity, "agetic", "test");
  EXPECT_THAT(op.publish_allow, Contains("chq.ctl.crypto.revoke"));
  EXPECT_THAT(entity.publish_allow, Not(Contains("chq.ctl.crypto.revoke")));
  EXPECT_EQ(op.subscribe_allow, entity.subscribe_allow);
  EXPECT_EQ(op.publish_allow.size(), entity.publish_allow.size() + 1);

  const NatsPermissions watch = NatsPermissionsFor(NatsUserRole::kRevocationWatch, "", "test");
  EXPECT_THAT(watch.publish_allow, ElementsAre("chq.ctl.crypto.directory"));
  EXPECT_THAT(watch.subscribe_allow,
              ElementsAre("chq.evt.crypto.revoked", "_INBOX._nats-watch.test.>"));
  EXPECT_FALSE(watch.allow_responses);

  // Nobody may squat the watch's name, and the watch's user is named only one way.
  EXPECT_TRUE(IsReservedEntityName("nats-watch"));
  auto squatter = PlanNatsUsers({{"nats-watch", "test", NatsUserRole::kEntity}}, {"test"}, "t");
  EXPECT_THAT(std::string(MessageOf(squatter.status())), HasSubstr("revocation watch's"));
  NatsConfigInput in;
  in.users = {{"watch.test", "pw", NatsUserRole::kRevocationWatch, "watch", "test"}};
  EXPECT_EQ(NatsServerConfig(in).status().code(), absl::StatusCode::kInvalidArgument);
  in.users = {{"nats-watch.test", "pw", NatsUserRole::kRevocationWatch, "nats-watch", "test"},
              {"agetic.test", "pw2", NatsUserRole::kOperator, "agetic", "test"}};
  auto text = NatsServerConfig(in);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_THAT(*text, HasSubstr("the revocation watch of env test"));
  EXPECT_THAT(*text, HasSubstr("the platform operator's (may revoke)"));
}

}  // namespace
}  // namespace chasqui
