#include "common/trust/anchors.h"

#include <algorithm>

#include "common/core/files.h"
#include "common/core/names.h"
#include "common/core/status.h"
#include "common/trust/signed_message.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace chasqui {
namespace {

using nlohmann::json;

absl::Status FieldError(std::string_view where, std::string_view field,
                        std::string_view expected) {
  return absl::InvalidArgumentError(
      fmt::format("{}: field \"{}\": expected {}", where, field, expected));
}

}  // namespace

std::string RootKeyId(const SignPublicKey& pk) {
  const Hash32 h = Blake2b256(AsView(pk));
  return ToHex(AsView(h.data(), 8));
}

const TrustAnchor* TrustAnchors::Find(std::string_view key_id) const {
  for (const TrustAnchor& a : anchors_) {
    if (a.key_id == key_id) return &a;
  }
  return nullptr;
}

absl::StatusOr<const TrustAnchor*> TrustAnchors::Resolve(std::string_view key_id, int64_t at_ms,
                                                         std::string_view what) const {
  const TrustAnchor* a = Find(key_id);
  if (a == nullptr) {
    return absl::NotFoundError(fmt::format(
        "{}: issued by unknown root \"{}\" (not among the {} pinned root(s))", what,
        Printable(key_id, 32), anchors_.size()));
  }
  if (!a->ValidAt(at_ms)) {
    return absl::FailedPreconditionError(fmt::format(
        "{}: root {} is valid only from {} to {} (ms), not at {}", what, a->key_id,
        a->not_before_ms, a->not_after_ms, at_ms));
  }
  return a;
}

v1::RootEndorsement EndorseRoot(const SigningKey& signer, const TrustAnchor& anchor,
                                int64_t now_ms) {
  v1::RootAnchorBody body;
  body.set_key_id(anchor.key_id);
  body.set_sign_pk(std::string(AsView(anchor.sign_pk)));
  body.set_not_before_ms(anchor.not_before_ms);
  body.set_not_after_ms(anchor.not_after_ms);
  body.set_issued_at_ms(now_ms);
  v1::RootEndorsement e;
  e.set_body(body.SerializeAsString());
  e.set_signer_key_id(RootKeyId(signer.public_key()));
  const SignatureBytes sig = signer.Sign(SignedMessage(RootTag(), e.body()));
  e.set_signature(std::string(AsView(sig)));
  return e;
}

absl::StatusOr<TrustAnchor> VerifyEndorsement(const v1::RootEndorsement& e,
                                              const TrustAnchors& anchors, int64_t now_ms) {
  v1::RootAnchorBody body;
  if (!body.ParseFromString(e.body())) {
    return absl::InvalidArgumentError("root endorsement: body is not a RootAnchorBody");
  }
  if (body.sign_pk().size() != 32 || e.signature().size() != 64) {
    return absl::InvalidArgumentError("root endorsement: key must be 32 bytes, signature 64");
  }
  TrustAnchor anchor;
  CHASQUI_ASSIGN_OR_RETURN(anchor.sign_pk, ToArray<32>(body.sign_pk(), "root sign_pk"));
  anchor.key_id = RootKeyId(anchor.sign_pk);
  if (anchor.key_id != body.key_id()) {
    return absl::InvalidArgumentError("root endorsement: key_id does not match its key");
  }
  if (body.not_after_ms() < body.not_before_ms()) {
    return absl::InvalidArgumentError("root endorsement: not_after before not_before");
  }
  anchor.not_before_ms = body.not_before_ms();
  anchor.not_after_ms = body.not_after_ms();
  CHASQUI_ASSIGN_OR_RETURN(const TrustAnchor* signer,
                           anchors.Resolve(e.signer_key_id(), now_ms, "root endorsement"));
  CHASQUI_ASSIGN_OR_RETURN(SignatureBytes sig, ToArray<64>(e.signature(), "signature"));
  if (!VerifySignature(signer->sign_pk, SignedMessage(RootTag(), e.body()), sig)) {
    return absl::UnauthenticatedError(fmt::format(
        "root endorsement of {}: signature does not verify with root {}", anchor.key_id,
        signer->key_id));
  }
  return anchor;
}

