#include "common/envelope/subjects.h"

#include "common/core/names.h"
#include "fmt/format.h"

namespace chasqui {

std::optional<RequestSubject> ParseRequestSubject(std::string_view subject) {
  std::string_view parts[6];
  size_t n = 0;
  size_t start = 0;
  for (;;) {
    const size_t dot = subject.find('.', start);
    if (n == 6) return std::nullopt;
    parts[n++] = subject.substr(start, dot == std::string_view::npos ? dot : dot - start);
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  if (n != 6 || parts[0] != "chq" || parts[2] != "req" || !IsValidEnv(parts[1])) {
    return std::nullopt;
  }
  for (int i = 3; i < 6; ++i) {
    if (!IsValidName(parts[i])) return std::nullopt;
  }
  return RequestSubject{parts[1], parts[3], parts[4], parts[5]};
}

std::string RequestSubjectFor(std::string_view env, std::string_view consumer,
                              std::string_view provider, std::string_view service) {
  return fmt::format("chq.{}.req.{}.{}.{}", env, consumer, provider, service);
}

std::string ServiceSubjectFor(std::string_view env, std::string_view provider,
                              std::string_view service) {
  return fmt::format("chq.{}.svc.{}.{}", env, provider, service);
}

std::string EntityInboxPrefix(std::string_view env, std::string_view entity) {
  return fmt::format("_INBOX.{}.{}", env, entity);
}

std::string RouterInboxPrefix(std::string_view env, std::string_view router_id) {
  return fmt::format("_INBOX._router.{}.{}", env, router_id);
}

bool IsReplySubjectUnder(std::string_view reply, std::string_view prefix) {
  if (reply.size() <= prefix.size() + 1 || reply.substr(0, prefix.size()) != prefix ||
      reply[prefix.size()] != '.') {
    return false;
  }
  std::string_view rest = reply.substr(prefix.size() + 1);
  if (rest.front() == '.' || rest.back() == '.') return false;
  char prev = 0;
  for (char c : rest) {
    if (c == '*' || c == '>' || c <= ' ' || c == 0x7f || (c == '.' && prev == '.')) return false;
    prev = c;
  }
  return true;
}

}  // namespace chasqui
