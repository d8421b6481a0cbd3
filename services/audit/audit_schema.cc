#include "services/audit/audit_schema.h"

#include <algorithm>
#include <initializer_list>
#include <utility>

#include "common/core/names.h"
#include "common/core/status.h"
#include "common/envelope/envelope.h"
#include "common/store/kv_store.h"
#include "common/trust/transparency.h"
#include "fmt/format.h"

namespace chasqui::audit {
namespace {

constexpr char kLinkTag[] = "chasqui/v1/audit-link";
constexpr size_t kMaxRequestIdBytes = 64;
// A signed header is a few hundred bytes; this bounds what one record may carry.
constexpr size_t kMaxHeaderBytes = 4096;

void AppendLengthPrefixed(std::string& out, std::string_view value) {
  // Values are bounded well below 64 KiB (ValidateRecord), so two bytes suffice.
  out.push_back(static_cast<char>((value.size() >> 8) & 0xff));
  out.push_back(static_cast<char>(value.size() & 0xff));
  out.append(value);
}

absl::Status CheckText(std::string_view field, const std::string& value, size_t max) {
  if (value.size() > max) {
    return absl::InvalidArgumentError(
        fmt::format("{}: {} bytes, at most {} allowed", field, value.size(), max));
  }
  return absl::OkStatus();
}

absl::Status CheckHash(std::string_view field, const std::string& value) {
  if (!value.empty() && value.size() != kHashBytes) {
    return absl::InvalidArgumentError(
        fmt::format("{}: {} bytes, expected {} or none", field, value.size(), kHashBytes));
  }
  return absl::OkStatus();
}

absl::Status CheckSignedHeader(std::string_view field, const v1::SignedHeader& h) {
  if (h.header().size() > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(fmt::format("{}.header: {} bytes, at most {} allowed",
                                                  field, h.header().size(), kMaxHeaderBytes));
  }
  if (!h.header().empty() && !h.header_hash().empty()) {
    return absl::InvalidArgumentError(
        fmt::format("{}: set header or header_hash, not both", field));
  }
  CHASQUI_RETURN_IF_ERROR(CheckHash(fmt::format("{}.header_hash", field), h.header_hash()));
  const v1::Signature& sig = h.sig();
  if (!sig.root_signature().empty() && sig.root_signature().size() != 64) {
    return absl::InvalidArgumentError(fmt::format("{}.sig.root_signature: {} bytes, expected 64",
                                                  field, sig.root_signature().size()));
  }
  if (static_cast<size_t>(sig.path_size()) > kMaxPathLength) {
    return absl::InvalidArgumentError(fmt::format("{}.sig.path: {} entries, at most {}", field,
                                                  sig.path_size(), kMaxPathLength));
  }
  for (const std::string& p : sig.path()) {
    if (p.size() != kHashBytes) {
      return absl::InvalidArgumentError(
          fmt::format("{}.sig.path: an entry of {} bytes, expected {}", field, p.size(),
                      kHashBytes));
    }
  }
  return absl::OkStatus();
}

// IndexPrefix(field, values) + suffix, built in one allocation (six per record are written).
std::string IndexKey(IndexField field, std::initializer_list<std::string_view> values,
                     std::string_view suffix) {
  size_t size = sizeof(kIndexPrefix) - 1 + 1 + suffix.size();
  for (std::string_view v : values) size += 2 + v.size();
  std::string key;
  key.reserve(size);
  key.append(kIndexPrefix);
  key.push_back(static_cast<char>(field));
  for (std::string_view v : values) AppendLengthPrefixed(key, v);
  key.append(suffix);
  return key;
}

}  // namespace

std::string RecordKey(uint64_t seq) { return kRecordPrefix + BigEndian64(seq); }
std::string CheckpointKey(uint64_t seq) { return kCheckpointPrefix + BigEndian64(seq); }

uint64_t SeqFromKey(std::string_view key) {
  if (key.size() != 10) return 0;
  return FromBigEndian64(key.substr(2));
}

std::string GenesisHash() { return std::string(kLinkHashBytes, '\0'); }

std::string LinkHash(std::string_view prev_hash, std::string_view entry_bytes) {
  std::string input;
  input.reserve(sizeof(kLinkTag) + prev_hash.size() + entry_bytes.size());
  input.append(kLinkTag);
  input.append(prev_hash);
  input.append(entry_bytes);
  const Hash32 h = Blake2b256(input);
  return std::string(AsView(h));
}

std::string UniqueKey(const v1::ChainEntry& entry) {
  std::string key = kUniquePrefix;
  if (entry.has_refusal_count()) {
    const v1::RefusalCount& c = entry.refusal_count();
    key.push_back('n');
    AppendLengthPrefixed(key, c.router_id());
    AppendLengthPrefixed(key, c.consumer());
    key.append(BigEndian64(static_cast<uint64_t>(c.reason())));
    key.append(BigEndian64(static_cast<uint64_t>(c.interval_start_ms())));
    return key;
  }
  if (entry.has_certificate()) {
    key.push_back('k');
    key.append(BigEndian64(entry.certificate().entry().sequence()));
    return key;
  }
  const v1::AuditRecord& r = entry.record();
  key.push_back('x');
  key.append(BigEndian64(r.sender_cert()));
  key.append(r.request_id());
  return key;
}

std::string SeqAndHash(uint64_t seq, std::string_view hash) {
  return BigEndian64(seq) + std::string(hash);
}

absl::StatusOr<SeqHash> ParseSeqAndHash(std::string_view value) {
  if (value.size() != 8 + kLinkHashBytes) {
    return absl::InvalidArgumentError(
        fmt::format("seq-and-hash value of {} bytes, expected {}", value.size(),
                    8 + kLinkHashBytes));
  }
  return SeqHash{FromBigEndian64(value.substr(0, 8)), std::string(value.substr(8))};
}

std::string IndexPrefix(IndexField field, const std::vector<std::string_view>& values) {
  std::string key = kIndexPrefix;
  key.push_back(static_cast<char>(field));
  for (std::string_view v : values) AppendLengthPrefixed(key, v);
  return key;
}

int64_t EntryTimeMs(const v1::ChainEntry& entry) {
  if (entry.has_certificate()) return entry.certificate().entry().logged_at_ms();
  return entry.has_refusal_count() ? entry.refusal_count().interval_start_ms()
                                   : entry.record().received_at_ms();
}

std::vector<std::string> IndexKeys(const v1::ChainEntry& entry, uint64_t seq) {
  // Times before 1970 are not expected; clamp so the big-endian order stays the time order.
  const int64_t t = std::max<int64_t>(0, EntryTimeMs(entry));
  const std::string suffix = BigEndian64(static_cast<uint64_t>(t)) + BigEndian64(seq);
  std::vector<std::string> keys;
  keys.reserve(6);
  keys.push_back(IndexKey(IndexField::kTime, {}, suffix));
  if (entry.has_refusal_count()) {
    const v1::RefusalCount& c = entry.refusal_count();
    const std::string code = BigEndian64(static_cast<uint64_t>(c.reason()));
    keys.push_back(IndexKey(IndexField::kConsumer, {c.consumer()}, suffix));
    keys.push_back(IndexKey(IndexField::kOutcome, {code}, suffix));
    return keys;
  }
  if (entry.has_certificate()) {
    keys.push_back(IndexKey(IndexField::kKind, {"certificate"}, suffix));
    return keys;
  }
  const v1::AuditRecord& r = entry.record();
  const std::string code = BigEndian64(static_cast<uint64_t>(r.outcome()));
  keys.push_back(IndexKey(IndexField::kConsumer, {r.consumer()}, suffix));
  keys.push_back(IndexKey(IndexField::kProvider, {r.provider()}, suffix));
  keys.push_back(IndexKey(IndexField::kService, {r.provider(), r.service()}, suffix));
  keys.push_back(IndexKey(IndexField::kEndUser, {r.consumer(), r.end_user()}, suffix));
  keys.push_back(IndexKey(IndexField::kOutcome, {code}, suffix));
  return keys;
}

std::string AggregateDayStart(std::string_view day) {
  return std::string(kAggregatePrefix) + std::string(day);
}

std::string AggregateKey(std::string_view day, const v1::AuditRecord& r) {
  std::string key = AggregateDayStart(day);
  AppendLengthPrefixed(key, r.consumer());
  AppendLengthPrefixed(key, r.provider());
  AppendLengthPrefixed(key, r.service());
  const uint32_t code = static_cast<uint32_t>(r.outcome());
  for (int shift = 24; shift >= 0; shift -= 8) key.push_back(static_cast<char>((code >> shift) & 0xff));
  return key;
}

absl::StatusOr<AggregateKeyParts> ParseAggregateKey(std::string_view key) {
  constexpr size_t kDayChars = 10;  // YYYY-MM-DD
  const size_t prefix = sizeof(kAggregatePrefix) - 1;
  auto bad = [&] {
    return absl::InvalidArgumentError(fmt::format("not an aggregate key: {}", Printable(key)));
  };
  if (key.size() < prefix + kDayChars + 3 * 2 + 4 || key.substr(0, prefix) != kAggregatePrefix) {
    return bad();
  }
  AggregateKeyParts parts;
  parts.day = std::string(key.substr(prefix, kDayChars));
  std::string_view rest = key.substr(prefix + kDayChars);
  for (std::string* out : {&parts.consumer, &parts.provider, &parts.service}) {
    if (rest.size() < 2) return bad();
    const size_t n = (static_cast<uint8_t>(rest[0]) << 8) | static_cast<uint8_t>(rest[1]);
    if (rest.size() < 2 + n) return bad();
    *out = std::string(rest.substr(2, n));
    rest.remove_prefix(2 + n);
  }
  if (rest.size() != 4) return bad();
  uint32_t code = 0;
  for (char ch : rest) code = (code << 8) | static_cast<uint8_t>(ch);
  if (!v1::Code_IsValid(static_cast<int>(code))) return bad();
  parts.outcome = static_cast<v1::Code>(code);
  return parts;
}

std::string RefusalDayKey(std::string_view day, std::string_view consumer, v1::Code reason) {
  std::string key = kRefusalDayPrefix + std::string(day);
  AppendLengthPrefixed(key, consumer);
  const uint32_t code = static_cast<uint32_t>(reason);
  for (int shift = 24; shift >= 0; shift -= 8) key.push_back(static_cast<char>((code >> shift) & 0xff));
  return key;
}

absl::StatusOr<RefusalDayParts> ParseRefusalDayKey(std::string_view key) {
  constexpr size_t kDayChars = 10;
  const size_t prefix = sizeof(kRefusalDayPrefix) - 1;
  auto bad = [&] {
    return absl::InvalidArgumentError(fmt::format("not a refusal day key: {}", Printable(key)));
  };
  if (key.size() < prefix + kDayChars + 2 + 4 || key.substr(0, prefix) != kRefusalDayPrefix) {
    return bad();
  }
  RefusalDayParts parts;
  parts.day = std::string(key.substr(prefix, kDayChars));
  std::string_view rest = key.substr(prefix + kDayChars);
  const size_t n = (static_cast<uint8_t>(rest[0]) << 8) | static_cast<uint8_t>(rest[1]);
  if (rest.size() != 2 + n + 4) return bad();
  parts.consumer = std::string(rest.substr(2, n));
  uint32_t code = 0;
  for (char ch : rest.substr(2 + n)) code = (code << 8) | static_cast<uint8_t>(ch);
  if (!v1::Code_IsValid(static_cast<int>(code))) return bad();
  parts.reason = static_cast<v1::Code>(code);
  return parts;
}

Hash32 CheckpointDigest(std::string_view env, const v1::Checkpoint& checkpoint) {
  return Blake2b256(CheckpointSignedBytes(env, checkpoint));
}

std::string CheckpointTag(std::string_view env) {
  return fmt::format("chasqui/v1/checkpoint/{}", env);
}

std::string CheckpointSignedBytes(std::string_view env, const v1::Checkpoint& checkpoint) {
  std::string out = CheckpointTag(env);
  out.append(BigEndian64(checkpoint.seq()));
  out.append(checkpoint.head_hash());
  out.append(BigEndian64(static_cast<uint64_t>(checkpoint.created_at_ms())));
  return out;
}

absl::Status ValidateRecord(const v1::AuditRecord& r) {
  if (r.request_id().empty() || r.request_id().size() > kMaxRequestIdBytes) {
    return absl::InvalidArgumentError(fmt::format(
        "request_id: {} bytes, expected 1 to {}", r.request_id().size(), kMaxRequestIdBytes));
  }
  if (r.sender_cert() == 0) return absl::InvalidArgumentError("sender_cert: missing");
  if (r.consumer().empty()) return absl::InvalidArgumentError("consumer: missing");
  if (r.received_at_ms() <= 0) return absl::InvalidArgumentError("received_at_ms: missing");
  if (!v1::Code_IsValid(r.outcome())) return absl::InvalidArgumentError("outcome: unknown code");
  CHASQUI_RETURN_IF_ERROR(CheckText("env", r.env(), kMaxTextFieldBytes));
  CHASQUI_RETURN_IF_ERROR(CheckText("consumer", r.consumer(), kMaxTextFieldBytes));
  CHASQUI_RETURN_IF_ERROR(CheckText("provider", r.provider(), kMaxTextFieldBytes));
  CHASQUI_RETURN_IF_ERROR(CheckText("service", r.service(), kMaxTextFieldBytes));
  CHASQUI_RETURN_IF_ERROR(CheckText("service_version", r.service_version(), kMaxTextFieldBytes));
  CHASQUI_RETURN_IF_ERROR(CheckText("end_user", r.end_user(), kMaxEndUserBytes));
  CHASQUI_RETURN_IF_ERROR(CheckText("purpose", r.purpose(), kMaxTextFieldBytes));
  CHASQUI_RETURN_IF_ERROR(CheckText("annex_id", r.annex_id(), kMaxTextFieldBytes));
  CHASQUI_RETURN_IF_ERROR(CheckText("consent_ref", r.consent_ref(), kMaxTextFieldBytes));
  CHASQUI_RETURN_IF_ERROR(CheckText("router_id", r.router_id(), kMaxTextFieldBytes));
  CHASQUI_RETURN_IF_ERROR(CheckHash("request_body_hash", r.request_body_hash()));
  CHASQUI_RETURN_IF_ERROR(CheckHash("reply_body_hash", r.reply_body_hash()));
  CHASQUI_RETURN_IF_ERROR(CheckSignedHeader("request", r.request()));
  CHASQUI_RETURN_IF_ERROR(CheckSignedHeader("reply", r.reply()));
  return absl::OkStatus();
}

absl::StatusOr<v1::CertificateBody> ValidateCertificateIssued(const v1::CertificateIssued& c) {
  const v1::TransparencyLogEntry& e = c.entry();
  if (e.sequence() == 0) return absl::InvalidArgumentError("certificate: log sequence missing");
  if (e.prev_hash().size() != kHashBytes || e.entry_hash().size() != kHashBytes) {
    return absl::InvalidArgumentError("certificate: prev_hash and entry_hash must be 32 bytes");
  }
  const Hash32 h =
      TransparencyEntryHash(e.sequence(), e.prev_hash(), e.logged_at_ms(), e.certificate());
  if (AsView(h) != e.entry_hash()) {
    return absl::InvalidArgumentError(fmt::format(
        "certificate: log entry {} does not match its entry_hash", e.sequence()));
  }
  v1::Certificate cert;
  v1::CertificateBody body;
  if (!cert.ParseFromString(e.certificate()) || !body.ParseFromString(cert.body())) {
    return absl::InvalidArgumentError(
        fmt::format("certificate: log entry {} holds no certificate", e.sequence()));
  }
  if (body.env() != c.env()) {
    return absl::InvalidArgumentError(fmt::format(
        "certificate: log entry {} is for env {}, not {}", e.sequence(), Printable(body.env()),
        Printable(c.env())));
  }
  return body;
}

absl::Status ValidateRefusalCount(const v1::RefusalCount& c) {
  if (c.consumer().empty()) return absl::InvalidArgumentError("consumer: missing (or \"unknown\")");
  if (c.router_id().empty()) return absl::InvalidArgumentError("router_id: missing");
  if (c.count() == 0) return absl::InvalidArgumentError("count: zero");
  if (c.interval_start_ms() <= 0) return absl::InvalidArgumentError("interval_start_ms: missing");
  if (!v1::Code_IsValid(c.reason())) return absl::InvalidArgumentError("reason: unknown code");
  CHASQUI_RETURN_IF_ERROR(CheckText("env", c.env(), kMaxTextFieldBytes));
  CHASQUI_RETURN_IF_ERROR(CheckText("router_id", c.router_id(), kMaxTextFieldBytes));
  CHASQUI_RETURN_IF_ERROR(CheckText("consumer", c.consumer(), kMaxTextFieldBytes));
  return absl::OkStatus();
}

}  // namespace chasqui::audit
