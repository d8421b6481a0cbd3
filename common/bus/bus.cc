#include "common/bus/bus.h"

#include <sys/stat.h>

#include <cctype>

#include <nats/nats.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "common/core/burst.h"
#include "common/core/files.h"
#include "common/core/log.h"
#include "common/core/status.h"
#include "fmt/format.h"

namespace chasqui {
namespace {

// STYLE.md, "Resources": every nats.c handle is owned the moment it exists.
template <auto Fn>
struct CDeleter {
  template <class T>
  void operator()(T* p) const noexcept {
    Fn(p);
  }
};
template <class T, auto Fn>
using CHandle = std::unique_ptr<T, CDeleter<Fn>>;
using NatsOptionsPtr = CHandle<natsOptions, natsOptions_Destroy>;
using NatsConnectionPtr = CHandle<natsConnection, natsConnection_Destroy>;
using NatsSubscriptionPtr = CHandle<natsSubscription, natsSubscription_Destroy>;
using NatsMsgPtr = CHandle<natsMsg, natsMsg_Destroy>;

// Messages may be large; nats.c's own default is 1 KiB per pending message. A subscription
// holds at most this many bytes besides its message count limit.
constexpr int kPendingBytesLimit = 256 * 1024 * 1024;

// How long a destructor waits for nats.c to confirm, before it logs and keeps waiting (for a
// handler) or gives up and leaks the callback state (for the connection's closed event).
constexpr auto kSlowShutdownWarning = std::chrono::seconds(5);
constexpr auto kClosedEventBound = std::chrono::seconds(10);

absl::StatusCode CodeFor(natsStatus s) {
  switch (s) {
    case NATS_OK:
      return absl::StatusCode::kOk;
    case NATS_TIMEOUT:
      return absl::StatusCode::kDeadlineExceeded;
    case NATS_INVALID_SUBJECT:
    case NATS_INVALID_ARG:
    case NATS_INVALID_TIMEOUT:
    case NATS_INVALID_QUEUE_NAME:
    case NATS_ADDRESS_MISSING:
    case NATS_MAX_PAYLOAD:
      return absl::StatusCode::kInvalidArgument;
    case NATS_CONNECTION_AUTH_FAILED:
      return absl::StatusCode::kUnauthenticated;
    case NATS_NOT_PERMITTED:
      return absl::StatusCode::kPermissionDenied;
    case NATS_SLOW_CONSUMER:
    case NATS_NO_MEMORY:
    case NATS_INSUFFICIENT_BUFFER:
      return absl::StatusCode::kResourceExhausted;
    case NATS_ILLEGAL_STATE:
    case NATS_INVALID_SUBSCRIPTION:
    case NATS_DRAINING:
    case NATS_MAX_DELIVERED_MSGS:
      return absl::StatusCode::kFailedPrecondition;
    case NATS_IO_ERROR:
    case NATS_CONNECTION_CLOSED:
    case NATS_NO_SERVER:
    case NATS_STALE_CONNECTION:
    case NATS_CONNECTION_DISCONNECTED:
    case NATS_NOT_YET_CONNECTED:
    case NATS_SSL_ERROR:
    case NATS_SECURE_CONNECTION_WANTED:
    case NATS_SECURE_CONNECTION_REQUIRED:
    case NATS_NO_RESPONDERS:
      return absl::StatusCode::kUnavailable;
    case NATS_NOT_FOUND:
      return absl::StatusCode::kNotFound;
    default:
      return absl::StatusCode::kInternal;
  }
}

// The one place a natsStatus becomes an absl::Status. Call it right after the failing nats.c
// call, on the same thread: nats_GetLastError is thread-local.
absl::Status FromNats(natsStatus s, std::string_view what,
                      absl::StatusCode code = absl::StatusCode::kOk, std::string_view hint = {}) {
  if (s == NATS_OK) return absl::OkStatus();
  const char* text = natsStatus_GetText(s);
  const char* raw_last = nats_GetLastError(nullptr);
  std::string_view last = raw_last != nullptr ? raw_last : "";
  // nats.c prefixes its detail with "(file.c:line): ", which tells a reader nothing.
  if (!last.empty() && last.front() == '(') {
    if (const size_t end = last.find("): "); end != std::string_view::npos) last.remove_prefix(end + 3);
  }
  std::string message = fmt::format("{}: {}", what, text);
  if (!last.empty() && last != text) message += fmt::format(" ({})", last);
  message.append(hint);
  return absl::Status(code == absl::StatusCode::kOk ? CodeFor(s) : code, message);
}

// nats.c takes NUL-terminated strings; subjects are short, so this avoids an allocation.
class CString {
 public:
  explicit CString(std::string_view s) {
    if (s.size() < sizeof(buf_)) {
      std::memcpy(buf_, s.data(), s.size());
      buf_[s.size()] = '\0';
      ptr_ = buf_;
    } else {
      heap_.assign(s);
      ptr_ = heap_.c_str();
    }
  }
  CString(const CString&) = delete;
  CString& operator=(const CString&) = delete;
  const char* c_str() const { return ptr_; }

