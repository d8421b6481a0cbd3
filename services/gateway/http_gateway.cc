#include "services/gateway/http_gateway.h"

#include <httplib.h>
#include <sodium.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <exception>
#include <regex>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "common/core/log.h"
#include "common/core/names.h"
#include "common/core/status.h"
#include "common/crypto/sodium.h"
#include "common/envelope/envelope.h"
#include "common/envelope/errors.h"
#include "fmt/format.h"
#include "common/ops/http_listener.h"
#include "services/gateway/gateway_catalog.h"
#include "services/gateway/gateway_metrics.h"
#include "services/gateway/http_problem.h"
#include "services/gateway/mock_answer.h"
#include "services/gateway/openapi.h"
#include "services/gateway/sdk.h"

namespace chasqui {
namespace {

constexpr char kJsonContentType[] = "application/json";
constexpr char kConsumePattern[] = R"(/v1/([^/]+)/([^/]+))";
constexpr char kOpenApiPath[] = "/v1/openapi.json";
constexpr char kUnknown[] = "unknown";
constexpr int kMaxRefusalLinesPerSecond = 20;
// Services learned as real (they answered OK once), so labels stay bounded.
constexpr size_t kMaxKnownServices = 1024;

absl::StatusOr<Identity> CopyIdentity(const Identity& id) {
  CHASQUI_ASSIGN_OR_RETURN(auto sign, SigningKey::FromSecret(AsView(id.sign.secret().data(), 64)));
  CHASQUI_ASSIGN_OR_RETURN(auto kx, KxKey::FromSecret(AsView(id.kx.secret().data(), 32)));
  return Identity{id.pub, std::move(sign), std::move(kx)};
}

// The gateway's own id for a refusal that never became an exchange (same shape as a trace id,
// and written in the refusal's log line).
std::string LocalRequestId() { return ToHex(NewEnvelopeId()); }

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

absl::Status CheckHeaderText(std::string_view header, std::string_view value, size_t max) {
  if (value.size() > max) {
    return ChasquiError(v1::BAD_REQUEST, fmt::format("header {} is {} bytes; at most {} allowed",
                                                     header, value.size(), max));
  }
  for (unsigned char c : value) {
    if (c < 0x20 || c == 0x7f) {
      return ChasquiError(v1::BAD_REQUEST,
                          fmt::format("header {} contains control characters", header));
    }
  }
  return absl::OkStatus();
}

class HttpGatewayImpl final : public HttpGateway {
 public:
  HttpGatewayImpl(const HttpGatewayOptions& options, Bus* bus, std::shared_ptr<TrustSource> trust,
                  std::shared_ptr<prometheus::Registry> registry,
                  std::shared_ptr<GatewayCatalog> catalog)
      : options_(options),
        bus_(bus),
        trust_(std::move(trust)),
        env_(trust_->env()),
        catalog_(std::move(catalog)),
        registry_(registry != nullptr ? std::move(registry)
                                      : std::make_shared<prometheus::Registry>()),
        metrics_(*registry_, env_) {
    // The hash Init keeps is all that stays of the key.
    sodium_memzero(options_.api_key.data(), options_.api_key.size());
    options_.api_key.clear();
  }

  ~HttpGatewayImpl() override { Stop(); }

