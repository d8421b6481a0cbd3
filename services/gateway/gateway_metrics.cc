#include "services/gateway/gateway_metrics.h"

#include "common/envelope/errors.h"
#include "fmt/format.h"

namespace chasqui {
namespace {

std::string_view DirectionName(Direction d) {
  return d == Direction::kConsume ? "consume" : "provide";
}

// From a local rejection (~100 us) to the longest call timeout anyone should configure.
const prometheus::Histogram::BucketBoundaries kDurationBuckets{
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

}  // namespace

GatewayMetrics::GatewayMetrics(prometheus::Registry& registry, std::string env)
    : env_(std::move(env)),
      requests_(prometheus::BuildCounter()
                    .Name("chasqui_gateway_requests_total")
                    .Help("Requests the gateway finished, by direction and outcome code")
                    .Register(registry)),
      without_upstream_(prometheus::BuildCounter()
                            .Name("chasqui_gateway_provide_without_upstream_total")
                            .Help("Requests the provider side answered without calling the "
                                  "entity's system, by reason (saturated, remembered, ...)")
                            .Register(registry)) {
  auto& duration = prometheus::BuildHistogram()
                       .Name("chasqui_gateway_request_duration_seconds")
                       .Help("Time the gateway held a request: HTTP in to HTTP out (consume), "
                             "opened request to answer handed for sealing (provide)")
                       .Register(registry);
  consume_duration_ =
      &duration.Add({{"env", env_}, {"direction", "consume"}}, kDurationBuckets);
  provide_duration_ =
      &duration.Add({{"env", env_}, {"direction", "provide"}}, kDurationBuckets);
}

void GatewayMetrics::CountRequest(Direction direction, std::string_view provider,
                                  std::string_view service, v1::Code code, double seconds) {
  const std::string key = fmt::format("{}\n{}\n{}\n{}", DirectionName(direction), provider,
                                      service, static_cast<int>(code));
  prometheus::Counter* counter;
  {
    absl::MutexLock lock(&mu_);
    auto it = counters_.find(key);
    if (it == counters_.end()) {
      counter = &requests_.Add({{"env", env_},
                                {"direction", std::string(DirectionName(direction))},
                                {"provider", std::string(provider)},
                                {"service", std::string(service)},
                                {"code", std::string(CodeName(code))}});
      counters_.emplace(key, counter);
    } else {
      counter = it->second;
    }
  }
  counter->Increment();
  (direction == Direction::kConsume ? consume_duration_ : provide_duration_)->Observe(seconds);
}

}  // namespace chasqui

namespace chasqui {

void GatewayMetrics::CountAnsweredWithoutUpstream(std::string_view service,
                                                  std::string_view reason, v1::Code code) {
  const std::string key = fmt::format("without\n{}\n{}\n{}", service, reason,
                                      static_cast<int>(code));
  prometheus::Counter* counter;
  {
    absl::MutexLock lock(&mu_);
    auto it = counters_.find(key);
    if (it == counters_.end()) {
      counter = &without_upstream_.Add({{"env", env_},
                                        {"service", std::string(service)},
                                        {"reason", std::string(reason)},
                                        {"code", std::string(CodeName(code))}});
      counters_.emplace(key, counter);
    } else {
      counter = it->second;
    }
  }
  counter->Increment();
}

}  // namespace chasqui
