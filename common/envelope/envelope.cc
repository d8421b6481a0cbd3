#include "common/envelope/envelope.h"

#include <atomic>

#include "common/core/names.h"
#include "common/core/status.h"
#include "common/envelope/errors.h"
#include "fmt/format.h"

namespace chasqui {
namespace {

absl::Status Bad(std::string_view what) { return ChasquiError(v1::BAD_REQUEST, what); }

absl::Status CheckText(std::string_view field, const std::string& value, size_t max) {
  if (value.size() > max) {
    return Bad(fmt::format("header field {} is {} bytes; at most {} allowed", field, value.size(),
                           max));
  }
  for (unsigned char c : value) {
    if (c < 0x20 || c == 0x7f) {
      return Bad(fmt::format("header field {} contains control characters", field));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckHeaderShape(const v1::Header& h) {
  if (h.protocol_version() != kProtocolVersion) {
    return Bad(fmt::format("protocol_version {} is not supported; this platform speaks {}",
                           h.protocol_version(), kProtocolVersion));
  }
  if (h.id().size() != kIdBytes) {
    return Bad(fmt::format("header id must be {} bytes, got {}", kIdBytes, h.id().size()));
  }
  if (!IsValidEnv(h.env())) return Bad("header env must be test or prod");
  if (h.kind() != v1::KIND_REQUEST && h.kind() != v1::KIND_REPLY && h.kind() != v1::KIND_ERROR) {
    return Bad("header kind must be request, reply or error");
  }
  for (auto [field, value] : {std::pair<std::string_view, const std::string*>{"consumer", &h.consumer()},
                              {"provider", &h.provider()},
                              {"service", &h.service()}}) {
    if (!IsValidName(*value)) {
      return Bad(fmt::format("header {} \"{}\" is not a valid name ([a-z0-9][a-z0-9_-]{{0,62}})",
                             field, Printable(*value, 64)));
    }
  }
  if (auto s = CheckText("service_version", h.service_version(), 64); !s.ok()) return s;
  if (auto s = CheckText("end_user", h.end_user(), kMaxEndUserBytes); !s.ok()) return s;
  if (auto s = CheckText("purpose", h.purpose(), kMaxTextFieldBytes); !s.ok()) return s;
  if (auto s = CheckText("annex_id", h.annex_id(), kMaxTextFieldBytes); !s.ok()) return s;
  if (auto s = CheckText("consent_ref", h.consent_ref(), kMaxTextFieldBytes); !s.ok()) return s;
  if (auto s = CheckText("idempotency_key", h.idempotency_key(), kMaxIdempotencyKeyBytes);
      !s.ok()) {
    return s;
  }
  if (h.kind() == v1::KIND_REQUEST && h.end_user().empty()) {
    return Bad("header end_user is mandatory on a request: name the official it runs for");
  }
  if (h.sealed() ? h.nonce().size() != kAeadNonceBytes : !h.nonce().empty()) {
    return Bad(fmt::format("header nonce must be {} bytes when sealed and empty otherwise",
                           kAeadNonceBytes));
  }
  if (h.body_hash().size() != kHashBytes) {
    return Bad(fmt::format("header body_hash must be {} bytes", kHashBytes));
  }
  if (h.sender_cert() == 0) return Bad("header sender_cert is missing");
  // An error may answer a request too broken to have a readable id; then in_reply_to is empty.
  const size_t reply_to = h.in_reply_to().size();
  if (h.kind() == v1::KIND_REQUEST ? reply_to != 0
      : h.kind() == v1::KIND_REPLY ? reply_to != kIdBytes
                                   : reply_to != 0 && reply_to != kIdBytes) {
    return Bad("header in_reply_to must name the request's id on replies and errors only");
  }
  if (h.kind() == v1::KIND_ERROR) {
    if (h.error().code() == v1::OK || !v1::Code_IsValid(h.error().code())) {
      return Bad("an error header must carry a known error code");
    }
    if (h.error().message().size() > kMaxErrorMessageBytes) return Bad("error message too long");
  } else if (h.has_error()) {
    return Bad("only error envelopes carry an error");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ParsedEnvelope> ParseEnvelope(std::string_view wire) {
  ParsedEnvelope p;
  if (wire.empty() || !p.envelope.ParseFromArray(wire.data(), static_cast<int>(wire.size()))) {
    return Bad("not a Chasqui envelope: the bytes do not parse (truncated or garbage)");
  }
  if (p.envelope.header().empty() ||
      !p.header.ParseFromString(p.envelope.header())) {
    return Bad("envelope header does not parse");
  }
  if (auto s = CheckHeaderShape(p.header); !s.ok()) return s;
  const v1::Signature& sig = p.envelope.sig();
  if (sig.root_signature().size() != 64) return Bad("signature must be 64 bytes");
  if (sig.tree_size() == 0 || sig.tree_size() > kMaxTreeLeaves) {
    return Bad(fmt::format("signature tree_size must be 1..{}", kMaxTreeLeaves));
  }
  if (sig.leaf_index() >= sig.tree_size()) return Bad("signature leaf_index outside its tree");
  if (static_cast<size_t>(sig.path_size()) > kMaxPathLength) return Bad("signature path too long");
  for (const std::string& node : sig.path()) {
    if (node.size() != kHashBytes) return Bad("signature path node must be 32 bytes");
  }
  return p;
}

std::string EnvelopeTag(std::string_view env) {
  return fmt::format("chasqui/v1/envelope/{}", env);
}

std::string BatchSignedMessage(std::string_view tag, uint32_t tree_size, const Hash32& root) {
  std::string m;
  m.reserve(tag.size() + 4 + root.size());
  m.append(tag);
  for (int shift = 24; shift >= 0; shift -= 8) m.push_back(static_cast<char>(tree_size >> shift));
  m.append(AsView(root));
  return m;
}

std::string SealContext(const v1::Header& h) {
  std::string ad = "chasqui/v1/seal";
  auto put_u64 = [&ad](uint64_t v) {
    for (int shift = 56; shift >= 0; shift -= 8) ad.push_back(static_cast<char>(v >> shift));
  };
  auto put = [&](std::string_view s) {
    put_u64(s.size());
    ad.append(s);
  };
  put_u64(static_cast<uint64_t>(h.kind()));
  put(h.env());
  put(h.id());
  put(h.nonce());
  put(h.consumer());
  put(h.provider());
  put(h.service());
  put(h.in_reply_to());
  put_u64(h.sender_cert());
  put_u64(h.recipient_cert());
  return ad;
}

std::string SealBody(v1::Header& header, const SecretBytes& tx, NonceSource& nonces,
                     std::string_view plaintext) {
  header.set_sealed(true);
  header.set_nonce(nonces.Next());
  return AeadSeal(tx, header.nonce(), SealContext(header), plaintext);
}

absl::StatusOr<std::string> OpenBody(const v1::Header& header, const SecretBytes& rx,
                                     std::string_view body) {
  if (!header.sealed()) return Bad("the body must be sealed");
  auto opened = AeadOpen(rx, header.nonce(), SealContext(header), body);
  if (!opened.ok()) return ChasquiError(v1::UNAUTHENTICATED, MessageOf(opened.status()));
  return opened;
}

std::string NewEnvelopeId() {
  // A random per-process prefix and a counter: unique without a getrandom call per id.
  static const std::string prefix = RandomString(kIdBytes - 8);
  static std::atomic<uint64_t> counter{0};
  const uint64_t n = counter.fetch_add(1, std::memory_order_relaxed);
  std::string id = prefix;
  for (int shift = 56; shift >= 0; shift -= 8) id.push_back(static_cast<char>(n >> shift));
  return id;
}

}  // namespace chasqui
