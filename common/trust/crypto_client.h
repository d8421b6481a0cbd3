#pragma once
// Asking the crypto service over NATS (chq.ctl.crypto.<verb>) and following its revocation
// lists. Replies are returned as received; everything signed in them is for the caller to
// verify (CertificateDirectory does), never trusted on the service's word.

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "chasqui/v1/crypto.pb.h"
#include "common/bus/bus.h"
#include "common/bus/request_mux.h"
#include "common/core/clock.h"
#include "common/trust/directory.h"

namespace chasqui {

class CryptoClient {
 public:
  // Subscribes `<inbox_prefix>.*` on `bus` (which must outlive the client).
  static absl::StatusOr<std::unique_ptr<CryptoClient>> Create(
      Bus* bus, std::string inbox_prefix, absl::Duration timeout = absl::Seconds(5));

  // Each returns the service's refusal as its status (the code and message it chose);
  // DeadlineExceeded if no answer came in time, Unavailable if no crypto service listens,
  // InvalidArgument if the answer does not parse. Thread-safe.
  absl::StatusOr<v1::EnrolmentReply> Enrol(const v1::EnrolmentRequest& request);
  absl::StatusOr<v1::DirectoryReply> Directory(const v1::DirectoryRequest& request);
  absl::StatusOr<v1::RevokeReply> Revoke(const v1::ControlRequest& request);
  absl::StatusOr<v1::SignReply> Sign(const v1::ControlRequest& request);
  // The raw answer to any payload (for tests of malformed requests).
  absl::StatusOr<std::string> Request(std::string_view subject, std::string_view data);

 private:
  CryptoClient() = default;
  std::unique_ptr<RequestMux> mux_;
  absl::Duration timeout_;
};

// Fetches the current revocation list for the directory's env and applies it: how a router
// or gateway that missed events catches up (at start, on reconnect, before valid_until).
absl::Status CatchUpRevocations(CryptoClient& client, CertificateDirectory& directory,
                                const Clock& clock);

// Applies every list published on chq.evt.crypto.revoked for the directory's env (lists of
// other envs are ignored; refused ones are logged, one line each). `directory` and `clock`
// must outlive the subscription.
absl::StatusOr<std::unique_ptr<Subscription>> WatchRevocations(Bus* bus,
                                                               CertificateDirectory* directory,
                                                               const Clock& clock);

}  // namespace chasqui
