#pragma once
// A process's in-memory copy of the certificates and the revocation list it relies on
// (DESIGN.md, "The parts": routers keep certificates and revocations in memory). Everything
// that enters is verified against the pinned anchors first; nothing is taken on the crypto
// service's word.
//
// Fail closed: once the revocation list is stale (now > valid_until), or before any list has
// arrived, Fresh() and Lookup() answer Unavailable so the caller refuses traffic with
// UNAVAILABLE until a newer list comes (pushed on chq.evt.crypto.revoked or fetched).
//
// Thread-safe. Readers take a snapshot (a shared_ptr) under a short lock; writers build a new
// snapshot and swap it in, so a lookup never sees half an update.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/envelope/identity.h"
#include "common/trust/anchors.h"
#include "common/trust/certificate.h"
#include "common/trust/revocation.h"

namespace chasqui {

class CertificateDirectory {
 public:
  CertificateDirectory(std::string env, TrustAnchors anchors);

  // Verifies and adds certificates (VerifyCertificate's errors, the first one returned; the
  // valid ones are added all the same). A certificate already held is left as it is.
  absl::Status AddCertificates(const std::vector<std::string>& certificates, int64_t now_ms);
  // Verifies a list and swaps it in. OK and unchanged for the version already held;
  // FailedPrecondition ("older") for a lower version; else VerifyRevocationList's errors.
  absl::Status ApplyRevocationList(std::string_view signed_list, int64_t now_ms);
  // TrustAnchors::ApplyEndorsement on the held anchors (a root rotation).
  absl::Status ApplyEndorsement(const v1::RootEndorsement& endorsement, int64_t now_ms);

  // OK while a revocation list is held and now <= its valid_until; else Unavailable saying why.
  absl::Status Fresh(int64_t now_ms) const;
  // The certificate with `serial`, usable now: Unavailable (list missing or stale), NotFound
  // (unknown serial), PermissionDenied (revoked, naming reason and time), FailedPrecondition
  // (expired, not yet valid, or its root no longer valid: after a rotation's overlap).
  absl::StatusOr<std::shared_ptr<const VerifiedCertificate>> Lookup(uint64_t serial,
                                                                    int64_t now_ms) const;
  // Every usable certificate of `entity` (gateways and people), for a gateway watching for
  // certificates in its name that it did not ask for. Unavailable if not Fresh.
  absl::StatusOr<std::vector<std::shared_ptr<const VerifiedCertificate>>> ByEntity(
      std::string_view entity, int64_t now_ms) const;
  // Today's TrustStore from the usable certificates (see BuildTrustStore in certificate.h).
  // Unavailable if not Fresh: a stale directory never yields a store to serve from.
  absl::StatusOr<TrustStore> BuildTrustStore(int64_t now_ms) const;

  uint64_t revocation_version() const;  // 0 before any list
  int64_t revocation_valid_until_ms() const;
  size_t size() const;
  TrustAnchors anchors() const;
  const std::string& env() const { return env_; }

 private:
  struct Snapshot {
    TrustAnchors anchors;
    absl::flat_hash_map<uint64_t, std::shared_ptr<const VerifiedCertificate>> certs;
    std::shared_ptr<const VerifiedRevocationList> revocations;
  };
  std::shared_ptr<const Snapshot> Current() const;
  absl::Status Usable(const Snapshot& s, const VerifiedCertificate& c, int64_t now_ms) const;

  const std::string env_;
  mutable absl::Mutex mu_;
  // Writers serialise on write_mu_ so two updates never build from the same snapshot.
  absl::Mutex write_mu_;
  std::shared_ptr<const Snapshot> snapshot_ ABSL_GUARDED_BY(mu_);
};

// Where the certificates of signers come from: people signing control requests, the catalog
// signing events. An interface so tests can hand in certificates issued by a test root.
class CertificateLookup {
 public:
  virtual ~CertificateLookup() = default;
  // A certificate usable now in `env`: NotFound (unknown serial), PermissionDenied (revoked),
  // FailedPrecondition (expired or not yet valid), Unavailable (revocation list missing or
  // stale), InvalidArgument (env not known here). Thread-safe.
  virtual absl::StatusOr<std::shared_ptr<const VerifiedCertificate>> Lookup(
      std::string_view env, uint64_t serial, int64_t now_ms) const = 0;
};

// CertificateLookup over one CertificateDirectory per environment (not owned; they must
// outlive the lookup). An optional `fetch` is asked for a serial the directory does not hold
// (a service asks the crypto service), after which the directory is asked again.
class DirectoryLookup final : public CertificateLookup {
 public:
  using Fetch = std::function<absl::Status(CertificateDirectory& directory, uint64_t serial,
                                           int64_t now_ms)>;
  explicit DirectoryLookup(std::map<std::string, CertificateDirectory*> directories,
                           Fetch fetch = nullptr)
      : directories_(std::move(directories)), fetch_(std::move(fetch)) {}
  absl::StatusOr<std::shared_ptr<const VerifiedCertificate>> Lookup(
      std::string_view env, uint64_t serial, int64_t now_ms) const override;

 private:
  std::map<std::string, CertificateDirectory*> directories_;
  Fetch fetch_;
};

}  // namespace chasqui
