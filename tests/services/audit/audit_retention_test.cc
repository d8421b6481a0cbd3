// Retention over a real RocksDB store with real checkpoint signatures: records before a day
// are exported with the checkpoints that cover them; the export verifies offline (links and
// signatures) and every kind of tampering with it is detected; prune removes exactly what an
// export holds and refuses otherwise; the remaining chain verifies from its new genesis, keeps
// taking appends, and can be exported and pruned again. The same through `chasqui-audit`.

#include "services/audit/audit_retention.h"

#include <functional>
#include <memory>

#include "absl/time/civil_time.h"
#include "common/core/files.h"
#include "common/envelope/identity.h"
#include "gtest/gtest.h"
#include "services/audit/audit_chain.h"
#include "services/audit/audit_query.h"
#include "services/audit/audit_schema.h"
#include "tests/services/audit/audit_test_support.h"
#include "tests/support/run_command.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait_for.h"

namespace chasqui::audit {
namespace {

using ::chasqui::testing::RunCommand;
using ::chasqui::testing::TempDir;
using testing::MakeRecord;
using testing::Outcomes;

int64_t LaPaz(int y, int mo, int d, int h) {
  absl::TimeZone tz;
  absl::LoadTimeZone("America/La_Paz", &tz);
  return absl::ToUnixMillis(absl::FromCivil(absl::CivilHour(y, mo, d, h), tz));
}

class AuditRetentionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    signer_ = std::make_unique<LocalCheckpointSigner>(
        GenerateIdentity("audit", "test", Role::kRouter));
    verify_.env = "test";
    verify_.checkpoint_key = [this](uint64_t serial) -> const PublicIdentity* {
      return serial == signer_->pub().serial ? &signer_->pub() : nullptr;
    };
    OpenStore();
  }
  void OpenStore() {
    auto store = KvStore::Open({.path = dir_.File("audit")});
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }
  // Appends records [first, last], one group each, record n received on day_of(n) of January
  // 2027 (La Paz), then stops the chain (which signs the head).
  void Append(uint64_t first, uint64_t last, const std::function<int(uint64_t)>& day_of) {
    AuditChainOptions options;
    options.checkpoint_every_records = 8;
    auto chain = AuditChain::Open(options, store_.get(), signer_.get());
    ASSERT_TRUE(chain.ok()) << chain.status();
    for (uint64_t n = first; n <= last; ++n) {
      v1::AuditRecord r = MakeRecord(n);
      r.set_received_at_ms(LaPaz(2027, 1, day_of(n), 10) + static_cast<int64_t>(n));
      r.set_replied_at_ms(r.received_at_ms() + 5);
      Outcomes out;
      (*chain)->Append(std::move(r), out.For(n));
      ASSERT_TRUE(out.WaitFor(1));
      ASSERT_TRUE(out.Get(n).ok()) << out.Get(n).status();
      // Each signature finished (on the chain's signer thread) before the next append, so
      // checkpoints land every 8 records.
      ASSERT_TRUE(::chasqui::testing::WaitFor([&] { return !(*chain)->stats().signing; }));
    }
    (*chain)->Stop();
  }
  VerifyReport VerifyStore() {
    auto r = VerifyChain(*store_, verify_);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : VerifyReport{};
  }
  VerifyReport VerifyBytes(const std::string& bytes) {
    auto r = VerifyExport(bytes, verify_);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : VerifyReport{};
  }

  TempDir dir_;
  std::unique_ptr<LocalCheckpointSigner> signer_;
  std::unique_ptr<KvStore> store_;
  VerifyOptions verify_;
};