  absl::Status Init(const std::string& api_key, Identity identity,
                    std::vector<Identity> next_keys) {
    entity_ = identity.pub.entity;
    if (catalog_ != nullptr && catalog_->env() != env_) {
      return absl::InvalidArgumentError(
          fmt::format("gateway: the catalog followed is for {}, the gateway runs in {}",
                      catalog_->env(), env_));
    }
    if (!options_.mock.empty()) {
      CHASQUI_RETURN_IF_ERROR(CheckMockAllowed(options_.mock, env_));
      if (catalog_ == nullptr) {
        return absl::InvalidArgumentError(fmt::format(
            "--serve {}={}: mock mode answers from the examples in the catalog; start the gateway "
            "with --catalog (and --roots/--cert)",
            options_.mock.front(), kMockUpstream));
      }
    }
    require_key_ = !api_key.empty();
    if (require_key_) key_hash_ = Blake2b256(api_key);

    CHASQUI_ASSIGN_OR_RETURN(Identity consumer_identity, CopyIdentity(identity));
    CHASQUI_ASSIGN_OR_RETURN(consumer_,
                             Consumer::Create(bus_, std::move(consumer_identity), trust_));
    if (!options_.serve.empty() || !options_.mock.empty()) {
      ProviderOptions provider_options;
      provider_options.workers = options_.provider_workers;
      provider_options.queue_capacity = options_.provider_queue;
      provider_options.idempotency = options_.idempotency;
      std::vector<Identity> provider_keys;
      provider_keys.push_back(std::move(identity));
      for (Identity& next : next_keys) provider_keys.push_back(std::move(next));
      provider_options.on_answered_without_handler =
          [this](const std::string& service, v1::Code code, std::string_view reason) {
            metrics_.CountAnsweredWithoutUpstream(service, reason, code);
          };
      CHASQUI_ASSIGN_OR_RETURN(
          provider_, Provider::Create(bus_, std::move(provider_keys), trust_, provider_options));
      UpstreamOptions upstream_options;
      upstream_options.timeout = options_.upstream_timeout;
      upstream_options.max_answer_bytes = options_.max_body_bytes;
      for (const ServedService& s : options_.serve) {
        upstreams_.push_back(std::make_unique<UpstreamClient>(s.url, upstream_options));
        UpstreamClient* upstream = upstreams_.back().get();
        CHASQUI_RETURN_IF_ERROR(provider_->Serve(
            s.service, [this, upstream](const RequestContext& ctx, std::string_view body) {
              return Provide(ctx, upstream->url().ToString(),
                             [&] { return upstream->Call(ctx, body); });
            }));
        CHQ_LOG_INFO(
            "serving {} from upstream {} (timeout {} ms, {} calls at once, {} may wait; "
            "idempotent answers kept {} s, at most {})",
            s.service, s.url.ToString(), absl::ToInt64Milliseconds(options_.upstream_timeout),
            options_.provider_workers, options_.provider_queue,
            absl::ToInt64Seconds(options_.idempotency.ttl), options_.idempotency.max_entries);
      }
      for (const std::string& service : options_.mock) {
        mocks_.push_back(std::make_unique<MockService>(catalog_->snapshot(), entity_, service));
        MockService* mock = mocks_.back().get();
        CHASQUI_RETURN_IF_ERROR(provider_->Serve(
            service, [this, mock](const RequestContext& ctx, std::string_view) {
              return Provide(ctx, "mock", [mock] { return mock->Answer(); });
            }));
        CHQ_LOG_INFO("serving {} as a MOCK: answers are the example in its response schema in "
                     "the catalog (env {})",
                     service, env_);
      }
      // The subscriptions are on the server before Start returns.
      CHASQUI_RETURN_IF_ERROR(bus_->Flush(absl::Seconds(5)));
    }
    return Listen();
  }

  int port() const override { return listener_ ? listener_->port() : 0; }

  absl::Status Ready() const override {
    if (stopped_.load()) return absl::UnavailableError("the gateway is stopping");
    if (!bus_->Connected()) return absl::UnavailableError("the NATS connection is down");
    if (!listener_ || !listener_->running()) {
      return absl::UnavailableError("the HTTP listener is not running");
    }
    if (catalog_ != nullptr) CHASQUI_RETURN_IF_ERROR(catalog_->Ready());
    return trust_->Current().status();
  }

  void Stop() override {
    absl::MutexLock lock(&stop_mu_);
    if (stopped_.exchange(true)) return;
    if (listener_) listener_->Stop();  // the worker pool finishes the calls in flight first
    provider_.reset();  // unsubscribes, then waits for the upstream calls in flight
    consumer_.reset();
    if (port() != 0) CHQ_LOG_INFO("gateway {} stopped", entity_);
  }

