#include "services/gateway/mock_answer.h"

#include <utility>

#include "common/envelope/errors.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace chasqui {

absl::Status CheckMockAllowed(const std::vector<std::string>& mock_services, std::string_view env) {
  if (mock_services.empty() || env == "test") return absl::OkStatus();
  return absl::InvalidArgumentError(
      fmt::format("--serve {}={}: mock mode answers from the catalog's examples and is for the "
                  "test environment only; this gateway runs in {}: serve these services from their "
                  "real systems (--serve SERVICE=URL)",
                  fmt::join(mock_services, ","), kMockUpstream, env));
}

absl::StatusOr<std::string> MockAnswer(std::string_view provider, std::string_view service,
                                       std::string_view response_schema) {
  const nlohmann::json schema =
      nlohmann::json::parse(response_schema, nullptr, /*allow_exceptions=*/false);
  if (schema.is_discarded() || !schema.is_object()) {
    return ChasquiError(v1::PROVIDER_ERROR,
                        fmt::format("mock of {}/{}: the response schema in the catalog is not a "
                                    "JSON object, so it has no example to answer with",
                                    provider, service));
  }
  if (auto it = schema.find("examples"); it != schema.end() && it->is_array() && !it->empty()) {
    return it->front().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  if (auto it = schema.find("example"); it != schema.end()) {
    return it->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  return ChasquiError(
      v1::PROVIDER_ERROR,
      fmt::format("mock of {}/{}: the response schema in the catalog has no example (give it "
                  "\"examples\": [...] or \"example\"), so there is nothing to answer with",
                  provider, service));
}

MockService::MockService(const CatalogSnapshot& snapshot, std::string provider, std::string service)
    : snapshot_(snapshot),
      provider_(std::move(provider)),
      service_(std::move(service)),
      answer_(absl::UnknownError("not read yet")) {}

absl::StatusOr<std::string> MockService::Answer() {
  const uint64_t version = snapshot_.version();
  absl::MutexLock lock(&mu_);
  if (cached_ && version_ == version) return answer_;
  // Catalogs are small and change rarely: one copy per version.
  const v1::CatalogSnapshot catalog = snapshot_.ToProto();
  answer_ = ChasquiError(v1::PROVIDER_ERROR,
                         fmt::format("mock of {}/{}: the catalog (version {}) has no such service",
                                     provider_, service_, catalog.version()));
  for (const v1::Service& s : catalog.services()) {
    if (s.provider() == provider_ && s.spec().name() == service_) {
      answer_ = MockAnswer(provider_, service_, s.spec().response_schema());
      break;
    }
  }
  cached_ = true;
  version_ = catalog.version();
  return answer_;
}

}  // namespace chasqui
