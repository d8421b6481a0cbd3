// Root rotation with the real ceremony, RocksDB and libsodium: a verifier that pinned only the
// first root learns the second through its endorsement; during the overlap certificates of
// both roots verify; after it, only the new root's do. Time is a FakeClock.

#include <memory>
#include <string>

#include "common/core/clock.h"
#include "common/core/status.h"
#include "common/trust/anchors.h"
#include "common/trust/certificate.h"
#include "common/trust/directory.h"
#include "gtest/gtest.h"
#include "services/crypto/authority.h"
#include "services/crypto/ceremony.h"
#include "tests/services/crypto/crypto_test_support.h"
#include "tests/support/temp_dir.h"

namespace chasqui::testing {
namespace {

constexpr int64_t kDay = 86'400'000;

// Enrols `who` directly against the authority (no bus: the service test covers that path).
absl::StatusOr<std::string> EnrolDirect(CertificateAuthority& ca, KvStore* store,
                                        const Requester& who, const std::string& entity,
                                        const Clock& clock) {
  CHASQUI_ASSIGN_OR_RETURN(IssuedToken t,
                           MakeEnrolmentToken(entity, "", "entity", "test", kDay, clock));
  CHASQUI_RETURN_IF_ERROR(StoreToken(store, t));
  const auto body = EnrolmentBody(who, t.token, entity, v1::CERTIFICATE_ROLE_ENTITY, "test",
                                  clock.NowUnixMillis());
  CHASQUI_ASSIGN_OR_RETURN(v1::EnrolmentReply reply,
                           ca.Enrol(MakeEnrolmentRequest(body, who.sign).SerializeAsString()));
  return reply.certificate().SerializeAsString();
}

TEST(RootRotation, OverlapAcceptsBothRootsThenOnlyTheNewOne) {
  TempDir dir;
  const std::string data = dir.File("data");
  FakeClock clock;
  const Passphrase first("first passphrase");
  const Passphrase second("second passphrase");
  auto init = InitRoot(data, first, KdfCost::kTestOnlyMinimum, 3650 * kDay, clock);
  ASSERT_TRUE(init.ok()) << init.status();
  const TrustAnchors pinned = init->anchors;  // what routers pinned at the ceremony

  std::string old_cert;
  {
    auto store = OpenAuthorityStore(data);
    ASSERT_TRUE(store.ok()) << store.status();
    auto root = LoadCurrentRoot(data, store->get(), first);
    ASSERT_TRUE(root.ok()) << root.status();
    auto ca = CertificateAuthority::Open({}, store->get(), *std::move(root), clock);
    ASSERT_TRUE(ca.ok()) << ca.status();
    auto c = EnrolDirect(**ca, store->get(), Requester{}, "segip", clock);
    ASSERT_TRUE(c.ok()) << c.status();
    old_cert = *c;

    // Rotation needs the service stopped: the store is held here.
    auto busy = RotateRoot(data, first, second, KdfCost::kTestOnlyMinimum, 3650 * kDay,
                           2 * kDay, clock);
    EXPECT_TRUE(absl::IsUnavailable(busy.status())) << busy.status();
  }

  clock.AdvanceMillis(kDay);
  auto wrong = RotateRoot(data, second, second, KdfCost::kTestOnlyMinimum, 3650 * kDay, 2 * kDay,
                          clock);
  EXPECT_TRUE(absl::IsPermissionDenied(wrong.status())) << wrong.status();
  auto rotated = RotateRoot(data, first, second, KdfCost::kTestOnlyMinimum, 3650 * kDay,
                            2 * kDay, clock);
  ASSERT_TRUE(rotated.ok()) << rotated.status();
  ASSERT_EQ(rotated->anchors.anchors().size(), 2u);
  const int64_t overlap_end = clock.NowUnixMillis() + 2 * kDay;
  EXPECT_EQ(rotated->anchors.Find(init->root.key_id)->not_after_ms, overlap_end);
  auto file = LoadTrustAnchors(rotated->anchors_file);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->anchors().size(), 2u);

