#pragma once
// `chasqui top`: live exchanges per consumer and service, read from the routers' /metrics the
// way Prometheus would, for an operator at a terminal (issue 7). Rates are the difference of two
// scrapes over the time between them, summed over every router given.

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace chasqui {

// One sample of the Prometheus text exposition format.
struct MetricSample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// Parses the text format (comments skipped; label values unescaped). InvalidArgument naming the
// line for anything else.
absl::StatusOr<std::vector<MetricSample>> ParseMetricsText(std::string_view text);

// What the routers finished between two scrapes, per (env, consumer, provider, service).
struct ExchangeRow {
  std::string env, consumer, provider, service;
  double per_second = 0;  // all outcomes
  double ok_per_second = 0;
  std::map<std::string, double> refused_per_second;  // by code
};

struct TopView {
  std::vector<ExchangeRow> rows;  // busiest first
  double in_flight = 0;           // summed over routers, at the second scrape
  double added_latency_p50_ms = -1;  // over the interval, from the histogram (-1: no exchanges)
  double added_latency_p99_ms = -1;
  double seconds = 0;
};

// `before[i]` and `after[i]` are two scrapes of router i, `seconds` apart. A counter that went
// down (a router restarted) counts from zero.
TopView ComputeTop(const std::vector<std::vector<MetricSample>>& before,
                   const std::vector<std::vector<MetricSample>>& after, double seconds);

std::string RenderTopTable(const TopView& view, const std::vector<std::string>& sources);
std::string RenderTopJson(const TopView& view);

struct TopOptions {
  std::vector<std::string> routers = {"http://127.0.0.1:9101"};  // ops base URLs
  double interval_seconds = 2;
  bool once = false;  // one view (two scrapes one interval apart), then exit
  bool json = false;
};

// Runs the view until SIGINT/SIGTERM (or once). Returns the process exit code; a router that
// cannot be scraped is reported on stderr naming its URL (exit 1 with --once).
int RunTop(const TopOptions& options);

}  // namespace chasqui
