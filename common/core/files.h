#pragma once
// Small file-system helpers shared by services, tests and tools.

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace chasqui {

// The whole file. NotFound or PermissionDenied naming `what` and `path` with the OS's reason.
absl::StatusOr<std::string> ReadFileToString(const std::string& path, std::string_view what);
// The whole file, or "" if it cannot be read (for logs and /proc files that may vanish).
std::string ReadFileOrEmpty(const std::string& path);

// `name` if it contains a slash and is executable; else the first executable `name` on PATH,
// then in the sbin dirs where Debian installs servers such as nats-server. "" if none.
std::string FindExecutable(const std::string& name);

}  // namespace chasqui
