#include "services/crypto/authority.h"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>

#include "common/core/files.h"
#include "common/core/log.h"
#include "common/core/names.h"
#include "common/core/status.h"
#include "common/trust/certificate.h"
#include "common/trust/revocation.h"
#include "common/trust/signed_message.h"
#include "common/trust/statement.h"
#include "common/trust/transparency.h"
#include "fmt/format.h"
#include "services/crypto/root_key.h"

namespace chasqui {
namespace {

constexpr char kCurrentRootKey[] = "meta/current_root";
constexpr char kAnchorPrefix[] = "anchor/";
constexpr char kAnchorEnd[] = "anchor0";  // '0' sorts right after '/'
constexpr char kCertPrefix[] = "cert/";
constexpr char kCertEnd[] = "cert0";
constexpr char kLogPrefix[] = "log/";
constexpr char kLogEnd[] = "log0";
constexpr size_t kMaxCertificatesPerReply = 1000;
constexpr size_t kMaxLogEntriesPerReply = 500;

std::string CertKey(uint64_t serial) { return kCertPrefix + BigEndian64(serial); }
std::string LogKey(uint64_t seq) { return kLogPrefix + BigEndian64(seq); }
std::string EntityPrefix(std::string_view env, std::string_view entity) {
  return fmt::format("ent/{}/{}/", env, entity);
}
std::string ListKey(std::string_view env) { return fmt::format("rev/{}", env); }


}  // namespace

// ---- tokens ----

std::string TokenKey(std::string_view token) {
  std::string m = "chasqui/v1/enrolment-token";
  m.push_back('\0');
  m.append(token);
  const Hash32 h = Blake2b256(m);
  return "tok/" + ToHex(AsView(h));
}

absl::StatusOr<IssuedToken> MakeEnrolmentToken(std::string_view entity, std::string_view subject,
                                               std::string_view role_name, std::string_view env,
                                               int64_t ttl_ms, const Clock& clock) {
  CHASQUI_RETURN_IF_ERROR(ValidateName("entity", entity));
  CHASQUI_RETURN_IF_ERROR(ValidateEnv(env));
  CHASQUI_ASSIGN_OR_RETURN(v1::CertificateRole role, ParseCertificateRole(role_name));
  std::string subj(subject);
  if (KindOfRole(role) == v1::CERTIFICATE_KIND_PERSON) {
    if (subj.empty()) {
      return absl::InvalidArgumentError(fmt::format(
          "role {} is held by a person: name them with --subject (their person id)", role_name));
    }
    CHASQUI_RETURN_IF_ERROR(ValidateName("subject", subj));
  } else if (subj.empty()) {
    subj = std::string(entity);
  } else if (subj != entity) {
    return absl::InvalidArgumentError(fmt::format(
        "a {} certificate's subject is its entity/service name: drop --subject or make it {}",
        role_name, entity));
  }
  if (ttl_ms <= 0) return absl::InvalidArgumentError("token lifetime must be positive");
  IssuedToken t;
  t.token = ToHex(RandomString(32));
  t.record.set_subject(subj);
  t.record.set_role(role);
  t.record.set_entity(std::string(entity));
  t.record.set_env(std::string(env));
  t.record.set_created_at_ms(clock.NowUnixMillis());
  t.record.set_expires_at_ms(clock.NowUnixMillis() + ttl_ms);
  return t;
}

absl::Status StoreToken(KvStore* store, const IssuedToken& token) {
  return store->Put(TokenKey(token.token), token.record.SerializeAsString(), Durability::kSynced);
}

absl::Status SpoolToken(const std::string& spool_dir, const IssuedToken& token) {
  const std::string key = TokenKey(token.token);
  return WriteFileDurably(fmt::format("{}/{}.tok", spool_dir, key.substr(4)),
                          token.record.SerializeAsString(), 0600, /*replace=*/false);
}

// ---- roots ----

absl::Status AppendEndorsement(KvStore* store, const v1::RootEndorsement& endorsement,
                               KvBatch* batch) {
  uint64_t next = 1;
  auto last = store->Last(kAnchorPrefix, kAnchorEnd);
  if (last.ok()) {
    next = FromBigEndian64(std::string_view(last->first).substr(std::strlen(kAnchorPrefix))) + 1;
  } else if (!absl::IsNotFound(last.status())) {
    return last.status();
  }
  batch->Put(kAnchorPrefix + BigEndian64(next), endorsement.SerializeAsString());
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::RootEndorsement>> LoadEndorsements(KvStore* store) {
  std::vector<v1::RootEndorsement> out;
  absl::Status bad = absl::OkStatus();
  CHASQUI_RETURN_IF_ERROR(store->Scan(kAnchorPrefix, kAnchorEnd,
                                      [&](std::string_view, std::string_view v) {
                                        v1::RootEndorsement e;
                                        if (!e.ParseFromArray(v.data(), static_cast<int>(v.size()))) {
                                          bad = absl::DataLossError("stored root endorsement does not parse");
                                          return false;
                                        }
                                        out.push_back(std::move(e));
                                        return true;
                                      }));
  CHASQUI_RETURN_IF_ERROR(bad);
  return out;
}

absl::StatusOr<TrustAnchors> AnchorsFromEndorsements(
    const std::vector<v1::RootEndorsement>& endorsements, int64_t now_ms) {
  if (endorsements.empty()) {
    return absl::FailedPreconditionError("no root yet: run `chasqui-crypto init` first");
  }
  v1::RootAnchorBody first;
  if (!first.ParseFromString(endorsements[0].body())) {
    return absl::DataLossError("first root endorsement does not parse");
  }
  TrustAnchor self;
  CHASQUI_ASSIGN_OR_RETURN(self.sign_pk, ToArray<32>(first.sign_pk(), "root sign_pk"));
  self.key_id = RootKeyId(self.sign_pk);
  self.not_before_ms = first.not_before_ms();
  self.not_after_ms = first.not_after_ms();
  // The first root vouches for itself (it is what operators pin at `init`); the stored
  // signature still has to hold.
  TrustAnchors anchors({self});
  for (const v1::RootEndorsement& e : endorsements) {
    v1::RootAnchorBody b;
    b.ParseFromString(e.body());
    // Endorsements are checked at the time they were made: a root that signed during its
    // validity stays a valid endorser of what it signed then.
    absl::Status s = anchors.ApplyEndorsement(e, b.issued_at_ms());
    if (!s.ok()) {
      return absl::DataLossError(
          fmt::format("stored root endorsement chain does not hold: {}", MessageOf(s)));
    }
  }
  (void)now_ms;
  return anchors;
}

absl::StatusOr<std::string> CurrentRootId(KvStore* store) {
  auto id = store->Get(kCurrentRootKey);
  if (absl::IsNotFound(id.status())) {
    return absl::FailedPreconditionError(
        fmt::format("{}: no root yet: run `chasqui-crypto init` first", store->path()));
  }
  return id;
}

// ---- the authority ----

CertificateAuthority::CertificateAuthority(const AuthorityOptions& options, KvStore* store,
                                           SigningKey root, const Clock& clock)
    : options_(options),
      store_(store),
      root_(std::move(root)),
      root_key_id_(RootKeyId(root_.public_key())),
      clock_(clock) {}

absl::StatusOr<std::unique_ptr<CertificateAuthority>> CertificateAuthority::Open(
    const AuthorityOptions& options, KvStore* store, SigningKey root, const Clock& clock) {
  for (const std::string& env : options.envs) CHASQUI_RETURN_IF_ERROR(ValidateEnv(env));
  CHASQUI_ASSIGN_OR_RETURN(std::string current, CurrentRootId(store));
  const std::string given = RootKeyId(root.public_key());
  if (current != given) {
    return absl::FailedPreconditionError(fmt::format(
        "the root key given is {}, but the store's current root is {}", given, current));
  }
  CHASQUI_ASSIGN_OR_RETURN(std::vector<v1::RootEndorsement> endorsements, LoadEndorsements(store));
  const int64_t now = clock.NowUnixMillis();
  CHASQUI_ASSIGN_OR_RETURN(TrustAnchors anchors, AnchorsFromEndorsements(endorsements, now));
  std::unique_ptr<CertificateAuthority> ca(
      new CertificateAuthority(options, store, std::move(root), clock));
  absl::MutexLock lock(&ca->mu_);
  ca->anchors_ = std::move(anchors);
  CHASQUI_RETURN_IF_ERROR(ca->anchors_.Resolve(current, now, "current root").status());
  auto last = store->Last(kLogPrefix, kLogEnd);
  if (last.ok()) {
    v1::TransparencyLogEntry e;
    if (!e.ParseFromString(last->second)) {
      return absl::DataLossError("last transparency log entry does not parse");
    }
    ca->log_size_ = e.sequence();
    ca->log_head_ = e.entry_hash();
  } else if (absl::IsNotFound(last.status())) {
    ca->log_head_ = std::string(32, '\0');
  } else {
    return last.status();
  }
  for (const std::string& env : options.envs) {
    auto stored = store->Get(ListKey(env));
    if (stored.ok()) {
      v1::SignedRevocationList l;
      v1::RevocationListBody b;
      if (!l.ParseFromString(*stored) || !b.ParseFromString(l.body())) {
        return absl::DataLossError(fmt::format("stored revocation list {} does not parse", env));
      }
      ca->lists_[env] = l;
      if (b.issuer_key_id() != ca->root_key_id_ || now > b.valid_until_ms()) {
        CHASQUI_RETURN_IF_ERROR(ca->IssueList(env, &b, {}).status());
      }
    } else if (absl::IsNotFound(stored.status())) {
      CHASQUI_RETURN_IF_ERROR(ca->IssueList(env, nullptr, {}).status());
    } else {
      return stored.status();
    }
  }
  CHQ_LOG_INFO("authority open: root {} envs {} log size {}", ca->root_key_id_,
               fmt::join(options.envs, ","), ca->log_size_);
  return ca;
}

bool CertificateAuthority::Serves(std::string_view env) const {
  return std::find(options_.envs.begin(), options_.envs.end(), env) != options_.envs.end();
}

TrustAnchors CertificateAuthority::anchors() const {
  absl::MutexLock lock(&mu_);
  return anchors_;
}

absl::Status CertificateAuthority::ImportSpool() {
  if (options_.token_spool_dir.empty()) return absl::OkStatus();
  DIR* d = ::opendir(options_.token_spool_dir.c_str());
  if (d == nullptr) return absl::OkStatus();  // nothing spooled yet
  std::vector<std::string> files;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.size() == 64 + 4 && name.ends_with(".tok")) files.push_back(name);
  }
  ::closedir(d);
  for (const std::string& name : files) {
    const std::string path = options_.token_spool_dir + "/" + name;
    const std::string key = "tok/" + name.substr(0, 64);
    auto text = ReadFileToString(path, "spooled token");
    if (!text.ok()) continue;
    v1::EnrolmentTokenRecord r;
    if (!r.ParseFromString(*text)) {
      CHQ_LOG_WARN("spooled token {} does not parse: left in place", name.substr(0, 12));
      continue;
    }
    // A record already in the store wins: a spool file never brings back a spent token.
    auto existing = store_->Get(key);
    if (absl::IsNotFound(existing.status())) {
      CHASQUI_RETURN_IF_ERROR(store_->Put(key, *text, Durability::kSynced));
      CHQ_LOG_INFO("token imported: entity={} subject={} role={} env={}", r.entity(),
                   r.subject(), CertificateRoleName(r.role()), r.env());
    } else if (!existing.ok()) {
      return existing.status();
    }
    ::unlink(path.c_str());
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> CertificateAuthority::NewSerial() {
  for (int i = 0; i < 16; ++i) {
    uint64_t serial = 0;
    RandomBytes(reinterpret_cast<uint8_t*>(&serial), sizeof serial);
    serial &= (uint64_t{1} << 53) - 1;
    if (serial == 0) continue;
    auto existing = store_->Get(CertKey(serial));
    if (absl::IsNotFound(existing.status())) return serial;
    if (!existing.ok()) return existing.status();
  }
  return absl::InternalError("could not draw an unused serial");
}

absl::StatusOr<v1::EnrolmentReply> CertificateAuthority::Enrol(std::string_view request) {
  v1::EnrolmentRequest req;
  v1::EnrolmentRequestBody b;
  if (!req.ParseFromArray(request.data(), static_cast<int>(request.size())) ||
      !b.ParseFromString(req.body())) {
    return absl::InvalidArgumentError(
        "enrolment request: not an EnrolmentRequest (truncated or garbage)");
  }
  if (b.sign_pk().size() != 32 || req.signature().size() != 64 ||
      !(b.kx_pk().empty() || b.kx_pk().size() == 32)) {
    return absl::InvalidArgumentError(
        "enrolment request: sign_pk must be 32 bytes, kx_pk 32 or none, signature 64");
  }
  if (!Serves(b.env())) {
    return absl::InvalidArgumentError(fmt::format(
        "enrolment request: environment \"{}\" is not served here", Printable(b.env())));
  }
  CHASQUI_ASSIGN_OR_RETURN(SignPublicKey pk, ToArray<32>(b.sign_pk(), "sign_pk"));
  CHASQUI_ASSIGN_OR_RETURN(SignatureBytes sig, ToArray<64>(req.signature(), "signature"));
  if (!VerifySignature(pk, SignedMessage(EnrolmentTag(b.env()), req.body()), sig)) {
    return absl::UnauthenticatedError(
        "enrolment request: signature does not verify with the submitted sign_pk (sign the "
        "request with the key to be certified)");
  }

  absl::MutexLock lock(&mu_);
  CHASQUI_RETURN_IF_ERROR(ImportSpool());
  const std::string token_key = TokenKey(b.token());
  auto stored = store_->Get(token_key);
  if (absl::IsNotFound(stored.status())) {
    return absl::UnauthenticatedError("enrolment token not recognised");
  }
  if (!stored.ok()) return stored.status();
  v1::EnrolmentTokenRecord tok;
  if (!tok.ParseFromString(*stored)) return absl::DataLossError("stored token does not parse");
  const int64_t now = clock_.NowUnixMillis();
  if (tok.used_at_ms() != 0) {
    return absl::PermissionDeniedError(fmt::format(
        "enrolment token already used at {} (certificate {}); ask the operator for a new one",
        tok.used_at_ms(), tok.issued_serial()));
  }
  if (now > tok.expires_at_ms()) {
    return absl::PermissionDeniedError(fmt::format(
        "enrolment token expired at {} (now {}); ask the operator for a new one",
        tok.expires_at_ms(), now));
  }
  if (tok.env() != b.env()) {
    return absl::PermissionDeniedError(fmt::format(
        "enrolment token was issued for environment {}, the request is for {}", tok.env(),
        b.env()));
  }
  if (tok.role() != b.role()) {
    return absl::PermissionDeniedError(fmt::format(
        "enrolment token was issued for role {}, the request asks for {}",
        CertificateRoleName(tok.role()), CertificateRoleName(b.role())));
  }
  if (tok.entity() != b.entity() || tok.subject() != b.subject()) {
    return absl::PermissionDeniedError(fmt::format(
        "enrolment token was issued for {} of entity {}, the request names {} of {}",
        tok.subject(), tok.entity(), Printable(b.subject()), Printable(b.entity())));
  }

  v1::CertificateBody body;
  CHASQUI_ASSIGN_OR_RETURN(uint64_t serial, NewSerial());
  body.set_serial(serial);
  body.set_subject(b.subject());
  body.set_kind(KindOfRole(b.role()));
  body.set_role(b.role());
  body.set_entity(b.entity());
  body.set_env(b.env());
  body.set_sign_pk(b.sign_pk());
  body.set_kx_pk(b.kx_pk());
  body.set_not_before_ms(now);
  // A certificate never outlives the root that signed it.
  const TrustAnchor* root = anchors_.Find(root_key_id_);
  body.set_not_after_ms(std::min(now + options_.certificate_validity_ms,
                                 root != nullptr ? root->not_after_ms : now));
  body.set_issuer_key_id(root_key_id_);
  if (absl::Status s = ValidateCertificateBody(body); !s.ok()) {
    return absl::InvalidArgumentError(fmt::format("enrolment request: {}", MessageOf(s)));
  }
  const v1::Certificate cert = SignCertificate(body, root_);
  const std::string cert_bytes = cert.SerializeAsString();

  v1::TransparencyLogEntry entry;
  entry.set_sequence(log_size_ + 1);
  entry.set_prev_hash(log_head_);
  entry.set_logged_at_ms(now);
  entry.set_certificate(cert_bytes);
  const Hash32 h = TransparencyEntryHash(entry.sequence(), entry.prev_hash(), now, cert_bytes);
  entry.set_entry_hash(std::string(AsView(h)));

  tok.set_used_at_ms(now);
  tok.set_issued_serial(serial);
  KvBatch batch;
  batch.Put(CertKey(serial), cert_bytes);
  batch.Put(EntityPrefix(body.env(), body.entity()) + BigEndian64(serial), "");
  batch.Put(LogKey(entry.sequence()), entry.SerializeAsString());
  batch.Put(token_key, tok.SerializeAsString());
  CHASQUI_RETURN_IF_ERROR(store_->Write(batch, Durability::kSynced));
  log_size_ = entry.sequence();
  log_head_ = entry.entry_hash();
  CHQ_LOG_INFO("certificate issued: serial={} subject={} role={} entity={} env={} log={}", serial,
               body.subject(), CertificateRoleName(body.role()), body.entity(), body.env(),
               entry.sequence());
  v1::EnrolmentReply reply;
  *reply.mutable_certificate() = cert;
  reply.set_log_sequence(entry.sequence());
  return reply;
}

absl::StatusOr<v1::DirectoryReply> CertificateAuthority::Directory(std::string_view request) {
  v1::DirectoryRequest req;
  if (!req.ParseFromArray(request.data(), static_cast<int>(request.size()))) {
    return absl::InvalidArgumentError("directory request: not a DirectoryRequest");
  }
  if (!Serves(req.env())) {
    return absl::InvalidArgumentError(fmt::format(
        "directory request: environment \"{}\" is not served here", Printable(req.env())));
  }
  v1::DirectoryReply reply;
  auto add_cert = [&](uint64_t serial) -> absl::Status {
    if (static_cast<size_t>(reply.certificates_size()) >= kMaxCertificatesPerReply) {
      return absl::OkStatus();
    }
    auto bytes = store_->Get(CertKey(serial));
    if (absl::IsNotFound(bytes.status())) return absl::OkStatus();
    if (!bytes.ok()) return bytes.status();
    v1::Certificate c;
    v1::CertificateBody b;
    if (!c.ParseFromString(*bytes) || !b.ParseFromString(c.body())) {
      return absl::DataLossError(fmt::format("stored certificate {} does not parse", serial));
    }
    if (b.env() == req.env()) *reply.add_certificates() = std::move(c);
    return absl::OkStatus();
  };
  for (uint64_t serial : req.serials()) CHASQUI_RETURN_IF_ERROR(add_cert(serial));
  if (!req.entity().empty()) {
    if (!IsValidName(req.entity())) {
      return absl::InvalidArgumentError("directory request: entity is not a valid name");
    }
    const std::string prefix = EntityPrefix(req.env(), req.entity());
    std::vector<uint64_t> serials;
    CHASQUI_RETURN_IF_ERROR(store_->Scan(prefix, prefix + "\xff",
                                         [&](std::string_view k, std::string_view) {
                                           if (k.size() == prefix.size() + 8) {
                                             serials.push_back(FromBigEndian64(k.substr(prefix.size())));
                                           }
                                           return serials.size() < kMaxCertificatesPerReply;
                                         }));
    for (uint64_t serial : serials) CHASQUI_RETURN_IF_ERROR(add_cert(serial));
  }
  if (req.gateways()) {
    // Every stored certificate is read to find the env's gateways: a router asks at start and
    // once per refresh, and certificates number in the thousands at most.
    const int64_t now = clock_.NowUnixMillis();
    absl::Status bad = absl::OkStatus();
    CHASQUI_RETURN_IF_ERROR(store_->Scan(
        CertKey(std::max<uint64_t>(req.from_serial(), 1)), kCertEnd,
        [&](std::string_view, std::string_view v) {
          v1::Certificate c;
          v1::CertificateBody b;
          if (!c.ParseFromArray(v.data(), static_cast<int>(v.size())) ||
              !b.ParseFromString(c.body())) {
            bad = absl::DataLossError("a stored certificate does not parse");
            return false;
          }
          if (b.env() == req.env() && b.role() == v1::CERTIFICATE_ROLE_ENTITY &&
              b.not_after_ms() >= now) {
            *reply.add_certificates() = std::move(c);
          }
          return static_cast<size_t>(reply.certificates_size()) < kMaxCertificatesPerReply;
        }));
    CHASQUI_RETURN_IF_ERROR(bad);
  }
  absl::MutexLock lock(&mu_);
  if (req.revocation_list()) *reply.mutable_revocation_list() = lists_.at(req.env());
  if (req.anchors()) {
    CHASQUI_ASSIGN_OR_RETURN(std::vector<v1::RootEndorsement> es, LoadEndorsements(store_));
    for (auto& e : es) *reply.add_anchors() = std::move(e);
  }
  if (req.log_limit() > 0) {
    const uint64_t from = std::max<uint64_t>(req.log_from_sequence(), 1);
    const size_t limit = std::min<size_t>(req.log_limit(), kMaxLogEntriesPerReply);
    absl::Status bad = absl::OkStatus();
    CHASQUI_RETURN_IF_ERROR(store_->Scan(LogKey(from), kLogEnd,
                                         [&](std::string_view, std::string_view v) {
                                           if (!reply.add_log_entries()->ParseFromArray(
                                                   v.data(), static_cast<int>(v.size()))) {
                                             bad = absl::DataLossError("log entry does not parse");
                                             return false;
                                           }
                                           return static_cast<size_t>(reply.log_entries_size()) < limit;
                                         }));
    CHASQUI_RETURN_IF_ERROR(bad);
  }
  return reply;
}

absl::StatusOr<v1::RevocationListBody> CertificateAuthority::ListBody(std::string_view env) const {
  auto it = lists_.find(std::string(env));
  v1::RevocationListBody b;
  if (it == lists_.end() || !b.ParseFromString(it->second.body())) {
    return absl::InternalError(fmt::format("no revocation list held for {}", env));
  }
  return b;
}

absl::StatusOr<v1::SignedRevocationList> CertificateAuthority::IssueList(
    std::string_view env, const v1::RevocationListBody* previous,
    const std::vector<v1::RevokedCertificate>& add) {
  const int64_t now = clock_.NowUnixMillis();
  v1::RevocationListBody b;
  if (previous != nullptr) b = *previous;
  b.set_env(std::string(env));
  b.set_version((previous != nullptr ? previous->version() : 0) + 1);
  b.set_issued_at_ms(now);
  b.set_valid_until_ms(now + options_.revocation_validity_ms);
  b.set_issuer_key_id(root_key_id_);
  for (const v1::RevokedCertificate& r : add) *b.add_revoked() = r;
  v1::SignedRevocationList l = SignRevocationList(b, root_);
  CHASQUI_RETURN_IF_ERROR(store_->Put(ListKey(env), l.SerializeAsString(), Durability::kSynced));
  lists_[std::string(env)] = l;
  CHQ_LOG_INFO("revocation list issued: env={} version={} revoked={} valid_until={}", env,
               b.version(), b.revoked_size(), b.valid_until_ms());
  return l;
}

absl::StatusOr<std::pair<v1::ControlBody, v1::CertificateRole>> CertificateAuthority::CheckControl(
    std::string_view request) {
  v1::ControlRequest req;
  v1::ControlBody b;
  if (!req.ParseFromArray(request.data(), static_cast<int>(request.size())) ||
      !b.ParseFromString(req.body()) || req.signature().size() != 64) {
    return absl::InvalidArgumentError(
        "control request: not a ControlRequest with a 64-byte signature (truncated or garbage)");
  }
  if (!Serves(b.env())) {
    return absl::InvalidArgumentError(fmt::format(
        "control request: environment \"{}\" is not served here", Printable(b.env())));
  }
  const int64_t now = clock_.NowUnixMillis();
  auto stored = store_->Get(CertKey(b.signer_serial()));
  if (absl::IsNotFound(stored.status())) {
    return absl::UnauthenticatedError(
        fmt::format("control request: signer certificate {} is unknown", b.signer_serial()));
  }
  if (!stored.ok()) return stored.status();
  auto cert = VerifyCertificate(*stored, anchors_, b.env(), now);
  if (!cert.ok()) {
    return absl::UnauthenticatedError(
        fmt::format("control request: signer certificate: {}", MessageOf(cert.status())));
  }
  CHASQUI_ASSIGN_OR_RETURN(v1::RevocationListBody list, ListBody(b.env()));
  for (const v1::RevokedCertificate& r : list.revoked()) {
    if (r.serial() == cert->serial) {
      return absl::PermissionDeniedError(fmt::format(
          "control request: signer certificate {} is revoked", cert->serial));
    }
  }
  CHASQUI_ASSIGN_OR_RETURN(SignatureBytes sig, ToArray<64>(req.signature(), "signature"));
  if (!VerifySignature(cert->sign_pk, SignedMessage(ControlTag(b.env()), req.body()), sig)) {
    return absl::UnauthenticatedError(fmt::format(
        "control request: signature does not verify with certificate {}", cert->serial));
  }
  if (b.sent_at_ms() < now - options_.control_window_ms ||
      b.sent_at_ms() > now + options_.control_window_ms) {
    return absl::FailedPreconditionError(fmt::format(
        "control request: sent_at {} is outside the ±{} ms window around {}", b.sent_at_ms(),
        options_.control_window_ms, now));
  }
  if (b.nonce().size() != 16) {
    return absl::InvalidArgumentError("control request: nonce must be 16 bytes");
  }
  for (auto it = seen_controls_.begin(); it != seen_controls_.end();) {
    if (it->second < now) {
      seen_controls_.erase(it++);
    } else {
      ++it;
    }
  }
  const std::string seen_key = BigEndian64(cert->serial) + b.nonce();
  if (!seen_controls_.emplace(seen_key, now + 2 * options_.control_window_ms).second) {
    return absl::AlreadyExistsError("control request: replayed (same signer and nonce)");
  }
  return std::make_pair(std::move(b), cert->role);
}

absl::StatusOr<v1::SignedRevocationList> CertificateAuthority::Revoke(std::string_view request) {
  absl::MutexLock lock(&mu_);
  CHASQUI_ASSIGN_OR_RETURN(auto checked, CheckControl(request));
  auto& [b, role] = checked;
  if (!b.has_revoke()) {
    return absl::InvalidArgumentError("control request on revoke: action is not revoke");
  }
  if (role != v1::CERTIFICATE_ROLE_OPERATOR) {
    return absl::PermissionDeniedError(fmt::format(
        "revoke: signer {} has role {}; only an operator may revoke", b.signer_serial(),
        CertificateRoleName(role)));
  }
  if (b.revoke().serials().empty()) {
    return absl::InvalidArgumentError("revoke: no serials named");
  }
  CHASQUI_ASSIGN_OR_RETURN(v1::RevocationListBody list, ListBody(b.env()));
  std::vector<v1::RevokedCertificate> add;
  const int64_t now = clock_.NowUnixMillis();
  for (uint64_t serial : b.revoke().serials()) {
    auto stored = store_->Get(CertKey(serial));
    v1::Certificate c;
    v1::CertificateBody cb;
    if (!stored.ok() || !c.ParseFromString(*stored) || !cb.ParseFromString(c.body()) ||
        cb.env() != b.env()) {
      return absl::NotFoundError(
          fmt::format("revoke: certificate {} is not known in {}", serial, b.env()));
    }
    const bool already = std::any_of(list.revoked().begin(), list.revoked().end(),
                                     [&](const auto& r) { return r.serial() == serial; }) ||
                         std::any_of(add.begin(), add.end(),
                                     [&](const auto& r) { return r.serial() == serial; });
    if (already) continue;
    v1::RevokedCertificate r;
    r.set_serial(serial);
    r.set_reason(b.revoke().reason());
    r.set_revoked_at_ms(now);
    add.push_back(r);
  }
  CHASQUI_ASSIGN_OR_RETURN(v1::SignedRevocationList l, IssueList(b.env(), &list, add));
  CHQ_LOG_INFO("revoked by certificate {}: {} certificate(s) in {}", b.signer_serial(),
               add.size(), b.env());
  return l;
}

absl::StatusOr<v1::SignedStatement> CertificateAuthority::Sign(std::string_view request) {
  absl::MutexLock lock(&mu_);
  CHASQUI_ASSIGN_OR_RETURN(auto checked, CheckControl(request));
  auto& [b, role] = checked;
  if (!b.has_sign()) return absl::InvalidArgumentError("control request on sign: action is not sign");
  const v1::StatementKind kind = b.sign().kind();
  if (StatementTag(kind, b.env()).empty()) {
    return absl::InvalidArgumentError("sign: kind must be checkpoint or annex");
  }
  if (b.sign().digest().size() != 32) {
    return absl::InvalidArgumentError("sign: digest must be 32 bytes");
  }
  const v1::CertificateRole allowed =
      kind == v1::STATEMENT_KIND_CHECKPOINT ? v1::CERTIFICATE_ROLE_AUDIT : v1::CERTIFICATE_ROLE_CATALOG;
  if (role != allowed) {
    return absl::PermissionDeniedError(fmt::format(
        "sign: a {} is signed only for the {} service; signer has role {}",
        v1::StatementKind_Name(kind), CertificateRoleName(allowed), CertificateRoleName(role)));
  }
  v1::StatementBody body;
  body.set_kind(kind);
  body.set_env(b.env());
  body.set_digest(b.sign().digest());
  body.set_signed_at_ms(clock_.NowUnixMillis());
  body.set_issuer_key_id(root_key_id_);
  body.set_requester_serial(b.signer_serial());
  return SignStatement(body, root_);
}

absl::StatusOr<std::vector<v1::SignedRevocationList>> CertificateAuthority::ReissueDue() {
  absl::MutexLock lock(&mu_);
  const int64_t now = clock_.NowUnixMillis();
  const int64_t margin = options_.reissue_before_ms >= 0 ? options_.reissue_before_ms
                                                         : options_.revocation_validity_ms / 2;
  std::vector<v1::SignedRevocationList> out;
  for (const std::string& env : options_.envs) {
    CHASQUI_ASSIGN_OR_RETURN(v1::RevocationListBody b, ListBody(env));
    if (now >= b.valid_until_ms() - margin) {
      CHASQUI_ASSIGN_OR_RETURN(v1::SignedRevocationList l, IssueList(env, &b, {}));
      out.push_back(std::move(l));
    }
  }
  return out;
}

std::vector<v1::SignedRevocationList> CertificateAuthority::CurrentLists() const {
  absl::MutexLock lock(&mu_);
  std::vector<v1::SignedRevocationList> out;
  for (const std::string& env : options_.envs) {
    if (auto it = lists_.find(env); it != lists_.end()) out.push_back(it->second);
  }
  return out;
}

absl::StatusOr<CertificateAuthority::Stats> CertificateAuthority::GetStats() const {
  absl::MutexLock lock(&mu_);
  Stats st;
  st.log_size = log_size_;
  absl::flat_hash_map<uint64_t, bool> revoked;
  for (const std::string& env : options_.envs) {
    CHASQUI_ASSIGN_OR_RETURN(v1::RevocationListBody b, ListBody(env));
    st.envs.push_back({env, b.version(), b.valid_until_ms(), static_cast<size_t>(b.revoked_size())});
    for (const auto& r : b.revoked()) revoked[r.serial()] = true;
  }
  if (const TrustAnchor* root = anchors_.Find(root_key_id_)) st.root_not_after_ms = root->not_after_ms;
  const int64_t now = clock_.NowUnixMillis();
  int64_t earliest = std::numeric_limits<int64_t>::max();
  CHASQUI_RETURN_IF_ERROR(store_->Scan(kCertPrefix, kCertEnd,
                                       [&](std::string_view k, std::string_view v) {
                                         v1::Certificate c;
                                         v1::CertificateBody b;
                                         if (c.ParseFromArray(v.data(), static_cast<int>(v.size())) &&
                                             b.ParseFromString(c.body()) &&
                                             !revoked.contains(b.serial()) &&
                                             b.not_after_ms() >= now) {
                                           earliest = std::min(earliest, b.not_after_ms());
                                         }
                                         return true;
                                       }));
  st.earliest_expiry_ms = earliest == std::numeric_limits<int64_t>::max() ? 0 : earliest;
  return st;
}

}  // namespace chasqui
