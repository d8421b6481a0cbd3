#pragma once
// The router: the hot path of every exchange (DESIGN.md, "One request, start to end", steps 2
// and 4). It checks, in memory and in order: size and parse; addressing; reply subject;
// certificate; signature and body_hash; freshness and replay. Each refusal is answered with an
// error envelope signed by the router, carrying its exact code. A request whose reply subject
// lies outside `_INBOX.<env>.<consumer>.` is dropped, counted and logged, and nothing is ever
// published to that subject. Accepted requests go to `chq.<env>.svc.<provider>.<service>` with
// the router's own reply subject; the provider's verified reply is relayed as received.

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/bus/bus.h"
#include "common/bus/request_mux.h"
#include "common/core/clock.h"
#include "common/envelope/batch_signer.h"
#include "common/envelope/envelope.h"
#include "common/envelope/identity.h"
#include "common/envelope/replay_guard.h"
#include "common/envelope/verifier.h"
#include "prometheus/registry.h"
#include "services/router/refusal_limiter.h"
#include "services/router/router_metrics.h"

namespace chasqui {

struct RouterOptions {
  std::string env = "test";
  std::string router_id;  // unique among replicas: names the router's reply inbox
  int64_t freshness_window_ms = 30'000;
  // Unready after start so no replay seen by a predecessor slips in: by default the window
  // plus the allowed skew (which equals the window). Negative = that default.
  int64_t startup_hold_ms = -1;
  absl::Duration provider_timeout = absl::Seconds(5);
  size_t max_envelope_bytes = kDefaultMaxEnvelopeBytes;
  std::string queue_group = "chq.routers";
  // Refusals before authentication answered per consumer; beyond them its requests are
  // dropped unchecked (counted as dropped{reason="preauth_flood"}) until it slows down.
  RefusalLimits preauth_refusals;
};

// The checks and the forwarding, written against small interfaces so unit tests can use
// fakes. Thread-safe: HandleRequest may run on several threads.
class RouterCore {
 public:
  // `publisher`, `mux`, `metrics` and `clock` must outlive the core.
  RouterCore(const RouterOptions& options, Publisher* publisher, RequestMux* mux,
             Identity identity, TrustStore trust, RouterMetrics* metrics, const Clock& clock);

  void HandleRequest(const BusMessage& msg);

  const RootCache& root_cache() const { return root_cache_; }
  const BatchSigner& signer() const { return signer_; }

 private:
  struct Exchange;
  void Refuse(const BusMessage& msg, const std::string& reply_to, const std::string& in_reply_to,
              std::string_view consumer, std::string_view provider, std::string_view service,
              std::string_view label_consumer, std::string_view label_provider,
              std::string_view label_service, const absl::Status& why);
  void OnProviderAnswer(const std::shared_ptr<Exchange>& ex, MuxOutcome outcome,
                        const BusMessage* reply);
  void SendError(const std::string& reply_to, const std::string& in_reply_to,
                 std::string_view consumer, std::string_view provider, std::string_view service,
                 v1::Code code, std::string_view message);
  std::string_view KnownEntityOr(std::string_view name) const;
  void LogRefusal(std::string_view what);

  const RouterOptions options_;
  Publisher* publisher_;
  RequestMux* mux_;
  const Identity identity_;
  const TrustStore trust_;
  RouterMetrics* metrics_;
  const Clock& clock_;
  RootCache root_cache_;
  EnvelopeVerifier verifier_;
  ReplayGuard replay_;
  RefusalLimiter preauth_limiter_;
  BatchSigner signer_;
  std::atomic<int64_t> log_second_{0};
  std::atomic<int> log_lines_this_second_{0};
};

class Router {
 public:
  // Connects the core to `bus` (which must outlive the router) and subscribes to
  // `chq.<env>.req.>` in the queue group once the startup hold has passed.
  static absl::StatusOr<std::unique_ptr<Router>> Start(const RouterOptions& options, Bus* bus,
                                                       Identity identity, TrustStore trust,
                                                       std::shared_ptr<prometheus::Registry> registry,
                                                       const Clock& clock = SystemClock());
  ~Router();

  // OK once the router serves; else why not (for /readyz).
  absl::Status Ready() const;
  // Stops taking requests and lets those in flight finish, up to `timeout`.
  absl::Status Drain(absl::Duration timeout);

  const RouterCore& core() const { return *core_; }

 private:
  Router() = default;
  void HoldThenSubscribe(int64_t hold_ms);

  RouterOptions options_;
  Bus* bus_ = nullptr;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<RouterMetrics> metrics_;
  std::unique_ptr<RequestMux> mux_;
  std::unique_ptr<RouterCore> core_;
  std::unique_ptr<Subscription> subscription_;
  absl::Notification stop_;
  std::thread hold_thread_;
  std::atomic<bool> serving_{false};
  std::atomic<bool> subscribe_failed_{false};
};

}  // namespace chasqui
