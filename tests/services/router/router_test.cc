// The full path over a real nats-server, and one test per refusal: each asserts the exact code
// (or, for a bad reply subject, that nothing was published) and that the provider's system
// never saw the message.

#include <atomic>
#include <future>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "common/core/status.h"
#include "common/envelope/envelope.h"
#include "common/envelope/errors.h"
#include "common/envelope/subjects.h"
#include "gtest/gtest.h"
#include "tests/services/router/backbone.h"
#include "tests/support/metrics.h"
#include "tests/support/wait_for.h"

namespace chasqui::testing {
namespace {

std::string ReqSubject(const std::string& consumer, const std::string& service,
                       const std::string& env = "test") {
  return RequestSubjectFor(env, consumer, "segip", service);
}

class RouterTest : public ::testing::Test {
 protected:
  void ExpectRefused(const std::string& subject, const std::string& wire, v1::Code code,
                     const std::string& message_part = "") {
    auto answer = client_.Send(subject, wire);
    ASSERT_TRUE(answer.ok()) << answer.status();
    EXPECT_EQ(answer->kind(), v1::KIND_ERROR);
    EXPECT_EQ(CodeName(answer->error().code()), CodeName(code)) << answer->error().message();
    EXPECT_EQ(answer->sender_cert(), bb_.router_key.pub.serial) << "signed by the router";
    if (!message_part.empty()) {
      EXPECT_NE(answer->error().message().find(message_part), std::string::npos)
          << answer->error().message();
    }
    EXPECT_EQ(bb_.provider_system_calls.load(), 0) << "the provider's system saw the request";
  }

  Backbone bb_;
  RawClient client_{bb_, "sin"};
  RequestForge forge_{bb_.sin, bb_.segip.pub};
};

TEST_F(RouterTest, ManyCallsInFlightAllArriveSealedAndAnswered) {
  auto consumer = bb_.MakeConsumer(bb_.sin);
  constexpr int kCalls = 2000;
  std::atomic<int> ok{0}, done{0};
  absl::Mutex mu;
  std::vector<std::string> failures;
  for (int i = 0; i < kCalls; ++i) {
    const std::string body = "{\"ci\":\"" + std::to_string(i) + "\"}";
    consumer->CallAsync("segip", "persona_consulta", body, {.end_user = "ana.perez"},
                        [&, body](CallResult r) {
                          if (r.status.ok() && r.body == "segip:sin:" + body) {
                            ++ok;
                          } else {
                            absl::MutexLock lock(&mu);
                            failures.push_back(r.status.ToString() + " body=" + r.body);
                          }
                          ++done;
                        });
  }
  ASSERT_TRUE(WaitFor([&] { return done.load() == kCalls; }, std::chrono::seconds(60)));
  absl::MutexLock lock(&mu);
  EXPECT_EQ(ok.load(), kCalls) << (failures.empty() ? "" : failures.front());
  EXPECT_EQ(bb_.provider_system_calls.load(), kCalls);
  // Many calls in flight share signatures: far fewer batches than calls.
  EXPECT_LT(consumer->batches(), static_cast<uint64_t>(kCalls));
}

TEST_F(RouterTest, ValidForgedRequestIsServed) {
  // The forge itself makes valid requests, so the refusals below fail for their one change.
  auto answer = client_.Send(ReqSubject("sin", "persona_consulta"),
                             forge_.Seal(forge_.Header("persona_consulta"), "hola"));
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->kind(), v1::KIND_REPLY);
  EXPECT_EQ(answer->sender_cert(), bb_.segip.pub.serial);
  EXPECT_EQ(bb_.provider_system_calls.load(), 1);
}

TEST_F(RouterTest, GarbageBytesAreBadRequest) {
  ExpectRefused(ReqSubject("sin", "persona_consulta"), "\xff\xfe not protobuf at all \x01",
                v1::BAD_REQUEST, "do not parse");
}

TEST_F(RouterTest, TruncatedEnvelopeIsBadRequest) {
  std::string wire = forge_.Seal(forge_.Header("persona_consulta"), "hola");
  ExpectRefused(ReqSubject("sin", "persona_consulta"), wire.substr(0, wire.size() / 2),
                v1::BAD_REQUEST);
}

TEST_F(RouterTest, OversizeEnvelopeIsBadRequest) {
  const std::string big(bb_.options.max_envelope_bytes + 1, 'x');
  ExpectRefused(ReqSubject("sin", "persona_consulta"),
                forge_.Seal(forge_.Header("persona_consulta"), big), v1::BAD_REQUEST,
                "accepts at most");
}

TEST_F(RouterTest, TamperedHeaderIsUnauthenticated) {
  std::string wire = forge_.Seal(forge_.Header("persona_consulta"), "hola");
  v1::Envelope e;
  ASSERT_TRUE(e.ParseFromString(wire));
  v1::Header h;
  ASSERT_TRUE(h.ParseFromString(e.header()));
  h.set_end_user("somebody.else");  // same shape, other official
  e.set_header(h.SerializeAsString());
  ExpectRefused(ReqSubject("sin", "persona_consulta"), e.SerializeAsString(), v1::UNAUTHENTICATED,
                "bad signature");
}

TEST_F(RouterTest, TamperedBodyIsUnauthenticated) {
  std::string wire = forge_.Seal(forge_.Header("persona_consulta"), "hola");
  v1::Envelope e;
  ASSERT_TRUE(e.ParseFromString(wire));
  (*e.mutable_body())[0] ^= 1;
  ExpectRefused(ReqSubject("sin", "persona_consulta"), e.SerializeAsString(), v1::UNAUTHENTICATED,
                "body_hash");
}

TEST_F(RouterTest, WrongRecipientIsBadRequest) {
  // Sealed for aduana's key, sent to segip.
  v1::Header h = forge_.Header("persona_consulta");
  h.set_recipient_cert(bb_.aduana.pub.serial);
  ExpectRefused(ReqSubject("sin", "persona_consulta"), forge_.Seal(h, "hola"), v1::BAD_REQUEST,
                "recipient_cert");
}

TEST_F(RouterTest, BodySealedForAnotherKeyNeverReachesTheProviderSystem) {
  // The header names segip's key, but the body was sealed with aduana's session key: the
  // router cannot tell, the provider's gateway can, and its system never sees it.
  RequestForge for_aduana(bb_.sin, bb_.aduana.pub);
  v1::Header h = for_aduana.Header("persona_consulta");
  h.set_provider("segip");
  h.set_recipient_cert(bb_.segip.pub.serial);
  std::string wire = for_aduana.Seal(h, "hola");
  auto answer = client_.Send(ReqSubject("sin", "persona_consulta"), wire);
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->kind(), v1::KIND_ERROR);
  EXPECT_EQ(CodeName(answer->error().code()), CodeName(v1::UNAUTHENTICATED));
  EXPECT_EQ(answer->sender_cert(), bb_.segip.pub.serial) << "refused by the provider's gateway";
  EXPECT_EQ(bb_.provider_system_calls.load(), 0);
}

