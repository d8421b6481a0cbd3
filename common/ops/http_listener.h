#pragma once
// An httplib::Server set up the way every Chasqui HTTP endpoint needs it, serving on its own
// thread. It hides what cpp-httplib 0.11 (Debian 12) gets wrong for us: its default socket
// options set SO_REUSEPORT (a second server could bind a taken port), a stop() issued before
// the accept loop runs is lost, an idle keep-alive connection holds a worker until its timeout,
// and it writes a response's head and body separately (Nagle then waits for a delayed ACK).

#include <httplib.h>

#include <atomic>
#include <string>
#include <string_view>
#include <thread>

#include "absl/status/status.h"

namespace chasqui {

// "host:port", or "[host]:port" for IPv6.
std::string HostPort(const std::string& host, int port);

class HttpListener {
 public:
  explicit HttpListener(int worker_threads);
  ~HttpListener();  // Stop()
  HttpListener(const HttpListener&) = delete;
  HttpListener& operator=(const HttpListener&) = delete;

  // Add routes and limits here before Listen().
  httplib::Server& server() { return server_; }

  // Binds host:port (0 picks a free port), serves on a thread, and returns once connections
  // are accepted. Unavailable naming `what` and the address if the port cannot be bound.
  absl::Status Listen(const std::string& host, int port, std::string_view what);
  // Stops accepting, lets the workers finish, joins. Idempotent.
  void Stop();

  int port() const { return port_; }
  bool running() const { return server_.is_running(); }

 private:
  httplib::Server server_;
  std::thread thread_;
  std::atomic<bool> exited_{false};
  int port_ = 0;
};

}  // namespace chasqui
