#include "services/gateway/openapi.h"

#include <map>
#include <utility>
#include <vector>

#include "common/envelope/envelope.h"
#include "common/envelope/errors.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"
#include "services/gateway/http_problem.h"
#include "services/gateway/http_upstream.h"

namespace chasqui {
namespace {

using nlohmann::json;

// Answered by the HTTP layer itself, before any Chasqui code applies
// (HandleHttpError).
constexpr int kBodyTooLarge = 413;

std::string Ref(std::string_view kind, std::string_view name) {
  return fmt::format("#/components/{}/{}", kind, name);
}

// The catalog's schema text as a schema object.
json SchemaOf(const std::string& text, std::string_view what) {
  if (text.empty()) return json::object();
  json schema = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (schema.is_discarded() || !(schema.is_object() || schema.is_boolean())) {
    return {
        {"description",
         fmt::format("the catalog's {} is not a JSON Schema document; ask the provider to fix it",
                     what)}};
  }
  return schema;
}

std::string_view ClassificationWord(v1::Classification c) {
  switch (c) {
    case v1::CLASSIFICATION_PUBLIC: return "public";
    case v1::CLASSIFICATION_PRIVATE: return "private";
    case v1::CLASSIFICATION_RESTRICTED: return "restricted";
    default: return "unclassified";
  }
}

json Header(std::string_view description, json schema) {
  return {{"description", description}, {"schema", std::move(schema)}};
}

// Every status the gateway answers with a problem document, and the codes
// behind each.
std::map<int, std::vector<v1::Code>> ErrorStatuses() {
  std::map<int, std::vector<v1::Code>> out;
  const auto* codes = v1::Code_descriptor();
  for (int i = 0; i < codes->value_count(); ++i) {
    const auto code = static_cast<v1::Code>(codes->value(i)->number());
    if (code == v1::OK) continue;
    out[HttpStatusFor(code)].push_back(code);
  }
  out[kBodyTooLarge].push_back(v1::BAD_REQUEST);
  return out;
}

json Components(bool api_key_required) {
  json code_names = json::array();
  const auto* codes = v1::Code_descriptor();
  for (int i = 0; i < codes->value_count(); ++i) {
    const auto code = static_cast<v1::Code>(codes->value(i)->number());
    if (code != v1::OK) code_names.push_back(std::string(CodeName(code)));
  }
  json c;
  c["schemas"]["Problem"] = {
      {"type", "object"},
      {"description", "An RFC 9457 problem document with the Chasqui code and the request id"},
      {"required", {"type", "title", "status", "detail", "code", "request_id"}},
      {"properties",
       {{"type", {{"type", "string"}, {"description", "urn:chasqui:problem:<kind>"}}},
        {"title", {{"type", "string"}}},
        {"status", {{"type", "integer"}}},
        {"detail", {{"type", "string"}, {"description", "why, readable by an operator"}}},
        {"code", {{"type", "string"}, {"enum", code_names}}},
        {"request_id",
         {{"type", "string"},
          {"description",
           "the id the platform's trace knows, or the gateway's own for a refusal that never left "
           "it"}}}}}};
  c["headers"]["RequestId"] =
      Header("the request's id, as the platform's trace knows it", {{"type", "string"}});
  c["headers"]["RetryAfter"] =
      Header("seconds to wait before trying again", {{"type", "integer"}, {"minimum", 1}});
  c["parameters"]["EndUser"] = {
      {"name", kHeaderEndUser},
      {"in", "header"},
      {"required", true},
      {"description",
       "the official on whose behalf the query runs (a registered end user of your entity)"},
      {"schema", {{"type", "string"}, {"minLength", 1}, {"maxLength", kMaxEndUserBytes}}}};
  c["parameters"]["Purpose"] = {
      {"name", kHeaderPurpose},
      {"in", "header"},
      {"required", false},
      {"description", "why the query runs"},
      {"schema", {{"type", "string"}, {"maxLength", kMaxTextFieldBytes}}}};
  c["parameters"]["ConsentRef"] = {
      {"name", kHeaderConsentRef},
      {"in", "header"},
      {"required", false},
      {"description", "the citizen's consent, where the service requires it"},
      {"schema", {{"type", "string"}, {"maxLength", kMaxTextFieldBytes}}}};
  c["parameters"]["IdempotencyKey"] = {
      {"name", kHeaderIdempotencyKey},
      {"in", "header"},
      {"required", false},
      {"description",
       "an opaque token (a UUID, never personal data): a repeat with the same key and body gets "
       "the provider's first answer, and its system runs the query once"},
      {"schema",
       {{"type", "string"},
        {"minLength", 1},
        {"maxLength", kMaxIdempotencyKeyBytes},
        {"pattern", "^[\\x20-\\x7e]+$"}}}};
  for (const auto& [status, codes_of] : ErrorStatuses()) {
    std::vector<std::string> names;
    for (v1::Code code : codes_of) names.emplace_back(CodeName(code));
    json r = {
        {"description",
         status == kBodyTooLarge
             ? std::string("the request body is larger than the gateway accepts (BAD_REQUEST)")
             : fmt::format("{}", fmt::join(names, ", "))},
        {"headers", {{kHeaderRequestId, {{"$ref", Ref("headers", "RequestId")}}}}},
        {"content", {{kProblemContentType, {{"schema", {{"$ref", Ref("schemas", "Problem")}}}}}}}};
    if (status == HttpStatusFor(v1::QUOTA_EXCEEDED)) {
      r["headers"]["Retry-After"] = {{"$ref", Ref("headers", "RetryAfter")}};
    }
    c["responses"][fmt::format("Problem{}", status)] = std::move(r);
  }
  if (api_key_required) {
    c["securitySchemes"]["localApiKey"] = {
        {"type", "http"},
        {"scheme", "bearer"},
        {"description", "the gateway's local API key (its --api-key-file)"}};
  }
  return c;
}

json Operation(const v1::Service& service, const v1::Grant& grant) {
  const v1::ServiceSpec& spec = service.spec();
  const bool sealed =
      spec.personal_data() || spec.classification() == v1::CLASSIFICATION_RESTRICTED;
  std::string description =
      fmt::format("{}'s {} version {} ({}{}).", service.provider(), spec.name(), spec.version(),
                  ClassificationWord(spec.classification()),
                  sealed ? "; personal or restricted data: sealed end to end" : "");
  if (!spec.legal_basis().empty()) description += " Legal basis: " + spec.legal_basis() + ".";
  if (!spec.technical_conditions().empty()) {
    description += " Technical conditions: " + spec.technical_conditions() + ".";
  }
  if (!grant.annex_id().empty()) description += " Your grant's annex: " + grant.annex_id() + ".";

  json op = {
      {"operationId", fmt::format("{}.{}", service.provider(), spec.name())},
      {"summary", spec.description().empty() ? spec.name() : spec.description()},
      {"description", description},
      {"tags", json::array({service.provider()})},
      {"parameters",
       {{{"$ref", Ref("parameters", "EndUser")}},
        {{"$ref", Ref("parameters", "Purpose")}},
        {{"$ref", Ref("parameters", "ConsentRef")}},
        {{"$ref", Ref("parameters", "IdempotencyKey")}}}},
      {"requestBody",
       {{"required", true},
        {"content",
         {{"application/json", {{"schema", SchemaOf(spec.request_schema(), "request schema")}}}}}}},
      {"x-chasqui-service-version", spec.version()},
      {"x-chasqui-annex-id", grant.annex_id()},
  };
  json& responses = op["responses"];
  responses["200"] = {
      {"description", "the provider's answer"},
      {"headers", {{kHeaderRequestId, {{"$ref", Ref("headers", "RequestId")}}}}},
      {"content",
       {{"application/json", {{"schema", SchemaOf(spec.response_schema(), "response schema")}}}}}};
  for (const auto& [status, codes] : ErrorStatuses()) {
    responses[std::to_string(status)] = {
        {"$ref", Ref("responses", fmt::format("Problem{}", status))}};
  }
  if (service.state() == v1::SERVICE_STATE_DEPRECATED) op["deprecated"] = true;
  return op;
}

}  // namespace

std::string OpenApiDocument(const v1::CatalogSnapshot& catalog, const OpenApiOptions& options) {
  std::map<std::string, const v1::Service*> services;  // "provider/service"
  for (const v1::Service& s : catalog.services()) {
    if (s.state() != v1::SERVICE_STATE_PUBLISHED && s.state() != v1::SERVICE_STATE_DEPRECATED) {
      continue;
    }
    services[fmt::format("{}/{}", s.provider(), s.spec().name())] = &s;
  }
  json paths = json::object();
  for (const v1::Grant& g : catalog.grants()) {
    if (g.env() != options.env || g.consumer() != options.entity ||
        g.state() != v1::GRANT_STATE_ACTIVE) {
      continue;
    }
    const std::string key = fmt::format("{}/{}", g.provider(), g.service());
    auto it = services.find(key);
    if (it == services.end()) continue;
    paths["/v1/" + key]["post"] = Operation(*it->second, g);
  }

  json doc;
  doc["openapi"] = "3.1.0";
  doc["info"] = {
      {"title", fmt::format("Chasqui: what {} may call in {}", options.entity, options.env)},
      {"version", fmt::format("catalog-{}", catalog.version())},
      {"description",
       fmt::format("The services {} holds an active grant for in {}, through its Chasqui gateway. "
                   "Generated from catalog version {}; it changes as grants do.",
                   options.entity, options.env, catalog.version())}};
  doc["servers"] = {{{"url", options.server_url}}};
  doc["paths"] = std::move(paths);
  doc["components"] = Components(options.api_key_required);
  if (options.api_key_required) doc["security"] = {{{"localApiKey", json::array()}}};
  return doc.dump(2, ' ', false, json::error_handler_t::replace);
}

}  // namespace chasqui
