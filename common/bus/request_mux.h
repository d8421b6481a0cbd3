#pragma once
// Many requests in flight on one wildcard reply subscription (nats.c has no asynchronous
// request call). Reply subjects are `<inbox_prefix>.<n>`; the mux subscribes `<inbox_prefix>.*`.
// Callers choose the prefix (DESIGN.md: `_INBOX.<env>.<entity>.<client>` for entities,
// `_INBOX._router.<env>.<id>` for routers), never nats.c's default inbox.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/bus/bus.h"
#include "common/core/clock.h"

namespace chasqui {

enum class MuxOutcome {
  kReply,         // `reply` is set
  kTimeout,       // no reply within the timeout
  kNoResponders,  // nobody subscribes to the subject
  kClosed,        // the mux shut down before an answer came
};

// `reply` is non-null only for kReply and valid only during the call.
using MuxCallback = std::function<void(MuxOutcome outcome, const BusMessage* reply)>;

class RequestMux {
 public:
  // Subscribes `<inbox_prefix>.*` on `bus` (which must outlive the mux) and starts the timeout
  // thread.
  static absl::StatusOr<std::unique_ptr<RequestMux>> Create(Bus* bus, std::string inbox_prefix);
  virtual ~RequestMux() = default;  // answers every pending request with kClosed

  // Publishes `data` on `subject` with a fresh reply subject and calls `done` exactly once,
  // on the subscription's or the timeout thread. If the publish itself fails, returns the
  // error and never calls `done`. Thread-safe.
  virtual absl::Status Request(std::string_view subject, std::string_view data,
                               absl::Duration timeout, MuxCallback done) = 0;

  // Request() that blocks the caller until the answer: its bytes, or DeadlineExceeded,
  // Unavailable (nobody listens: `who` names the service for the message) or Cancelled.
  // Never call it on the mux's own delivery thread. Thread-safe.
  absl::StatusOr<std::string> RequestAndWait(std::string_view subject, std::string_view data,
                                             absl::Duration timeout, std::string_view who);

  virtual int64_t InFlight() const = 0;
  // Replies that came after their request had timed out (or for an unknown token).
  virtual int64_t LateReplies() const = 0;
};

}  // namespace chasqui
