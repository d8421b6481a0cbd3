#pragma once
// Each process's HTTP endpoint: /metrics (prometheus text format of a registry), /healthz
// (200 while the process runs) and /readyz (200 when the ready check passes, else 503 with
// the reason as the body). cpp-httplib, not prometheus-cpp's Exposer: the Exposer cannot
// answer 503 and throws when its port is taken.

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "prometheus/registry.h"

namespace chasqui {

struct OpsOptions {
  std::string host = "127.0.0.1";
  int port = 0;  // 0: pick a free port; the chosen one is logged and returned by port()
};

class OpsServer {
 public:
  // OK = ready; otherwise the status message says why not (shown on /readyz).
  using ReadyCheck = std::function<absl::Status()>;

  // Binds and starts serving on a background thread. Unavailable naming host:port when the
  // port cannot be bound (never throws).
  static absl::StatusOr<std::unique_ptr<OpsServer>> Start(
      const OpsOptions& options, std::shared_ptr<prometheus::Registry> registry,
      ReadyCheck ready);
  virtual ~OpsServer() = default;  // stops serving and joins the thread

  virtual int port() const = 0;
};

}  // namespace chasqui
