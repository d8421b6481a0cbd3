#include "common/ops/http_listener.h"

#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "common/core/log.h"
#include "fmt/format.h"

namespace chasqui {
namespace {

// Bounds how long Stop waits for a worker parked on an idle keep-alive connection.
constexpr time_t kKeepAliveTimeoutSeconds = 1;
constexpr auto kStartTimeout = std::chrono::seconds(5);

// SO_REUSEADDR only: a restart can reuse a port in TIME_WAIT, but a taken port is refused.
void ExclusiveSocketOptions(int sock) {
  int yes = 1;
  ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
}

}  // namespace

std::string HostPort(const std::string& host, int port) {
  if (host.find(':') != std::string::npos) return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

HttpListener::HttpListener(int worker_threads) {
  server_.new_task_queue = [worker_threads] { return new httplib::ThreadPool(worker_threads); };
  server_.set_socket_options(ExclusiveSocketOptions);
  server_.set_keep_alive_timeout(kKeepAliveTimeoutSeconds);
  server_.set_tcp_nodelay(true);
}

HttpListener::~HttpListener() { Stop(); }

absl::Status HttpListener::Listen(const std::string& host, int port, std::string_view what) {
  errno = 0;
  int bound = -1;
  if (port == 0) {
    bound = server_.bind_to_any_port(host);
  } else if (server_.bind_to_port(host, port)) {
    bound = port;
  }
  if (bound <= 0) {
    const int err = errno;
    return absl::UnavailableError(fmt::format("{}: cannot listen on {}: {}", what,
                                              HostPort(host, port),
                                              err != 0 ? std::strerror(err) : "bind failed"));
  }
  port_ = bound;
  thread_ = std::thread([this, what = std::string(what)] {
    if (!server_.listen_after_bind()) {
      CHQ_LOG_ERROR("{} on port {} stopped accepting connections", what, port_);
    }
    exited_.store(true);
  });
  // The socket already listens, but stop() is ignored until the accept loop runs: wait for it,
  // so that stopping right after Listen always stops.
  const auto deadline = std::chrono::steady_clock::now() + kStartTimeout;
  while (!server_.is_running()) {
    if (exited_.load() || std::chrono::steady_clock::now() > deadline) {
      return absl::UnavailableError(
          fmt::format("{}: server on {} did not start", what, HostPort(host, port_)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return absl::OkStatus();
}

void HttpListener::Stop() {
  if (!thread_.joinable()) return;
  while (!server_.is_running() && !exited_.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  server_.stop();
  thread_.join();  // the worker pool finishes the requests in flight first
}

}  // namespace chasqui
