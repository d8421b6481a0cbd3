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

#include "common/core/log.h"
#include "common/ops/http_listener.h"
#include "fmt/format.h"
#include "prometheus/text_serializer.h"

namespace chasqui {
namespace {

constexpr char kMetricsContentType[] = "text/plain; version=0.0.4; charset=utf-8";
constexpr char kTextContentType[] = "text/plain; charset=utf-8";
// Two workers: the machine has two cores and scrapes are rare.
constexpr int kWorkerThreads = 2;

class OpsServerImpl final : public OpsServer {
 public:
  OpsServerImpl(std::shared_ptr<prometheus::Registry> registry, ReadyCheck ready)
      : registry_(std::move(registry)), ready_(std::move(ready)) {}

  int port() const override { return listener_.port(); }

  absl::Status Serve(const OpsOptions& options) {
    httplib::Server& server = listener_.server();
    server.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      HandleMetrics(res);
    });
    server.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("ok", kTextContentType);
    });
    server.Get("/readyz", [this](const httplib::Request&, httplib::Response& res) {
      HandleReady(res);
    });

    if (absl::Status s = listener_.Listen(options.host, options.port, "ops"); !s.ok()) return s;
    CHQ_LOG_INFO("ops listening on http://{} (/metrics /healthz /readyz)",
                 HostPort(options.host, listener_.port()));
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
  HttpListener listener_{kWorkerThreads};
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
