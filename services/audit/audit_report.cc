#include "services/audit/audit_report.h"

#include <map>
#include <tuple>

#include "absl/time/civil_time.h"
#include "common/core/names.h"
#include "common/core/status.h"
#include "common/envelope/errors.h"
#include "fmt/format.h"
#include "services/audit/audit_schema.h"

namespace chasqui::audit {
namespace {

absl::StatusOr<absl::CivilDay> ParseDay(std::string_view field, const std::string& text) {
  absl::CivilDay day;
  if (text.size() != 10 || !absl::ParseCivilTime(text, &day)) {
    return absl::InvalidArgumentError(
        fmt::format("report: {} \"{}\" is not a day (YYYY-MM-DD)", field, Printable(text)));
  }
  return day;
}

std::string FormatDay(absl::CivilDay d) {
  return fmt::format("{:04}-{:02}-{:02}", d.year(), d.month(), d.day());
}

void Merge(const v1::DayAggregate& from, v1::DayAggregate& into) {
  into.set_count(into.count() + from.count());
  into.set_latency_sum_ms(into.latency_sum_ms() + from.latency_sum_ms());
  into.set_latency_count(into.latency_count() + from.latency_count());
  into.set_latency_max_ms(std::max(into.latency_max_ms(), from.latency_max_ms()));
  while (into.latency_buckets_size() < from.latency_buckets_size()) into.add_latency_buckets(0);
  for (int i = 0; i < from.latency_buckets_size(); ++i) {
    into.set_latency_buckets(i, into.latency_buckets(i) + from.latency_buckets(i));
  }
}

// The upper bound of the bucket that holds quantile `q`.
uint64_t Quantile(const v1::DayAggregate& a, double q) {
  if (a.latency_count() == 0) return 0;
  const double target = q * static_cast<double>(a.latency_count());
  uint64_t seen = 0;
  for (int i = 0; i < a.latency_buckets_size(); ++i) {
    seen += a.latency_buckets(i);
    if (static_cast<double>(seen) >= target) {
      return i < static_cast<int>(kLatencyBoundsMs.size()) ? kLatencyBoundsMs[i]
                                                           : 2 * kLatencyBoundsMs.back();
    }
  }
  return 2 * kLatencyBoundsMs.back();
}

}  // namespace

absl::StatusOr<absl::TimeZone> LoadReportZone(const std::string& name) {
  absl::TimeZone zone;
  if (!absl::LoadTimeZone(name, &zone)) {
    return absl::InvalidArgumentError(fmt::format(
        "report zone \"{}\" is not a time zone tzdata knows (e.g. America/La_Paz)", name));
  }
  return zone;
}

std::string DayOf(int64_t unix_ms, const absl::TimeZone& zone) {
  return FormatDay(absl::ToCivilDay(absl::FromUnixMillis(unix_ms), zone));
}

int64_t LatencyMs(const v1::AuditRecord& r) {
  if (r.replied_at_ms() <= 0 || r.replied_at_ms() < r.received_at_ms()) return -1;
  return r.replied_at_ms() - r.received_at_ms();
}

void AddToAggregate(const v1::AuditRecord& r, v1::DayAggregate& a) {
  a.set_count(a.count() + 1);
  const int64_t latency = LatencyMs(r);
  if (latency < 0) return;
  const uint64_t ms = static_cast<uint64_t>(latency);
  while (a.latency_buckets_size() < static_cast<int>(kLatencyBoundsMs.size()) + 1) {
    a.add_latency_buckets(0);
  }
  size_t bucket = 0;
  while (bucket < kLatencyBoundsMs.size() && ms > kLatencyBoundsMs[bucket]) ++bucket;
  a.set_latency_buckets(static_cast<int>(bucket), a.latency_buckets(bucket) + 1);
  a.set_latency_sum_ms(a.latency_sum_ms() + ms);
  a.set_latency_count(a.latency_count() + 1);
  a.set_latency_max_ms(std::max(a.latency_max_ms(), ms));
}

absl::StatusOr<v1::ReportResponse> RunReport(KvStore& store, const v1::ReportRequest& q,
                                             std::string_view zone_name) {
  if (!q.service().empty() && q.provider().empty()) {
    return absl::InvalidArgumentError("report: service needs provider");
  }
  if (q.from_day().empty()) {
    return absl::InvalidArgumentError("report: from_day is missing (YYYY-MM-DD)");
  }
  CHASQUI_ASSIGN_OR_RETURN(absl::CivilDay from, ParseDay("from_day", q.from_day()));
  absl::CivilDay to = from;
  if (!q.to_day().empty()) {
    CHASQUI_ASSIGN_OR_RETURN(to, ParseDay("to_day", q.to_day()));
  }
  if (to < from) {
    return absl::InvalidArgumentError(
        fmt::format("report: to_day {} is before from_day {}", FormatDay(to), FormatDay(from)));
  }
  if (to - from >= kMaxReportDays) {
    return absl::InvalidArgumentError(fmt::format(
        "report: {} days asked, at most {} in one request", to - from + 1, kMaxReportDays));
  }

  using RowKey = std::tuple<std::string, std::string, std::string, std::string>;
  struct Accum {
    std::map<std::string, uint64_t> by_outcome;
    uint64_t errors = 0;
    v1::DayAggregate all;
  };
  std::map<RowKey, Accum> rows;
  absl::Status bad;
  CHASQUI_RETURN_IF_ERROR(store.Scan(
      AggregateDayStart(FormatDay(from)), AggregateDayStart(FormatDay(to + 1)),
      [&](std::string_view key, std::string_view value) {
        auto parts = ParseAggregateKey(key);
        v1::DayAggregate a;
        if (!parts.ok() || !a.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
          bad = absl::DataLossError(
              fmt::format("report: aggregate {} does not parse", Printable(key)));
          return false;
        }
        if ((!q.consumer().empty() && parts->consumer != q.consumer()) ||
            (!q.provider().empty() && parts->provider != q.provider()) ||
            (!q.service().empty() && parts->service != q.service())) {
          return true;
        }
        Accum& acc = rows[{parts->day, parts->consumer, parts->provider, parts->service}];
        acc.by_outcome[std::string(CodeName(parts->outcome))] += a.count();
        if (parts->outcome != v1::OK) acc.errors += a.count();
        Merge(a, acc.all);
        return true;
      }));
  CHASQUI_RETURN_IF_ERROR(bad);
  v1::ReportResponse response;
  response.set_zone(std::string(zone_name));
  for (const auto& [key, acc] : rows) {
    v1::ReportRow* row = response.add_rows();
    row->set_day(std::get<0>(key));
    row->set_consumer(std::get<1>(key));
    row->set_provider(std::get<2>(key));
    row->set_service(std::get<3>(key));
    row->set_total(acc.all.count());
    row->set_errors(acc.errors);
    for (const auto& [code, n] : acc.by_outcome) (*row->mutable_by_outcome())[code] = n;
    row->set_latency_p50_ms(Quantile(acc.all, 0.50));
    row->set_latency_p95_ms(Quantile(acc.all, 0.95));
    row->set_latency_max_ms(acc.all.latency_max_ms());
    if (acc.all.latency_count() > 0) {
      row->set_latency_mean_ms(static_cast<double>(acc.all.latency_sum_ms()) /
                               static_cast<double>(acc.all.latency_count()));
    }
  }
  // Refusals before authentication name no provider: shown only without a provider filter.
  if (q.provider().empty()) {
    const std::string start = kRefusalDayPrefix + FormatDay(from);
    const std::string end = kRefusalDayPrefix + FormatDay(to + 1);
    CHASQUI_RETURN_IF_ERROR(
        store.Scan(start, end, [&](std::string_view key, std::string_view value) {
          auto parts = ParseRefusalDayKey(key);
          if (!parts.ok() || value.size() != 8) {
            bad = absl::DataLossError(
                fmt::format("report: refusal count {} does not parse", Printable(key)));
            return false;
          }
          if (!q.consumer().empty() && parts->consumer != q.consumer()) return true;
          v1::RefusalRow* row = response.add_refusals();
          row->set_day(parts->day);
          row->set_consumer(parts->consumer);
          row->set_reason(parts->reason);
          row->set_count(FromBigEndian64(value));
          return true;
        }));
    CHASQUI_RETURN_IF_ERROR(bad);
  }
  return response;
}

}  // namespace chasqui::audit