absl::Status TrustAnchors::ApplyEndorsement(const v1::RootEndorsement& endorsement,
                                            int64_t now_ms) {
  CHASQUI_ASSIGN_OR_RETURN(TrustAnchor anchor, VerifyEndorsement(endorsement, *this, now_ms));
  for (TrustAnchor& a : anchors_) {
    if (a.key_id != anchor.key_id) continue;
    if (a.sign_pk != anchor.sign_pk) {
      return absl::InvalidArgumentError(fmt::format(
          "root endorsement: key id {} already pinned with another key", anchor.key_id));
    }
    a.not_before_ms = std::max(a.not_before_ms, anchor.not_before_ms);
    a.not_after_ms = std::min(a.not_after_ms, anchor.not_after_ms);
    return absl::OkStatus();
  }
  anchors_.push_back(std::move(anchor));
  return absl::OkStatus();
}

absl::StatusOr<TrustAnchors> ParseTrustAnchors(std::string_view text, std::string_view where) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(fmt::format("{}: not a JSON object", where));
  }
  auto v = j.find("version");
  if (v == j.end() || !v->is_number_unsigned() || v->get<uint64_t>() != 1) {
    return FieldError(where, "version", "1");
  }
  auto roots = j.find("roots");
  if (roots == j.end() || !roots->is_array() || roots->empty()) {
    return FieldError(where, "roots", "a non-empty array of root anchors");
  }
  std::vector<TrustAnchor> out;
  for (size_t i = 0; i < roots->size(); ++i) {
    const json& r = (*roots)[i];
    const std::string at = fmt::format("{}: roots[{}]", where, i);
    if (!r.is_object()) return absl::InvalidArgumentError(at + ": expected an object");
    auto pk = r.find("sign_pk");
    if (pk == r.end() || !pk->is_string()) return FieldError(at, "sign_pk", "base64 of 32 bytes");
    auto raw = FromBase64(pk->get<std::string>(), "sign_pk");
    if (!raw.ok() || raw->size() != 32) return FieldError(at, "sign_pk", "base64 of 32 bytes");
    TrustAnchor a;
    CHASQUI_ASSIGN_OR_RETURN(a.sign_pk, ToArray<32>(*raw, "sign_pk"));
    a.key_id = RootKeyId(a.sign_pk);
    auto id = r.find("key_id");
    if (id == r.end() || !id->is_string() || id->get<std::string>() != a.key_id) {
      return FieldError(at, "key_id", fmt::format("\"{}\" (the id of sign_pk)", a.key_id));
    }
    auto nb = r.find("not_before_ms");
    auto na = r.find("not_after_ms");
    if (nb == r.end() || !nb->is_number_integer()) {
      return FieldError(at, "not_before_ms", "an integer");
    }
    if (na == r.end() || !na->is_number_integer() || na->get<int64_t>() < nb->get<int64_t>()) {
      return FieldError(at, "not_after_ms", "an integer not before not_before_ms");
    }
    a.not_before_ms = nb->get<int64_t>();
    a.not_after_ms = na->get<int64_t>();
    out.push_back(std::move(a));
  }
  return TrustAnchors(std::move(out));
}

absl::StatusOr<TrustAnchors> LoadTrustAnchors(const std::string& path) {
  CHASQUI_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path, "root anchor file"));
  return ParseTrustAnchors(text, fmt::format("root anchor file {}", path));
}

std::string TrustAnchorsJson(const TrustAnchors& anchors) {
  json roots = json::array();
  for (const TrustAnchor& a : anchors.anchors()) {
    roots.push_back(json{{"key_id", a.key_id},
                         {"sign_pk", ToBase64(AsView(a.sign_pk))},
                         {"not_before_ms", a.not_before_ms},
                         {"not_after_ms", a.not_after_ms}});
  }
  return json{{"version", 1}, {"roots", roots}}.dump(2) + "\n";
}

}  // namespace chasqui
