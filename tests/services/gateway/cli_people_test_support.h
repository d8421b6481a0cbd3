#pragma once
// Shared by the tests of `chasqui catalog ...` and `chasqui quota ...`: on CatalogQuotaTest (a
// real nats-server, the real catalog and quota services in this process), a stand-in for the
// crypto service's directory (certificates and the revocation list of a test root), and the
// people of the story with key files from GenerateIdentity and certificates from the test
// root, as `chasqui keygen` and `chasqui enrol` would leave them. The `chasqui` binary is run
// as a child process.

#include <map>
#include <memory>
#include <string>

#include "common/bus/bus.h"
#include "common/core/files.h"
#include "common/envelope/identity.h"
#include "common/trust/anchors.h"
#include "fmt/format.h"
#include "gtest/gtest.h"
#include "tests/services/quota/catalog_quota_fixture.h"
#include "tests/support/run_command.h"

namespace chasqui::testing {

// A person's files: what `chasqui keygen` and `chasqui enrol` write.
struct PersonFiles {
  std::string key;
  std::string cert;
};

inline bool Has(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

class CliPeopleTest : public CatalogQuotaTest {
 protected:
  void SetUp() override {
    CatalogQuotaTest::SetUp();
    if (HasFatalFailure()) return;
    // The crypto service's directory, as far as the CLI's reads need it.
    for (const auto& [env, cert] : world_.catalog_certificates) {
      certs_[world_.catalog_serials[env]] = cert;
    }
    auto dir = bus_->Subscribe("chq.ctl.crypto.directory", [this](const BusMessage& m) {
      v1::DirectoryRequest req;
      v1::DirectoryReply reply;
      if (!req.ParseFromArray(m.data.data(), static_cast<int>(m.data.size()))) return;
      for (uint64_t serial : req.serials()) {
        auto it = certs_.find(serial);
        if (it != certs_.end()) reply.add_certificates()->ParseFromString(it->second);
      }
      if (req.revocation_list()) {
        reply.mutable_revocation_list()->ParseFromString(world_.root.List(req.env(), 1));
      }
      (void)bus_->Publish(m.reply, reply.SerializeAsString());
    });
    ASSERT_TRUE(dir.ok()) << dir.status();
    directory_ = *std::move(dir);

    roots_ = dir_.File("roots.json");
    ASSERT_TRUE(
        WriteFileDurably(roots_, TrustAnchorsJson(world_.root.anchors()), 0644, false).ok());
    nta_ = dir_.File("nta.txt");
    ASSERT_TRUE(WriteFileDurably(nta_, kNtaText, 0644, false).ok());

    ana_ = Person("ana", "agetic", Role::kOperator);
    maria_ = Person("maria", "segip", Role::kMae);
    pedro_ = Person("pedro", "segip", Role::kManager);
    juan_ = Person("juan", "sin", Role::kMae);
    lucia_ = Person("lucia", "sin", Role::kManager);
  }

  void TearDown() override {
    directory_.reset();
    CatalogQuotaTest::TearDown();
  }

  // Key file and certificate of a person, the certificate known to the services.
  PersonFiles Person(const std::string& subject, const std::string& entity, Role role) {
    Identity id = GenerateIdentity(entity, "test", role);
    PersonFiles f{dir_.File(fmt::format("{}.{}.test.key", entity, subject)),
                  dir_.File(fmt::format("{}.{}.test.cert", entity, subject))};
    EXPECT_TRUE(WriteIdentity(f.key, id).ok());
    auto role_v1 = ParseCertificateRole(RoleName(role));
    auto [serial, cert] = world_.root.IssueKey(id.pub.sign_pk, subject, entity, "test", *role_v1);
    EXPECT_TRUE(world_.dirs.Add("test", cert, clock_.NowUnixMillis()).ok());
    certs_[serial] = cert;
    EXPECT_TRUE(WriteFileDurably(f.cert, cert, 0644, false).ok());
    return f;
  }

  // `chasqui <args>` signed by `who`.
  CommandOutcome Chasqui(const PersonFiles& who, const std::string& args) {
    return RunCommand(fmt::format("timeout 30 {} {} --key {} --cert {} --nats {}", CHASQUI_BIN,
                                  args, who.key, who.cert, nats_->url()));
  }

  std::map<uint64_t, std::string> certs_;
  std::unique_ptr<Subscription> directory_;
  std::string roots_, nta_;
  PersonFiles ana_, maria_, pedro_, juan_, lucia_;
};

}  // namespace chasqui::testing
