#include "services/gateway/nats_watch.h"

#include <signal.h>
#include <sys/types.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "common/core/files.h"
#include "common/core/log.h"
#include "common/core/names.h"
#include "common/core/status.h"
#include "common/trust/requests.h"
#include "fmt/format.h"

namespace chasqui {
namespace {

std::string Join(const std::set<std::string>& items) {
  std::string out;
  for (const std::string& s : items) out += (out.empty() ? "" : ", ") + s;
  return out.empty() ? "none" : out;
}

bool IsEntityUser(const NatsUser& u) {
  return u.role == NatsUserRole::kEntity || u.role == NatsUserRole::kOperator;
}

}  // namespace

bool EntityWithdrawn(const std::vector<VerifiedCertificate>& certificates,
                     const VerifiedRevocationList& list, int64_t now_ms) {
  bool withdrawn = false;
  bool usable = false;
  for (const VerifiedCertificate& c : certificates) {
    if (c.role != v1::CERTIFICATE_ROLE_ENTITY || c.env != list.env) continue;
    auto it = list.revoked.find(c.serial);
    if (it != list.revoked.end()) {
      if (it->second.reason() == v1::REVOCATION_REASON_ENTITY_WITHDRAWN) withdrawn = true;
    } else if (now_ms <= c.not_after_ms) {
      // Not yet valid counts as usable too: it soon will be.
      usable = true;
    }
  }
  return withdrawn && !usable;
}

absl::StatusOr<std::unique_ptr<NatsRevocationWatch>> NatsRevocationWatch::Start(
    Bus* bus, NatsWatchOptions options, const Clock& clock) {
  if (options.planned.empty()) {
    return absl::InvalidArgumentError("nats watch: no users planned");
  }
  if (options.anchors.empty()) {
    return absl::InvalidArgumentError("nats watch: no pinned roots (--roots roots.json)");
  }
  std::unique_ptr<NatsRevocationWatch> w(new NatsRevocationWatch(bus, std::move(options), clock));
  for (const NatsUser& u : w->options_.planned) w->envs_.insert(u.env);
  CHASQUI_ASSIGN_OR_RETURN(w->client_, CryptoClient::Create(bus, w->options_.inbox_prefix,
                                                            w->options_.request_timeout));
  NatsRevocationWatch* self = w.get();
  CHASQUI_ASSIGN_OR_RETURN(
      w->events_, bus->Subscribe(kRevokedEventSubject, [self](const BusMessage& m) {
        absl::MutexLock lock(&self->mu_);
        self->pending_.emplace_back(m.data);
      }));
  w->worker_ = std::thread([self] { self->Run(); });
  return w;
}

NatsRevocationWatch::NatsRevocationWatch(Bus* bus, NatsWatchOptions options, const Clock& clock)
    : bus_(bus), options_(std::move(options)), clock_(clock), anchors_(options_.anchors) {}

NatsRevocationWatch::~NatsRevocationWatch() {
  events_.reset();
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (worker_.joinable()) worker_.join();
}

NatsRevocationWatch::State NatsRevocationWatch::state() const {
  absl::MutexLock lock(&mu_);
  return state_;
}

void NatsRevocationWatch::Run() {
  absl::Time next_fetch = absl::Now();
  int64_t reconnects = bus_->Reconnects();
  while (true) {
    std::vector<std::string> events;
    {
      absl::MutexLock lock(&mu_);
      // Woken by an event or a stop; at least once a second to notice a reconnect.
      mu_.AwaitWithDeadline(absl::Condition(this, &NatsRevocationWatch::Woken),
                            std::min(next_fetch, absl::Now() + absl::Seconds(1)));
      if (stop_) return;
      events.swap(pending_);
    }
    bool ok = true;
    for (const std::string& e : events) ok = Consider(e, "event") && ok;
    const int64_t now_reconnects = bus_->Reconnects();
    if (now_reconnects != reconnects) {
      // Events sent while the connection was down are lost: ask for the lists.
      reconnects = now_reconnects;
      next_fetch = absl::Now();
    }
    if (absl::Now() >= next_fetch) {
      const bool fetched = FetchAll();
      next_fetch = absl::Now() + (fetched ? options_.resync : options_.retry);
    }
    if (write_failed_) ok = WriteIfChanged() && ok;
    if (!ok) next_fetch = std::min(next_fetch, absl::Now() + options_.retry);
  }
}

bool NatsRevocationWatch::FetchAll() {
  bool ok = true;
  for (const std::string& env : envs_) {
    v1::DirectoryRequest req;
    req.set_env(env);
    req.set_revocation_list(true);
    req.set_anchors(true);
    absl::StatusOr<v1::DirectoryReply> reply = client_->Directory(req);
    if (!reply.ok()) {
      CHQ_LOG_WARN("revocation list of {}: cannot fetch it: {}; the configuration in force stays, "
                   "retry in {}",
                   env, MessageOf(reply.status()), absl::FormatDuration(options_.retry));
      ok = false;
      continue;
    }
    // A root rotation: the new root, endorsed by one already pinned, signs the lists from now on.
    for (const v1::RootEndorsement& e : reply->anchors()) {
      const size_t before = anchors_.anchors().size();
      if (absl::Status s = anchors_.ApplyEndorsement(e, clock_.NowUnixMillis()); !s.ok()) {
        CHQ_LOG_WARN("root endorsement from the directory refused: {}", MessageOf(s));
      } else if (anchors_.anchors().size() > before) {
        CHQ_LOG_INFO("root {} now pinned too (endorsed by {})", anchors_.anchors().back().key_id,
                     e.signer_key_id());
      }
    }
    ok = Consider(reply->revocation_list().SerializeAsString(), "directory") && ok;
  }
  return ok;
}

bool NatsRevocationWatch::Consider(const std::string& raw, std::string_view origin) {
  // The env decides which tag the signature is checked under: read it from the body only to
  // pick among the envs followed here; the verification builds the tag from our own env.
  v1::SignedRevocationList signed_list;
  v1::RevocationListBody body;
  if (!signed_list.ParseFromString(raw) || !body.ParseFromString(signed_list.body())) {
    CHQ_LOG_WARN("revocation list ({}) refused: not a SignedRevocationList; the configuration "
                 "in force stays",
                 origin);
    return true;
  }
  if (envs_.count(body.env()) == 0) return true;  // another env's list
  const std::string env = body.env();
  const int64_t now = clock_.NowUnixMillis();
  absl::StatusOr<VerifiedRevocationList> list = VerifyRevocationList(raw, anchors_, env, now);
  if (!list.ok()) {
    CHQ_LOG_WARN("revocation list of {} ({}) refused: {}; the configuration in force stays", env,
                 origin, MessageOf(list.status()));
    // An unknown root may be a rotation this watch has not seen: fetch the endorsements soon.
    return !absl::IsNotFound(list.status());
  }
  uint64_t applied = 0;
  {
    absl::MutexLock lock(&mu_);
    auto it = state_.versions.find(env);
    if (it != state_.versions.end()) applied = it->second;
  }
  if (list->version <= applied) return true;
  absl::StatusOr<std::set<std::string>> withdrawn = Withdrawn(*list, now);
  if (!withdrawn.ok()) {
    CHQ_LOG_WARN("revocation list of {} version {}: cannot resolve its certificates: {}; the "
                 "configuration in force stays, retry in {}",
                 env, list->version, MessageOf(withdrawn.status()),
                 absl::FormatDuration(options_.retry));
    return false;
  }
  const bool changed = withdrawn_[env] != *withdrawn;
  withdrawn_[env] = *std::move(withdrawn);
  {
    absl::MutexLock lock(&mu_);
    state_.versions[env] = list->version;
  }
  CHQ_LOG_INFO("revocation list of {} version {} ({}, {} revoked) applied: users withdrawn in {}: "
               "{}{}",
               env, list->version, origin, list->revoked.size(), env, Join(withdrawn_[env]),
               changed ? "" : " (unchanged)");
  return WriteIfChanged();
}

absl::StatusOr<std::vector<VerifiedCertificate>> NatsRevocationWatch::Certificates(
    const v1::DirectoryRequest& request, int64_t now_ms) {
  CHASQUI_ASSIGN_OR_RETURN(v1::DirectoryReply reply, client_->Directory(request));
  std::vector<VerifiedCertificate> out;
  for (const v1::Certificate& c : reply.certificates()) {
    v1::CertificateBody b;
    if (!b.ParseFromString(c.body())) {
      CHQ_LOG_WARN("directory of {}: a certificate that does not parse, ignored", request.env());
      continue;
    }
    // Checked at a time inside its own validity: an expired certificate still names its entity,
    // and its signature and issuer are checked all the same.
    const int64_t at = std::clamp(now_ms, b.not_before_ms(), std::max(b.not_before_ms(),
                                                                        b.not_after_ms()));
    absl::StatusOr<VerifiedCertificate> v =
        VerifyCertificate(c, anchors_, request.env(), at);
    if (!v.ok()) {
      CHQ_LOG_WARN("directory of {}: certificate {} refused: {}", request.env(), b.serial(),
                   MessageOf(v.status()));
      continue;
    }
    out.push_back(*std::move(v));
  }
  return out;
}

absl::StatusOr<std::set<std::string>> NatsRevocationWatch::Withdrawn(
    const VerifiedRevocationList& list, int64_t now_ms) {
  std::set<std::string> users;
  v1::DirectoryRequest by_serial;
  by_serial.set_env(list.env);
  for (const auto& [serial, r] : list.revoked) {
    if (r.reason() == v1::REVOCATION_REASON_ENTITY_WITHDRAWN) by_serial.add_serials(serial);
  }
  if (by_serial.serials().empty()) return users;
  std::sort(by_serial.mutable_serials()->begin(), by_serial.mutable_serials()->end());
  CHASQUI_ASSIGN_OR_RETURN(std::vector<VerifiedCertificate> named,
                           Certificates(by_serial, now_ms));
  std::set<std::string> entities;
  for (const VerifiedCertificate& c : named) {
    if (c.role == v1::CERTIFICATE_ROLE_ENTITY && list.IsRevoked(c.serial)) {
      entities.insert(c.entity);
    }
  }
  for (const std::string& entity : entities) {
    const std::string name = NatsUserName(NatsUserRole::kEntity, entity, list.env);
    const bool planned =
        std::any_of(options_.planned.begin(), options_.planned.end(),
                    [&](const NatsUser& u) { return IsEntityUser(u) && u.name == name; });
    if (!planned) continue;  // no user to remove
    v1::DirectoryRequest all;
    all.set_env(list.env);
    all.set_entity(entity);
    CHASQUI_ASSIGN_OR_RETURN(std::vector<VerifiedCertificate> its, Certificates(all, now_ms));
    if (EntityWithdrawn(its, list, now_ms)) users.insert(name);
  }
  return users;
}

bool NatsRevocationWatch::WriteIfChanged() {
  for (const std::string& env : envs_) {
    if (withdrawn_.count(env) == 0) return true;  // not every env has a verified list yet
  }
  std::set<std::string> removed;
  for (const auto& [env, users] : withdrawn_) removed.insert(users.begin(), users.end());
  if (written_once_ && !write_failed_ && removed == written_) return true;

  std::vector<NatsUser> users;
  for (const NatsUser& u : options_.planned) {
    if (removed.count(u.name) == 0) users.push_back(u);
  }
  auto fail = [&](const absl::Status& s) {
    CHQ_LOG_ERROR("nats-server configuration {} not rewritten: {}; retry in {}",
                  options_.config_path, MessageOf(s), absl::FormatDuration(options_.retry));
    write_failed_ = true;
    return false;
  };
  std::vector<std::string> created;
  if (absl::Status s = FillKeptNatsPasswords(&users, options_.secrets_dir, options_.bcrypt_cost,
                                             &hashes_, &created);
      !s.ok()) {
    return fail(s);
  }
  NatsConfigInput input = options_.base;
  input.users = std::move(users);
  absl::StatusOr<std::string> text = NatsServerConfig(input);
  if (!text.ok()) return fail(text.status());
  if (absl::Status s = WriteFileDurably(options_.config_path, *text, 0600, /*replace=*/true);
      !s.ok()) {
    return fail(s);
  }
  std::string versions;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [env, v] : state_.versions) {
      versions += fmt::format("{}{} v{}", versions.empty() ? "" : ", ", env, v);
    }
  }
  std::string reload = "no --nats-pid-file: nats-server not signalled";
  if (!options_.pid_file.empty()) {
    absl::StatusOr<int> pid = SignalNatsReload(options_.pid_file);
    reload = pid.ok() ? fmt::format("reload signalled to nats-server pid {}", *pid)
                      : fmt::format("reload NOT signalled: {}", MessageOf(pid.status()));
  }
  CHQ_LOG_INFO("nats-server configuration {} rewritten ({} users, revocation lists {}): removed "
               "users: {}; {}{}",
               options_.config_path, input.users.size(), versions, Join(removed), reload,
               created.empty() ? ""
                               : fmt::format("; new password files for {}",
                                             Join(std::set<std::string>(created.begin(),
                                                                        created.end()))));
  written_ = std::move(removed);
  written_once_ = true;
  write_failed_ = false;
  absl::MutexLock lock(&mu_);
  state_.removed = written_;
  ++state_.rewrites;
  return true;
}

