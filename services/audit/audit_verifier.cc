#include "services/audit/audit_verifier.h"

#include <optional>
#include <utility>

#include "chasqui/v1/audit.pb.h"
#include "common/core/names.h"
#include "common/core/status.h"
#include "common/trust/certificate.h"
#include "fmt/format.h"
#include "services/audit/audit_schema.h"
#include "services/audit/checkpoint_signer.h"

namespace chasqui::audit {
namespace {

// How far ahead the walk looks for the record a broken link points to (a reordering).
constexpr uint64_t kLookAhead = 1024;

struct Walked {
  uint64_t seq = 0;
  std::string hash;
};

bool Stop(VerifyReport& report, Finding finding, uint64_t seq, std::string detail) {
  report.finding = finding;
  report.first_bad_seq = seq;
  report.detail = std::move(detail);
  return false;
}

// Corruption becomes a finding; other errors stay errors.
absl::Status Absorb(VerifyReport& report, const absl::Status& s, uint64_t seq) {
  if (absl::IsDataLoss(s)) {
    Stop(report, Finding::kStorageCorruption, seq,
         fmt::format("storage corruption (RocksDB checksums) near seq {}: {}", seq, MessageOf(s)));
    return absl::OkStatus();
  }
  return s;
}

// The stored record at `seq`, or nullopt when absent or unparseable.
absl::StatusOr<std::optional<v1::StoredRecord>> ReadRecord(KvStore& store, uint64_t seq) {
  auto value = store.Get(RecordKey(seq));
  if (absl::IsNotFound(value.status())) return std::optional<v1::StoredRecord>();
  if (!value.ok()) return value.status();
  v1::StoredRecord rec;
  if (!rec.ParseFromString(*value)) return std::optional<v1::StoredRecord>();
  return std::optional<v1::StoredRecord>(std::move(rec));
}

// The link from `rec` (at key `s`) to its predecessor is broken: say which kind of tampering
// explains it best. `prev` is the last good record, `prevprev_hash` the one before it.
absl::Status ClassifyBrokenLink(KvStore& store, VerifyReport& report, uint64_t s,
                                const v1::StoredRecord& rec, const Walked& prev,
                                const std::string& prevprev_hash, uint64_t from) {
  // It links to the record two back: the one in between was slipped in.
  if (prev.seq > from && rec.prev_hash() == prevprev_hash) {
    Stop(report, Finding::kInserted, prev.seq,
         fmt::format("record {} was inserted: record {} links to record {}", prev.seq, s,
                     prev.seq - 1));
    return absl::OkStatus();
  }
  // It links to a record stored later: the two were swapped.
  for (uint64_t t = s + 1; t <= s + kLookAhead; ++t) {
    auto later = ReadRecord(store, t);
    if (!later.ok()) return Absorb(report, later.status(), t);
    if (!later->has_value()) break;
    if ((*later)->hash() == rec.prev_hash()) {
      Stop(report, Finding::kReordered, s,
           fmt::format("record {} is out of order: it follows record {}, stored after it", s, t));
      return absl::OkStatus();
    }
  }
  // The uniqueness index remembers where each entry was first stored.
  v1::ChainEntry entry;
  if (entry.ParseFromString(rec.entry())) {
    auto index = store.Get(UniqueKey(entry));
    if (!index.ok() && !absl::IsNotFound(index.status())) {
      return Absorb(report, index.status(), s);
    }
    if (index.ok()) {
      auto original = ParseSeqAndHash(*index);
      if (original.ok() && original->hash == rec.hash() && original->seq > s) {
        Stop(report, Finding::kRemoved, s,
             fmt::format("record {} was removed: the record now at {} was stored as seq {}", s, s,
                         original->seq));
        return absl::OkStatus();
      }
      if (original.ok() && original->hash == rec.hash() && original->seq < s) {
        Stop(report, Finding::kInserted, original->seq,
             fmt::format("a record was inserted at or before seq {}: the record now at {} was "
                         "stored as seq {}",
                         s - 1, s, original->seq));
        return absl::OkStatus();
      }
    }
  }
  Stop(report, Finding::kChanged, prev.seq,
       fmt::format("record {} was changed: its hash no longer matches the link in record {}",
                   prev.seq, s));
  return absl::OkStatus();
}

// Why the certificate recorded at `seq` does not hold against `roots`, or OK.
absl::Status CheckRecordedCertificate(const v1::CertificateIssued& c, uint64_t seq,
                                      const TrustAnchors& roots, std::string_view env) {
  const v1::TransparencyLogEntry& e = c.entry();
  v1::Certificate cert;
  v1::CertificateBody body;
  const bool parses = cert.ParseFromString(e.certificate()) && body.ParseFromString(cert.body());
  const std::string serial = parses ? std::to_string(body.serial()) : "(unparseable)";
  absl::Status why;
  if (auto held = ValidateCertificateIssued(c); !held.ok()) {
    why = held.status();
  } else if (auto verified = VerifyCertificate(cert, roots, env, e.logged_at_ms());
             !verified.ok()) {
    // As of when it was logged: a certificate since expired, or a root since rotated out,
    // still verifies; one no pinned root signed never does.
    why = verified.status();
  } else {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(fmt::format(
      "record {}: certificate serial {} (transparency log entry {}, issuer {}) does not verify "
      "against the pinned roots: {}",
      seq, serial, e.sequence(), parses ? Printable(body.issuer_key_id()) : "unknown",
      MessageOf(why)));
}

}  // namespace

std::string_view FindingName(Finding finding) {
  switch (finding) {
    case Finding::kIntact: return "intact";
    case Finding::kChanged: return "changed";
    case Finding::kRemoved: return "removed";
    case Finding::kInserted: return "inserted";
    case Finding::kReordered: return "reordered";
    case Finding::kTruncated: return "truncated";
    case Finding::kRewritten: return "rewritten";
    case Finding::kBadCheckpoint: return "bad_checkpoint";
    case Finding::kBadCertificate: return "bad_certificate";
    case Finding::kStorageCorruption: return "storage_corruption";
  }
  return "unknown";
}

absl::StatusOr<VerifyReport> VerifyChain(KvStore& store, const VerifyOptions& options) {
  VerifyReport report;
  uint64_t from = options.from == 0 ? 1 : options.from;
  if (options.to != 0 && options.to < from) {
    return absl::InvalidArgumentError(
        fmt::format("verify: --to {} is before --from {}", options.to, from));
  }

  // RocksDB's checksums first, over every key (records, indexes, checkpoints): damaged storage
  // must be reported as such even where the chain walk would not read.
  {
    uint64_t last_record = 0;
    absl::Status all = store.Scan("", "", [&](std::string_view key, std::string_view) {
      if (key.size() == 10 && key.substr(0, 2) == kRecordPrefix) last_record = SeqFromKey(key);
      return true;
    });
    if (!all.ok()) {
      CHASQUI_RETURN_IF_ERROR(Absorb(report, all, last_record + 1));
      return report;
    }
  }

  // A pruned store (or an export being checked) starts at its marker's first_seq, linked to
  // the marker's genesis hash.
  std::optional<v1::PruneMarker> pruned;
  {
    auto marker = store.Get(kPruneKey);
    if (marker.ok()) {
      pruned.emplace();
      if (!pruned->ParseFromString(*marker) || pruned->first_seq() == 0 ||
          pruned->genesis_hash().size() != kLinkHashBytes) {
        Stop(report, Finding::kChanged, 0, "the prune marker was changed: it does not parse");
        return report;
      }
    } else if (!absl::IsNotFound(marker.status())) {
      CHASQUI_RETURN_IF_ERROR(Absorb(report, marker.status(), 0));
      return report;
    }
  }
  if (pruned && from < pruned->first_seq()) from = pruned->first_seq();
  if (options.to != 0 && options.to < from) {
    return absl::InvalidArgumentError(fmt::format(
        "verify: --to {} lies before the first stored record {} (the rest was pruned)",
        options.to, from));
  }

  Walked prev{from - 1, GenesisHash()};
  std::string prevprev_hash = GenesisHash();
  if (pruned && from == pruned->first_seq()) {
    prev.hash = pruned->genesis_hash();
    prevprev_hash.clear();  // unknown: before the pruned boundary
  } else if (from > 1) {
    // The anchor: the stored hash of the record before the range.
    auto anchor = ReadRecord(store, from - 1);
    if (!anchor.ok()) {
      CHASQUI_RETURN_IF_ERROR(Absorb(report, anchor.status(), from - 1));
      return report;
    }
    if (!anchor->has_value()) {
      Stop(report, Finding::kRemoved, from - 1,
           fmt::format("record {} (the anchor of the range) is missing or unreadable", from - 1));
      return report;
    }
    prev.hash = (*anchor)->hash();
    prevprev_hash = (*anchor)->prev_hash();
  }
  const std::string anchor_hash = prev.hash;
  report.first_seq = from;

  // The first break seen by the scan; classified after it, since that may read other keys.
  std::optional<std::pair<uint64_t, v1::StoredRecord>> broken_link;
  // The first recorded certificate that does not verify: reported if the chain holds.
  std::optional<std::pair<uint64_t, std::string>> bad_certificate;
  uint64_t expected = from;
  const std::string end = options.to == 0 ? std::string(kRecordEnd) : RecordKey(options.to + 1);
  absl::Status scan = store.Scan(
      RecordKey(from), end, [&](std::string_view key, std::string_view value) {
        const uint64_t s = SeqFromKey(key);
        if (s == 0) {
          return Stop(report, Finding::kInserted, expected,
                      fmt::format("a record key of {} bytes (not a seq) before seq {}",
                                  key.size(), expected));
        }
        if (s > expected) {
          return Stop(report, Finding::kRemoved, expected,
                      s == expected + 1
                          ? fmt::format("record {} was removed", expected)
                          : fmt::format("records {} to {} were removed", expected, s - 1));
        }
        v1::StoredRecord rec;
        if (!rec.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
          return Stop(report, Finding::kChanged, s,
                      fmt::format("record {} was changed: it no longer parses", s));
        }
        if (LinkHash(rec.prev_hash(), rec.entry()) != rec.hash()) {
          return Stop(report, Finding::kChanged, s,
                      fmt::format("record {} was changed: its bytes do not match its hash", s));
        }
        if (rec.prev_hash() != prev.hash) {
          broken_link.emplace(s, std::move(rec));
          return false;
        }
        if (rec.seq() != s) {
          return Stop(report, Finding::kChanged, s,
                      fmt::format("record {} was changed: it is labelled seq {}", s, rec.seq()));
        }
        if (options.certificate_roots != nullptr) {
          v1::ChainEntry entry;
          if (entry.ParseFromString(rec.entry()) && entry.has_certificate()) {
            ++report.certificates_checked;
            absl::Status cert = CheckRecordedCertificate(entry.certificate(), s,
                                                         *options.certificate_roots, options.env);
            if (!cert.ok() && !bad_certificate) {
              bad_certificate.emplace(s, std::string(MessageOf(cert)));
            }
          }
        }
        prevprev_hash = prev.hash;
        prev = Walked{s, rec.hash()};
        ++report.records_checked;
        report.last_seq = s;
        ++expected;
        return true;
      });
  if (!scan.ok()) {
    CHASQUI_RETURN_IF_ERROR(Absorb(report, scan, expected));
    return report;
  }
  if (broken_link) {
    CHASQUI_RETURN_IF_ERROR(ClassifyBrokenLink(store, report, broken_link->first,
                                               broken_link->second, prev, prevprev_hash, from));
    return report;
  }
  if (report.finding != Finding::kIntact) return report;

  // Records removed from the end leave the head marker (and maybe a checkpoint) beyond them.
  const bool whole_tail = options.to == 0;
  if (whole_tail) {
    auto head = store.Get(kHeadKey);
    if (head.ok()) {
      auto marker = ParseSeqAndHash(*head);
      if (!marker.ok()) {
        Stop(report, Finding::kChanged, report.last_seq, "the head marker was changed");
        return report;
      }
      if (marker->seq > prev.seq) {
        Stop(report, Finding::kTruncated, prev.seq + 1,
             fmt::format("records {} to {} were removed from the end", prev.seq + 1, marker->seq));
        return report;
      }
      if (marker->seq == prev.seq && marker->hash != prev.hash) {
        Stop(report, Finding::kRewritten, prev.seq,
             fmt::format("record {} does not match the head marker", prev.seq));
        return report;
      }
    } else if (!absl::IsNotFound(head.status())) {
      CHASQUI_RETURN_IF_ERROR(Absorb(report, head.status(), prev.seq));
      return report;
    }
  }

  // Checkpoints: each signed head must be the stored hash of its record.
  uint64_t last_good_checkpoint = from - 1;
  std::optional<std::pair<Finding, std::string>> bad;
  uint64_t bad_seq = 0;
  absl::Status read_error;
  // Checks a checkpoint's signature when a key is given; records the finding otherwise.
  auto signed_ok = [&](const v1::Checkpoint& cp, uint64_t c) {
    if (!options.checkpoint_key && options.checkpoint_roots == nullptr) return true;
    absl::Status sig;
    if (!cp.statement().empty()) {
      sig = options.checkpoint_roots == nullptr
                ? absl::NotFoundError(fmt::format(
                      "checkpoint {}: signed by the crypto service; give the pinned roots", c))
                : VerifyCryptoCheckpoint(cp, *options.checkpoint_roots, options.env);
    } else {
      const PublicIdentity* signer =
          options.checkpoint_key ? options.checkpoint_key(cp.signer_serial()) : nullptr;
      sig = signer == nullptr ? absl::NotFoundError(fmt::format(
                                    "checkpoint {}: signer serial {} is not trusted", c,
                                    cp.signer_serial()))
                              : VerifyCheckpoint(cp, *signer, options.env);
    }
    if (!sig.ok()) {
      bad.emplace(Finding::kBadCheckpoint, std::string(MessageOf(sig)));
      bad_seq = c;
      return false;
    }
    ++report.checkpoint_signatures_checked;
    return true;
  };
  absl::Status cps = store.Scan(
      kCheckpointPrefix, kCheckpointEnd, [&](std::string_view key, std::string_view value) {
        v1::Checkpoint cp;
        const uint64_t c = SeqFromKey(key);
        if (!cp.ParseFromArray(value.data(), static_cast<int>(value.size())) || cp.seq() != c) {
          bad.emplace(Finding::kBadCheckpoint, fmt::format("checkpoint {} does not parse", c));
          bad_seq = c;
          return false;
        }
        if (c + 1 < from) return true;
        if (c + 1 == from) {
          // The checkpoint that signs the anchor: kept by prune so the new genesis is signed.
          if (cp.head_hash() != anchor_hash) {
            bad.emplace(Finding::kRewritten,
                        fmt::format("checkpoint {} does not sign the anchor hash of seq {}", c,
                                    from));
            bad_seq = from;
            return false;
          }
          if (!signed_ok(cp, c)) return false;
          ++report.checkpoints_checked;
          report.anchor_signed = true;
          return true;
        }
        if (c > prev.seq) {
          if (whole_tail) {
            bad.emplace(Finding::kTruncated,
                        fmt::format("checkpoint {} signs records beyond the last one ({})", c,
                                    prev.seq));
            bad_seq = prev.seq + 1;
          }
          return false;
        }
        ++report.checkpoints_checked;
        if (!signed_ok(cp, c)) return false;
        auto rec = ReadRecord(store, c);
        if (!rec.ok() || !rec->has_value() || (*rec)->hash() != cp.head_hash()) {
          if (!rec.ok()) {
            read_error = rec.status();
            bad_seq = c;
            return false;
          }
          bad.emplace(Finding::kRewritten,
                      fmt::format("records {} to {} were rewritten: record {} does not match "
                                  "its signed checkpoint",
                                  last_good_checkpoint + 1, c, c));
          bad_seq = last_good_checkpoint + 1;
          return false;
        }
        last_good_checkpoint = c;
        report.last_checkpoint_seq = c;
        return true;
      });
  if (!cps.ok()) {
    CHASQUI_RETURN_IF_ERROR(Absorb(report, cps, prev.seq));
    return report;
  }
  if (!read_error.ok()) {
    CHASQUI_RETURN_IF_ERROR(Absorb(report, read_error, bad_seq));
    return report;
  }
  if (!bad && pruned && from == pruned->first_seq() && !report.anchor_signed) {
    bad.emplace(Finding::kBadCheckpoint,
                fmt::format("no checkpoint at seq {} signs the genesis of the pruned chain",
                            from - 1));
    bad_seq = from - 1;
  }
  if (bad) {
    Stop(report, bad->first, bad_seq, std::move(bad->second));
  } else if (bad_certificate) {
    Stop(report, Finding::kBadCertificate, bad_certificate->first,
         std::move(bad_certificate->second));
  }
  return report;
}

}  // namespace chasqui::audit
