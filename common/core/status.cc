#include "common/core/status.h"

#include <cstdio>

namespace chasqui {

void CheckFailed(const char* file, int line, const char* expr, std::string_view msg) {
  std::fprintf(stderr, "CHECK failed at %s:%d: %s: %.*s\n", file, line, expr,
               static_cast<int>(msg.size()), msg.data());
  std::fflush(stderr);
  std::abort();
}

}  // namespace chasqui
