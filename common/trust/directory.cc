#include "common/trust/directory.h"

#include <utility>

#include "common/core/names.h"
#include "common/core/status.h"
#include "fmt/format.h"

namespace chasqui {

CertificateDirectory::CertificateDirectory(std::string env, TrustAnchors anchors)
    : env_(std::move(env)) {
  auto s = std::make_shared<Snapshot>();
  s->anchors = std::move(anchors);
  snapshot_ = std::move(s);
}

std::shared_ptr<const CertificateDirectory::Snapshot> CertificateDirectory::Current() const {
  absl::MutexLock lock(&mu_);
  return snapshot_;
}

absl::Status CertificateDirectory::AddCertificates(const std::vector<std::string>& certificates,
                                                   int64_t now_ms) {
  absl::MutexLock writer(&write_mu_);
  auto next = std::make_shared<Snapshot>(*Current());
  absl::Status first = absl::OkStatus();
  for (const std::string& bytes : certificates) {
    auto v = VerifyCertificate(bytes, next->anchors, env_, now_ms);
    if (!v.ok()) {
      if (first.ok()) first = v.status();
      continue;
    }
    const uint64_t serial = v->serial;
    next->certs.try_emplace(serial, std::make_shared<const VerifiedCertificate>(*std::move(v)));
  }
  absl::MutexLock lock(&mu_);
  snapshot_ = std::move(next);
  return first;
}

absl::Status CertificateDirectory::ApplyRevocationList(std::string_view signed_list,
                                                       int64_t now_ms) {
  absl::MutexLock writer(&write_mu_);
  std::shared_ptr<const Snapshot> cur = Current();
  CHASQUI_ASSIGN_OR_RETURN(VerifiedRevocationList list,
                           VerifyRevocationList(signed_list, cur->anchors, env_, now_ms));
  if (cur->revocations != nullptr) {
    if (list.version < cur->revocations->version) {
      return absl::FailedPreconditionError(fmt::format(
          "revocation list {} version {} is older than the version {} held", env_, list.version,
          cur->revocations->version));
    }
    if (list.version == cur->revocations->version) return absl::OkStatus();
  }
  auto next = std::make_shared<Snapshot>(*cur);
  next->revocations = std::make_shared<const VerifiedRevocationList>(std::move(list));
  absl::MutexLock lock(&mu_);
  snapshot_ = std::move(next);
  return absl::OkStatus();
}

absl::Status CertificateDirectory::ApplyEndorsement(const v1::RootEndorsement& endorsement,
                                                    int64_t now_ms) {
  absl::MutexLock writer(&write_mu_);
  auto next = std::make_shared<Snapshot>(*Current());
  CHASQUI_RETURN_IF_ERROR(next->anchors.ApplyEndorsement(endorsement, now_ms));
  absl::MutexLock lock(&mu_);
  snapshot_ = std::move(next);
  return absl::OkStatus();
}

absl::Status CertificateDirectory::Fresh(int64_t now_ms) const {
  std::shared_ptr<const Snapshot> s = Current();
  if (s->revocations == nullptr) {
    return absl::UnavailableError(
        fmt::format("no revocation list for {} yet: refusing until one arrives", env_));
  }
  if (s->revocations->StaleAt(now_ms)) {
    return absl::UnavailableError(fmt::format(
        "revocation list {} version {} is stale: valid until {}, now {}", env_,
        s->revocations->version, s->revocations->valid_until_ms, now_ms));
  }
  return absl::OkStatus();
}

absl::Status CertificateDirectory::Usable(const Snapshot& s, const VerifiedCertificate& c,
                                          int64_t now_ms) const {
  if (auto it = s.revocations->revoked.find(c.serial); it != s.revocations->revoked.end()) {
    return absl::PermissionDeniedError(fmt::format(
        "certificate {} ({}) was revoked at {} ({})", c.serial, c.subject,
        it->second.revoked_at_ms(), v1::RevocationReason_Name(it->second.reason())));
  }
  const std::string what = fmt::format("certificate {}", c.serial);
  CHASQUI_RETURN_IF_ERROR(s.anchors.Resolve(c.issuer_key_id, now_ms, what).status());
  if (now_ms < c.not_before_ms) {
    return absl::FailedPreconditionError(
        fmt::format("{}: not valid before {} (now {})", what, c.not_before_ms, now_ms));
  }
  if (now_ms > c.not_after_ms) {
    return absl::FailedPreconditionError(
        fmt::format("{}: expired at {} (now {})", what, c.not_after_ms, now_ms));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const VerifiedCertificate>> CertificateDirectory::Lookup(
    uint64_t serial, int64_t now_ms) const {
  CHASQUI_RETURN_IF_ERROR(Fresh(now_ms));
  std::shared_ptr<const Snapshot> s = Current();
  auto it = s->certs.find(serial);
  if (it == s->certs.end()) {
    return absl::NotFoundError(fmt::format("certificate {} is not known in {}", serial, env_));
  }
  CHASQUI_RETURN_IF_ERROR(Usable(*s, *it->second, now_ms));
  return it->second;
}

absl::StatusOr<std::vector<std::shared_ptr<const VerifiedCertificate>>>
CertificateDirectory::ByEntity(std::string_view entity, int64_t now_ms) const {
  CHASQUI_RETURN_IF_ERROR(Fresh(now_ms));
  std::shared_ptr<const Snapshot> s = Current();
  std::vector<std::shared_ptr<const VerifiedCertificate>> out;
  for (const auto& [serial, c] : s->certs) {
    if (c->entity == entity && Usable(*s, *c, now_ms).ok()) out.push_back(c);
  }
  return out;
}

absl::StatusOr<TrustStore> CertificateDirectory::BuildTrustStore(int64_t now_ms) const {
  CHASQUI_RETURN_IF_ERROR(Fresh(now_ms));
  std::shared_ptr<const Snapshot> s = Current();
  std::vector<VerifiedCertificate> usable;
  for (const auto& [serial, c] : s->certs) {
    if (Usable(*s, *c, now_ms).ok()) usable.push_back(*c);
  }
  return chasqui::BuildTrustStore(usable, env_);
}

uint64_t CertificateDirectory::revocation_version() const {
  auto s = Current();
  return s->revocations == nullptr ? 0 : s->revocations->version;
}

int64_t CertificateDirectory::revocation_valid_until_ms() const {
  auto s = Current();
  return s->revocations == nullptr ? 0 : s->revocations->valid_until_ms;
}

size_t CertificateDirectory::size() const { return Current()->certs.size(); }

TrustAnchors CertificateDirectory::anchors() const { return Current()->anchors; }

absl::StatusOr<std::shared_ptr<const VerifiedCertificate>> DirectoryLookup::Lookup(
    std::string_view env, uint64_t serial, int64_t now_ms) const {
  auto it = directories_.find(std::string(env));
  if (it == directories_.end()) {
    return absl::InvalidArgumentError(
        fmt::format("environment \"{}\" is not served here", Printable(env)));
  }
  auto found = it->second->Lookup(serial, now_ms);
  if (absl::IsNotFound(found.status()) && fetch_) {
    CHASQUI_RETURN_IF_ERROR(fetch_(*it->second, serial, now_ms));
    return it->second->Lookup(serial, now_ms);
  }
  return found;
}

}  // namespace chasqui
