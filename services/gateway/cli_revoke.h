#pragma once
// `chasqui revoke` (issue 3): an operator revokes certificates by serial. The control request
// (chq.ctl.crypto.revoke, a RevokeAction) is signed with the operator's own key under its
// certificate, and sent over NATS through the operator's entity's user, which `chasqui
// nats-config --operator-entity` allows to publish it; the crypto service accepts it only from an
// operator's certificate (services/crypto/authority.h lists its refusals).
//
//   chasqui revoke --serial N [--serial M ...] --reason key_compromise|superseded|
//                  entity_withdrawn|role_ended --key OP.key --cert OP.cert --roots roots.json
//                  [--env E] [--json] [--nats URL --nats-user U --nats-password-file F
//                  --nats-ca CA] [--timeout-ms MS]
//
// The new list comes back signed and is verified against --roots before anything is printed:
// its version, validity and each serial asked for with the reason it is revoked for (an earlier
// revocation keeps its own reason). Exit codes as the people's verbs (cli_people.h): 0 done; 1
// refused by the crypto service (not an operator, unknown serial, replay...), no answer in time
// or no crypto service, or an answer that does not verify; 2 a local fault before sending (a
// flag, a key or certificate, the roots, NATS unreachable).

namespace CLI {
class App;
}

namespace chasqui::cli {

void AddRevokeCommand(CLI::App& app);

}  // namespace chasqui::cli
