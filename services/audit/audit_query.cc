#include "services/audit/audit_query.h"

#include <algorithm>
#include <limits>
#include <string>

#include "common/core/status.h"
#include "fmt/format.h"
#include "services/audit/audit_schema.h"

namespace chasqui::audit {
namespace {

bool Matches(const v1::ChainEntry& entry, const v1::QueryRequest& q) {
  switch (q.kind()) {
    case v1::ENTRY_KIND_RECORD:
      if (!entry.has_record()) return false;
      break;
    case v1::ENTRY_KIND_REFUSAL_COUNT:
      if (!entry.has_refusal_count()) return false;
      break;
    case v1::ENTRY_KIND_CERTIFICATE:
      if (!entry.has_certificate()) return false;
      break;
    default:
      break;
  }
  if (entry.has_certificate()) {
    // A certificate issued belongs to no exchange: only unfiltered (operator) queries see it.
    return q.consumer().empty() && q.provider().empty() && q.service().empty() &&
           q.end_user().empty() && !q.has_outcome();
  }
  if (entry.has_refusal_count()) {
    const v1::RefusalCount& c = entry.refusal_count();
    if (!q.provider().empty() || !q.service().empty() || !q.end_user().empty()) return false;
    if (!q.consumer().empty() && c.consumer() != q.consumer()) return false;
    if (q.has_outcome() && c.reason() != q.outcome()) return false;
    return true;
  }
  const v1::AuditRecord& r = entry.record();
  if (!q.consumer().empty() && r.consumer() != q.consumer()) return false;
  if (!q.provider().empty() && r.provider() != q.provider()) return false;
  if (!q.service().empty() && r.service() != q.service()) return false;
  if (!q.end_user().empty() && r.end_user() != q.end_user()) return false;
  if (q.has_outcome() && r.outcome() != q.outcome()) return false;
  return true;
}

}  // namespace

absl::StatusOr<v1::QueryResponse> RunQuery(KvStore& store, const v1::QueryRequest& q) {
  if (!q.service().empty() && q.provider().empty()) {
    return absl::InvalidArgumentError("query: service needs provider");
  }
  if (!q.end_user().empty() && q.consumer().empty()) {
    return absl::InvalidArgumentError("query: end_user needs consumer");
  }
  if (q.to_ms() != 0 && q.to_ms() < q.from_ms()) {
    return absl::InvalidArgumentError("query: to_ms is before from_ms");
  }
  const uint32_t page_size =
      q.page_size() == 0 ? kDefaultPageSize : std::min(q.page_size(), kMaxPageSize);

  // The most selective index the request allows; the other filters are checked per record.
  std::string prefix;
  if (!q.end_user().empty()) {
    prefix = IndexPrefix(IndexField::kEndUser, {q.consumer(), q.end_user()});
  } else if (!q.service().empty()) {
    prefix = IndexPrefix(IndexField::kService, {q.provider(), q.service()});
  } else if (!q.consumer().empty()) {
    prefix = IndexPrefix(IndexField::kConsumer, {q.consumer()});
  } else if (!q.provider().empty()) {
    prefix = IndexPrefix(IndexField::kProvider, {q.provider()});
  } else if (q.kind() == v1::ENTRY_KIND_CERTIFICATE) {
    prefix = IndexPrefix(IndexField::kKind, {"certificate"});
  } else if (q.has_outcome()) {
    prefix = IndexPrefix(IndexField::kOutcome, {BigEndian64(static_cast<uint64_t>(q.outcome()))});
  } else {
    prefix = IndexPrefix(IndexField::kTime, {});
  }
  const uint64_t from = static_cast<uint64_t>(std::max<int64_t>(0, q.from_ms()));
  const uint64_t to = q.to_ms() == 0 ? std::numeric_limits<uint64_t>::max()
                                     : static_cast<uint64_t>(std::max<int64_t>(0, q.to_ms()));
  std::string start = prefix + BigEndian64(from);
  const std::string end = prefix + BigEndian64(to);
  if (!q.page_token().empty()) {
    if (q.page_token().size() != prefix.size() + 16 ||
        q.page_token().compare(0, prefix.size(), prefix) != 0) {
      return absl::InvalidArgumentError("query: page_token belongs to another query");
    }
    // The key after the token's: index keys have a fixed length, so appending a byte is next.
    start = std::max(start, q.page_token() + std::string(1, '\0'));
  }

  v1::QueryResponse response;
  absl::Status read_error;
  uint64_t scanned = 0;
  size_t bytes = 0;
  std::string last_key;
  bool more = false;
  CHASQUI_RETURN_IF_ERROR(
      store.Scan(start, end, [&](std::string_view key, std::string_view) {
        if (key.size() != prefix.size() + 16) return true;  // not this index's shape
        if (static_cast<uint32_t>(response.records_size()) >= page_size ||
            scanned >= kMaxScannedPerPage || bytes >= kMaxPageBytes) {
          more = true;
          return false;
        }
        ++scanned;
        last_key = std::string(key);
        const uint64_t seq = FromBigEndian64(key.substr(key.size() - 8));
        auto value = store.Get(RecordKey(seq));
        if (!value.ok()) {
          // An index entry without its record is tampering; `verify` names it.
          if (absl::IsNotFound(value.status())) return true;
          read_error = value.status();
          return false;
        }
        v1::StoredRecord rec;
        v1::ChainEntry entry;
        if (!rec.ParseFromString(*value) || !entry.ParseFromString(rec.entry())) return true;
        if (Matches(entry, q)) {
          bytes += value->size() + 8;
          *response.add_records() = std::move(rec);
        }
        return true;
      }));
  CHASQUI_RETURN_IF_ERROR(read_error);
  if (more) response.set_next_page_token(last_key);
  return response;
}

}  // namespace chasqui::audit
