#pragma once
// One line per significant event: start, config, connect, refusal with its reason.
// Never log secrets. Lines go to stderr as
//   2026-11-24T03:22:35.123Z router INFO start env=test ...
// Thread-safe.

#include <string_view>

#include "spdlog/spdlog.h"

namespace chasqui {

// Names the process in every line. Call once at the start of main(); safe to call again.
void InitLogging(std::string_view process_name);

// For processes that hold private keys: no core dumps (RLIMIT_CORE 0), so a crash cannot
// write a key to disk.
void DisableCoreDumps();

}  // namespace chasqui

#define CHQ_LOG_INFO(...) ::spdlog::info(__VA_ARGS__)
#define CHQ_LOG_WARN(...) ::spdlog::warn(__VA_ARGS__)
#define CHQ_LOG_ERROR(...) ::spdlog::error(__VA_ARGS__)
