#include "common/envelope/envelope.h"

#include <functional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/core/names.h"
#include "common/core/status.h"
#include "common/envelope/batch_signer.h"
#include "common/envelope/errors.h"
#include "common/envelope/identity.h"
#include "common/envelope/session_keys.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/common/envelope/envelope_fixtures.h"

namespace chasqui {
namespace {

using ::chasqui::testing::ErrorHeader;
using ::chasqui::testing::ReplyHeader;
using ::chasqui::testing::RequestHeader;
using ::chasqui::testing::SignOne;
using ::testing::HasSubstr;

// ---- errors

TEST(ErrorsTest, EveryCodeRoundTripsThroughChasquiCode) {
  const auto* descriptor = v1::Code_descriptor();
  ASSERT_GE(descriptor->value_count(), 14);
  for (int i = 0; i < descriptor->value_count(); ++i) {
    const auto code = static_cast<v1::Code>(descriptor->value(i)->number());
    const absl::Status s = ChasquiError(code, "why it failed");
    EXPECT_EQ(ChasquiCode(s), code) << descriptor->value(i)->name();
    EXPECT_EQ(CodeName(code), descriptor->value(i)->name());
    if (code != v1::OK) {
      EXPECT_FALSE(s.ok());
      EXPECT_EQ(MessageOf(s), "why it failed");
    } else {
      EXPECT_TRUE(s.ok());
    }
  }
}

TEST(ErrorsTest, CodesThatShareAnAbslCodeStayDistinct) {
  EXPECT_EQ(ChasquiCode(ChasquiError(v1::CONSENT_REQUIRED, "m")), v1::CONSENT_REQUIRED);
  EXPECT_EQ(ChasquiCode(ChasquiError(v1::END_USER_UNKNOWN, "m")), v1::END_USER_UNKNOWN);
  EXPECT_EQ(ChasquiCode(ChasquiError(v1::AUDIT_UNAVAILABLE, "m")), v1::AUDIT_UNAVAILABLE);
  EXPECT_EQ(ChasquiError(v1::QUOTA_EXCEEDED, "m").code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ChasquiError(v1::BAD_REQUEST, "m").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ChasquiError(v1::UNAUTHENTICATED, "m").code(), absl::StatusCode::kUnauthenticated);
}

TEST(ErrorsTest, PlainAbslStatusesMapToTheNearestCode) {
  EXPECT_EQ(ChasquiCode(absl::OkStatus()), v1::OK);
  EXPECT_EQ(ChasquiCode(absl::InvalidArgumentError("x")), v1::BAD_REQUEST);
  EXPECT_EQ(ChasquiCode(absl::UnauthenticatedError("x")), v1::UNAUTHENTICATED);
  EXPECT_EQ(ChasquiCode(absl::PermissionDeniedError("x")), v1::FORBIDDEN);
  EXPECT_EQ(ChasquiCode(absl::NotFoundError("x")), v1::NOT_FOUND);
  EXPECT_EQ(ChasquiCode(absl::ResourceExhaustedError("x")), v1::QUOTA_EXCEEDED);
  EXPECT_EQ(ChasquiCode(absl::DeadlineExceededError("x")), v1::TIMEOUT);
  EXPECT_EQ(ChasquiCode(absl::UnavailableError("x")), v1::UNAVAILABLE);
  EXPECT_EQ(ChasquiCode(absl::InternalError("x")), v1::PROVIDER_ERROR);
}

TEST(ErrorsTest, CodeNameOfAnUnknownCode) {
  EXPECT_EQ(CodeName(v1::QUOTA_EXCEEDED), "QUOTA_EXCEEDED");
  EXPECT_EQ(CodeName(static_cast<v1::Code>(99)), "UNKNOWN_CODE");
}

// ---- parsing and shape checks

class ParseEnvelopeTest : public ::testing::Test {
 protected:
  ParseEnvelopeTest() : sender_(GenerateIdentity("segip", "test", Role::kEntity)) {
    valid_wire_ = SignOne(signer_, RequestHeader(sender_.pub.serial), R"({"ci":"1234567"})");
    EXPECT_TRUE(valid_.ParseFromString(valid_wire_));
    EXPECT_TRUE(header_.ParseFromString(valid_.header()));
  }

