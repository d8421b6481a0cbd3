// A provider holding several keys of its entity (a rotation's overlap, issue 3), driven the way
// a router drives it: requests from sin published on segip's service subject with a router's
// reply subject, each sealed for the key the test names; the answers are read, verified and
// opened here. Real nats-server and libsodium; keys generated fresh, trust fixed.

#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "common/bus/request_mux.h"
#include "common/core/clock.h"
#include "common/core/status.h"
#include "common/envelope/envelope.h"
#include "common/envelope/errors.h"
#include "common/envelope/session_keys.h"
#include "common/envelope/subjects.h"
#include "common/envelope/verifier.h"
#include "common/trust/trust_source.h"
#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/gateway/sdk.h"
#include "tests/services/router/backbone.h"

namespace chasqui::testing {
namespace {

using ::testing::HasSubstr;

class ProviderKeysTest : public ::testing::Test {
 protected:
  ProviderKeysTest()
      : bb_(BackboneOptions{.start_provider = false}),
        b_(GenerateIdentity("segip", "test", Role::kEntity)),
        c_(GenerateIdentity("segip", "test", Role::kEntity)),
        trust_(TrustStore::FromIdentities({bb_.sin.pub, bb_.segip.pub, b_.pub, c_.pub}, "test")),
        provider_bus_(bb_.Connect("segip")),
        router_bus_(bb_.Connect("fake-router")),
        root_cache_(SystemClock(), 30'000),
        verifier_("test", &root_cache_),
        sin_keys_(bb_.sin.kx, SessionKeyCache::Side::kClient) {
    auto mux = RequestMux::Create(router_bus_.get(), "_INBOX._router.test.keys");
    CHASQUI_CHECK(mux.ok(), MessageOf(mux.status()));
    mux_ = *std::move(mux);
  }

  // segip's provider on `keys` (A is bb_.segip), serving persona_consulta.
  void StartProvider(std::vector<Identity> keys) {
    auto p = Provider::Create(provider_bus_.get(), std::move(keys), FixedTrust(trust_));
    ASSERT_TRUE(p.ok()) << p.status();
    provider_ = *std::move(p);
    ASSERT_TRUE(provider_
                    ->Serve("persona_consulta",
                            [this](const RequestContext& ctx, std::string_view body)
                                -> absl::StatusOr<std::string> {
                              absl::MutexLock lock(&mu_);
                              opened_with_.push_back(ctx.provider_serial);
                              return "segip:" + std::string(body);
                            })
                    .ok());
    ASSERT_TRUE(provider_bus_->Flush(absl::Seconds(2)).ok());
  }

  // The answer to a request from sin sealed for `recipient`.
  ParsedEnvelope Ask(const PublicIdentity& recipient, const std::string& body) {
    RequestForge forge(bb_.sin, recipient);
    std::string wire = forge.Seal(forge.Header("persona_consulta"), body);
    std::promise<absl::StatusOr<ParsedEnvelope>> answer;
    absl::Status sent = mux_->Request(
        ServiceSubjectFor("test", "segip", "persona_consulta"), wire, absl::Seconds(3),
        [&answer](MuxOutcome outcome, const BusMessage* reply) {
          if (outcome != MuxOutcome::kReply) {
            answer.set_value(absl::DeadlineExceededError("no answer from the provider"));
            return;
          }
          answer.set_value(ParseEnvelope(reply->data));
        });
    CHASQUI_CHECK(sent.ok(), MessageOf(sent));
    auto parsed = answer.get_future().get();
    CHASQUI_CHECK(parsed.ok(), MessageOf(parsed.status()));
    return *std::move(parsed);
  }

  // The answer verified under `signer` (it must name it) and opened as sin.
  std::string OpenAs(const ParsedEnvelope& answer, const PublicIdentity& signer) {
    EXPECT_EQ(answer.header.sender_cert(), signer.serial);
    absl::Status verified = verifier_.Verify(answer, signer);
    EXPECT_TRUE(verified.ok()) << verified;
    EXPECT_EQ(answer.header.recipient_cert(), bb_.sin.pub.serial);
    auto keys = sin_keys_.For(signer.kx_pk);
    CHASQUI_CHECK(keys.ok(), MessageOf(keys.status()));
    auto opened = OpenBody(answer.header, (*keys)->rx, answer.envelope.body());
    return opened.ok() ? *opened : "does not open: " + std::string(MessageOf(opened.status()));
  }

  std::vector<uint64_t> opened_with() {
    absl::MutexLock lock(&mu_);
    return opened_with_;
  }

  Backbone bb_;
  Identity b_, c_;  // segip's second key, and a third one its gateway never holds
  TrustStore trust_;
  std::unique_ptr<Bus> provider_bus_, router_bus_;
  std::unique_ptr<RequestMux> mux_;
  RootCache root_cache_;
  EnvelopeVerifier verifier_;
  SessionKeyCache sin_keys_;
  absl::Mutex mu_;
  std::vector<uint64_t> opened_with_ ABSL_GUARDED_BY(mu_);  // what each handled request named
  std::unique_ptr<Provider> provider_;                       // goes first
};

std::vector<Identity> Keys(const Identity& a, const Identity& b) {
  std::vector<Identity> keys;
  keys.push_back(Copy(a));
  keys.push_back(Copy(b));
  return keys;
}

TEST_F(ProviderKeysTest, OpensARequestSealedForEitherKeyAndAnswersWithThatKey) {
  ASSERT_NO_FATAL_FAILURE(StartProvider(Keys(bb_.segip, b_)));
  EXPECT_EQ(provider_->serials(), (std::vector<uint64_t>{bb_.segip.pub.serial, b_.pub.serial}));

  ParsedEnvelope for_a = Ask(bb_.segip.pub, "a");
  ASSERT_EQ(for_a.header.kind(), v1::KIND_REPLY) << for_a.header.error().message();
  EXPECT_EQ(OpenAs(for_a, bb_.segip.pub), "segip:a");

  ParsedEnvelope for_b = Ask(b_.pub, "b");
  ASSERT_EQ(for_b.header.kind(), v1::KIND_REPLY) << for_b.header.error().message();
  EXPECT_EQ(OpenAs(for_b, b_.pub), "segip:b");

  EXPECT_EQ(opened_with(), (std::vector<uint64_t>{bb_.segip.pub.serial, b_.pub.serial}));
  EXPECT_EQ(provider_->handled(), 2u);
  EXPECT_EQ(provider_->refused(), 0u);
}

TEST_F(ProviderKeysTest, ARequestSealedForAKeyNotHeldIsRefusedNamingTheKeysHeld) {
  ASSERT_NO_FATAL_FAILURE(StartProvider(Keys(bb_.segip, b_)));
  ParsedEnvelope answer = Ask(c_.pub, "c");
  ASSERT_EQ(answer.header.kind(), v1::KIND_ERROR);
  EXPECT_EQ(answer.header.error().code(), v1::BAD_REQUEST);
  const std::string& message = answer.header.error().message();
  EXPECT_THAT(message, HasSubstr(fmt::format("sealed for key {}", c_.pub.serial)));
  EXPECT_THAT(message, HasSubstr(fmt::format("[{}, {}]", bb_.segip.pub.serial, b_.pub.serial)));
  // Signed with the newest key held, so the refusal is checked like any answer.
  EXPECT_EQ(answer.header.sender_cert(), b_.pub.serial);
  EXPECT_TRUE(verifier_.Verify(answer, b_.pub).ok());
  EXPECT_TRUE(opened_with().empty());
  EXPECT_EQ(provider_->refused(), 1u);
}

TEST_F(ProviderKeysTest, AKeyAddedWhileServingIsUsedAtOnceAndARetiredOneIsRefused) {
  std::vector<Identity> a_only;
  a_only.push_back(Copy(bb_.segip));
  ASSERT_NO_FATAL_FAILURE(StartProvider(std::move(a_only)));
  EXPECT_EQ(Ask(b_.pub, "b").header.error().code(), v1::BAD_REQUEST);

  ASSERT_TRUE(provider_->AddIdentity(Copy(b_)).ok());
  ParsedEnvelope for_b = Ask(b_.pub, "b");
  ASSERT_EQ(for_b.header.kind(), v1::KIND_REPLY) << for_b.header.error().message();
  EXPECT_EQ(OpenAs(for_b, b_.pub), "segip:b");
  ParsedEnvelope for_a = Ask(bb_.segip.pub, "a");
  ASSERT_EQ(for_a.header.kind(), v1::KIND_REPLY) << for_a.header.error().message();
  EXPECT_EQ(OpenAs(for_a, bb_.segip.pub), "segip:a");

  ASSERT_TRUE(provider_->RetireIdentity(bb_.segip.pub.serial).ok());
  EXPECT_EQ(provider_->serials(), std::vector<uint64_t>{b_.pub.serial});
  ParsedEnvelope refused = Ask(bb_.segip.pub, "a again");
  ASSERT_EQ(refused.header.kind(), v1::KIND_ERROR);
  EXPECT_EQ(refused.header.error().code(), v1::BAD_REQUEST);
  EXPECT_THAT(refused.header.error().message(),
              HasSubstr(fmt::format("sealed for key {}", bb_.segip.pub.serial)));
  EXPECT_EQ(refused.header.sender_cert(), b_.pub.serial);
  EXPECT_EQ(OpenAs(Ask(b_.pub, "b again"), b_.pub), "segip:b again");
}

TEST_F(ProviderKeysTest, KeysThatAreNotThisProvidersAreRefusedWithPreciseErrors) {
  ASSERT_NO_FATAL_FAILURE(StartProvider(Keys(bb_.segip, b_)));
  absl::Status s = provider_->AddIdentity(Copy(bb_.sin));
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("sin's; this provider serves segip"));
  s = provider_->AddIdentity(GenerateIdentity("segip", "prod", Role::kEntity));
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("environment prod"));
  s = provider_->AddIdentity(GenerateIdentity("router", "test", Role::kRouter));
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  s = provider_->AddIdentity(Copy(b_));
  EXPECT_TRUE(absl::IsAlreadyExists(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(std::to_string(b_.pub.serial)));

  s = provider_->RetireIdentity(c_.pub.serial);
  EXPECT_TRUE(absl::IsNotFound(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(std::to_string(c_.pub.serial)));
  ASSERT_TRUE(provider_->RetireIdentity(bb_.segip.pub.serial).ok());
  s = provider_->RetireIdentity(b_.pub.serial);
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("only key"));
  EXPECT_EQ(provider_->serials(), std::vector<uint64_t>{b_.pub.serial});

  auto none = Provider::Create(provider_bus_.get(), std::vector<Identity>{}, FixedTrust(trust_));
  EXPECT_TRUE(absl::IsInvalidArgument(none.status())) << none.status();
  auto mixed = Provider::Create(provider_bus_.get(), Keys(bb_.segip, bb_.sin), FixedTrust(trust_));
  EXPECT_TRUE(absl::IsInvalidArgument(mixed.status())) << mixed.status();
  auto twice = Provider::Create(provider_bus_.get(), Keys(b_, b_), FixedTrust(trust_));
  EXPECT_TRUE(absl::IsAlreadyExists(twice.status())) << twice.status();
}

}  // namespace
}  // namespace chasqui::testing
