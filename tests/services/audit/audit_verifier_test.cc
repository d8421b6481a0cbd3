// AuditVerifier over a real RocksDB store: a chain written by AuditChain verifies; each kind of
// tampering done through the KvStore API (change, change and re-hash, remove, remove and
// renumber, insert, reorder, truncate, re-hash everything) is named with the first bad seq; a
// damaged table file is storage corruption, not tampering; and the chasqui-audit binary's
// verify exit codes say the same.

#include "services/audit/audit_verifier.h"

#include <filesystem>
#include <fstream>

#include "common/envelope/identity.h"
#include "common/trust/anchors.h"
#include "common/trust/certificate.h"
#include "common/trust/transparency.h"
#include "gtest/gtest.h"
#include "services/audit/audit_chain.h"
#include "services/audit/audit_schema.h"
#include "services/audit/checkpoint_signer.h"
#include "tests/services/audit/audit_test_support.h"
#include "tests/support/run_command.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait_for.h"

namespace chasqui::audit {
namespace {

using ::chasqui::testing::TempDir;
using testing::MakeRecord;
using testing::Outcomes;

constexpr uint64_t kRecords = 20;

class AuditVerifierTest : public ::testing::Test {
 protected:
  AuditVerifierTest() : identity_(GenerateIdentity("audit", "test", Role::kRouter)) {
    pub_ = identity_.pub;
    LocalCheckpointSigner signer(std::move(identity_));
    auto store = KvStore::Open({.path = Path()});
    EXPECT_TRUE(store.ok()) << store.status();
    auto chain = AuditChain::Open(
        {.env = "test", .checkpoint_every_records = 5, .checkpoint_every_ms = 3'600'000},
        store->get(), &signer);
    EXPECT_TRUE(chain.ok()) << chain.status();
    Outcomes outcomes;
    // One at a time, each signature finished before the next append (signing has its own
    // thread), so checkpoints land at 5, 10, 15, 20.
    for (uint64_t i = 1; i <= kRecords; ++i) {
      (*chain)->Append(MakeRecord(i), outcomes.For(i));
      EXPECT_TRUE(outcomes.WaitFor(i));
      EXPECT_TRUE(::chasqui::testing::WaitFor([&] { return !(*chain)->stats().signing; }));
    }
  }

  std::string Path() const { return dir_.File("audit"); }

  std::unique_ptr<KvStore> OpenStore() {
    auto store = KvStore::Open({.path = Path()});
    EXPECT_TRUE(store.ok()) << store.status();
    return *std::move(store);
  }

  VerifyReport Verify(VerifyOptions options = {}) {
    auto store = OpenStore();
    options.checkpoint_key = [this](uint64_t serial) {
      return serial == pub_.serial ? &pub_ : nullptr;
    };
    auto report = VerifyChain(*store, options);
    EXPECT_TRUE(report.ok()) << report.status();
    return report.ok() ? *report : VerifyReport{};
  }

  v1::StoredRecord Read(KvStore& store, uint64_t seq) {
    v1::StoredRecord rec;
    auto value = store.Get(RecordKey(seq));
    EXPECT_TRUE(value.ok()) << value.status();
    EXPECT_TRUE(rec.ParseFromString(*value));
    return rec;
  }
  void Write(KvStore& store, uint64_t seq, const v1::StoredRecord& rec) {
    ASSERT_TRUE(store.Put(RecordKey(seq), rec.SerializeAsString(), Durability::kSynced).ok());
  }
  // Edits record `seq`'s end user; re-hashes it when `rehash`.
  void Change(uint64_t seq, bool rehash) {
    auto store = OpenStore();
    v1::StoredRecord rec = Read(*store, seq);
    v1::ChainEntry entry;
    ASSERT_TRUE(entry.ParseFromString(rec.entry()));
    entry.mutable_record()->set_end_user("somebody.else");
    rec.set_entry(entry.SerializeAsString());
    if (rehash) rec.set_hash(LinkHash(rec.prev_hash(), rec.entry()));
    Write(*store, seq, rec);
  }

