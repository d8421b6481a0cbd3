#include "common/core/names.h"

#include <string>

#include "fmt/format.h"

namespace chasqui {
namespace {
bool IsLeadChar(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool IsTailChar(char c) { return IsLeadChar(c) || c == '_' || c == '-'; }
}  // namespace

std::string Printable(std::string_view untrusted, size_t max_len) {
  std::string out;
  for (char c : untrusted.substr(0, max_len)) {
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      out.push_back(c);
    } else {
      out += fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
    }
  }
  if (untrusted.size() > max_len) out += "...";
  return out;
}

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
  return absl::InvalidArgumentError(fmt::format(
      "{} \"{}\" is not a valid name: expected 1-63 characters of [a-z0-9_-], starting with "
      "[a-z0-9]",
      what, Printable(name)));
}

absl::Status ValidateEnv(std::string_view env) {
  if (IsValidEnv(env)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      fmt::format("environment \"{}\" is not valid: expected test or prod", Printable(env)));
}

}  // namespace chasqui