absl::StatusOr<int> SignalNatsReload(const std::string& pid_file) {
  CHASQUI_ASSIGN_OR_RETURN(std::string text, ReadFileToString(pid_file, "nats-server pid file"));
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  int pid = 0;
  const bool digits = !text.empty() && text.size() <= 9 &&
                      text.find_first_not_of("0123456789") == std::string::npos;
  if (digits) pid = std::stoi(text);
  if (pid <= 1) {
    return absl::InvalidArgumentError(
        fmt::format("nats-server pid file {} holds no pid (\"{}\")", pid_file, Printable(text)));
  }
  // A stale pid file may name a process that is not nats-server any more: never signal it.
  const std::string comm = ReadFileOrEmpty(fmt::format("/proc/{}/comm", pid));
  if (!comm.empty() && comm.rfind("nats-server", 0) != 0) {
    std::string name = comm;
    while (!name.empty() && name.back() == '\n') name.pop_back();
    return absl::FailedPreconditionError(fmt::format(
        "pid {} from {} is \"{}\", not nats-server (a stale pid file?): not signalled", pid,
        pid_file, Printable(name)));
  }
  if (::kill(pid, SIGHUP) != 0) {
    const int err = errno;
    const std::string msg = fmt::format("cannot signal nats-server pid {} (from {}): {}", pid,
                                        pid_file, std::strerror(err));
    if (err == ESRCH) return absl::UnavailableError(msg);
    return absl::PermissionDeniedError(msg);
  }
  return pid;
}

}  // namespace chasqui
