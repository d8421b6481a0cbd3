#pragma once
// Bounded waiting for integration tests: a test never hangs.

#include <chrono>
#include <functional>
#include <thread>

namespace chasqui::testing {

// Polls `done` every millisecond until it is true (returns true) or `bound` passes (false).
inline bool WaitFor(const std::function<bool()>& done,
                    std::chrono::milliseconds bound = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + bound;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return done();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

}  // namespace chasqui::testing