TEST_F(RouterTest, ReaddressedEnvelopeIsBadRequest) {
  // A valid envelope for persona_consulta, sent on the subject of another service.
  ExpectRefused(ReqSubject("sin", "slow"),
                forge_.Seal(forge_.Header("persona_consulta"), "hola"), v1::BAD_REQUEST,
                "addressed");
}

TEST_F(RouterTest, TestEnvelopeOnProdIsRefused) {
  Backbone prod({.env = "prod"});
  RawClient prod_client(prod, "sin", "prod");
  // Signed by sin's test key, for the test environment, sent to prod's routers.
  auto answer = prod_client.Send(RequestSubjectFor("prod", "sin", "segip", "persona_consulta"),
                                 forge_.Seal(forge_.Header("persona_consulta"), "hola"));
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->kind(), v1::KIND_ERROR);
  EXPECT_EQ(CodeName(answer->error().code()), CodeName(v1::BAD_REQUEST));
  EXPECT_NE(answer->error().message().find("environment test"), std::string::npos);
  // Relabelled as prod, the test signature does not hold (and the key is not prod's).
  v1::Header h = forge_.Header("persona_consulta");
  h.set_env("prod");
  answer = prod_client.Send(RequestSubjectFor("prod", "sin", "segip", "persona_consulta"),
                            forge_.Seal(h, "hola"));
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(CodeName(answer->error().code()), CodeName(v1::UNAUTHENTICATED));
  EXPECT_EQ(prod.provider_system_calls.load(), 0);
  EXPECT_EQ(bb_.provider_system_calls.load(), 0);
}