  // The valid envelope with its header replaced by `h` (the signature no longer fits, which
  // ParseEnvelope does not check).
  std::string WithHeader(const v1::Header& h) const {
    v1::Envelope e = valid_;
    e.set_header(h.SerializeAsString());
    return e.SerializeAsString();
  }
  std::string WithHeader(const std::function<void(v1::Header&)>& edit) const {
    v1::Header h = header_;
    edit(h);
    return WithHeader(h);
  }
  std::string WithSig(const std::function<void(v1::Signature&)>& edit) const {
    v1::Envelope e = valid_;
    edit(*e.mutable_sig());
    return e.SerializeAsString();
  }

  static void ExpectBadRequest(const std::string& wire, std::string_view expected) {
    auto parsed = ParseEnvelope(wire);
    ASSERT_FALSE(parsed.ok()) << "accepted; expected a refusal mentioning " << expected;
    EXPECT_EQ(ChasquiCode(parsed.status()), v1::BAD_REQUEST) << parsed.status();
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(MessageOf(parsed.status())), HasSubstr(std::string(expected)));
  }
  static void ExpectAccepted(const std::string& wire) {
    auto parsed = ParseEnvelope(wire);
    EXPECT_TRUE(parsed.ok()) << parsed.status();
  }

  Identity sender_;
  std::string valid_wire_;
  v1::Envelope valid_;
  v1::Header header_;
  BatchSigner signer_{sender_.sign, EnvelopeTag("test")};
};

TEST_F(ParseEnvelopeTest, AcceptsASignedEnvelope) {
  auto parsed = ParseEnvelope(valid_wire_);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->envelope.header(), valid_.header());  // the signed bytes, untouched
  EXPECT_EQ(parsed->header.consumer(), "segip");
  EXPECT_EQ(parsed->header.sender_cert(), sender_.pub.serial);
  EXPECT_EQ(parsed->envelope.body(), R"({"ci":"1234567"})");
  EXPECT_EQ(parsed->header.body_hash(), std::string(AsView(Blake2b256(R"({"ci":"1234567"})"))));
  EXPECT_EQ(parsed->envelope.sig().tree_size(), 1u);
}

TEST_F(ParseEnvelopeTest, AcceptsRepliesAndErrors) {
  v1::Header reply = ReplyHeader(sender_.pub.serial, NewEnvelopeId());
  reply.set_body_hash(header_.body_hash());
  ExpectAccepted(WithHeader(reply));
  v1::Header error = ErrorHeader(sender_.pub.serial, NewEnvelopeId(), v1::NOT_FOUND);
  error.set_body_hash(header_.body_hash());
  ExpectAccepted(WithHeader(error));
}

TEST_F(ParseEnvelopeTest, RefusesEmptyBytes) { ExpectBadRequest("", "not a Chasqui envelope"); }

TEST_F(ParseEnvelopeTest, RefusesGarbage) {
  for (std::string garbage :
       {std::string("\xff\xff\xff\xff\xff"), std::string("GET / HTTP/1.1\r\n"),
        std::string("\x0a\xff\xff\xff\xff\x0f", 6), std::string(1, '\x08')}) {
    auto parsed = ParseEnvelope(garbage);
    ASSERT_FALSE(parsed.ok()) << Printable(garbage);
    EXPECT_EQ(ChasquiCode(parsed.status()), v1::BAD_REQUEST);
  }
  ExpectBadRequest("\xff\xff\xff\xff\xff", "do not parse");
}

TEST_F(ParseEnvelopeTest, RefusesRandomBytesWithoutCrashing) {
  for (size_t n = 1; n < 300; ++n) {
    auto parsed = ParseEnvelope(RandomString(n));
    ASSERT_FALSE(parsed.ok()) << n;
    EXPECT_EQ(ChasquiCode(parsed.status()), v1::BAD_REQUEST);
  }
}

TEST_F(ParseEnvelopeTest, RefusesEveryTruncation) {
  ASSERT_GT(valid_wire_.size(), 100u);
  for (size_t n = 0; n < valid_wire_.size(); ++n) {
    auto parsed = ParseEnvelope(std::string_view(valid_wire_).substr(0, n));
    ASSERT_FALSE(parsed.ok()) << "prefix of " << n << " bytes accepted";
    EXPECT_EQ(ChasquiCode(parsed.status()), v1::BAD_REQUEST) << n;
    EXPECT_FALSE(MessageOf(parsed.status()).empty());
  }
}