 private:
  absl::Status Listen() {
    // HttpListener also turns Nagle off: httplib writes head and body separately, which cost
    // ~40 ms per call on a keep-alive connection (measured).
    listener_ = std::make_unique<HttpListener>(options_.http_threads);
    httplib::Server& server = listener_->server();
    server.set_payload_max_length(options_.max_body_bytes);
    server.Post(kConsumePattern, [this](const httplib::Request& req, httplib::Response& res) {
      HandleConsume(req, res);
    });
    server.Get(kOpenApiPath, [this](const httplib::Request& req, httplib::Response& res) {
      HandleOpenApi(req, res);
    });
    auto other = [this](const httplib::Request& req, httplib::Response& res) {
      HandleOther(req, res);
    };
    server.Get(".*", other);  // and HEAD
    server.Post(".*", other);
    server.Put(".*", other);
    server.Patch(".*", other);
    server.Delete(".*", other);
    server.Options(".*", other);
    server.set_error_handler(httplib::Server::HandlerWithResponse(
        [this](const httplib::Request& req, httplib::Response& res) {
          return HandleHttpError(req, res);
        }));
    server.set_exception_handler(
        [this](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
          std::string what = "unknown exception";
          try {
            if (ep) std::rethrow_exception(ep);
          } catch (const std::exception& e) {
            what = e.what();
          } catch (...) {
          }
          Refuse(req, res, ProblemFor(v1::UNAVAILABLE, "the gateway failed to handle the request",
                                      LocalRequestId()),
                 kUnknown, kUnknown, std::chrono::steady_clock::now(), what);
        });

    CHASQUI_RETURN_IF_ERROR(listener_->Listen(options_.host, options_.port, "gateway"));
    CHQ_LOG_INFO(
        "gateway {} env={} listening on http://{} (POST /v1/{{provider}}/{{service}}, GET {}); "
        "api key {}; max body {} bytes; call timeout {} ms; serving {} service(s), {} mock(s); "
        "catalog {}",
        entity_, env_, HostPort(options_.host, listener_->port()), kOpenApiPath,
        require_key_ ? "required" : "not required", options_.max_body_bytes,
        absl::ToInt64Milliseconds(options_.call_timeout), options_.serve.size(),
        options_.mock.size(),
        catalog_ != nullptr ? "followed (grants checked on the provider side)" : "not followed");
    return absl::OkStatus();
  }

  // Writes the 401 and returns false unless the request carries the API key (or none is
  // required). Hashing both sides makes the comparison constant-time whatever the lengths.
  bool Authorized(const httplib::Request& req, httplib::Response& res, std::string_view provider,
                  std::string_view service, std::chrono::steady_clock::time_point start) {
    if (!require_key_) return true;
    const std::string header = req.get_header_value("Authorization");
    std::string_view reason;
    if (header.size() <= 7 || (header.compare(0, 7, "Bearer ") != 0 &&
                               header.compare(0, 7, "bearer ") != 0)) {
      reason = "missing Authorization: Bearer <api key>";
    } else {
      const Hash32 presented = Blake2b256(std::string_view(header).substr(7));
      if (sodium_memcmp(presented.data(), key_hash_.data(), presented.size()) == 0) return true;
      reason = "wrong API key";
    }
    res.set_header("WWW-Authenticate", "Bearer");
    Refuse(req, res,
           ProblemFor(v1::UNAUTHENTICATED,
                      fmt::format("{}: this gateway serves only its entity's own systems", reason),
                      LocalRequestId()),
           provider, service, start, reason);
    return false;
  }

