#pragma once
// The entity gateway (chasqui-gateway): runs inside an entity's network, holds its private
// keys, and bridges HTTP+JSON to Chasqui in both directions, on top of the SDK.
//
// Consumer side: `POST /v1/{provider}/{service}` with the request body, the end user in
// `X-Chasqui-End-User` (mandatory), and optionally `X-Chasqui-Purpose` and
// `X-Chasqui-Consent-Ref`, and `Idempotency-Key` (1 to 128 printable ASCII characters; else
// 400): a repeat with the same key and body, even after this gateway gave up waiting, gets the
// provider's first answer without its system running the query again; the same key with
// another body is 400. The SDK's Consumer seals, signs, sends through a router, verifies and
// opens the answer. 200 with the provider's body and `X-Chasqui-Request-Id`, or the
// status HttpStatusFor() gives the Chasqui code, with a problem document (http_problem.h).
// Optional local API key: `Authorization: Bearer <key>`, compared in constant time.
//
// Provider side: each served service's requests (already verified and opened by the SDK's
// Provider) are POSTed to the entity system's URL with the metadata as X-Chasqui-* headers;
// see UpstreamClient for how its answers map to codes. Each served service has its own
// `provider_workers` upstream calls in flight at most, and `provider_queue` more waiting; past
// that a request is answered UNAVAILABLE (503, "saturated") at once. Answers to requests with an
// Idempotency-Key are remembered per (consumer, service, key) for `idempotency.ttl`; a repeat
// while the first is still running waits for its answer (no 409).
//
// With the catalog (GatewayCatalog: `--catalog`, on certificates only):
//   - `GET /v1/openapi.json`: the OpenAPI document of what this entity may call (openapi.h),
//     under the same API key rule; 503 until the first snapshot, 404 without the catalog.
//   - The provider side checks each request against its own snapshot before the entity's
//     system is called (DESIGN.md, "One request", step 3): no published service, no active
//     grant for the consumer in this env, or an unknown end user is answered NOT_FOUND,
//     FORBIDDEN or END_USER_UNKNOWN, signed, even if a router let the request by; before the
//     first snapshot, UNAVAILABLE.
//   - Mock mode (`--serve SERVICE=mock`, test env only): the answer is the example in the
//     service's response schema (mock_answer.h).
//   - Ready() is Unavailable until the first snapshot is loaded.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/bus/bus.h"
#include "common/envelope/identity.h"
#include "prometheus/registry.h"
#include "services/gateway/http_upstream.h"
#include "services/gateway/idempotency.h"
#include "services/gateway/sdk.h"

namespace chasqui {

class GatewayCatalog;

// Under NATS's 1 MiB max_payload with room for the header, signature and seal.
inline constexpr size_t kMaxGatewayBodyBytes = 1024 * 1024 - 64 * 1024;

struct HttpGatewayOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: pick a free port; port() returns it and Start logs it
  // Empty: no API key required. Otherwise every HTTP request must carry
  // `Authorization: Bearer <api_key>`. Only a hash of it is kept after Start.
  std::string api_key;
  // Largest request body accepted (413 above it), and largest upstream answer relayed.
  size_t max_body_bytes = 256 * 1024;
  // How long a consumer call waits for the platform's answer. Keep it above the router's
  // provider timeout, so a slow provider shows as TIMEOUT from the router.
  absl::Duration call_timeout = absl::Seconds(10);
  // How long the provider side waits for the entity's system. Below the router's provider
  // timeout (default 5 s), so a slow system shows as PROVIDER_ERROR naming it, not as TIMEOUT.
  absl::Duration upstream_timeout = absl::Seconds(4);
  std::vector<ServedService> serve;
  // Services answered from their catalog examples (`--serve SERVICE=mock`): needs the catalog,
  // and env test.
  std::vector<std::string> mock;
  // Upstream calls in flight at once per served service, and requests that may wait for one.
  int provider_workers = 8;
  size_t provider_queue = 64;
  // What the provider side remembers of answers to requests with an Idempotency-Key.
  IdempotencyOptions idempotency;
  // HTTP worker threads: each consumer call holds one until its answer comes.
  int http_threads = 16;
};

// InvalidArgument naming the option and what was expected.
absl::Status ValidateGatewayOptions(const HttpGatewayOptions& options);

// Adds one `--serve` value to `options`: "SERVICE=mock" to `mock`, else ParseServeSpec's
// "SERVICE=URL" to `serve` (its errors).
absl::Status AddServeSpec(std::string_view spec, HttpGatewayOptions& options);

// Parses "HOST:PORT" ("[::1]:8080" for IPv6). InvalidArgument saying what was expected.
absl::StatusOr<std::pair<std::string, int>> ParseListenAddress(std::string_view address);

class HttpGateway {
 public:
  // Starts the consumer, serves every configured service, then listens. `bus` must outlive
  // the gateway; `identity` must be an entity key for trust.env(). Metrics go to `registry`
  // (may be null). InvalidArgument for bad options or keys, Unavailable if the address cannot
  // be bound.
  static absl::StatusOr<std::unique_ptr<HttpGateway>> Start(
      const HttpGatewayOptions& options, Bus* bus, Identity identity, TrustStore trust,
      std::shared_ptr<prometheus::Registry> registry);
  // The same on a changing trust source (CertificateTrust): while it refuses (a stale
  // revocation list), Ready() says why and every call, in both directions, is UNAVAILABLE.
  // With `catalog` (for trust's env; kept): see the header comment. InvalidArgument for mock
  // services without a catalog or outside env test (CheckMockAllowed). `next_keys`: more keys
  // of the entity for the provider side during a rotation's overlap (Provider::Create's
  // checks); the consumer side signs with `identity`.
  static absl::StatusOr<std::unique_ptr<HttpGateway>> Start(
      const HttpGatewayOptions& options, Bus* bus, Identity identity,
      std::shared_ptr<TrustSource> trust, std::shared_ptr<prometheus::Registry> registry,
      std::shared_ptr<GatewayCatalog> catalog = nullptr, std::vector<Identity> next_keys = {});
  // Stops (see Stop).
  virtual ~HttpGateway() = default;

  // The port the HTTP listener is bound to.
  virtual int port() const = 0;
  // OK while the listener runs, the NATS connection is up, the trust source serves and (with
  // the catalog) a snapshot is loaded; else why not (for /readyz).
  virtual absl::Status Ready() const = 0;
  // Stops accepting HTTP, waits for calls in flight (at most the call timeout), then stops
  // serving the provider side (requests still waiting for a worker are answered UNAVAILABLE;
  // upstream calls in flight finish, at most the upstream timeout). Idempotent; thread-safe.
  virtual void Stop() = 0;
};

}  // namespace chasqui
