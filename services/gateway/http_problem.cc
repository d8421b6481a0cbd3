#include "services/gateway/http_problem.h"

#include <algorithm>
#include <cctype>

#include "common/envelope/errors.h"
#include "nlohmann/json.hpp"

namespace chasqui {
namespace {

std::string_view TitleFor(v1::Code code) {
  switch (code) {
    case v1::OK: return "OK";
    case v1::BAD_REQUEST: return "Bad request";
    case v1::UNAUTHENTICATED: return "Not authenticated";
    case v1::FORBIDDEN: return "Forbidden: no grant for this service";
    case v1::NOT_FOUND: return "Not found";
    case v1::END_USER_UNKNOWN: return "End user unknown or disabled";
    case v1::CONSENT_REQUIRED: return "Citizen consent required";
    case v1::QUOTA_EXCEEDED: return "Quota exceeded";
    case v1::REPLAYED: return "Request replayed";
    case v1::EXPIRED: return "Request expired";
    case v1::UNAVAILABLE: return "Service unavailable";
    case v1::TIMEOUT: return "Timeout";
    case v1::PROVIDER_ERROR: return "Provider error";
    case v1::AUDIT_UNAVAILABLE: return "Audit unavailable: no data released";
    default: return "Unknown error";
  }
}

std::string_view TitleForKind(std::string_view kind) {
  if (kind == "method-not-allowed") return "Method not allowed";
  if (kind == "body-too-large") return "Request body too large";
  return {};
}

// "QUOTA_EXCEEDED" -> "quota-exceeded".
std::string KindOf(v1::Code code) {
  std::string kind(CodeName(code));
  for (char& c : kind) {
    c = c == '_' ? '-' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return kind;
}

}  // namespace

int HttpStatusFor(v1::Code code) {
  switch (code) {
    case v1::OK: return 200;
    case v1::BAD_REQUEST:
    case v1::EXPIRED: return 400;
    case v1::UNAUTHENTICATED: return 401;
    case v1::FORBIDDEN:
    case v1::END_USER_UNKNOWN:
    case v1::CONSENT_REQUIRED: return 403;
    case v1::NOT_FOUND: return 404;
    case v1::REPLAYED: return 409;
    case v1::QUOTA_EXCEEDED: return 429;
    case v1::PROVIDER_ERROR: return 502;
    case v1::UNAVAILABLE:
    case v1::AUDIT_UNAVAILABLE: return 503;
    case v1::TIMEOUT: return 504;
    default: return 502;
  }
}

uint32_t RetryAfterSeconds(uint32_t retry_after_ms) {
  return std::max<uint32_t>(1, retry_after_ms / 1000 + (retry_after_ms % 1000 != 0 ? 1 : 0));
}

HttpProblem ProblemFor(v1::Code code, std::string_view detail, std::string_view request_id,
                       uint32_t retry_after_ms) {
  HttpProblem p;
  p.status = HttpStatusFor(code);
  p.code = code;
  p.detail = std::string(detail);
  p.request_id = std::string(request_id);
  p.retry_after_ms = retry_after_ms;
  return p;
}

HttpHeaders ProblemHeaders(const HttpProblem& problem) {
  HttpHeaders headers;
  if (!problem.request_id.empty()) headers.emplace_back("X-Chasqui-Request-Id", problem.request_id);
  if (problem.code == v1::QUOTA_EXCEEDED) {
    headers.emplace_back("Retry-After", std::to_string(RetryAfterSeconds(problem.retry_after_ms)));
  }
  return headers;
}

std::string ProblemJson(const HttpProblem& problem) {
  const std::string kind = problem.kind.empty() ? KindOf(problem.code) : problem.kind;
  std::string_view title = TitleForKind(problem.kind);
  if (title.empty()) title = TitleFor(problem.code);
  nlohmann::json doc = {
      {"type", "urn:chasqui:problem:" + kind},
      {"title", std::string(title)},
      {"status", problem.status},
      {"detail", problem.detail},
      {"code", std::string(CodeName(problem.code))},
      {"request_id", problem.request_id},
  };
  return doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace chasqui
