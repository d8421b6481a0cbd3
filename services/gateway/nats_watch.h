#pragma once
// The revocation watch (`chasqui nats-config --watch`, issue 3; DESIGN.md, "Trust": "the NATS
// user of a revoked entity is removed by a configuration reload of nats-server"). A long-running
// process beside nats-server that keeps its configuration equal to
//   the users `chasqui nats-config` plans from its flags, minus the withdrawn entities' users,
// and makes nats-server reread it (SIGHUP), which disconnects a removed user at once.
//
// Withdrawn: entity E loses `<E>.<V>` when, among E's entity-role (gateway) certificates in env
// V, at least one is revoked with REVOCATION_REASON_ENTITY_WITHDRAWN and none is still usable
// (neither revoked nor expired). So an entity that rotated keys (the old certificate superseded
// or compromised, a newer one valid) keeps its user; one that never enrolled keeps it (it needs
// it to enrol); one withdrawn after a rotation loses it; one whose keys were all compromised
// keeps it (it must enrol again, which needs the user). Only entities' users are ever removed;
// routers, services, the watch itself and people's certificates play no part.
//
// Where it learns: every list published on chq.evt.crypto.revoked, and the current list of each
// env fetched from chq.ctl.crypto.directory at start, after a reconnect and every `resync` (a
// missed event is caught up), with the root endorsements (a rotated root is pinned once an
// already pinned root endorses it; a list from a root not pinned brings a fetch forward). Nothing is taken on the crypto service's word: each list is
// verified against the pinned roots (VerifyRevocationList: signature, env, freshness), only a
// newer version than the one applied counts, and each certificate the directory returns is
// verified against the roots too (its signature and issuer, at a time inside its own validity,
// so an expired certificate still names its entity). A list that does not verify is logged and
// changes nothing: the configuration in force stays. A lookup that fails (crypto down, timeout)
// is retried after `retry`; until then the configuration in force stays.
//
// Writing: the configuration is rewritten only once every followed env has a verified list, and
// then whenever the set of removed users changes. Passwords are kept (FillKeptNatsPasswords: the
// existing <secrets-dir>/<user>.password files, bcrypt hashes cached while a file is unchanged),
// so nobody else is disconnected. The file is replaced atomically (temp + rename, mode 0600,
// fsynced) and nats-server is signalled through its pid file. A removed user's password file is
// left where it is. One log line per rewrite names the users removed and the list versions.
//
// Thread-safety: one worker thread does all the work; state() may be called from any thread.

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/bus/bus.h"
#include "common/bus/nats_config.h"
#include "common/core/clock.h"
#include "common/trust/anchors.h"
#include "common/trust/certificate.h"
#include "common/trust/crypto_client.h"
#include "common/trust/revocation.h"

namespace chasqui {

// The rule above for one entity: `certificates` are its certificates in the list's env that
// verified (any role: only CERTIFICATE_ROLE_ENTITY ones count).
bool EntityWithdrawn(const std::vector<VerifiedCertificate>& certificates,
                     const VerifiedRevocationList& list, int64_t now_ms);

struct NatsWatchOptions {
  // Everyone the configuration may hold (PlanNatsUsers; passwords empty), over one or more envs.
  std::vector<NatsUser> planned;
  // listen and tls of the configuration (its users are ignored).
  NatsConfigInput base;
  std::string config_path;
  std::string secrets_dir;
  int bcrypt_cost = 11;
  // nats-server's pid file (`nats-server -P FILE`): signalled after each rewrite. Empty: the
  // file is rewritten and nobody is signalled.
  std::string pid_file;
  TrustAnchors anchors;
  // Where the directory's answers come (`_INBOX._nats-watch.<env>` of the watch's user).
  std::string inbox_prefix;
  absl::Duration request_timeout = absl::Seconds(5);
  absl::Duration resync = absl::Seconds(60);
  absl::Duration retry = absl::Seconds(2);
};

class NatsRevocationWatch {
 public:
  // Subscribes chq.evt.crypto.revoked on `bus` and starts the worker, which fetches the lists
  // at once. InvalidArgument if nothing is planned, an entity's env is not among the planned
  // users' envs, or the anchors are empty; the bus's errors. `bus` and `clock` must outlive
  // the watch.
  static absl::StatusOr<std::unique_ptr<NatsRevocationWatch>> Start(Bus* bus,
                                                                    NatsWatchOptions options,
                                                                    const Clock& clock);
  ~NatsRevocationWatch();  // stops the worker (a lookup in flight ends within its timeout)

  struct State {
    std::map<std::string, uint64_t> versions;  // per env, the list version applied
    std::set<std::string> removed;             // user names left out of the configuration
    int rewrites = 0;                          // configurations written
  };
  State state() const;

 private:
  NatsRevocationWatch(Bus* bus, NatsWatchOptions options, const Clock& clock);
  void Run();
  bool Woken() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || !pending_.empty(); }
  // Fetches each env's current list and considers it. False if any fetch failed.
  bool FetchAll();
  // Verifies and applies one list (raw SignedRevocationList bytes). False if a lookup failed
  // (retry later); true if applied, refused or not newer.
  bool Consider(const std::string& raw, std::string_view origin);
  // The users of `env` the verified list withdraws. Errors: the directory's.
  absl::StatusOr<std::set<std::string>> Withdrawn(const VerifiedRevocationList& list,
                                                  int64_t now_ms);
  // The certificates the directory returns for `request` that verify, each at a time inside
  // its own validity (refused ones are logged).
  absl::StatusOr<std::vector<VerifiedCertificate>> Certificates(const v1::DirectoryRequest& request,
                                                                int64_t now_ms);
  // Rewrites the configuration if due; false if writing failed (retried later).
  bool WriteIfChanged();

  Bus* const bus_;
  const NatsWatchOptions options_;
  const Clock& clock_;
  std::set<std::string> envs_;
  TrustAnchors anchors_;  // worker only: the pinned roots and any endorsed since
  std::unique_ptr<CryptoClient> client_;
  std::unique_ptr<Subscription> events_;
  NatsHashCache hashes_;  // worker only
  // Worker only: per env, what the last applied list withdraws.
  std::map<std::string, std::set<std::string>> withdrawn_;
  std::set<std::string> written_;  // removed users in the file on disk
  bool written_once_ = false;
  bool write_failed_ = false;

  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::string> pending_ ABSL_GUARDED_BY(mu_);
  State state_ ABSL_GUARDED_BY(mu_);
  std::thread worker_;
};

// Makes the nats-server whose pid is in `pid_file` reread its configuration (SIGHUP, what
// `nats-server --signal reload` does). NotFound if the file cannot be read; InvalidArgument if it
// holds no pid; FailedPrecondition if that process is not a nats-server (/proc/<pid>/comm: a
// stale pid file never signals a stranger); Unavailable if no such process runs; PermissionDenied
// if it may not be signalled. Returns the pid signalled.
absl::StatusOr<int> SignalNatsReload(const std::string& pid_file);

}  // namespace chasqui
