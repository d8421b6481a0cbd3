#include "common/trust/requests.h"

#include "common/core/status.h"
#include "common/trust/signed_message.h"

namespace chasqui {

v1::ControlStatus ToControlStatus(const absl::Status& status) {
  v1::ControlStatus out;
  out.set_code(static_cast<int32_t>(status.code()));
  out.set_message(std::string(MessageOf(status)));
  return out;
}

absl::Status FromControlStatus(const v1::ControlStatus& status) {
  if (status.code() == 0) return absl::OkStatus();
  absl::StatusCode code = absl::StatusCode::kUnknown;
  if (status.code() > 0 && status.code() <= static_cast<int32_t>(absl::StatusCode::kUnauthenticated)) {
    code = static_cast<absl::StatusCode>(status.code());
  }
  return absl::Status(code, ToAbsl(status.message()));
}

v1::EnrolmentRequest MakeEnrolmentRequest(const v1::EnrolmentRequestBody& body,
                                          const SigningKey& key) {
  v1::EnrolmentRequest r;
  r.set_body(body.SerializeAsString());
  const SignatureBytes sig = key.Sign(SignedMessage(EnrolmentTag(body.env()), r.body()));
  r.set_signature(std::string(AsView(sig)));
  return r;
}

v1::ControlRequest SignControlBody(std::string body_bytes, std::string_view env,
                                   const SigningKey& key) {
  v1::ControlRequest r;
  r.set_body(std::move(body_bytes));
  const SignatureBytes sig = key.Sign(SignedMessage(ControlTag(env), r.body()));
  r.set_signature(std::string(AsView(sig)));
  return r;
}

}  // namespace chasqui
