#include "common/crypto/sodium.h"

#include <sodium.h>

#include <set>
#include <string>

#include "common/core/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace chasqui {
namespace {

using ::testing::HasSubstr;

std::string SecretView(const SecretBytes& s) { return std::string(AsView(s.data(), s.size())); }

SecretBytes RandomKey() {
  SecretBytes k(32);
  RandomBytes(k.data(), k.size());
  return k;
}

TEST(SigningKeyTest, SignatureVerifies) {
  const SigningKey key = SigningKey::Generate();
  const SignatureBytes sig = key.Sign("the message");
  EXPECT_TRUE(VerifySignature(key.public_key(), "the message", sig));
  EXPECT_TRUE(VerifySignature(key.public_key(), "", key.Sign("")));
}

TEST(SigningKeyTest, VerifyFailsOnAlteredMessage) {
  const SigningKey key = SigningKey::Generate();
  const SignatureBytes sig = key.Sign("the message");
  EXPECT_FALSE(VerifySignature(key.public_key(), "the messagE", sig));
  EXPECT_FALSE(VerifySignature(key.public_key(), "the message ", sig));
  EXPECT_FALSE(VerifySignature(key.public_key(), "", sig));
}

TEST(SigningKeyTest, VerifyFailsOnAnyAlteredSignatureByte) {
  const SigningKey key = SigningKey::Generate();
  const SignatureBytes sig = key.Sign("m");
  for (size_t i = 0; i < sig.size(); ++i) {
    SignatureBytes bad = sig;
    bad[i] ^= 0x01;
    EXPECT_FALSE(VerifySignature(key.public_key(), "m", bad)) << "byte " << i;
  }
}

TEST(SigningKeyTest, VerifyFailsUnderAnotherKey) {
  const SigningKey a = SigningKey::Generate();
  const SigningKey b = SigningKey::Generate();
  EXPECT_NE(a.public_key(), b.public_key());
  EXPECT_FALSE(VerifySignature(b.public_key(), "m", a.Sign("m")));
}

TEST(SigningKeyTest, FromSecretRoundTrip) {
  const SigningKey key = SigningKey::Generate();
  auto again = SigningKey::FromSecret(AsView(key.secret().data(), key.secret().size()));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->public_key(), key.public_key());
  EXPECT_TRUE(VerifySignature(key.public_key(), "x", again->Sign("x")));
  // Ed25519 is deterministic: the same key signs the same bytes the same way.
  EXPECT_EQ(again->Sign("x"), key.Sign("x"));
}

TEST(SigningKeyTest, FromSecretRefusesWrongSize) {
  const SigningKey key = SigningKey::Generate();
  const std::string secret = SecretView(key.secret());
  for (size_t n : {size_t{0}, size_t{32}, size_t{63}, size_t{65}}) {
    std::string s = secret;
    s.resize(n);
    auto k = SigningKey::FromSecret(s);
    EXPECT_EQ(k.status().code(), absl::StatusCode::kInvalidArgument) << n;
    EXPECT_THAT(std::string(MessageOf(k.status())), HasSubstr("64 bytes"));
  }
}

TEST(SigningKeyTest, FromSecretRefusesMismatchedPublicHalf) {
  const SigningKey key = SigningKey::Generate();
  std::string secret = SecretView(key.secret());
  secret[40] ^= 0x01;  // in the embedded public key
  auto k = SigningKey::FromSecret(secret);
  EXPECT_EQ(k.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(MessageOf(k.status())), HasSubstr("does not match"));
}

TEST(KxKeyTest, FromSecretDerivesTheSamePublicKey) {
  const KxKey key = KxKey::Generate();
  auto again = KxKey::FromSecret(AsView(key.secret().data(), key.secret().size()));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->public_key(), key.public_key());
  EXPECT_FALSE(KxKey::FromSecret(std::string(31, 'x')).ok());
  EXPECT_FALSE(KxKey::FromSecret(std::string(33, 'x')).ok());
}

TEST(SessionKeysTest, ClientTxIsServerRxAndViceVersa) {
  const KxKey client = KxKey::Generate();
  const KxKey server = KxKey::Generate();
  auto c = ClientSessionKeys(client, server.public_key());
  auto s = ServerSessionKeys(server, client.public_key());
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(SecretView(c->tx), SecretView(s->rx));
  EXPECT_EQ(SecretView(c->rx), SecretView(s->tx));
  EXPECT_NE(SecretView(c->tx), SecretView(c->rx));
  EXPECT_NE(SecretView(c->tx), std::string(32, '\0'));

  // What one side seals, the other opens.
  const std::string nonce(kAeadNonceBytes, 'n');
  auto opened = AeadOpen(s->rx, nonce, "ad", AeadSeal(c->tx, nonce, "ad", "hello"));
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(*opened, "hello");
}

