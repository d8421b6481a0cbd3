// common/trust: every refusal of certificates, anchors, revocation lists, statements and the
// directory, each with its own code, with real libsodium keys and an injected time.

#include <string>
#include <vector>

#include "common/core/status.h"
#include "common/crypto/sodium.h"
#include "common/trust/anchors.h"
#include "common/trust/certificate.h"
#include "common/trust/directory.h"
#include "common/trust/requests.h"
#include "common/trust/revocation.h"
#include "common/trust/signed_message.h"
#include "common/trust/statement.h"
#include "common/trust/transparency.h"
#include "gtest/gtest.h"

namespace chasqui {
namespace {

constexpr int64_t kNow = 1'800'000'000'000;
constexpr int64_t kDay = 86'400'000;

std::string Str(const absl::Status& s) { return std::string(MessageOf(s)); }

struct Root {
  SigningKey key = SigningKey::Generate();
  TrustAnchor anchor;
  explicit Root(int64_t from = kNow - kDay, int64_t until = kNow + 365 * kDay) {
    anchor.key_id = RootKeyId(key.public_key());
    anchor.sign_pk = key.public_key();
    anchor.not_before_ms = from;
    anchor.not_after_ms = until;
  }
};

v1::CertificateBody Body(const Root& root, uint64_t serial, std::string entity = "segip",
                         v1::CertificateRole role = v1::CERTIFICATE_ROLE_ENTITY,
                         std::string env = "test") {
  v1::CertificateBody b;
  b.set_serial(serial);
  b.set_subject(entity);
  b.set_entity(entity);
  b.set_role(role);
  b.set_kind(KindOfRole(role));
  b.set_env(env);
  b.set_sign_pk(std::string(AsView(SigningKey::Generate().public_key())));
  if (KindOfRole(role) != v1::CERTIFICATE_KIND_PERSON) {
    b.set_kx_pk(std::string(AsView(KxKey::Generate().public_key())));
  }
  b.set_not_before_ms(kNow - kDay);
  b.set_not_after_ms(kNow + 30 * kDay);
  b.set_issuer_key_id(root.anchor.key_id);
  return b;
}

std::string Cert(const Root& root, const v1::CertificateBody& b) {
  return SignCertificate(b, root.key).SerializeAsString();
}

std::string List(const Root& root, uint64_t version, std::vector<uint64_t> revoked = {},
                 int64_t issued = kNow, int64_t valid_until = kNow + 3'600'000,
                 std::string env = "test") {
  v1::RevocationListBody b;
  b.set_env(env);
  b.set_version(version);
  b.set_issued_at_ms(issued);
  b.set_valid_until_ms(valid_until);
  b.set_issuer_key_id(root.anchor.key_id);
  for (uint64_t s : revoked) {
    auto* r = b.add_revoked();
    r->set_serial(s);
    r->set_reason(v1::REVOCATION_REASON_KEY_COMPROMISE);
    r->set_revoked_at_ms(issued);
  }
  return SignRevocationList(b, root.key).SerializeAsString();
}

TEST(Certificate, VerifiesWithPinnedRoot) {
  Root root;
  const TrustAnchors anchors({root.anchor});
  auto b = Body(root, 42);
  auto v = VerifyCertificate(Cert(root, b), anchors, "test", kNow);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->serial, 42u);
  EXPECT_EQ(v->entity, "segip");
  EXPECT_EQ(v->role, v1::CERTIFICATE_ROLE_ENTITY);
  EXPECT_TRUE(v->has_kx);
  EXPECT_EQ(AsView(v->sign_pk), b.sign_pk());
}

TEST(Certificate, PersonHasNoKxKey) {
  Root root;
  const TrustAnchors anchors({root.anchor});
  auto b = Body(root, 7, "agetic", v1::CERTIFICATE_ROLE_OPERATOR);
  b.set_subject("ana");
  auto v = VerifyCertificate(Cert(root, b), anchors, "test", kNow);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_FALSE(v->has_kx);
  EXPECT_EQ(v->kind, v1::CERTIFICATE_KIND_PERSON);
  b.set_kx_pk(std::string(32, 'k'));  // a person's key never seals traffic
  auto bad = VerifyCertificate(Cert(root, b), anchors, "test", kNow);
  EXPECT_TRUE(absl::IsInvalidArgument(bad.status())) << bad.status();
  EXPECT_NE(Str(bad.status()).find("no kx key"), std::string::npos);
}

TEST(Certificate, GarbageIsInvalidArgument) {
  Root root;
  auto v = VerifyCertificate(std::string("\xff\xff\xff garbage"), TrustAnchors({root.anchor}),
                             "test", kNow);
  EXPECT_TRUE(absl::IsInvalidArgument(v.status())) << v.status();
  std::string truncated = Cert(root, Body(root, 1));
  truncated.resize(truncated.size() - 10);
  v = VerifyCertificate(truncated, TrustAnchors({root.anchor}), "test", kNow);
  EXPECT_TRUE(absl::IsInvalidArgument(v.status())) << v.status();
}

TEST(Certificate, BadSignatureIsUnauthenticated) {
  Root root;
  v1::Certificate c = SignCertificate(Body(root, 5), root.key);
  std::string sig = c.signature();
  sig[3] ^= 1;
  c.set_signature(sig);
  auto v = VerifyCertificate(c, TrustAnchors({root.anchor}), "test", kNow);
  EXPECT_TRUE(absl::IsUnauthenticated(v.status())) << v.status();
  EXPECT_NE(Str(v.status()).find("signature does not verify"), std::string::npos);
}

TEST(Certificate, ForgedByAnotherKeyClaimingThePinnedRoot) {
  Root root;
  Root forger;
  auto b = Body(root, 5);  // names the real root as issuer
  auto v = VerifyCertificate(Cert(forger, b), TrustAnchors({root.anchor}), "test", kNow);
  EXPECT_TRUE(absl::IsUnauthenticated(v.status())) << v.status();
}

TEST(Certificate, UnknownRootIsNotFound) {
  Root root;
  Root other;
  auto v = VerifyCertificate(Cert(other, Body(other, 5)), TrustAnchors({root.anchor}), "test",
                             kNow);
  EXPECT_TRUE(absl::IsNotFound(v.status())) << v.status();
  EXPECT_NE(Str(v.status()).find("unknown root"), std::string::npos);
}

TEST(Certificate, ExpiredAndNotYetValid) {
  Root root(kNow - 10 * kDay);
  const TrustAnchors anchors({root.anchor});
  const std::string c = Cert(root, Body(root, 5));
  auto late = VerifyCertificate(c, anchors, "test", kNow + 31 * kDay);
  EXPECT_TRUE(absl::IsFailedPrecondition(late.status())) << late.status();
  EXPECT_NE(Str(late.status()).find("expired"), std::string::npos);
  auto early = VerifyCertificate(c, anchors, "test", kNow - 2 * kDay);
  EXPECT_TRUE(absl::IsFailedPrecondition(early.status())) << early.status();
  EXPECT_NE(Str(early.status()).find("not valid before"), std::string::npos);
}

TEST(Certificate, WrongEnvIsPermissionDenied) {
  Root root;
  const std::string prod = Cert(root, Body(root, 5, "segip", v1::CERTIFICATE_ROLE_ENTITY, "prod"));
  auto v = VerifyCertificate(prod, TrustAnchors({root.anchor}), "test", kNow);
  EXPECT_TRUE(absl::IsPermissionDenied(v.status())) << v.status();
  EXPECT_NE(Str(v.status()).find("environment"), std::string::npos);
}

TEST(Certificate, BodyRelabelledToAnotherEnvFailsTheSignature) {
  // A prod certificate whose body claims test: the tag is built from the verifier's env, so
  // the prod signature cannot pass as a test one.
  Root root;
  auto b = Body(root, 5, "segip", v1::CERTIFICATE_ROLE_ENTITY, "prod");
  v1::Certificate c = SignCertificate(b, root.key);
  b.set_env("test");
  c.set_body(b.SerializeAsString());
  auto v = VerifyCertificate(c, TrustAnchors({root.anchor}), "test", kNow);
  EXPECT_TRUE(absl::IsUnauthenticated(v.status())) << v.status();
}

TEST(Certificate, KindMustMatchRole) {
  Root root;
  auto b = Body(root, 5);
  b.set_kind(v1::CERTIFICATE_KIND_PERSON);
  auto v = VerifyCertificate(Cert(root, b), TrustAnchors({root.anchor}), "test", kNow);
  EXPECT_TRUE(absl::IsInvalidArgument(v.status())) << v.status();
}

TEST(Certificate, RolesParseAndName) {
  for (const char* n : {"entity", "router", "catalog", "crypto", "quota", "audit", "mae",
                        "manager", "operator"}) {
    auto r = ParseCertificateRole(n);
    ASSERT_TRUE(r.ok()) << n;
    EXPECT_EQ(CertificateRoleName(*r), n);
  }
  EXPECT_TRUE(absl::IsInvalidArgument(ParseCertificateRole("root").status()));
}

TEST(Anchors, RootOutsideItsValidityRefusesCertificates) {
  Root root(kNow - kDay, kNow + kDay);
  const std::string c = Cert(root, Body(root, 5));
  auto v = VerifyCertificate(c, TrustAnchors({root.anchor}), "test", kNow + 2 * kDay);
  EXPECT_TRUE(absl::IsFailedPrecondition(v.status())) << v.status();
  EXPECT_NE(Str(v.status()).find("valid only"), std::string::npos);
}

TEST(Anchors, EndorsementAddsRootAndOnlyShrinksValidity) {
  Root old_root;
  Root new_root(kNow, kNow + 730 * kDay);
  TrustAnchors anchors({old_root.anchor});
  ASSERT_TRUE(anchors.ApplyEndorsement(EndorseRoot(old_root.key, new_root.anchor, kNow), kNow).ok());
  ASSERT_NE(anchors.Find(new_root.anchor.key_id), nullptr);

  TrustAnchor shorter = old_root.anchor;
  shorter.not_after_ms = kNow + 7 * kDay;
  ASSERT_TRUE(anchors.ApplyEndorsement(EndorseRoot(new_root.key, shorter, kNow), kNow).ok());
  EXPECT_EQ(anchors.Find(old_root.anchor.key_id)->not_after_ms, kNow + 7 * kDay);

  TrustAnchor longer = old_root.anchor;
  longer.not_after_ms = kNow + 900 * kDay;  // never lengthened
  ASSERT_TRUE(anchors.ApplyEndorsement(EndorseRoot(new_root.key, longer, kNow), kNow).ok());
  EXPECT_EQ(anchors.Find(old_root.anchor.key_id)->not_after_ms, kNow + 7 * kDay);
}

TEST(Anchors, EndorsementRefusals) {
  Root pinned;
  Root stranger;
  Root candidate;
  TrustAnchors anchors({pinned.anchor});
  auto by_stranger = anchors.ApplyEndorsement(EndorseRoot(stranger.key, candidate.anchor, kNow), kNow);
  EXPECT_TRUE(absl::IsNotFound(by_stranger)) << by_stranger;
  auto e = EndorseRoot(pinned.key, candidate.anchor, kNow);
  std::string sig = e.signature();
  sig[0] ^= 1;
  e.set_signature(sig);
  auto forged = anchors.ApplyEndorsement(e, kNow);
  EXPECT_TRUE(absl::IsUnauthenticated(forged)) << forged;
  e.set_body("\x01garbage");
  EXPECT_TRUE(absl::IsInvalidArgument(anchors.ApplyEndorsement(e, kNow)));
  EXPECT_EQ(anchors.anchors().size(), 1u);
}

TEST(Anchors, FileRoundTripAndRefusals) {
  Root a;
  Root b;
  const TrustAnchors anchors({a.anchor, b.anchor});
  auto back = ParseTrustAnchors(TrustAnchorsJson(anchors), "roots.json");
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->anchors().size(), 2u);
  EXPECT_EQ(back->anchors()[1].sign_pk, b.anchor.sign_pk);
  auto bad = ParseTrustAnchors(R"({"version":1,"roots":[{"key_id":"00","sign_pk":"AAAA"}]})",
                               "roots.json");
  EXPECT_TRUE(absl::IsInvalidArgument(bad.status()));
  EXPECT_NE(Str(bad.status()).find("roots.json: roots[0]"), std::string::npos);
  EXPECT_TRUE(absl::IsInvalidArgument(ParseTrustAnchors("nope", "x").status()));
}

