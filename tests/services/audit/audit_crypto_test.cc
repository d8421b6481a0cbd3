// The audit chain with the crypto service, real parts only: a real nats-server, a root made by
// the real ceremony, the crypto service and the audit service each on their own RocksDB store.
//   - checkpoints are signed by the crypto service (RemoteCheckpointSigner) and `verify` checks
//     them against the pinned roots; a tampered checkpoint fails;
//   - the crypto service stopped: records are still acknowledged, and checkpoints resume when
//     it is back;
//   - every certificate issued lands in the audit chain (AuditFeed), also when the audit
//     service was down during the enrolment, exactly once.

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/bus/bus.h"
#include "common/core/clock.h"
#include "common/core/status.h"
#include "common/envelope/identity.h"
#include "common/store/kv_store.h"
#include "common/trust/anchors.h"
#include "common/trust/certificate_trust.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "services/audit/audit_chain.h"
#include "services/audit/audit_query.h"
#include "services/audit/audit_schema.h"
#include "services/audit/audit_service.h"
#include "services/audit/audit_verifier.h"
#include "services/audit/checkpoint_signer.h"
#include "services/crypto/audit_feed.h"
#include "services/crypto/authority.h"
#include "services/crypto/ceremony.h"
#include "services/crypto/crypto_service.h"
#include "tests/services/audit/audit_test_support.h"
#include "tests/support/nats_server.h"
#include "tests/support/run_command.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait_for.h"

namespace chasqui::audit::testing {
namespace {

using ::chasqui::testing::NatsServer;
using ::chasqui::testing::TempDir;
using ::chasqui::testing::WaitFor;

constexpr int64_t kDayMs = 86'400'000;

class AuditCryptoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto nats = NatsServer::Start();
    ASSERT_TRUE(nats.ok()) << nats.status();
    nats_ = *std::move(nats);
    const std::string crypto_dir = dir_.File("crypto");
    Passphrase pass("a test passphrase");
    auto init = InitRoot(crypto_dir, pass, KdfCost::kTestOnlyMinimum, 3650 * kDayMs,
                         SystemClock());
    ASSERT_TRUE(init.ok()) << init.status();
    auto anchors = LoadTrustAnchors(init->anchors_file);
    ASSERT_TRUE(anchors.ok()) << anchors.status();
    anchors_ = *anchors;
    roots_file_ = init->anchors_file;
    auto store = OpenAuthorityStore(crypto_dir);
    ASSERT_TRUE(store.ok()) << store.status();
    crypto_store_ = *std::move(store);
    auto root = LoadCurrentRoot(crypto_dir, crypto_store_.get(), pass);
    ASSERT_TRUE(root.ok()) << root.status();
    AuthorityOptions ao;
    ao.envs = {"test"};
    auto authority =
        CertificateAuthority::Open(ao, crypto_store_.get(), *std::move(root), SystemClock());
    ASSERT_TRUE(authority.ok()) << authority.status();
    authority_ = *std::move(authority);
    crypto_bus_ = Connect("crypto");
    StartCrypto();
    audit_bus_ = Connect("audit");
    auto audit_store = KvStore::Open({.path = dir_.File("audit")});
    ASSERT_TRUE(audit_store.ok()) << audit_store.status();
    audit_store_ = *std::move(audit_store);
  }

  void TearDown() override {
    StopAudit();
    signer_.reset();
    feed_.reset();
    StopCrypto();
  }

  std::unique_ptr<Bus> Connect(const std::string& name) {
    auto bus = Bus::Connect({.url = nats_->url(), .name = name, .send_asap = true});
    CHASQUI_CHECK(bus.ok(), MessageOf(bus.status()));
    return *std::move(bus);
  }

  void StartCrypto() {
    CryptoServiceOptions so;
    so.tick = absl::Milliseconds(50);
    so.audit_feed = feed_.get();
    auto service = CryptoService::Start(so, crypto_bus_.get(), authority_.get(),
                                        std::make_shared<prometheus::Registry>(), SystemClock());
    ASSERT_TRUE(service.ok()) << service.status();
    crypto_ = *std::move(service);
  }
  void StopCrypto() { crypto_.reset(); }

  void StartFeed() {
    AuditFeedOptions fo;
    fo.envs = {"test"};
    fo.inbox_prefix = "_INBOX._crypto.test.feed";
    fo.retry = absl::Milliseconds(100);
    auto feed = AuditFeed::Start(fo, crypto_bus_.get(), crypto_store_.get());
    ASSERT_TRUE(feed.ok()) << feed.status();
    feed_ = *std::move(feed);
    // The running service tells the feed about new certificates from now on.
    StopCrypto();
    StartCrypto();
  }