TEST(SessionKeysTest, AThirdPartyDerivesOtherKeys) {
  const KxKey client = KxKey::Generate();
  const KxKey server = KxKey::Generate();
  const KxKey other = KxKey::Generate();
  auto c = ClientSessionKeys(client, server.public_key());
  auto o = ServerSessionKeys(other, client.public_key());
  ASSERT_TRUE(c.ok() && o.ok());
  EXPECT_NE(SecretView(c->tx), SecretView(o->rx));
}

TEST(SessionKeysTest, RefusesALowOrderPeerKey) {
  const KxKey own = KxKey::Generate();
  const KxPublicKey zero{};  // the identity point: the shared secret would be all zeros
  EXPECT_EQ(ClientSessionKeys(own, zero).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ServerSessionKeys(own, zero).status().code(), absl::StatusCode::kInvalidArgument);
}

class AeadTest : public ::testing::Test {
 protected:
  SecretBytes key_ = RandomKey();
  std::string nonce_ = NonceSource().Next();
  std::string ad_ = "associated data";
  std::string plaintext_ = "personal data of an official";
  std::string sealed_ = AeadSeal(key_, nonce_, ad_, plaintext_);
};

TEST_F(AeadTest, RoundTrip) {
  EXPECT_EQ(sealed_.size(), plaintext_.size() + kAeadTagBytes);
  EXPECT_EQ(sealed_.find(plaintext_), std::string::npos);
  auto opened = AeadOpen(key_, nonce_, ad_, sealed_);
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(*opened, plaintext_);
}

TEST_F(AeadTest, EmptyPlaintextRoundTrip) {
  const std::string sealed = AeadSeal(key_, nonce_, "", "");
  EXPECT_EQ(sealed.size(), kAeadTagBytes);
  auto opened = AeadOpen(key_, nonce_, "", sealed);
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(*opened, "");
}

TEST_F(AeadTest, OpenFailsOnAnyAlteredCiphertextByte) {
  for (size_t i = 0; i < sealed_.size(); ++i) {
    std::string bad = sealed_;
    bad[i] ^= 0x80;
    auto opened = AeadOpen(key_, nonce_, ad_, bad);
    EXPECT_EQ(opened.status().code(), absl::StatusCode::kInvalidArgument) << "byte " << i;
  }
}

TEST_F(AeadTest, OpenFailsOnAlteredAssociatedData) {
  EXPECT_FALSE(AeadOpen(key_, nonce_, "associated datA", sealed_).ok());
  EXPECT_FALSE(AeadOpen(key_, nonce_, "", sealed_).ok());
  EXPECT_FALSE(AeadOpen(key_, nonce_, ad_ + "x", sealed_).ok());
}

TEST_F(AeadTest, OpenFailsOnWrongKeyOrNonce) {
  const SecretBytes other = RandomKey();
  auto opened = AeadOpen(other, nonce_, ad_, sealed_);
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(MessageOf(opened.status())), HasSubstr("does not open"));
  std::string nonce = nonce_;
  nonce[23] ^= 1;
  EXPECT_FALSE(AeadOpen(key_, nonce, ad_, sealed_).ok());
}

TEST_F(AeadTest, OpenFailsOnTruncatedCiphertext) {
  for (size_t n = 0; n < sealed_.size(); ++n) {
    auto opened = AeadOpen(key_, nonce_, ad_, std::string_view(sealed_).substr(0, n));
    EXPECT_EQ(opened.status().code(), absl::StatusCode::kInvalidArgument) << "length " << n;
  }
  EXPECT_FALSE(AeadOpen(key_, nonce_, ad_, sealed_ + "x").ok());
}

