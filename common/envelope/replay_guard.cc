#include "common/envelope/replay_guard.h"

#include <algorithm>

#include "common/envelope/errors.h"
#include "fmt/format.h"

namespace chasqui {

ReplayGuard::ReplayGuard(const Clock& clock, int64_t window_ms)
    : clock_(clock), window_ms_(window_ms), current_since_ms_(clock.NowUnixMillis()) {}

absl::Status ReplayGuard::Check(uint64_t sender, const std::string& id, int64_t sent_at_ms) {
  const int64_t now = clock_.NowUnixMillis();
  // Compared without subtracting the untrusted value, which could overflow.
  if (sent_at_ms > now + window_ms_ || sent_at_ms < now - window_ms_) {
    const bool ahead = sent_at_ms > now;
    const uint64_t skew = ahead ? static_cast<uint64_t>(sent_at_ms) - static_cast<uint64_t>(now)
                                : static_cast<uint64_t>(now) - static_cast<uint64_t>(sent_at_ms);
    return ChasquiError(
        v1::EXPIRED,
        fmt::format("sent_at is {} ms {} the receiver's clock; the window is ±{} ms (check the "
                    "sender's clock, or resend)",
                    skew, ahead ? "ahead of" : "behind", window_ms_));
  }
  Key key{sender, {}};
  std::copy_n(id.data(), std::min(id.size(), key.second.size()), key.second.begin());
  absl::MutexLock lock(&mu_);
  // A generation covers 2 windows, so an id stays known between 2 and 4 windows: longer than
  // the 2 windows during which its sent_at is acceptable.
  if (now - current_since_ms_ >= 2 * window_ms_) {
    previous_ = std::move(current_);
    current_ = {};
    current_since_ms_ = now;
  }
  if (previous_.contains(key) || !current_.insert(std::move(key)).second) {
    return ChasquiError(v1::REPLAYED, "this (sender, id) was already seen inside the window");
  }
  return absl::OkStatus();
}

size_t ReplayGuard::remembered() const {
  absl::MutexLock lock(&mu_);
  return current_.size() + previous_.size();
}

}  // namespace chasqui