TEST(Revocation, VerifiesAndRefuses) {
  Root root;
  const TrustAnchors anchors({root.anchor});
  auto ok = VerifyRevocationList(List(root, 3, {9}), anchors, "test", kNow);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE(ok->IsRevoked(9));
  EXPECT_EQ(ok->version, 3u);

  auto stale = VerifyRevocationList(List(root, 3), anchors, "test", kNow + 3'600'001);
  EXPECT_TRUE(absl::IsUnavailable(stale.status())) << stale.status();
  EXPECT_NE(Str(stale.status()).find("stale"), std::string::npos);

  auto other_env = VerifyRevocationList(List(root, 3, {}, kNow, kNow + 1000, "prod"), anchors,
                                        "test", kNow);
  EXPECT_TRUE(absl::IsPermissionDenied(other_env.status())) << other_env.status();

  Root other;
  auto unknown = VerifyRevocationList(List(other, 3), anchors, "test", kNow);
  EXPECT_TRUE(absl::IsNotFound(unknown.status())) << unknown.status();

  v1::SignedRevocationList l;
  ASSERT_TRUE(l.ParseFromString(List(root, 3)));
  std::string sig = l.signature();
  sig[10] ^= 1;
  l.set_signature(sig);
  auto forged = VerifyRevocationList(l.SerializeAsString(), anchors, "test", kNow);
  EXPECT_TRUE(absl::IsUnauthenticated(forged.status())) << forged.status();

  auto future = VerifyRevocationList(List(root, 3, {}, kNow + kDay, kNow + 2 * kDay), anchors,
                                     "test", kNow);
  EXPECT_TRUE(absl::IsFailedPrecondition(future.status())) << future.status();

  auto garbage = VerifyRevocationList("\x0a\xff", anchors, "test", kNow);
  EXPECT_TRUE(absl::IsInvalidArgument(garbage.status())) << garbage.status();
}

