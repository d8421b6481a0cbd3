#pragma once
// A small real backbone for integration tests: a nats-server on a random loopback port, a
// router, the provider segip (through the SDK) serving `persona_consulta` (echoes, counting
// every call its system sees) and `slow` (answers after 2 s), and the consumers sin and aduana.
// Keys are generated fresh; `mallory` has keys nobody trusts.

#include <atomic>
#include <memory>
#include <string>

#include "absl/time/time.h"
#include "chasqui/v1/envelope.pb.h"
#include "common/bus/bus.h"
#include "common/bus/request_mux.h"
#include "common/envelope/batch_signer.h"
#include "common/envelope/identity.h"
#include "common/envelope/session_keys.h"
#include "prometheus/registry.h"
#include "services/gateway/sdk.h"
#include "services/router/router.h"
#include "tests/support/nats_server.h"

namespace chasqui::testing {

// Identities are move-only (their secrets live in locked memory); tests need copies.
Identity Copy(const Identity& id);

struct BackboneOptions {
  std::string env = "test";
  int64_t startup_hold_ms = 0;
  absl::Duration provider_timeout = absl::Milliseconds(500);
  size_t max_envelope_bytes = 64 * 1024;
  bool start_provider = true;
  RefusalLimits preauth_refusals;
};

class Backbone {
 public:
  explicit Backbone(BackboneOptions options = {});
  ~Backbone();

  // Connects a new bus client to the server.
  std::unique_ptr<Bus> Connect(const std::string& name) const;
  // A consumer SDK for `entity` (sin or aduana), on its own connection.
  std::unique_ptr<Consumer> MakeConsumer(const Identity& identity);

  const BackboneOptions options;
  std::unique_ptr<NatsServer> nats;
  Identity sin, aduana, segip, router_key, mallory;
  TrustStore trust;  // every identity above but mallory
  std::shared_ptr<prometheus::Registry> registry;
  std::unique_ptr<Bus> router_bus, provider_bus;
  std::unique_ptr<Router> router;
  std::unique_ptr<Provider> provider;
  std::atomic<int> provider_system_calls{0};

 private:
  std::vector<std::unique_ptr<Bus>> consumer_buses_;
};

// Builds request envelopes by hand, so tests can send what no SDK would.
class RequestForge {
 public:
  RequestForge(const Identity& signer, const PublicIdentity& recipient, std::string env = "test");

  // A valid header for signer -> recipient.entity / `service`, sent now.
  v1::Header Header(const std::string& service) const;
  // Seals `body` under the header (sets nonce; the header must be final), signs, and returns
  // the wire bytes.
  std::string Seal(v1::Header header, const std::string& body);
  // Signs without sealing the body again: `body` is sent as is.
  std::string SignRaw(v1::Header header, const std::string& body);

 private:
  const Identity& signer_;
  const PublicIdentity recipient_;
  const std::string env_;
  SessionKeyCache keys_;
  NonceSource nonces_;
  BatchSigner batch_;
};

// Sends raw bytes as consumer `entity` and returns the answering envelope's header (or an
// error if none came within `timeout`).
class RawClient {
 public:
  RawClient(const Backbone& backbone, const std::string& entity, std::string env = "test");
  absl::StatusOr<v1::Header> Send(const std::string& subject, const std::string& wire,
                                  absl::Duration timeout = absl::Seconds(3));
  Bus& bus() { return *bus_; }

 private:
  std::unique_ptr<Bus> bus_;
  std::unique_ptr<RequestMux> mux_;
};

}  // namespace chasqui::testing
