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
  prometheus::Counter& nats_reconnects() { return *reconnects_; }
  // The trace (no trace, no data): records queued or awaiting the audit service's ack, the time
  // from handing a record over to its durable ack, and whether appends currently succeed.
  prometheus::Gauge& audit_backlog() { return *audit_backlog_; }
  prometheus::Histogram& audit_ack_latency() { return *audit_ack_latency_; }
  prometheus::Gauge& audit_up() { return *audit_up_; }
  // Trace entries the router could not hand over for good (a refusal count given up after its
  // retries, a record the audit service refused as malformed), by kind.
  void CountAuditLost(std::string_view kind);
  // Certificate lookups off the delivery thread: the requests waiting, and each request handed
  // to the worker by outcome ("queued", "queue_full").
  prometheus::Gauge& fetch_queue() { return *fetch_queue_; }
  void CountFetch(std::string_view outcome);

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
  prometheus::Counter* reconnects_;
  prometheus::Gauge* audit_backlog_;
  prometheus::Histogram* audit_ack_latency_;
  prometheus::Gauge* audit_up_;
  prometheus::Family<prometheus::Counter>& audit_lost_;
  prometheus::Gauge* fetch_queue_ = nullptr;
  prometheus::Family<prometheus::Counter>* fetch_outcomes_ = nullptr;
};

}  // namespace chasqui
