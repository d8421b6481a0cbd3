#pragma once
// The audit service's Prometheus series. Labels are fixed sets (outcomes, reasons) or catalog
// names (env, consumer, provider, service), never ids or end users. Thread-safe.

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace chasqui::audit {

class AuditMetrics {
 public:
  explicit AuditMetrics(prometheus::Registry& registry);

  // outcome: durable, replayed, rejected, failed.
  void CountAppended(std::string_view outcome, double n = 1);
  // reason: parse, empty, too_large, no_reply_subject.
  void CountMalformed(std::string_view reason);
  // A signed query or report answered: verb query|report, code OK or the refusal's code name.
  void CountRead(std::string_view verb, std::string_view code);

  // One durable exchange record: chasqui_audit_exchanges_total{env,consumer,provider,service,
  // outcome}, and its latency (replied - received; `latency_ms` < 0: none) in
  // chasqui_audit_exchange_latency_seconds{service,outcome}. The same counts as the reports.
  // Called once per record: the series of each label tuple are looked up in the registry once
  // and kept (a Family::Add builds a label map and hashes it on every call).
  void CountExchange(std::string_view env, std::string_view consumer, std::string_view provider,
                     std::string_view service, std::string_view outcome, int64_t latency_ms);

  prometheus::Histogram& sync_seconds() { return *sync_seconds_; }
  prometheus::Histogram& group_size() { return *group_size_; }
  prometheus::Gauge& backlog() { return *backlog_; }
  prometheus::Gauge& chain_length() { return *chain_length_; }
  prometheus::Gauge& last_checkpoint_age() { return *checkpoint_age_; }
  prometheus::Counter& checkpoints() { return *checkpoints_; }
  prometheus::Counter& queries() { return *queries_; }

 private:
  prometheus::Family<prometheus::Counter>& appended_;
  prometheus::Family<prometheus::Counter>& malformed_;
  prometheus::Family<prometheus::Counter>& exchanges_;
  prometheus::Family<prometheus::Counter>& reads_;
  prometheus::Family<prometheus::Histogram>& latency_;
  static constexpr std::array<std::string_view, 4> kAppendOutcomes = {"durable", "replayed",
                                                                      "rejected", "failed"};
  std::array<prometheus::Counter*, kAppendOutcomes.size()> appended_by_outcome_{};
  struct ExchangeSeries {
    prometheus::Counter* count = nullptr;
    prometheus::Histogram* latency = nullptr;
  };
  absl::Mutex series_mu_;
  // Keyed by the length-prefixed label values (env, consumer, provider, service, outcome).
  absl::flat_hash_map<std::string, ExchangeSeries> exchange_series_ ABSL_GUARDED_BY(series_mu_);
  prometheus::Histogram* sync_seconds_;
  prometheus::Histogram* group_size_;
  prometheus::Gauge* backlog_;
  prometheus::Gauge* chain_length_;
  prometheus::Gauge* checkpoint_age_;
  prometheus::Counter* checkpoints_;
  prometheus::Counter* queries_;
};

}  // namespace chasqui::audit