 private:
  char buf_[256];
  std::string heap_;
  const char* ptr_;
};

// A subject travels inside a protocol line: whitespace or control bytes would corrupt the
// connection (nats.c 3.4 only checks for emptiness when publishing), empty tokens are invalid.
// Wildcards are whole tokens, `>` only last, and only where subscribing.
absl::Status CheckSubject(std::string_view subject, std::string_view what, bool wildcards) {
  if (subject.empty()) return absl::InvalidArgumentError(fmt::format("{}: empty subject", what));
  size_t token_start = 0;
  for (size_t i = 0; i <= subject.size(); ++i) {
    if (i == subject.size() || subject[i] == '.') {
      std::string_view token = subject.substr(token_start, i - token_start);
      if (token.empty()) {
        return absl::InvalidArgumentError(
            fmt::format("{}: subject '{}' has an empty token", what, subject));
      }
      const bool wildcard = token == "*" || token == ">";
      if (wildcard && !wildcards) {
        return absl::InvalidArgumentError(
            fmt::format("{}: subject '{}' has a wildcard", what, subject));
      }
      if (token == ">" && i != subject.size()) {
        return absl::InvalidArgumentError(
            fmt::format("{}: subject '{}' has '>' before its last token", what, subject));
      }
      token_start = i + 1;
      continue;
    }
    const unsigned char c = static_cast<unsigned char>(subject[i]);
    if (c <= 0x20 || c == 0x7f) {
      return absl::InvalidArgumentError(
          fmt::format("{}: subject '{}' has whitespace or a control byte", what, subject));
    }
  }
  return absl::OkStatus();
}

int64_t ToMillisAtLeastOne(absl::Duration d) {
  if (d >= absl::Hours(24 * 365)) return int64_t{24} * 365 * 3600 * 1000;
  const int64_t ms = absl::ToInt64Milliseconds(d);
  return ms < 1 ? 1 : ms;
}

// Removes user:password@ from each url of a comma-separated list: logs and errors never carry
// credentials.
std::string RedactUrls(std::string_view urls) {
  std::string out;
  size_t start = 0;
  while (start <= urls.size()) {
    size_t comma = urls.find(',', start);
    if (comma == std::string_view::npos) comma = urls.size();
    std::string_view url = urls.substr(start, comma - start);
    const size_t scheme = url.find("://");
    const size_t host_start = scheme == std::string_view::npos ? 0 : scheme + 3;
    const size_t at = url.find('@', host_start);
    const size_t slash = url.find('/', host_start);
    if (!out.empty() || start > 0) out += ',';
    if (at != std::string_view::npos && (slash == std::string_view::npos || at < slash)) {
      out.append(url.substr(0, host_start));
      out += "***@";
      out.append(url.substr(at + 1));
    } else {
      out.append(url);
    }
    start = comma + 1;
  }
  return out;
}

// What the connection-level callbacks see. nats.c calls them on its async-callback thread; the
// closed event is the last one it posts for a connection, so the state may go after it.
struct ConnEvents {
  std::string name;
  std::string url;  // redacted
  std::atomic<int64_t> reconnects{0};
  std::atomic<bool> closing{false};  // we asked for the close: its disconnect is no warning
  std::mutex mu;
  std::condition_variable cv;
  bool closed = false;
};

void OnDisconnected(natsConnection* /*nc*/, void* closure) {
  auto* ev = static_cast<ConnEvents*>(closure);
  if (ev->closing.load()) {
    CHQ_LOG_INFO("bus disconnected name={} url={} closing=true", ev->name, ev->url);
  } else {
    CHQ_LOG_WARN("bus disconnected name={} url={}", ev->name, ev->url);
  }
}

void OnReconnected(natsConnection* nc, void* closure) {
  auto* ev = static_cast<ConnEvents*>(closure);
  const int64_t n = ++ev->reconnects;
  char buf[256];
  const bool have = natsConnection_GetConnectedUrl(nc, buf, sizeof(buf)) == NATS_OK && buf[0];
  CHQ_LOG_INFO("bus reconnected name={} url={} reconnects={}", ev->name,
               have ? RedactUrls(buf) : ev->url, n);
}

void OnClosed(natsConnection* /*nc*/, void* closure) {
  auto* ev = static_cast<ConnEvents*>(closure);
  CHQ_LOG_INFO("bus closed name={} url={}", ev->name, ev->url);
  // Notify under the lock: once it is released the owner may free `ev`.
  std::lock_guard<std::mutex> lock(ev->mu);
  ev->closed = true;
  ev->cv.notify_all();
}

void OnAsyncError(natsConnection* /*nc*/, natsSubscription* sub, natsStatus err, void* closure) {
  auto* ev = static_cast<ConnEvents*>(closure);
  const char* subject = sub != nullptr ? natsSubscription_GetSubject(sub) : nullptr;
  CHQ_LOG_WARN("bus error name={} url={} subject={} error={}", ev->name, ev->url,
               subject != nullptr ? subject : "-", natsStatus_GetText(err));
}

// A subscription's handler and the means to know that nats.c is done calling it. nats.c gets a
// raw pointer; `keep_alive` is that pointer's share, dropped by the completion callback, which
// nats.c runs after the subscription is closed and its last handler call has returned.
struct SubState {
  BusHandler handler;
  std::string subject;
  std::shared_ptr<SubState> keep_alive;
  std::mutex mu;
  std::condition_variable cv;
  bool complete = false;
};

// The subscription whose handler runs on this thread, so a handler may destroy its own
// Subscription without waiting for itself.
thread_local const SubState* t_in_handler = nullptr;

void OnMessage(natsConnection* /*nc*/, natsSubscription* sub, natsMsg* raw, void* closure) {
  NatsMsgPtr msg(raw);
  // Producers on this thread may defer work until the backlog behind this message is drained.
  BurstDelivery burst;
  auto* state = static_cast<SubState*>(closure);
  const char* reply = natsMsg_GetReply(msg.get());
  const char* data = natsMsg_GetData(msg.get());
  const int len = natsMsg_GetDataLength(msg.get());
  BusMessage m;
  m.subject = natsMsg_GetSubject(msg.get());
  m.reply = reply != nullptr ? std::string_view(reply) : std::string_view();
  m.data = data != nullptr ? std::string_view(data, static_cast<size_t>(len)) : std::string_view();
  m.no_responders = natsMsg_IsNoResponders(msg.get());
  const SubState* outer = t_in_handler;
  t_in_handler = state;
  try {
    state->handler(m);
  } catch (const std::exception& e) {
    // An exception must not unwind through nats.c's C frames.
    CHQ_LOG_ERROR("bus handler threw subject={} what={}", state->subject, e.what());
  } catch (...) {
    CHQ_LOG_ERROR("bus handler threw subject={}", state->subject);
  }
  t_in_handler = outer;
  int pending = 0;
  burst.End(natsSubscription_GetPending(sub, &pending, nullptr) == NATS_OK && pending > 0);
}

void OnSubscriptionComplete(void* closure) {
  auto* state = static_cast<SubState*>(closure);
  std::shared_ptr<SubState> keep = std::move(state->keep_alive);
  std::lock_guard<std::mutex> lock(state->mu);
  state->complete = true;
  state->cv.notify_all();
  // `keep` is released after the lock: it may be the last owner.
}

class NatsSubscription final : public Subscription {
 public:
  NatsSubscription(NatsSubscriptionPtr sub, std::shared_ptr<SubState> state)
      : sub_(std::move(sub)), state_(std::move(state)) {}