TEST_F(AuditRetentionTest, ExportVerifyPruneAndVerifyTheRest) {
  Append(1, 50, [](uint64_t n) { return n <= 30 ? 15 : 16; });
  const int64_t before = LaPaz(2027, 1, 16, 0);

  // Records 1..30 are older, but only 1..24 are signed by a checkpoint (8, 16, 24).
  auto ex = ExportBefore(*store_, before, verify_, 1);
  ASSERT_TRUE(ex.ok()) << ex.status();
  EXPECT_EQ(ex->first_seq(), 1u);
  EXPECT_EQ(ex->last_seq(), 24u);
  EXPECT_EQ(ex->records_size(), 24);
  EXPECT_EQ(ex->checkpoints_size(), 3);
  const std::string bytes = ex->SerializeAsString();
  VerifyReport ok = VerifyBytes(bytes);
  EXPECT_EQ(ok.finding, Finding::kIntact) << ok.detail;
  EXPECT_EQ(ok.records_checked, 24u);
  EXPECT_EQ(ok.checkpoint_signatures_checked, 3u);

  // Tampering with the export, each kind found.
  {
    v1::AuditExport t = *ex;
    std::string* entry = t.mutable_records(10)->mutable_entry();
    (*entry)[entry->size() / 2] ^= 1;
    VerifyReport r = VerifyBytes(t.SerializeAsString());
    EXPECT_EQ(r.finding, Finding::kChanged) << r.detail;
    EXPECT_EQ(r.first_bad_seq, 11u);
    // Prune refuses a tampered export.
    auto pruned = PruneExported(*store_, t.SerializeAsString(), before, verify_, 2);
    EXPECT_TRUE(absl::IsFailedPrecondition(pruned.status())) << pruned.status();
  }
  {
    v1::AuditExport t = *ex;
    t.mutable_checkpoints()->RemoveLast();
    VerifyReport r = VerifyBytes(t.SerializeAsString());
    EXPECT_EQ(r.finding, Finding::kBadCheckpoint) << r.detail;
    EXPECT_NE(r.detail.find("not signed by a checkpoint"), std::string::npos) << r.detail;
  }
  {
    v1::AuditExport t = *ex;
    t.mutable_records()->RemoveLast();
    VerifyReport r = VerifyBytes(t.SerializeAsString());
    EXPECT_EQ(r.finding, Finding::kTruncated) << r.detail;
  }
  {
    v1::AuditExport t = *ex;
    t.mutable_records()->SwapElements(3, 4);
    VerifyReport r = VerifyBytes(t.SerializeAsString());
    EXPECT_NE(r.finding, Finding::kIntact);
  }
  {
    VerifyOptions other = verify_;
    const PublicIdentity stranger = GenerateIdentity("audit", "test", Role::kRouter).pub;
    other.checkpoint_key = [&](uint64_t) { return &stranger; };
    auto r = VerifyExport(bytes, other);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->finding, Finding::kBadCheckpoint) << r->detail;
  }
  EXPECT_TRUE(absl::IsInvalidArgument(VerifyExport("not an export", verify_).status()));

  // Prune refuses an export that is not exactly what --before selects now.
  auto wrong = PruneExported(*store_, bytes, LaPaz(2027, 1, 17, 0), verify_, 2);
  ASSERT_TRUE(absl::IsFailedPrecondition(wrong.status())) << wrong.status();
  EXPECT_NE(wrong.status().message().find("export with the same --before"), std::string::npos);

  auto pruned = PruneExported(*store_, bytes, before, verify_, 2);
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_EQ(*pruned, 24u);
  EXPECT_TRUE(absl::IsNotFound(store_->Get(RecordKey(24)).status()));
  VerifyReport rest = VerifyStore();
  EXPECT_EQ(rest.finding, Finding::kIntact) << rest.detail;
  EXPECT_EQ(rest.first_seq, 25u);
  EXPECT_EQ(rest.records_checked, 26u);
  EXPECT_TRUE(rest.anchor_signed);
  // Queries see only what remains (the indexes went with the records).
  v1::QueryRequest all;
  all.set_page_size(1000);
  auto q = RunQuery(*store_, all);
  ASSERT_TRUE(q.ok());
  ASSERT_EQ(q->records_size(), 26);
  EXPECT_EQ(q->records(0).seq(), 25u);
  // The same export cannot prune twice: the range has moved on.
  EXPECT_TRUE(absl::IsFailedPrecondition(
      PruneExported(*store_, bytes, before, verify_, 3).status()));

  // The pruned chain resumes where it was, and a second round covers the rest.
  Append(51, 52, [](uint64_t) { return 16; });
  EXPECT_EQ(VerifyStore().finding, Finding::kIntact);
  const int64_t later = LaPaz(2027, 1, 17, 0);
  auto second = ExportBefore(*store_, later, verify_, 4);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->first_seq(), 25u);
  EXPECT_EQ(second->last_seq(), 52u);
  VerifyReport second_ok = VerifyBytes(second->SerializeAsString());
  EXPECT_EQ(second_ok.finding, Finding::kIntact) << second_ok.detail;
  EXPECT_TRUE(second_ok.anchor_signed);
  {
    // The anchor of a later export is signed by the boundary checkpoint: changing it is found.
    v1::AuditExport t = *second;
    (*t.mutable_anchor_hash())[0] ^= 1;
    EXPECT_NE(VerifyBytes(t.SerializeAsString()).finding, Finding::kIntact);
  }
  auto all_pruned = PruneExported(*store_, second->SerializeAsString(), later, verify_, 5);
  ASSERT_TRUE(all_pruned.ok()) << all_pruned.status();
  EXPECT_EQ(*all_pruned, 28u);
  EXPECT_EQ(VerifyStore().finding, Finding::kIntact);
  Append(53, 53, [](uint64_t) { return 17; });
  VerifyReport last = VerifyStore();
  EXPECT_EQ(last.finding, Finding::kIntact) << last.detail;
  EXPECT_EQ(last.first_seq, 53u);
}

