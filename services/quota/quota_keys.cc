#include "services/quota/quota_keys.h"

#include <vector>

#include "absl/strings/str_split.h"
#include "common/core/names.h"
#include "common/core/status.h"
#include "fmt/format.h"

namespace chasqui {

std::string GrantKeyString(std::string_view env, std::string_view consumer,
                           std::string_view provider, std::string_view service) {
  std::string out;
  out.reserve(env.size() + consumer.size() + provider.size() + service.size() + 3);
  out.append(env).append("/").append(consumer).append("/").append(provider).append("/").append(
      service);
  return out;
}

std::string GrantKeyString(const v1::GrantKey& key) {
  return GrantKeyString(key.env(), key.consumer(), key.provider(), key.service());
}

std::string ServiceKeyString(std::string_view env, std::string_view provider,
                             std::string_view service) {
  std::string out;
  out.append(env).append("/").append(provider).append("/").append(service);
  return out;
}

std::string ServiceKeyString(const v1::ServiceKey& key) {
  return ServiceKeyString(key.env(), key.provider(), key.service());
}

v1::ServiceKey ServiceOf(const v1::GrantKey& key) {
  v1::ServiceKey s;
  s.set_env(key.env());
  s.set_provider(key.provider());
  s.set_service(key.service());
  return s;
}

absl::Status ValidateGrantKey(const v1::GrantKey& key, std::string_view what) {
  if (!IsValidEnv(key.env())) {
    return absl::InvalidArgumentError(fmt::format("{}.env \"{}\" is not test or prod", what,
                                                  Printable(key.env())));
  }
  CHASQUI_RETURN_IF_ERROR(ValidateName(fmt::format("{}.consumer", what), key.consumer()));
  CHASQUI_RETURN_IF_ERROR(ValidateName(fmt::format("{}.provider", what), key.provider()));
  CHASQUI_RETURN_IF_ERROR(ValidateName(fmt::format("{}.service", what), key.service()));
  return absl::OkStatus();
}

absl::Status ValidateServiceKey(const v1::ServiceKey& key, std::string_view what) {
  if (!IsValidEnv(key.env())) {
    return absl::InvalidArgumentError(fmt::format("{}.env \"{}\" is not test or prod", what,
                                                  Printable(key.env())));
  }
  CHASQUI_RETURN_IF_ERROR(ValidateName(fmt::format("{}.provider", what), key.provider()));
  CHASQUI_RETURN_IF_ERROR(ValidateName(fmt::format("{}.service", what), key.service()));
  return absl::OkStatus();
}

absl::StatusOr<v1::GrantKey> ParseGrantKey(std::string_view text) {
  std::vector<std::string> parts = absl::StrSplit(ToAbsl(text), '/');
  if (parts.size() != 4) {
    return absl::InvalidArgumentError(fmt::format(
        "grant key \"{}\" is not <env>/<consumer>/<provider>/<service>", Printable(text)));
  }
  v1::GrantKey key;
  key.set_env(parts[0]);
  key.set_consumer(parts[1]);
  key.set_provider(parts[2]);
  key.set_service(parts[3]);
  CHASQUI_RETURN_IF_ERROR(ValidateGrantKey(key));
  return key;
}

std::string_view QuotaLimitName(v1::QuotaLimit limit) {
  switch (limit) {
    case v1::QUOTA_LIMIT_RATE:
      return "rate";
    case v1::QUOTA_LIMIT_DAY:
      return "day";
    case v1::QUOTA_LIMIT_MONTH:
      return "month";
    case v1::QUOTA_LIMIT_PROVIDER_CAPACITY:
      return "provider_capacity";
    case v1::QUOTA_LIMIT_NO_LEASE:
      return "no_lease";
    default:
      return "unspecified";
  }
}

}  // namespace chasqui
