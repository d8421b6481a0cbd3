#include "services/audit/audit_metrics.h"

#include <string>

#include "services/audit/audit_report.h"

namespace chasqui::audit {

AuditMetrics::AuditMetrics(prometheus::Registry& registry)
    : appended_(prometheus::BuildCounter()
                    .Name("chasqui_audit_records_appended_total")
                    .Help("Entries answered by the chain, by outcome (durable, replayed, "
                          "rejected, failed)")
                    .Register(registry)),
      malformed_(prometheus::BuildCounter()
                     .Name("chasqui_audit_malformed_requests_total")
                     .Help("Append or query requests refused before any entry was looked at")
                     .Register(registry)),
      exchanges_(prometheus::BuildCounter()
                     .Name("chasqui_audit_exchanges_total")
                     .Help("Exchanges (and refusals after authentication) recorded durably, by "
                           "env, consumer, provider, service and outcome")
                     .Register(registry)),
      reads_(prometheus::BuildCounter()
                 .Name("chasqui_audit_reads_total")
                 .Help("Signed queries and reports answered, by verb and code (OK or the "
                       "refusal's)")
                 .Register(registry)),
      latency_(prometheus::BuildHistogram()
                   .Name("chasqui_audit_exchange_latency_seconds")
                   .Help("Replied minus received time of recorded exchanges, by service and "
                         "outcome")
                   .Register(registry)) {
  // Present at 0 from the start, so the first increase shows.
  for (size_t i = 0; i < kAppendOutcomes.size(); ++i) {
    appended_by_outcome_[i] = &appended_.Add({{"outcome", std::string(kAppendOutcomes[i])}});
  }
  for (const char* v : {"query", "report"}) reads_.Add({{"verb", v}, {"code", "OK"}});
  for (const char* r : {"parse", "empty", "too_large", "no_reply_subject"}) {
    malformed_.Add({{"reason", r}});
  }
  sync_seconds_ = &prometheus::BuildHistogram()
                       .Name("chasqui_audit_sync_seconds")
                       .Help("Time of each synced group-commit write")
                       .Register(registry)
                       .Add({}, prometheus::Histogram::BucketBoundaries{
                                    100e-6, 250e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 25e-3,
                                    50e-3, 100e-3, 250e-3, 1});
  group_size_ = &prometheus::BuildHistogram()
                     .Name("chasqui_audit_group_commit_entries")
                     .Help("Entries written by each synced group commit")
                     .Register(registry)
                     .Add({}, prometheus::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64,
                                                                      128, 256, 512, 1024, 4096});
  backlog_ = &prometheus::BuildGauge()
                  .Name("chasqui_audit_backlog")
                  .Help("Entries queued for the writer and not yet written")
                  .Register(registry)
                  .Add({});
  chain_length_ = &prometheus::BuildGauge()
                       .Name("chasqui_audit_chain_length")
                       .Help("Entries in the chain (the head's sequence number)")
                       .Register(registry)
                       .Add({});
  checkpoint_age_ = &prometheus::BuildGauge()
                         .Name("chasqui_audit_last_checkpoint_age_seconds")
                         .Help("Seconds since the last signed checkpoint (or since start)")
                         .Register(registry)
                         .Add({});
  checkpoints_ = &prometheus::BuildCounter()
                      .Name("chasqui_audit_checkpoints_total")
                      .Help("Signed checkpoints written")
                      .Register(registry)
                      .Add({});
  queries_ = &prometheus::BuildCounter()
                  .Name("chasqui_audit_queries_total")
                  .Help("Queries answered")
                  .Register(registry)
                  .Add({});
}

void AuditMetrics::CountAppended(std::string_view outcome, double n) {
  for (size_t i = 0; i < kAppendOutcomes.size(); ++i) {
    if (kAppendOutcomes[i] == outcome) {
      appended_by_outcome_[i]->Increment(n);
      return;
    }
  }
  appended_.Add({{"outcome", std::string(outcome)}}).Increment(n);
}

namespace {

void AppendLabel(std::string& key, std::string_view value) {
  key.append(std::to_string(value.size()));
  key.push_back(':');
  key.append(value);
}

}  // namespace

void AuditMetrics::CountExchange(std::string_view env, std::string_view consumer,
                                 std::string_view provider, std::string_view service,
                                 std::string_view outcome, int64_t latency_ms) {
  static const prometheus::Histogram::BucketBoundaries kBounds = [] {
    prometheus::Histogram::BucketBoundaries b;
    for (uint64_t ms : kLatencyBoundsMs) b.push_back(static_cast<double>(ms) / 1000.0);
    return b;
  }();
  std::string key;
  key.reserve(env.size() + consumer.size() + provider.size() + service.size() + outcome.size() +
              16);
  for (std::string_view v : {env, consumer, provider, service, outcome}) AppendLabel(key, v);
  ExchangeSeries series;
  {
    absl::MutexLock lock(&series_mu_);
    auto it = exchange_series_.find(key);
    if (it == exchange_series_.end()) {
      // Families hand out stable references; a series is never removed.
      ExchangeSeries fresh;
      fresh.count = &exchanges_.Add({{"env", std::string(env)},
                                     {"consumer", std::string(consumer)},
                                     {"provider", std::string(provider)},
                                     {"service", std::string(service)},
                                     {"outcome", std::string(outcome)}});
      it = exchange_series_.emplace(std::move(key), fresh).first;
    }
    // The latency series appears with the first record that has a latency.
    if (latency_ms >= 0 && it->second.latency == nullptr) {
      it->second.latency = &latency_.Add(
          {{"service", std::string(service)}, {"outcome", std::string(outcome)}}, kBounds);
    }
    series = it->second;
  }
  series.count->Increment();
  if (latency_ms < 0) return;
  series.latency->Observe(static_cast<double>(latency_ms) / 1000.0);
}

void AuditMetrics::CountRead(std::string_view verb, std::string_view code) {
  reads_.Add({{"verb", std::string(verb)}, {"code", std::string(code)}}).Increment();
}

void AuditMetrics::CountMalformed(std::string_view reason) {
  malformed_.Add({{"reason", std::string(reason)}}).Increment();
}

}  // namespace chasqui::audit