  void HandleConsume(const httplib::Request& req, httplib::Response& res) {
    const auto start = std::chrono::steady_clock::now();
    const std::string provider = req.matches[1].str();
    const std::string service = req.matches[2].str();
    if (!Authorized(req, res, provider, service, start)) return;

    const std::string end_user = req.get_header_value(kHeaderEndUser);
    const std::string purpose = req.get_header_value(kHeaderPurpose);
    const std::string consent_ref = req.get_header_value(kHeaderConsentRef);
    const std::string idempotency_key = req.get_header_value(kHeaderIdempotencyKey);
    absl::Status bad;
    if (end_user.empty()) {
      bad = ChasquiError(v1::BAD_REQUEST,
                         fmt::format("header {} is mandatory: name the official on whose behalf "
                                     "the query runs",
                                     kHeaderEndUser));
    } else if (auto s = CheckHeaderText(kHeaderEndUser, end_user, kMaxEndUserBytes); !s.ok()) {
      bad = s;
    } else if (auto s = CheckHeaderText(kHeaderPurpose, purpose, kMaxTextFieldBytes); !s.ok()) {
      bad = s;
    } else if (auto s = CheckHeaderText(kHeaderConsentRef, consent_ref, kMaxTextFieldBytes);
               !s.ok()) {
      bad = s;
    } else if (req.get_header_value_count(kHeaderIdempotencyKey) > 1) {
      bad = ChasquiError(v1::BAD_REQUEST,
                         fmt::format("header {} is given more than once; send one key",
                                     kHeaderIdempotencyKey));
    } else if (req.has_header(kHeaderIdempotencyKey)) {
      bad = ValidateIdempotencyKey(idempotency_key);
    }
    if (!bad.ok()) {
      Refuse(req, res, ProblemFor(v1::BAD_REQUEST, MessageOf(bad), LocalRequestId()), provider,
             service, start, MessageOf(bad));
      return;
    }

    CallOptions call;
    call.end_user = end_user;
    call.purpose = purpose;
    call.consent_ref = consent_ref;
    call.idempotency_key = idempotency_key;
    call.timeout = options_.call_timeout;
    CallResult r = consumer_->Call(provider, service, req.body, call);
    if (!r.status.ok()) {
      Refuse(req, res,
             ProblemFor(ChasquiCode(r.status), MessageOf(r.status), r.request_id, r.retry_after_ms),
             provider, service, start, MessageOf(r.status), "call failed");
      return;
    }
    res.status = 200;
    res.set_header(kHeaderRequestId, r.request_id);
    res.set_content(std::move(r.body), kJsonContentType);
    Count(Direction::kConsume, provider, service, v1::OK, start);
  }

  // GET /v1/openapi.json: generated from the snapshot at each request, so it follows grants.
  void HandleOpenApi(const httplib::Request& req, httplib::Response& res) {
    const auto start = std::chrono::steady_clock::now();
    if (!Authorized(req, res, kUnknown, kUnknown, start)) return;
    if (catalog_ == nullptr) {
      const std::string detail = fmt::format(
          "{} is generated from the catalog, which this gateway does not follow; start it with "
          "--catalog (and --roots/--cert)",
          kOpenApiPath);
      Refuse(req, res, ProblemFor(v1::NOT_FOUND, detail, LocalRequestId()), kUnknown, kUnknown,
             start, detail);
      return;
    }
    if (absl::Status ready = catalog_->Ready(); !ready.ok()) {
      Refuse(req, res, ProblemFor(v1::UNAVAILABLE, MessageOf(ready), LocalRequestId()), kUnknown,
             kUnknown, start, MessageOf(ready));
      return;
    }
    OpenApiOptions o;
    o.entity = entity_;
    o.env = env_;
    // The address the developer's tool reached, so a generated client calls the same one.
    const std::string host = req.get_header_value("Host");
    const bool host_usable = !host.empty() && CheckHeaderText("Host", host, 255).ok();
    o.server_url = fmt::format(
        "http://{}", host_usable ? host : HostPort(options_.host, listener_->port()));
    o.api_key_required = require_key_;
    res.status = 200;
    res.set_content(OpenApiDocument(catalog_->snapshot().ToProto(), o), kJsonContentType);
  }

  // Every path and method but POST /v1/{provider}/{service} and GET /v1/openapi.json.
  void HandleOther(const httplib::Request& req, httplib::Response& res) {
    const auto start = std::chrono::steady_clock::now();
    if (!Authorized(req, res, kUnknown, kUnknown, start)) return;
    static const std::regex kConsume(kConsumePattern);
    if (std::regex_match(req.path, kConsume)) {
      res.set_header("Allow", "POST");
      HttpProblem p = ProblemFor(v1::BAD_REQUEST,
                                 fmt::format("{} is not allowed here; use POST", Printable(req.method, 16)),
                                 LocalRequestId());
      p.status = 405;
      p.kind = "method-not-allowed";
      Refuse(req, res, p, kUnknown, kUnknown, start, p.detail);
      return;
    }
    const std::string detail = fmt::format(
        "no endpoint {}; this gateway serves POST /v1/{{provider}}/{{service}}",
        Printable(req.path, 120));
    Refuse(req, res, ProblemFor(v1::NOT_FOUND, detail, LocalRequestId()), kUnknown, kUnknown, start,
           detail);
  }