TEST_F(ParseEnvelopeTest, RefusesAHeaderThatDoesNotParse) {
  v1::Envelope e = valid_;
  e.set_header("\xff\xff\xff\xff");
  ExpectBadRequest(e.SerializeAsString(), "header does not parse");
  e.set_header(valid_.header().substr(0, valid_.header().size() - 3));
  ExpectBadRequest(e.SerializeAsString(), "header does not parse");
  e.clear_header();
  ExpectBadRequest(e.SerializeAsString(), "header does not parse");
}

TEST_F(ParseEnvelopeTest, RefusesAnotherProtocolVersion) {
  ExpectBadRequest(WithHeader([](v1::Header& h) { h.set_protocol_version(2); }),
                   "protocol_version 2 is not supported");
  ExpectBadRequest(WithHeader([](v1::Header& h) { h.clear_protocol_version(); }),
                   "protocol_version 0");
}

TEST_F(ParseEnvelopeTest, RefusesAnIdThatIsNot16Bytes) {
  for (size_t n : {0, 1, 15, 17, 32}) {
    ExpectBadRequest(WithHeader([n](v1::Header& h) { h.set_id(std::string(n, 'i')); }),
                     "id must be 16 bytes, got " + std::to_string(n));
  }
}

TEST_F(ParseEnvelopeTest, RefusesABadEnv) {
  for (const char* env : {"", "dev", "Test", "prod\n"}) {
    ExpectBadRequest(WithHeader([env](v1::Header& h) { h.set_env(env); }),
                     "env must be test or prod");
  }
  ExpectAccepted(WithHeader([](v1::Header& h) { h.set_env("prod"); }));
}

TEST_F(ParseEnvelopeTest, RefusesAnUnknownKind) {
  ExpectBadRequest(WithHeader([](v1::Header& h) { h.set_kind(v1::KIND_UNSPECIFIED); }), "kind");
  ExpectBadRequest(WithHeader([](v1::Header& h) { h.set_kind(static_cast<v1::Kind>(7)); }),
                   "kind must be request, reply or error");
}

TEST_F(ParseEnvelopeTest, RefusesInvalidNames) {
  struct Case {
    const char* field;
    void (v1::Header::*set)(const std::string&);
  };
  for (const Case& c :
       {Case{"consumer", &v1::Header::set_consumer}, Case{"provider", &v1::Header::set_provider},
        Case{"service", &v1::Header::set_service}}) {
    for (std::string bad :
         {std::string(), std::string("Segip"), std::string("a.b"), std::string("a>"),
          std::string("*"), std::string("_x"), std::string(64, 'a'), std::string("a\nb")}) {
      SCOPED_TRACE(std::string(c.field) + " = " + Printable(bad));
      const std::string wire = WithHeader([&](v1::Header& h) { (h.*c.set)(bad); });
      ExpectBadRequest(wire, std::string("header ") + c.field + " \"" + Printable(bad, 64) +
                                 "\" is not a valid name");
      // The message carries no raw control character.
      EXPECT_EQ(std::string(MessageOf(ParseEnvelope(wire).status())).find('\n'), std::string::npos);
    }
  }
}

TEST_F(ParseEnvelopeTest, RefusesARequestWithoutEndUser) {
  ExpectBadRequest(WithHeader([](v1::Header& h) { h.clear_end_user(); }),
                   "end_user is mandatory on a request");
}

TEST_F(ParseEnvelopeTest, RefusesOversizeTextFields) {
  ExpectAccepted(
      WithHeader([](v1::Header& h) { h.set_end_user(std::string(kMaxEndUserBytes, 'u')); }));
  ExpectBadRequest(
      WithHeader([](v1::Header& h) { h.set_end_user(std::string(kMaxEndUserBytes + 1, 'u')); }),
      "end_user is 129 bytes; at most 128 allowed");
  ExpectBadRequest(
      WithHeader([](v1::Header& h) { h.set_purpose(std::string(kMaxTextFieldBytes + 1, 'p')); }),
      "purpose is 257 bytes");
  ExpectBadRequest(WithHeader([](v1::Header& h) {
                     h.set_consent_ref(std::string(kMaxTextFieldBytes + 1, 'c'));
                   }),
                   "consent_ref");
  ExpectBadRequest(
      WithHeader([](v1::Header& h) { h.set_annex_id(std::string(kMaxTextFieldBytes + 1, 'a')); }),
      "annex_id");
  ExpectBadRequest(WithHeader([](v1::Header& h) { h.set_service_version(std::string(65, '1')); }),
                   "service_version");
  ExpectBadRequest(WithHeader([](v1::Header& h) {
                     h.set_idempotency_key(std::string(kMaxIdempotencyKeyBytes + 1, 'k'));
                   }),
                   "idempotency_key is 129 bytes");
}

