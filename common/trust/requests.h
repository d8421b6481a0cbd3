#pragma once
// Building the crypto service's requests (chq.ctl.crypto.<verb>) and reading its replies'
// status. Requesters (the `chasqui` CLI, gateways, services, tests) build here what the
// service verifies; the service's own checks live in services/crypto.

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "chasqui/v1/crypto.pb.h"
#include "common/crypto/sodium.h"

namespace chasqui {

inline constexpr char kEnrolSubject[] = "chq.ctl.crypto.enrol";
inline constexpr char kDirectorySubject[] = "chq.ctl.crypto.directory";
inline constexpr char kRevokeSubject[] = "chq.ctl.crypto.revoke";
inline constexpr char kSignSubject[] = "chq.ctl.crypto.sign";
inline constexpr char kRevokedEventSubject[] = "chq.evt.crypto.revoked";

v1::ControlStatus ToControlStatus(const absl::Status& status);
// An unknown code becomes Unknown; the message is kept.
absl::Status FromControlStatus(const v1::ControlStatus& status);

// Signs `body` with `key` (whose public half must be body.sign_pk) under
// EnrolmentTag(body.env()).
v1::EnrolmentRequest MakeEnrolmentRequest(const v1::EnrolmentRequestBody& body,
                                          const SigningKey& key);

// Fills env, signer_serial, sent_at_ms and a fresh nonce in `body` and signs it under
// ControlTag(env) with `key`, the key of certificate `signer_serial`.
v1::ControlRequest MakeControlRequest(v1::ControlBody body, std::string_view env,
                                      uint64_t signer_serial, const SigningKey& key,
                                      int64_t now_ms);

}  // namespace chasqui