  // Errors httplib answers by itself: 413 over --max-body-bytes, 400 unparseable requests.
  httplib::Server::HandlerResponse HandleHttpError(const httplib::Request& req,
                                                   httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;  // ours
    HttpProblem p;
    p.status = res.status;
    p.request_id = LocalRequestId();
    if (res.status == 413) {
      p.code = v1::BAD_REQUEST;
      p.kind = "body-too-large";
      p.detail = fmt::format("the request body exceeds {} bytes (the gateway's --max-body-bytes)",
                             options_.max_body_bytes);
    } else if (res.status == 404) {
      p.code = v1::NOT_FOUND;
      p.detail = "no such endpoint";
    } else if (res.status < 500) {
      p.code = v1::BAD_REQUEST;
      p.detail = fmt::format("the HTTP request cannot be handled (HTTP {})", res.status);
    } else {
      p.code = v1::UNAVAILABLE;
      p.detail = fmt::format("the gateway failed to handle the request (HTTP {})", res.status);
    }
    Refuse(req, res, p, kUnknown, kUnknown, std::chrono::steady_clock::now(), p.detail);
    return httplib::Server::HandlerResponse::Handled;
  }

  // Answers with the problem, counts it and logs one line (rate-limited). `what` is "refused"
  // for the gateway's own refusals, "call failed" for an exchange's error outcome.
  void Refuse(const httplib::Request& req, httplib::Response& res, const HttpProblem& problem,
              std::string_view provider, std::string_view service,
              std::chrono::steady_clock::time_point start, std::string_view reason,
              std::string_view what = "refused") {
    res.status = problem.status;
    for (const auto& [name, value] : ProblemHeaders(problem)) res.set_header(name, value);
    res.set_content(ProblemJson(problem), kProblemContentType);
    Count(Direction::kConsume, provider, service, problem.code, start);
    if (LogAllowed()) {
      CHQ_LOG_WARN("{} {} {} from {}: HTTP {} {} request {}: {}", what, Printable(req.method, 16),
                   Printable(req.path, 120), req.remote_addr, problem.status,
                   CodeName(problem.code), problem.request_id, Printable(reason, 300));
    }
  }

  // The provider side of one request: the gateway's own catalog check, then `answer` (the
  // entity's system, or a mock) only if it passes.
  template <class AnswerFn>
  absl::StatusOr<std::string> Provide(const RequestContext& ctx, std::string_view upstream,
                                      AnswerFn answer_fn) {
    const auto start = std::chrono::steady_clock::now();
    absl::Status allowed = CheckCatalog(ctx);
    absl::StatusOr<std::string> answer =
        allowed.ok() ? answer_fn() : absl::StatusOr<std::string>(allowed);
    const v1::Code code = answer.ok() ? v1::OK : ChasquiCode(answer.status());
    Count(Direction::kProvide, entity_, ctx.service, code, start);
    if (!answer.ok() && LogAllowed()) {
      CHQ_LOG_WARN("provide {} request {} from {}: {}: {} ({})", ctx.service, ctx.request_id,
                   ctx.consumer, CodeName(code), MessageOf(answer.status()),
                   allowed.ok() ? fmt::format("upstream {}", upstream)
                                : std::string("refused by this gateway's catalog check"));
    }
    return answer;
  }

  // OK without the catalog (the router's check is all there is), else the snapshot's.
  absl::Status CheckCatalog(const RequestContext& ctx) const {
    if (catalog_ == nullptr) return absl::OkStatus();
    if (absl::Status ready = catalog_->Ready(); !ready.ok()) {
      return ChasquiError(v1::UNAVAILABLE,
                          fmt::format("the provider's gateway cannot check grants yet: {}",
                                      MessageOf(ready)));
    }
    auto access = catalog_->snapshot().Check(ctx.consumer, entity_, ctx.service, ctx.end_user);
    if (!access.ok()) {
      return ChasquiError(ChasquiCode(access.status()),
                          fmt::format("refused by {}'s gateway: {}", entity_,
                                      MessageOf(access.status())));
    }
    return absl::OkStatus();
  }

