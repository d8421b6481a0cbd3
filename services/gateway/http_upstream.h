#pragma once
// The provider side of the entity gateway: calling the entity's own system (the "upstream")
// over HTTP for one served service, and turning whatever it does into a precise Chasqui
// outcome, never a hang.

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "services/gateway/sdk.h"

namespace httplib {
class Client;
}

namespace chasqui {

struct UpstreamUrl {
  std::string scheme;  // "http" or "https"
  std::string host;    // a name, an IPv4 address, or an IPv6 address in brackets
  int port = 0;
  std::string path;    // starts with '/', may carry a query
  // "http://127.0.0.1:8081/persona"
  std::string ToString() const;
};

// InvalidArgument saying what was expected ("http://HOST[:PORT][/PATH]" or https).
absl::StatusOr<UpstreamUrl> ParseUpstreamUrl(std::string_view url);

struct ServedService {
  std::string service;
  UpstreamUrl url;
};

// Parses a --serve value "persona_consulta=http://127.0.0.1:8081/persona". InvalidArgument
// quoting the value and what was expected.
absl::StatusOr<ServedService> ParseServeSpec(std::string_view spec);

struct UpstreamOptions {
  // The whole call: connect, send, and the answer's arrival. Keep it below the router's
  // provider timeout (5 s by default), or the consumer sees TIMEOUT before this gateway gives up.
  absl::Duration timeout = absl::Seconds(4);
  size_t max_answer_bytes = 256 * 1024;
};

// Names of the metadata headers the upstream receives with every request.
inline constexpr char kHeaderConsumer[] = "X-Chasqui-Consumer";
inline constexpr char kHeaderService[] = "X-Chasqui-Service";
inline constexpr char kHeaderEndUser[] = "X-Chasqui-End-User";
inline constexpr char kHeaderPurpose[] = "X-Chasqui-Purpose";
inline constexpr char kHeaderConsentRef[] = "X-Chasqui-Consent-Ref";
inline constexpr char kHeaderRequestId[] = "X-Chasqui-Request-Id";
// From the consumer system to its gateway, and from the provider's gateway to its system.
inline constexpr char kHeaderIdempotencyKey[] = "Idempotency-Key";

// One service's upstream. Thread-safe: calls run concurrently, each on its own connection.
class UpstreamClient {
 public:
  UpstreamClient(UpstreamUrl url, UpstreamOptions options);
  ~UpstreamClient();

  // POSTs `body` with the request's metadata as headers. The upstream's answer on 2xx;
  // otherwise a ChasquiError: BAD_REQUEST for 4xx (with the upstream's message, truncated);
  // PROVIDER_ERROR for 5xx, other statuses, an unreachable system, one slower than the
  // timeout ("upstream did not answer within N ms") or an answer larger than allowed. Messages
  // never name the upstream's URL: they travel to the consumer, another entity.
  absl::StatusOr<std::string> Call(const RequestContext& context, std::string_view body);

  const UpstreamUrl& url() const { return url_; }

 private:
  std::unique_ptr<httplib::Client> TakeClient();
  void ReturnClient(std::unique_ptr<httplib::Client> client);

  const UpstreamUrl url_;
  const UpstreamOptions options_;
  absl::Mutex mu_;
  // Clients not in use: configured once (and, for https, with their TLS context), reused.
  std::vector<std::unique_ptr<httplib::Client>> idle_ ABSL_GUARDED_BY(mu_);
};

}  // namespace chasqui