TEST(Statement, VerifiesAtSigningTimeAndRefusesOtherKindOrEnv) {
  Root root(kNow - kDay, kNow + kDay);
  v1::StatementBody b;
  b.set_kind(v1::STATEMENT_KIND_CHECKPOINT);
  b.set_env("test");
  b.set_digest(std::string(32, 'd'));
  b.set_signed_at_ms(kNow);
  b.set_issuer_key_id(root.anchor.key_id);
  b.set_requester_serial(77);
  const std::string s = SignStatement(b, root.key).SerializeAsString();
  const TrustAnchors anchors({root.anchor});
  auto v = VerifyStatement(s, v1::STATEMENT_KIND_CHECKPOINT, anchors, "test");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->requester_serial, 77u);
  EXPECT_EQ(v->signed_at_ms, kNow);

  auto as_annex = VerifyStatement(s, v1::STATEMENT_KIND_ANNEX, anchors, "test");
  EXPECT_TRUE(absl::IsPermissionDenied(as_annex.status())) << as_annex.status();
  auto in_prod = VerifyStatement(s, v1::STATEMENT_KIND_CHECKPOINT, anchors, "prod");
  EXPECT_TRUE(absl::IsPermissionDenied(in_prod.status())) << in_prod.status();

  // Signed before the root was valid: refused even though the root is valid today.
  b.set_signed_at_ms(kNow - 2 * kDay);
  auto early = VerifyStatement(SignStatement(b, root.key).SerializeAsString(),
                               v1::STATEMENT_KIND_CHECKPOINT, anchors, "test");
  EXPECT_TRUE(absl::IsFailedPrecondition(early.status())) << early.status();

  v1::SignedStatement tampered;
  ASSERT_TRUE(tampered.ParseFromString(s));
  b.set_signed_at_ms(kNow);
  b.set_digest(std::string(32, 'e'));
  tampered.set_body(b.SerializeAsString());
  auto forged = VerifyStatement(tampered.SerializeAsString(), v1::STATEMENT_KIND_CHECKPOINT,
                                anchors, "test");
  EXPECT_TRUE(absl::IsUnauthenticated(forged.status())) << forged.status();
}