  void Count(Direction direction, std::string_view provider, std::string_view service,
             v1::Code code, std::chrono::steady_clock::time_point start) {
    bool provider_known = false;
    if (IsValidName(provider)) {
      auto trust = trust_->Current();
      provider_known = trust.ok() && (*trust)->Find(provider, Role::kEntity) != nullptr;
    }
    std::string_view service_label = kUnknown;
    if (provider_known && IsValidName(service)) {
      if (direction == Direction::kProvide) {
        service_label = service;  // configured, so known
      } else {
        // A consumer may name any service; only those that answered OK once get their name.
        const std::string key = fmt::format("{}/{}", provider, service);
        absl::MutexLock lock(&known_mu_);
        if (code == v1::OK && known_services_.size() < kMaxKnownServices) {
          known_services_.insert(key);
        }
        if (known_services_.contains(key)) service_label = service;
      }
    }
    metrics_.CountRequest(direction, provider_known ? provider : kUnknown, service_label, code,
                          SecondsSince(start));
  }

  bool LogAllowed() {
    const int64_t second = std::chrono::duration_cast<std::chrono::seconds>(
                               std::chrono::steady_clock::now().time_since_epoch())
                               .count();
    int64_t seen = log_second_.load();
    if (seen != second && log_second_.compare_exchange_strong(seen, second)) log_lines_.store(0);
    const int n = ++log_lines_;
    if (n == kMaxRefusalLinesPerSecond + 1) {
      CHQ_LOG_WARN("more than {} refusals this second; the rest are counted, not logged",
                   kMaxRefusalLinesPerSecond);
    }
    return n <= kMaxRefusalLinesPerSecond;
  }

