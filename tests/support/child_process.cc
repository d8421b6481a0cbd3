#include "tests/support/child_process.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include "common/core/files.h"
#include "tests/support/wait_for.h"

namespace chasqui::testing {

TestProcess::TestProcess(const std::string& binary, const std::vector<std::string>& args,
                         std::string log_path)
    : log_path_(std::move(log_path)) {
  std::vector<std::string> argv_strings = {binary};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);
  pid_ = ::fork();
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    FILE* out = std::freopen(log_path_.c_str(), "a", stdout);
    if (out == nullptr || ::dup2(::fileno(stdout), 2) < 0) ::_exit(127);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
}

TestProcess::~TestProcess() { Kill9(); }

void TestProcess::Kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

int TestProcess::Terminate(std::chrono::seconds timeout) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  int status = 0;
  const bool exited =
      WaitFor([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; }, timeout);
  if (!exited) return -1;
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string TestProcess::Log() const { return ReadFileOrEmpty(log_path_); }

bool TestProcess::WaitForLog(const std::string& needle, size_t times,
                             std::chrono::seconds timeout) const {
  return WaitFor(
      [&] {
        const std::string log = Log();
        size_t count = 0;
        for (size_t p = log.find(needle); p != std::string::npos; p = log.find(needle, p + 1)) {
          ++count;
        }
        return count >= times;
      },
      timeout);
}

std::optional<std::string> TestProcess::WaitForLogMatch(const std::regex& re,
                                                        std::chrono::seconds timeout) const {
  std::smatch m;
  std::string log;
  const bool found = WaitFor(
      [&] {
        log = Log();
        return std::regex_search(log, m, re);
      },
      timeout);
  if (!found) return std::nullopt;
  return m.size() > 1 ? m[1].str() : m[0].str();
}

}  // namespace chasqui::testing