TEST(Directory, FailsClosedUntilAListArrivesAndWhenStale) {
  Root root;
  CertificateDirectory dir("test", TrustAnchors({root.anchor}));
  ASSERT_TRUE(dir.AddCertificates({Cert(root, Body(root, 5))}, kNow).ok());
  auto none = dir.Lookup(5, kNow);
  EXPECT_TRUE(absl::IsUnavailable(none.status())) << none.status();
  EXPECT_TRUE(absl::IsUnavailable(dir.BuildTrustStore(kNow).status()));

  ASSERT_TRUE(dir.ApplyRevocationList(List(root, 1), kNow).ok());
  auto found = dir.Lookup(5, kNow);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ((*found)->entity, "segip");

  auto stale = dir.Lookup(5, kNow + 3'600'001);
  EXPECT_TRUE(absl::IsUnavailable(stale.status())) << stale.status();
  EXPECT_NE(Str(stale.status()).find("stale"), std::string::npos);
  EXPECT_TRUE(absl::IsUnavailable(dir.Fresh(kNow + 3'600'001)));
}

TEST(Directory, RevokedUnknownAndExpired) {
  Root root;
  CertificateDirectory dir("test", TrustAnchors({root.anchor}));
  auto short_lived = Body(root, 6, "sin");
  short_lived.set_not_after_ms(kNow + 1000);
  ASSERT_TRUE(dir.AddCertificates({Cert(root, Body(root, 5)), Cert(root, short_lived)}, kNow).ok());
  ASSERT_TRUE(dir.ApplyRevocationList(List(root, 1, {5}), kNow).ok());
  auto revoked = dir.Lookup(5, kNow);
  EXPECT_TRUE(absl::IsPermissionDenied(revoked.status())) << revoked.status();
  EXPECT_NE(Str(revoked.status()).find("revoked"), std::string::npos);
  EXPECT_TRUE(absl::IsNotFound(dir.Lookup(99, kNow).status()));
  EXPECT_TRUE(dir.Lookup(6, kNow).ok());
  auto expired = dir.Lookup(6, kNow + 2000);
  EXPECT_TRUE(absl::IsFailedPrecondition(expired.status())) << expired.status();
}

