// The entity gateway over a real backbone (nats-server + router): sin's gateway as the consumer,
// segip's gateway as the provider in front of an upstream HTTP system. Each test asserts what an
// entity's system would see: the HTTP status, the problem document, the headers, and what
// reached (or never reached) the provider's system.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "common/core/status.h"
#include "fmt/format.h"
#include "gtest/gtest.h"
#include "services/gateway/http_gateway.h"
#include "tests/services/gateway/gateway_test_support.h"
#include "tests/services/router/backbone.h"
#include "tests/support/wait_for.h"

namespace chasqui::testing {
namespace {

using std::chrono::steady_clock;

const httplib::Headers kAna = {{"X-Chasqui-End-User", "ana.perez"}};
constexpr char kPersona[] = "/v1/segip/persona_consulta";

// A backbone without its SDK provider, segip's gateway serving what `provider` says, and sin's
// gateway. Declared after the upstream system it points at, so it stops first.
class Deployment {
 public:
  struct Options {
    absl::Duration router_provider_timeout = absl::Milliseconds(500);
    HttpGatewayOptions consumer;
    HttpGatewayOptions provider;
  };

  explicit Deployment(Options options)
      : bb({.provider_timeout = options.router_provider_timeout, .start_provider = false}),
        consumer_registry(std::make_shared<prometheus::Registry>()),
        provider_registry(std::make_shared<prometheus::Registry>()) {
    options.consumer.port = 0;
    options.provider.port = 0;
    provider_bus = bb.Connect("gateway-segip");
    consumer_bus = bb.Connect("gateway-sin");
    if (!options.provider.serve.empty()) {
      auto p = HttpGateway::Start(options.provider, provider_bus.get(), Copy(bb.segip), bb.trust,
                                  provider_registry);
      CHASQUI_CHECK(p.ok(), MessageOf(p.status()));
      provider = *std::move(p);
    }
    auto c = HttpGateway::Start(options.consumer, consumer_bus.get(), Copy(bb.sin), bb.trust,
                                consumer_registry);
    CHASQUI_CHECK(c.ok(), MessageOf(c.status()));
    consumer = *std::move(c);
  }

  HttpReply Post(const std::string& path, const std::string& body,
                 const httplib::Headers& headers = kAna) {
    return Send(consumer->port(), "POST", path, body, headers);
  }

