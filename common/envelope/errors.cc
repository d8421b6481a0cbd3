#include "common/envelope/errors.h"

#include "absl/strings/cord.h"
#include "common/core/status.h"

namespace chasqui {
namespace {
constexpr char kPayloadUrl[] = "type.chasqui.dev/chasqui.v1.Code";

absl::StatusCode CanonicalFor(v1::Code code) {
  switch (code) {
    case v1::OK: return absl::StatusCode::kOk;
    case v1::BAD_REQUEST: return absl::StatusCode::kInvalidArgument;
    case v1::UNAUTHENTICATED: return absl::StatusCode::kUnauthenticated;
    case v1::FORBIDDEN:
    case v1::END_USER_UNKNOWN:
    case v1::CONSENT_REQUIRED: return absl::StatusCode::kPermissionDenied;
    case v1::NOT_FOUND: return absl::StatusCode::kNotFound;
    case v1::QUOTA_EXCEEDED: return absl::StatusCode::kResourceExhausted;
    case v1::REPLAYED: return absl::StatusCode::kAlreadyExists;
    case v1::EXPIRED: return absl::StatusCode::kFailedPrecondition;
    case v1::UNAVAILABLE:
    case v1::AUDIT_UNAVAILABLE: return absl::StatusCode::kUnavailable;
    case v1::TIMEOUT: return absl::StatusCode::kDeadlineExceeded;
    case v1::PROVIDER_ERROR: return absl::StatusCode::kAborted;
    default: return absl::StatusCode::kUnknown;
  }
}
}  // namespace

absl::Status ChasquiError(v1::Code code, std::string_view message) {
  absl::Status status(CanonicalFor(code), ToAbsl(message));
  status.SetPayload(kPayloadUrl, absl::Cord(std::string(1, static_cast<char>(code))));
  return status;
}

v1::Code ChasquiCode(const absl::Status& status) {
  if (status.ok()) return v1::OK;
  if (auto payload = status.GetPayload(kPayloadUrl); payload && payload->size() == 1) {
    const int n = static_cast<unsigned char>((*payload)[0]);
    if (v1::Code_IsValid(n)) return static_cast<v1::Code>(n);
  }
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument: return v1::BAD_REQUEST;
    case absl::StatusCode::kUnauthenticated: return v1::UNAUTHENTICATED;
    case absl::StatusCode::kPermissionDenied: return v1::FORBIDDEN;
    case absl::StatusCode::kNotFound: return v1::NOT_FOUND;
    case absl::StatusCode::kResourceExhausted: return v1::QUOTA_EXCEEDED;
    case absl::StatusCode::kAlreadyExists: return v1::REPLAYED;
    case absl::StatusCode::kFailedPrecondition: return v1::EXPIRED;
    case absl::StatusCode::kDeadlineExceeded: return v1::TIMEOUT;
    case absl::StatusCode::kUnavailable: return v1::UNAVAILABLE;
    default: return v1::PROVIDER_ERROR;
  }
}

bool HasChasquiCode(const absl::Status& status) {
  return status.GetPayload(kPayloadUrl).has_value();
}

std::string_view CodeName(v1::Code code) {
  const std::string& name = v1::Code_Name(code);
  if (name.empty()) return "UNKNOWN_CODE";
  return name;
}

}  // namespace chasqui