  auto store = OpenAuthorityStore(data);
  ASSERT_TRUE(store.ok()) << store.status();
  auto old_pass = LoadCurrentRoot(data, store->get(), first);
  EXPECT_TRUE(absl::IsPermissionDenied(old_pass.status())) << old_pass.status();
  auto root = LoadCurrentRoot(data, store->get(), second);
  ASSERT_TRUE(root.ok()) << root.status();
  auto ca = CertificateAuthority::Open({}, store->get(), *std::move(root), clock);
  ASSERT_TRUE(ca.ok()) << ca.status();
  EXPECT_EQ((*ca)->root_key_id(), rotated->root.key_id);
  auto new_cert = EnrolDirect(**ca, store->get(), Requester{}, "sin", clock);
  ASSERT_TRUE(new_cert.ok()) << new_cert.status();

  // A router that pinned only the first root learns the second from the directory.
  CertificateDirectory router("test", pinned);
  v1::DirectoryRequest req;
  req.set_env("test");
  req.set_anchors(true);
  req.set_revocation_list(true);
  auto reply = (*ca)->Directory(req.SerializeAsString());
  ASSERT_TRUE(reply.ok()) << reply.status();
  ASSERT_EQ(reply->anchors_size(), 3);  // init's self-endorsement + the two of the rotation
  for (const auto& e : reply->anchors()) {
    ASSERT_TRUE(router.ApplyEndorsement(e, clock.NowUnixMillis()).ok());
  }
  ASSERT_TRUE(router.AddCertificates({old_cert, *new_cert}, clock.NowUnixMillis()).ok());
  ASSERT_TRUE(router.ApplyRevocationList(reply->revocation_list().SerializeAsString(),
                                         clock.NowUnixMillis())
                  .ok());
  auto old_serial = VerifyCertificate(old_cert, router.anchors(), "test", clock.NowUnixMillis());
  auto new_serial = VerifyCertificate(*new_cert, router.anchors(), "test", clock.NowUnixMillis());
  ASSERT_TRUE(old_serial.ok()) << old_serial.status();
  ASSERT_TRUE(new_serial.ok()) << new_serial.status();
  EXPECT_TRUE(router.Lookup(old_serial->serial, clock.NowUnixMillis()).ok());
  EXPECT_TRUE(router.Lookup(new_serial->serial, clock.NowUnixMillis()).ok());

  // After the overlap: the old root's certificates are refused, the new one's accepted.
  clock.SetUnixMillis(overlap_end + 1);
  auto reissued = (*ca)->ReissueDue();
  ASSERT_TRUE(reissued.ok()) << reissued.status();
  ASSERT_FALSE(reissued->empty());
  ASSERT_TRUE(router.ApplyRevocationList((*reissued)[0].SerializeAsString(), clock.NowUnixMillis())
                  .ok());
  auto after = router.Lookup(old_serial->serial, clock.NowUnixMillis());
  EXPECT_TRUE(absl::IsFailedPrecondition(after.status())) << after.status();
  EXPECT_TRUE(router.Lookup(new_serial->serial, clock.NowUnixMillis()).ok());
  auto fresh = VerifyCertificate(old_cert, *file, "test", clock.NowUnixMillis());
  EXPECT_TRUE(absl::IsFailedPrecondition(fresh.status())) << fresh.status();
}

TEST(RootRotation, InitRefusesASecondRoot) {
  TempDir dir;
  FakeClock clock;
  const Passphrase p("p");
  ASSERT_TRUE(InitRoot(dir.File("d"), p, KdfCost::kTestOnlyMinimum, kDay, clock).ok());
  auto again = InitRoot(dir.File("d"), p, KdfCost::kTestOnlyMinimum, kDay, clock);
  EXPECT_TRUE(absl::IsAlreadyExists(again.status())) << again.status();
}

}  // namespace
}  // namespace chasqui::testing
