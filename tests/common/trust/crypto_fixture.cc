#include "tests/common/trust/crypto_fixture.h"

#include <utility>

#include "common/core/clock.h"
#include "common/core/status.h"
#include "common/trust/certificate_trust.h"
#include "common/trust/crypto_client.h"
#include "common/trust/requests.h"
#include "prometheus/registry.h"
#include "services/crypto/ceremony.h"

namespace chasqui::testing {
namespace {
constexpr int64_t kDay = 86'400'000;
}  // namespace

Identity CopyIdentity(const Identity& id) {
  auto sign = SigningKey::FromSecret(AsView(id.sign.secret().data(), 64));
  auto kx = KxKey::FromSecret(AsView(id.kx.secret().data(), 32));
  CHASQUI_CHECK(sign.ok() && kx.ok(), "copying a key");
  return Identity{id.pub, *std::move(sign), *std::move(kx)};
}

CryptoFixture::CryptoFixture(const std::string& nats_url, const std::string& data_dir,
                             int64_t list_validity_ms)
    : nats_url_(nats_url), data_dir_(data_dir), list_validity_ms_(list_validity_ms) {
  auto init = InitRoot(data_dir, Passphrase(passphrase_), KdfCost::kTestOnlyMinimum,
                       3650 * kDay, SystemClock());
  CHASQUI_CHECK(init.ok(), MessageOf(init.status()));
  roots_file_ = init->anchors_file;
  auto anchors = LoadTrustAnchors(roots_file_);
  CHASQUI_CHECK(anchors.ok(), MessageOf(anchors.status()));
  anchors_ = *anchors;
  OpenAuthority();

  watch_bus_ = NewBus("directory-watch");
  StartService();
}

void CryptoFixture::OpenAuthority() {
  auto store = OpenAuthorityStore(data_dir_);
  CHASQUI_CHECK(store.ok(), MessageOf(store.status()));
  store_ = *std::move(store);
  auto root = LoadCurrentRoot(data_dir_, store_.get(), Passphrase(passphrase_));
  CHASQUI_CHECK(root.ok(), MessageOf(root.status()));
  AuthorityOptions ao;
  ao.envs = {"test"};
  ao.revocation_validity_ms = list_validity_ms_;
  ao.token_spool_dir = TokenSpoolDir(data_dir_);
  auto authority = CertificateAuthority::Open(ao, store_.get(), *std::move(root), SystemClock());
  CHASQUI_CHECK(authority.ok(), MessageOf(authority.status()));
  authority_ = *std::move(authority);
}

void CryptoFixture::StopService() {
  service_.reset();
  // The watch goes too: with no subscriber left, a directory request gets "no responders"
  // at once, as it would with the service down.
  directory_watch_.reset();
}

void CryptoFixture::StartService() {
  CHASQUI_CHECK(service_ == nullptr, "the crypto service already runs");
  auto watch = watch_bus_->Subscribe(kDirectorySubject, [this](const BusMessage& m) {
    v1::DirectoryRequest r;
    if (!r.ParseFromArray(m.data.data(), static_cast<int>(m.data.size()))) return;
    absl::MutexLock lock(&mu_);
    for (uint64_t serial : r.serials()) ++asked_[serial];
  });
  CHASQUI_CHECK(watch.ok(), MessageOf(watch.status()));
  directory_watch_ = *std::move(watch);
  CryptoServiceOptions so;
  so.tick = absl::Milliseconds(50);
  auto service = CryptoService::Start(so, NewBus("crypto"), authority_.get(),
                                      std::make_shared<prometheus::Registry>(), SystemClock());
  CHASQUI_CHECK(service.ok(), MessageOf(service.status()));
  service_ = *std::move(service);
}

void CryptoFixture::RotateRoot(int64_t overlap_ms) {
  StopService();
  authority_.reset();
  store_.reset();  // the ceremony needs the store to itself
  const std::string next = passphrase_ + " (rotated)";
  auto rotated = chasqui::RotateRoot(data_dir_, Passphrase(passphrase_), Passphrase(next),
                                     KdfCost::kTestOnlyMinimum, 3650 * kDay, overlap_ms,
                                     SystemClock());
  CHASQUI_CHECK(rotated.ok(), MessageOf(rotated.status()));
  passphrase_ = next;
  roots_file_ = rotated->anchors_file;
  anchors_ = rotated->anchors;
  OpenAuthority();
  StartService();
}

CryptoFixture::~CryptoFixture() {
  service_.reset();
  directory_watch_.reset();
}

Bus* CryptoFixture::NewBus(const std::string& name) {
  BusOptions bo;
  bo.url = nats_url_;
  bo.name = name;
  bo.send_asap = true;
  auto bus = Bus::Connect(bo);
  CHASQUI_CHECK(bus.ok(), MessageOf(bus.status()));
  buses_.push_back(*std::move(bus));
  return buses_.back().get();
}

std::string CryptoFixture::Token(const std::string& entity, const std::string& role,
                                 const std::string& subject) {
  auto t = MakeEnrolmentToken(entity, subject, role, "test", 3'600'000, SystemClock());
  CHASQUI_CHECK(t.ok(), MessageOf(t.status()));
  CHASQUI_CHECK(StoreToken(store_.get(), *t).ok(), "storing a token");
  return t->token;
}

Enrolled CryptoFixture::Enrol(const std::string& entity, Role role, const std::string& subject) {
  Identity id = GenerateIdentity(entity, "test", role);
  auto cert = EnrolIdentity(NewBus("enrol-" + entity), CryptoInboxPrefix(id.pub), id,
                            Token(entity, std::string(RoleName(role)), subject), subject,
                            anchors_, absl::Seconds(5), SystemClock());
  CHASQUI_CHECK(cert.ok(), MessageOf(cert.status()));
  id.pub.serial = cert->serial;
  return Enrolled{std::move(id), *std::move(cert)};
}

void CryptoFixture::EnrolOperator() {
  if (operator_ == nullptr) {
    operator_ = std::make_unique<Enrolled>(Enrol("agetic", Role::kOperator, "olga"));
  }
}

v1::ControlRequest CryptoFixture::RevokeRequest(uint64_t serial) {
  EnrolOperator();
  v1::ControlBody body;
  body.mutable_revoke()->add_serials(serial);
  body.mutable_revoke()->set_reason(v1::REVOCATION_REASON_KEY_COMPROMISE);
  return MakeControlRequest(body, "test", operator_->cert.serial, operator_->identity.sign,
                            SystemClock().NowUnixMillis());
}

absl::Status CryptoFixture::Revoke(uint64_t serial) {
  v1::ControlRequest request = RevokeRequest(serial);
  CHASQUI_ASSIGN_OR_RETURN(auto client,
                           CryptoClient::Create(NewBus("operator"), "_INBOX.test.agetic.op"));
  return client->Revoke(request).status();
}

absl::Status CryptoFixture::RevokeUnpublished(uint64_t serial) {
  v1::ControlRequest request = RevokeRequest(serial);
  return authority_->Revoke(request.SerializeAsString()).status();
}

int CryptoFixture::DirectoryRequestsFor(uint64_t serial) const {
  absl::MutexLock lock(&mu_);
  auto it = asked_.find(serial);
  return it == asked_.end() ? 0 : it->second;
}

}  // namespace chasqui::testing
