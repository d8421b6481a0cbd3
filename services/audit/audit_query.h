#pragma once
// Queries over the audit chain by consumer, provider, service, end user, outcome and time
// range, paginated, through the secondary index keys (audit_schema.h). Used by the service's
// chq.ctl.audit.query handler and by `chasqui-audit query`, which reads the store directly.
//
// No access control here: the service narrows each signed request to what its signer may read
// first (audit_access.h); `chasqui-audit query --data` is an operator's, on the audit host.

#include "absl/status/statusor.h"
#include "chasqui/v1/audit.pb.h"
#include "common/store/kv_store.h"

namespace chasqui::audit {

inline constexpr uint32_t kDefaultPageSize = 100;
inline constexpr uint32_t kMaxPageSize = 1000;
// Index entries looked at per page before a page is returned short (with a token), so one
// query over a sparse filter cannot hold a reader for long.
inline constexpr uint64_t kMaxScannedPerPage = 100'000;
// A page stays under NATS's 1 MiB max_payload.
inline constexpr size_t kMaxPageBytes = 900 * 1024;

// InvalidArgument naming the field for an inconsistent request (service without provider,
// end user without consumer, a page token from another query); the store's errors (DataLoss
// when RocksDB reports corruption).
absl::StatusOr<v1::QueryResponse> RunQuery(KvStore& store, const v1::QueryRequest& request);

}  // namespace chasqui::audit