TEST_F(ParseEnvelopeTest, RefusesControlCharacters) {
  struct Case {
    const char* field;
    void (v1::Header::*set)(const std::string&);
  };
  for (const Case& c :
       {Case{"end_user", &v1::Header::set_end_user}, Case{"purpose", &v1::Header::set_purpose},
        Case{"service_version", &v1::Header::set_service_version},
        Case{"annex_id", &v1::Header::set_annex_id},
        Case{"consent_ref", &v1::Header::set_consent_ref},
        Case{"idempotency_key", &v1::Header::set_idempotency_key}}) {
    for (std::string bad : {std::string("a\nb"), std::string("a\rb"), std::string("\x1b[2J"),
                            std::string("a\tb"), std::string("a\x7f"), std::string("a\0b", 3)}) {
      SCOPED_TRACE(std::string(c.field) + " = " + Printable(bad));
      ExpectBadRequest(WithHeader([&](v1::Header& h) { (h.*c.set)(bad); }),
                       std::string("header field ") + c.field + " contains control characters");
    }
  }
  // Printable non-ASCII text (UTF-8) is fine: names of people are not ASCII.
  ExpectAccepted(WithHeader([](v1::Header& h) { h.set_end_user("Mamani Quispe, José"); }));
}

TEST_F(ParseEnvelopeTest, RefusesABadNonce) {
  for (size_t n : {0, 12, 23, 25}) {
    ExpectBadRequest(WithHeader([n](v1::Header& h) {
                       h.set_sealed(true);
                       h.set_nonce(std::string(n, 'n'));
                     }),
                     "nonce must be 24 bytes when sealed");
  }
  ExpectBadRequest(WithHeader([](v1::Header& h) { h.set_nonce(std::string(24, 'n')); }),
                   "empty otherwise");
  ExpectAccepted(WithHeader([](v1::Header& h) {
    h.set_sealed(true);
    h.set_nonce(std::string(24, 'n'));
  }));
}

TEST_F(ParseEnvelopeTest, RefusesABodyHashThatIsNot32Bytes) {
  for (size_t n : {0, 31, 33, 64}) {
    ExpectBadRequest(WithHeader([n](v1::Header& h) { h.set_body_hash(std::string(n, 'h')); }),
                     "body_hash must be 32 bytes");
  }
}

TEST_F(ParseEnvelopeTest, RefusesAMissingSenderCert) {
  ExpectBadRequest(WithHeader([](v1::Header& h) { h.set_sender_cert(0); }),
                   "sender_cert is missing");
}

TEST_F(ParseEnvelopeTest, RefusesInReplyToOnARequestAndItsAbsenceOnAReply) {
  ExpectBadRequest(WithHeader([](v1::Header& h) { h.set_in_reply_to(NewEnvelopeId()); }),
                   "in_reply_to");
  ExpectBadRequest(WithHeader([](v1::Header& h) {
                     h.set_kind(v1::KIND_REPLY);
                     h.clear_in_reply_to();
                   }),
                   "in_reply_to must name the request's id");
  ExpectBadRequest(WithHeader([](v1::Header& h) {
                     h.set_kind(v1::KIND_REPLY);
                     h.set_in_reply_to(std::string(15, 'r'));
                   }),
                   "in_reply_to");
}