  TempDir dir_;
  Identity identity_;
  PublicIdentity pub_;
};

TEST_F(AuditVerifierTest, UntouchedChainIsIntactWithEveryCheckpointSignatureChecked) {
  VerifyReport r = Verify();
  EXPECT_EQ(r.finding, Finding::kIntact) << r.detail;
  EXPECT_EQ(r.records_checked, kRecords);
  EXPECT_EQ(r.checkpoints_checked, 4u);
  EXPECT_EQ(r.checkpoint_signatures_checked, 4u);
  VerifyReport range = Verify({.from = 6, .to = 12});
  EXPECT_EQ(range.finding, Finding::kIntact) << range.detail;
  EXPECT_EQ(range.records_checked, 7u);
}

TEST_F(AuditVerifierTest, ChangedRecordIsNamed) {
  Change(7, /*rehash=*/false);
  VerifyReport r = Verify();
  EXPECT_EQ(r.finding, Finding::kChanged) << r.detail;
  EXPECT_EQ(r.first_bad_seq, 7u) << r.detail;
}

TEST_F(AuditVerifierTest, ChangedAndRehashedRecordIsNamedByTheNextLink) {
  Change(7, /*rehash=*/true);
  VerifyReport r = Verify();
  EXPECT_EQ(r.finding, Finding::kChanged) << r.detail;
  EXPECT_EQ(r.first_bad_seq, 7u) << r.detail;
}

TEST_F(AuditVerifierTest, RemovedRecordIsNamed) {
  ASSERT_TRUE(OpenStore()->Write([] {
    KvBatch b;
    b.Delete(RecordKey(9));
    return b;
  }(), Durability::kSynced).ok());
  VerifyReport r = Verify();
  EXPECT_EQ(r.finding, Finding::kRemoved) << r.detail;
  EXPECT_EQ(r.first_bad_seq, 9u) << r.detail;
}

TEST_F(AuditVerifierTest, RemovedRecordWithTheRestRenumberedIsNamed) {
  {
    auto store = OpenStore();
    for (uint64_t s = 9; s < kRecords; ++s) {
      v1::StoredRecord next = Read(*store, s + 1);
      next.set_seq(s);  // the label is not hashed; an attacker can fix it
      Write(*store, s, next);
    }
    KvBatch b;
    b.Delete(RecordKey(kRecords));
    ASSERT_TRUE(store->Write(b, Durability::kSynced).ok());
  }
  VerifyReport r = Verify();
  EXPECT_EQ(r.finding, Finding::kRemoved) << r.detail;
  EXPECT_EQ(r.first_bad_seq, 9u) << r.detail;
}

TEST_F(AuditVerifierTest, InsertedRecordIsNamed) {
  {
    auto store = OpenStore();
    // Shift 12..20 up by one, then forge a record at 12 that links to 11.
    for (uint64_t s = kRecords; s >= 12; --s) {
      v1::StoredRecord rec = Read(*store, s);
      rec.set_seq(s + 1);
      Write(*store, s + 1, rec);
    }
    v1::StoredRecord prev = Read(*store, 11);
    v1::ChainEntry forged;
    *forged.mutable_record() = MakeRecord(999);
    v1::StoredRecord rec;
    rec.set_seq(12);
    rec.set_prev_hash(prev.hash());
    rec.set_entry(forged.SerializeAsString());
    rec.set_hash(LinkHash(rec.prev_hash(), rec.entry()));
    Write(*store, 12, rec);
  }
  VerifyReport r = Verify();
  EXPECT_EQ(r.finding, Finding::kInserted) << r.detail;
  EXPECT_EQ(r.first_bad_seq, 12u) << r.detail;
}

TEST_F(AuditVerifierTest, ReorderedRecordsAreNamed) {
  {
    auto store = OpenStore();
    v1::StoredRecord a = Read(*store, 13);
    v1::StoredRecord b = Read(*store, 14);
    a.set_seq(14);
    b.set_seq(13);
    Write(*store, 13, b);
    Write(*store, 14, a);
  }
  VerifyReport r = Verify();
  EXPECT_EQ(r.finding, Finding::kReordered) << r.detail;
  EXPECT_EQ(r.first_bad_seq, 13u) << r.detail;
}

TEST_F(AuditVerifierTest, RecordsRemovedFromTheEndAreTruncation) {
  {
    auto store = OpenStore();
    KvBatch b;
    for (uint64_t s = 18; s <= kRecords; ++s) b.Delete(RecordKey(s));
    ASSERT_TRUE(store->Write(b, Durability::kSynced).ok());
  }
  VerifyReport r = Verify();
  EXPECT_EQ(r.finding, Finding::kTruncated) << r.detail;
  EXPECT_EQ(r.first_bad_seq, 18u) << r.detail;
}

TEST_F(AuditVerifierTest, TruncationWithTheHeadMarkerRewrittenIsCaughtByTheCheckpoint) {
  {
    auto store = OpenStore();
    KvBatch b;
    for (uint64_t s = 18; s <= kRecords; ++s) b.Delete(RecordKey(s));
    v1::StoredRecord last = Read(*store, 17);
    b.Put(kHeadKey, SeqAndHash(17, last.hash()));
    ASSERT_TRUE(store->Write(b, Durability::kSynced).ok());
  }
  VerifyReport r = Verify();
  EXPECT_EQ(r.finding, Finding::kTruncated) << r.detail;
  EXPECT_EQ(r.first_bad_seq, 18u) << r.detail;
}

TEST_F(AuditVerifierTest, SuffixRehashedEndToEndIsCaughtByTheSignedCheckpoint) {
  Change(12, /*rehash=*/true);
  {
    auto store = OpenStore();
    std::string prev = Read(*store, 12).hash();
    for (uint64_t s = 13; s <= kRecords; ++s) {
      v1::StoredRecord rec = Read(*store, s);
      rec.set_prev_hash(prev);
      rec.set_hash(LinkHash(prev, rec.entry()));
      prev = rec.hash();
      Write(*store, s, rec);
    }
    ASSERT_TRUE(store->Put(kHeadKey, SeqAndHash(kRecords, prev), Durability::kSynced).ok());
  }
  VerifyReport r = Verify();
  EXPECT_EQ(r.finding, Finding::kRewritten) << r.detail;
  EXPECT_EQ(r.first_bad_seq, 11u) << "the first seq after the last checkpoint that holds";
}

TEST_F(AuditVerifierTest, CheckpointSignedByAnotherKeyIsRefused) {
  {
    auto store = OpenStore();
    auto value = store->Get(CheckpointKey(10));
    ASSERT_TRUE(value.ok());
    v1::Checkpoint cp;
    ASSERT_TRUE(cp.ParseFromString(*value));
    LocalCheckpointSigner other(GenerateIdentity("audit", "test", Role::kRouter));
    ASSERT_TRUE(other.Sign(cp).ok());
    cp.set_signer_serial(pub_.serial);  // claims to be ours
    ASSERT_TRUE(store->Put(CheckpointKey(10), cp.SerializeAsString(), Durability::kSynced).ok());
  }
  VerifyReport r = Verify();
  EXPECT_EQ(r.finding, Finding::kBadCheckpoint) << r.detail;
  EXPECT_EQ(r.first_bad_seq, 10u);
}

// Flips bytes in the middle of the largest table file (after a reopen has flushed the WAL).
void DamageTableFile(const std::string& path) {
  std::string sst;
  uintmax_t largest = 0;
  for (const auto& entry : std::filesystem::directory_iterator(path)) {
    if (entry.path().extension() == ".sst" && entry.file_size() > largest) {
      sst = entry.path();
      largest = entry.file_size();
    }
  }
  ASSERT_FALSE(sst.empty()) << "no table file was written";
  std::fstream f(sst, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(largest / 3));
  std::string junk(64, '\xA5');
  f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
}

TEST_F(AuditVerifierTest, DamagedTableFileIsStorageCorruptionNotTampering) {
  { auto store = OpenStore(); }  // a reopen flushes the WAL into a table file
  DamageTableFile(Path());
  auto store = KvStore::Open({.path = Path()});
  if (!store.ok()) {
    EXPECT_TRUE(absl::IsDataLoss(store.status())) << store.status();
    return;
  }
  auto report = VerifyChain(**store, {});
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->finding, Finding::kStorageCorruption) << report->detail;
  store->reset();
  auto corrupt = ::chasqui::testing::RunCommand(std::string("timeout 30 ") + CHASQUI_AUDIT_BIN +
                                                " verify --env test --data " + Path());
  EXPECT_EQ(corrupt.exit_code, 3) << corrupt.output;
  EXPECT_NE(corrupt.output.find("storage_corruption"), std::string::npos) << corrupt.output;
}

TEST_F(AuditVerifierTest, BinaryExitCodesSayIntactAndTampered) {
  const std::string verify = std::string("timeout 30 ") + CHASQUI_AUDIT_BIN +
                             " verify --env test --data " + Path();
  auto intact = ::chasqui::testing::RunCommand(verify);
  EXPECT_EQ(intact.exit_code, 0) << intact.output;
  EXPECT_NE(intact.output.find("intact: 20 records"), std::string::npos) << intact.output;

  Change(4, /*rehash=*/false);
  auto tampered = ::chasqui::testing::RunCommand(verify);
  EXPECT_EQ(tampered.exit_code, 1) << tampered.output;
  EXPECT_NE(tampered.output.find("changed at seq 4"), std::string::npos) << tampered.output;
}

// A transparency log entry holding a certificate for `serial` signed by `signer`, naming
// `issuer_key_id` as its issuer, issued and logged at `at_ms`.
v1::TransparencyLogEntry LogEntry(uint64_t sequence, const std::string& prev_hash, int64_t at_ms,
                                  const SigningKey& signer, const std::string& issuer_key_id,
                                  uint64_t serial) {
  v1::CertificateBody b;
  b.set_serial(serial);
  b.set_subject("segip");
  b.set_entity("segip");
  b.set_role(v1::CERTIFICATE_ROLE_ENTITY);
  b.set_kind(KindOfRole(v1::CERTIFICATE_ROLE_ENTITY));
  b.set_env("test");
  b.set_sign_pk(std::string(AsView(SigningKey::Generate().public_key())));
  b.set_kx_pk(std::string(AsView(KxKey::Generate().public_key())));
  b.set_not_before_ms(at_ms);
  b.set_not_after_ms(at_ms + 86'400'000);  // long expired when verify runs
  b.set_issuer_key_id(issuer_key_id);
  v1::TransparencyLogEntry e;
  e.set_sequence(sequence);
  e.set_prev_hash(prev_hash);
  e.set_logged_at_ms(at_ms);
  e.set_certificate(SignCertificate(b, signer).SerializeAsString());
  const Hash32 h = TransparencyEntryHash(sequence, prev_hash, at_ms, e.certificate());
  e.set_entry_hash(std::string(AsView(h)));
  return e;
}

TEST(AuditVerifierCertificatesTest, RecordedCertificateNoPinnedRootSignedIsNamedWithItsSerial) {
  ::chasqui::testing::TempDir dir;
  auto store = KvStore::Open({.path = dir.File("audit")});
  ASSERT_TRUE(store.ok()) << store.status();
  const int64_t t = 1'800'000'000'000;
  const SigningKey root = SigningKey::Generate();
  const SigningKey rogue = SigningKey::Generate();
  TrustAnchor anchor;
  anchor.key_id = RootKeyId(root.public_key());
  anchor.sign_pk = root.public_key();
  anchor.not_before_ms = t - 86'400'000;
  anchor.not_after_ms = t + 86'400'000;
  const TrustAnchors roots({anchor});
  {
    LocalCheckpointSigner signer(GenerateIdentity("audit", "test", Role::kRouter));
    auto chain = AuditChain::Open({.env = "test"}, store->get(), &signer);
    ASSERT_TRUE(chain.ok()) << chain.status();
    Outcomes outcomes;
    std::string prev(32, '\0');
    // Log entry 2 claims the pinned root as its issuer, but another key signed it.
    for (uint64_t n = 1; n <= 3; ++n) {
      v1::TransparencyLogEntry e =
          LogEntry(n, prev, t + static_cast<int64_t>(n), n == 2 ? rogue : root, anchor.key_id,
                   5000 + n);
      prev = e.entry_hash();
      (*chain)->AppendCertificate(std::move(e), outcomes.For(n));
      ASSERT_TRUE(outcomes.WaitFor(n));
    }
    (*chain)->Append(MakeRecord(1), outcomes.For(4));
    ASSERT_TRUE(outcomes.WaitFor(4));
    for (uint64_t n = 1; n <= 4; ++n) {
      ASSERT_TRUE(outcomes.Get(n).ok()) << n << ": " << outcomes.Get(n).status();
    }
  }

  VerifyOptions options;
  options.env = "test";
  auto unchecked = VerifyChain(**store, options);
  ASSERT_TRUE(unchecked.ok()) << unchecked.status();
  EXPECT_EQ(unchecked->finding, Finding::kIntact) << "without roots certificates are not checked";
  EXPECT_EQ(unchecked->certificates_checked, 0u);

  options.certificate_roots = &roots;
  auto r = VerifyChain(**store, options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->finding, Finding::kBadCertificate) << r->detail;
  EXPECT_EQ(FindingName(r->finding), "bad_certificate");
  EXPECT_EQ(r->first_bad_seq, 2u);
  EXPECT_NE(r->detail.find("record 2: certificate serial 5002"), std::string::npos) << r->detail;
  EXPECT_NE(r->detail.find("transparency log entry 2"), std::string::npos) << r->detail;
  EXPECT_EQ(r->records_checked, 4u) << "the chain is walked to its end";
  EXPECT_EQ(r->certificates_checked, 3u);

  // A pinned root other than the one named: entry 1 and 3 no longer verify either; the first
  // is reported, and the reason says the issuer is not pinned.
  TrustAnchor other = anchor;
  other.sign_pk = rogue.public_key();
  other.key_id = RootKeyId(rogue.public_key());
  const TrustAnchors wrong({other});
  options.certificate_roots = &wrong;
  r = VerifyChain(**store, options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->finding, Finding::kBadCertificate) << r->detail;
  EXPECT_EQ(r->first_bad_seq, 1u) << r->detail;
  EXPECT_NE(r->detail.find("serial 5001"), std::string::npos) << r->detail;
}

}  // namespace
}  // namespace chasqui::audit
