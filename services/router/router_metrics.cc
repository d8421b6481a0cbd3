#include "services/router/router_metrics.h"

#include "common/envelope/errors.h"
#include "fmt/format.h"

namespace chasqui {
namespace {
constexpr char kOverflowKey[] = "\x01overflow";
}  // namespace

RouterMetrics::RouterMetrics(prometheus::Registry& registry, std::string env)
    : env_(std::move(env)),
      requests_(prometheus::BuildCounter()
                    .Name("chasqui_router_requests_total")
                    .Help("Requests the router finished, by outcome code (OK or the refusal)")
                    .Register(registry)),
      dropped_(prometheus::BuildCounter()
                   .Name("chasqui_router_dropped_total")
                   .Help("Requests dropped unanswered, e.g. a reply subject outside the "
                         "consumer's inbox")
                   .Register(registry)),
      audit_lost_(prometheus::BuildCounter()
                      .Name("chasqui_router_audit_lost_total")
                      .Help("Trace entries the router gave up on: refusal counts past their "
                            "retries, records the audit service refused as malformed")
                      .Register(registry)) {
  const prometheus::Labels env_label{{"env", env_}};
  // Present at 0 from the start, so the first drop shows as an increase.
  for (const char* reason : {"bad_subject", "reply_subject", "preauth_flood"}) {
    dropped_.Add({{"env", env_}, {"reason", reason}});
  }
  added_latency_ = &prometheus::BuildHistogram()
                        .Name("chasqui_router_added_latency_seconds")
                        .Help("Time spent inside the router per exchange, both directions")
                        .Register(registry)
                        .Add(env_label, prometheus::Histogram::BucketBoundaries{
                                            5e-6, 10e-6, 20e-6, 50e-6, 100e-6, 200e-6, 500e-6,
                                            1e-3, 2e-3, 5e-3, 10e-3, 50e-3});
  batch_size_ = &prometheus::BuildHistogram()
                     .Name("chasqui_router_request_batch_size")
                     .Help("Tree size of the batch signature of each verified request")
                     .Register(registry)
                     .Add(env_label, prometheus::Histogram::BucketBoundaries{
                                         1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024});
  in_flight_ = &prometheus::BuildGauge()
                    .Name("chasqui_router_in_flight")
                    .Help("Requests forwarded and not yet answered")
                    .Register(registry)
                    .Add(env_label);
  ready_ = &prometheus::BuildGauge()
                .Name("chasqui_router_ready")
                .Help("1 once the router serves (after the startup hold), else 0")
                .Register(registry)
                .Add(env_label);
  auto& cache = prometheus::BuildCounter()
                    .Name("chasqui_router_root_cache_total")
                    .Help("Verified-root cache lookups by result")
                    .Register(registry);
  cache_hits_ = &cache.Add({{"env", env_}, {"result", "hit"}});
  cache_misses_ = &cache.Add({{"env", env_}, {"result", "miss"}});
  late_replies_ = &prometheus::BuildCounter()
                       .Name("chasqui_router_late_replies_total")
                       .Help("Provider replies that came after the router had timed out")
                       .Register(registry)
                       .Add(env_label);
  reconnects_ = &prometheus::BuildCounter()
                     .Name("chasqui_nats_reconnects_total")
                     .Help("Times this process's NATS connection was lost and restored")
                     .Register(registry)
                     .Add({{"part", "router"}});
  audit_backlog_ = &prometheus::BuildGauge()
                        .Name("chasqui_router_audit_backlog")
                        .Help("Trace records queued for or awaiting the audit service's ack")
                        .Register(registry)
                        .Add(env_label);
  audit_ack_latency_ = &prometheus::BuildHistogram()
                            .Name("chasqui_router_audit_ack_seconds")
                            .Help("From handing an exchange's record to the audit client to its "
                                  "durable ack (what a reply waits for the trace)")
                            .Register(registry)
                            .Add(env_label, prometheus::Histogram::BucketBoundaries{
                                                100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3,
                                                10e-3, 20e-3, 50e-3, 100e-3, 500e-3, 2});
  audit_up_ = &prometheus::BuildGauge()
                   .Name("chasqui_router_audit_up")
                   .Help("1 while the audit service acknowledges records (or tracing is off), "
                         "0 while the router answers AUDIT_UNAVAILABLE")
                   .Register(registry)
                   .Add(env_label);
  audit_up_->Set(1);
  fetch_queue_ = &prometheus::BuildGauge()
                      .Name("chasqui_router_certificate_fetch_queue")
                      .Help("Requests waiting for a certificate lookup in the crypto service's "
                            "directory (a sender or recipient serial this router did not hold)")
                      .Register(registry)
                      .Add({{"env", env_}});
  fetch_outcomes_ = &prometheus::BuildCounter()
                         .Name("chasqui_router_certificate_fetch_requests_total")
                         .Help("Requests sent to the certificate fetch worker (queued), or "
                               "refused UNAVAILABLE because its queue was full (queue_full)")
                         .Register(registry);
  for (const char* outcome : {"queued", "queue_full"}) {
    fetch_outcomes_->Add({{"env", env_}, {"outcome", outcome}});
  }
  for (const char* kind : {"refusal_count", "record"}) {
    audit_lost_.Add({{"env", env_}, {"kind", kind}});
  }
}

void RouterMetrics::CountRequest(std::string_view consumer, std::string_view provider,
                                 std::string_view service, v1::Code code) {
  const std::string key = fmt::format("{}\n{}\n{}\n{}", consumer, provider, service,
                                      static_cast<int>(code));
  prometheus::Counter* counter;
  {
    absl::MutexLock lock(&mu_);
    auto it = request_counters_.find(key);
    if (it == request_counters_.end() && request_counters_.size() >= kMaxRequestSeries) {
      // Past the cap, new label sets share one series rather than grow the scrape forever.
      it = request_counters_.find(kOverflowKey);
      if (it == request_counters_.end()) {
        it = request_counters_
                 .emplace(kOverflowKey, &requests_.Add({{"env", env_},
                                                        {"consumer", "other"},
                                                        {"provider", "other"},
                                                        {"service", "other"},
                                                        {"code", "other"}}))
                 .first;
      }
    }
    if (it == request_counters_.end()) {
      counter = &requests_.Add({{"env", env_},
                                {"consumer", std::string(consumer)},
                                {"provider", std::string(provider)},
                                {"service", std::string(service)},
                                {"code", std::string(CodeName(code))}});
      request_counters_.emplace(key, counter);
    } else {
      counter = it->second;
    }
  }
  counter->Increment();
}

void RouterMetrics::CountAuditLost(std::string_view kind) {
  audit_lost_.Add({{"env", env_}, {"kind", std::string(kind)}}).Increment();
}

void RouterMetrics::CountFetch(std::string_view outcome) {
  fetch_outcomes_->Add({{"env", env_}, {"outcome", std::string(outcome)}}).Increment();
}

void RouterMetrics::CountDropped(std::string_view reason) {
  dropped_.Add({{"env", env_}, {"reason", std::string(reason)}}).Increment();
}

}  // namespace chasqui
