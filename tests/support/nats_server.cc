#include "tests/support/nats_server.h"

#include "common/core/files.h"
#include "tests/support/run_command.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>
#include <utility>

#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace chasqui::testing {
namespace {

constexpr auto kStartBound = std::chrono::seconds(10);
constexpr auto kTermBound = std::chrono::seconds(5);
constexpr auto kPoll = std::chrono::milliseconds(5);

std::string Tail(const std::string& text, size_t n) {
  return text.size() <= n ? text : "..." + text.substr(text.size() - n);
}

std::string Head(const std::string& text, size_t n) {
  return text.size() <= n ? text : text.substr(0, n) + "...";
}

// {"nats":["nats://127.0.0.1:PORT"]}; false while the file is missing or half written.
bool ParsePortsFile(const std::string& text, int* port) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return false;
  const auto nats = j.find("nats");
  if (nats == j.end() || !nats->is_array() || nats->empty() || !(*nats)[0].is_string()) {
    return false;
  }
  const std::string url = (*nats)[0].get<std::string>();
  const size_t colon = url.rfind(':');
  if (colon == std::string::npos) return false;
  const std::string digits = url.substr(colon + 1);
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) return false;
  *port = std::atoi(digits.c_str());
  return *port > 0 && *port < 65536;
}

// Reaps `pid` if it has exited; true if it has.
bool Reaped(pid_t pid) {
  while (true) {
    const pid_t r = ::waitpid(pid, nullptr, WNOHANG);
    if (r == pid) return true;
    if (r < 0 && errno == EINTR) continue;
    return r < 0;  // ECHILD: not ours to wait for any more
  }
}

void ReapBlocking(pid_t pid) {
  while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
  }
}

}  // namespace

NatsServer::NatsServer(std::vector<std::string> extra_args) : extra_args_(std::move(extra_args)) {}

absl::StatusOr<std::unique_ptr<NatsServer>> NatsServer::Start(std::vector<std::string> extra_args) {
  std::unique_ptr<NatsServer> server(new NatsServer(std::move(extra_args)));
  absl::Status st = server->Launch({"-p", "-1"});
  if (!st.ok()) return st;
  return server;
}

absl::StatusOr<std::unique_ptr<NatsServer>> NatsServer::StartTls(
    const TestTls& tls, std::vector<std::string> extra_args) {
  std::vector<std::string> args = {"--tls", "--tlscert", tls.cert_file, "--tlskey", tls.key_file};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  std::unique_ptr<NatsServer> server(new NatsServer(std::move(args)));
  server->tls_ = true;
  absl::Status st = server->Launch({"-p", "-1"});
  if (!st.ok()) return st;
  return server;
}

absl::StatusOr<std::unique_ptr<NatsServer>> NatsServer::StartTlsConfig(
    const std::string& config_path) {
  std::unique_ptr<NatsServer> server(new NatsServer({"-c", config_path}));
  server->tls_ = true;
  absl::Status st = server->Launch({"-p", "-1"});
  if (!st.ok()) return st;
  return server;
}

NatsServer::~NatsServer() { Terminate(); }

std::string NatsServer::url() const {
  return fmt::format("{}://127.0.0.1:{}", tls_ ? "tls" : "nats", port_);
}

absl::StatusOr<TestTls> MakeTestTls(const std::string& dir) {
  const std::string script = std::string(CHASQUI_SOURCE_DIR) + "/deploy/tls-ca.sh";
  // The script is short and bounded by `timeout`; its output names what failed.
  const CommandOutcome run = RunCommand(fmt::format("timeout 30 '{}' '{}' 2", script, dir));
  if (run.exit_code != 0) {
    return absl::UnavailableError(
        fmt::format("{} {} failed (exit {}): {}", script, dir, run.exit_code,
                    Head(run.output, 1000)));
  }
  return TestTls{dir + "/ca.crt", dir + "/server.crt", dir + "/server.key"};
}

absl::Status NatsServer::Launch(const std::vector<std::string>& port_args) {
  const std::string bin = FindExecutable(CHASQUI_NATS_SERVER_BIN);
  if (bin.empty()) {
    return absl::UnavailableError(fmt::format(
        "{} not found on PATH or in /usr/sbin; install the nats-server package",
        CHASQUI_NATS_SERVER_BIN));
  }
  const std::string log_path = dir_.File("nats.log");
  const std::string out_path = dir_.File("nats.out");
  std::vector<std::string> args = {bin, "-a", "127.0.0.1"};
  args.insert(args.end(), port_args.begin(), port_args.end());
  args.insert(args.end(), {"--ports_file_dir", dir_.path(), "-l", log_path});
  args.insert(args.end(), extra_args_.begin(), extra_args_.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  // Everything the child needs is prepared here: between fork and exec only async-signal-safe
  // calls are allowed (the test process has threads).
  const int out_fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (out_fd < 0 || null_fd < 0) {
    const int err = errno;
    if (out_fd >= 0) ::close(out_fd);
    if (null_fd >= 0) ::close(null_fd);
    return absl::InternalError(fmt::format("open {}: {}", out_path, std::strerror(err)));
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::dup2(null_fd, 0);
    ::dup2(out_fd, 1);
    ::dup2(out_fd, 2);
    ::execv(bin.c_str(), argv.data());
    ::_exit(127);
  }
  const int fork_errno = errno;
  ::close(out_fd);
  ::close(null_fd);
  if (pid < 0) return absl::InternalError(fmt::format("fork: {}", std::strerror(fork_errno)));
  pid_ = pid;

  const size_t slash = bin.rfind('/');
  const std::string ports_path =
      dir_.File(fmt::format("{}_{}.ports", bin.substr(slash + 1), static_cast<long>(pid)));
  const auto deadline = std::chrono::steady_clock::now() + kStartBound;
  while (true) {
    int port = 0;
    if (ParsePortsFile(ReadFileOrEmpty(ports_path), &port)) {
      port_ = port;
      return absl::OkStatus();
    }
    if (Reaped(pid)) {
      pid_ = -1;
      return absl::UnavailableError(fmt::format(
          "{} exited during start: {} {}", bin, Head(ReadFileOrEmpty(out_path), 1000),
          Tail(ReadFileOrEmpty(log_path), 1000)));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      Terminate();
      return absl::UnavailableError(fmt::format(
          "{} wrote no ports file {} within 10 s: {}", bin, ports_path,
          Tail(ReadFileOrEmpty(log_path), 1000)));
    }
    std::this_thread::sleep_for(kPoll);
  }
}

void NatsServer::Terminate() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + kTermBound;
  while (!Reaped(pid_)) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid_, SIGKILL);
      ReapBlocking(pid_);
      break;
    }
    std::this_thread::sleep_for(kPoll);
  }
  pid_ = -1;
}

void NatsServer::Kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  ReapBlocking(pid_);
  pid_ = -1;
}

absl::Status NatsServer::Reload() {
  if (pid_ <= 0) return absl::FailedPreconditionError("nats-server is not running");
  if (::kill(pid_, SIGHUP) != 0) {
    return absl::InternalError(fmt::format("kill -HUP {}: {}", pid_, std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status NatsServer::Restart() {
  Terminate();
  const std::string port = std::to_string(port_);
  return Launch({"-p", port});
}

}  // namespace chasqui::testing
