#pragma once
// The entity gateway's Prometheus series. Label values stay bounded: the caller passes names
// only once they passed the name grammar and are known (else "unknown"), codes come from the
// fixed enum, never ids, end users or paths.

#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "chasqui/v1/envelope.pb.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace chasqui {

enum class Direction { kConsume, kProvide };

class GatewayMetrics {
 public:
  // Registers the series in `registry`, which must outlive this object.
  GatewayMetrics(prometheus::Registry& registry, std::string env);

  // One finished request: its outcome code and how long the gateway held it. Thread-safe;
  // counters are cached per label set.
  void CountRequest(Direction direction, std::string_view provider, std::string_view service,
                    v1::Code code, double seconds);
  // A request the provider side answered without calling the entity's system: `reason` is one
  // of the SDK's fixed words (saturated, stale, stopping, remembered, joined, key_conflict,
  // key_busy, bad_key). Thread-safe.
  void CountAnsweredWithoutUpstream(std::string_view service, std::string_view reason,
                                    v1::Code code);

 private:
  const std::string env_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Counter>& without_upstream_;
  prometheus::Histogram* consume_duration_;
  prometheus::Histogram* provide_duration_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, prometheus::Counter*> counters_ ABSL_GUARDED_BY(mu_);
};

}  // namespace chasqui
