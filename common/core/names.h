#pragma once
// Entity ids and service names are lowercase [a-z0-9][a-z0-9_-]{0,62}: exactly one NATS
// subject token. Environments are "test" or "prod".

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace chasqui {

// InvalidArgument naming `what` (e.g. "consumer") and the grammar if `name` is not one token.
absl::Status ValidateName(std::string_view what, std::string_view name);
absl::Status ValidateEnv(std::string_view env);
bool IsValidName(std::string_view name);
bool IsValidEnv(std::string_view env);

// A bounded, escaped copy of untrusted text, safe to put in a log line or an error message.
std::string Printable(std::string_view untrusted, size_t max_len = 80);

}  // namespace chasqui
