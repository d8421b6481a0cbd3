#pragma once
// A real nats-server for tests: loopback, random port (-p -1 with --ports_file_dir), its own
// temp dir (ports file and nats.log live there). Killed (and its dir removed) on destruction.
// Not thread-safe: one test thread drives it. The server gets SIGKILL if the thread that
// started it exits (PR_SET_PDEATHSIG), so a crashed test leaves no server behind.

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tests/support/temp_dir.h"

namespace chasqui::testing {

// A throwaway certificate authority and a server certificate for 127.0.0.1 and localhost signed
// by it (ECDSA P-256, valid 2 days), made in `dir` by deploy/tls-ca.sh, the script the local
// backbone uses. Unavailable (quoting the script's output) if it fails, e.g. no openssl.
struct TestTls {
  std::string ca_file;    // PEM; what a client trusts (BusOptions::ca_file)
  std::string cert_file;  // nats-server's certificate
  std::string key_file;   // its private key (mode 0600)
};
absl::StatusOr<TestTls> MakeTestTls(const std::string& dir);

class NatsServer {
 public:
  // Runs `nats-server -a 127.0.0.1 -p -1 --ports_file_dir <dir> -l <dir>/nats.log <extra_args>`
  // and waits (up to 10 s) until its ports file names the port. Unavailable if the binary is
  // missing, exits early (the error quotes its log) or never reports a port.
  static absl::StatusOr<std::unique_ptr<NatsServer>> Start(std::vector<std::string> extra_args = {});
  // The same, TLS-only (`--tls --tlscert --tlskey` from `tls`, before `extra_args`): plain
  // clients are refused, url() is "tls://127.0.0.1:<port>".
  static absl::StatusOr<std::unique_ptr<NatsServer>> StartTls(
      const TestTls& tls, std::vector<std::string> extra_args = {});
  // TLS-only from a configuration file's own `tls` block (`-c config_path`; e.g. what
  // NatsServerConfig writes with TLS files): url() is "tls://127.0.0.1:<port>".
  static absl::StatusOr<std::unique_ptr<NatsServer>> StartTlsConfig(const std::string& config_path);

  // SIGTERM, then SIGKILL if it has not exited within 5 s; reaps it; removes the dir.
  ~NatsServer();
  NatsServer(const NatsServer&) = delete;
  NatsServer& operator=(const NatsServer&) = delete;

  // "nats://127.0.0.1:<port>" ("tls://" if started by StartTls); unchanged by Kill9() and
  // Restart().
  std::string url() const;
  int port() const { return port_; }
  // The running server's pid, or -1 after Kill9().
  pid_t pid() const { return pid_; }
  // The server's own temp dir (for config files a test writes).
  const std::string& dir() const { return dir_.path(); }

  // SIGKILL and reap: clients see the connection drop with no goodbye. No-op if not running.
  void Kill9();
  // SIGHUP: nats-server rereads its configuration file (`nats-server --signal reload`); a user
  // no longer in it is disconnected. FailedPrecondition if not running.
  absl::Status Reload();
  // Starts the server again on the same port with the same extra args (stopping it first if it
  // runs), and waits until it reports the port. For reconnect tests.
  absl::Status Restart();

 private:
  explicit NatsServer(std::vector<std::string> extra_args);
  // Spawns with `port_args` and waits for the ports file; sets pid_ and port_.
  absl::Status Launch(const std::vector<std::string>& port_args);
  void Terminate();

  TempDir dir_;
  std::vector<std::string> extra_args_;
  pid_t pid_ = -1;
  int port_ = 0;
  bool tls_ = false;
};

}  // namespace chasqui::testing
