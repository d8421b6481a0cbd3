#include "common/core/names.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/escaping.h"

namespace chasqui {
namespace {
bool IsLeadChar(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool IsTailChar(char c) { return IsLeadChar(c) || c == '_' || c == '-'; }
}  // namespace

bool IsValidName(std::string_view name) {
  if (name.empty() || name.size() > 63 || !IsLeadChar(name[0])) return false;
  for (char c : name.substr(1)) {
    if (!IsTailChar(c)) return false;
  }
  return true;
}

bool IsValidEnv(std::string_view env) { return env == "test" || env == "prod"; }

absl::Status ValidateName(std::string_view what, std::string_view name) {
  if (IsValidName(name)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      what, " \"", absl::CHexEscape(name.substr(0, 80)),
      "\" is not a valid name: expected 1-63 characters of [a-z0-9_-], starting with [a-z0-9]"));
}

absl::Status ValidateEnv(std::string_view env) {
  if (IsValidEnv(env)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "environment \"", absl::CHexEscape(env.substr(0, 80)), "\" is not valid: expected test or prod"));
}

}  // namespace chasqui
