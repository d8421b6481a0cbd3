#pragma once
// Chasqui's stable error codes (proto chasqui.v1.Code) carried inside absl::Status: the absl
// code is the nearest canonical one, and a payload keeps the exact Chasqui code.

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "chasqui/v1/envelope.pb.h"

namespace chasqui {

absl::Status ChasquiError(v1::Code code, std::string_view message);
// OK for an OK status; the carried code if there is one; otherwise mapped from the absl code.
v1::Code ChasquiCode(const absl::Status& status);
// True if `status` carries a Chasqui code (made by ChasquiError), not just an absl code.
bool HasChasquiCode(const absl::Status& status);
// "BAD_REQUEST", "QUOTA_EXCEEDED", ...
std::string_view CodeName(v1::Code code);

}  // namespace chasqui