TEST(Directory, RefusesOlderListAndKeepsNewer) {
  Root root;
  CertificateDirectory dir("test", TrustAnchors({root.anchor}));
  ASSERT_TRUE(dir.ApplyRevocationList(List(root, 4, {5}), kNow).ok());
  auto older = dir.ApplyRevocationList(List(root, 3), kNow);
  EXPECT_TRUE(absl::IsFailedPrecondition(older)) << older;
  EXPECT_NE(Str(older).find("older"), std::string::npos);
  EXPECT_EQ(dir.revocation_version(), 4u);
  EXPECT_TRUE(dir.ApplyRevocationList(List(root, 4, {5}), kNow).ok());  // a repeat
  ASSERT_TRUE(dir.ApplyRevocationList(List(root, 5), kNow).ok());
  EXPECT_EQ(dir.revocation_version(), 5u);
}

TEST(Directory, RefusesForgedCertificatesButKeepsTheGoodOnes) {
  Root root;
  Root forger;
  CertificateDirectory dir("test", TrustAnchors({root.anchor}));
  auto s = dir.AddCertificates({Cert(forger, Body(root, 8)), Cert(root, Body(root, 9))}, kNow);
  EXPECT_TRUE(absl::IsUnauthenticated(s)) << s;
  EXPECT_EQ(dir.size(), 1u);
}

TEST(Directory, BuildsTodaysTrustStore) {
  Root root;
  CertificateDirectory dir("test", TrustAnchors({root.anchor}));
  auto router = Body(root, 10, "router", v1::CERTIFICATE_ROLE_ROUTER);
  auto op = Body(root, 11, "agetic", v1::CERTIFICATE_ROLE_OPERATOR);
  op.set_subject("ana");
  ASSERT_TRUE(dir.AddCertificates({Cert(root, Body(root, 5)), Cert(root, Body(root, 6, "sin")),
                                   Cert(root, router), Cert(root, op)},
                                  kNow)
                  .ok());
  ASSERT_TRUE(dir.ApplyRevocationList(List(root, 1, {6}), kNow).ok());
  auto store = dir.BuildTrustStore(kNow);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(store->size(), 2u);  // segip and the router; sin is revoked; people are not there
  ASSERT_NE(store->BySerial(5), nullptr);
  EXPECT_EQ(store->BySerial(6), nullptr);
  ASSERT_NE(store->Find("router", Role::kRouter), nullptr);
  EXPECT_EQ(store->Find("router", Role::kRouter)->serial, 10u);
}

