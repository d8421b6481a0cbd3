#include "services/crypto/ceremony.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/core/log.h"
#include "common/core/status.h"
#include "fmt/format.h"
#include "services/crypto/authority.h"

namespace chasqui {
namespace {

absl::Status MakePrivateDir(const std::string& path) {
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::PermissionDeniedError(
        fmt::format("cannot create directory {}: {}", path, std::strerror(errno)));
  }
  return absl::OkStatus();
}

TrustAnchor AnchorOf(const SigningKey& key, int64_t from, int64_t until) {
  TrustAnchor a;
  a.key_id = RootKeyId(key.public_key());
  a.sign_pk = key.public_key();
  a.not_before_ms = from;
  a.not_after_ms = until;
  return a;
}

}  // namespace

std::string RootKeyPath(const std::string& data_dir, const std::string& key_id) {
  return fmt::format("{}/root-{}.key", data_dir, key_id);
}
std::string DbPath(const std::string& data_dir) { return data_dir + "/db"; }
std::string AnchorsPath(const std::string& data_dir) { return data_dir + "/roots.json"; }
std::string TokenSpoolDir(const std::string& data_dir) { return data_dir + "/token-spool"; }

absl::StatusOr<std::unique_ptr<KvStore>> OpenAuthorityStore(const std::string& data_dir) {
  auto store = KvStore::Open({.path = DbPath(data_dir)});
  if (absl::IsUnavailable(store.status())) {
    return absl::UnavailableError(fmt::format(
        "{} (is chasqui-crypto serve running on {}? stop it first)", MessageOf(store.status()),
        data_dir));
  }
  return store;
}

absl::StatusOr<CeremonyResult> InitRoot(const std::string& data_dir, const Passphrase& passphrase,
                                        KdfCost cost, int64_t validity_ms, const Clock& clock) {
  CHASQUI_RETURN_IF_ERROR(MakePrivateDir(data_dir));
  CHASQUI_ASSIGN_OR_RETURN(std::unique_ptr<KvStore> store, OpenAuthorityStore(data_dir));
  if (auto current = CurrentRootId(store.get()); current.ok()) {
    return absl::AlreadyExistsError(fmt::format(
        "{} already has root {}; use rotate-root to replace it", data_dir, *current));
  }
  CHASQUI_RETURN_IF_ERROR(MakePrivateDir(TokenSpoolDir(data_dir)));
  const int64_t now = clock.NowUnixMillis();
  SigningKey key = SigningKey::Generate();
  CeremonyResult r;
  r.root = AnchorOf(key, now, now + validity_ms);
  r.key_file = RootKeyPath(data_dir, r.root.key_id);
  CHASQUI_RETURN_IF_ERROR(WriteEncryptedRootKey(r.key_file, key, passphrase, cost));
  KvBatch batch;
  CHASQUI_RETURN_IF_ERROR(AppendEndorsement(store.get(), EndorseRoot(key, r.root, now), &batch));
  batch.Put("meta/current_root", r.root.key_id);
  CHASQUI_RETURN_IF_ERROR(store->Write(batch, Durability::kSynced));
  r.anchors = TrustAnchors({r.root});
  r.anchors_file = AnchorsPath(data_dir);
  CHASQUI_RETURN_IF_ERROR(
      WriteFileDurably(r.anchors_file, TrustAnchorsJson(r.anchors), 0644, /*replace=*/true));
  CHQ_LOG_INFO("root created: key_id={} valid_until={}", r.root.key_id, r.root.not_after_ms);
  return r;
}

absl::StatusOr<SigningKey> LoadCurrentRoot(const std::string& data_dir, KvStore* store,
                                           const Passphrase& passphrase) {
  CHASQUI_ASSIGN_OR_RETURN(std::string id, CurrentRootId(store));
  return ReadEncryptedRootKey(RootKeyPath(data_dir, id), passphrase);
}

absl::StatusOr<CeremonyResult> RotateRoot(const std::string& data_dir,
                                          const Passphrase& old_passphrase,
                                          const Passphrase& new_passphrase, KdfCost cost,
                                          int64_t validity_ms, int64_t overlap_ms,
                                          const Clock& clock) {
  CHASQUI_ASSIGN_OR_RETURN(std::unique_ptr<KvStore> store, OpenAuthorityStore(data_dir));
  CHASQUI_ASSIGN_OR_RETURN(SigningKey old_key,
                           LoadCurrentRoot(data_dir, store.get(), old_passphrase));
  const int64_t now = clock.NowUnixMillis();
  CHASQUI_ASSIGN_OR_RETURN(std::vector<v1::RootEndorsement> es, LoadEndorsements(store.get()));
  CHASQUI_ASSIGN_OR_RETURN(TrustAnchors before, AnchorsFromEndorsements(es, now));
  const TrustAnchor* old_anchor = before.Find(RootKeyId(old_key.public_key()));
  if (old_anchor == nullptr || !old_anchor->ValidAt(now)) {
    return absl::FailedPreconditionError(
        "the current root is no longer valid: it cannot endorse a successor (start over with "
        "init in a new directory and re-pin)");
  }
  SigningKey new_key = SigningKey::Generate();
  CeremonyResult r;
  r.root = AnchorOf(new_key, now, now + validity_ms);
  TrustAnchor ending = *old_anchor;
  ending.not_after_ms = std::min(old_anchor->not_after_ms, now + overlap_ms);
  r.key_file = RootKeyPath(data_dir, r.root.key_id);
  CHASQUI_RETURN_IF_ERROR(WriteEncryptedRootKey(r.key_file, new_key, new_passphrase, cost));

  // Both endorsements go into one batch; AppendEndorsement numbers from the stored ones, so
  // the second is numbered by hand after the first.
  KvBatch batch;
  CHASQUI_RETURN_IF_ERROR(
      AppendEndorsement(store.get(), EndorseRoot(old_key, r.root, now), &batch));
  const std::string first_key = batch.ops().back().key;
  const uint64_t second = FromBigEndian64(std::string_view(first_key).substr(7)) + 1;
  batch.Put("anchor/" + BigEndian64(second), EndorseRoot(new_key, ending, now).SerializeAsString());
  batch.Put("meta/current_root", r.root.key_id);
  CHASQUI_RETURN_IF_ERROR(store->Write(batch, Durability::kSynced));

  CHASQUI_ASSIGN_OR_RETURN(es, LoadEndorsements(store.get()));
  CHASQUI_ASSIGN_OR_RETURN(r.anchors, AnchorsFromEndorsements(es, now));
  r.anchors_file = AnchorsPath(data_dir);
  CHASQUI_RETURN_IF_ERROR(
      WriteFileDurably(r.anchors_file, TrustAnchorsJson(r.anchors), 0644, /*replace=*/true));
  CHQ_LOG_INFO("root rotated: new key_id={} old key_id={} accepted until {}", r.root.key_id,
               ending.key_id, ending.not_after_ms);
  return r;
}

}  // namespace chasqui
