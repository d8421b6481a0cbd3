#pragma once
// A gateway's or a router's trust on certificates (DESIGN.md, "Trust"): instead of a trust
// file, the pinned roots (`roots.json` from `chasqui-crypto init`) and the crypto service's
// directory. Everything fetched is verified against the roots here (CertificateDirectory);
// nothing is taken on the crypto service's word.
//
//   - Revocations: every list published on chq.evt.crypto.revoked is applied at once, and the
//     current list is fetched at start and on every refresh (a gateway that missed events
//     catches up). Each new list rebuilds the snapshot, so a revoked consumer is refused from
//     the next request on.
//   - Fail closed: before any list arrives, and once the held list is past its valid_until,
//     Current() is Unavailable ("the revocation list ... is stale"): the gateway's (router's)
//     /readyz is 503 and every call in both directions (every request) is answered UNAVAILABLE.
//   - Peers on demand: a provider not called yet (FetchEntity) or a certificate serial not seen
//     yet (FetchSerial) is asked of the directory at most once per `fetch_backoff` per name, so
//     a flood of unknown serials costs one directory request each per backoff at most
//     (FetchSerials puts the due ones of a batch in one request). The routers' certificates
//     are fetched at start and on every refresh; with `preload_gateways` (a router), every
//     gateway certificate of the env too.
//   - Transparency (`check_unrequested`, gateways): on every refresh the gateway asks for every
//     certificate in its own
//     entity's name; a gateway certificate (role entity) whose serial is neither its own nor
//     one of `own_serials` is logged once (one ERROR line) and counted in
//     <metric_prefix>_unrequested_certificates_total. People's certificates in its name (MAE,
//     managers) are logged once at INFO: the gateway cannot know who requested those.
//
// Metrics (labels env, entity): <metric_prefix>_revocation_list_version,
// <metric_prefix>_revocation_list_valid_until_seconds and
// <metric_prefix>_certificate_expiry_timestamp_seconds (the own certificate's not_after).
//
//   - Unknown serials while the crypto service does not answer: FetchSerial (and FetchEntity)
//     say Unavailable, not NotFound, while the last directory request about that name failed:
//     the router and the gateways answer UNAVAILABLE ("cannot tell"), never UNAUTHENTICATED.
//   - Root rotation: every refresh also asks for the root endorsements and applies those that
//     verify against the roots already pinned, so a process pinned on the old root learns the
//     new one (and the old one's shortened validity) without a restart. A revocation list
//     signed by a root not pinned yet wakes the refresher at once.
//   - Reconnects: when the bus reconnects (nats.c's reconnect count grows) the refresher
//     catches up within a second, retrying every second until it succeeds, so a process
//     whose connection dropped does not wait for the next `refresh` to learn what it missed.
//
// Snapshots are swapped whole through an atomic shared_ptr (TrustSource in trust_source.h):
// Current() takes no lock; a request keeps the snapshot it started with. Thread-safe. Expired
// certificates leave the snapshot at the next rebuild (a refresh or a new list), at most
// `refresh` late.

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/bus/bus.h"
#include "common/core/clock.h"
#include "common/envelope/identity.h"
#include "common/trust/anchors.h"
#include "common/trust/certificate.h"
#include "common/trust/crypto_client.h"
#include "common/trust/directory.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "common/trust/trust_source.h"

