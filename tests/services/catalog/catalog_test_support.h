#pragma once
// Shared by the catalog's tests: a test root that issues real certificates (common/trust) to
// people and to the catalog, directories that hold them with a fresh revocation list, and
// control requests built the way the `chasqui` CLI builds them.

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "chasqui/v1/catalog.pb.h"
#include "common/core/clock.h"
#include "common/crypto/sodium.h"
#include "common/trust/anchors.h"
#include "common/trust/certificate.h"
#include "common/trust/directory.h"
#include "common/trust/revocation.h"
#include "services/catalog/catalog_client.h"
#include "services/catalog/catalog_signing.h"

namespace chasqui::testing {

inline constexpr int64_t kDayMs = 86'400'000;
inline const std::string kNtaText =
    "Norma Tecnica de Adhesion v1: the entity exchanges data only through Chasqui...";

inline std::string NtaHash(const std::string& text = kNtaText) {
  return std::string(AsView(Blake2b256(text)));
}

// A person (or the catalog) holding a key and a certificate in one env.
struct Holder {
  SigningKey key = SigningKey::Generate();
  uint64_t serial = 0;
  std::string subject;
  std::string entity;
  std::string env = "test";
  std::string certificate;  // serialized Certificate
};

class TestRoot {
 public:
  explicit TestRoot(int64_t now_ms) : now_ms_(now_ms) {
    anchor_.key_id = RootKeyId(key_.public_key());
    anchor_.sign_pk = key_.public_key();
    anchor_.not_before_ms = now_ms - kDayMs;
    anchor_.not_after_ms = now_ms + 3650 * kDayMs;
  }
  TrustAnchors anchors() const { return TrustAnchors({anchor_}); }

  // Issues a certificate for `holder` (filling serial and certificate).
  void Issue(Holder& h, v1::CertificateRole role) {
    auto [serial, cert] = IssueKey(h.key.public_key(), h.subject, h.entity, h.env, role);
    h.serial = serial;
    h.certificate = cert;
  }

  // A certificate for `pk`: its serial and bytes.
  std::pair<uint64_t, std::string> IssueKey(const SignPublicKey& pk, const std::string& subject,
                                            const std::string& entity, const std::string& env,
                                            v1::CertificateRole role) {
    v1::CertificateBody b;
    const uint64_t serial = ++next_serial_;
    b.set_serial(serial);
    b.set_subject(subject.empty() ? entity : subject);
    b.set_entity(entity);
    b.set_role(role);
    b.set_kind(KindOfRole(role));
    b.set_env(env);
    b.set_sign_pk(std::string(AsView(pk)));
    if (KindOfRole(role) != v1::CERTIFICATE_KIND_PERSON) {
      b.set_kx_pk(std::string(AsView(KxKey::Generate().public_key())));
    }
    b.set_not_before_ms(now_ms_ - kDayMs);
    b.set_not_after_ms(now_ms_ + 365 * kDayMs);
    b.set_issuer_key_id(anchor_.key_id);
    return {serial, SignCertificate(b, key_).SerializeAsString()};
  }

  // A revocation list for `env` valid for a year, revoking `serials`.
  std::string List(const std::string& env, uint64_t version, std::vector<uint64_t> serials = {}) {
    v1::RevocationListBody b;
    b.set_env(env);
    b.set_version(version);
    b.set_issued_at_ms(now_ms_);
    b.set_valid_until_ms(now_ms_ + 365 * kDayMs);
    b.set_issuer_key_id(anchor_.key_id);
    for (uint64_t s : serials) {
      auto* r = b.add_revoked();
      r->set_serial(s);
      r->set_reason(v1::REVOCATION_REASON_ROLE_ENDED);
      r->set_revoked_at_ms(now_ms_);
    }
    return SignRevocationList(b, key_).SerializeAsString();
  }

