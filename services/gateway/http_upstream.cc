#include "services/gateway/http_upstream.h"

#include <httplib.h>

#include <chrono>
#include <regex>
#include <utility>

#include "common/core/names.h"
#include "common/envelope/errors.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace chasqui {
namespace {

// The part of an upstream's refusal that travels to the consumer.
constexpr size_t kMaxUpstreamMessage = 256;

absl::Status Invalid(std::string_view what, std::string_view value, std::string_view expected) {
  return absl::InvalidArgumentError(
      fmt::format("{} \"{}\": expected {}", what, Printable(value, 200), expected));
}

bool HasControlChars(std::string_view s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return true;
  }
  return false;
}

// An upstream's refusal body as one bounded, printable line: a JSON "detail", "message" or
// "error" string if there is one (problem documents and most APIs), else the body itself.
std::string UpstreamMessage(const std::string& body) {
  auto doc = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (doc.is_object()) {
    for (const char* field : {"detail", "message", "error"}) {
      auto it = doc.find(field);
      if (it != doc.end() && it->is_string()) {
        return Printable(it->get<std::string>(), kMaxUpstreamMessage);
      }
    }
  }
  return Printable(body, kMaxUpstreamMessage);
}

}  // namespace

std::string UpstreamUrl::ToString() const {
  return fmt::format("{}://{}:{}{}", scheme, host, port, path);
}

absl::StatusOr<UpstreamUrl> ParseUpstreamUrl(std::string_view url) {
  static const std::regex kUrl(
      R"(^(https?)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::([0-9]{1,5}))?(/[^\s#]*)?$)");
  constexpr std::string_view kExpected = "http://HOST[:PORT][/PATH] or https://...";
  std::cmatch m;
  if (!std::regex_match(url.data(), url.data() + url.size(), m, kUrl)) {
    return Invalid("upstream URL", url, kExpected);
  }
  UpstreamUrl out;
  out.scheme = m[1].str();
  out.host = m[2].str();
  out.port = out.scheme == "https" ? 443 : 80;
  if (m[3].matched) {
    out.port = std::stoi(m[3].str());
    if (out.port < 1 || out.port > 65535) {
      return Invalid("upstream URL", url, "a port between 1 and 65535");
    }
  }
  out.path = m[4].matched ? m[4].str() : "/";
  return out;
}

absl::StatusOr<ServedService> ParseServeSpec(std::string_view spec) {
  constexpr std::string_view kExpected =
      "SERVICE=URL, e.g. persona_consulta=http://127.0.0.1:8081/persona";
  const size_t eq = spec.find('=');
  if (eq == std::string_view::npos) return Invalid("--serve", spec, kExpected);
  ServedService out;
  out.service = std::string(spec.substr(0, eq));
  if (!IsValidName(out.service)) {
    return Invalid("--serve", spec,
                   fmt::format("{}; the service name must match [a-z0-9][a-z0-9_-]{{0,62}}",
                               kExpected));
  }
  auto url = ParseUpstreamUrl(spec.substr(eq + 1));
  if (!url.ok()) {
    return absl::InvalidArgumentError(fmt::format("--serve {}: {}", out.service,
                                                  std::string_view(url.status().message().data(),
                                                                   url.status().message().size())));
  }
  out.url = *std::move(url);
  return out;
}

UpstreamClient::UpstreamClient(UpstreamUrl url, UpstreamOptions options)
    : url_(std::move(url)), options_(options) {}

UpstreamClient::~UpstreamClient() = default;

std::unique_ptr<httplib::Client> UpstreamClient::TakeClient() {
  {
    absl::MutexLock lock(&mu_);
    if (!idle_.empty()) {
      auto client = std::move(idle_.back());
      idle_.pop_back();
      return client;
    }
  }
  auto client = std::make_unique<httplib::Client>(
      fmt::format("{}://{}:{}", url_.scheme, url_.host, url_.port));
  const auto timeout = absl::ToChronoMilliseconds(options_.timeout);
  client->set_connection_timeout(timeout);
  client->set_read_timeout(timeout);
  client->set_write_timeout(timeout);
  // A fresh connection per call: a pooled one the upstream closed meanwhile would turn into a
  // spurious PROVIDER_ERROR, and loopback connections are cheap.
  client->set_keep_alive(false);
  client->set_tcp_nodelay(true);  // head and body are separate writes (see http_gateway.cc)
  return client;
}