TEST_F(AeadTest, OpenRefusesABadNonceSize) {
  EXPECT_EQ(AeadOpen(key_, nonce_.substr(0, 23), ad_, sealed_).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(AeadOpen(key_, "", ad_, sealed_).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(NonceSourceTest, NeverRepeatsAndKeepsItsLayout) {
  NonceSource source;
  std::set<std::string> seen;
  std::string prefix;
  for (uint64_t i = 0; i < 10000; ++i) {
    const std::string n = source.Next();
    ASSERT_EQ(n.size(), kAeadNonceBytes);
    if (i == 0) prefix = n.substr(0, 16);
    ASSERT_EQ(n.substr(0, 16), prefix) << i;
    uint64_t counter = 0;
    for (int b = 16; b < 24; ++b) counter = (counter << 8) | static_cast<uint8_t>(n[b]);
    ASSERT_EQ(counter, i);  // big-endian, from zero
    ASSERT_TRUE(seen.insert(n).second) << "repeat at " << i;
  }
}

TEST(NonceSourceTest, TwoSourcesHaveDifferentPrefixes) {
  NonceSource a;
  NonceSource b;
  EXPECT_NE(a.Next().substr(0, 16), b.Next().substr(0, 16));
}

TEST(EncodingTest, HexRoundTrip) {
  const std::string bytes("\x00\x01\x7f\x80\xff hi", 8);
  EXPECT_EQ(ToHex(bytes), "00017f80ff206869");
  auto back = FromHex(ToHex(bytes), "x");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, bytes);
  EXPECT_EQ(ToHex(""), "");
  EXPECT_EQ(*FromHex("", "x"), "");
  EXPECT_EQ(*FromHex("ABcd", "x"), "\xab\xcd");
  const std::string random = RandomString(100);
  EXPECT_EQ(*FromHex(ToHex(random), "x"), random);
}

TEST(EncodingTest, HexRefusesBadInput) {
  for (const char* bad : {"0", "abc", "zz", "0g", "00 ", " 00", "0x00", "00:11"}) {
    auto r = FromHex(bad, "serial");
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(MessageOf(r.status())), HasSubstr("serial")) << bad;
  }
}

TEST(EncodingTest, Base64RoundTrip) {
  EXPECT_EQ(ToBase64(""), "");
  EXPECT_EQ(ToBase64("f"), "Zg==");
  EXPECT_EQ(ToBase64("fo"), "Zm8=");
  EXPECT_EQ(ToBase64("foo"), "Zm9v");
  EXPECT_EQ(ToBase64("foobar"), "Zm9vYmFy");
  EXPECT_EQ(ToBase64("\xfb\xff"), "+/8=");  // the standard alphabet, not URL-safe
  for (size_t n = 0; n < 70; ++n) {
    const std::string random = RandomString(n);
    auto back = FromBase64(ToBase64(random), "x");
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, random) << n;
  }
}

TEST(EncodingTest, Base64RefusesBadInput) {
  for (const char* bad :
       {"Zg", "Zg=", "Z", "Zm9v!", "Zm9v YmFy", "-_8=", "Zm9v\n", "====", "Zg==Zg=="}) {
    auto r = FromBase64(bad, "sign_pk");
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(MessageOf(r.status())), HasSubstr("sign_pk")) << bad;
  }
}

TEST(Blake2bTest, MatchesLibsodiumAndDiffers) {
  const Hash32 h = Blake2b256("abc");
  Hash32 expected;
  crypto_generichash(expected.data(), expected.size(), reinterpret_cast<const uint8_t*>("abc"), 3,
                     nullptr, 0);
  EXPECT_EQ(h, expected);
  // From Python's hashlib.blake2b(b"abc", digest_size=32).
  EXPECT_EQ(ToHex(AsView(h)), "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319");
  EXPECT_NE(Blake2b256("abd"), h);
  EXPECT_NE(Blake2b256(""), h);
}

TEST(ToArrayTest, ChecksTheSize) {
  auto ok = ToArray<4>("abcd", "id");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ((*ok)[3], 'd');
  auto bad = ToArray<4>("abc", "id");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(MessageOf(bad.status())), HasSubstr("id: expected 4 bytes, got 3"));
}

TEST(SecretBytesTest, MoveLeavesTheSourceEmpty) {
  SecretBytes a(32);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a.data()[i], 0);
  a.data()[0] = 7;
  SecretBytes b(std::move(a));
  EXPECT_EQ(b.size(), 32u);
  EXPECT_EQ(b.data()[0], 7);
  EXPECT_EQ(a.data(), nullptr);  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(a.size(), 0u);       // NOLINT(bugprone-use-after-move)
}

}  // namespace
}  // namespace chasqui
