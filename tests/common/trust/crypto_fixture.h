#pragma once
// The crypto service for integration tests, real parts only: a root made by the real ceremony
// (KdfCost::kTestOnlyMinimum), the authority on RocksDB in a temp dir, the service on its own
// connection to the test's nats-server. Identities are enrolled the way `chasqui enrol` does it
// (EnrolIdentity), and revoked the way an operator does (a signed control request).

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "common/bus/bus.h"
#include "common/envelope/identity.h"
#include "common/store/kv_store.h"
#include "common/trust/anchors.h"
#include "common/trust/certificate.h"
#include "chasqui/v1/crypto.pb.h"
#include "services/crypto/authority.h"
#include "services/crypto/crypto_service.h"
#include "tests/support/temp_dir.h"

namespace chasqui::testing {

// Identities are move-only (their secrets live in locked memory); tests need copies.
Identity CopyIdentity(const Identity& id);

struct Enrolled {
  Identity identity;  // its serial is the certificate's
  VerifiedCertificate cert;
};

class CryptoFixture {
 public:
  // Revocation lists are valid for `list_validity_ms`. CHECK-fails on any error (test setup).
  CryptoFixture(const std::string& nats_url, const std::string& data_dir,
                int64_t list_validity_ms);
  ~CryptoFixture();

  // A new connection, kept until the fixture goes.
  Bus* NewBus(const std::string& name);
  std::string Token(const std::string& entity, const std::string& role,
                    const std::string& subject = "");
  // A fresh key enrolled for `entity` with `role` (people need a `subject`).
  Enrolled Enrol(const std::string& entity, Role role, const std::string& subject = "");
  // Revokes `serial` as an operator (enrolled on first use); the new list is published.
  absl::Status Revoke(uint64_t serial);
  // Revokes `serial` in the authority without publishing the new list: an event that every
  // subscriber missed (they learn it only by asking the directory). Needs no bus once the
  // operator is enrolled (EnrolOperator).
  absl::Status RevokeUnpublished(uint64_t serial);
  // Enrols the operator who revokes (done on first use otherwise).
  void EnrolOperator();

  // Stops the service (its subscriptions go: nobody answers on chq.ctl.crypto.*); the
  // authority and its store stay. StartService starts it again (it publishes its lists).
  void StopService();
  void StartService();
  bool service_running() const { return service_ != nullptr; }
  // `chasqui-crypto rotate-root` with the service stopped: a new root (the old one stays
  // valid for `overlap_ms` more), the authority reopened on it, the service started again.
  // anchors() and roots_file() then hold both roots. CHECK-fails on any error.
  void RotateRoot(int64_t overlap_ms);

  const TrustAnchors& anchors() const { return anchors_; }
  const std::string& roots_file() const { return roots_file_; }
  KvStore* store() const { return store_.get(); }
  CertificateAuthority* authority() const { return authority_.get(); }
  // Directory requests seen since start that asked for `serial` by number.
  int DirectoryRequestsFor(uint64_t serial) const;

 private:
  v1::ControlRequest RevokeRequest(uint64_t serial);
  void OpenAuthority();

  const std::string nats_url_;
  const std::string data_dir_;
  const int64_t list_validity_ms_;
  std::string passphrase_ = "a test passphrase";
  std::string roots_file_;
  TrustAnchors anchors_;
  std::unique_ptr<KvStore> store_;
  std::unique_ptr<CertificateAuthority> authority_;
  std::vector<std::unique_ptr<Bus>> buses_;
  Bus* watch_bus_ = nullptr;
  std::unique_ptr<Subscription> directory_watch_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<uint64_t, int> asked_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<CryptoService> service_;
  std::unique_ptr<Enrolled> operator_;
};

}  // namespace chasqui::testing