void UpstreamClient::ReturnClient(std::unique_ptr<httplib::Client> client) {
  absl::MutexLock lock(&mu_);
  idle_.push_back(std::move(client));
}

absl::StatusOr<std::string> UpstreamClient::Call(const RequestContext& context,
                                                 std::string_view body) {
  // The envelope parser already refuses control characters in these fields; an HTTP header
  // must never carry one, so check again where it matters.
  for (const std::string* field :
       {&context.consumer, &context.service, &context.end_user, &context.purpose,
        &context.consent_ref, &context.request_id, &context.idempotency_key}) {
    if (HasControlChars(*field)) {
      return ChasquiError(v1::BAD_REQUEST, "request metadata contains control characters");
    }
  }
  httplib::Request req;
  req.method = "POST";
  req.path = url_.path;
  req.set_header("Content-Type", "application/json");
  req.set_header(kHeaderConsumer, context.consumer);
  req.set_header(kHeaderService, context.service);
  req.set_header(kHeaderEndUser, context.end_user);
  if (!context.purpose.empty()) req.set_header(kHeaderPurpose, context.purpose);
  if (!context.consent_ref.empty()) req.set_header(kHeaderConsentRef, context.consent_ref);
  req.set_header(kHeaderRequestId, context.request_id);
  // The provider's system may keep its own record of keys; the gateway already answers repeats.
  if (!context.idempotency_key.empty()) {
    req.set_header(kHeaderIdempotencyKey, context.idempotency_key);
  }
  req.body = std::string(body);

  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + absl::ToChronoMilliseconds(options_.timeout);
  std::string answer;
  bool too_large = false;
  bool too_slow = false;
  // Bounds what is read, and the whole answer's time (httplib's read timeout is per read).
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    if (answer.size() + n > options_.max_answer_bytes) {
      too_large = true;
      return false;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      too_slow = true;
      return false;
    }
    answer.append(data, n);
    return true;
  };

  std::unique_ptr<httplib::Client> client = TakeClient();
  httplib::Result res = client->send(req);
  ReturnClient(std::move(client));
  const auto elapsed = std::chrono::steady_clock::now() - start;
  const int64_t timeout_ms = absl::ToInt64Milliseconds(options_.timeout);

  if (!res) {
    const httplib::Error error = res.error();
    if (too_large) {
      return ChasquiError(v1::PROVIDER_ERROR,
                          fmt::format("the provider's system answered more than {} bytes",
                                      options_.max_answer_bytes));
    }
    // A read or connect that ran out of time: httplib reports Read or ConnectionTimeout.
    const bool timed_out =
        too_slow || error == httplib::Error::ConnectionTimeout ||
        ((error == httplib::Error::Read || error == httplib::Error::Write) &&
         elapsed >= absl::ToChronoMilliseconds(options_.timeout) * 9 / 10);
    if (timed_out) {
      return ChasquiError(v1::PROVIDER_ERROR,
                          fmt::format("upstream did not answer within {} ms", timeout_ms));
    }
    if (error == httplib::Error::Connection) {
      return ChasquiError(v1::PROVIDER_ERROR,
                          "the provider's system is unreachable (connection refused or failed)");
    }
    return ChasquiError(v1::PROVIDER_ERROR, fmt::format("calling the provider's system failed: {}",
                                                        httplib::to_string(error)));
  }
  if (too_slow) {
    return ChasquiError(v1::PROVIDER_ERROR,
                        fmt::format("upstream did not answer within {} ms", timeout_ms));
  }
  const int status = res->status;
  if (status >= 200 && status < 300) return answer;
  if (status >= 400 && status < 500) {
    return ChasquiError(v1::BAD_REQUEST,
                        fmt::format("the provider's system refused the request (HTTP {}): {}",
                                    status, UpstreamMessage(answer)));
  }
  if (status >= 500 && status < 600) {
    return ChasquiError(v1::PROVIDER_ERROR,
                        fmt::format("the provider's system failed (HTTP {})", status));
  }
  return ChasquiError(v1::PROVIDER_ERROR,
                      fmt::format("the provider's system answered HTTP {}; expected 2xx", status));
}

}  // namespace chasqui