TEST_F(ParseEnvelopeTest, RefusesErrorsWithoutAKnownCode) {
  auto as_error = [](v1::Header& h) {
    h.set_kind(v1::KIND_ERROR);
    h.set_in_reply_to(NewEnvelopeId());
  };
  ExpectBadRequest(WithHeader([&](v1::Header& h) { as_error(h); }), "known error code");
  ExpectBadRequest(WithHeader([&](v1::Header& h) {
                     as_error(h);
                     h.mutable_error()->set_code(v1::OK);
                   }),
                   "known error code");
  ExpectBadRequest(WithHeader([&](v1::Header& h) {
                     as_error(h);
                     h.mutable_error()->set_code(static_cast<v1::Code>(99));
                   }),
                   "known error code");
  ExpectBadRequest(WithHeader([&](v1::Header& h) {
                     as_error(h);
                     h.mutable_error()->set_code(v1::TIMEOUT);
                     h.mutable_error()->set_message(std::string(kMaxErrorMessageBytes + 1, 'm'));
                   }),
                   "error message too long");
  ExpectBadRequest(WithHeader([](v1::Header& h) { h.mutable_error()->set_code(v1::TIMEOUT); }),
                   "only error envelopes carry an error");
}

TEST_F(ParseEnvelopeTest, RefusesABadSignatureShape) {
  for (size_t n : {0, 63, 65}) {
    ExpectBadRequest(WithSig([n](v1::Signature& s) { s.set_root_signature(std::string(n, 's')); }),
                     "signature must be 64 bytes");
  }
  ExpectBadRequest(WithSig([](v1::Signature& s) { s.set_tree_size(0); }),
                   "tree_size must be 1..1024");
  ExpectBadRequest(WithSig([](v1::Signature& s) { s.set_tree_size(kMaxTreeLeaves + 1); }),
                   "tree_size must be 1..1024");
  ExpectBadRequest(WithSig([](v1::Signature& s) {
                     s.set_tree_size(4);
                     s.set_leaf_index(4);
                   }),
                   "leaf_index outside its tree");
  ExpectBadRequest(WithSig([](v1::Signature& s) {
                     s.set_tree_size(1);
                     s.set_leaf_index(0xffffffffu);
                   }),
                   "leaf_index outside its tree");
  for (size_t n : {0, 31, 33}) {
    ExpectBadRequest(WithSig([n](v1::Signature& s) {
                       s.set_tree_size(2);
                       s.add_path(std::string(n, 'p'));
                     }),
                     "path node must be 32 bytes");
  }
  ExpectBadRequest(WithSig([](v1::Signature& s) {
                     s.set_tree_size(kMaxTreeLeaves);
                     for (size_t i = 0; i <= kMaxPathLength; ++i) s.add_path(std::string(32, 'p'));
                   }),
                   "path too long");
  ExpectBadRequest(WithSig([](v1::Signature& s) { s.Clear(); }), "signature");
}

// ---- domain tags

TEST(EnvelopeTagTest, NamesKindAndEnvironment) {
  EXPECT_EQ(EnvelopeTag("test"), "chasqui/v1/envelope/test");
  EXPECT_EQ(EnvelopeTag("prod"), "chasqui/v1/envelope/prod");
  Hash32 root{};
  root[0] = 0xaa;
  const std::string m = BatchSignedMessage("tag", 0x01020304, root);
  EXPECT_EQ(m, std::string("tag\x01\x02\x03\x04", 7) + std::string(AsView(root)));
  EXPECT_NE(BatchSignedMessage("tag", 1, root), BatchSignedMessage("tag", 2, root));
  EXPECT_NE(BatchSignedMessage(EnvelopeTag("test"), 1, root),
            BatchSignedMessage(EnvelopeTag("prod"), 1, root));
}

TEST(NewEnvelopeIdTest, SixteenFreshBytes) {
  std::set<std::string> ids;
  for (int i = 0; i < 1000; ++i) {
    const std::string id = NewEnvelopeId();
    ASSERT_EQ(id.size(), kIdBytes);
    ASSERT_TRUE(ids.insert(id).second);
  }
}

// ---- sealing

v1::Header SealableHeader() {
  v1::Header h = RequestHeader(1001);
  h.set_sealed(true);
  h.set_nonce(std::string(kAeadNonceBytes, 'n'));
  h.set_recipient_cert(2002);
  return h;
}

