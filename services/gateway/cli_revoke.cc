#include "services/gateway/cli_revoke.h"

#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "chasqui/v1/crypto.pb.h"
#include "common/core/clock.h"
#include "common/core/names.h"
#include "common/core/status.h"
#include "common/trust/anchors.h"
#include "common/trust/crypto_client.h"
#include "common/trust/requests.h"
#include "common/trust/revocation.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"
#include "services/gateway/cli_people.h"

namespace chasqui::cli {
namespace {

struct Reason {
  const char* word;
  v1::RevocationReason value;
};
constexpr Reason kReasons[] = {
    {"key_compromise", v1::REVOCATION_REASON_KEY_COMPROMISE},
    {"superseded", v1::REVOCATION_REASON_SUPERSEDED},
    {"entity_withdrawn", v1::REVOCATION_REASON_ENTITY_WITHDRAWN},
    {"role_ended", v1::REVOCATION_REASON_ROLE_ENDED},
};

absl::StatusOr<v1::RevocationReason> ParseReason(const std::string& word) {
  for (const Reason& r : kReasons) {
    if (word == r.word) return r.value;
  }
  return absl::InvalidArgumentError(fmt::format(
      "--reason {}: expected key_compromise, superseded, entity_withdrawn (the entity leaves the "
      "platform: its NATS user goes) or role_ended",
      Printable(word)));
}

std::string ReasonWord(v1::RevocationReason reason) {
  for (const Reason& r : kReasons) {
    if (reason == r.value) return r.word;
  }
  return "unspecified";
}

struct Flags {
  PersonFlags person;
  std::vector<uint64_t> serials;
  std::string reason;
  std::string roots;
  std::string env;
  bool json = false;
};

int Revoke(const Flags& f) {
  auto reason = ParseReason(f.reason);
  if (!reason.ok()) return LocalFault(reason.status());
  for (uint64_t serial : f.serials) {
    if (serial == 0) {
      return LocalFault(absl::InvalidArgumentError(
          "--serial 0: certificate serials start at 1 (`chasqui enrol` prints each one)"));
    }
  }
  auto anchors = LoadTrustAnchors(f.roots);
  if (!anchors.ok()) return LocalFault(anchors.status());
  auto session = OpenPerson(f.person, "revoke");
  if (!session.ok()) return LocalFault(session.status());
  const PublicIdentity& who = session->identity.pub;
  if (!f.env.empty() && f.env != who.env) {
    return LocalFault(absl::InvalidArgumentError(fmt::format(
        "--env {}: {} holds a key of env {}; revoke in {} with an operator key of that env",
        Printable(f.env), f.person.key, who.env, Printable(f.env))));
  }
  auto client = CryptoClient::Create(session->bus.get(), PersonInbox(who),
                                     absl::Milliseconds(f.person.timeout_ms));
  if (!client.ok()) return LocalFault(client.status());

  v1::ControlBody body;
  for (uint64_t serial : f.serials) body.mutable_revoke()->add_serials(serial);
  body.mutable_revoke()->set_reason(*reason);
  const v1::ControlRequest request = MakeControlRequest(
      std::move(body), who.env, who.serial, session->identity.sign, SystemClock().NowUnixMillis());
  auto reply = (*client)->Revoke(request);
  if (absl::IsDeadlineExceeded(reply.status())) {
    // nats-server drops a publish the user may not make without telling the publisher: say
    // which user may.
    return Refused("revoke", absl::DeadlineExceededError(fmt::format(
                                 "{} (nats user {}: only the platform operator's entity's user "
                                 "may publish {}, see `chasqui nats-config --operator-entity`)",
                                 MessageOf(reply.status()), f.person.nats_user, kRevokeSubject)));
  }
  if (!reply.ok()) return Refused("revoke", reply.status());

  auto list = VerifyRevocationList(reply->revocation_list().SerializeAsString(), *anchors,
                                   who.env, SystemClock().NowUnixMillis());
  if (!list.ok()) {
    std::cerr << fmt::format(
        "chasqui: revoke: the crypto service answered with a list that does not verify against "
        "{} ({}): the revocation may have been made; check with the operator's tools\n",
        f.roots, MessageOf(list.status()));
    return 1;
  }
  if (f.json) {
    nlohmann::json revoked = nlohmann::json::array();
    for (uint64_t serial : f.serials) {
      auto it = list->revoked.find(serial);
      if (it == list->revoked.end()) continue;
      revoked.push_back({{"serial", serial},
                         {"reason", ReasonWord(it->second.reason())},
                         {"revoked_at_ms", it->second.revoked_at_ms()}});
    }
    nlohmann::json out = {{"env", list->env},
                          {"version", list->version},
                          {"issued_at_ms", list->issued_at_ms},
                          {"valid_until_ms", list->valid_until_ms},
                          {"list_size", list->revoked.size()},
                          {"revoked", revoked}};
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  for (uint64_t serial : f.serials) {
    auto it = list->revoked.find(serial);
    if (it == list->revoked.end()) {
      // The service answered OK: it would have refused an unknown serial.
      std::cout << fmt::format("certificate {}: not in the new list (ask the operator why)\n",
                               serial);
      continue;
    }
    const bool earlier = it->second.reason() != *reason;
    std::cout << fmt::format("certificate {} revoked in {}: {}{} (at {} Unix ms)\n", serial,
                             list->env, ReasonWord(it->second.reason()),
                             earlier ? ", by an earlier revocation" : "",
                             it->second.revoked_at_ms());
  }
  std::cout << fmt::format(
      "revocation list of {} is now version {} ({} revoked, valid until {} Unix ms), published "
      "on {}\n",
      list->env, list->version, list->revoked.size(), list->valid_until_ms, kRevokedEventSubject);
  return 0;
}

}  // namespace

void AddRevokeCommand(CLI::App& app) {
  auto f = std::make_shared<Flags>();
  CLI::App* v = app.add_subcommand(
      "revoke", "revoke certificates by serial (an operator; entity_withdrawn removes the "
                "entity's NATS user through `chasqui nats-config --watch`)");
  AddPersonFlags(v, &f->person);
  v->add_option("--serial", f->serials, "a certificate's serial (repeatable)")->required();
  v->add_option("--reason", f->reason,
                "key_compromise, superseded, entity_withdrawn or role_ended")
      ->required();
  v->add_option("--roots", f->roots, "pinned roots (roots.json): the new list is verified")
      ->required();
  v->add_option("--env", f->env, "the environment (default: the operator key's)");
  v->add_flag("--json", f->json, "the new list's version and the serials as JSON");
  OnRun(v, [f] { return Revoke(*f); });
}

}  // namespace chasqui::cli
