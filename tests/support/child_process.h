#pragma once
// A service executable run by a test as a child process: stdout and stderr appended to a log
// file, SIGKILLed when the test process dies (PR_SET_PDEATHSIG) or when this object goes, so a
// failing test leaves nothing running. Not thread-safe.

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <regex>
#include <string>
#include <vector>

namespace chasqui::testing {

class TestProcess {
 public:
  // Starts `binary` with `args`; output goes to `log_path` (appended: a restarted service
  // keeps one log). The child exits 127 if it cannot be executed.
  TestProcess(const std::string& binary, const std::vector<std::string>& args,
              std::string log_path);
  ~TestProcess();  // Kill9()
  TestProcess(const TestProcess&) = delete;
  TestProcess& operator=(const TestProcess&) = delete;

  // SIGKILL and reap: the crash every durability test needs. Idempotent.
  void Kill9();
  // SIGTERM and wait up to `timeout`: the exit code, or -1 if it did not exit (or died by a
  // signal).
  int Terminate(std::chrono::seconds timeout = std::chrono::seconds(15));

  std::string Log() const;
  // True once the log holds `needle` at least `times` times (waits up to `timeout`).
  bool WaitForLog(const std::string& needle, size_t times = 1,
                  std::chrono::seconds timeout = std::chrono::seconds(15)) const;
  // Group 1 (else the whole match) of the first match of `re` in the log, once it appears.
  std::optional<std::string> WaitForLogMatch(
      const std::regex& re, std::chrono::seconds timeout = std::chrono::seconds(15)) const;
  pid_t pid() const { return pid_; }

 private:
  std::string log_path_;
  pid_t pid_ = -1;
};

}  // namespace chasqui::testing