  HttpGatewayOptions options_;
  Bus* bus_;
  const std::shared_ptr<TrustSource> trust_;
  const std::string env_;
  const std::shared_ptr<GatewayCatalog> catalog_;
  std::shared_ptr<prometheus::Registry> registry_;
  GatewayMetrics metrics_;
  std::string entity_;
  bool require_key_ = false;
  Hash32 key_hash_{};
  std::unique_ptr<Consumer> consumer_;
  std::vector<std::unique_ptr<UpstreamClient>> upstreams_;
  std::vector<std::unique_ptr<MockService>> mocks_;
  std::unique_ptr<Provider> provider_;
  std::unique_ptr<HttpListener> listener_;
  std::atomic<bool> stopped_{false};
  absl::Mutex stop_mu_;
  absl::Mutex known_mu_;
  absl::flat_hash_set<std::string> known_services_ ABSL_GUARDED_BY(known_mu_);
  std::atomic<int64_t> log_second_{0};
  std::atomic<int> log_lines_{0};
};

}  // namespace

absl::Status ValidateGatewayOptions(const HttpGatewayOptions& o) {
  if (o.host.empty()) return absl::InvalidArgumentError("--listen: expected HOST:PORT");
  if (o.port < 0 || o.port > 65535) {
    return absl::InvalidArgumentError(
        fmt::format("--listen port {}: expected 0 (pick one) to 65535", o.port));
  }
  if (o.max_body_bytes < 1 || o.max_body_bytes > kMaxGatewayBodyBytes) {
    return absl::InvalidArgumentError(
        fmt::format("--max-body-bytes {}: expected 1 to {} (below NATS's 1 MiB max_payload, with "
                    "room for the envelope)",
                    o.max_body_bytes, kMaxGatewayBodyBytes));
  }
  if (o.call_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--call-timeout-ms: expected a positive number");
  }
  if (o.upstream_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--upstream-timeout-ms: expected a positive number");
  }
  if (o.provider_workers < 1 || o.provider_workers > 1024) {
    return absl::InvalidArgumentError(
        fmt::format("--provider-workers {}: expected 1 to 1024", o.provider_workers));
  }
  if (o.provider_queue > 100'000) {
    return absl::InvalidArgumentError(
        fmt::format("--provider-queue {}: expected 0 to 100000", o.provider_queue));
  }
  if (o.idempotency.ttl <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--idempotency-ttl-s: expected a positive number");
  }
  if (o.idempotency.max_entries < 1) {
    return absl::InvalidArgumentError("--idempotency-max-entries: expected at least 1");
  }
  if (o.http_threads < 1 || o.http_threads > 1024) {
    return absl::InvalidArgumentError(
        fmt::format("--http-threads {}: expected 1 to 1024", o.http_threads));
  }
  absl::flat_hash_set<std::string> seen;
  std::vector<std::string_view> served;
  for (const ServedService& s : o.serve) served.push_back(s.service);
  for (const std::string& s : o.mock) served.push_back(s);
  for (std::string_view service : served) {
    if (!IsValidName(service)) {
      return absl::InvalidArgumentError(fmt::format(
          "--serve \"{}\": the service name must match [a-z0-9][a-z0-9_-]{{0,62}}",
          Printable(service)));
    }
    if (!seen.insert(std::string(service)).second) {
      return absl::InvalidArgumentError(
          fmt::format("--serve {}: given twice; expected one upstream per service", service));
    }
  }
  return absl::OkStatus();
}

absl::Status AddServeSpec(std::string_view spec, HttpGatewayOptions& options) {
  const size_t eq = spec.find('=');
  if (eq != std::string_view::npos && spec.substr(eq + 1) == kMockUpstream) {
    const std::string service(spec.substr(0, eq));
    if (!IsValidName(service)) {
      return absl::InvalidArgumentError(fmt::format(
          "--serve \"{}\": the service name must match [a-z0-9][a-z0-9_-]{{0,62}}",
          Printable(spec)));
    }
    options.mock.push_back(service);
    return absl::OkStatus();
  }
  CHASQUI_ASSIGN_OR_RETURN(ServedService served, ParseServeSpec(spec));
  options.serve.push_back(std::move(served));
  return absl::OkStatus();
}

absl::StatusOr<std::pair<std::string, int>> ParseListenAddress(std::string_view address) {
  static const std::regex kAddress(R"(^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$)");
  std::cmatch m;
  if (!std::regex_match(address.data(), address.data() + address.size(), m, kAddress)) {
    return absl::InvalidArgumentError(fmt::format(
        "--listen \"{}\": expected HOST:PORT, e.g. 127.0.0.1:8080 ([::1]:8080 for IPv6; port 0 "
        "picks one)",
        Printable(address)));
  }
  std::string host = m[1].str();
  if (host.front() == '[') host = host.substr(1, host.size() - 2);
  const int port = std::stoi(m[2].str());
  if (port > 65535) {
    return absl::InvalidArgumentError(
        fmt::format("--listen \"{}\": expected a port from 0 to 65535", Printable(address)));
  }
  return std::make_pair(std::move(host), port);
}

absl::StatusOr<std::unique_ptr<HttpGateway>> HttpGateway::Start(
    const HttpGatewayOptions& options, Bus* bus, Identity identity, TrustStore trust,
    std::shared_ptr<prometheus::Registry> registry) {
  return Start(options, bus, std::move(identity), FixedTrust(std::move(trust)),
               std::move(registry));
}

absl::StatusOr<std::unique_ptr<HttpGateway>> HttpGateway::Start(
    const HttpGatewayOptions& options, Bus* bus, Identity identity,
    std::shared_ptr<TrustSource> trust, std::shared_ptr<prometheus::Registry> registry,
    std::shared_ptr<GatewayCatalog> catalog, std::vector<Identity> next_keys) {
  CHASQUI_RETURN_IF_ERROR(ValidateGatewayOptions(options));
  if (bus == nullptr) return absl::InvalidArgumentError("gateway: no bus");
  if (trust == nullptr) return absl::InvalidArgumentError("gateway: no trust source");
  try {
    auto gateway = std::make_unique<HttpGatewayImpl>(options, bus, std::move(trust),
                                                     std::move(registry), std::move(catalog));
    CHASQUI_RETURN_IF_ERROR(
        gateway->Init(options.api_key, std::move(identity), std::move(next_keys)));
    return std::unique_ptr<HttpGateway>(std::move(gateway));
  } catch (const std::exception& e) {
    return absl::UnavailableError(fmt::format("gateway: cannot start: {}", e.what()));
  }
}

}  // namespace chasqui