TEST_F(RouterTest, LeafNamingAnotherConsumerInAValidBatchIsRefused) {
  // sin signs one batch holding its own request and one that claims to come from aduana; the
  // batch signature is valid, but sin may not speak for aduana.
  v1::Header own = forge_.Header("persona_consulta");
  v1::Header claim = forge_.Header("persona_consulta");
  claim.set_consumer("aduana");
  std::promise<std::string> own_wire, claim_wire;
  BatchSigner batch(bb_.sin.sign, EnvelopeTag("test"));
  // Queue both while the signer is busy with a primer, so the next round signs them together.
  SignEnvelope(batch, forge_.Header("persona_consulta"), "primer", [&](std::string) {
    SignEnvelope(batch, own, "a", [&](std::string w) { own_wire.set_value(std::move(w)); });
    SignEnvelope(batch, claim, "b", [&](std::string w) { claim_wire.set_value(std::move(w)); });
  });
  own_wire.get_future().wait();
  const std::string claim_bytes = claim_wire.get_future().get();
  v1::Envelope e;
  ASSERT_TRUE(e.ParseFromString(claim_bytes));
  ASSERT_EQ(e.sig().tree_size(), 2u) << "both leaves in one batch";
  // On aduana's subject (the only one where the addressing matches), from aduana's inbox.
  RawClient as_aduana(bb_, "aduana");
  auto answer = as_aduana.Send(RequestSubjectFor("test", "aduana", "segip", "persona_consulta"),
                               claim_bytes);
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(CodeName(answer->error().code()), CodeName(v1::UNAUTHENTICATED));
  EXPECT_NE(answer->error().message().find("not by the consumer"), std::string::npos)
      << answer->error().message();
  // On sin's own subject, the header's consumer does not match the subject.
  ExpectRefused(ReqSubject("sin", "persona_consulta"), claim_bytes, v1::BAD_REQUEST, "addressed");
}

TEST_F(RouterTest, UnknownKeyIsUnauthenticated) {
  RequestForge mallory(bb_.mallory, bb_.segip.pub);
  v1::Header h = mallory.Header("persona_consulta");
  h.set_consumer("sin");  // pretends to be sin, with its own key
  ExpectRefused(ReqSubject("sin", "persona_consulta"), mallory.Seal(h, "hola"),
                v1::UNAUTHENTICATED, "not a known key");
}

TEST_F(RouterTest, ReplayInsideTheWindowIsRefused) {
  const std::string wire = forge_.Seal(forge_.Header("persona_consulta"), "hola");
  auto first = client_.Send(ReqSubject("sin", "persona_consulta"), wire);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->kind(), v1::KIND_REPLY);
  auto again = client_.Send(ReqSubject("sin", "persona_consulta"), wire);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(CodeName(again->error().code()), CodeName(v1::REPLAYED));
  EXPECT_EQ(bb_.provider_system_calls.load(), 1) << "the replay never reached the provider";
}