namespace chasqui {

// A key file bound to its certificate, the certificate verified against `anchors` for the
// key's env at `now_ms`. Errors name the file: LoadIdentity(key, cert)'s (the certificate
// does not belong to the key: InvalidArgument), then VerifyCertificate's (NotFound: root not
// pinned; Unauthenticated: forged; FailedPrecondition: expired or not yet valid).
struct CertifiedIdentity {
  Identity identity;
  VerifiedCertificate certificate;
};
absl::StatusOr<CertifiedIdentity> LoadCertifiedIdentity(const std::string& key_path,
                                                        const std::string& cert_path,
                                                        const TrustAnchors& anchors,
                                                        int64_t now_ms);

// What a router's or a gateway's command line gives it to trust: pinned roots with its own
// certificate (`roots_path` non-empty), or else a fixed trust file for `env` (benchmarks and
// tests). Errors are LoadTrustAnchors', LoadCertifiedIdentity's, LoadIdentity's or
// TrustStore::Load's, each naming its file. The caller checks the key's role and env.
struct KeyAndTrust {
  Identity identity;
  bool on_certificates = false;
  TrustAnchors anchors;          // with certificates
  std::string own_certificate;   // with certificates: the serialized Certificate
  std::optional<TrustStore> store;  // with a trust file
};
absl::StatusOr<KeyAndTrust> LoadKeyAndTrust(const std::string& key_path,
                                            const std::string& roots_path,
                                            const std::string& cert_path,
                                            const std::string& trust_path,
                                            const std::string& env, int64_t now_ms);

// Enrolment (`chasqui enrol`): asks the crypto service to certify `identity`'s public keys,
// with the request signed by its own sign key (proof of possession) and the operator's one-time
// `token` (proof of who it is). `subject` is the person's id for people; empty means the entity.
// The certificate that comes back is verified against `anchors` and must state exactly what
// was asked (keys, entity, role, env, subject): otherwise Unauthenticated or
// FailedPrecondition naming the field; nothing is taken on the service's word. The crypto
// service's refusals come back with its code (Unauthenticated: unknown token; PermissionDenied:
// token used, expired or for someone else). The private keys never leave `identity`.
// Replies come to `inbox_prefix` (see the NATS users in common/bus/nats_config.h).
absl::StatusOr<VerifiedCertificate> EnrolIdentity(Bus* bus, const std::string& inbox_prefix,
                                                  const Identity& identity,
                                                  const std::string& token,
                                                  const std::string& subject,
                                                  const TrustAnchors& anchors,
                                                  absl::Duration timeout, const Clock& clock);

// Where the replies to a process of `role` come, by its NATS user's permissions: an entity's
// (or a person's, acting through its entity's user) `_INBOX.<env>.<entity>.<random>`, a
// router's `_INBOX._router.<env>.<random>`, a service's `_INBOX._<service>.<env>.<random>`.
std::string CryptoInboxPrefix(const PublicIdentity& who);

struct CertificateTrustOptions {
  // This process's entity and certificate (its serial is what it signs with): a gateway's
  // (role entity), or a router's (role router, entity "router").
  std::string entity;
  std::string env;
  std::string own_certificate;  // the serialized Certificate
  v1::CertificateRole own_role = v1::CERTIFICATE_ROLE_ENTITY;
  // Other gateway certificates of this entity that it did request (the other key during a
  // rotation's overlap): not reported as unrequested.
  std::vector<uint64_t> own_serials;
  // Report gateway certificates in the entity's name that it did not request (gateways).
  bool check_unrequested = true;
  // Hold every gateway certificate of the env, fetched at start and on every refresh (a
  // router: then a new entity's first request is not sent to a directory fetch).
  bool preload_gateways = false;
  // Metric names start with it: "chasqui_gateway" or "chasqui_router".
  std::string metric_prefix = "chasqui_gateway";
  // Catch up on revocations, refetch the routers and check the entity's own certificates.
  absl::Duration refresh = absl::Seconds(30);
  // The least time between two directory requests for the same unknown entity or serial.
  absl::Duration fetch_backoff = absl::Seconds(5);
  absl::Duration crypto_timeout = absl::Seconds(5);
  // Replies from the crypto service come below it; empty: CryptoInboxPrefix of the own role
  // (`_INBOX.<env>.<entity>.<random>`, a router's `_INBOX._router.<env>.<random>`), which its
  // NATS user may read (common/bus/nats_config.h).
  std::string inbox_prefix;
};

class CertificateTrust final : public TrustSource {
 public:
  // Verifies the own certificate (InvalidArgument if it is not this entity's certificate of
  // `own_role` for env, else VerifyCertificate's errors), subscribes to revocation lists,
  // refreshes once, and starts refreshing every `options.refresh`. A crypto service that does
  // not answer now is not an error: the trust stays Unavailable until a list arrives.
  // `bus` and `clock` must outlive it; metrics go to `registry` (may be null).
  static absl::StatusOr<std::unique_ptr<CertificateTrust>> Start(
      Bus* bus, TrustAnchors anchors, CertificateTrustOptions options,
      std::shared_ptr<prometheus::Registry> registry, const Clock& clock = SystemClock());
  ~CertificateTrust() override;

  const std::string& env() const override { return options_.env; }
  absl::StatusOr<std::shared_ptr<const TrustStore>> Current() const override;
  absl::StatusOr<std::shared_ptr<const TrustStore>> FetchEntity(std::string_view entity) override;
  absl::StatusOr<std::shared_ptr<const TrustStore>> FetchSerial(uint64_t serial) override;
  absl::StatusOr<std::shared_ptr<const TrustStore>> FetchSerials(
      const std::vector<uint64_t>& serials) override;
  bool fetches() const override { return true; }

