#pragma once
// Consumption reports (issue 6, "Reading it"): per day in the report zone, per consumer,
// provider and service, counts by outcome, errors and latency. The chain keeps one
// DayAggregate per (day, consumer, provider, service, outcome) in the same synced batch as the
// records it counts (audit_schema.h), so a report reads a few keys per day instead of scanning
// records, survives kill -9 exactly like the records, and never counts a redelivered record.
// Refusals before authentication (RefusalCount) are kept per (day, consumer label, reason) in
// the same batch and reported in their own section (ReportResponse.refusals), only when no
// provider filter is given (they name no provider).

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "chasqui/v1/audit.pb.h"
#include "common/store/kv_store.h"

namespace chasqui::audit {

inline constexpr char kDefaultReportZone[] = "America/La_Paz";
// Upper bounds (ms) of DayAggregate.latency_buckets; one more bucket holds the rest.
inline constexpr std::array<uint64_t, 14> kLatencyBoundsMs = {
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000};
// Most days in one report request.
inline constexpr int kMaxReportDays = 366;

// InvalidArgument naming the zone if tzdata does not know it.
absl::StatusOr<absl::TimeZone> LoadReportZone(const std::string& name);
// YYYY-MM-DD of `unix_ms` in `zone`.
std::string DayOf(int64_t unix_ms, const absl::TimeZone& zone);
// Replied minus received, or -1 when the record has no reply time.
int64_t LatencyMs(const v1::AuditRecord& record);
// Counts `record` into `aggregate`.
void AddToAggregate(const v1::AuditRecord& record, v1::DayAggregate& aggregate);

// The report over the stored aggregates. InvalidArgument naming the field for a bad day, a
// range backwards or longer than kMaxReportDays, service without provider; the store's errors
// (DataLoss for an aggregate that does not parse).
absl::StatusOr<v1::ReportResponse> RunReport(KvStore& store, const v1::ReportRequest& request,
                                             std::string_view zone_name);

}  // namespace chasqui::audit