TEST_F(RouterTest, ExpiredAndFutureRequestsAreRefused) {
  v1::Header old = forge_.Header("persona_consulta");
  old.set_sent_at_ms(old.sent_at_ms() - 31'000);
  ExpectRefused(ReqSubject("sin", "persona_consulta"), forge_.Seal(old, "hola"), v1::EXPIRED,
                "behind");
  v1::Header future = forge_.Header("persona_consulta");
  future.set_sent_at_ms(future.sent_at_ms() + 31'000);
  ExpectRefused(ReqSubject("sin", "persona_consulta"), forge_.Seal(future, "hola"), v1::EXPIRED,
                "ahead");
}

TEST_F(RouterTest, MissingEndUserIsBadRequest) {
  v1::Header h = forge_.Header("persona_consulta");
  h.clear_end_user();
  ExpectRefused(ReqSubject("sin", "persona_consulta"), forge_.Seal(h, "hola"), v1::BAD_REQUEST,
                "end_user");
}

// A bad reply subject: nothing at all may be published to it, and the provider sees nothing.
class ReplySubjectTest : public RouterTest {
 protected:
  void ExpectDropped(const std::string& reply) {
    auto watcher_bus = bb_.Connect("watcher");
    absl::Mutex mu;
    std::vector<std::string> seen;
    auto watch = watcher_bus->Subscribe(">", [&](const BusMessage& m) {
      absl::MutexLock lock(&mu);
      seen.emplace_back(m.subject);
    });
    ASSERT_TRUE(watch.ok());
    ASSERT_TRUE(watcher_bus->Flush(absl::Seconds(2)).ok());
    const std::string subject = ReqSubject("sin", "persona_consulta");
    ASSERT_TRUE(client_.bus()
                    .Publish(subject, forge_.Seal(forge_.Header("persona_consulta"), "hola"), reply)
                    .ok());
    // The router handles requests in order: once a later valid request is answered, the bad
    // one has been handled too.
    auto sentinel = client_.Send(subject, forge_.Seal(forge_.Header("slow"), "x"));
    ASSERT_TRUE(sentinel.ok());
    ASSERT_TRUE(watcher_bus->Flush(absl::Seconds(2)).ok());
    absl::MutexLock lock(&mu);
    for (const std::string& s : seen) {
      EXPECT_NE(s, reply) << "something was published to the bad reply subject";
    }
    EXPECT_EQ(bb_.provider_system_calls.load(), 0);
  }
};

TEST_F(ReplySubjectTest, ReplyToAnotherEntitysInboxIsDropped) {
  ExpectDropped("_INBOX.test.aduana.stolen.1");
}

TEST_F(ReplySubjectTest, ReplyToAServiceSubjectIsDropped) {
  ExpectDropped("chq.test.svc.segip.persona_consulta");
}

TEST_F(ReplySubjectTest, ReplyToTheBareInboxPrefixIsDropped) { ExpectDropped("_INBOX.test.sin"); }

TEST(RouterPathTest, NoProviderIsUnavailable) {
  Backbone bb({.start_provider = false});
  auto consumer = bb.MakeConsumer(bb.sin);
  CallResult r = consumer->Call("segip", "persona_consulta", "hola", {.end_user = "ana.perez"});
  EXPECT_EQ(CodeName(ChasquiCode(r.status)), CodeName(v1::UNAVAILABLE)) << r.status;
  EXPECT_NE(MessageOf(r.status).find("no gateway of provider segip"), std::string::npos);
}

TEST(RouterPathTest, SlowProviderIsTimeout) {
  Backbone bb({.provider_timeout = absl::Milliseconds(200)});
  auto consumer = bb.MakeConsumer(bb.sin);
  CallResult r = consumer->Call("segip", "slow", "hola", {.end_user = "ana.perez"});
  EXPECT_EQ(CodeName(ChasquiCode(r.status)), CodeName(v1::TIMEOUT)) << r.status;
}

TEST(RouterPathTest, UnreadyDuringTheStartupHold) {
  Backbone bb({.startup_hold_ms = 1500});
  EXPECT_FALSE(bb.router->Ready().ok());
  auto consumer = bb.MakeConsumer(bb.sin);
  CallResult early = consumer->Call("segip", "persona_consulta", "hola",
                                    {.end_user = "ana.perez", .timeout = absl::Seconds(1)});
  EXPECT_EQ(CodeName(ChasquiCode(early.status)), CodeName(v1::UNAVAILABLE)) << early.status;
  EXPECT_EQ(bb.provider_system_calls.load(), 0);
  ASSERT_TRUE(WaitFor([&] { return bb.router->Ready().ok(); }, std::chrono::seconds(10)));
  CallResult later = consumer->Call("segip", "persona_consulta", "hola", {.end_user = "ana.perez"});
  EXPECT_TRUE(later.status.ok()) << later.status;
}

TEST(RouterPathTest, ProviderRefusesRequestsNotFromARouter) {
  Backbone bb;
  RequestForge forge(bb.sin, bb.segip.pub);
  auto bus = bb.Connect("direct");
  // Straight to the provider's subject, bypassing the router.
  ASSERT_TRUE(bus->Publish(ServiceSubjectFor("test", "segip", "persona_consulta"),
                           forge.Seal(forge.Header("persona_consulta"), "hola"),
                           "_INBOX.test.sin.direct.1")
                  .ok());
  // As if from a router of another environment.
  ASSERT_TRUE(bus->Publish(ServiceSubjectFor("test", "segip", "persona_consulta"),
                           forge.Seal(forge.Header("persona_consulta"), "hola"),
                           "_INBOX._router.prod.r9.1")
                  .ok());
  ASSERT_TRUE(bus->Flush(absl::Seconds(2)).ok());
  ASSERT_TRUE(WaitFor([&] { return bb.provider->refused() == 2; }, std::chrono::seconds(5)));
  EXPECT_EQ(bb.provider_system_calls.load(), 0);
}

}  // namespace
}  // namespace chasqui::testing