  // What the background thread does every `refresh` (and after a reconnect): learn new roots
  // from their endorsements, catch up on revocations, fetch the
  // routers' and the own entity's certificates (and, with preload_gateways, every gateway
  // certificate of the env), rebuild. The first error is returned; the
  // rest is still done.
  absl::Status Refresh();

  // The version of the list the current snapshot was built with (what requests are checked
  // against): once it moves, the next request sees that list.
  uint64_t revocation_version() const { return applied_version_.load(); }
  int64_t revocation_valid_until_ms() const { return directory_.revocation_valid_until_ms(); }
  // Directory requests sent for certificates (refreshes and fetches), for tests and logs.
  uint64_t directory_requests() const { return directory_requests_.load(); }
  const VerifiedCertificate& own_certificate() const { return own_; }
  uint64_t unrequested_certificates() const { return unrequested_.load(); }
  const CertificateDirectory& directory() const { return directory_; }
  // The held certificates as a CertificateLookup (for signatures of the catalog and of people),
  // a serial not held fetched on first sight as FetchSerial does. Lives as long as the trust.
  const CertificateLookup& lookup() const { return *lookup_; }

 private:
  CertificateTrust(TrustAnchors anchors, CertificateTrustOptions options, const Clock& clock);
  // Adds the certificates of a directory reply (refused ones logged, one line each).
  void AddFromReply(const v1::DirectoryReply& reply);
  absl::Status FetchCertificates(v1::DirectoryRequest request);
  // Every gateway certificate of the env, page by page.
  absl::Status PreloadGateways();
  // True if `key` was not fetched within the backoff (and marks it fetched now).
  bool FetchDue(const std::string& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(fetch_mu_);
  // Records how the last directory request about `key` went.
  void MarkFetch(const std::string& key, const absl::Status& outcome)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(fetch_mu_);
  // Why the last directory request about `key` failed; empty if it was answered (or none).
  std::string LastFetchFailure(const std::string& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(fetch_mu_);
  // Applies the root endorsements the directory holds (a root rotation).
  void ApplyEndorsements(const v1::DirectoryReply& reply);
  // Wakes the refresher now (a list signed by a root not pinned yet).
  void WakeRefresher();
  bool WokenOrStopping() const ABSL_SHARED_LOCKS_REQUIRED(wake_mu_) {
    return wake_ || stopping_;
  }
  void OnRevocationList(std::string_view signed_list);
  void Rebuild();
  void CheckOwnEntity();
  void RefreshLoop();

  const CertificateTrustOptions options_;
  const Clock& clock_;
  CertificateDirectory directory_;
  absl::flat_hash_set<uint64_t> own_serials_;
  uint64_t own_serial_ = 0;
  VerifiedCertificate own_;
  std::atomic<uint64_t> directory_requests_{0};
  std::unique_ptr<DirectoryLookup> lookup_;
  std::unique_ptr<CryptoClient> client_;
  std::unique_ptr<Subscription> revocations_;

  // Every request loads it (no lock); Rebuild stores it, one rebuild at a time (rebuild_mu_),
  // so an older build never replaces a newer one.
  std::atomic<std::shared_ptr<const TrustStore>> store_;
  absl::Mutex rebuild_mu_;
  // 0 before any list: Current() reads it without a lock on every request.
  std::atomic<int64_t> valid_until_ms_{0};
  std::atomic<uint64_t> applied_version_{0};

  absl::Mutex fetch_mu_;  // one directory fetch at a time
  struct FetchMark {
    int64_t at_ns = 0;
    std::string failure;  // empty: the last request about this name was answered
  };
  absl::flat_hash_map<std::string, FetchMark> last_fetch_ ABSL_GUARDED_BY(fetch_mu_);
  absl::Mutex warned_mu_;
  absl::flat_hash_set<uint64_t> reported_ ABSL_GUARDED_BY(warned_mu_);
  std::atomic<uint64_t> unrequested_{0};

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Counter* unrequested_counter_ = nullptr;
  prometheus::Gauge* version_gauge_ = nullptr;
  prometheus::Gauge* valid_until_gauge_ = nullptr;
  prometheus::Gauge* expiry_gauge_ = nullptr;

  Bus* bus_ = nullptr;
  mutable absl::Mutex wake_mu_;
  bool wake_ ABSL_GUARDED_BY(wake_mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(wake_mu_) = false;
  std::thread refresher_;
};

}  // namespace chasqui