TEST(Directory, RotationOverlapThenOldRootRefused) {
  Root old_root(kNow - kDay, kNow + 365 * kDay);
  Root new_root(kNow, kNow + 730 * kDay);
  CertificateDirectory dir("test", TrustAnchors({old_root.anchor}));
  ASSERT_TRUE(dir.ApplyEndorsement(EndorseRoot(old_root.key, new_root.anchor, kNow), kNow).ok());
  TrustAnchor ending = old_root.anchor;
  ending.not_after_ms = kNow + kDay;  // the overlap
  ASSERT_TRUE(dir.ApplyEndorsement(EndorseRoot(new_root.key, ending, kNow), kNow).ok());
  ASSERT_TRUE(dir.AddCertificates({Cert(old_root, Body(old_root, 1)),
                                   Cert(new_root, Body(new_root, 2, "sin"))},
                                  kNow)
                  .ok());
  ASSERT_TRUE(dir.ApplyRevocationList(List(new_root, 1, {}, kNow, kNow + 3 * kDay), kNow).ok());
  EXPECT_TRUE(dir.Lookup(1, kNow + 1000).ok());
  EXPECT_TRUE(dir.Lookup(2, kNow + 1000).ok());
  auto after = dir.Lookup(1, kNow + 2 * kDay);
  EXPECT_TRUE(absl::IsFailedPrecondition(after.status())) << after.status();
  EXPECT_TRUE(dir.Lookup(2, kNow + 2 * kDay).ok());
}

TEST(Transparency, ChainDetectsAlteredEntry) {
  std::vector<v1::TransparencyLogEntry> entries;
  std::string prev(32, '\0');
  for (uint64_t i = 1; i <= 3; ++i) {
    v1::TransparencyLogEntry e;
    e.set_sequence(i);
    e.set_prev_hash(prev);
    e.set_logged_at_ms(kNow + i);
    e.set_certificate("cert" + std::to_string(i));
    const Hash32 h = TransparencyEntryHash(i, prev, kNow + i, e.certificate());
    e.set_entry_hash(std::string(AsView(h)));
    prev = e.entry_hash();
    entries.push_back(e);
  }
  EXPECT_TRUE(VerifyTransparencyChain(entries, 0, std::string(32, '\0')).ok());
  entries[1].set_certificate("swapped");
  EXPECT_TRUE(absl::IsDataLoss(VerifyTransparencyChain(entries, 0, std::string(32, '\0'))));
  entries.erase(entries.begin() + 1);
  EXPECT_TRUE(absl::IsDataLoss(VerifyTransparencyChain(entries, 0, std::string(32, '\0'))));
}

TEST(Requests, ControlStatusRoundTrip) {
  const absl::Status s = absl::PermissionDeniedError("no");
  EXPECT_EQ(FromControlStatus(ToControlStatus(s)), s);
  EXPECT_TRUE(FromControlStatus(ToControlStatus(absl::OkStatus())).ok());
  v1::ControlStatus weird;
  weird.set_code(999);
  EXPECT_TRUE(absl::IsUnknown(FromControlStatus(weird)));
}

TEST(Tags, NameKindAndEnvironment) {
  EXPECT_EQ(CertificateTag("test"), "chasqui/v1/certificate/test");
  EXPECT_EQ(RevocationTag("prod"), "chasqui/v1/revocation/prod");
  EXPECT_EQ(StatementTag(v1::STATEMENT_KIND_ANNEX, "test"), "chasqui/v1/annex/test");
  EXPECT_EQ(StatementTag(v1::STATEMENT_KIND_CHECKPOINT, "prod"), "chasqui/v1/checkpoint/prod");
  EXPECT_EQ(EnrolmentTag("test"), "chasqui/v1/enrolment/test");
}

}  // namespace
}  // namespace chasqui
