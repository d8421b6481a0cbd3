#include "services/quota/quota_bench.h"

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "benchmark/benchmark.h"
#include "common/core/clock.h"
#include "common/core/status.h"
#include "services/quota/quota_enforcer.h"
#include "services/quota/quota_keys.h"

namespace chasqui {
namespace {

// Grants what is asked with every limit on but far away: Admit() runs its whole path (period
// check, allowance, grant bucket, provider bucket) and is never refused.
class GenerousSource final : public LeaseSource {
 public:
  absl::StatusOr<v1::LeaseReply> Lease(const v1::LeaseRequest& request) override {
    v1::LeaseReply reply;
    v1::Lease& l = *reply.mutable_lease();
    *l.mutable_grant() = request.grant();
    l.set_allowance(request.wanted());
    l.set_day("2099-01-01");
    l.set_month("2099-01");
    l.set_day_ends_at_ms(INT64_MAX / 2);
    l.set_month_ends_at_ms(INT64_MAX / 2);
    l.set_per_day(1'000'000'000'000);
    l.set_day_remaining(1'000'000'000'000);
    l.set_rate_share(1e12);
    l.set_burst_share(1e12);
    l.set_provider_rate_share(1e12);
    l.set_provider_burst_share(1e12);
    l.set_share_expires_at_ms(INT64_MAX / 2);
    return reply;
  }
  absl::StatusOr<v1::ReturnReply> Return(const v1::LeaseReturn&) override {
    return v1::ReturnReply();
  }
};

struct Fixture {
  GenerousSource source;
  std::unique_ptr<QuotaEnforcer> enforcer;
  std::vector<std::string> keys;
  // Baseline: what a per-grant in-memory check costs at the least.
  absl::flat_hash_map<std::string, std::unique_ptr<absl::Mutex>> mutexes;
};

Fixture* g_fixture = nullptr;

void BM_Baseline_MapLookupAndMutex(benchmark::State& state) {
  const std::string& key = g_fixture->keys[state.range(0) ? state.thread_index() : 0];
  int64_t sink = 0;
  for (auto _ : state) {
    auto it = g_fixture->mutexes.find(key);
    absl::MutexLock lock(it->second.get());
    ++sink;
  }
  benchmark::DoNotOptimize(sink);
}

void BM_Admit(benchmark::State& state) {
  const std::string& key = g_fixture->keys[state.range(0) ? state.thread_index() : 0];
  const int64_t now = SystemClock().NowUnixMillis();
  int64_t refused = 0;
  for (auto _ : state) {
    refused += !g_fixture->enforcer->Admit(key, now).admitted;
  }
  state.counters["refused"] = static_cast<double>(refused);
}

}  // namespace

int RunQuotaBench(const QuotaBenchOptions& options) {
  Fixture fixture;
  g_fixture = &fixture;
  QuotaEnforcerOptions eo;
  eo.router_id = "bench";
  eo.min_lease = 10'000'000;
  eo.max_lease = 10'000'000;
  auto enforcer = QuotaEnforcer::Create(eo, &fixture.source, SystemClock());
  if (!enforcer.ok()) {
    std::fprintf(stderr, "bench: %s\n", std::string(MessageOf(enforcer.status())).c_str());
    return 2;
  }
  fixture.enforcer = *std::move(enforcer);
  for (int i = 0; i < std::max(1, options.max_threads); ++i) {
    fixture.keys.push_back(GrantKeyString("test", "consumer" + std::to_string(i), "segip",
                                          "persona"));
    fixture.mutexes[fixture.keys.back()] = std::make_unique<absl::Mutex>();
    (void)fixture.enforcer->Prepare(fixture.keys.back());
  }
  // Leases first: the benchmark measures admission, not the first lease's round trip.
  for (int i = 0; i < 1000; ++i) {
    bool all = true;
    for (const auto& k : fixture.keys) {
      auto v = fixture.enforcer->View(k);
      all = all && v.ok() && v->has_lease;
    }
    if (all) break;
    absl::SleepFor(absl::Milliseconds(2));
  }

  int argc = 1;
  char name[] = "chasqui-quota-bench";
  char* argv[] = {name, nullptr};
  benchmark::Initialize(&argc, argv);
  // Arg(0): every thread on one grant (contended); Arg(1): a grant per thread.
  for (auto* b : {benchmark::RegisterBenchmark("baseline/map_lookup+mutex",
                                               BM_Baseline_MapLookupAndMutex),
                  benchmark::RegisterBenchmark("QuotaEnforcer::Admit", BM_Admit)}) {
    b->Arg(0)->Arg(1)->MinTime(options.min_time_s)->UseRealTime();
    for (int t = 1; t <= options.max_threads; t *= 2) b->Threads(t);
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  std::printf("Arg 0: all threads admit on one grant; Arg 1: a grant per thread. "
              "Unspent at the end: %llu\n",
              static_cast<unsigned long long>(fixture.enforcer->Outstanding()));
  g_fixture = nullptr;
  return 0;
}

}  // namespace chasqui
