#pragma once
// The NATS connection every process uses: an RAII wrapper over nats.c.
//
// Threading: nats.c delivers each subscription's messages on that subscription's own thread,
// in order. Handlers may publish. Publish() is thread-safe.
// Lifecycle: destroying a Subscription unsubscribes it (after its handler returns); destroying
// the Bus closes the connection. Drain() is the orderly shutdown (STYLE.md, "Resources").

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace chasqui {

struct BusOptions {
  std::string url = "nats://127.0.0.1:4222";
  std::string name;  // connection name, shown by nats-server and in our logs
  // Credentials of a nats-server user (`chasqui nats-config` makes one per entity and env, and
  // one per env's routers). Empty user: none sent. The user is logged; the password never is,
  // nor does it appear in any error. A refused login is Unauthenticated naming user and url.
  std::string user;
  std::string password;
  // TLS (DESIGN.md: "connections use TLS"). A CA file (PEM; deploy/tls-ca.sh makes a local one)
  // or a tls:// url makes the connection TLS-only: nats-server's certificate must chain to
  // `ca_file` (without one nothing is trusted, so a tls:// url needs it too). `tls_hostname`,
  // if set, must also be named by the certificate (its SAN DNS name, e.g. "localhost");
  // empty: the chain alone is checked. Flags: --nats-ca (every executable with --nats).
  std::string ca_file;
  std::string tls_hostname;
  // nats.c holds plain publishes up to ~1 ms to batch them. true = lower latency per message,
  // false = higher pipelined throughput. Choose per connection on purpose.
  bool send_asap = false;
  // All subscriptions of the process delivered by one shared thread (nats.c's global message
  // delivery pool of size 1), instead of one thread per subscription: no two handlers run at
  // once, so they never contend, and fewer thread wake-ups per message. For processes whose
  // handlers are short (the router).
  bool shared_delivery_thread = false;
  int max_reconnect = -1;  // -1: forever
  absl::Duration reconnect_wait = absl::Milliseconds(250);
  absl::Duration connect_timeout = absl::Seconds(2);
  // Pending-message limit per subscription before nats.c drops and reports a slow consumer.
  int pending_msgs_limit = 65536;
};

// A delivered message. The views are valid only during the handler call.
struct BusMessage {
  std::string_view subject;
  std::string_view reply;
  std::string_view data;
  bool no_responders = false;  // nats-server's "no responders" status for a request
};
using BusHandler = std::function<void(const BusMessage&)>;

// The small interface logic is written against, so unit tests can use a fake.
class Publisher {
 public:
  virtual ~Publisher() = default;
  // Publishes `data` on `subject` with an optional reply subject. Thread-safe.
  virtual absl::Status Publish(std::string_view subject, std::string_view data,
                               std::string_view reply = {}) = 0;
};

class Subscription {
 public:
  virtual ~Subscription() = default;
  // Stops new deliveries, lets queued ones finish, waits up to `timeout`.
  virtual absl::Status Drain(absl::Duration timeout) = 0;
};

// Reads a password file written by `chasqui nats-config` into options->password (trailing
// whitespace stripped). PermissionDenied if group or others may read it (it must be mode
// 0600), NotFound if it cannot be read, InvalidArgument if empty or no user is set.
absl::Status LoadNatsPassword(const std::string& path, BusOptions* options);

class Bus : public Publisher {
 public:
  // Connects, with reconnect/disconnect/closed/error handlers that each log one line.
  // Unavailable (naming the url and nats.c's reason) if the server cannot be reached;
  // Unauthenticated (naming the user and url) if it refuses the credentials; InvalidArgument
  // for a password without a user, or a --nats-ca file that holds no loadable certificate.
  // FailedPrecondition, in one line naming the cause and the flag that fixes it, when TLS does
  // not match: a plain client at a TLS-only server ("requires TLS ... --nats-ca"), a server
  // certificate that does not chain to ca_file ("not signed by the CA in --nats-ca"), or TLS
  // asked of a server without it ("does not offer TLS"). Never waits past connect_timeout for
  // a handshake.
  static absl::StatusOr<std::unique_ptr<Bus>> Connect(const BusOptions& options);
  ~Bus() override = default;

  absl::Status Publish(std::string_view subject, std::string_view data,
                       std::string_view reply = {}) override = 0;
  virtual absl::StatusOr<std::unique_ptr<Subscription>> Subscribe(std::string_view subject,
                                                                  BusHandler handler) = 0;
  // Members of one queue group share the messages of `subject`.
  virtual absl::StatusOr<std::unique_ptr<Subscription>> QueueSubscribe(std::string_view subject,
                                                                       std::string_view queue,
                                                                       BusHandler handler) = 0;
  // Round trip to the server: every publish before it has reached the server.
  virtual absl::Status Flush(absl::Duration timeout) = 0;
  // Drains every subscription and then the connection; the Bus is closed afterwards.
  virtual absl::Status Drain(absl::Duration timeout) = 0;

  virtual bool Connected() const = 0;
  virtual int64_t Reconnects() const = 0;
  virtual int64_t MaxPayload() const = 0;
};

// Ends the NATS library, once, after every connection is destroyed: nats_Close(), and the fix
// for its TLS cleanup (nats-io/nats.c#904). Every executable calls this instead of nats_Close().
void CloseNatsLibrary();

// Bus::Connect, after reading the password from `password_file` if one is named: how every
// executable connects from its --nats-user / --nats-password-file flags.
absl::StatusOr<std::unique_ptr<Bus>> ConnectWithPasswordFile(BusOptions options,
                                                             const std::string& password_file);

}  // namespace chasqui
