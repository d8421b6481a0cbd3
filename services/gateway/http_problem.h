#pragma once
// How the entity gateway speaks HTTP about Chasqui's codes: one HTTP status per code, and the
// error body, an RFC 9457 problem document (application/problem+json) with the Chasqui code
// and the request id beside the standard fields. Pure functions; thread-safe.

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "chasqui/v1/envelope.pb.h"

namespace chasqui {

inline constexpr char kProblemContentType[] = "application/problem+json";

// The HTTP status a gateway answers for `code`: OK 200; BAD_REQUEST, EXPIRED 400;
// UNAUTHENTICATED 401; FORBIDDEN, END_USER_UNKNOWN, CONSENT_REQUIRED 403; NOT_FOUND 404;
// REPLAYED 409; QUOTA_EXCEEDED 429; PROVIDER_ERROR 502; UNAVAILABLE, AUDIT_UNAVAILABLE 503;
// TIMEOUT 504. A value outside the enum is 502 (the answer came from somewhere we do not
// understand).
int HttpStatusFor(v1::Code code);

// Retry-After in whole seconds for a QUOTA_EXCEEDED's retry_after_ms: rounded up, and at
// least 1, so a client never reads "retry now" into a refusal.
uint32_t RetryAfterSeconds(uint32_t retry_after_ms);

struct HttpProblem {
  int status = 500;
  v1::Code code = v1::PROVIDER_ERROR;
  // The problem's kind, e.g. "quota-exceeded"; empty = derived from `code`. Set it for the
  // gateway's own HTTP-level refusals (method-not-allowed, body-too-large) that share a code.
  std::string kind;
  std::string detail;
  std::string request_id;  // hex, as the trace knows it, or the gateway's own id for a refusal
  uint32_t retry_after_ms = 0;  // with QUOTA_EXCEEDED
};

// A problem for a Chasqui outcome: status from HttpStatusFor.
HttpProblem ProblemFor(v1::Code code, std::string_view detail, std::string_view request_id,
                       uint32_t retry_after_ms = 0);

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;
// The headers that go with a problem: X-Chasqui-Request-Id when there is an id, and
// Retry-After (RetryAfterSeconds) with QUOTA_EXCEEDED.
HttpHeaders ProblemHeaders(const HttpProblem& problem);

// The JSON document: {"type","title","status","detail","code","request_id"}. `type` is
// "urn:chasqui:problem:<kind>". Invalid UTF-8 in the detail is replaced, never thrown on.
std::string ProblemJson(const HttpProblem& problem);

}  // namespace chasqui
