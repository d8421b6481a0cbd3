// Who loses their nats-server user (EntityWithdrawn), and the pid-file signal that makes
// nats-server reread its configuration (SignalNatsReload), with no bus.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "common/core/files.h"
#include "common/core/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/gateway/nats_watch.h"
#include "tests/support/temp_dir.h"

namespace chasqui {
namespace {

using ::chasqui::testing::TempDir;
using ::testing::HasSubstr;

constexpr int64_t kNow = 1'800'000'000'000;

VerifiedCertificate Cert(uint64_t serial, v1::CertificateRole role = v1::CERTIFICATE_ROLE_ENTITY,
                         int64_t not_after_ms = kNow + 1'000'000) {
  VerifiedCertificate c;
  c.serial = serial;
  c.role = role;
  c.entity = "segip";
  c.env = "test";
  c.not_before_ms = kNow - 1'000'000;
  c.not_after_ms = not_after_ms;
  return c;
}

VerifiedRevocationList List(std::vector<std::pair<uint64_t, v1::RevocationReason>> revoked) {
  VerifiedRevocationList l;
  l.env = "test";
  l.version = 7;
  for (const auto& [serial, reason] : revoked) {
    v1::RevokedCertificate r;
    r.set_serial(serial);
    r.set_reason(reason);
    l.revoked[serial] = r;
  }
  return l;
}

constexpr auto kWithdrawn = v1::REVOCATION_REASON_ENTITY_WITHDRAWN;
constexpr auto kSuperseded = v1::REVOCATION_REASON_SUPERSEDED;
constexpr auto kCompromise = v1::REVOCATION_REASON_KEY_COMPROMISE;

TEST(EntityWithdrawnTest, OnlyAWithdrawalThatLeavesNoUsableGatewayCertificate) {
  // Never enrolled, or nothing revoked: keeps its user.
  EXPECT_FALSE(EntityWithdrawn({}, List({}), kNow));
  EXPECT_FALSE(EntityWithdrawn({Cert(1)}, List({}), kNow));
  // Its only certificate withdrawn.
  EXPECT_TRUE(EntityWithdrawn({Cert(1)}, List({{1, kWithdrawn}}), kNow));
  // A rotation: the old one superseded (or compromised), the new one valid.
  EXPECT_FALSE(EntityWithdrawn({Cert(1), Cert(2)}, List({{1, kSuperseded}}), kNow));
  EXPECT_FALSE(EntityWithdrawn({Cert(1), Cert(2)}, List({{1, kCompromise}}), kNow));
  // Withdrawn after a rotation: every certificate revoked, one of them for withdrawal.
  EXPECT_TRUE(EntityWithdrawn({Cert(1), Cert(2)}, List({{1, kSuperseded}, {2, kWithdrawn}}), kNow));
  // Withdrawn, with another certificate still valid: it is back (or never left).
  EXPECT_FALSE(EntityWithdrawn({Cert(1), Cert(2)}, List({{1, kWithdrawn}}), kNow));
  // ... but an expired one does not count as usable.
  EXPECT_TRUE(
      EntityWithdrawn({Cert(1), Cert(2, v1::CERTIFICATE_ROLE_ENTITY, kNow - 1)},
                      List({{1, kWithdrawn}}), kNow));
  // Every key compromised, none withdrawn: it must enrol again, which needs its user.
  EXPECT_FALSE(EntityWithdrawn({Cert(1), Cert(2)}, List({{1, kCompromise}, {2, kCompromise}}),
                               kNow));
  // People's certificates play no part, withdrawn or not.
  EXPECT_FALSE(EntityWithdrawn({Cert(5, v1::CERTIFICATE_ROLE_MANAGER)}, List({{5, kWithdrawn}}),
                               kNow));
  EXPECT_TRUE(EntityWithdrawn({Cert(1), Cert(5, v1::CERTIFICATE_ROLE_MANAGER)},
                              List({{1, kWithdrawn}}), kNow));
  // Another env's certificate is not this list's business.
  VerifiedCertificate prod = Cert(1);
  prod.env = "prod";
  EXPECT_FALSE(EntityWithdrawn({prod}, List({{1, kWithdrawn}}), kNow));
}

TEST(SignalNatsReloadTest, RefusesWhatIsNotARunningNatsServer) {
  TempDir dir;
  auto missing = SignalNatsReload(dir.File("none.pid"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();

  ASSERT_TRUE(WriteFileDurably(dir.File("garbage.pid"), "12ab\n", 0644, false).ok());
  auto garbage = SignalNatsReload(dir.File("garbage.pid"));
  EXPECT_EQ(garbage.status().code(), absl::StatusCode::kInvalidArgument) << garbage.status();

  // A stale pid file naming some other process: never signalled (here, this test itself).
  ASSERT_TRUE(
      WriteFileDurably(dir.File("self.pid"), std::to_string(::getpid()), 0644, false).ok());
  auto stranger = SignalNatsReload(dir.File("self.pid"));
  EXPECT_EQ(stranger.status().code(), absl::StatusCode::kFailedPrecondition) << stranger.status();
  EXPECT_THAT(std::string(MessageOf(stranger.status())), HasSubstr("not nats-server"));

  // A pid no process has.
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) ::_exit(0);
  ASSERT_EQ(::waitpid(child, nullptr, 0), child);
  ASSERT_TRUE(WriteFileDurably(dir.File("gone.pid"), std::to_string(child), 0644, false).ok());
  auto gone = SignalNatsReload(dir.File("gone.pid"));
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kUnavailable) << gone.status();
}

}  // namespace
}  // namespace chasqui
