#pragma once
// The nats-server configuration that makes the bus enforce the subject plan (DESIGN.md, "Names
// and subjects"): one user per entity and environment (`<entity>.<env>`), one per environment's
// routers (`router.<env>`), one per platform service and environment (`<service>.<env>`:
// `crypto.test`, `audit.test`, `catalog.test`, `quota.test`), each allowed exactly its own
// subjects and nothing else. With TLS files given, nats-server accepts TLS connections only
// (DESIGN.md: "connections use TLS"); without them the configuration has no `tls` block.
//
//   entity E in env V   publish   chq.V.req.E.>  chq.ctl.crypto.enrol  chq.ctl.crypto.directory
//                                 chq.ctl.catalog.>
//                       subscribe chq.V.svc.E.>  _INBOX.V.E.>  chq.evt.crypto.revoked
//                       allow_responses (answers a router's reply subject, once per request)
//   operator's entity   what an entity E may, and publish chq.ctl.crypto.revoke (`chasqui
//   O in env V          revoke`: the crypto service still accepts it only signed by an operator)
//   router in env V     publish   chq.V.svc.>  _INBOX.V.>  chq.ctl.audit.append
//                                 chq.ctl.catalog.snapshot  chq.ctl.catalog.events
//                                 chq.ctl.crypto.directory
//                       subscribe chq.V.req.>  _INBOX._router.V.>  chq.evt.crypto.>
//                                 chq.evt.catalog.>
//   service S in env V  publish   chq.evt.S.>  (and, but for crypto itself: chq.ctl.crypto.sign
//                                 chq.ctl.crypto.directory, to have checkpoints and annexes
//                                 signed and to verify people's control requests)
//                       subscribe chq.ctl.S.> in queue group chq.S only  _INBOX._S.V.>
//                                 chq.evt.crypto.>
//                       allow_responses (answers each control request once)
//   revocation watch    publish   chq.ctl.crypto.directory
//   in env V            subscribe chq.evt.crypto.revoked  _INBOX._nats-watch.V.>
//                       (`chasqui nats-config --watch`: follows the revocation lists and removes
//                       withdrawn entities' users; it signs nothing and answers nothing)
//
// Replies to the ctl requests travel through the response permission of the service asked, to
// the asker's own inbox: an entity's `_INBOX.<env>.<entity>.>`, a router's `_INBOX._router.<env>.>`,
// a service's `_INBOX._<service>.<env>.>` (NatsServiceInboxPrefix; no entity id starts with `_`,
// so these never meet an entity's). People (MAE, managers, operators) have no NATS user of their
// own: they act through their entity's user (the CLI on the entity's machines).
//
// Where users come from (`chasqui nats-config`): a trust file's keys by role (entity, router, and
// the service roles catalog/crypto/quota/audit; people's keys make no user), plus `--entity E`,
// `--router` and `--service S` for names that have no key in a trust file yet: an entity's user
// exists before it enrols (it needs it to reach chq.ctl.crypto.enrol), and the crypto service
// holds the root rather than a certificate. `--operator-entity O` makes O's user the operator's
// entity (the platform's people revoke through it), `--nats-watch` a `nats-watch.<env>` user. No
// entity may be named like the routers, a platform service or the watch: the names would collide.
//
// Passwords: by default every user gets a new one (`--force` replaces them all). With
// `--keep-passwords` (and always under `--watch`) FillKeptNatsPasswords keeps each existing
// `<secrets-dir>/<user>.password` and makes one only for a user that has none, so regenerating
// the configuration (a new entity, a withdrawn one) disconnects nobody else.
//
// Everything here is pure and thread-safe except NewNatsPassword (reads the OS's entropy),
// BcryptHash (CPU-heavy by design: ~0.15 s at cost 11) and FillKeptNatsPasswords (files).

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace chasqui {

enum class NatsUserRole {
  kEntity,
  kRouter,
  kService,  // a platform service: entity is its name (one of NatsPlatformServices())
  kOperator,  // the platform operator's entity (e.g. agetic): an entity that may also revoke
  kRevocationWatch,  // `chasqui nats-config --watch`; entity is "nats-watch"
};

// "nats-watch": the entity name of the kRevocationWatch users.
inline constexpr char kNatsWatchName[] = "nats-watch";

// "catalog", "crypto", "quota", "audit": the services that get a user of their own.
const std::vector<std::string>& NatsPlatformServices();
// True for "router", "nats-watch" and the platform services: names no entity may take.
bool IsReservedEntityName(std::string_view name);

// The name of the NATS user of `entity` (the routers for kRouter, the service for kService) in
// `env`.
std::string NatsUserName(NatsUserRole role, std::string_view entity, std::string_view env);
// `_INBOX._<service>.<env>`: a platform service's replies come below it.
std::string NatsServiceInboxPrefix(std::string_view service, std::string_view env);

struct NatsUser {
  std::string name;      // NatsUserName(role, entity, env)
  std::string password;  // a bcrypt hash (`$2a$`/`$2b$`), or a plain password (then the config
                         // file is itself a secret)
  NatsUserRole role = NatsUserRole::kEntity;
  std::string entity;  // entity id; for kRouter, "router"; for kService, the service
  std::string env;
};

struct NatsPermissions {
  std::vector<std::string> publish_allow;
  std::vector<std::string> subscribe_allow;
  bool allow_responses = false;
};

// Exactly what the subject plan lets `role` do in `env` (table above). `entity` is ignored for
// kRouter. The names must be valid (see NatsServerConfig). A subscribe entry "SUBJECT QUEUE"
// allows only queue subscriptions in QUEUE (nats-server's queue permissions).
NatsPermissions NatsPermissionsFor(NatsUserRole role, std::string_view entity,
                                   std::string_view env);

// nats-server's TLS: its certificate and key (deploy/tls-ca.sh makes a local CA and both), and
// optionally a CA file (nats-server checks client certificates it is shown against it; clients
// need not present one). Absolute paths: nats-server resolves relative ones against its own
// working directory. All empty: no TLS.
struct NatsTlsFiles {
  std::string cert_file;
  std::string key_file;
  std::string ca_file;
  int timeout_seconds = 2;  // the handshake's bound in nats-server
  bool enabled() const { return !cert_file.empty() || !key_file.empty() || !ca_file.empty(); }
};

struct NatsConfigInput {
  std::string listen = "127.0.0.1:4222";  // host:port
  std::vector<NatsUser> users;
  NatsTlsFiles tls;
};

// The nats-server configuration text: `listen`, a `tls { cert_file key_file [ca_file] timeout }`
// block if input.tls is enabled() (then every client must use TLS: nats-server 2.9 refuses a
// plain one), and `authorization { users = [...] }` with each user's permissions; no
// `no_auth_user`, so every connection must authenticate. Without TLS files the text is exactly
// what it was before TLS existed.
// InvalidArgument (naming the flag) if TLS is half given (a cert without a key, a key or CA
// without a cert), a TLS path is not absolute or has a quote, backslash or control byte, or
// the timeout is not 1..60 s. InvalidArgument (naming the user and the field) if: there are no
// users; a name is not
// NatsUserName(role, entity, env); an entity id or env breaks the grammar (common/core/names.h);
// a router's entity is not "router"; a service's is not a platform service; an entity is
// named "router" or like a platform service; two users share a name or a
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
// env has a router key, one `<service>.<env>` per platform service with a key (several keys of
// one name, e.g. a rotation, make one user; an entity named by both a kEntity and a kOperator
// entry is the operator's), one `nats-watch.<env>` per env with a kRevocationWatch entry.
// Sorted by env (in the order given), routers first, then services by name, then the watch,
// then entities (the operator's among them) by name. Passwords are left empty.
// InvalidArgument if `envs` is empty, repeats an env, names an invalid env, or names one
// `trusted` has no key for (the message names `source`, the env and the envs it does have); if
// an entity key is named "router", "nats-watch" or like a platform service; or if a kService
// name is not a platform service.
absl::StatusOr<std::vector<NatsUser>> PlanNatsUsers(const std::vector<NatsTrustedName>& trusted,
                                                    const std::vector<std::string>& envs,
                                                    std::string_view source);

// 32 random bytes from the OS, hex-encoded (64 characters). Internal if no entropy is available.
absl::StatusOr<std::string> NewNatsPassword();

// The bcrypt hash (`$2b$<cost>$...`) of `password` with a fresh salt, as nats-server 2.9 accepts
// it in place of a password. `cost` 4..31 (nats-server's own tool uses 11). InvalidArgument for a
// bad cost or a password longer than bcrypt's 72 bytes; Internal if libcrypt fails.
absl::StatusOr<std::string> BcryptHash(std::string_view password, int cost = 11);

// Bcrypt hashes of password files already read, so rewriting the configuration (a withdrawn
// entity) does not pay bcrypt for every user again: an entry is reused while its file's device,
// inode, size and mtime are unchanged. Holds no password. Not thread-safe.
struct NatsHashCache {
  struct Entry {
    uint64_t dev = 0, ino = 0, size = 0;
    int64_t mtime_ns = 0;
    std::string hash;
  };
  std::map<std::string, Entry> by_user;
};

// Fills each user's `password` with the bcrypt hash (at `bcrypt_cost`) of the password in
// `<secrets_dir>/<name>.password`: an existing file is kept as it is (read only), a user without
// one gets a new password written there (mode 0600, fsynced, never over another file). Creates
// `secrets_dir` (0700) if absent. `created` (may be null) gets the names of the users whose file
// was made; `cache` (may be null) is consulted and updated. Errors, naming the file:
// FailedPrecondition if it is not a regular file (a symlink?); PermissionDenied if group or others
// may read it or it cannot be read; InvalidArgument if it is empty or has a character a password
// may not have; BcryptHash's and NewNatsPassword's errors. Nothing is half done for a user: its
// hash is set only once its file holds its password.
absl::Status FillKeptNatsPasswords(std::vector<NatsUser>* users, const std::string& secrets_dir,
                                   int bcrypt_cost, NatsHashCache* cache,
                                   std::vector<std::string>* created);

}  // namespace chasqui