  Backbone bb;
  std::shared_ptr<prometheus::Registry> consumer_registry, provider_registry;
  std::unique_ptr<Bus> provider_bus, consumer_bus;
  std::unique_ptr<HttpGateway> provider, consumer;
};

HttpGatewayOptions Serving(const std::string& service, const std::string& url) {
  HttpGatewayOptions o;
  auto spec = ParseServeSpec(service + "=" + url);
  CHASQUI_CHECK(spec.ok(), MessageOf(spec.status()));
  o.serve.push_back(*std::move(spec));
  return o;
}

// An answer is a problem document with every field, and names the same request id as its
// header.
void ExpectProblem(const HttpReply& r, int status, const std::string& code,
                   const std::string& detail_part = "") {
  ASSERT_EQ(r.status, status) << r.error << " " << r.body;
  EXPECT_EQ(r.Header("Content-Type"), "application/problem+json");
  auto doc = nlohmann::json::parse(r.body, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(doc.is_object()) << r.body;
  for (const char* field : {"type", "title", "status", "detail", "code", "request_id"}) {
    EXPECT_TRUE(doc.contains(field)) << "missing " << field << " in " << r.body;
  }
  EXPECT_EQ(doc.value("status", 0), status) << r.body;
  EXPECT_EQ(doc.value("code", ""), code) << r.body;
  EXPECT_EQ(doc.value("type", "").rfind("urn:chasqui:problem:", 0), 0u) << r.body;
  EXPECT_FALSE(doc.value("title", "").empty()) << r.body;
  const std::string id = doc.value("request_id", "");
  EXPECT_TRUE(std::regex_match(id, std::regex("[0-9a-f]{32}"))) << r.body;
  EXPECT_EQ(r.Header("X-Chasqui-Request-Id"), id);
  if (!detail_part.empty()) {
    EXPECT_NE(doc.value("detail", "").find(detail_part), std::string::npos) << r.body;
  }
}

UpstreamSystem::Handler Echo() {
  return [](const httplib::Request& req, httplib::Response& res) {
    res.set_content("{\"segip\":" + req.body + "}", "application/json");
  };
}

TEST(GatewayTest, BothDirectionsEndToEnd) {
  UpstreamSystem segip_system(Echo());
  Deployment d({.provider = Serving("persona_consulta", segip_system.Url("/persona"))});
  const std::string body = R"({"ci":"4567890"})";
  HttpReply r = d.Post(kPersona, body,
                       {{"X-Chasqui-End-User", "ana.perez"},
                        {"X-Chasqui-Purpose", "tramite 123"},
                        {"X-Chasqui-Consent-Ref", "consent-9"}});
  ASSERT_EQ(r.status, 200) << r.error << " " << r.body;
  EXPECT_EQ(r.body, R"({"segip":{"ci":"4567890"}})");
  EXPECT_EQ(r.Header("Content-Type"), "application/json");
  const std::string id = r.Header("X-Chasqui-Request-Id");
  EXPECT_TRUE(std::regex_match(id, std::regex("[0-9a-f]{32}"))) << id;

  // What segip's system received: the opened body and the metadata.
  ASSERT_EQ(segip_system.calls(), 1);
  UpstreamSystem::Seen seen = segip_system.Last();
  EXPECT_EQ(seen.path, "/persona");
  EXPECT_EQ(seen.body, body);
  EXPECT_EQ(seen.Header("Content-Type"), "application/json");
  EXPECT_EQ(seen.Header("X-Chasqui-Consumer"), "sin");
  EXPECT_EQ(seen.Header("X-Chasqui-Service"), "persona_consulta");
  EXPECT_EQ(seen.Header("X-Chasqui-End-User"), "ana.perez");
  EXPECT_EQ(seen.Header("X-Chasqui-Purpose"), "tramite 123");
  EXPECT_EQ(seen.Header("X-Chasqui-Consent-Ref"), "consent-9");
  EXPECT_EQ(seen.Header("X-Chasqui-Request-Id"), id) << "one id from end to end";

  EXPECT_EQ(SeriesValue(*d.consumer_registry, "chasqui_gateway_requests_total",
                        {"direction=\"consume\"", "provider=\"segip\"",
                         "service=\"persona_consulta\"", "code=\"OK\"", "env=\"test\""}),
            1);
  EXPECT_EQ(SeriesValue(*d.provider_registry, "chasqui_gateway_requests_total",
                        {"direction=\"provide\"", "provider=\"segip\"",
                         "service=\"persona_consulta\"", "code=\"OK\""}),
            1);
  EXPECT_EQ(SeriesValue(*d.consumer_registry, "chasqui_gateway_request_duration_seconds_count",
                        {"direction=\"consume\""}),
            1);
  EXPECT_TRUE(d.consumer->Ready().ok());
}

TEST(GatewayTest, ParallelCallsAreAllAnsweredWithTheirOwnBodies) {
  UpstreamSystem segip_system(Echo());
  Deployment d({.provider = Serving("persona_consulta", segip_system.Url("/persona"))});
  constexpr int kThreads = 4, kCalls = 10;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCalls; ++i) {
        const std::string body = fmt::format(R"({{"ci":"{}-{}"}})", t, i);
        HttpReply r = d.Post(kPersona, body);
        if (r.status == 200 && r.body == "{\"segip\":" + body + "}") ++ok;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kThreads * kCalls);
  EXPECT_EQ(segip_system.calls(), kThreads * kCalls);
}

TEST(GatewayTest, MissingEndUserIs400AndNothingIsSent) {
  UpstreamSystem segip_system(Echo());
  Deployment d({.provider = Serving("persona_consulta", segip_system.Url("/persona"))});
  ExpectProblem(d.Post(kPersona, "{}", {}), 400, "BAD_REQUEST", "X-Chasqui-End-User");
  EXPECT_EQ(segip_system.calls(), 0);
}

TEST(GatewayTest, ApiKeyIsRequiredWhenConfigured) {
  UpstreamSystem segip_system(Echo());
  Deployment::Options o{.provider = Serving("persona_consulta", segip_system.Url("/persona"))};
  o.consumer.api_key = "k3y-0f-s1n";
  Deployment d(std::move(o));
  HttpReply missing = d.Post(kPersona, "{}");
  ExpectProblem(missing, 401, "UNAUTHENTICATED", "missing Authorization");
  EXPECT_EQ(missing.Header("WWW-Authenticate"), "Bearer");
  httplib::Headers wrong = kAna;
  wrong.emplace("Authorization", "Bearer k3y-0f-s1m");
  ExpectProblem(d.Post(kPersona, "{}", wrong), 401, "UNAUTHENTICATED", "wrong API key");
  httplib::Headers prefix = kAna;
  prefix.emplace("Authorization", "Bearer k3y-0f-s1");
  ExpectProblem(d.Post(kPersona, "{}", prefix), 401, "UNAUTHENTICATED");
  // Even unknown paths ask for the key first.
  ExpectProblem(Send(d.consumer->port(), "GET", "/nothing", "", {}), 401, "UNAUTHENTICATED");
  EXPECT_EQ(segip_system.calls(), 0);
  httplib::Headers right = kAna;
  right.emplace("Authorization", "Bearer k3y-0f-s1n");
  HttpReply ok = d.Post(kPersona, "{}", right);
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(segip_system.calls(), 1);
}

TEST(GatewayTest, UnknownPathIs404AndWrongMethodIs405) {
  UpstreamSystem segip_system(Echo());
  Deployment d({.provider = Serving("persona_consulta", segip_system.Url("/persona"))});
  const int port = d.consumer->port();
  ExpectProblem(Send(port, "GET", "/v2/segip/persona_consulta", "", kAna), 404, "NOT_FOUND",
                "no endpoint");
  ExpectProblem(Send(port, "POST", "/v1/segip", "{}", kAna), 404, "NOT_FOUND");
  ExpectProblem(Send(port, "POST", "/v1/segip/persona_consulta/extra", "{}", kAna), 404,
                "NOT_FOUND");
  for (const char* method : {"GET", "PUT", "DELETE", "PATCH"}) {
    HttpReply r = Send(port, method, kPersona, "", kAna);
    ExpectProblem(r, 405, "BAD_REQUEST", "use POST");
    EXPECT_EQ(r.Header("Allow"), "POST") << method;
    EXPECT_NE(r.body.find("method-not-allowed"), std::string::npos) << r.body;
  }
  EXPECT_EQ(segip_system.calls(), 0);
}

TEST(GatewayTest, OversizeBodyIs413AndTheLimitItselfPasses) {
  UpstreamSystem segip_system(Echo());
  Deployment::Options o{.provider = Serving("persona_consulta", segip_system.Url("/persona"))};
  o.consumer.max_body_bytes = 1024;
  Deployment d(std::move(o));
  const std::string at_limit = "\"" + std::string(1022, 'a') + "\"";
  ASSERT_EQ(at_limit.size(), 1024u);
  HttpReply r = d.Post(kPersona, at_limit + " ");
  ExpectProblem(r, 413, "BAD_REQUEST", "exceeds 1024 bytes");
  EXPECT_NE(r.body.find("body-too-large"), std::string::npos) << r.body;
  EXPECT_EQ(segip_system.calls(), 0);
  HttpReply fits = d.Post(kPersona, at_limit);
  EXPECT_EQ(fits.status, 200) << fits.error << " " << fits.body;
  EXPECT_EQ(segip_system.calls(), 1);
}

TEST(GatewayTest, NoGatewayServingTheServiceIs503) {
  UpstreamSystem segip_system(Echo());
  Deployment d({.provider = Serving("persona_consulta", segip_system.Url("/persona"))});
  ExpectProblem(d.Post("/v1/segip/padron_electoral", "{}"), 503, "UNAVAILABLE",
                "no gateway of provider segip");
  // The name a caller made up does not become a metric label.
  EXPECT_EQ(SeriesValue(*d.consumer_registry, "chasqui_gateway_requests_total",
                        {"provider=\"segip\"", "service=\"unknown\"", "code=\"UNAVAILABLE\""}),
            1);
  EXPECT_EQ(ExpositionText(*d.consumer_registry).find("padron_electoral"), std::string::npos);
}

TEST(GatewayTest, UnknownProviderIs404WithAnUnknownLabel) {
  UpstreamSystem segip_system(Echo());
  Deployment d({.provider = Serving("persona_consulta", segip_system.Url("/persona"))});
  ExpectProblem(d.Post("/v1/nadie/persona_consulta", "{}"), 404, "NOT_FOUND", "nadie");
  EXPECT_EQ(SeriesValue(*d.consumer_registry, "chasqui_gateway_requests_total",
                        {"provider=\"unknown\"", "service=\"unknown\"", "code=\"NOT_FOUND\""}),
            1);
  EXPECT_EQ(ExpositionText(*d.consumer_registry).find("nadie"), std::string::npos);
}

TEST(GatewayTest, RouterTimeoutIs504) {
  UpstreamSystem segip_system([&](const httplib::Request&, httplib::Response& res) {
    segip_system.Sleep(absl::Milliseconds(1500));
    res.set_content("{}", "application/json");
  });
  Deployment::Options o{.router_provider_timeout = absl::Milliseconds(300),
                        .provider = Serving("persona_consulta", segip_system.Url("/persona"))};
  o.provider.upstream_timeout = absl::Seconds(3);  // the router gives up first
  Deployment d(std::move(o));
  const auto start = steady_clock::now();
  ExpectProblem(d.Post(kPersona, "{}"), 504, "TIMEOUT");
  EXPECT_LT(steady_clock::now() - start, std::chrono::milliseconds(1400));
}

TEST(GatewayTest, UpstreamFailureIs502) {
  UpstreamSystem segip_system([](const httplib::Request&, httplib::Response& res) {
    res.status = 500;
    res.set_content("stack trace with internal details", "text/plain");
  });
  Deployment d({.provider = Serving("persona_consulta", segip_system.Url("/persona"))});
  HttpReply r = d.Post(kPersona, "{}");
  ExpectProblem(r, 502, "PROVIDER_ERROR", "HTTP 500");
  EXPECT_EQ(r.body.find("internal details"), std::string::npos) << "5xx bodies stay inside";
  EXPECT_EQ(SeriesValue(*d.provider_registry, "chasqui_gateway_requests_total",
                        {"direction=\"provide\"", "code=\"PROVIDER_ERROR\""}),
            1);
}

TEST(GatewayTest, UpstreamDownIs502) {
  const int port = ClosedPort();
  Deployment d({.provider = Serving("persona_consulta",
                                    fmt::format("http://127.0.0.1:{}/persona", port))});
  HttpReply r = d.Post(kPersona, "{}");
  ExpectProblem(r, 502, "PROVIDER_ERROR", "unreachable");
  EXPECT_EQ(r.body.find(std::to_string(port)), std::string::npos) << "the URL stays inside";
}

TEST(GatewayTest, UpstreamSlowerThanItsTimeoutIs502) {
  UpstreamSystem segip_system([&](const httplib::Request&, httplib::Response& res) {
    segip_system.Sleep(absl::Seconds(3));
    res.set_content("{}", "application/json");
  });
  Deployment::Options o{.router_provider_timeout = absl::Seconds(3),
                        .provider = Serving("persona_consulta", segip_system.Url("/persona"))};
  o.provider.upstream_timeout = absl::Milliseconds(300);
  Deployment d(std::move(o));
  const auto start = steady_clock::now();
  ExpectProblem(d.Post(kPersona, "{}"), 502, "PROVIDER_ERROR",
                "upstream did not answer within 300 ms");
  EXPECT_LT(steady_clock::now() - start, std::chrono::milliseconds(2500));
}

TEST(GatewayTest, UpstreamRefusalIs400WithItsMessage) {
  UpstreamSystem segip_system([](const httplib::Request&, httplib::Response& res) {
    res.status = 422;
    res.set_content(R"({"detail":"ci must have 7 digits"})", "application/json");
  });
  Deployment d({.provider = Serving("persona_consulta", segip_system.Url("/persona"))});
  ExpectProblem(d.Post(kPersona, R"({"ci":"1"})"), 400, "BAD_REQUEST",
                "(HTTP 422): ci must have 7 digits");
}

TEST(GatewayTest, UpstreamRefusalMessageIsTruncated) {
  UpstreamSystem segip_system([](const httplib::Request&, httplib::Response& res) {
    res.status = 404;
    res.set_content(std::string(5000, 'x'), "text/plain");
  });
  Deployment d({.provider = Serving("persona_consulta", segip_system.Url("/persona"))});
  HttpReply r = d.Post(kPersona, "{}");
  ExpectProblem(r, 400, "BAD_REQUEST", "(HTTP 404): xxxx");
  EXPECT_LT(r.body.size(), 1000u);
}

TEST(GatewayTest, UpstreamAnswerLargerThanTheLimitIs502) {
  UpstreamSystem segip_system([](const httplib::Request&, httplib::Response& res) {
    res.set_content("\"" + std::string(4000, 'a') + "\"", "application/json");
  });
  Deployment::Options o{.provider = Serving("persona_consulta", segip_system.Url("/persona"))};
  o.provider.max_body_bytes = 1024;
  Deployment d(std::move(o));
  ExpectProblem(d.Post(kPersona, "{}"), 502, "PROVIDER_ERROR", "more than 1024 bytes");
}

TEST(GatewayTest, TakenPortIsRefusedAtStart) {
  UpstreamSystem segip_system(Echo());
  Deployment d({.provider = Serving("persona_consulta", segip_system.Url("/persona"))});
  auto bus = d.bb.Connect("gateway-sin-2");
  HttpGatewayOptions o;
  o.port = d.consumer->port();
  auto second = HttpGateway::Start(o, bus.get(), Copy(d.bb.sin), d.bb.trust, nullptr);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(MessageOf(second.status()).find(fmt::format("cannot listen on 127.0.0.1:{}", o.port)),
            std::string::npos)
      << second.status();
  // The first one still answers.
  EXPECT_EQ(d.Post(kPersona, "{}").status, 200);
}


// The provider side: concurrent upstream calls, saturation, and Idempotency-Key.

// Holds each call until `n` calls are inside the system at once (or 5 s pass: then 500), so
// the calls can only succeed if the gateway really runs them concurrently.
class Rendezvous {
 public:
  explicit Rendezvous(int n) : n_(n) {}
  bool Arrive() {
    absl::MutexLock lock(&mu_);
    ++inside_;
    max_inside_ = std::max(max_inside_, inside_);
    const bool met = mu_.AwaitWithTimeout(
        absl::Condition(+[](Rendezvous* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(r->mu_) {
          return r->max_inside_ >= r->n_;
        }, this),
        absl::Seconds(5));
    --inside_;
    return met;
  }
  int max_inside() {
    absl::MutexLock lock(&mu_);
    return max_inside_;
  }

 private:
  const int n_;
  absl::Mutex mu_;
  int inside_ ABSL_GUARDED_BY(mu_) = 0;
  int max_inside_ ABSL_GUARDED_BY(mu_) = 0;
};

TEST(GatewayProviderTest, UpstreamCallsRunConcurrently) {
  constexpr int kParallel = 4;
  Rendezvous rendezvous(kParallel);
  UpstreamSystem segip_system([&](const httplib::Request& req, httplib::Response& res) {
    if (!rendezvous.Arrive()) {
      res.status = 500;
      return;
    }
    res.set_content("{\"segip\":" + req.body + "}", "application/json");
  });
  Deployment::Options o{.router_provider_timeout = absl::Seconds(8),
                        .provider = Serving("persona_consulta", segip_system.Url("/persona"))};
  o.provider.provider_workers = kParallel;
  o.provider.upstream_timeout = absl::Seconds(7);
  o.consumer.call_timeout = absl::Seconds(10);
  Deployment d(std::move(o));
  std::vector<HttpReply> replies(kParallel);
  std::vector<std::thread> threads;
  for (int i = 0; i < kParallel; ++i) {
    threads.emplace_back([&, i] { replies[i] = d.Post(kPersona, fmt::format("{}", i)); });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kParallel; ++i) {
    EXPECT_EQ(replies[i].status, 200) << i << " " << replies[i].body;
    EXPECT_EQ(replies[i].body, fmt::format("{{\"segip\":{}}}", i));
  }
  EXPECT_EQ(rendezvous.max_inside(), kParallel);
}

TEST(GatewayProviderTest, SaturatedProviderAnswers503AtOnce) {
  absl::Notification release;
  UpstreamSystem segip_system([&](const httplib::Request&, httplib::Response& res) {
    release.WaitForNotificationWithTimeout(absl::Seconds(5));
    res.set_content("{}", "application/json");
  });
  Deployment::Options o{.router_provider_timeout = absl::Seconds(8),
                        .provider = Serving("persona_consulta", segip_system.Url("/persona"))};
  o.provider.provider_workers = 1;
  o.provider.provider_queue = 1;
  o.provider.upstream_timeout = absl::Seconds(7);
  Deployment d(std::move(o));
  // One call holds the only worker...
  HttpReply first;
  std::thread holder([&] { first = d.Post(kPersona, "{}"); });
  ASSERT_TRUE(WaitFor([&] { return segip_system.calls() == 1; }));
  // ...then two more arrive: one may wait for the worker, the other finds no room.
  HttpReply second, third;
  const auto start = steady_clock::now();
  std::thread t2([&] { second = d.Post(kPersona, "{}"); });
  std::thread t3([&] { third = d.Post(kPersona, "{}"); });
  ASSERT_TRUE(WaitFor([&] { return second.status != -1 || third.status != -1; }));
  EXPECT_LT(steady_clock::now() - start, std::chrono::milliseconds(900)) << "never held";
  release.Notify();
  holder.join();
  t2.join();
  t3.join();
  EXPECT_EQ(first.status, 200) << first.body;
  const HttpReply& refused = second.status == 503 ? second : third;
  const HttpReply& waited = second.status == 503 ? third : second;
  ExpectProblem(refused, 503, "UNAVAILABLE", "the provider gateway is saturated");
  EXPECT_EQ(waited.status, 200) << waited.body;
  EXPECT_EQ(segip_system.calls(), 2) << "the refused call never reached the system";
  EXPECT_EQ(SeriesValue(*d.provider_registry, "chasqui_gateway_provide_without_upstream_total",
                        {"reason=\"saturated\"", "code=\"UNAVAILABLE\"",
                         "service=\"persona_consulta\""}),
            1);
}

// An upstream that tells which of its calls answered: a remembered answer names call 1.
UpstreamSystem::Handler NumberedAnswers(std::atomic<int>* calls, absl::Duration delay = {},
                                        UpstreamSystem* self = nullptr) {
  return [=](const httplib::Request& req, httplib::Response& res) {
    const int n = ++*calls;
    if (self != nullptr) self->Sleep(delay);
    res.set_content(fmt::format(R"({{"call":{},"body":{}}})", n, req.body), "application/json");
  };
}

httplib::Headers WithKey(const std::string& key) {
  return {{"X-Chasqui-End-User", "ana.perez"}, {"Idempotency-Key", key}};
}

TEST(GatewayProviderTest, SameIdempotencyKeyRunsTheQueryOnce) {
  std::atomic<int> calls{0};
  UpstreamSystem segip_system(NumberedAnswers(&calls));
  Deployment d({.provider = Serving("persona_consulta", segip_system.Url("/persona"))});
  const std::string body = R"({"ci":"4567890"})";
  HttpReply r1 = d.Post(kPersona, body, WithKey("order-42"));
  ASSERT_EQ(r1.status, 200) << r1.body;
  EXPECT_EQ(r1.body, R"({"call":1,"body":{"ci":"4567890"}})");
  EXPECT_EQ(segip_system.Last().Header("Idempotency-Key"), "order-42");
  HttpReply r2 = d.Post(kPersona, body, WithKey("order-42"));
  ASSERT_EQ(r2.status, 200) << r2.body;
  EXPECT_EQ(r2.body, r1.body) << "the first answer, again";
  EXPECT_NE(r2.Header("X-Chasqui-Request-Id"), r1.Header("X-Chasqui-Request-Id"))
      << "a new exchange, traced on its own";
  EXPECT_EQ(segip_system.calls(), 1);

  // Another key runs again.
  HttpReply r3 = d.Post(kPersona, body, WithKey("order-43"));
  EXPECT_EQ(r3.body, R"({"call":2,"body":{"ci":"4567890"}})");
  // The same key with another body is refused, and nothing runs.
  ExpectProblem(d.Post(kPersona, R"({"ci":"1111111"})", WithKey("order-42")), 400,
                "BAD_REQUEST", "Idempotency-Key reused with a different body");
  // Without a key, every request runs.
  EXPECT_EQ(d.Post(kPersona, body).body, R"({"call":3,"body":{"ci":"4567890"}})");
  // Another consumer's key of the same name is its own.
  auto aduana = d.bb.MakeConsumer(d.bb.aduana);
  CallResult other = aduana->Call("segip", "persona_consulta", body,
                                  {.end_user = "luis.mamani", .idempotency_key = "order-42"});
  ASSERT_TRUE(other.status.ok()) << other.status;
  EXPECT_EQ(other.body, R"({"call":4,"body":{"ci":"4567890"}})");
  EXPECT_EQ(segip_system.calls(), 4);

  EXPECT_EQ(SeriesValue(*d.provider_registry, "chasqui_gateway_provide_without_upstream_total",
                        {"reason=\"remembered\"", "code=\"OK\""}),
            1);
  EXPECT_EQ(SeriesValue(*d.provider_registry, "chasqui_gateway_provide_without_upstream_total",
                        {"reason=\"key_conflict\"", "code=\"BAD_REQUEST\""}),
            1);
}

TEST(GatewayProviderTest, RetryAfterTheConsumerGatewayTimedOutGetsTheFirstAnswer) {
  std::atomic<int> calls{0};
  UpstreamSystem* self = nullptr;
  UpstreamSystem segip_system([&](const httplib::Request& req, httplib::Response& res) {
    NumberedAnswers(&calls, absl::Milliseconds(800), self)(req, res);
  });
  self = &segip_system;
  Deployment::Options o{.router_provider_timeout = absl::Seconds(3),
                        .provider = Serving("persona_consulta", segip_system.Url("/persona"))};
  o.consumer.call_timeout = absl::Milliseconds(250);
  Deployment d(std::move(o));
  ExpectProblem(d.Post(kPersona, "{}", WithKey("pago-7")), 504, "TIMEOUT");
  // The provider finishes the first call and remembers its answer...
  ASSERT_TRUE(WaitFor([&] {
    return SeriesValue(*d.provider_registry, "chasqui_gateway_requests_total",
                       {"direction=\"provide\"", "code=\"OK\""}) == 1;
  }));
  // ...so the consumer system's retry gets it without a second run.
  HttpReply retry = d.Post(kPersona, "{}", WithKey("pago-7"));
  ASSERT_EQ(retry.status, 200) << retry.body;
  EXPECT_EQ(retry.body, R"({"call":1,"body":{}})");
  EXPECT_EQ(segip_system.calls(), 1);
}

TEST(GatewayProviderTest, RepeatWhileTheFirstRunsWaitsForItsAnswer) {
  std::atomic<int> calls{0};
  UpstreamSystem* self = nullptr;
  UpstreamSystem segip_system([&](const httplib::Request& req, httplib::Response& res) {
    NumberedAnswers(&calls, absl::Milliseconds(400), self)(req, res);
  });
  self = &segip_system;
  Deployment::Options o{.router_provider_timeout = absl::Seconds(3),
                        .provider = Serving("persona_consulta", segip_system.Url("/persona"))};
  Deployment d(std::move(o));
  HttpReply first, repeat;
  std::thread t1([&] { first = d.Post(kPersona, "{}", WithKey("tramite-9")); });
  ASSERT_TRUE(WaitFor([&] { return segip_system.calls() == 1; }));
  std::thread t2([&] { repeat = d.Post(kPersona, "{}", WithKey("tramite-9")); });
  t1.join();
  t2.join();
  ASSERT_EQ(first.status, 200) << first.body;
  ASSERT_EQ(repeat.status, 200) << repeat.body;
  EXPECT_EQ(repeat.body, first.body);
  EXPECT_EQ(segip_system.calls(), 1);
  EXPECT_EQ(SeriesValue(*d.provider_registry, "chasqui_gateway_provide_without_upstream_total",
                        {"reason=\"joined\"", "code=\"OK\""}),
            1);
}

TEST(GatewayProviderTest, MalformedIdempotencyKeyIs400AndNothingIsSent) {
  UpstreamSystem segip_system(Echo());
  Deployment d({.provider = Serving("persona_consulta", segip_system.Url("/persona"))});
  ExpectProblem(d.Post(kPersona, "{}", WithKey(std::string(129, 'k'))), 400, "BAD_REQUEST",
                "Idempotency-Key is 129 bytes");
  ExpectProblem(d.Post(kPersona, "{}", WithKey("cl\xc3\xa1ve")), 400, "BAD_REQUEST",
                "printable ASCII");
  httplib::Headers twice = WithKey("a");
  twice.emplace("Idempotency-Key", "b");
  ExpectProblem(d.Post(kPersona, "{}", twice), 400, "BAD_REQUEST", "more than once");
  EXPECT_EQ(segip_system.calls(), 0);
  EXPECT_EQ(d.Post(kPersona, "{}", WithKey(std::string(128, 'k'))).status, 200);
}

}  // namespace
}  // namespace chasqui::testing
