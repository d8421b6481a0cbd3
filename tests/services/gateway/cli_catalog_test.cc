// `chasqui catalog <verb>` run as a child process against a real nats-server and the real
// catalog service: the story from adhesion to revocation, each person signing with their own
// key file and certificate; lists and an annex read from the verified snapshot; refusals by
// the wrong person say why and exit 1.

#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/services/gateway/cli_people_test_support.h"

namespace chasqui::testing {
namespace {

class CliCatalogTest : public CliPeopleTest {
 protected:
  // Runs a verb that must succeed and returns its output.
  std::string Ok(const PersonFiles& who, const std::string& args) {
    CommandOutcome r = Chasqui(who, args);
    EXPECT_EQ(r.exit_code, 0) << args << "\n" << r.output;
    return r.output;
  }

  void PublishAndRequest() {
    Ok(ana_, "catalog register_entity --id segip --name SEGIP");
    Ok(ana_, "catalog register_entity --id sin --name 'Servicio de Impuestos Nacionales'");
    Ok(juan_, fmt::format("catalog adhere --entity sin --nta {}", nta_));
    Ok(maria_, fmt::format("catalog adhere --entity segip --nta {}", nta_));
    Ok(pedro_,
       "catalog submit --provider segip --name persona --version 1.0.0 "
       "--description 'looks a person up by national id' --classification private "
       "--personal-data --legal-basis 'Ley 164, art. 72' --rate 10 --burst 20 --per-day 10000 "
       "--capacity-rate 100 --capacity-burst 200");
    Ok(ana_, "catalog publish --provider segip --service persona");
    Ok(lucia_,
       "catalog request_access --consumer sin --provider segip --service persona "
       "--justification 'tax registration checks identity' --legal-basis 'Ley 843, art. 3'");
  }
};

TEST_F(CliCatalogTest, TheStoryFromAdhesionToRevocationOneLineEach) {
  EXPECT_TRUE(Has(Ok(ana_, "catalog register_entity --id segip --name SEGIP"),
                  "register_entity: entity segip (SEGIP) is registered; its MAE must adhere"));
  Ok(ana_, "catalog register_entity --id sin --name SIN");
  const std::string adhered = Ok(maria_, fmt::format("catalog adhere --entity segip --nta {}", nta_));
  EXPECT_TRUE(Has(adhered, "adhere: entity segip (SEGIP) has adhered: NTA signed by its MAE maria"))
      << adhered;
  Ok(juan_, fmt::format("catalog adhere --entity sin --nta {}", nta_));
  const std::string submitted =
      Ok(pedro_,
         "catalog submit --provider segip --name persona --version 1.0.0 "
         "--description 'looks a person up' --classification private --personal-data "
         "--legal-basis 'Ley 164' --rate 10 --burst 20 --per-day 10000 --capacity-rate 100");
  EXPECT_TRUE(Has(submitted, "submit: service segip/persona 1.0.0 (private, personal data) is "
                             "submitted"))
      << submitted;
  EXPECT_TRUE(Has(Ok(ana_, "catalog publish --provider segip --service persona"),
                  "is published (annex annex-"));
  EXPECT_TRUE(Has(Ok(lucia_,
                     "catalog request_access --consumer sin --provider segip --service persona "
                     "--justification 'tax checks' --legal-basis 'Ley 843'"),
                  "request_access: grant sin -> segip/persona in test is pending"));
  const std::string approved =
      Ok(pedro_, "catalog approve --consumer sin --provider segip --service persona");
  EXPECT_TRUE(Has(approved, "approve: grant sin -> segip/persona in test is active (annex annex-"))
      << approved;
  EXPECT_TRUE(Has(Ok(lucia_, "catalog register_end_user --consumer sin --user ana.perez"),
                  "end user ana.perez of sin is enabled"));
  EXPECT_TRUE(Has(Ok(lucia_, "catalog disable_end_user --consumer sin --user ana.perez"),
                  "end user ana.perez of sin is disabled"));
  EXPECT_TRUE(Has(Ok(ana_, "catalog promote --consumer sin --provider segip --service persona"),
                  "promote: grant sin -> segip/persona in prod is active"));
  EXPECT_TRUE(Has(Ok(pedro_, "catalog suspend --env prod --consumer sin --provider segip "
                             "--service persona --reason 'audit pending'"),
                  "grant sin -> segip/persona in prod is suspended: audit pending"));
  EXPECT_TRUE(Has(Ok(pedro_, "catalog revoke --env prod --consumer sin --provider segip "
                             "--service persona --reason 'agreement ended'"),
                  "grant sin -> segip/persona in prod is revoked: agreement ended"));

  // Reads, from the snapshot verified against the roots.
  const std::string services = Ok(lucia_, fmt::format("catalog services --roots {}", roots_));
  EXPECT_TRUE(Has(services, "service segip/persona 1.0.0 (private, personal data) is published"))
      << services;
  const std::string grants =
      Ok(lucia_, fmt::format("catalog grants --roots {} --consumer sin --json", roots_));
  const nlohmann::json j = nlohmann::json::parse(grants, nullptr, false);
  ASSERT_TRUE(j.is_array()) << grants;
  ASSERT_EQ(j.size(), 2u) << grants;
  std::string annex;
  for (const auto& g : j) {
    if (g["env"] == "test") {
      EXPECT_EQ(g["state"], "GRANT_STATE_ACTIVE");
      annex = g["annex_id"];
    } else {
      EXPECT_EQ(g["state"], "GRANT_STATE_REVOKED");
      EXPECT_EQ(g["reason"], "agreement ended");
    }
  }
  ASSERT_FALSE(annex.empty()) << grants;
  const std::string shown = Ok(lucia_, fmt::format("catalog annex {} --roots {}", annex, roots_));
  EXPECT_TRUE(Has(shown, fmt::format("annex {} verified (signed by the catalog for test): "
                                     "segip/persona 1.0.0 to sin in test; legal basis: Ley 843",
                                     annex)))
      << shown;
  EXPECT_TRUE(Has(shown, "quota 10/s burst 20, per day 10000, per month -")) << shown;
}

TEST_F(CliCatalogTest, TheWrongPersonIsRefusedWithTheReason) {
  PublishAndRequest();
  // sin's manager may not approve access to segip's service.
  CommandOutcome r =
      Chasqui(lucia_, "catalog approve --consumer sin --provider segip --service persona");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Has(r.output, "chasqui: approve refused: PERMISSION_DENIED: approve: needs a "
                            "manager of segip; signer lucia"))
      << r.output;
  // A manager may not publish: that is the operator's.
  r = Chasqui(pedro_, "catalog publish --provider segip --service persona");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Has(r.output, "PERMISSION_DENIED: publish: needs an operator")) << r.output;
  // Adhesion is signed once.
  r = Chasqui(maria_, fmt::format("catalog adhere --entity segip --nta {}", nta_));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Has(r.output, "ALREADY_EXISTS: adhere: entity segip already adhered")) << r.output;
  // An annex that does not exist.
  r = Chasqui(lucia_, fmt::format("catalog annex annex-999 --roots {}", roots_));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Has(r.output, "annex refused: NOT_FOUND: no annex annex-999")) << r.output;
  // A local fault is exit 2 and sends nothing: a key that is not the certificate's.
  r = RunCommand(fmt::format(
      "timeout 30 {} catalog approve --consumer sin --provider segip --service persona "
      "--key {} --cert {} --nats {}",
      CHASQUI_BIN, pedro_.key, lucia_.cert, nats_->url()));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(Has(r.output, lucia_.cert)) << r.output;
  // The request is still pending: nothing above changed it.
  EXPECT_TRUE(Has(Ok(pedro_, "catalog approve --consumer sin --provider segip --service persona"),
                  "is active"));
}

}  // namespace
}  // namespace chasqui::testing
