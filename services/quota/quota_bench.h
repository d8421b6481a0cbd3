#pragma once
// `chasqui-quota bench`: what QuotaEnforcer::Admit() costs on the router's hot path, printed
// beside its raw baseline from the same run (a hash-map lookup of the grant key plus one
// uncontended mutex: the least any in-memory per-grant check can cost). Google Benchmark.

namespace chasqui {

struct QuotaBenchOptions {
  int max_threads = 2;
  double min_time_s = 0.5;
};

// Runs the benchmarks and prints their table; returns the process exit code.
int RunQuotaBench(const QuotaBenchOptions& options);

}  // namespace chasqui
