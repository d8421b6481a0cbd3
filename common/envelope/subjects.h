#pragma once
// The subject plan (DESIGN.md, "Names and subjects"): building and checking subjects.

#include <optional>
#include <string>
#include <string_view>

namespace chasqui {

struct RequestSubject {
  std::string_view env;
  std::string_view consumer;
  std::string_view provider;
  std::string_view service;
};

// `chq.<env>.req.<consumer>.<provider>.<service>`, each name one valid token; or nullopt.
// The views point into `subject`.
std::optional<RequestSubject> ParseRequestSubject(std::string_view subject);

std::string RequestSubjectFor(std::string_view env, std::string_view consumer,
                              std::string_view provider, std::string_view service);
std::string ServiceSubjectFor(std::string_view env, std::string_view provider,
                              std::string_view service);
// `_INBOX.<env>.<entity>`: every reply to that entity goes below it.
std::string EntityInboxPrefix(std::string_view env, std::string_view entity);
// `_INBOX._router.<env>.<router_id>`: scoped by env, so one env's routers never read another's
// forwarded replies.
std::string RouterInboxPrefix(std::string_view env, std::string_view router_id);

// True if `reply` lies strictly below `prefix` (`prefix.` followed by at least one token) and
// is a plain subject: no wildcards, no empty tokens, no whitespace.
bool IsReplySubjectUnder(std::string_view reply, std::string_view prefix);

}  // namespace chasqui
