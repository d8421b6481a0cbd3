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

// Signs serialized control-body bytes under ControlTag(env) with `key`.
v1::ControlRequest SignControlBody(std::string body_bytes, std::string_view env,
                                   const SigningKey& key);

// Fills env, signer_serial, sent_at_ms and a fresh nonce in `body` and signs it under
// ControlTag(env) with `key`, the key of certificate `signer_serial`. `Body` is any service's
// control body (crypto's ControlBody, CatalogControlBody, QuotaControlBody): fields 1-4 are
// the same in all of them.
template <class Body>
v1::ControlRequest MakeControlRequest(Body body, std::string_view env, uint64_t signer_serial,
                                      const SigningKey& key, int64_t now_ms) {
  body.set_env(std::string(env));
  body.set_signer_serial(signer_serial);
  body.set_sent_at_ms(now_ms);
  body.set_nonce(RandomString(16));
  return SignControlBody(body.SerializeAsString(), env, key);
}

}  // namespace chasqui
