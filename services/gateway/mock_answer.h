#pragma once
// Mock mode (issue 8, "For an entity's developer"): `--serve SERVICE=mock`
// makes a provider's gateway in the test environment answer from the example in
// the service's response schema in the catalog, so consumers can integrate
// before the real system exists. Never in prod.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "services/catalog/catalog_snapshot.h"

namespace chasqui {

// The upstream word of `--serve SERVICE=mock`.
inline constexpr std::string_view kMockUpstream = "mock";

// InvalidArgument naming the services when `mock_services` is not empty and env
// is not "test".
absl::Status CheckMockAllowed(const std::vector<std::string>& mock_services, std::string_view env);

// The answer a mock gives from a response schema (JSON Schema text): the first
// of its top-level `examples` (JSON Schema) or else its `example` (OpenAPI), as
// compact JSON. PROVIDER_ERROR (a ChasquiError) naming provider/service when
// the schema is not JSON or has no example.
absl::StatusOr<std::string> MockAnswer(std::string_view provider, std::string_view service,
                                       std::string_view response_schema);

// One mocked service's answers, from the snapshot's current entry (re-read when
// the catalog's version changes, so a provider who publishes a new schema is
// answered from it). PROVIDER_ERROR when the catalog has no such service or
// MockAnswer refuses. Thread-safe.
class MockService {
 public:
  MockService(const CatalogSnapshot& snapshot, std::string provider, std::string service);
  absl::StatusOr<std::string> Answer();

 private:
  const CatalogSnapshot& snapshot_;
  const std::string provider_;
  const std::string service_;
  absl::Mutex mu_;
  bool cached_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  absl::StatusOr<std::string> answer_ ABSL_GUARDED_BY(mu_);
};

}  // namespace chasqui
