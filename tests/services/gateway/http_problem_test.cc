// The gateway's HTTP contract without a network: every Chasqui code's status, Retry-After, the
// problem document's fields, and the parsing of --serve and --listen.

#include "services/gateway/http_problem.h"

#include <map>
#include <string>

#include "common/envelope/errors.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "services/gateway/http_gateway.h"
#include "services/gateway/http_upstream.h"

namespace chasqui {
namespace {

TEST(HttpStatusTest, EveryCodeMapsToItsStatus) {
  const std::map<v1::Code, int> expected = {
      {v1::OK, 200},
      {v1::BAD_REQUEST, 400},
      {v1::EXPIRED, 400},
      {v1::UNAUTHENTICATED, 401},
      {v1::FORBIDDEN, 403},
      {v1::END_USER_UNKNOWN, 403},
      {v1::CONSENT_REQUIRED, 403},
      {v1::NOT_FOUND, 404},
      {v1::REPLAYED, 409},
      {v1::QUOTA_EXCEEDED, 429},
      {v1::PROVIDER_ERROR, 502},
      {v1::UNAVAILABLE, 503},
      {v1::AUDIT_UNAVAILABLE, 503},
      {v1::TIMEOUT, 504},
  };
  // Every code the wire defines, so a code added to the proto fails here until it is mapped.
  const auto* codes = v1::Code_descriptor();
  for (int i = 0; i < codes->value_count(); ++i) {
    const auto code = static_cast<v1::Code>(codes->value(i)->number());
    auto it = expected.find(code);
    ASSERT_NE(it, expected.end()) << CodeName(code) << " has no expected HTTP status here";
    EXPECT_EQ(HttpStatusFor(code), it->second) << CodeName(code);
    EXPECT_EQ(ProblemFor(code, "why", "id").status, it->second) << CodeName(code);
  }
  EXPECT_EQ(static_cast<int>(expected.size()), codes->value_count());
  EXPECT_EQ(HttpStatusFor(static_cast<v1::Code>(99)), 502);
}

TEST(HttpStatusTest, RetryAfterIsWholeSecondsRoundedUpAndNeverZero) {
  EXPECT_EQ(RetryAfterSeconds(0), 1u);
  EXPECT_EQ(RetryAfterSeconds(1), 1u);
  EXPECT_EQ(RetryAfterSeconds(1000), 1u);
  EXPECT_EQ(RetryAfterSeconds(1001), 2u);
  EXPECT_EQ(RetryAfterSeconds(2500), 3u);
  EXPECT_EQ(RetryAfterSeconds(60000), 60u);
}

TEST(HttpStatusTest, QuotaExceededIs429WithRetryAfter) {
  const HttpProblem p = ProblemFor(v1::QUOTA_EXCEEDED, "over 10/min", "ab12", 2500);
  EXPECT_EQ(p.status, 429);
  const HttpHeaders headers = ProblemHeaders(p);
  const HttpHeaders expected = {{"X-Chasqui-Request-Id", "ab12"}, {"Retry-After", "3"}};
  EXPECT_EQ(headers, expected);
  // No Retry-After with any other code.
  for (v1::Code code : {v1::UNAVAILABLE, v1::TIMEOUT, v1::FORBIDDEN}) {
    for (const auto& [name, value] : ProblemHeaders(ProblemFor(code, "x", "ab12", 2500))) {
      EXPECT_NE(name, "Retry-After") << CodeName(code);
    }
  }
}

TEST(ProblemJsonTest, HasEveryField) {
  const std::string text =
      ProblemJson(ProblemFor(v1::CONSENT_REQUIRED, "citizen 123 has not consented", "00ff"));
  const auto doc = nlohmann::json::parse(text);
  EXPECT_EQ(doc.at("type"), "urn:chasqui:problem:consent-required");
  EXPECT_EQ(doc.at("title"), "Citizen consent required");
  EXPECT_EQ(doc.at("status"), 403);
  EXPECT_EQ(doc.at("detail"), "citizen 123 has not consented");
  EXPECT_EQ(doc.at("code"), "CONSENT_REQUIRED");
  EXPECT_EQ(doc.at("request_id"), "00ff");
  EXPECT_EQ(doc.size(), 6u) << text;
}

TEST(ProblemJsonTest, HttpLevelKindsKeepTheirOwnTypeAndTitle) {
  HttpProblem p = ProblemFor(v1::BAD_REQUEST, "GET is not allowed here; use POST", "01");
  p.status = 405;
  p.kind = "method-not-allowed";
  const auto doc = nlohmann::json::parse(ProblemJson(p));
  EXPECT_EQ(doc.at("type"), "urn:chasqui:problem:method-not-allowed");
  EXPECT_EQ(doc.at("title"), "Method not allowed");
  EXPECT_EQ(doc.at("status"), 405);
  EXPECT_EQ(doc.at("code"), "BAD_REQUEST");
}

TEST(ProblemJsonTest, InvalidUtf8InTheDetailIsReplacedNotThrown) {
  std::string text;
  EXPECT_NO_THROW(text = ProblemJson(ProblemFor(v1::PROVIDER_ERROR, "bad \xff\xfe bytes", "01")));
  EXPECT_TRUE(nlohmann::json::accept(text)) << text;
}

TEST(ServeSpecTest, ParsesServiceAndUrl) {
  auto s = ParseServeSpec("persona_consulta=http://127.0.0.1:8081/persona?v=2");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->service, "persona_consulta");
  EXPECT_EQ(s->url.scheme, "http");
  EXPECT_EQ(s->url.host, "127.0.0.1");
  EXPECT_EQ(s->url.port, 8081);
  EXPECT_EQ(s->url.path, "/persona?v=2");
  auto bare = ParseServeSpec("x=https://segip.internal");
  ASSERT_TRUE(bare.ok()) << bare.status();
  EXPECT_EQ(bare->url.port, 443);
  EXPECT_EQ(bare->url.path, "/");
  auto v6 = ParseServeSpec("x=http://[::1]:9000/a");
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(v6->url.host, "[::1]");
}

TEST(ServeSpecTest, RefusesWhatIsNotServiceEqualsUrl) {
  for (const char* bad : {"persona_consulta", "Persona=http://h/", "x=ftp://h/", "x=http://",
                          "x=http://h:99999/", "=http://h/", "x=127.0.0.1:8081"}) {
    auto s = ParseServeSpec(bad);
    EXPECT_FALSE(s.ok()) << bad;
    EXPECT_NE(std::string(s.status().message()).find("expected"), std::string::npos)
        << s.status();
  }
}

TEST(ListenAddressTest, ParsesHostAndPort) {
  auto a = ParseListenAddress("127.0.0.1:8080");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->first, "127.0.0.1");
  EXPECT_EQ(a->second, 8080);
  auto v6 = ParseListenAddress("[::1]:0");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->first, "::1");
  EXPECT_EQ(v6->second, 0);
  for (const char* bad : {"8080", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", ":8080",
                          "host:port"}) {
    EXPECT_FALSE(ParseListenAddress(bad).ok()) << bad;
  }
}

TEST(GatewayOptionsTest, BodyLimitStaysBelowNatsPayload) {
  HttpGatewayOptions o;
  EXPECT_TRUE(ValidateGatewayOptions(o).ok());
  o.max_body_bytes = 1024 * 1024;
  auto s = ValidateGatewayOptions(o);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("--max-body-bytes"), std::string::npos) << s;
  o.max_body_bytes = 0;
  EXPECT_FALSE(ValidateGatewayOptions(o).ok());
}

TEST(GatewayOptionsTest, RefusesAServiceServedTwice) {
  HttpGatewayOptions o;
  o.serve.push_back(*ParseServeSpec("a=http://127.0.0.1:1/"));
  o.serve.push_back(*ParseServeSpec("a=http://127.0.0.1:2/"));
  auto s = ValidateGatewayOptions(o);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("given twice"), std::string::npos) << s;
}

}  // namespace
}  // namespace chasqui
