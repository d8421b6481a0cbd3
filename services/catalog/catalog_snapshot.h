#pragma once
// A router's or gateway's in-memory copy of the catalog for one environment (DESIGN.md, "One
// request", step 2: grant, then end user). Built from a verified snapshot and kept current by
// applying verified events in version order; CatalogFollower does both from the bus.
//
// Thread-safe. Readers take the current immutable view (a shared_ptr) under a short lock and
// never see half an update; writers build the next view and swap it in, serialised among
// themselves. Catalogs are small and change rarely, so a write copies the view.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "chasqui/v1/catalog.pb.h"

namespace chasqui {

// What a request that passed the catalog's checks may rely on.
struct CatalogAccess {
  std::string annex_id;          // the grant's annex, for the header's annex_id
  std::string service_version;
  v1::Classification classification = v1::CLASSIFICATION_UNSPECIFIED;
  bool sealing_required = false;  // personal data or restricted: the body must be sealed
  v1::Quota quota;
  bool deprecated = false;
};

class CatalogSnapshot {
 public:
  explicit CatalogSnapshot(std::string env);

  // Replaces everything with `snapshot` (verified by the caller). FailedPrecondition if it is
  // older than the version held (a stale answer never rolls the copy back).
  absl::Status Reset(const v1::CatalogSnapshot& snapshot);

  // Applies a verified event. OK and unchanged for a version already held (a duplicate);
  // OutOfRange "needs catch-up" when the event is not the next version (a gap: fetch the
  // missing events or a snapshot, then apply again); InvalidArgument for an empty record.
  absl::Status Apply(const v1::CatalogEvent& event);

  // The router's catalog checks, in DESIGN.md's order, as Chasqui codes (ChasquiError):
  //   NOT_FOUND ......... no published (or deprecated) service provider/service
  //   FORBIDDEN ......... no active grant consumer -> service in this env (none, pending,
  //                       rejected, suspended or revoked; the message says which)
  //   END_USER_UNKNOWN .. end_user is not a registered, enabled end user of the consumer
  // Costs one short lock (taking the view) and three hash lookups on small string keys.
  absl::StatusOr<CatalogAccess> Check(std::string_view consumer, std::string_view provider,
                                      std::string_view service, std::string_view end_user) const;

  uint64_t version() const;
  bool loaded() const;  // a snapshot or an event has been applied
  const std::string& env() const { return env_; }
  // The full records, as of version() (for `chasqui` show commands and tests).
  v1::CatalogSnapshot ToProto() const;

 private:
  struct View;
  std::shared_ptr<const View> Current() const;
  static void Index(View& view, const v1::CatalogRecord& record, std::string_view env);

  const std::string env_;
  mutable absl::Mutex mu_;
  absl::Mutex write_mu_;
  std::shared_ptr<const View> view_ ABSL_GUARDED_BY(mu_);
};

}  // namespace chasqui