namespace chasqui::testing {
namespace {

// Found by review: things a provider or consumer written in the obvious way does.
TEST(SdkBehaviourTest, AProviderMayCallAnotherServiceSynchronouslyFromItsHandler) {
  Backbone bb;
  auto nested = bb.MakeConsumer(bb.segip);  // segip consumes its own persona_consulta
  ASSERT_TRUE(bb.provider
                  ->Serve("chain",
                          [&](const RequestContext& ctx,
                              std::string_view body) -> absl::StatusOr<std::string> {
                            CallResult inner = nested->Call(
                                "segip", "persona_consulta", body,
                                {.end_user = ctx.end_user, .timeout = absl::Seconds(3)});
                            if (!inner.status.ok()) return inner.status;
                            return "chain(" + inner.body + ")";
                          })
                  .ok());
  ASSERT_TRUE(bb.provider_bus->Flush(absl::Seconds(2)).ok());
  auto consumer = bb.MakeConsumer(bb.sin);
  CallResult r = consumer->Call("segip", "chain", "x",
                                {.end_user = "ana.perez", .timeout = absl::Seconds(5)});
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.body, "chain(segip:segip:x)");
}

TEST(SdkBehaviourTest, ASlowProviderSystemDoesNotHoldEarlierReplies) {
  Backbone bb({.provider_timeout = absl::Seconds(5)});
  ASSERT_TRUE(bb.provider
                  ->Serve("slowish",
                          [](const RequestContext&,
                             std::string_view body) -> absl::StatusOr<std::string> {
                            std::this_thread::sleep_for(std::chrono::milliseconds(400));
                            return std::string(body);
                          })
                  .ok());
  ASSERT_TRUE(bb.provider_bus->Flush(absl::Seconds(2)).ok());
  auto consumer = bb.MakeConsumer(bb.sin);
  // Warm the provider's notion of how long its system takes.
  ASSERT_TRUE(consumer->Call("segip", "slowish", "w", {.end_user = "ana.perez"}).status.ok());
  absl::Mutex mu;
  std::vector<int64_t> latencies_ms;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 3; ++i) {
    consumer->CallAsync("segip", "slowish", "x", {.end_user = "ana.perez"}, [&](CallResult r) {
      EXPECT_TRUE(r.status.ok()) << r.status;
      absl::MutexLock lock(&mu);
      latencies_ms.push_back(std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::steady_clock::now() - start)
                                 .count());
    });
  }
  ASSERT_TRUE(WaitFor([&] {
    absl::MutexLock lock(&mu);
    return latencies_ms.size() == 3;
  }));
  absl::MutexLock lock(&mu);
  // The first answer leaves when its own 400 ms are done, not after the next request's 400 ms.
  EXPECT_LT(latencies_ms.front(), 700) << "the first reply waited for a later request";
}

TEST(SdkBehaviourTest, RetryingFromACallbackDuringShutdownIsRefusedNotACrash) {
  Backbone bb;
  auto consumer = bb.MakeConsumer(bb.sin);
  std::atomic<int> retried_unavailable{0};
  Consumer* raw = consumer.get();
  raw->CallAsync("segip", "slow", "x", {.end_user = "ana.perez", .timeout = absl::Seconds(10)},
                 [&, raw](CallResult first) {
                   // The obvious reaction to UNAVAILABLE: try again.
                   raw->CallAsync("segip", "slow", "x", {.end_user = "ana.perez"},
                                  [&](CallResult again) {
                                    if (ChasquiCode(again.status) == v1::UNAVAILABLE) {
                                      ++retried_unavailable;
                                    }
                                  });
                 });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the call is in flight
  consumer.reset();
  EXPECT_EQ(retried_unavailable.load(), 1);
}

