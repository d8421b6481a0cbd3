#include "services/catalog/catalog_client.h"

#include <utility>

#include "absl/synchronization/mutex.h"
#include "common/core/status.h"
#include "common/trust/requests.h"
#include "common/trust/signed_message.h"
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

v1::ControlRequest MakeCatalogRequest(v1::CatalogControlBody body, std::string_view env,
                                      uint64_t signer_serial, const SigningKey& key,
                                      int64_t now_ms) {
  return MakeControlRequest(std::move(body), env, signer_serial, key, now_ms);
}

absl::StatusOr<std::unique_ptr<CatalogClient>> CatalogClient::Create(Bus* bus,
                                                                     std::string inbox_prefix,
                                                                     absl::Duration timeout) {
  std::unique_ptr<CatalogClient> c(new CatalogClient());
  CHASQUI_ASSIGN_OR_RETURN(c->mux_, RequestMux::Create(bus, std::move(inbox_prefix)));
  c->timeout_ = timeout;
  return c;
}

absl::StatusOr<std::string> CatalogClient::Request(std::string_view subject,
                                                 std::string_view data) {
  return mux_->RequestAndWait(subject, data, timeout_, "catalog service");
}

absl::StatusOr<v1::CatalogReply> CatalogClient::Change(std::string_view verb,
                                                       const v1::ControlRequest& request) {
  const std::string subject = kCatalogSubjectPrefix + std::string(verb);
  return ParseReply<v1::CatalogReply>(Request(subject, request.SerializeAsString()), subject);
}

absl::StatusOr<v1::SignedCatalogMessage> CatalogClient::Snapshot() {
  CHASQUI_ASSIGN_OR_RETURN(
      v1::SnapshotReply reply,
      ParseReply<v1::SnapshotReply>(
          Request(kCatalogSnapshotSubject, v1::SnapshotRequest().SerializeAsString()),
          kCatalogSnapshotSubject));
  return std::move(*reply.mutable_snapshot());
}

absl::StatusOr<v1::EventsReply> CatalogClient::Events(uint64_t after_version, uint32_t limit) {
  v1::EventsRequest req;
  req.set_after_version(after_version);
  req.set_limit(limit);
  return ParseReply<v1::EventsReply>(Request(kCatalogEventsSubject, req.SerializeAsString()),
                                     kCatalogEventsSubject);
}

}  // namespace chasqui
