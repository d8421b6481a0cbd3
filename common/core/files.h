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

// Writes `data` to `path` with `mode` and fsyncs it before returning. Without `replace`, an
// existing file is AlreadyExists (O_EXCL: keys are never overwritten); with it, the data goes
// to `path.tmp` and is renamed over `path`, so a crash leaves the old or the new file, never
// half of one. Never writes through a symlink; the file gets exactly `mode`. PermissionDenied /
// Internal name the file and the OS's reason.
absl::Status WriteFileDurably(const std::string& path, std::string_view data, int mode,
                              bool replace);

// `name` if it contains a slash and is executable; else the first executable `name` on PATH,
// then in the sbin dirs where Debian installs servers such as nats-server. "" if none.
std::string FindExecutable(const std::string& name);

}  // namespace chasqui