TEST(SealContextTest, EveryCoveredFieldChangesIt) {
  const v1::Header base = SealableHeader();
  const std::string context = SealContext(base);
  const std::vector<std::pair<const char*, std::function<void(v1::Header&)>>> edits = {
      {"kind", [](v1::Header& h) { h.set_kind(v1::KIND_REPLY); }},
      {"env", [](v1::Header& h) { h.set_env("prod"); }},
      {"id", [](v1::Header& h) { h.set_id(NewEnvelopeId()); }},
      {"nonce", [](v1::Header& h) { h.set_nonce(std::string(kAeadNonceBytes, 'm')); }},
      {"consumer", [](v1::Header& h) { h.set_consumer("sedem"); }},
      {"provider", [](v1::Header& h) { h.set_provider("segip"); }},
      {"service", [](v1::Header& h) { h.set_service("persona-historial"); }},
      {"in_reply_to", [](v1::Header& h) { h.set_in_reply_to(NewEnvelopeId()); }},
      {"sender_cert", [](v1::Header& h) { h.set_sender_cert(1002); }},
      {"recipient_cert", [](v1::Header& h) { h.set_recipient_cert(2003); }},
  };
  std::set<std::string> contexts = {context};
  for (const auto& [field, edit] : edits) {
    v1::Header h = base;
    edit(h);
    const std::string changed = SealContext(h);
    EXPECT_NE(changed, context) << field;
    EXPECT_TRUE(contexts.insert(changed).second) << field << " collides with another edit";
  }
}

TEST(SealContextTest, LayoutIsUnambiguous) {
  // Moving a character from one field to the next must not give the same bytes.
  v1::Header a = SealableHeader();
  v1::Header b = SealableHeader();
  a.set_consumer("ab");
  a.set_provider("c");
  b.set_consumer("a");
  b.set_provider("bc");
  EXPECT_NE(SealContext(a), SealContext(b));
  a.set_provider("x");
  a.set_service("yz");
  b.set_provider("xy");
  b.set_service("z");
  EXPECT_NE(SealContext(a), SealContext(b));
}

class SealTest : public ::testing::Test {
 protected:
  SealTest() {
    auto c = ClientSessionKeys(consumer_kx_, provider_kx_.public_key());
    auto p = ServerSessionKeys(provider_kx_, consumer_kx_.public_key());
    EXPECT_TRUE(c.ok() && p.ok());
    consumer_keys_ = *std::move(c);
    provider_keys_ = *std::move(p);
    header_ = RequestHeader(1001);
    header_.set_recipient_cert(2002);
    sealed_ = SealBody(header_, consumer_keys_.tx, nonces_, plaintext_);
  }

  void ExpectDoesNotOpen(const v1::Header& h, const std::string& body, const char* what) {
    auto opened = OpenBody(h, provider_keys_.rx, body);
    ASSERT_FALSE(opened.ok()) << what;
    EXPECT_EQ(ChasquiCode(opened.status()), v1::UNAUTHENTICATED) << what;
    EXPECT_THAT(std::string(MessageOf(opened.status())), HasSubstr("sealed body")) << what;
  }

  KxKey consumer_kx_ = KxKey::Generate();
  KxKey provider_kx_ = KxKey::Generate();
  SessionKeys consumer_keys_;
  SessionKeys provider_keys_;
  NonceSource nonces_;
  std::string plaintext_ = R"({"ci":"1234567","nombre":"Juana"})";
  v1::Header header_;
  std::string sealed_;
};

TEST_F(SealTest, SealSetsSealedAndAFreshNonce) {
  EXPECT_TRUE(header_.sealed());
  EXPECT_EQ(header_.nonce().size(), kAeadNonceBytes);
  EXPECT_EQ(sealed_.find("Juana"), std::string::npos);
  v1::Header second = RequestHeader(1001);
  SealBody(second, consumer_keys_.tx, nonces_, plaintext_);
  EXPECT_NE(second.nonce(), header_.nonce());
}

TEST_F(SealTest, TheProviderOpensWhatTheConsumerSealed) {
  auto opened = OpenBody(header_, provider_keys_.rx, sealed_);
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(*opened, plaintext_);
}

TEST_F(SealTest, AReplySealedByTheProviderOpensForTheConsumer) {
  v1::Header reply = ReplyHeader(2002, header_.id());
  reply.set_recipient_cert(1001);
  const std::string body = SealBody(reply, provider_keys_.tx, nonces_, "answer");
  auto opened = OpenBody(reply, consumer_keys_.rx, body);
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(*opened, "answer");
  // The consumer's own tx key (the other direction) does not open it.
  EXPECT_FALSE(OpenBody(reply, consumer_keys_.tx, body).ok());
}

