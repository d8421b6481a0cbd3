#pragma once
// Time sources, injectable so logic can be tested without the wall clock.

#include <atomic>
#include <cstdint>

namespace chasqui {

class Clock {
 public:
  virtual ~Clock() = default;
  // Unix time in milliseconds (for sent_at and freshness).
  virtual int64_t NowUnixMillis() const = 0;
  // Monotonic nanoseconds (for timeouts and latencies).
  virtual int64_t NowMonoNanos() const = 0;
};

// The real clocks. Thread-safe; a process-wide instance.
const Clock& SystemClock();

// A clock tests move by hand. Thread-safe.
class FakeClock : public Clock {
 public:
  explicit FakeClock(int64_t unix_millis = 1'800'000'000'000) : unix_ms_(unix_millis) {}
  int64_t NowUnixMillis() const override { return unix_ms_.load(); }
  int64_t NowMonoNanos() const override { return mono_ns_.load(); }
  void AdvanceMillis(int64_t ms) {
    unix_ms_ += ms;
    mono_ns_ += ms * 1'000'000;
  }
  void SetUnixMillis(int64_t ms) { unix_ms_ = ms; }

 private:
  std::atomic<int64_t> unix_ms_;
  std::atomic<int64_t> mono_ns_{0};
};

}  // namespace chasqui
