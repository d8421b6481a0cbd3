#pragma once
// Error propagation helpers over absl::Status (STYLE.md, "Errors").

#include <cstdlib>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define CHASQUI_CONCAT_INNER_(a, b) a##b
#define CHASQUI_CONCAT_(a, b) CHASQUI_CONCAT_INNER_(a, b)

#define CHASQUI_RETURN_IF_ERROR(expr)                 \
  do {                                                \
    ::absl::Status chasqui_status_ = (expr);          \
    if (!chasqui_status_.ok()) return chasqui_status_; \
  } while (0)

#define CHASQUI_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                   \
  if (!tmp.ok()) return std::move(tmp).status();       \
  lhs = std::move(*tmp)

#define CHASQUI_ASSIGN_OR_RETURN(lhs, expr) \
  CHASQUI_ASSIGN_OR_RETURN_IMPL_(CHASQUI_CONCAT_(chasqui_statusor_, __LINE__), lhs, expr)

namespace chasqui {

// Debian 12's absl::string_view is not std::string_view; these bridge the two.
inline std::string_view MessageOf(const absl::Status& s) {
  return {s.message().data(), s.message().size()};
}
inline absl::string_view ToAbsl(std::string_view s) { return {s.data(), s.size()}; }

[[noreturn]] void CheckFailed(const char* file, int line, const char* expr, std::string_view msg);
}  // namespace chasqui

// Guards invariants, never external input. Always on.
#define CHASQUI_CHECK(cond, msg)                                           \
  do {                                                                     \
    if (!(cond)) ::chasqui::CheckFailed(__FILE__, __LINE__, #cond, (msg)); \
  } while (0)