TEST(SdkBehaviourTest, TheProviderSystemsErrorWordsTravelSealed) {
  Backbone bb;
  ASSERT_TRUE(bb.provider
                  ->Serve("fails",
                          [](const RequestContext&,
                             std::string_view) -> absl::StatusOr<std::string> {
                            return absl::NotFoundError("no hay persona con CI 4567890");
                          })
                  .ok());
  ASSERT_TRUE(bb.provider_bus->Flush(absl::Seconds(2)).ok());
  auto consumer = bb.MakeConsumer(bb.sin);
  CallResult r = consumer->Call("segip", "fails", "x", {.end_user = "ana.perez"});
  EXPECT_EQ(CodeName(ChasquiCode(r.status)), CodeName(v1::PROVIDER_ERROR));
  EXPECT_EQ(MessageOf(r.status), "no hay persona con CI 4567890");
  // What the router (and later the audit trace) sees: the code, not the words.
  RawClient raw(bb, "sin");
  RequestForge forge(bb.sin, bb.segip.pub);
  auto answer = raw.Send(ReqSubject("sin", "fails"), forge.Seal(forge.Header("fails"), "x"));
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->kind(), v1::KIND_ERROR);
  EXPECT_TRUE(answer->sealed());
  EXPECT_EQ(answer->error().message().find("4567890"), std::string::npos)
      << answer->error().message();
}

}  // namespace
}  // namespace chasqui::testing

namespace chasqui::testing {
namespace {

// A flood of forged envelopes under one consumer's subject costs the router at most its
// refusal budget in checks and answers; the rest is dropped unchecked and counted, another
// consumer's traffic keeps flowing, and the flooded consumer is served again once it stops.
TEST(RouterFloodTest, ForgedFloodIsThrottledWhileOtherConsumersKeepFlowing) {
  BackboneOptions options;
  options.preauth_refusals = {.per_second = 20, .burst = 20};
  Backbone bb(options);
  // Envelopes claiming aduana's key but signed by mallory: each costs a signature check.
  RequestForge forge(bb.mallory, bb.segip.pub);
  constexpr int kFlood = 3000;
  std::vector<std::string> flood;
  for (int i = 0; i < kFlood; ++i) {
    v1::Header h = forge.Header("persona_consulta");
    h.set_consumer("aduana");
    h.set_sender_cert(bb.aduana.pub.serial);
    flood.push_back(forge.Seal(h, "hola"));
  }
  auto flooder = bb.Connect("flooder");
  std::atomic<int> answered{0};
  auto answers = flooder->Subscribe("_INBOX.test.aduana.flood.>",
                                    [&](const BusMessage&) { ++answered; });
  ASSERT_TRUE(answers.ok()) << answers.status();
  ASSERT_TRUE(flooder->Flush(absl::Seconds(5)).ok());

  auto sin = bb.MakeConsumer(bb.sin);
  std::atomic<bool> flooding{true};
  std::thread flood_thread([&] {
    for (int i = 0; i < kFlood; ++i) {
      ASSERT_TRUE(flooder
                      ->Publish(ReqSubject("aduana", "persona_consulta"), flood[i],
                                "_INBOX.test.aduana.flood." + std::to_string(i))
                      .ok());
      if (i % 500 == 499) absl::SleepFor(absl::Milliseconds(20));
    }
    ASSERT_TRUE(flooder->Flush(absl::Seconds(5)).ok());
    flooding = false;
  });
  const absl::Time start = absl::Now();
  int sin_calls = 0;
  while (flooding || sin_calls < 50) {
    CallResult reply = sin->Call("segip", "persona_consulta", "hola", {.end_user = "ana"});
    ASSERT_TRUE(reply.status.ok()) << "sin's call " << sin_calls << " during the flood: "
                                   << reply.status;
    ++sin_calls;
  }
  flood_thread.join();
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);

  auto dropped = [&] {
    return SeriesValue(*bb.registry, "chasqui_router_dropped_total", {"reason=\"preauth_flood\""});
  };
  ASSERT_TRUE(WaitFor([&] { return answered.load() + dropped() >= kFlood; }))
      << "answered " << answered << " + dropped " << dropped() << " of " << kFlood;
  EXPECT_EQ(answered.load() + dropped(), kFlood) << "every forged envelope answered or counted";
  EXPECT_GE(answered.load(), 20) << "the burst is answered with precise refusals";
  EXPECT_LE(answered.load(), 20 + 20 * seconds + 20)
      << "at most the burst plus 20/s over " << seconds << " s were checked and answered";
  EXPECT_EQ(bb.provider_system_calls.load(), sin_calls) << "only sin's calls reached segip";

  // Once the flood stops, aduana's own gateway is served again.
  absl::SleepFor(absl::Milliseconds(200));
  auto aduana_consumer = bb.MakeConsumer(bb.aduana);
  CallResult reply = aduana_consumer->Call("segip", "persona_consulta", "hola", {.end_user = "luis"});
  EXPECT_TRUE(reply.status.ok()) << reply.status;
}

}  // namespace
}  // namespace chasqui::testing
