#pragma once
// Shared pieces of the gateway's integration tests: a stand-in for an entity's own HTTP system,
// an HTTP answer with its problem document, and a metric lookup.

#include <httplib.h>

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "prometheus/registry.h"
#include "tests/support/metrics.h"  // SeriesValue, ExpositionText

namespace chasqui::testing {

// An entity's system: a small HTTP server on a random loopback port that records each request
// and answers with `handler`. Stops (waking any handler in Sleep) on destruction.
class UpstreamSystem {
 public:
  using Handler = std::function<void(const httplib::Request&, httplib::Response&)>;
  struct Seen {
    std::string path;
    std::string body;
    httplib::Headers headers;
    std::string Header(const std::string& name) const;
  };

  explicit UpstreamSystem(Handler handler);
  ~UpstreamSystem();

  std::string Url(const std::string& path) const;
  int port() const { return port_; }
  // Sleeps for `d`, or until the system is being destroyed.
  void Sleep(absl::Duration d) { stopping_.WaitForNotificationWithTimeout(d); }
  int calls() const { return calls_.load(); }
  Seen Last();

 private:
  Handler handler_;
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  std::atomic<int> calls_{0};
  absl::Notification stopping_;
  absl::Mutex mu_;
  std::vector<Seen> seen_ ABSL_GUARDED_BY(mu_);
};

// A loopback port nobody listens on (bound, then closed): connecting is refused.
int ClosedPort();

struct HttpReply {
  int status = -1;  // -1: no answer (error says why)
  std::string error;
  std::string body;
  httplib::Headers headers;
  std::string Header(const std::string& name) const;
};

// A request to a gateway with a bounded wait.
HttpReply Send(int port, const std::string& method, const std::string& path,
               const std::string& body, const httplib::Headers& headers);


}  // namespace chasqui::testing
