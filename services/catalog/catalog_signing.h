#pragma once
// What the catalog signs (events, snapshots, annexes) and how anyone verifies it
// (catalog.proto, SignedCatalogMessage). The catalog holds one Ed25519 key and a certificate
// (role catalog) per environment it serves; each message carries one signature per
// environment, and a verifier checks the one for its own environment under a tag it builds
// itself, with the certificate it finds in its own CertificateLookup. Nothing is taken on the
// catalog's word.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "chasqui/v1/catalog.pb.h"
#include "common/crypto/sodium.h"
#include "common/trust/certificate.h"
#include "common/trust/directory.h"

namespace chasqui {

enum class CatalogSignedKind { kEvent, kSnapshot, kAnnex };

// chasqui/v1/event/<env>, chasqui/v1/catalog-snapshot/<env>, chasqui/v1/annex/<env>.
std::string CatalogTag(CatalogSignedKind kind, std::string_view env);

// Who signs for the catalog. One function, so the crypto service's signing API
// (chq.ctl.crypto.sign) can replace the local key later.
class CatalogSigner {
 public:
  virtual ~CatalogSigner() = default;
  // `body` signed for every environment the signer holds a certificate for. Unavailable if a
  // remote signer cannot be reached (the change is then refused, nothing stored).
  virtual absl::StatusOr<v1::SignedCatalogMessage> Sign(CatalogSignedKind kind,
                                                        std::string_view body) const = 0;
};

// Signs with the catalog's own key; `serials` maps each env to the catalog's certificate
// there. Thread-safe; the key stays in locked memory.
class LocalCatalogSigner final : public CatalogSigner {
 public:
  LocalCatalogSigner(SigningKey key, std::map<std::string, uint64_t> serials)
      : key_(std::move(key)), serials_(std::move(serials)) {}
  absl::StatusOr<v1::SignedCatalogMessage> Sign(CatalogSignedKind kind,
                                                std::string_view body) const override;
  const SignPublicKey& public_key() const { return key_.public_key(); }

 private:
  const SigningKey key_;
  const std::map<std::string, uint64_t> serials_;
};

// Verifies `message` for `env`, in this order:
//   no signature for env ................................ PermissionDenied
//   signer certificate unusable ......................... the lookup's code, message prefixed
//   signer is not the catalog (role) .................... PermissionDenied
//   signature does not verify (tag from kind and env) ... Unauthenticated
// Returns the body as signed.
absl::StatusOr<std::string> VerifyCatalogMessage(const v1::SignedCatalogMessage& message,
                                                 CatalogSignedKind kind, std::string_view env,
                                                 const CertificateLookup& certificates,
                                                 int64_t now_ms);

// VerifyCatalogMessage, then parses the body: InvalidArgument if it is not the message type.
absl::StatusOr<v1::CatalogEvent> VerifyCatalogEvent(const v1::SignedCatalogMessage& message,
                                                    std::string_view env,
                                                    const CertificateLookup& certificates,
                                                    int64_t now_ms);
absl::StatusOr<v1::CatalogSnapshot> VerifyCatalogSnapshot(const v1::SignedCatalogMessage& message,
                                                          std::string_view env,
                                                          const CertificateLookup& certificates,
                                                          int64_t now_ms);
absl::StatusOr<v1::AnnexBody> VerifyAnnex(const v1::Annex& annex, std::string_view env,
                                          const CertificateLookup& certificates, int64_t now_ms);

// Checks that an adhesion agreement holds the MAE's own signature over the NTA it names:
// the stored request verifies with the MAE's certificate (from `certificates`, in the
// agreement's env, role mae of the entity) and its Adhere action names this entity and hash.
// InvalidArgument if malformed or inconsistent, Unauthenticated if the signature fails, the
// lookup's errors otherwise.
absl::Status VerifyAdhesion(const v1::AdhesionAgreement& agreement,
                            const CertificateLookup& certificates, int64_t now_ms);

}  // namespace chasqui