  ~NatsSubscription() override {
    // Fails harmlessly if the subscription or connection is already closed.
    (void)natsSubscription_Unsubscribe(sub_.get());
    if (t_in_handler != state_.get()) {
      std::unique_lock<std::mutex> lock(state_->mu);
      while (!state_->cv.wait_for(lock, kSlowShutdownWarning, [&] { return state_->complete; })) {
        CHQ_LOG_WARN("bus unsubscribe waits for a slow handler subject={}", state_->subject);
      }
    }
    // From inside its own handler: nats.c finishes the call, then the completion callback
    // releases the state.
  }

  absl::Status Drain(absl::Duration timeout) override {
    const int64_t ms = ToMillisAtLeastOne(timeout);
    natsStatus s = natsSubscription_DrainTimeout(sub_.get(), ms);
    if (s != NATS_OK) return FromNats(s, fmt::format("drain subscription {}", state_->subject));
    s = natsSubscription_WaitForDrainCompletion(sub_.get(), ms);
    if (s != NATS_OK) return FromNats(s, fmt::format("drain subscription {}", state_->subject));
    s = natsSubscription_DrainCompletionStatus(sub_.get());
    if (s != NATS_OK) return FromNats(s, fmt::format("drain subscription {}", state_->subject));
    return absl::OkStatus();
  }