  // A key enrolled through the crypto service, the way `chasqui enrol` does it.
  Identity Enrol(const std::string& entity, Role role) {
    Identity id = GenerateIdentity(entity, "test", role);
    auto token =
        MakeEnrolmentToken(entity, "", std::string(RoleName(role)), "test", 3'600'000,
                           SystemClock());
    CHASQUI_CHECK(token.ok(), MessageOf(token.status()));
    CHASQUI_CHECK(StoreToken(crypto_store_.get(), *token).ok(), "storing a token");
    auto bus = Connect("enrol-" + entity);
    auto cert = EnrolIdentity(bus.get(), CryptoInboxPrefix(id.pub), id, token->token, "",
                              anchors_, absl::Seconds(5), SystemClock());
    CHASQUI_CHECK(cert.ok(), MessageOf(cert.status()));
    id.pub.serial = cert->serial;
    return id;
  }

  void StartRemoteSigner() {
    Identity audit_id = Enrol("audit", Role::kAudit);
    auto signer = RemoteCheckpointSigner::Create(audit_bus_.get(), "_INBOX._audit.test.sign",
                                                 std::move(audit_id), anchors_,
                                                 absl::Seconds(2));
    ASSERT_TRUE(signer.ok()) << signer.status();
    signer_ = *std::move(signer);
  }

  void StartAudit(AuditChainOptions options) {
    auto chain = AuditChain::Open(options, audit_store_.get(), signer_.get(), SystemClock());
    ASSERT_TRUE(chain.ok()) << chain.status();
    chain_ = *std::move(chain);
    auto service = AuditService::Start(audit_bus_.get(), chain_.get(), audit_store_.get(),
                                       nullptr);
    ASSERT_TRUE(service.ok()) << service.status();
    service_ = *std::move(service);
  }
  void StopAudit() {
    service_.reset();
    if (chain_ != nullptr) chain_->Stop();
    chain_.reset();
  }

  // Appends records n..m-1 and waits for each to be acknowledged durable.
  void AppendDurable(uint64_t from, uint64_t to) {
    Outcomes outcomes;
    for (uint64_t n = from; n < to; ++n) chain_->Append(MakeRecord(n), outcomes.For(n));
    ASSERT_TRUE(outcomes.WaitFor(to - from));
    for (uint64_t n = from; n < to; ++n) {
      ASSERT_TRUE(outcomes.Get(n).ok()) << n << ": " << outcomes.Get(n).status();
    }
  }

  VerifyReport Verify(const TrustAnchors* roots) {
    VerifyOptions options;
    options.env = "test";
    options.checkpoint_roots = roots;
    options.certificate_roots = roots;
    auto report = VerifyChain(*audit_store_, options);
    CHASQUI_CHECK(report.ok(), MessageOf(report.status()));
    return *report;
  }

  std::vector<v1::CertificateIssued> CertificatesInChain() {
    v1::QueryRequest q;
    q.set_kind(v1::ENTRY_KIND_CERTIFICATE);
    q.set_page_size(1000);
    auto r = RunQuery(*audit_store_, q);
    CHASQUI_CHECK(r.ok(), MessageOf(r.status()));
    std::vector<v1::CertificateIssued> out;
    for (const v1::StoredRecord& rec : r->records()) {
      v1::ChainEntry e;
      CHASQUI_CHECK(e.ParseFromString(rec.entry()), "entry parses");
      CHASQUI_CHECK(e.has_certificate(), "kind filter");
      out.push_back(e.certificate());
    }
    return out;
  }

  TempDir dir_;
  std::unique_ptr<NatsServer> nats_;
  TrustAnchors anchors_;
  std::string roots_file_;
  std::unique_ptr<KvStore> crypto_store_;
  std::unique_ptr<CertificateAuthority> authority_;
  std::unique_ptr<Bus> crypto_bus_;
  std::unique_ptr<AuditFeed> feed_;
  std::unique_ptr<CryptoService> crypto_;
  std::unique_ptr<Bus> audit_bus_;
  std::unique_ptr<KvStore> audit_store_;
  std::unique_ptr<CheckpointSigner> signer_;
  std::unique_ptr<AuditChain> chain_;
  std::unique_ptr<AuditService> service_;
};

