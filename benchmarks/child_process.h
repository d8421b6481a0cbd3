#pragma once
// The processes a benchmark starts (nats-server, chasqui-router, chasqui-forwarder): each is
// owned from the moment it exists and stopped on every path out (STYLE.md, "Resources").
// Not thread-safe: the thread that starts a child drives it.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace chasqui::bench {

class ChildProcess {
 public:
  // Runs argv[0] (looked up on PATH and in the sbin dirs when it has no '/') with stdin from
  // /dev/null and stdout and stderr appended to `log_path`. The child gets SIGKILL if the
  // thread that started it dies (PR_SET_PDEATHSIG), so a crashed bench leaves nothing behind.
  // Unavailable, naming the binary, if it cannot be found or executed.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(std::string name,
                                                             std::vector<std::string> argv,
                                                             std::string log_path);
  // Stop().
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // SIGTERM, then SIGKILL if it has not exited within `grace`; reaps it. Idempotent.
  void Stop(std::chrono::milliseconds grace = std::chrono::milliseconds(5000));
  // False once it has exited (it is then reaped, and ExitDescription() says how: "exit 2").
  bool Running();
  std::string ExitDescription() const { return exit_description_; }

  pid_t pid() const { return pid_; }
  const std::string& name() const { return name_; }
  const std::string& log_path() const { return log_path_; }
  // The last `bytes` of its log, for error messages.
  std::string LogTail(size_t bytes = 2000) const;

 private:
  ChildProcess(std::string name, pid_t pid, std::string log_path);
  void NoteExit(int wait_status);

  std::string name_;
  pid_t pid_;
  std::string log_path_;
  bool reaped_ = false;
  std::string exit_description_;
};

// utime + stime of `pid` (fields 14 and 15 of /proc/<pid>/stat), in seconds. pid 0 = this
// process. NotFound once the process is gone.
absl::StatusOr<double> CpuSeconds(pid_t pid);

// CPU seconds the whole machine spent busy (user, nice, system, irq, softirq, steal) and in
// total, summed over all CPUs, from /proc/stat.
struct MachineCpu {
  double busy = 0;
  double total = 0;
};
MachineCpu MachineCpuSeconds();

// Voluntary plus involuntary context switches of every live thread of `pid` (from
// /proc/<pid>/task/*/status). pid 0 = this process. Threads that exited are not counted.
uint64_t ContextSwitches(pid_t pid);

// A directory under $TMPDIR (or /tmp), removed with its contents on destruction unless kept.
class TempDir {
 public:
  static absl::StatusOr<std::unique_ptr<TempDir>> Create(const std::string& prefix);
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }
  void Keep() { keep_ = true; }

 private:
  explicit TempDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
  bool keep_ = false;
};

}  // namespace chasqui::bench
