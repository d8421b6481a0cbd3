#pragma once
// Shared by the crypto service's tests: a requester with fresh keys, and enrolment and
// control requests built the way a gateway or the `chasqui` CLI builds them.

#include <string>

#include "chasqui/v1/crypto.pb.h"
#include "common/crypto/sodium.h"
#include "common/trust/certificate.h"
#include "common/trust/requests.h"

namespace chasqui::testing {

struct Requester {
  SigningKey sign = SigningKey::Generate();
  KxKey kx = KxKey::Generate();
  uint64_t serial = 0;  // once enrolled
};

inline v1::EnrolmentRequestBody EnrolmentBody(const Requester& who, const std::string& token,
                                              const std::string& entity, v1::CertificateRole role,
                                              const std::string& env, int64_t now_ms,
                                              std::string subject = "") {
  v1::EnrolmentRequestBody b;
  b.set_subject(subject.empty() ? entity : subject);
  b.set_role(role);
  b.set_entity(entity);
  b.set_env(env);
  b.set_sign_pk(std::string(AsView(who.sign.public_key())));
  if (KindOfRole(role) != v1::CERTIFICATE_KIND_PERSON) {
    b.set_kx_pk(std::string(AsView(who.kx.public_key())));
  }
  b.set_token(token);
  b.set_sent_at_ms(now_ms);
  return b;
}

inline v1::ControlRequest RevokeRequest(const Requester& signer, const std::string& env,
                                        uint64_t serial, int64_t now_ms) {
  v1::ControlBody body;
  body.mutable_revoke()->add_serials(serial);
  body.mutable_revoke()->set_reason(v1::REVOCATION_REASON_KEY_COMPROMISE);
  return MakeControlRequest(body, env, signer.serial, signer.sign, now_ms);
}

inline v1::ControlRequest SignRequest(const Requester& signer, const std::string& env,
                                      v1::StatementKind kind, const std::string& digest,
                                      int64_t now_ms) {
  v1::ControlBody body;
  body.mutable_sign()->set_kind(kind);
  body.mutable_sign()->set_digest(digest);
  return MakeControlRequest(body, env, signer.serial, signer.sign, now_ms);
}

}  // namespace chasqui::testing