TEST_F(SealTest, AReaddressedBodyDoesNotOpen) {
  const std::vector<std::pair<const char*, std::function<void(v1::Header&)>>> edits = {
      {"consumer", [](v1::Header& h) { h.set_consumer("otra-entidad"); }},
      {"provider", [](v1::Header& h) { h.set_provider("otra-entidad"); }},
      {"service", [](v1::Header& h) { h.set_service("persona-historial"); }},
      {"env", [](v1::Header& h) { h.set_env("prod"); }},
      {"id", [](v1::Header& h) { h.set_id(NewEnvelopeId()); }},
      {"kind", [](v1::Header& h) { h.set_kind(v1::KIND_REPLY); }},
      {"nonce", [](v1::Header& h) { h.mutable_nonce()->back() ^= 1; }},
      {"sender_cert", [](v1::Header& h) { h.set_sender_cert(9); }},
      {"recipient_cert", [](v1::Header& h) { h.set_recipient_cert(9); }},
      {"in_reply_to", [](v1::Header& h) { h.set_in_reply_to(NewEnvelopeId()); }},
  };
  for (const auto& [field, edit] : edits) {
    v1::Header h = header_;
    edit(h);
    ExpectDoesNotOpen(h, sealed_, field);
  }
}

TEST_F(SealTest, AnAlteredBodyDoesNotOpen) {
  for (size_t i = 0; i < sealed_.size(); i += 7) {
    std::string body = sealed_;
    body[i] ^= 0x20;
    ExpectDoesNotOpen(header_, body, "altered byte");
  }
  ExpectDoesNotOpen(header_, sealed_.substr(0, sealed_.size() - 1), "truncated");
  ExpectDoesNotOpen(header_, "", "empty");
  ExpectDoesNotOpen(header_, sealed_ + "x", "extended");
}

TEST_F(SealTest, AnotherPairsKeysDoNotOpen) {
  const KxKey intruder = KxKey::Generate();
  auto keys = ServerSessionKeys(intruder, consumer_kx_.public_key());
  ASSERT_TRUE(keys.ok());
  auto opened = OpenBody(header_, keys->rx, sealed_);
  EXPECT_EQ(ChasquiCode(opened.status()), v1::UNAUTHENTICATED);
}

TEST_F(SealTest, OpeningAnUnsealedHeaderIsABadRequest) {
  v1::Header h = header_;
  h.set_sealed(false);
  auto opened = OpenBody(h, provider_keys_.rx, sealed_);
  EXPECT_EQ(ChasquiCode(opened.status()), v1::BAD_REQUEST);
  EXPECT_THAT(std::string(MessageOf(opened.status())), HasSubstr("must be sealed"));
}

// ---- session key cache

TEST(SessionKeyCacheTest, ComputesOncePerPeerAndMatchesTheOtherSide) {
  const KxKey consumer = KxKey::Generate();
  const KxKey provider = KxKey::Generate();
  SessionKeyCache client(consumer, SessionKeyCache::Side::kClient);
  SessionKeyCache server(provider, SessionKeyCache::Side::kServer);
  auto c1 = client.For(provider.public_key());
  auto c2 = client.For(provider.public_key());
  auto s = server.For(consumer.public_key());
  ASSERT_TRUE(c1.ok() && c2.ok() && s.ok());
  EXPECT_EQ(c1->get(), c2->get());
  EXPECT_EQ(AsView((*c1)->tx.data(), 32), AsView((*s)->rx.data(), 32));
  EXPECT_EQ(AsView((*c1)->rx.data(), 32), AsView((*s)->tx.data(), 32));
  const KxKey other = KxKey::Generate();
  auto c3 = client.For(other.public_key());
  ASSERT_TRUE(c3.ok());
  EXPECT_NE(AsView((*c3)->tx.data(), 32), AsView((*c1)->tx.data(), 32));
}

TEST(SessionKeyCacheTest, RefusesALowOrderPeer) {
  const KxKey own = KxKey::Generate();
  SessionKeyCache cache(own, SessionKeyCache::Side::kServer);
  EXPECT_EQ(cache.For(KxPublicKey{}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace chasqui