TEST_F(AuditRetentionTest, NothingToExportIsAPreciseRefusal) {
  Append(1, 3, [](uint64_t) { return 16; });
  auto none = ExportBefore(*store_, LaPaz(2027, 1, 16, 0), verify_, 1);
  ASSERT_TRUE(absl::IsFailedPrecondition(none.status())) << none.status();
  EXPECT_NE(none.status().message().find("no record before"), std::string::npos);
}

TEST_F(AuditRetentionTest, TheCommandLineExportsVerifiesAndPrunes) {
  Append(1, 24, [](uint64_t n) { return n <= 20 ? 15 : 16; });
  store_.reset();  // the commands open the store themselves
  const std::string trust = dir_.File("trust.json");
  ASSERT_TRUE(WriteFileDurably(trust,
                               "{\"version\":1,\"identities\":[" +
                                   PublicIdentityJson(signer_->pub()) + "]}",
                               0600, false)
                  .ok());
  const std::string bin = std::string("timeout 30 ") + CHASQUI_AUDIT_BIN;
  const std::string data = " --env test --data " + dir_.File("audit");
  const std::string out = dir_.File("2027-01.export");

  auto exported = RunCommand(bin + " export" + data + " --before 2027-01-16 --out " + out +
                             " --trust " + trust);
  ASSERT_EQ(exported.exit_code, 0) << exported.output;
  EXPECT_NE(exported.output.find("exported records 1 to 16"), std::string::npos)
      << exported.output;
  auto checked = RunCommand(bin + " verify --env test --export " + out + " --trust " + trust);
  ASSERT_EQ(checked.exit_code, 0) << checked.output;
  EXPECT_NE(checked.output.find("intact: export: 16 records"), std::string::npos)
      << checked.output;

  // Without the export, prune refuses (CLI11: --export is required).
  auto no_export = RunCommand(bin + " prune" + data + " --before 2027-01-16");
  EXPECT_NE(no_export.exit_code, 0) << no_export.output;

  // A tampered copy is detected offline and refused by prune.
  auto bytes = ReadFileToString(out, "export");
  ASSERT_TRUE(bytes.ok());
  v1::AuditExport t;
  ASSERT_TRUE(t.ParseFromString(*bytes));
  t.mutable_records(2)->set_entry(t.records(2).entry() + " ");
  const std::string tampered = dir_.File("tampered.export");
  ASSERT_TRUE(WriteFileDurably(tampered, t.SerializeAsString(), 0600, false).ok());
  auto found = RunCommand(bin + " verify --env test --export " + tampered + " --trust " + trust);
  EXPECT_EQ(found.exit_code, 1) << found.output;
  EXPECT_NE(found.output.find("changed at seq 3"), std::string::npos) << found.output;
  auto refused = RunCommand(bin + " prune" + data + " --before 2027-01-16 --export " + tampered);
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_NE(refused.output.find("does not verify"), std::string::npos) << refused.output;

  auto pruned = RunCommand(bin + " prune" + data + " --before 2027-01-16 --export " + out +
                           " --trust " + trust);
  ASSERT_EQ(pruned.exit_code, 0) << pruned.output;
  EXPECT_NE(pruned.output.find("pruned 16 records"), std::string::npos) << pruned.output;
  auto rest = RunCommand(bin + " verify" + data + " --trust " + trust);
  ASSERT_EQ(rest.exit_code, 0) << rest.output;
  EXPECT_NE(rest.output.find("8 records checked (seq 17 to 24)"), std::string::npos)
      << rest.output;
}

}  // namespace
}  // namespace chasqui::audit
