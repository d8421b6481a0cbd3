#pragma once
// The audit service's Prometheus series. Labels are fixed sets (outcomes, reasons), never ids,
// consumers or end users. Thread-safe.

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
  prometheus::Histogram* sync_seconds_;
  prometheus::Histogram* group_size_;
  prometheus::Gauge* backlog_;
  prometheus::Gauge* chain_length_;
  prometheus::Gauge* checkpoint_age_;
  prometheus::Counter* checkpoints_;
  prometheus::Counter* queries_;
};

}  // namespace chasqui::audit
