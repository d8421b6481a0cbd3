#pragma once
// The entity gateway's `GET /v1/openapi.json` (issue 8, "For an entity's
// developer"): an OpenAPI 3.1 document of what this entity may call in its
// environment, so a developer can generate a client or try it in any OpenAPI
// tool.
//
// One `POST /v1/{provider}/{service}` per service the entity holds an active
// grant for in the env (published or deprecated; deprecated ones are marked
// so), with the catalog's request and response JSON Schemas as they are
// (OpenAPI 3.1 takes JSON Schema 2020-12 whole, 3.0 would not), the mandatory
// end-user header, the optional purpose, consent and Idempotency-Key headers,
// and every error status the gateway can answer (from HttpStatusFor over every
// Chasqui code, plus 413) with the problem document (http_problem.h). Pure;
// thread-safe.

#include <string>

#include "chasqui/v1/catalog.pb.h"

namespace chasqui {

struct OpenApiOptions {
  std::string entity;  // the consumer: this gateway's entity
  std::string env;
  std::string server_url;         // e.g. "http://127.0.0.1:8080"
  bool api_key_required = false;  // then every operation requires `Authorization: Bearer`
};

// The document as JSON text. A schema that is not valid JSON in the catalog is
// replaced by one saying so (the document stays valid); an empty one accepts
// anything.
std::string OpenApiDocument(const v1::CatalogSnapshot& catalog, const OpenApiOptions& options);

}  // namespace chasqui
