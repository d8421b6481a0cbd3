#include "services/quota/quota_control.h"

#include <utility>

#include "common/core/log.h"
#include "common/core/names.h"
#include "common/core/status.h"
#include "common/crypto/sodium.h"
#include "common/trust/control_check.h"
#include "common/trust/requests.h"
#include "common/trust/signed_message.h"
#include "fmt/format.h"
#include "services/quota/quota_keys.h"

namespace chasqui {
namespace {

std::string_view ActionVerb(const v1::QuotaControlBody& body) {
  switch (body.action_case()) {
    case v1::QuotaControlBody::kSetPolicy:
      return "set_policy";
    case v1::QuotaControlBody::kRequest:
      return "request";
    case v1::QuotaControlBody::kDecide:
      return "decide";
    default:
      return "none";
  }
}

bool IsPerson(const VerifiedCertificate& c, v1::CertificateRole role) {
  return c.kind == v1::CERTIFICATE_KIND_PERSON && c.role == role;
}

}  // namespace

v1::ControlRequest MakeQuotaControlRequest(v1::QuotaControlBody body, std::string_view env,
                                           uint64_t signer_serial, const SigningKey& key,
                                           int64_t now_ms) {
  return MakeControlRequest(std::move(body), env, signer_serial, key, now_ms);
}

absl::StatusOr<QuotaControl::Checked> QuotaControl::Check(std::string_view verb,
                                                          std::string_view request) {
  Checked c;
  CHASQUI_ASSIGN_OR_RETURN(v1::ControlRequest req,
                           ParseControlRequest(request, c.body, verb, "QuotaControlBody"));
  const v1::QuotaControlBody& b = c.body;
  if (b.nonce().size() != 16) {
    return absl::InvalidArgumentError(fmt::format("{}: nonce must be 16 bytes", verb));
  }
  if (signers_ == nullptr) {
    return absl::FailedPreconditionError(fmt::format(
        "{}: this quota service verifies no signed requests (started without --anchors)", verb));
  }
  const int64_t now = clock_.NowUnixMillis();
  CHASQUI_ASSIGN_OR_RETURN(c.signer,
                           VerifyControlSigner(req, ControlFieldsOf(b), *signers_, now,
                                               options_.control_window_ms, verb));
  CHASQUI_RETURN_IF_ERROR(ledger_->RememberNonce(c.signer->serial, b.nonce(),
                                                 now + 2 * options_.control_window_ms));
  if (ActionVerb(b) != verb) {
    return absl::InvalidArgumentError(fmt::format(
        "{}: the request's action is {}, not {}", verb, ActionVerb(b), verb));
  }
  return c;
}

absl::StatusOr<v1::PolicyReply> QuotaControl::SetPolicy(std::string_view request) {
  CHASQUI_ASSIGN_OR_RETURN(Checked c, Check("set_policy", request));
  if (!IsPerson(*c.signer, v1::CERTIFICATE_ROLE_OPERATOR)) {
    return absl::PermissionDeniedError(fmt::format(
        "set_policy: signer {} has role {}; needs an operator", c.signer->serial,
        CertificateRoleName(c.signer->role)));
  }
  const v1::SetPolicyAction& a = c.body.set_policy();
  if (!a.has_policy() && !a.has_capacity()) {
    return absl::InvalidArgumentError("set_policy: names neither a policy nor a capacity");
  }
  const std::string by = fmt::format("operator:{}", c.signer->serial);
  v1::PolicyReply reply;
  if (a.has_policy()) {
    CHASQUI_ASSIGN_OR_RETURN(*reply.mutable_policy(), ledger_->SetPolicy(a.policy(), by));
  }
  if (a.has_capacity()) {
    CHASQUI_ASSIGN_OR_RETURN(*reply.mutable_capacity(), ledger_->SetCapacity(a.capacity(), by));
  }
  return reply;
}

absl::StatusOr<v1::QuotaRequestRecord> QuotaControl::Request(std::string_view request) {
  CHASQUI_ASSIGN_OR_RETURN(Checked c, Check("request", request));
  const v1::GrantKey& grant = c.body.request().wanted().grant();
  CHASQUI_RETURN_IF_ERROR(ValidateGrantKey(grant, "request.wanted.grant"));
  if (!IsPerson(*c.signer, v1::CERTIFICATE_ROLE_MANAGER) || c.signer->entity != grant.consumer()) {
    return absl::PermissionDeniedError(fmt::format(
        "request: signer {} is a {} of {}; needs a manager of {}", c.signer->serial,
        CertificateRoleName(c.signer->role), c.signer->entity, grant.consumer()));
  }
  return ledger_->AddRequest(c.body.request(), c.signer->serial, std::string(request));
}

absl::StatusOr<v1::QuotaRequestRecord> QuotaControl::Decide(std::string_view request) {
  CHASQUI_ASSIGN_OR_RETURN(Checked c, Check("decide", request));
  CHASQUI_ASSIGN_OR_RETURN(v1::QuotaRequestRecord r,
                           ledger_->GetRequest(c.body.decide().request_id()));
  const std::string& provider = r.request().wanted().grant().provider();
  const bool manager = IsPerson(*c.signer, v1::CERTIFICATE_ROLE_MANAGER) &&
                       c.signer->entity == provider;
  if (!manager && !IsPerson(*c.signer, v1::CERTIFICATE_ROLE_OPERATOR)) {
    return absl::PermissionDeniedError(fmt::format(
        "decide: signer {} is a {} of {}; needs a manager of {}", c.signer->serial,
        CertificateRoleName(c.signer->role), c.signer->entity, provider));
  }
  return ledger_->Decide(c.body.decide(), c.signer->serial, std::string(request));
}

}  // namespace chasqui
