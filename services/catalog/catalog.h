#pragma once
// The catalog's logic (DESIGN.md, "Actors"; issue 4): entities and their adhesion agreement,
// services and their lifecycle, access requests and grants per environment, end users, and
// the annexes the platform signs, on a KvStore (RocksDB) and an injected Clock. No bus here:
// CatalogService wires these calls to chq.ctl.catalog.<verb>.
//
// Every change is a ControlRequest (crypto.proto) whose body is a CatalogControlBody, signed
// by a person under `chasqui/v1/control/<env>` and checked against that person's certificate
// (CertificateLookup) and role:
//   register_entity, publish, reject_service, deprecate, retire, promote ... an operator
//   adhere ....................................... the entity's MAE, once
//   submit, approve, reject_access, suspend, revoke ... a manager of the provider
//   request_access, register_end_user, disable_end_user ... a manager of the consumer
// An entity whose MAE has not signed the NTA can neither publish nor consume.
//
// Each accepted change gets the next version (from 1, no gaps) and one signed CatalogEvent;
// the changed records, the event (in the change log, keyed by version), the new version and
// the request's nonce are written in one synced batch before the call returns, so what was
// acknowledged survives kill -9, and a replayed request stays refused after a restart.
//
// Store layout (be64 = 8-byte big-endian):
//   meta/version                                  be64 of the last version
//   ent/<id>                                      Entity
//   svc/<provider>/<service>                      Service
//   grant/<env>/<consumer>/<provider>/<service>   Grant
//   user/<consumer>/<user id>                     EndUser
//   annex/<id>                                    Annex
//   log/<be64 version>                            SignedCatalogMessage (a CatalogEvent)
//   nonce/<be64 serial><nonce>                    be64 of when it may be forgotten
//
// Thread-safe: changes are serialised on one mutex (they are rare); reads take it briefly.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "chasqui/v1/catalog.pb.h"
#include "common/core/clock.h"
#include "common/store/kv_store.h"
#include "services/catalog/catalog_signing.h"

namespace chasqui {

struct CatalogOptions {
  // Environments whose people's certificates are accepted (a control request names its env).
  std::vector<std::string> envs = {"test", "prod"};
  // BLAKE2b-256 of the NTA text in force; an adhesion must name exactly this hash.
  std::string nta_hash;
  // Control requests: sent_at within ±window, and no (signer, nonce) twice.
  int64_t control_window_ms = 30'000;
  uint32_t max_events_per_answer = 500;
};

// The change verbs, in the order of the proto's oneof (chq.ctl.catalog.<verb>).
const std::vector<std::string>& CatalogChangeVerbs();
// The verb of a body's action; "" if none is set.
std::string_view VerbOf(const v1::CatalogControlBody& body);

// What an accepted change produced.
struct CatalogChange {
  std::string verb;
  uint64_t version = 0;
  std::vector<v1::CatalogRecord> records;  // as they are after the change
  v1::SignedCatalogMessage event;          // to publish on chq.evt.catalog.changed
};

class Catalog {
 public:
  // Loads the state from `store`. DataLoss if the change log and meta/version disagree or a
  // record does not parse. `store`, `certificates`, `signer` and `clock` must outlive it.
  static absl::StatusOr<std::unique_ptr<Catalog>> Open(const CatalogOptions& options,
                                                       KvStore* store,
                                                       const CertificateLookup& certificates,
                                                       const CatalogSigner& signer,
                                                       const Clock& clock);

