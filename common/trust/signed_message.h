#pragma once
// Domain-separated signatures (DESIGN.md, "The envelope": every signed thing has its own tag).
// The signed message is `tag || 0x00 || body`: the zero byte keeps one tag from being a
// prefix of another's message. Verifiers build the tag from their own environment.

#include <string>
#include <string_view>

#include "chasqui/v1/crypto.pb.h"

namespace chasqui {

std::string CertificateTag(std::string_view env);  // chasqui/v1/certificate/<env>
std::string RevocationTag(std::string_view env);   // chasqui/v1/revocation/<env>
std::string EnrolmentTag(std::string_view env);    // chasqui/v1/enrolment/<env>
std::string ControlTag(std::string_view env);      // chasqui/v1/control/<env>
// chasqui/v1/checkpoint/<env> or chasqui/v1/annex/<env>; "" for an unspecified kind.
std::string StatementTag(v1::StatementKind kind, std::string_view env);
// chasqui/v1/root: roots serve every environment, so their endorsements name none.
std::string RootTag();

std::string SignedMessage(std::string_view tag, std::string_view body);

}  // namespace chasqui
