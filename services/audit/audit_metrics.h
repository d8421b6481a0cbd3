#pragma once
// The audit service's Prometheus series. Labels are fixed sets (outcomes, reasons) or catalog
// names (env, consumer, provider, service), never ids or end users. Thread-safe.

#include <cstdint>
#include <string_view>

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
  prometheus::Histogram* sync_seconds_;
  prometheus::Histogram* group_size_;
  prometheus::Gauge* backlog_;
  prometheus::Gauge* chain_length_;
  prometheus::Gauge* checkpoint_age_;
  prometheus::Counter* checkpoints_;
  prometheus::Counter* queries_;
};

}  // namespace chasqui::audit
