#pragma once
// Runs a shell command for tests of our executables: its exit code and everything it printed
// (stdout and stderr). The command must stop by itself; wrap it in `timeout` if it might not.

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace chasqui::testing {

struct CommandOutcome {
  int exit_code = -1;  // -1 if it could not run or did not exit normally
  std::string output;
};

inline CommandOutcome RunCommand(const std::string& command) {
  CommandOutcome out;
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (p == nullptr) return out;
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.output.append(buf.data(), n);
  const int status = pclose(p);
  out.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

}  // namespace chasqui::testing
