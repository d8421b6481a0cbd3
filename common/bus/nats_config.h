#pragma once
// The nats-server configuration that makes the bus enforce the subject plan (DESIGN.md, "Names
// and subjects"): one user per entity and environment (`<entity>.<env>`), one per environment's
// routers (`router.<env>`), each allowed exactly its own subjects and nothing else. No TLS yet.
//
//   entity E in env V   publish   chq.V.req.E.>
//                       subscribe chq.V.svc.E.>  _INBOX.V.E.>
//                       allow_responses (answers a router's reply subject, once per request)
//   router in env V     publish   chq.V.svc.>  _INBOX.V.>
//                       subscribe chq.V.req.>  _INBOX._router.V.>
//
// Everything here is pure and thread-safe except NewNatsPassword (reads the OS's entropy) and
// BcryptHash (CPU-heavy by design: ~0.15 s at cost 11).

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace chasqui {

enum class NatsUserRole {
  kEntity,
  kRouter,
  // Platform services (catalog, crypto, quota, audit) get their own role here when they exist:
  // subscribe `chq.ctl.<service>.>`, publish `chq.evt.<service>.>` (DESIGN.md); routers and
  // gateways then also subscribe the `chq.evt.*` topics they read. Not yet: no such users now.
};

// The name of the NATS user of `entity` (or of the routers, for kRouter) in `env`.
std::string NatsUserName(NatsUserRole role, std::string_view entity, std::string_view env);

struct NatsUser {
  std::string name;      // NatsUserName(role, entity, env)
  std::string password;  // a bcrypt hash (`$2a$`/`$2b$`), or a plain password (then the config
                         // file is itself a secret)
  NatsUserRole role = NatsUserRole::kEntity;
  std::string entity;  // entity id; for kRouter, "router"
  std::string env;
};

struct NatsPermissions {
  std::vector<std::string> publish_allow;
  std::vector<std::string> subscribe_allow;
  bool allow_responses = false;
};

// Exactly what the subject plan lets `role` do in `env` (table above). `entity` is ignored for
// kRouter. The names must be valid (see NatsServerConfig).
NatsPermissions NatsPermissionsFor(NatsUserRole role, std::string_view entity,
                                   std::string_view env);

struct NatsConfigInput {
  std::string listen = "127.0.0.1:4222";  // host:port
  std::vector<NatsUser> users;
};

// The nats-server configuration text: `listen`, and `authorization { users = [...] }` with each
// user's permissions; no `no_auth_user`, so every connection must authenticate.
// InvalidArgument (naming the user and the field) if: there are no users; a name is not
// NatsUserName(role, entity, env); an entity id or env breaks the grammar (common/core/names.h);
// a router's entity is not "router"; an entity is named "router"; two users share a name or a
// password (hash); a password is empty or has a character outside [A-Za-z0-9./$+=_-]; `listen`
// is not host:port.
absl::StatusOr<std::string> NatsServerConfig(const NatsConfigInput& input);

// One trusted key, as far as the NATS configuration cares.
struct NatsTrustedName {
  std::string entity;
  std::string env;
  NatsUserRole role = NatsUserRole::kEntity;
};

// The users for `envs`: one per (entity, env) with an entity key, one `router.<env>` if that
// env has a router key (several keys of one name, e.g. a rotation, make one user). Sorted by
// env (in the order given), routers first, then entities by name. Passwords are left empty.
// InvalidArgument if `envs` is empty, repeats an env, names an invalid env, or names one
// `trusted` has no key for (the message names `source`, the env and the envs it does have); or
// if an entity key is named "router".
absl::StatusOr<std::vector<NatsUser>> PlanNatsUsers(const std::vector<NatsTrustedName>& trusted,
                                                    const std::vector<std::string>& envs,
                                                    std::string_view source);

// 32 random bytes from the OS, hex-encoded (64 characters). Internal if no entropy is available.
absl::StatusOr<std::string> NewNatsPassword();

// The bcrypt hash (`$2b$<cost>$...`) of `password` with a fresh salt, as nats-server 2.9 accepts
// it in place of a password. `cost` 4..31 (nats-server's own tool uses 11). InvalidArgument for a
// bad cost or a password longer than bcrypt's 72 bytes; Internal if libcrypt fails.
absl::StatusOr<std::string> BcryptHash(std::string_view password, int cost = 11);

}  // namespace chasqui
