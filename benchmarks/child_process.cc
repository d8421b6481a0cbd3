#include "benchmarks/child_process.h"

#include "common/core/files.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <utility>

#include "fmt/format.h"

namespace chasqui::bench {
namespace {

constexpr auto kPoll = std::chrono::milliseconds(5);

}  // namespace

ChildProcess::ChildProcess(std::string name, pid_t pid, std::string log_path)
    : name_(std::move(name)), pid_(pid), log_path_(std::move(log_path)) {}

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Start(std::string name,
                                                                  std::vector<std::string> argv,
                                                                  std::string log_path) {
  if (argv.empty()) return absl::InvalidArgumentError(fmt::format("{}: empty command", name));
  const std::string bin = FindExecutable(argv[0]);
  if (bin.empty()) {
    return absl::UnavailableError(
        fmt::format("{}: '{}' is not an executable file (nor on PATH)", name, argv[0]));
  }
  std::vector<char*> args;
  for (std::string& a : argv) args.push_back(a.data());
  args.push_back(nullptr);

  // Everything the child needs is prepared here: between fork and exec only async-signal-safe
  // calls are allowed (the bench has threads).
  const int out_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  int exec_pipe[2] = {-1, -1};
  if (out_fd < 0 || null_fd < 0 || ::pipe2(exec_pipe, O_CLOEXEC) != 0) {
    const int err = errno;
    if (out_fd >= 0) ::close(out_fd);
    if (null_fd >= 0) ::close(null_fd);
    return absl::InternalError(fmt::format("{}: open {}: {}", name, log_path, std::strerror(err)));
  }
  sigset_t none;
  sigemptyset(&none);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    // The bench blocks SIGINT/SIGTERM in its threads; a child must get them as usual.
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::dup2(null_fd, 0);
    ::dup2(out_fd, 1);
    ::dup2(out_fd, 2);
    ::execv(bin.c_str(), args.data());
    const int err = errno;
    (void)!::write(exec_pipe[1], &err, sizeof(err));
    ::_exit(127);
  }
  const int fork_errno = errno;
  ::close(out_fd);
  ::close(null_fd);
  ::close(exec_pipe[1]);
  if (pid < 0) {
    ::close(exec_pipe[0]);
    return absl::InternalError(fmt::format("{}: fork: {}", name, std::strerror(fork_errno)));
  }
  std::unique_ptr<ChildProcess> child(new ChildProcess(std::move(name), pid, std::move(log_path)));
  // The pipe closes on a successful exec; otherwise it carries exec's errno.
  int exec_errno = 0;
  ssize_t n;
  do {
    n = ::read(exec_pipe[0], &exec_errno, sizeof(exec_errno));
  } while (n < 0 && errno == EINTR);
  ::close(exec_pipe[0]);
  if (n == sizeof(exec_errno)) {
    child->Stop();
    return absl::UnavailableError(
        fmt::format("{}: cannot execute {}: {}", child->name(), bin, std::strerror(exec_errno)));
  }
  return child;
}

ChildProcess::~ChildProcess() { Stop(); }

void ChildProcess::NoteExit(int wait_status) {
  reaped_ = true;
  if (WIFEXITED(wait_status)) {
    exit_description_ = fmt::format("exit {}", WEXITSTATUS(wait_status));
  } else if (WIFSIGNALED(wait_status)) {
    exit_description_ = fmt::format("signal {}", WTERMSIG(wait_status));
  } else {
    exit_description_ = "gone";
  }
}

bool ChildProcess::Running() {
  if (reaped_) return false;
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == pid_) {
    NoteExit(status);
    return false;
  }
  if (r < 0) {  // ECHILD: not ours to wait for any more
    reaped_ = true;
    exit_description_ = "gone";
    return false;
  }
  return true;
}

void ChildProcess::Stop(std::chrono::milliseconds grace) {
  if (!Running()) return;
  ::kill(pid_, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + grace;
  while (Running()) {
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
      NoteExit(status);
      return;
    }
    std::this_thread::sleep_for(kPoll);
  }
}

std::string ChildProcess::LogTail(size_t bytes) const {
  const std::string text = ReadFileOrEmpty(log_path_);
  return text.size() <= bytes ? text : "..." + text.substr(text.size() - bytes);
}

absl::StatusOr<double> CpuSeconds(pid_t pid) {
  const std::string path = pid == 0 ? "/proc/self/stat" : fmt::format("/proc/{}/stat", pid);
  const std::string text = ReadFileOrEmpty(path);
  // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
  const size_t close = text.rfind(')');
  if (text.empty() || close == std::string::npos) {
    return absl::NotFoundError(fmt::format("cannot read {}", path));
  }
  std::istringstream fields(text.substr(close + 1));
  std::string field;
  uint64_t utime = 0, stime = 0;
  // After ')': field 3 (state) first, so utime (14) and stime (15) are the 12th and 13th.
  for (int i = 3; i <= 15 && (fields >> field); ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  if (!fields) return absl::InternalError(fmt::format("{}: too few fields", path));
  static const long ticks = ::sysconf(_SC_CLK_TCK);
  return static_cast<double>(utime + stime) / static_cast<double>(ticks);
}

MachineCpu MachineCpuSeconds() {
  std::istringstream stat(ReadFileOrEmpty("/proc/stat"));
  std::string cpu;
  uint64_t user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
  stat >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal;
  if (!stat || cpu != "cpu") return {};
  static const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  const uint64_t busy = user + nice + system + irq + softirq + steal;
  return {static_cast<double>(busy) / ticks, static_cast<double>(busy + idle + iowait) / ticks};
}

uint64_t ContextSwitches(pid_t pid) {
  const std::string dir = pid == 0 ? "/proc/self/task" : fmt::format("/proc/{}/task", pid);
  uint64_t total = 0;
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator(dir, ec)) {
    std::istringstream status(ReadFileOrEmpty(task.path().string() + "/status"));
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("voluntary_ctxt_switches:", 0) == 0 ||
          line.rfind("nonvoluntary_ctxt_switches:", 0) == 0) {
        total += std::strtoull(line.c_str() + line.find(':') + 1, nullptr, 10);
      }
    }
  }
  return total;
}

absl::StatusOr<std::unique_ptr<TempDir>> TempDir::Create(const std::string& prefix) {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = fmt::format("{}/{}-XXXXXX", tmp != nullptr && *tmp ? tmp : "/tmp", prefix);
  if (::mkdtemp(pattern.data()) == nullptr) {
    return absl::InternalError(fmt::format("mkdtemp {}: {}", pattern, std::strerror(errno)));
  }
  return std::unique_ptr<TempDir>(new TempDir(pattern));
}

TempDir::~TempDir() {
  if (keep_) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

}  // namespace chasqui::bench
