#pragma once
// The router's Prometheus series. Label values are bounded: consumer and provider only once they
// are known identities (else "unknown"), service only after authentication (else "unknown"),
// codes from the fixed enum, never ids or end users, and at most kMaxRequestSeries label sets.

#include <array>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "chasqui/v1/envelope.pb.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace chasqui {

class RouterMetrics {
 public:
  // Distinct (consumer, provider, service, code) series before new ones are counted together
  // under "other": until the catalog bounds service names, an authenticated consumer could
  // otherwise mint a series per invented service.
  static constexpr size_t kMaxRequestSeries = 2048;

  RouterMetrics(prometheus::Registry& registry, std::string env);

  // One request's outcome (OK or the refusal code). Thread-safe; cached per label set.
  void CountRequest(std::string_view consumer, std::string_view provider, std::string_view service,
                    v1::Code code);
  void CountDropped(std::string_view reason);

  prometheus::Histogram& added_latency() { return *added_latency_; }
  prometheus::Histogram& batch_size() { return *batch_size_; }
  prometheus::Gauge& in_flight() { return *in_flight_; }
  prometheus::Gauge& ready() { return *ready_; }
  prometheus::Counter& root_cache_hits() { return *cache_hits_; }
  prometheus::Counter& root_cache_misses() { return *cache_misses_; }
  prometheus::Counter& late_replies() { return *late_replies_; }
  prometheus::Gauge& nats_reconnects() { return *reconnects_; }

 private:
  const std::string env_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Counter>& dropped_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, prometheus::Counter*> request_counters_ ABSL_GUARDED_BY(mu_);
  prometheus::Histogram* added_latency_;
  prometheus::Histogram* batch_size_;
  prometheus::Gauge* in_flight_;
  prometheus::Gauge* ready_;
  prometheus::Counter* cache_hits_;
  prometheus::Counter* cache_misses_;
  prometheus::Counter* late_replies_;
  prometheus::Gauge* reconnects_;
};

}  // namespace chasqui