TEST_F(AuditCryptoTest, CheckpointsSignedByTheCryptoServiceVerifyAgainstTheRoots) {
  StartRemoteSigner();
  StartAudit({.env = "test", .checkpoint_every_records = 5, .checkpoint_every_ms = 60'000});
  // In waves, so the writer cannot take them all in one group, each wave's signature done
  // (signing has its own thread) before the next: checkpoints at 5 and 10.
  const auto signed_wave = [&] { return !chain_->stats().signing; };
  AppendDurable(1, 6);
  ASSERT_TRUE(WaitFor(signed_wave));
  AppendDurable(6, 11);
  ASSERT_TRUE(WaitFor(signed_wave));
  AppendDurable(11, 13);
  StopAudit();  // a clean stop signs the head (seq 12)

  const auto stats_cps = [&] {
    std::vector<v1::Checkpoint> cps;
    EXPECT_TRUE(audit_store_
                    ->Scan(kCheckpointPrefix, kCheckpointEnd,
                           [&](std::string_view, std::string_view v) {
                             cps.emplace_back().ParseFromArray(v.data(),
                                                               static_cast<int>(v.size()));
                             return true;
                           })
                    .ok());
    return cps;
  };
  const std::vector<v1::Checkpoint> cps = stats_cps();
  ASSERT_GE(cps.size(), 3u);
  for (const v1::Checkpoint& cp : cps) {
    EXPECT_FALSE(cp.statement().empty()) << "checkpoint " << cp.seq();
    EXPECT_TRUE(cp.signature().empty()) << "checkpoint " << cp.seq();
  }
  EXPECT_EQ(cps.back().seq(), 12u);

  VerifyReport report = Verify(&anchors_);
  EXPECT_EQ(report.finding, Finding::kIntact) << report.detail;
  EXPECT_EQ(report.checkpoint_signatures_checked, cps.size());
  EXPECT_EQ(report.last_checkpoint_seq, 12u);

  // The command line checks them against the roots file alone (the store closed: the tool
  // takes RocksDB's lock).
  audit_store_.reset();
  const std::string verify = std::string("timeout 30 ") + CHASQUI_AUDIT_BIN +
                             " verify --env test --data " + dir_.File("audit") + " --roots " +
                             roots_file_ + " 2>&1";
  auto cli = ::chasqui::testing::RunCommand(verify);
  EXPECT_EQ(cli.exit_code, 0) << cli.output;
  EXPECT_NE(cli.output.find("intact"), std::string::npos) << cli.output;
  auto reopened = KvStore::Open({.path = dir_.File("audit")});
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  audit_store_ = *std::move(reopened);

  // Without the roots, a crypto-signed checkpoint is not trusted when signatures are checked.
  VerifyOptions keys_only;
  keys_only.checkpoint_key = [](uint64_t) -> const PublicIdentity* { return nullptr; };
  auto untrusted = VerifyChain(*audit_store_, keys_only);
  ASSERT_TRUE(untrusted.ok());
  EXPECT_EQ(untrusted->finding, Finding::kBadCheckpoint);

  // Another root (a different ceremony) does not vouch for them.
  TempDir other_dir;
  Passphrase pass("another passphrase");
  auto other = InitRoot(other_dir.File("c"), pass, KdfCost::kTestOnlyMinimum, 10 * kDayMs,
                        SystemClock());
  ASSERT_TRUE(other.ok()) << other.status();
  auto other_anchors = LoadTrustAnchors(other->anchors_file);
  ASSERT_TRUE(other_anchors.ok());
  EXPECT_EQ(Verify(&*other_anchors).finding, Finding::kBadCheckpoint);

  // A checkpoint moved in time (its statement no longer signs it) fails, and names its seq.
  v1::Checkpoint tampered = cps[1];
  tampered.set_created_at_ms(tampered.created_at_ms() + 1);
  ASSERT_TRUE(audit_store_
                  ->Put(CheckpointKey(tampered.seq()), tampered.SerializeAsString(),
                        Durability::kSynced)
                  .ok());
  report = Verify(&anchors_);
  EXPECT_EQ(report.finding, Finding::kBadCheckpoint);
  EXPECT_EQ(report.first_bad_seq, tampered.seq()) << report.detail;
  audit_store_.reset();
  cli = ::chasqui::testing::RunCommand(verify);
  EXPECT_EQ(cli.exit_code, 1) << cli.output;
  EXPECT_NE(cli.output.find("bad_checkpoint"), std::string::npos) << cli.output;
  reopened = KvStore::Open({.path = dir_.File("audit")});
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  audit_store_ = *std::move(reopened);

  // A statement taken from another checkpoint does not sign this one either.
  tampered = cps[1];
  tampered.set_statement(cps[0].statement());
  ASSERT_TRUE(audit_store_
                  ->Put(CheckpointKey(tampered.seq()), tampered.SerializeAsString(),
                        Durability::kSynced)
                  .ok());
  report = Verify(&anchors_);
  EXPECT_EQ(report.finding, Finding::kBadCheckpoint) << report.detail;
  EXPECT_EQ(report.first_bad_seq, tampered.seq());
}

TEST_F(AuditCryptoTest, CryptoDownRecordsStillAcknowledgedCheckpointsResumeAfterRestart) {
  StartRemoteSigner();
  StartAudit({.env = "test",
              .checkpoint_every_records = 4,
              .checkpoint_every_ms = 100,
              .checkpoint_retry_ms = 50});
  AppendDurable(1, 9);
  ASSERT_TRUE(WaitFor([&] { return chain_->stats().last_checkpoint_seq == 8; }));

  StopCrypto();
  AppendDurable(9, 30);  // every one acknowledged durable with no crypto service
  EXPECT_EQ(chain_->stats().next_seq, 30u);
  // No checkpoint can be signed meanwhile (give the chain a few rounds to try).
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(chain_->stats().last_checkpoint_seq, 8u);

  StartCrypto();
  ASSERT_TRUE(WaitFor([&] { return chain_->stats().last_checkpoint_seq == 29; }))
      << "last checkpoint " << chain_->stats().last_checkpoint_seq;
  AppendDurable(30, 35);
  StopAudit();
  const VerifyReport report = Verify(&anchors_);
  EXPECT_EQ(report.finding, Finding::kIntact) << report.detail;
  EXPECT_EQ(report.last_checkpoint_seq, 34u);
  EXPECT_EQ(report.records_checked, 34u);
}

TEST_F(AuditCryptoTest, EveryCertificateIssuedIsInTheAuditChainExactlyOnce) {
  StartFeed();
  StartRemoteSigner();  // enrols the audit key: the first certificate issued
  StartAudit({.env = "test", .checkpoint_every_records = 2, .checkpoint_every_ms = 100});
  Identity segip = Enrol("segip", Role::kEntity);
  ASSERT_TRUE(WaitFor([&] { return CertificatesInChain().size() == 2; }))
      << CertificatesInChain().size();

  // The audit service down during an enrolment: recorded once it is back.
  StopAudit();
  Identity sin = Enrol("sin", Role::kEntity);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the feed retries meanwhile
  EXPECT_EQ(feed_->Acknowledged("test"), 2u);
  StartAudit({.env = "test", .checkpoint_every_records = 2, .checkpoint_every_ms = 100});
  ASSERT_TRUE(WaitFor([&] { return feed_->Acknowledged("test") == 3; }));

  std::vector<v1::CertificateIssued> certs = CertificatesInChain();
  ASSERT_EQ(certs.size(), 3u);
  std::vector<uint64_t> serials;
  for (size_t i = 0; i < certs.size(); ++i) {
    EXPECT_EQ(certs[i].entry().sequence(), i + 1);
    EXPECT_EQ(certs[i].env(), "test");
    v1::Certificate c;
    v1::CertificateBody b;
    ASSERT_TRUE(c.ParseFromString(certs[i].entry().certificate()) &&
                b.ParseFromString(c.body()));
    serials.push_back(b.serial());
  }
  EXPECT_EQ(serials[1], segip.pub.serial);
  EXPECT_EQ(serials[2], sin.pub.serial);

  // A resend (the feed restarted from an older cursor) is acknowledged but not stored twice.
  feed_.reset();
  ASSERT_TRUE(crypto_store_->Put("meta/audit_fed/test", BigEndian64(0), Durability::kSynced).ok());
  StartFeed();
  ASSERT_TRUE(WaitFor([&] { return feed_->Acknowledged("test") == 3; }));
  EXPECT_EQ(CertificatesInChain().size(), 3u);

  StopAudit();
  const VerifyReport report = Verify(&anchors_);
  EXPECT_EQ(report.finding, Finding::kIntact) << report.detail;
  EXPECT_GE(report.checkpoint_signatures_checked, 1u);
  EXPECT_EQ(report.certificates_checked, 3u)
      << "every certificate the crypto service issued verifies against the pinned roots";
}

}  // namespace
}  // namespace chasqui::audit::testing
