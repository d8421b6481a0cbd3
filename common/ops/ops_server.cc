#include "common/ops/ops_server.h"

#include <httplib.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <exception>
#include <string>
#include <thread>
#include <utility>

#include <sys/socket.h>

#include "common/core/log.h"
#include "fmt/format.h"
#include "prometheus/text_serializer.h"

namespace chasqui {
namespace {

constexpr char kMetricsContentType[] = "text/plain; version=0.0.4; charset=utf-8";
constexpr char kTextContentType[] = "text/plain; charset=utf-8";
// Two workers: the machine has two cores and scrapes are rare.
constexpr size_t kWorkerThreads = 2;
// Bounds how long the destructor waits for a worker parked on an idle keep-alive connection.
constexpr time_t kKeepAliveTimeoutSeconds = 1;
constexpr auto kStartTimeout = std::chrono::seconds(5);

// httplib 0.11's default socket options set SO_REUSEPORT, which lets a second server bind a
// port that is already listening (the kernel then splits connections between the two). Keep
// only SO_REUSEADDR so a restart can reuse a port in TIME_WAIT but a taken port is refused.
void ExclusiveSocketOptions(int sock) {
  int yes = 1;
  ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
}

std::string HostPort(const std::string& host, int port) {
  if (host.find(':') != std::string::npos) return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

class OpsServerImpl final : public OpsServer {
 public:
  OpsServerImpl(std::shared_ptr<prometheus::Registry> registry, ReadyCheck ready)
      : registry_(std::move(registry)), ready_(std::move(ready)) {}

  ~OpsServerImpl() override {
    if (!thread_.joinable()) return;
    // stop() is a no-op until listen has begun, so a stop issued earlier would be lost and the
    // join would hang. Start normally waits for this already; this covers its failure paths.
    while (!server_.is_running() && !exited_.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    server_.stop();
    thread_.join();
  }

  int port() const override { return port_; }

  absl::Status Serve(const OpsOptions& options) {
    server_.new_task_queue = [] { return new httplib::ThreadPool(kWorkerThreads); };
    server_.set_socket_options(ExclusiveSocketOptions);
    server_.set_keep_alive_timeout(kKeepAliveTimeoutSeconds);
    server_.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      HandleMetrics(res);
    });
    server_.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("ok", kTextContentType);
    });
    server_.Get("/readyz", [this](const httplib::Request&, httplib::Response& res) {
      HandleReady(res);
    });

    const std::string address = HostPort(options.host, options.port);
    errno = 0;
    int port = -1;
    if (options.port == 0) {
      port = server_.bind_to_any_port(options.host);
    } else if (server_.bind_to_port(options.host, options.port)) {
      port = options.port;
    }
    if (port <= 0) {
      const int err = errno;
      return absl::UnavailableError(fmt::format("ops: cannot listen on {}: {}", address,
                                                err != 0 ? std::strerror(err) : "bind failed"));
    }
    port_ = port;

    thread_ = std::thread([this] {
      if (!server_.listen_after_bind()) {
        CHQ_LOG_ERROR("ops server on port {} stopped accepting connections", port_);
      }
      exited_.store(true);
    });
    // The socket already listens, but stop() is ignored until the accept loop runs: wait for it
    // so that destroying the server right after Start always stops it.
    const auto deadline = std::chrono::steady_clock::now() + kStartTimeout;
    while (!server_.is_running()) {
      if (exited_.load() || std::chrono::steady_clock::now() > deadline) {
        return absl::UnavailableError(
            fmt::format("ops: server on {} did not start", HostPort(options.host, port_)));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    CHQ_LOG_INFO("ops listening on http://{} (/metrics /healthz /readyz)",
                 HostPort(options.host, port_));
    return absl::OkStatus();
  }

 private:
  void HandleMetrics(httplib::Response& res) {
    std::string body;
    if (registry_ != nullptr) body = prometheus::TextSerializer().Serialize(registry_->Collect());
    res.set_content(std::move(body), kMetricsContentType);
  }

  void HandleReady(httplib::Response& res) {
    absl::Status status;
    if (ready_) {
      try {
        status = ready_();
      } catch (const std::exception& e) {
        status = absl::InternalError(fmt::format("ready check threw: {}", e.what()));
      } catch (...) {
        status = absl::InternalError("ready check threw");
      }
    }
    if (status.ok()) {
      res.set_content("ready", kTextContentType);
      return;
    }
    res.status = 503;
    std::string reason(status.message());
    if (reason.empty()) reason = status.ToString();
    res.set_content(std::move(reason), kTextContentType);
  }

  const std::shared_ptr<prometheus::Registry> registry_;
  const ReadyCheck ready_;
  httplib::Server server_;
  std::thread thread_;
  std::atomic<bool> exited_{false};
  int port_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<OpsServer>> OpsServer::Start(
    const OpsOptions& options, std::shared_ptr<prometheus::Registry> registry, ReadyCheck ready) {
  try {
    auto server = std::make_unique<OpsServerImpl>(std::move(registry), std::move(ready));
    if (absl::Status status = server->Serve(options); !status.ok()) return status;
    return std::unique_ptr<OpsServer>(std::move(server));
  } catch (const std::exception& e) {
    return absl::UnavailableError(fmt::format("ops: cannot start on {}: {}",
                                              HostPort(options.host, options.port), e.what()));
  } catch (...) {
    return absl::UnavailableError(
        fmt::format("ops: cannot start on {}", HostPort(options.host, options.port)));
  }
}

}  // namespace chasqui
