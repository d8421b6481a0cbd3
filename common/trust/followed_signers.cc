#include "common/trust/followed_signers.h"

#include <utility>

#include "common/core/log.h"
#include "common/core/status.h"

namespace chasqui {

absl::StatusOr<std::unique_ptr<FollowedSigners>> FollowedSigners::Start(
    Bus* bus, const TrustAnchors& anchors, const std::vector<std::string>& envs,
    std::string inbox_prefix, const Clock& clock) {
  std::unique_ptr<FollowedSigners> f(new FollowedSigners());
  CHASQUI_ASSIGN_OR_RETURN(f->crypto_, CryptoClient::Create(bus, std::move(inbox_prefix)));
  std::map<std::string, CertificateDirectory*> by_env;
  for (const std::string& env : envs) {
    auto dir = std::make_unique<CertificateDirectory>(env, anchors);
    CHASQUI_ASSIGN_OR_RETURN(std::unique_ptr<Subscription> watch,
                             WatchRevocations(bus, dir.get(), clock));
    f->watches_.push_back(std::move(watch));
    if (absl::Status s = CatchUpRevocations(*f->crypto_, *dir, clock); !s.ok()) {
      CHQ_LOG_WARN("revocation list for {} not fetched yet (signed requests answer UNAVAILABLE "
                   "until one arrives): {}",
                   env, MessageOf(s));
    }
    by_env[env] = dir.get();
    f->directories_[env] = std::move(dir);
  }
  CryptoClient* crypto = f->crypto_.get();
  f->lookup_ = std::make_unique<DirectoryLookup>(
      by_env, [crypto, &clock](CertificateDirectory& dir, uint64_t serial, int64_t) {
        if (dir.revocation_version() == 0) {
          CHASQUI_RETURN_IF_ERROR(CatchUpRevocations(*crypto, dir, clock));
        }
        v1::DirectoryRequest req;
        req.set_env(dir.env());
        req.add_serials(serial);
        CHASQUI_ASSIGN_OR_RETURN(v1::DirectoryReply reply, crypto->Directory(req));
        std::vector<std::string> certs;
        for (const v1::Certificate& c : reply.certificates()) {
          certs.push_back(c.SerializeAsString());
        }
        return dir.AddCertificates(certs, clock.NowUnixMillis());
      });
  return f;
}

FollowedSigners::~FollowedSigners() {
  watches_.clear();
  lookup_.reset();
}

absl::StatusOr<std::shared_ptr<const VerifiedCertificate>> FollowedSigners::Lookup(
    std::string_view env, uint64_t serial, int64_t now_ms) const {
  return lookup_->Lookup(env, serial, now_ms);
}

}  // namespace chasqui