 private:
  int64_t now_ms_;
  SigningKey key_ = SigningKey::Generate();
  TrustAnchor anchor_;
  uint64_t next_serial_ = 1000;
};

// A directory per env with a fresh (empty) revocation list, and a lookup over them.
struct Directories {
  Directories(TestRoot& root, int64_t now_ms) {
    for (const std::string env : {"test", "prod"}) {
      by_env[env] = std::make_unique<CertificateDirectory>(env, root.anchors());
      absl::Status s = by_env[env]->ApplyRevocationList(root.List(env, 1), now_ms);
      (void)s;
      ptrs[env] = by_env[env].get();
    }
    lookup = std::make_unique<DirectoryLookup>(ptrs);
  }
  absl::Status Add(const Holder& h, int64_t now_ms) { return Add(h.env, h.certificate, now_ms); }
  absl::Status Add(const std::string& env, const std::string& certificate, int64_t now_ms) {
    return by_env[env]->AddCertificates({certificate}, now_ms);
  }
  std::map<std::string, std::unique_ptr<CertificateDirectory>> by_env;
  std::map<std::string, CertificateDirectory*> ptrs;
  std::unique_ptr<DirectoryLookup> lookup;
};

// ---- Control bodies, as the CLI would build them ----

inline v1::CatalogControlBody RegisterEntity(const std::string& id, const std::string& name,
                                             std::vector<std::string> managers = {}) {
  v1::CatalogControlBody b;
  b.mutable_register_entity()->set_id(id);
  b.mutable_register_entity()->set_name(name);
  for (auto& m : managers) b.mutable_register_entity()->add_managers(m);
  return b;
}

inline v1::CatalogControlBody Adhere(const std::string& entity, std::string hash = NtaHash()) {
  v1::CatalogControlBody b;
  b.mutable_adhere()->set_entity(entity);
  b.mutable_adhere()->set_nta_hash(hash);
  return b;
}

inline v1::ServiceSpec Spec(const std::string& name, v1::Classification c,
                            bool personal_data = false) {
  v1::ServiceSpec s;
  s.set_name(name);
  s.set_version("1.0.0");
  s.set_description("looks a person up by national id");
  s.set_classification(c);
  s.set_personal_data(personal_data);
  s.set_legal_basis("Ley 164, art. 72");
  s.set_technical_conditions("JSON over Chasqui; sealed");
  s.set_request_schema(R"({"type":"object","properties":{"ci":{"type":"string"}}})");
  s.set_response_schema(R"({"type":"object"})");
  s.mutable_default_quota()->set_rate_per_second(10);
  s.mutable_default_quota()->set_burst(20);
  s.mutable_default_quota()->set_per_day(10000);
  return s;
}

inline v1::CatalogControlBody Submit(const std::string& provider, const v1::ServiceSpec& spec) {
  v1::CatalogControlBody b;
  b.mutable_submit()->set_provider(provider);
  *b.mutable_submit()->mutable_spec() = spec;
  return b;
}

// verb: publish, reject_service, deprecate, retire
inline v1::CatalogControlBody ServiceDecision(const std::string& verb, const std::string& provider,
                                              const std::string& service,
                                              const std::string& reason = "") {
  v1::CatalogControlBody b;
  v1::ServiceDecisionAction* a = verb == "publish"          ? b.mutable_publish()
                                 : verb == "reject_service" ? b.mutable_reject_service()
                                 : verb == "deprecate"      ? b.mutable_deprecate()
                                                            : b.mutable_retire();
  a->set_provider(provider);
  a->set_service(service);
  a->set_reason(reason);
  return b;
}

inline v1::CatalogControlBody RequestAccess(const std::string& env, const std::string& consumer,
                                            const std::string& provider,
                                            const std::string& service) {
  v1::CatalogControlBody b;
  auto* a = b.mutable_request_access();
  a->set_env(env);
  a->set_consumer(consumer);
  a->set_provider(provider);
  a->set_service(service);
  a->set_justification("tax registration checks identity");
  a->set_legal_basis("Ley 843, art. 3");
  return b;
}

// verb: approve, reject_access, suspend, revoke, promote
inline v1::CatalogControlBody GrantDecision(const std::string& verb, const std::string& env,
                                            const std::string& consumer,
                                            const std::string& provider,
                                            const std::string& service,
                                            const std::string& reason = "") {
  v1::CatalogControlBody b;
  v1::GrantDecisionAction* a = verb == "approve"         ? b.mutable_approve()
                               : verb == "reject_access" ? b.mutable_reject_access()
                               : verb == "suspend"       ? b.mutable_suspend()
                               : verb == "revoke"        ? b.mutable_revoke()
                                                         : b.mutable_promote();
  a->set_env(env);
  a->set_consumer(consumer);
  a->set_provider(provider);
  a->set_service(service);
  a->set_reason(reason);
  return b;
}

inline v1::CatalogControlBody EndUser(bool enable, const std::string& consumer,
                                      const std::string& user) {
  v1::CatalogControlBody b;
  auto* a = enable ? b.mutable_register_end_user() : b.mutable_disable_end_user();
  a->set_consumer(consumer);
  a->set_user_id(user);
  return b;
}

// The people of the story and the catalog's own key, with certificates from one test root
// held in `dirs`: operator ana (agetic); segip (provider): MAE maria, manager pedro; sin
// (consumer): MAE juan, manager lucia; sin's gateway key (never a person).
struct World {
  explicit World(int64_t now_ms) : root(now_ms), dirs(root, now_ms) {
    auto person = [&](Holder& h, const char* subject, const char* entity, v1::CertificateRole r) {
      h.subject = subject;
      h.entity = entity;
      root.Issue(h, r);
      (void)dirs.Add(h, now_ms);
    };
    person(op, "ana", "agetic", v1::CERTIFICATE_ROLE_OPERATOR);
    person(segip_mae, "maria", "segip", v1::CERTIFICATE_ROLE_MAE);
    person(segip_mgr, "pedro", "segip", v1::CERTIFICATE_ROLE_MANAGER);
    person(sin_mae, "juan", "sin", v1::CERTIFICATE_ROLE_MAE);
    person(sin_mgr, "lucia", "sin", v1::CERTIFICATE_ROLE_MANAGER);
    person(sin_gateway, "", "sin", v1::CERTIFICATE_ROLE_ENTITY);
    for (const std::string env : {"test", "prod"}) {
      auto [serial, cert] =
          root.IssueKey(catalog_key.public_key(), "catalog", "catalog", env,
                        v1::CERTIFICATE_ROLE_CATALOG);
      catalog_serials[env] = serial;
      catalog_certificates[env] = cert;
      (void)dirs.Add(env, cert, now_ms);
    }
  }
  std::unique_ptr<LocalCatalogSigner> Signer() const {
    auto secret = SigningKey::FromSecret(AsView(catalog_key.secret().data(), 64));
    return std::make_unique<LocalCatalogSigner>(*std::move(secret), catalog_serials);
  }

  TestRoot root;
  Directories dirs;
  Holder op, segip_mae, segip_mgr, sin_mae, sin_mgr, sin_gateway;
  SigningKey catalog_key = SigningKey::Generate();
  std::map<std::string, uint64_t> catalog_serials;
  std::map<std::string, std::string> catalog_certificates;
};

inline std::string Signed(const v1::CatalogControlBody& body, const Holder& who, int64_t now_ms) {
  return MakeCatalogRequest(body, who.env, who.serial, who.key, now_ms).SerializeAsString();
}

}  // namespace chasqui::testing
