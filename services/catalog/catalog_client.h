#pragma once
// Asking the catalog over NATS (chq.ctl.catalog.<verb>): people's changes (the `chasqui` CLI,
// tests), snapshots and events (CatalogFollower). Replies are returned as received; whatever
// is signed in them is for the caller to verify (VerifyCatalogEvent / VerifyCatalogSnapshot).

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "chasqui/v1/catalog.pb.h"
#include "common/bus/bus.h"
#include "common/bus/request_mux.h"
#include "common/crypto/sodium.h"

namespace chasqui {

inline constexpr char kCatalogSubjectPrefix[] = "chq.ctl.catalog.";
inline constexpr char kCatalogSnapshotSubject[] = "chq.ctl.catalog.snapshot";
inline constexpr char kCatalogEventsSubject[] = "chq.ctl.catalog.events";
inline constexpr char kCatalogChangedSubject[] = "chq.evt.catalog.changed";

// Fills env, signer_serial, sent_at_ms and a fresh nonce and signs the body under
// ControlTag(env) with `key`, the key of person certificate `signer_serial`: what a person's
// `chasqui` command sends on chq.ctl.catalog.<verb>.
v1::ControlRequest MakeCatalogRequest(v1::CatalogControlBody body, std::string_view env,
                                      uint64_t signer_serial, const SigningKey& key,
                                      int64_t now_ms);

class CatalogClient {
 public:
  // Subscribes `<inbox_prefix>.*` on `bus` (which must outlive the client).
  static absl::StatusOr<std::unique_ptr<CatalogClient>> Create(
      Bus* bus, std::string inbox_prefix, absl::Duration timeout = absl::Seconds(5));

  // The catalog's refusal as the status (its code and message); DeadlineExceeded if no answer
  // came in time, Unavailable if no catalog listens, InvalidArgument if the answer does not
  // parse. Thread-safe.
  absl::StatusOr<v1::CatalogReply> Change(std::string_view verb,
                                          const v1::ControlRequest& request);
  absl::StatusOr<v1::SignedCatalogMessage> Snapshot();
  absl::StatusOr<v1::EventsReply> Events(uint64_t after_version, uint32_t limit = 0);
  // The raw answer to any payload (for tests of malformed requests).
  absl::StatusOr<std::string> Request(std::string_view subject, std::string_view data);

 private:
  CatalogClient() = default;
  std::unique_ptr<RequestMux> mux_;
  absl::Duration timeout_;
};

}  // namespace chasqui