  // Applies the control request `request` received on chq.ctl.catalog.<verb>. Refusals, in
  // the order checked, each with its own code and a message naming what was wrong:
  //   not a ControlRequest / CatalogControlBody, 64-byte signature ... InvalidArgument
  //   environment not served; nonce not 16 bytes ...................... InvalidArgument
  //   signer certificate unknown, expired, or bad signature ........... Unauthenticated
  //   signer certificate revoked ....................................... PermissionDenied
  //   revocation list missing or stale ................................. Unavailable
  //   sent_at outside the window ....................................... FailedPrecondition
  //   replayed (same signer and nonce) ................................. AlreadyExists
  //   action is not `verb`'s ........................................... InvalidArgument
  //   signer is not a person, or not the role/entity the verb needs .... PermissionDenied
  //     (the message names the role needed: "needs a manager of segip")
  //   malformed fields (names, reasons, schemas) ....................... InvalidArgument
  //   no such entity / service / request ............................... NotFound
  //   no adhesion, wrong state, prod without an active test grant ...... FailedPrecondition
  //   already done (adhered, submitted, granted, registered) ........... AlreadyExists
  //   storage ........................................................... Unavailable/DataLoss
  absl::StatusOr<CatalogChange> Change(std::string_view verb, std::string_view request);

  // The current state, signed (kSnapshot).
  absl::StatusOr<v1::SignedCatalogMessage> Snapshot() const;
  // Signed events after `after_version`, at most min(limit, max_events_per_answer) (0: the
  // max). Never a gap: the answer starts at after_version + 1.
  absl::StatusOr<v1::EventsReply> Events(uint64_t after_version, uint32_t limit) const;

  uint64_t version() const;
  // Counts for the ops endpoint.
  struct Stats {
    uint64_t version = 0;
    size_t entities = 0, services = 0, grants = 0, end_users = 0, annexes = 0;
  };
  Stats GetStats() const;

 private:
  struct State {
    std::map<std::string, v1::Entity> entities;
    std::map<std::string, v1::Service> services;
    std::map<std::string, v1::Grant> grants;
    std::map<std::string, v1::EndUser> end_users;
    std::map<std::string, v1::Annex> annexes;
  };
  struct Context;  // one change in progress

  Catalog(const CatalogOptions& options, KvStore* store, const CertificateLookup& certificates,
          const CatalogSigner& signer, const Clock& clock);
  absl::Status Load() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckControl(std::string_view request, Context& ctx)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Dispatch(Context& ctx) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Status RegisterEntity(Context& ctx) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Adhere(Context& ctx) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Submit(Context& ctx) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status DecideService(Context& ctx) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RequestAccess(Context& ctx) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status DecideGrant(Context& ctx) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Promote(Context& ctx) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status EndUserChange(Context& ctx) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // PermissionDenied unless the signer is a person with `role` (of `entity` unless empty).
  absl::Status RequireRole(const Context& ctx, v1::CertificateRole role,
                           std::string_view entity) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // NotFound if `entity` is not registered; FailedPrecondition if its MAE has not adhered.
  absl::StatusOr<const v1::Entity*> RequireAdhesion(std::string_view entity,
                                                    std::string_view what) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A signed annex for a publication (grant == nullptr) or a grant, added to ctx's records.
  absl::StatusOr<std::string> MakeAnnex(Context& ctx, const v1::Service& service,
                                        const v1::Grant* grant) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Commit(Context& ctx, CatalogChange* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const CatalogOptions options_;
  KvStore* const store_;
  const CertificateLookup& certificates_;
  const CatalogSigner& signer_;
  const Clock& clock_;
  mutable absl::Mutex mu_;
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  State state_ ABSL_GUARDED_BY(mu_);
  // (be64 signer serial || nonce) -> when it may be forgotten.
  absl::flat_hash_map<std::string, int64_t> seen_ ABSL_GUARDED_BY(mu_);
};

// Store keys, shared with tests.
std::string EntityKey(std::string_view id);
std::string ServiceKey(std::string_view provider, std::string_view service);
std::string GrantKey(std::string_view env, std::string_view consumer, std::string_view provider,
                     std::string_view service);
std::string EndUserKey(std::string_view consumer, std::string_view user_id);
// InvalidArgument unless 1-128 characters of [A-Za-z0-9._@-].
absl::Status ValidateEndUserId(std::string_view user_id);

}  // namespace chasqui
