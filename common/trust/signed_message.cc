#include "common/trust/signed_message.h"

#include "fmt/format.h"

namespace chasqui {

std::string CertificateTag(std::string_view env) {
  return fmt::format("chasqui/v1/certificate/{}", env);
}
std::string RevocationTag(std::string_view env) {
  return fmt::format("chasqui/v1/revocation/{}", env);
}
std::string EnrolmentTag(std::string_view env) {
  return fmt::format("chasqui/v1/enrolment/{}", env);
}
std::string ControlTag(std::string_view env) { return fmt::format("chasqui/v1/control/{}", env); }

std::string StatementTag(v1::StatementKind kind, std::string_view env) {
  switch (kind) {
    case v1::STATEMENT_KIND_CHECKPOINT:
      return fmt::format("chasqui/v1/checkpoint/{}", env);
    case v1::STATEMENT_KIND_ANNEX:
      return fmt::format("chasqui/v1/annex/{}", env);
    default:
      return "";
  }
}

std::string RootTag() { return "chasqui/v1/root"; }

std::string SignedMessage(std::string_view tag, std::string_view body) {
  std::string m;
  m.reserve(tag.size() + 1 + body.size());
  m.append(tag);
  m.push_back('\0');
  m.append(body);
  return m;
}

}  // namespace chasqui
