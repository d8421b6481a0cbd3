#include "common/core/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "fmt/format.h"

namespace chasqui {
namespace {
bool IsExecutable(const std::string& path) { return ::access(path.c_str(), X_OK) == 0; }
}  // namespace

absl::StatusOr<std::string> ReadFileToString(const std::string& path, std::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    std::string msg = fmt::format("cannot read {} {}: {}", what, path, std::strerror(err));
    if (err == EACCES) return absl::PermissionDeniedError(msg);
    return absl::NotFoundError(msg);
  }
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string ReadFileOrEmpty(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path, "file");
  return text.ok() ? *std::move(text) : std::string();
}

std::string FindExecutable(const std::string& name) {
  if (name.find('/') != std::string::npos) return IsExecutable(name) ? name : std::string();
  std::string dirs;
  if (const char* path = std::getenv("PATH"); path != nullptr) dirs = path;
  dirs += ":/usr/sbin:/usr/local/sbin:/usr/local/bin:/usr/bin";
  std::stringstream ss(dirs);
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    if (dir.empty()) continue;
    std::string candidate = dir + "/" + name;
    if (IsExecutable(candidate)) return candidate;
  }
  return std::string();
}

absl::Status WriteFileDurably(const std::string& path, std::string_view data, int mode,
                              bool replace) {
  const std::string target = replace ? path + ".tmp" : path;
  const int flags = O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | (replace ? O_TRUNC : O_EXCL);
  const int fd = ::open(target.c_str(), flags, mode);
  if (fd < 0) {
    const int err = errno;
    std::string msg = fmt::format("cannot create {}: {}", target, std::strerror(err));
    if (err == EEXIST) return absl::AlreadyExistsError(msg + " (refusing to overwrite it)");
    return absl::PermissionDeniedError(msg);
  }
  // A leftover temp file keeps its old mode otherwise (and the umask may narrow `mode`).
  if (::fchmod(fd, static_cast<mode_t>(mode)) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::PermissionDeniedError(
        fmt::format("chmod {:o} {}: {}", mode, target, std::strerror(err)));
  }
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return absl::InternalError(fmt::format("writing {}: {}", target, std::strerror(err)));
    }
    done += static_cast<size_t>(n);
  }
  const bool synced = ::fsync(fd) == 0;
  ::close(fd);
  if (!synced) return absl::InternalError(fmt::format("fsync {} failed", target));
  if (replace && ::rename(target.c_str(), path.c_str()) != 0) {
    return absl::InternalError(fmt::format("rename {} to {}: {}", target, path,
                                           std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace chasqui
