#pragma once
// The `chasqui` verbs people use to act on the catalog and on quotas (issues 4 and 5). Every
// change is a control request signed with the person's own key (`--key`, from `chasqui keygen
// --role mae|manager|operator`) under the certificate `chasqui enrol` issued for it (`--cert`),
// sent over NATS like `chasqui enrol` (`--nats`, `--nats-user`, `--nats-password-file`).
//
// Outcome: one readable line on stdout (lists: one line per item, or a JSON array with
// `--json`), exit 0. Refusal by the service: "chasqui: <verb> refused: <CODE>: <message>" on
// stderr, exit 1 (also when no service answered in time). A local fault before anything was
// sent (a flag, a key or certificate file, NATS unreachable): "chasqui: <message>", exit 2.

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/bus/bus.h"
#include "common/envelope/identity.h"

namespace CLI {
class App;
}

namespace chasqui::cli {

// `chasqui catalog <verb>` (cli_catalog.cc) and `chasqui quota <verb>` (cli_quota.cc). Each
// verb runs from its CLI11 callback while `app` is parsed.
void AddCatalogCommands(CLI::App& app);
void AddQuotaCommands(CLI::App& app);

// ---- Shared by both files (cli_catalog.cc) ----

struct PersonFlags {
  std::string key;
  std::string cert;
  std::string nats_url = "nats://127.0.0.1:4222";
  std::string nats_user;
  std::string nats_password_file;
  std::string nats_ca;  // --nats-ca: nats-server's CA, the connection is TLS
  int64_t timeout_ms = 10000;
};
void AddPersonFlags(CLI::App* verb, PersonFlags* flags);

// The key file bound to its certificate: the identity's serial is the certificate's, so the
// requests it signs name it. InvalidArgument if the certificate is not the key's.
absl::StatusOr<Identity> LoadPerson(const PersonFlags& flags);
// The person's identity (LoadPerson) and a connection to NATS as `flags` say: what every verb
// opens first. `tool` names the connection (chasqui-<tool>-<entity>).
struct PersonSession {
  Identity identity;
  std::unique_ptr<Bus> bus;
};
absl::StatusOr<PersonSession> OpenPerson(const PersonFlags& flags, std::string_view tool);
// `_INBOX.<env>.<entity>.<random>`: where this person's answers come back (their entity's
// nats-server user may read it).
std::string PersonInbox(const PublicIdentity& who);

// Runs `run` as `verb`'s callback; a non-zero result ends the program with that exit code.
void OnRun(CLI::App* verb, std::function<int()> run);
// Prints and returns the exit code (see above).
int LocalFault(const absl::Status& status);
int Refused(std::string_view verb, const absl::Status& status);

}  // namespace chasqui::cli
