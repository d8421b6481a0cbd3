#pragma once
// Names shared by the quota service and the routers' QuotaEnforcer: grant and service keys,
// the NATS subjects, and the small conversions between them.

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "chasqui/v1/quota.pb.h"

namespace chasqui {

inline constexpr char kQuotaLeaseSubject[] = "chq.ctl.quota.lease";
inline constexpr char kQuotaReturnSubject[] = "chq.ctl.quota.return";
inline constexpr char kQuotaUsageSubject[] = "chq.ctl.quota.usage";
inline constexpr char kQuotaSetPolicySubject[] = "chq.ctl.quota.set_policy";
inline constexpr char kQuotaRequestSubject[] = "chq.ctl.quota.request";
inline constexpr char kQuotaDecideSubject[] = "chq.ctl.quota.decide";
inline constexpr char kQuotaPolicyEventSubject[] = "chq.evt.quota.policy";

// "<env>/<consumer>/<provider>/<service>": how a grant is named in maps, store keys and logs.
// The parts are subject tokens, so '/' never occurs inside one.
std::string GrantKeyString(std::string_view env, std::string_view consumer,
                           std::string_view provider, std::string_view service);
std::string GrantKeyString(const v1::GrantKey& key);
// "<env>/<provider>/<service>".
std::string ServiceKeyString(std::string_view env, std::string_view provider,
                             std::string_view service);
std::string ServiceKeyString(const v1::ServiceKey& key);
// The provider service a grant draws on.
v1::ServiceKey ServiceOf(const v1::GrantKey& key);

// InvalidArgument naming the field (`what`.env, .consumer, ...) if a part is not a valid
// name or env.
absl::Status ValidateGrantKey(const v1::GrantKey& key, std::string_view what = "grant");
absl::Status ValidateServiceKey(const v1::ServiceKey& key, std::string_view what = "service");
// Parses GrantKeyString's form. InvalidArgument if it has not four valid parts.
absl::StatusOr<v1::GrantKey> ParseGrantKey(std::string_view text);

// "rate", "day", "month", "provider_capacity", "no_lease", "unspecified": metric labels.
std::string_view QuotaLimitName(v1::QuotaLimit limit);

}  // namespace chasqui
