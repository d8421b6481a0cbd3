#include "common/trust/certificate_trust.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "common/core/files.h"
#include "common/core/log.h"
#include "common/core/status.h"
#include "common/bus/nats_config.h"
#include "common/envelope/subjects.h"
#include "common/trust/requests.h"
#include "fmt/format.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"

namespace chasqui {
namespace {

constexpr char kRouterEntity[] = "router";
// Bounds the memory of fetch times under a flood of made-up serials.
constexpr size_t kMaxRememberedFetches = 10'000;
// The directory's page size (services/crypto/authority.cc): a full page means ask again.
constexpr int kDirectoryPage = 1000;
// Serials asked for in one request by FetchSerials.
constexpr size_t kMaxSerialsPerFetch = 256;

}  // namespace

absl::StatusOr<CertifiedIdentity> LoadCertifiedIdentity(const std::string& key_path,
                                                        const std::string& cert_path,
                                                        const TrustAnchors& anchors,
                                                        int64_t now_ms) {
  CHASQUI_ASSIGN_OR_RETURN(Identity identity, LoadIdentity(key_path, cert_path));
  CHASQUI_ASSIGN_OR_RETURN(std::string bytes,
                           ReadFileToString(cert_path, "certificate file"));
  auto verified = VerifyCertificate(bytes, anchors, identity.pub.env, now_ms);
  if (!verified.ok()) {
    return absl::Status(verified.status().code(),
                        fmt::format("certificate file {}: {}", cert_path,
                                    MessageOf(verified.status())));
  }
  return CertifiedIdentity{std::move(identity), *std::move(verified)};
}

absl::StatusOr<KeyAndTrust> LoadKeyAndTrust(const std::string& key_path,
                                            const std::string& roots_path,
                                            const std::string& cert_path,
                                            const std::string& trust_path,
                                            const std::string& env, int64_t now_ms) {
  if (!roots_path.empty()) {
    CHASQUI_ASSIGN_OR_RETURN(TrustAnchors anchors, LoadTrustAnchors(roots_path));
    CHASQUI_ASSIGN_OR_RETURN(CertifiedIdentity certified,
                             LoadCertifiedIdentity(key_path, cert_path, anchors, now_ms));
    return KeyAndTrust{.identity = std::move(certified.identity),
                       .on_certificates = true,
                       .anchors = std::move(anchors),
                       .own_certificate = std::move(certified.certificate.certificate)};
  }
  CHASQUI_ASSIGN_OR_RETURN(Identity identity, LoadIdentity(key_path));
  CHASQUI_ASSIGN_OR_RETURN(TrustStore store, TrustStore::Load(trust_path, env));
  return KeyAndTrust{.identity = std::move(identity), .store = std::move(store)};
}

std::string CryptoInboxPrefix(const PublicIdentity& who) {
  const std::string id = ToHex(RandomString(8));
  if (who.role == Role::kRouter) return RouterInboxPrefix(who.env, id);
  if (IsServiceRole(who.role)) {
    return fmt::format("{}.{}", NatsServiceInboxPrefix(RoleName(who.role), who.env), id);
  }
  return fmt::format("{}.{}", EntityInboxPrefix(who.env, who.entity), id);
}

absl::StatusOr<VerifiedCertificate> EnrolIdentity(Bus* bus, const std::string& inbox_prefix,
                                                  const Identity& identity,
                                                  const std::string& token,
                                                  const std::string& subject,
                                                  const TrustAnchors& anchors,
                                                  absl::Duration timeout, const Clock& clock) {
  const PublicIdentity& pub = identity.pub;
  const bool person = IsPersonRole(pub.role);
  if (person && subject.empty()) {
    return absl::InvalidArgumentError(fmt::format(
        "a {} enrols with a subject: the person's id, as on the enrolment token",
        RoleName(pub.role)));
  }
  CHASQUI_ASSIGN_OR_RETURN(v1::CertificateRole role, ParseCertificateRole(RoleName(pub.role)));
  v1::EnrolmentRequestBody body;
  body.set_subject(subject.empty() ? pub.entity : subject);
  body.set_role(role);
  body.set_entity(pub.entity);
  body.set_env(pub.env);
  body.set_sign_pk(std::string(AsView(pub.sign_pk)));
  if (pub.has_kx) body.set_kx_pk(std::string(AsView(pub.kx_pk)));
  body.set_token(token);
  body.set_sent_at_ms(clock.NowUnixMillis());
  const v1::EnrolmentRequest request = MakeEnrolmentRequest(body, identity.sign);
  body.set_token(std::string(body.token().size(), '\0'));  // no copy of the token lingers

  CHASQUI_ASSIGN_OR_RETURN(std::unique_ptr<CryptoClient> client,
                           CryptoClient::Create(bus, inbox_prefix, timeout));
  CHASQUI_ASSIGN_OR_RETURN(v1::EnrolmentReply reply, client->Enrol(request));
  CHASQUI_ASSIGN_OR_RETURN(VerifiedCertificate cert,
                           VerifyCertificate(reply.certificate(), anchors, pub.env,
                                             clock.NowUnixMillis()));
  auto differs = [&](std::string_view field) {
    return absl::UnauthenticatedError(fmt::format(
        "the crypto service answered with certificate {} whose {} is not what was asked: "
        "refusing it",
        cert.serial, field));
  };
  if (cert.sign_pk != pub.sign_pk) return differs("sign_pk");
  if (cert.has_kx != pub.has_kx || (pub.has_kx && cert.kx_pk != pub.kx_pk)) {
    return differs("kx_pk");
  }
  if (cert.entity != pub.entity) return differs("entity");
  if (cert.role != role) return differs("role");
  if (cert.subject != body.subject()) return differs("subject");
  CHQ_LOG_INFO("enrolled: certificate {} for {} ({} {}, {}), transparency log entry {}",
               cert.serial, cert.subject, RoleName(pub.role), pub.entity, pub.env,
               reply.log_sequence());
  return cert;
}

CertificateTrust::CertificateTrust(TrustAnchors anchors, CertificateTrustOptions options,
                                   const Clock& clock)
    : options_(std::move(options)),
      clock_(clock),
      directory_(options_.env, std::move(anchors)),
      own_serials_(options_.own_serials.begin(), options_.own_serials.end()),
      store_(std::make_shared<const TrustStore>(TrustStore::FromIdentities({}, options_.env))) {
  // DirectoryLookup asks through a mutable pointer, but with a `fetch` of its own it never
  // writes through it: every write to the directory goes through FetchSerial.
  lookup_ = std::make_unique<DirectoryLookup>(
      std::map<std::string, CertificateDirectory*>{{options_.env, &directory_}},
      [this](CertificateDirectory&, uint64_t serial, int64_t) {
        return FetchSerial(serial).status();
      });
}

absl::StatusOr<std::unique_ptr<CertificateTrust>> CertificateTrust::Start(
    Bus* bus, TrustAnchors anchors, CertificateTrustOptions options,
    std::shared_ptr<prometheus::Registry> registry, const Clock& clock) {
  if (bus == nullptr) return absl::InvalidArgumentError("certificate trust: no bus");
  std::unique_ptr<CertificateTrust> t(
      new CertificateTrust(std::move(anchors), std::move(options), clock));
  const int64_t now = clock.NowUnixMillis();
  CHASQUI_ASSIGN_OR_RETURN(VerifiedCertificate own,
                           VerifyCertificate(t->options_.own_certificate,
                                             t->directory_.anchors(), t->options_.env, now));
  const v1::CertificateRole want = t->options_.own_role;
  if (want != v1::CERTIFICATE_ROLE_ENTITY && want != v1::CERTIFICATE_ROLE_ROUTER) {
    return absl::InvalidArgumentError(fmt::format(
        "certificate trust is for gateways (role entity) and routers, not {}",
        CertificateRoleName(want)));
  }
  if (own.role != want || own.entity != t->options_.entity) {
    return absl::InvalidArgumentError(fmt::format(
        "certificate {} is a {} certificate of {}; this {} needs {} certificate of {}",
        own.serial, CertificateRoleName(own.role), own.entity,
        want == v1::CERTIFICATE_ROLE_ROUTER ? "router" : "gateway",
        want == v1::CERTIFICATE_ROLE_ROUTER ? "a router" : "an entity (gateway)",
        t->options_.entity));
  }
  t->own_serials_.insert(own.serial);
  t->own_serial_ = own.serial;
  t->own_ = own;
  CHASQUI_RETURN_IF_ERROR(t->directory_.AddCertificates({t->options_.own_certificate}, now));

  t->registry_ = registry != nullptr ? std::move(registry)
                                     : std::make_shared<prometheus::Registry>();
  const prometheus::Labels labels = {{"env", t->options_.env}, {"entity", t->options_.entity}};
  const std::string& prefix = t->options_.metric_prefix;
  if (t->options_.check_unrequested) {
    t->unrequested_counter_ =
        &prometheus::BuildCounter()
             .Name(prefix + "_unrequested_certificates_total")
             .Help("Gateway certificates in this entity's name that this gateway did not "
                   "request (each counted once): someone may be impersonating the entity")
             .Register(*t->registry_)
             .Add(labels);
  }
  t->version_gauge_ = &prometheus::BuildGauge()
                           .Name(prefix + "_revocation_list_version")
                           .Help("Version of the revocation list held (0: none yet)")
                           .Register(*t->registry_)
                           .Add(labels);
  t->valid_until_gauge_ =
      &prometheus::BuildGauge()
           .Name(prefix + "_revocation_list_valid_until_seconds")
           .Help("Unix time after which the held revocation list is stale and traffic is "
                 "refused (UNAVAILABLE)")
           .Register(*t->registry_)
           .Add(labels);
  t->expiry_gauge_ = &prometheus::BuildGauge()
                          .Name(prefix + "_certificate_expiry_timestamp_seconds")
                          .Help("Unix time at which this process's own certificate expires: "
                                "enrol a new key before it")
                          .Register(*t->registry_)
                          .Add(labels);
  t->expiry_gauge_->Set(static_cast<double>(own.not_after_ms) / 1000.0);

  std::string inbox = t->options_.inbox_prefix;
  if (inbox.empty()) {
    PublicIdentity who;
    who.entity = t->options_.entity;
    who.env = t->options_.env;
    who.role = want == v1::CERTIFICATE_ROLE_ROUTER ? Role::kRouter : Role::kEntity;
    inbox = CryptoInboxPrefix(who);
  }
  CHASQUI_ASSIGN_OR_RETURN(t->client_,
                           CryptoClient::Create(bus, inbox, t->options_.crypto_timeout));
  CertificateTrust* raw = t.get();
  CHASQUI_ASSIGN_OR_RETURN(
      t->revocations_, bus->Subscribe(kRevokedEventSubject, [raw](const BusMessage& msg) {
        raw->OnRevocationList(msg.data);
      }));
  if (absl::Status s = t->Refresh(); !s.ok()) {
    CHQ_LOG_WARN("certificate trust {} {}: first refresh incomplete (retrying every {} s): {}",
                 t->options_.entity, t->options_.env, absl::ToInt64Seconds(t->options_.refresh),
                 MessageOf(s));
  }
  t->bus_ = bus;
  t->refresher_ = std::thread([raw] { raw->RefreshLoop(); });
  CHQ_LOG_INFO("certificate trust {} {}: own certificate {}, {} roots pinned, {} certificates, "
               "revocation list version {}",
               t->options_.entity, t->options_.env, own.serial,
               t->directory_.anchors().anchors().size(), t->directory_.size(),
               t->directory_.revocation_version());
  return t;
}

CertificateTrust::~CertificateTrust() {
  {
    absl::MutexLock lock(&wake_mu_);
    stopping_ = true;
  }
  if (refresher_.joinable()) refresher_.join();
  revocations_.reset();  // waits for a handler in progress
  client_.reset();
}

absl::StatusOr<std::shared_ptr<const TrustStore>> CertificateTrust::Current() const {
  const int64_t valid_until = valid_until_ms_.load(std::memory_order_acquire);
  if (valid_until == 0) {
    return absl::UnavailableError(fmt::format(
        "no revocation list for {} yet: refusing traffic until one arrives from the crypto "
        "service",
        options_.env));
  }
  const int64_t now = clock_.NowUnixMillis();
  if (now > valid_until) {
    return absl::UnavailableError(fmt::format(
        "the revocation list for {} (version {}) is stale: valid until {}, now {}; refusing "
        "traffic until a fresh list arrives from the crypto service",
        options_.env, applied_version_.load(), valid_until, now));
  }
  return store_.load(std::memory_order_acquire);
}

void CertificateTrust::Rebuild() {
  absl::MutexLock rebuilding(&rebuild_mu_);
  const int64_t now = clock_.NowUnixMillis();
  auto store = directory_.BuildTrustStore(now);
  const uint64_t version = directory_.revocation_version();
  const int64_t valid_until = directory_.revocation_valid_until_ms();
  if (store.ok()) {
    store_.store(std::make_shared<const TrustStore>(*std::move(store)),
                 std::memory_order_release);
  }
  // Published after the store, so a reader that sees the new list also sees its store.
  applied_version_.store(version);
  valid_until_ms_.store(valid_until, std::memory_order_release);
  if (version_gauge_ != nullptr) {
    version_gauge_->Set(static_cast<double>(version));
    valid_until_gauge_->Set(static_cast<double>(valid_until) / 1000.0);
  }
}

void CertificateTrust::OnRevocationList(std::string_view signed_list) {
  const uint64_t before = directory_.revocation_version();
  absl::Status s = directory_.ApplyRevocationList(signed_list, clock_.NowUnixMillis());
  if (absl::IsPermissionDenied(s)) return;  // another environment's list
  if (!s.ok()) {
    CHQ_LOG_WARN("revocation list event refused: {}", MessageOf(s));
    // Signed by a root not pinned yet (a rotation): its endorsement is in the directory.
    if (absl::IsNotFound(s)) WakeRefresher();
    return;
  }
  Rebuild();
  if (directory_.revocation_version() != before) {
    CHQ_LOG_INFO("revocation list {} version {} applied (valid until {})", options_.env,
                 directory_.revocation_version(), directory_.revocation_valid_until_ms());
  }
}

void CertificateTrust::AddFromReply(const v1::DirectoryReply& reply) {
  std::vector<std::string> certs;
  certs.reserve(reply.certificates_size());
  for (const v1::Certificate& c : reply.certificates()) certs.push_back(c.SerializeAsString());
  // Each one is verified; a bad one is logged and the good ones are kept.
  if (absl::Status s = directory_.AddCertificates(certs, clock_.NowUnixMillis()); !s.ok()) {
    CHQ_LOG_WARN("directory answer: a certificate was refused: {}", MessageOf(s));
  }
}

absl::Status CertificateTrust::FetchCertificates(v1::DirectoryRequest request) {
  request.set_env(options_.env);
  ++directory_requests_;
  CHASQUI_ASSIGN_OR_RETURN(v1::DirectoryReply reply, client_->Directory(request));
  AddFromReply(reply);
  return absl::OkStatus();
}

absl::Status CertificateTrust::PreloadGateways() {
  uint64_t from = 1;
  for (;;) {
    v1::DirectoryRequest request;
    request.set_env(options_.env);
    request.set_gateways(true);
    request.set_from_serial(from);
    ++directory_requests_;
    CHASQUI_ASSIGN_OR_RETURN(v1::DirectoryReply reply, client_->Directory(request));
    AddFromReply(reply);
    if (reply.certificates_size() < kDirectoryPage) return absl::OkStatus();
    v1::CertificateBody last;
    if (!last.ParseFromString(reply.certificates(reply.certificates_size() - 1).body())) {
      return absl::DataLossError("directory answer: a certificate body does not parse");
    }
    from = last.serial() + 1;
  }
}

bool CertificateTrust::FetchDue(const std::string& key) {
  const int64_t now = clock_.NowMonoNanos();
  if (last_fetch_.size() > kMaxRememberedFetches) last_fetch_.clear();
  auto [it, fresh] = last_fetch_.try_emplace(key, FetchMark{now, {}});
  if (fresh) return true;
  if (now - it->second.at_ns < absl::ToInt64Nanoseconds(options_.fetch_backoff)) return false;
  it->second.at_ns = now;
  return true;
}

void CertificateTrust::MarkFetch(const std::string& key, const absl::Status& outcome) {
  auto it = last_fetch_.find(key);
  if (it == last_fetch_.end()) return;
  it->second.failure = outcome.ok() ? std::string() : std::string(MessageOf(outcome));
}

std::string CertificateTrust::LastFetchFailure(const std::string& key) {
  auto it = last_fetch_.find(key);
  return it == last_fetch_.end() ? std::string() : it->second.failure;
}

absl::StatusOr<std::shared_ptr<const TrustStore>> CertificateTrust::FetchEntity(
    std::string_view entity) {
  CHASQUI_RETURN_IF_ERROR(Current().status());
  const std::string key = fmt::format("entity/{}", entity);
  std::string failure;
  {
    absl::MutexLock lock(&fetch_mu_);
    if (FetchDue(key)) {
      v1::DirectoryRequest req;
      req.set_entity(std::string(entity));
      absl::Status s = FetchCertificates(std::move(req));
      MarkFetch(key, s);
      if (!s.ok()) {
        CHQ_LOG_WARN("fetching the certificates of {} failed: {}", entity, MessageOf(s));
      } else {
        Rebuild();
      }
    }
    failure = LastFetchFailure(key);
  }
  if (entity == options_.entity && options_.check_unrequested) CheckOwnEntity();
  CHASQUI_ASSIGN_OR_RETURN(std::shared_ptr<const TrustStore> store, Current());
  if (!failure.empty() && store->Find(entity, Role::kEntity) == nullptr) {
    // Not "unknown": nobody could be asked.
    return absl::UnavailableError(fmt::format(
        "no certificate of {} is held here and the crypto service's directory could not be "
        "asked about it ({}): retry shortly",
        entity, failure));
  }
  return store;
}

absl::StatusOr<std::shared_ptr<const TrustStore>> CertificateTrust::FetchSerial(uint64_t serial) {
  auto found = directory_.Lookup(serial, clock_.NowUnixMillis());
  if (absl::IsNotFound(found.status())) {
    const std::string key = fmt::format("serial/{}", serial);
    std::string failure;
    {
      absl::MutexLock lock(&fetch_mu_);
      if (FetchDue(key)) {
        v1::DirectoryRequest req;
        req.add_serials(serial);
        absl::Status s = FetchCertificates(std::move(req));
        MarkFetch(key, s);
        if (!s.ok()) {
          CHQ_LOG_WARN("fetching certificate {} failed: {}", serial, MessageOf(s));
        } else {
          Rebuild();
        }
      }
      failure = LastFetchFailure(key);
    }
    found = directory_.Lookup(serial, clock_.NowUnixMillis());
    if (absl::IsNotFound(found.status()) && !failure.empty()) {
      // We cannot tell that it is unknown: the directory did not answer.
      return absl::UnavailableError(fmt::format(
          "certificate {} is not held here and the crypto service's directory could not be "
          "asked about it ({}): retry shortly",
          serial, failure));
    }
  }
  CHASQUI_RETURN_IF_ERROR(found.status());
  return Current();
}

absl::StatusOr<std::shared_ptr<const TrustStore>> CertificateTrust::FetchSerials(
    const std::vector<uint64_t>& serials) {
  CHASQUI_RETURN_IF_ERROR(Current().status());
  const int64_t now = clock_.NowUnixMillis();
  {
    absl::MutexLock lock(&fetch_mu_);
    v1::DirectoryRequest req;
    std::vector<std::string> keys;
    for (uint64_t serial : serials) {
      if (static_cast<size_t>(req.serials_size()) >= kMaxSerialsPerFetch) break;
      if (!absl::IsNotFound(directory_.Lookup(serial, now).status())) continue;  // held
      std::string key = fmt::format("serial/{}", serial);
      if (FetchDue(key)) {
        req.add_serials(serial);
        keys.push_back(std::move(key));
      }
    }
    if (req.serials_size() > 0) {
      const int n = req.serials_size();
      absl::Status s = FetchCertificates(std::move(req));
      for (const std::string& key : keys) MarkFetch(key, s);
      if (!s.ok()) {
        CHQ_LOG_WARN("fetching {} certificates failed: {}", n, MessageOf(s));
      } else {
        Rebuild();
      }
    }
  }
  return Current();
}

void CertificateTrust::CheckOwnEntity() {
  auto certs = directory_.ByEntity(options_.entity, clock_.NowUnixMillis());
  if (!certs.ok()) return;  // not fresh: nothing is trusted anyway
  for (const auto& c : *certs) {
    if (own_serials_.contains(c->serial)) continue;
    {
      absl::MutexLock lock(&warned_mu_);
      if (!reported_.insert(c->serial).second) continue;
    }
    if (c->role == v1::CERTIFICATE_ROLE_ENTITY) {
      ++unrequested_;
      unrequested_counter_->Increment();
      CHQ_LOG_ERROR(
          "UNREQUESTED CERTIFICATE: the directory holds gateway certificate {} in {}'s name "
          "({}, valid {}..{}, root {}) that this gateway did not request (its own is {}); if "
          "nobody at {} enrolled it, have the operator revoke it now and find out who used the "
          "enrolment token",
          c->serial, options_.entity, options_.env, c->not_before_ms, c->not_after_ms,
          c->issuer_key_id, own_serial_, options_.entity);
    } else {
      CHQ_LOG_INFO("certificate {} of {} ({} {}) seen in the directory", c->serial,
                   options_.entity, CertificateRoleName(c->role), c->subject);
    }
  }
}

void CertificateTrust::ApplyEndorsements(const v1::DirectoryReply& reply) {
  const size_t before = directory_.anchors().anchors().size();
  for (const v1::RootEndorsement& e : reply.anchors()) {
    absl::Status s = directory_.ApplyEndorsement(e, clock_.NowUnixMillis());
    // FailedPrecondition: signed by a root past its validity (an old rotation's endorsement,
    // already applied while that root was valid). Anything else is worth a line.
    if (!s.ok() && !absl::IsFailedPrecondition(s)) {
      CHQ_LOG_WARN("root endorsement from the directory refused: {}", MessageOf(s));
    }
  }
  if (const size_t after = directory_.anchors().anchors().size(); after != before) {
    CHQ_LOG_INFO("certificate trust {} {}: {} roots pinned now (was {}): learnt from their "
                 "endorsements",
                 options_.entity, options_.env, after, before);
  }
}

absl::Status CertificateTrust::Refresh() {
  // The endorsements first, so a list signed by a new root verifies.
  absl::Status first = [&]() -> absl::Status {
    v1::DirectoryRequest req;
    req.set_env(options_.env);
    req.set_revocation_list(true);
    req.set_anchors(true);
    CHASQUI_ASSIGN_OR_RETURN(v1::DirectoryReply reply, client_->Directory(req));
    ApplyEndorsements(reply);
    return directory_.ApplyRevocationList(reply.revocation_list().SerializeAsString(),
                                          clock_.NowUnixMillis());
  }();
  // A newer list takes effect now, not after the certificate fetches below.
  if (directory_.revocation_version() != applied_version_.load()) Rebuild();
  if (!first.ok() && !absl::IsFailedPrecondition(first)) {
    CHQ_LOG_WARN("catching up on revocations for {} failed: {}", options_.env, MessageOf(first));
  } else {
    first = absl::OkStatus();  // an older list than the one held is no failure
  }
  std::vector<std::string> entities = {kRouterEntity};
  if (options_.entity != kRouterEntity) entities.push_back(options_.entity);  // a gateway's own
  for (const std::string& entity : entities) {
    v1::DirectoryRequest req;
    req.set_entity(entity);
    absl::Status s;
    {
      absl::MutexLock lock(&fetch_mu_);
      s = FetchCertificates(std::move(req));
    }
    if (!s.ok() && first.ok()) first = s;
  }
  // The peers asked about before (a provider called: FetchEntity): a new key of theirs (a
  // rotation's overlap) is learnt here, so a consumer seals for it within one refresh interval
  // rather than only once the old key is revoked. A peer's failure is not this trust's: it is
  // retried at the next refresh, and FetchEntity reports it to the caller that needs it.
  std::vector<std::string> peers;
  {
    absl::MutexLock lock(&fetch_mu_);
    for (const auto& [key, fetch] : last_fetch_) {
      if (!absl::StartsWith(key, "entity/")) continue;
      std::string peer = key.substr(7);
      if (std::find(entities.begin(), entities.end(), peer) == entities.end()) {
        peers.push_back(std::move(peer));
      }
    }
  }
  for (const std::string& peer : peers) {
    v1::DirectoryRequest req;
    req.set_entity(peer);
    absl::MutexLock lock(&fetch_mu_);
    (void)FetchCertificates(std::move(req));
  }
  if (options_.preload_gateways) {
    absl::Status s;
    {
      absl::MutexLock lock(&fetch_mu_);
      s = PreloadGateways();
    }
    if (!s.ok() && first.ok()) first = s;
  }
  Rebuild();
  if (options_.check_unrequested) CheckOwnEntity();
  return first;
}

void CertificateTrust::WakeRefresher() {
  absl::MutexLock lock(&wake_mu_);
  wake_ = true;
}

void CertificateTrust::RefreshLoop() {
  // Checked every second at most: a reconnect, a wake-up, or the time for the next refresh.
  constexpr absl::Duration kTick = absl::Seconds(1);
  int64_t seen_reconnects = bus_->Reconnects();
  bool catch_up_pending = false;  // a reconnect whose catch-up has not succeeded yet
  // Retries of a failed catch-up back off (1 s, 2 s, 4 s ... up to `refresh`), so a crypto
  // service that stays away does not cost a log line a second.
  absl::Duration catch_up_wait = kTick;
  absl::Time catch_up_at = absl::InfiniteFuture();
  absl::Time next_refresh = absl::Now();
  auto schedule = [&] {
    // Sooner when the held list nears its valid_until, so a missed event is caught up before
    // the list goes stale.
    absl::Duration wait = options_.refresh;
    const int64_t valid_until = valid_until_ms_.load();
    if (valid_until > 0) {
      const int64_t left_ms = valid_until - clock_.NowUnixMillis();
      // Once stale, every 5 s at most: often enough to recover soon, rarely enough not to
      // flood the log with one failed catch-up a second.
      wait = left_ms > 0
                 ? std::min(wait, std::max(absl::Seconds(1), absl::Milliseconds(left_ms / 2)))
                 : std::min(wait, absl::Seconds(5));
    }
    next_refresh = absl::Now() + wait;
  };
  schedule();
  for (;;) {
    bool woken = false;
    {
      absl::MutexLock lock(&wake_mu_);
      wake_mu_.AwaitWithTimeout(absl::Condition(this, &CertificateTrust::WokenOrStopping),
                                std::max(absl::ZeroDuration(),
                                         std::min({kTick, next_refresh - absl::Now(),
                                                   catch_up_at - absl::Now()})));
      if (stopping_) return;
      woken = wake_;
      wake_ = false;
    }
    const int64_t reconnects = bus_->Reconnects();
    if (reconnects != seen_reconnects) {
      seen_reconnects = reconnects;
      catch_up_pending = true;
      catch_up_wait = kTick;
      catch_up_at = absl::Now();
      CHQ_LOG_INFO("certificate trust {} {}: the bus reconnected: catching up on what was "
                   "missed",
                   options_.entity, options_.env);
    }
    const absl::Time now = absl::Now();
    if (!woken && now < next_refresh && !(catch_up_pending && now >= catch_up_at)) continue;
    const absl::Status s = Refresh();
    if (catch_up_pending && !s.ok()) {
      catch_up_at = absl::Now() + catch_up_wait;
      catch_up_wait = std::min(catch_up_wait * 2, std::max(kTick, options_.refresh));
    } else if (catch_up_pending) {
      catch_up_pending = false;
      catch_up_at = absl::InfiniteFuture();
      CHQ_LOG_INFO("certificate trust {} {}: caught up after the reconnect (revocation list "
                   "version {})",
                   options_.entity, options_.env, directory_.revocation_version());
    }
    schedule();
  }
}

}  // namespace chasqui