 private:
  NatsSubscriptionPtr sub_;
  std::shared_ptr<SubState> state_;
};

class NatsBus final : public Bus {
 public:
  NatsBus(std::unique_ptr<ConnEvents> events, NatsConnectionPtr nc, int pending_msgs_limit)
      : events_(std::move(events)), nc_(std::move(nc)), pending_msgs_limit_(pending_msgs_limit) {}

  ~NatsBus() override {
    // Close joins nats.c's connection threads and posts the closed event, the last callback
    // that uses `events_`.
    events_->closing = true;
    natsConnection_Close(nc_.get());
    std::unique_lock<std::mutex> lock(events_->mu);
    if (!events_->cv.wait_for(lock, kClosedEventBound, [&] { return events_->closed; })) {
      lock.unlock();
      CHQ_LOG_WARN("bus closed event did not arrive name={} url={}; leaking its state",
                   events_->name, events_->url);
      (void)events_.release();
      return;  // nc_ is destroyed by its handle
    }
  }

  absl::Status Publish(std::string_view subject, std::string_view data,
                       std::string_view reply) override {
    if (absl::Status st = CheckSubject(subject, "publish", false); !st.ok()) return st;
    if (!reply.empty()) {
      if (absl::Status st = CheckSubject(reply, "publish reply", false); !st.ok()) return st;
    }
    if (data.size() > static_cast<size_t>(INT_MAX)) {
      return absl::InvalidArgumentError(
          fmt::format("publish on {}: {} bytes is too large", subject, data.size()));
    }
    CString subj(subject);
    const int len = static_cast<int>(data.size());
    natsStatus s;
    if (reply.empty()) {
      s = natsConnection_Publish(nc_.get(), subj.c_str(), data.data(), len);
    } else {
      CString rep(reply);
      s = natsConnection_PublishRequest(nc_.get(), subj.c_str(), rep.c_str(), data.data(), len);
    }
    if (s != NATS_OK) return FromNats(s, fmt::format("publish on {} via {}", subject, events_->url));
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<Subscription>> Subscribe(std::string_view subject,
                                                          BusHandler handler) override {
    return DoSubscribe(subject, {}, std::move(handler));
  }

  absl::StatusOr<std::unique_ptr<Subscription>> QueueSubscribe(std::string_view subject,
                                                               std::string_view queue,
                                                               BusHandler handler) override {
    if (queue.empty()) return absl::InvalidArgumentError("queue subscribe: empty queue name");
    for (char ch : queue) {
      const unsigned char c = static_cast<unsigned char>(ch);
      if (c <= 0x20 || c == 0x7f) {
        return absl::InvalidArgumentError(
            fmt::format("queue subscribe: queue name '{}' has whitespace or a control byte", queue));
      }
    }
    return DoSubscribe(subject, queue, std::move(handler));
  }

  absl::Status Flush(absl::Duration timeout) override {
    natsStatus s = natsConnection_FlushTimeout(nc_.get(), ToMillisAtLeastOne(timeout));
    if (s != NATS_OK) return FromNats(s, fmt::format("flush to {}", events_->url));
    return absl::OkStatus();
  }

  absl::Status Drain(absl::Duration timeout) override {
    const int64_t ms = ToMillisAtLeastOne(timeout);
    events_->closing = true;
    natsStatus s = natsConnection_DrainTimeout(nc_.get(), ms);
    if (s != NATS_OK) return FromNats(s, fmt::format("drain connection to {}", events_->url));
    std::unique_lock<std::mutex> lock(events_->mu);
    // nats.c closes the connection itself when its drain timeout elapses; allow for that.
    if (!events_->cv.wait_for(lock, std::chrono::milliseconds(ms) + std::chrono::seconds(1),
                              [&] { return events_->closed; })) {
      return absl::DeadlineExceededError(
          fmt::format("drain connection to {}: not closed within {} ms", events_->url, ms));
    }
    return absl::OkStatus();
  }

  bool Connected() const override {
    return natsConnection_Status(nc_.get()) == NATS_CONN_STATUS_CONNECTED;
  }
  int64_t Reconnects() const override { return events_->reconnects.load(); }
  int64_t MaxPayload() const override { return natsConnection_GetMaxPayload(nc_.get()); }

 private:
  absl::StatusOr<std::unique_ptr<Subscription>> DoSubscribe(std::string_view subject,
                                                            std::string_view queue,
                                                            BusHandler handler) {
    if (absl::Status st = CheckSubject(subject, "subscribe", true); !st.ok()) return st;
    if (!handler) return absl::InvalidArgumentError("subscribe: empty handler");
    auto state = std::make_shared<SubState>();
    state->handler = std::move(handler);
    state->subject = std::string(subject);
    CString subj(subject);
    natsSubscription* raw = nullptr;
    natsStatus s;
    if (queue.empty()) {
      s = natsConnection_Subscribe(&raw, nc_.get(), subj.c_str(), &OnMessage, state.get());
    } else {
      CString q(queue);
      s = natsConnection_QueueSubscribe(&raw, nc_.get(), subj.c_str(), q.c_str(), &OnMessage,
                                        state.get());
    }
    if (s != NATS_OK) return FromNats(s, fmt::format("subscribe {} via {}", subject, events_->url));
    NatsSubscriptionPtr sub(raw);
    // From here nats.c may call OnMessage with `state` at any time, until it says it is done.
    state->keep_alive = state;
    s = natsSubscription_SetOnCompleteCB(sub.get(), &OnSubscriptionComplete, state.get());
    if (s != NATS_OK) {
      // The subscription was closed already (its connection closed meanwhile). nats.c may be
      // inside the handler right now and will never say when it is done: leave `state`
      // owned by itself, a small leak on a path that only a closing connection takes.
      return FromNats(s, fmt::format("subscribe {} via {}", subject, events_->url),
                      absl::StatusCode::kUnavailable);
    }
    natsSubscription* handle = sub.get();
    // Owned from here, so an early return unsubscribes and waits like any other.
    auto owned = std::make_unique<NatsSubscription>(std::move(sub), std::move(state));
    s = natsSubscription_SetPendingLimits(handle, pending_msgs_limit_, kPendingBytesLimit);
    if (s != NATS_OK) {
      return FromNats(s, fmt::format("subscribe {}: pending limit {}", subject,
                                     pending_msgs_limit_));
    }
    return std::unique_ptr<Subscription>(std::move(owned));
  }

  std::unique_ptr<ConnEvents> events_;
  NatsConnectionPtr nc_;
  const int pending_msgs_limit_;
};

// True if any url of the comma-separated list asks for TLS.
bool HasTlsUrl(std::string_view urls) {
  size_t start = 0;
  while (start <= urls.size()) {
    size_t comma = urls.find(',', start);
    if (comma == std::string_view::npos) comma = urls.size();
    std::string_view url = urls.substr(start, comma - start);
    while (!url.empty() && url.front() == ' ') url.remove_prefix(1);
    const absl::string_view view(url.data(), url.size());
    if (absl::StartsWithIgnoreCase(view, "tls://")) return true;
    start = comma + 1;
  }
  return false;
}

// For a first connect that failed on TLS: what went wrong and the flag that fixes it, as the
// tail of the one-line error; empty if the failure was not about TLS. Call it on the failing
// thread (nats_GetLastError is thread-local).
std::string TlsFailureHint(natsStatus s, const BusOptions& options) {
  const bool tls = !options.ca_file.empty() || HasTlsUrl(options.url);
  if (s == NATS_SECURE_CONNECTION_REQUIRED || (s == NATS_SSL_ERROR && options.ca_file.empty())) {
    // A plain client meets a TLS-only server (nats.c 3.4 then tries TLS trusting nothing).
    return "; nats-server requires TLS: give --nats-ca FILE (the CA that signed its "
           "certificate, e.g. <data>/tls/ca.crt from deploy/tls-ca.sh) and a tls:// url";
  }
  if (s == NATS_SECURE_CONNECTION_WANTED) {
    return "; TLS was asked for (--nats-ca or a tls:// url) but nats-server does not offer it: "
           "point --nats at a TLS nats-server, or drop --nats-ca for a plain one";
  }
  if (s == NATS_SSL_ERROR || (tls && s == NATS_IO_ERROR)) {
    const char* raw = nats_GetLastError(nullptr);
    const std::string last = absl::AsciiStrToLower(raw != nullptr ? raw : "");
    if (last.find("hostname mismatch") != std::string::npos) {
      return fmt::format(
          "; TLS handshake refused: nats-server's certificate does not name host {} (the "
          "expected TLS host name): connect by a name its certificate has",
          options.tls_hostname);
    }
    if (last.find("verify") != std::string::npos || last.find("certificate") != std::string::npos ||
        last.find("issuer") != std::string::npos) {
      return fmt::format(
          "; TLS handshake refused: nats-server's certificate is not signed by the CA in "
          "--nats-ca {}: give the CA that signed it",
          options.ca_file);
    }
    if (s == NATS_SSL_ERROR) return "; TLS handshake failed: check --nats-ca and the tls:// url";
  }
  return {};
}

}  // namespace

absl::StatusOr<std::unique_ptr<Bus>> Bus::Connect(const BusOptions& options) {
  if (options.url.empty()) return absl::InvalidArgumentError("bus connect: empty url");
  if (options.pending_msgs_limit <= 0) {
    return absl::InvalidArgumentError(
        fmt::format("bus connect: pending_msgs_limit must be positive, got {}",
                    options.pending_msgs_limit));
  }
  if (options.user.empty() && !options.password.empty()) {
    return absl::InvalidArgumentError(fmt::format(
        "bus connect name={}: a password without a user (set the NATS user too)", options.name));
  }
  auto events = std::make_unique<ConnEvents>();
  events->name = options.name;
  events->url = RedactUrls(options.url);
  // The user is named in every line about this connection; the password is never written.
  if (!options.user.empty()) events->name += fmt::format(" user={}", options.user);
  const std::string what = fmt::format("bus connect name={} url={}", events->name, events->url);

  natsOptions* raw_opts = nullptr;
  natsStatus s = natsOptions_Create(&raw_opts);
  if (s != NATS_OK) return FromNats(s, what);
  NatsOptionsPtr opts(raw_opts);

  s = natsOptions_SetURL(opts.get(), options.url.c_str());
  if (s == NATS_OK && !options.name.empty()) s = natsOptions_SetName(opts.get(), options.name.c_str());
  if (s == NATS_OK && !options.user.empty()) {
    s = natsOptions_SetUserInfo(opts.get(), options.user.c_str(), options.password.c_str());
  }
  if (s == NATS_OK) s = natsOptions_SetSendAsap(opts.get(), options.send_asap);
  if (s == NATS_OK && options.shared_delivery_thread) {
    // One delivery thread for every subscription of the process (nats.c's global pool, sized
    // 1 once): handlers never run concurrently, so they never contend, and fewer threads wake.
    static const natsStatus pool = nats_SetMessageDeliveryPoolSize(1);
    s = pool;
    if (s == NATS_OK) s = natsOptions_UseGlobalMessageDelivery(opts.get(), true);
  }
  if (s == NATS_OK) s = natsOptions_SetAllowReconnect(opts.get(), true);
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(opts.get(), options.max_reconnect);
  if (s == NATS_OK) {
    s = natsOptions_SetReconnectWait(opts.get(),
                                     std::max<int64_t>(0, absl::ToInt64Milliseconds(options.reconnect_wait)));
  }
  if (s == NATS_OK) s = natsOptions_SetTimeout(opts.get(), ToMillisAtLeastOne(options.connect_timeout));
  if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(opts.get(), &OnDisconnected, events.get());
  if (s == NATS_OK) s = natsOptions_SetReconnectedCB(opts.get(), &OnReconnected, events.get());
  if (s == NATS_OK) s = natsOptions_SetClosedCB(opts.get(), &OnClosed, events.get());
  if (s == NATS_OK) s = natsOptions_SetErrorHandler(opts.get(), &OnAsyncError, events.get());
  if (s != NATS_OK) return FromNats(s, what, absl::StatusCode::kInvalidArgument);
  const bool tls = !options.ca_file.empty() || HasTlsUrl(options.url);
  if (tls) {
    s = natsOptions_SetSecure(opts.get(), true);
    if (s != NATS_OK) return FromNats(s, what, absl::StatusCode::kInvalidArgument);
  }
  if (!options.ca_file.empty()) {
    // nats.c loads the file now, so a wrong path fails here rather than at each connect.
    s = natsOptions_LoadCATrustedCertificates(opts.get(), options.ca_file.c_str());
    if (s != NATS_OK) {
      return FromNats(s, fmt::format("{}: --nats-ca {}: no CA certificate could be loaded", what,
                                     options.ca_file),
                      absl::StatusCode::kInvalidArgument,
                      "; give the PEM file of the CA that signed nats-server's certificate");
    }
  }
  if (tls && !options.tls_hostname.empty()) {
    s = natsOptions_SetExpectedHostname(opts.get(), options.tls_hostname.c_str());
    if (s != NATS_OK) return FromNats(s, what, absl::StatusCode::kInvalidArgument);
  }

  natsConnection* raw_nc = nullptr;
  s = natsConnection_Connect(&raw_nc, opts.get());
  if (s != NATS_OK) {
    // A failed first connect posts no callbacks, so `events` may go now.
    absl::StatusCode code = CodeFor(s);
    if (code != absl::StatusCode::kUnauthenticated && code != absl::StatusCode::kPermissionDenied &&
        code != absl::StatusCode::kInvalidArgument) {
      code = absl::StatusCode::kUnavailable;
    }
    std::string_view hint = "; is nats-server running and reachable at that url?";
    const std::string tls_hint = TlsFailureHint(s, options);
    if (!tls_hint.empty()) {
      code = absl::StatusCode::kFailedPrecondition;
      hint = tls_hint;
    } else if (code == absl::StatusCode::kUnauthenticated) {
      hint = options.user.empty()
                 ? "; nats-server wants a user and password (--nats-user and "
                   "--nats-password-file; `chasqui nats-config` makes them)"
                 : "; nats-server refused this user and password: check both, and that the user "
                   "is in its configuration";
    }
    absl::Status failed = FromNats(s, what, code, hint);
    // nats.c's own text never quotes the password; make sure of it.
    if (!options.password.empty() &&
        MessageOf(failed).find(options.password) != std::string_view::npos) {
      failed = absl::Status(failed.code(), fmt::format("{} (detail withheld: it quoted the "
                                                       "password)", what));
    }
    return failed;
  }
  NatsConnectionPtr nc(raw_nc);
  CHQ_LOG_INFO("bus connected name={} url={} send_asap={}", events->name, events->url,
               options.send_asap);
  return std::unique_ptr<Bus>(new NatsBus(std::move(events), std::move(nc), options.pending_msgs_limit));
}

absl::Status LoadNatsPassword(const std::string& path, BusOptions* options) {
  if (options->user.empty()) {
    return absl::InvalidArgumentError(
        fmt::format("--nats-password-file {} needs --nats-user (the user it belongs to)", path));
  }
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    return absl::PermissionDeniedError(fmt::format(
        "NATS password file {}: readable by group or others (mode {:o}); chmod 600 {}", path,
        st.st_mode & 0777, path));
  }
  CHASQUI_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path, "NATS password file"));
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  if (text.empty()) {
    return absl::InvalidArgumentError(fmt::format("NATS password file {} is empty", path));
  }
  options->password = std::move(text);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Bus>> ConnectWithPasswordFile(BusOptions options,
                                                             const std::string& password_file) {
  if (!password_file.empty()) CHASQUI_RETURN_IF_ERROR(LoadNatsPassword(password_file, &options));
  return Bus::Connect(options);
}

void CloseNatsLibrary() {
  nats_Close();
  // nats_Close() frees OpenSSL's list of compression methods but leaves OpenSSL pointing at it
  // (nats-io/nats.c#904): OpenSSL's own cleanup at exit would free it again and crash every
  // process that used TLS. Point OpenSSL at no list (what it returns is the freed one).
  (void)SSL_COMP_set0_compression_methods(nullptr);
}

}  // namespace chasqui
