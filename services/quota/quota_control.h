#pragma once
// The quota service's signed verbs (chq.ctl.quota.{set_policy,request,decide}): a
// ControlRequest whose body is a QuotaControlBody, signed by a person under
// `chasqui/v1/control/<env>`, checked against that person's certificate and role:
//   set_policy ... an operator
//   request ...... a manager of the grant's consumer
//   decide ....... a manager of the grant's provider (or an operator)
// Accepted changes go to the QuotaLedger, which records them synced before the answer.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "chasqui/v1/quota.pb.h"
#include "common/core/clock.h"
#include "common/trust/certificate.h"
#include "common/trust/directory.h"
#include "services/quota/quota_ledger.h"

namespace chasqui {

// Where signers' certificates come from (common/trust/directory.h).
using QuotaSigners = CertificateLookup;
using DirectorySigners = DirectoryLookup;

// Requesters' side: fills env, signer_serial, sent_at_ms and a fresh nonce and signs the body
// with `key`, the key of certificate `signer_serial`.
v1::ControlRequest MakeQuotaControlRequest(v1::QuotaControlBody body, std::string_view env,
                                           uint64_t signer_serial, const SigningKey& key,
                                           int64_t now_ms);

struct QuotaControlOptions {
  int64_t control_window_ms = 30'000;  // sent_at within ±window; nonces kept twice as long
};

class QuotaControl {
 public:
  // `ledger`, `signers` and `clock` must outlive it.
  QuotaControl(QuotaControlOptions options, QuotaLedger* ledger, const QuotaSigners* signers,
               const Clock& clock)
      : options_(options), ledger_(ledger), signers_(signers), clock_(clock) {}

  // Refusals, in the order checked, each with its own code and a message naming the fault:
  //   not a ControlRequest / QuotaControlBody, 64-byte signature ... InvalidArgument
  //   nonce not 16 bytes ............................................ InvalidArgument
  //   no signers configured .......................................... FailedPrecondition
  //   signer certificate unknown / expired / bad signature .......... Unauthenticated
  //   signer certificate revoked ..................................... PermissionDenied
  //   revocation list missing or stale ............................... Unavailable
  //   sent_at outside the window ..................................... FailedPrecondition
  //   replayed (same signer and nonce) ............................... AlreadyExists
  //   action is not the verb's ....................................... InvalidArgument
  //   signer not the person the verb needs ........................... PermissionDenied
  //   then the ledger's own errors (bad limits, unknown request, already decided).
  absl::StatusOr<v1::PolicyReply> SetPolicy(std::string_view request);
  absl::StatusOr<v1::QuotaRequestRecord> Request(std::string_view request);
  absl::StatusOr<v1::QuotaRequestRecord> Decide(std::string_view request);

 private:
  struct Checked {
    v1::QuotaControlBody body;
    std::shared_ptr<const VerifiedCertificate> signer;
  };
  absl::StatusOr<Checked> Check(std::string_view verb, std::string_view request);

  const QuotaControlOptions options_;
  QuotaLedger* const ledger_;
  const QuotaSigners* const signers_;
  const Clock& clock_;
};

}  // namespace chasqui
