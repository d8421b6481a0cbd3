#include "common/core/log.h"

#include <sys/resource.h>

#include <memory>
#include <string>

#include "spdlog/sinks/stdout_sinks.h"

namespace chasqui {

void InitLogging(std::string_view process_name) {
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto logger = std::make_shared<spdlog::logger>(std::string(process_name), sink);
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %n %l %v", spdlog::pattern_time_type::utc);
  logger->set_level(spdlog::level::info);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

void DisableCoreDumps() {
  const rlimit none{0, 0};
  if (setrlimit(RLIMIT_CORE, &none) != 0) spdlog::warn("could not disable core dumps");
}

}  // namespace chasqui
