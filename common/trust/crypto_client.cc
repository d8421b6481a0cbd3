#include "common/trust/crypto_client.h"

#include <optional>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "common/core/log.h"
#include "common/core/status.h"
#include "common/trust/requests.h"
#include "fmt/format.h"

namespace chasqui {
namespace {

template <class Reply>
absl::StatusOr<Reply> ParseReply(const absl::StatusOr<std::string>& raw, std::string_view what) {
  if (!raw.ok()) return raw.status();
  Reply reply;
  if (!reply.ParseFromString(*raw)) {
    return absl::InvalidArgumentError(fmt::format("{}: the answer does not parse", what));
  }
  CHASQUI_RETURN_IF_ERROR(FromControlStatus(reply.status()));
  return reply;
}

}  // namespace

absl::StatusOr<std::unique_ptr<CryptoClient>> CryptoClient::Create(Bus* bus,
                                                                   std::string inbox_prefix,
                                                                   absl::Duration timeout) {
  std::unique_ptr<CryptoClient> c(new CryptoClient());
  CHASQUI_ASSIGN_OR_RETURN(c->mux_, RequestMux::Create(bus, std::move(inbox_prefix)));
  c->timeout_ = timeout;
  return c;
}

absl::StatusOr<std::string> CryptoClient::Request(std::string_view subject,
                                                std::string_view data) {
  return mux_->RequestAndWait(subject, data, timeout_, "crypto service");
}

absl::StatusOr<v1::EnrolmentReply> CryptoClient::Enrol(const v1::EnrolmentRequest& request) {
  return ParseReply<v1::EnrolmentReply>(Request(kEnrolSubject, request.SerializeAsString()),
                                        kEnrolSubject);
}

absl::StatusOr<v1::DirectoryReply> CryptoClient::Directory(const v1::DirectoryRequest& request) {
  return ParseReply<v1::DirectoryReply>(Request(kDirectorySubject, request.SerializeAsString()),
                                        kDirectorySubject);
}

absl::StatusOr<v1::RevokeReply> CryptoClient::Revoke(const v1::ControlRequest& request) {
  return ParseReply<v1::RevokeReply>(Request(kRevokeSubject, request.SerializeAsString()),
                                     kRevokeSubject);
}

absl::StatusOr<v1::SignReply> CryptoClient::Sign(const v1::ControlRequest& request) {
  return ParseReply<v1::SignReply>(Request(kSignSubject, request.SerializeAsString()),
                                   kSignSubject);
}

absl::Status CatchUpRevocations(CryptoClient& client, CertificateDirectory& directory,
                                const Clock& clock) {
  v1::DirectoryRequest req;
  req.set_env(directory.env());
  req.set_revocation_list(true);
  CHASQUI_ASSIGN_OR_RETURN(v1::DirectoryReply reply, client.Directory(req));
  return directory.ApplyRevocationList(reply.revocation_list().SerializeAsString(),
                                       clock.NowUnixMillis());
}

absl::StatusOr<std::unique_ptr<Subscription>> WatchRevocations(Bus* bus,
                                                               CertificateDirectory* directory,
                                                               const Clock& clock) {
  const Clock* c = &clock;
  return bus->Subscribe(kRevokedEventSubject, [directory, c](const BusMessage& msg) {
    absl::Status s = directory->ApplyRevocationList(msg.data, c->NowUnixMillis());
    if (absl::IsPermissionDenied(s)) return;  // another environment's list
    if (!s.ok()) {
      CHQ_LOG_WARN("revocation list event refused: {}", MessageOf(s));
    }
  });
}

}  // namespace chasqui
