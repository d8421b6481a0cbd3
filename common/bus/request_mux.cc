#include "common/bus/request_mux.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "common/core/status.h"
#include "fmt/format.h"

namespace chasqui {
namespace {

using SteadyClock = std::chrono::steady_clock;

// Longer timeouts are clamped so that now + timeout cannot overflow.
constexpr absl::Duration kMaxTimeout = absl::Hours(24 * 365);

class RequestMuxImpl final : public RequestMux {
 public:
  RequestMuxImpl(Bus* bus, std::string inbox_prefix)
      : bus_(bus), prefix_(std::move(inbox_prefix)) {
    prefix_ += '.';
  }

  // Subscribes and starts the timeout thread; called once, right after construction.
  absl::Status Start() {
    CHASQUI_ASSIGN_OR_RETURN(
        subscription_,
        bus_->Subscribe(prefix_ + "*", [this](const BusMessage& m) { OnReply(m); }));
    timeout_thread_ = std::thread([this] { TimeoutLoop(); });
    return absl::OkStatus();
  }

  ~RequestMuxImpl() override {
    if (timeout_thread_.joinable()) {
      CHASQUI_CHECK(std::this_thread::get_id() != timeout_thread_.get_id(),
                    "RequestMux destroyed from its own timeout callback");
      {
        std::lock_guard<std::mutex> lock(mu_);
        stopping_ = true;
      }
      cv_.notify_all();
      timeout_thread_.join();
    }
    // Unsubscribes and waits for a reply handler in progress.
    subscription_.reset();
    absl::flat_hash_map<uint64_t, Pending> left;
    {
      std::lock_guard<std::mutex> lock(mu_);
      left.swap(pending_);
      deadlines_.clear();
    }
    for (auto& [token, pending] : left) pending.done(MuxOutcome::kClosed, nullptr);
  }

  absl::Status Request(std::string_view subject, std::string_view data, absl::Duration timeout,
                       MuxCallback done) override {
    if (!done) return absl::InvalidArgumentError("mux request: empty callback");
    const uint64_t token = next_token_.fetch_add(1, std::memory_order_relaxed);
    // `<prefix>.<token>`, on the stack when it fits: this is the router's hot path.
    char stack_buf[256];
    std::string heap_buf;
    char* buf = stack_buf;
    if (prefix_.size() + 20 > sizeof(stack_buf)) {
      heap_buf.resize(prefix_.size() + 20);
      buf = heap_buf.data();
    }
    std::memcpy(buf, prefix_.data(), prefix_.size());
    char* const digits = buf + prefix_.size();
    const char* const digits_end = std::to_chars(digits, digits + 20, token).ptr;
    const std::string_view reply(buf, static_cast<size_t>(digits_end - buf));

    const auto deadline =
        SteadyClock::now() +
        std::chrono::duration_cast<SteadyClock::duration>(absl::ToChronoNanoseconds(
            std::clamp(timeout, absl::ZeroDuration(), kMaxTimeout)));

    // The entry exists before the publish so an immediate reply finds it, but its deadline is
    // armed only after the publish succeeded: a failed publish never calls `done`.
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return absl::FailedPreconditionError("mux request: the mux is closing");
      pending_.emplace(token, Pending{std::move(done), deadline, deadlines_.end()});
    }
    absl::Status published = bus_->Publish(subject, data, reply);
    bool earliest = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = pending_.find(token);
      if (!published.ok()) {
        if (it != pending_.end()) pending_.erase(it);
        return published;
      }
      if (it == pending_.end()) return absl::OkStatus();  // answered already
      it->second.timer = deadlines_.emplace(deadline, token);
      earliest = it->second.timer == deadlines_.begin();
    }
    if (earliest) cv_.notify_one();
    return absl::OkStatus();
  }

  int64_t InFlight() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int64_t>(pending_.size());
  }

  int64_t LateReplies() const override { return late_replies_.load(std::memory_order_relaxed); }

 private:
  using Deadlines = std::multimap<SteadyClock::time_point, uint64_t>;
  struct Pending {
    MuxCallback done;
    SteadyClock::time_point deadline;
    Deadlines::iterator timer;  // deadlines_.end() until the publish succeeded
  };

  // On the subscription's thread.
  void OnReply(const BusMessage& m) {
    uint64_t token = 0;
    const std::string_view subject = m.subject;
    if (subject.size() <= prefix_.size() || subject.compare(0, prefix_.size(), prefix_) != 0) {
      late_replies_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    const char* first = subject.data() + prefix_.size();
    const char* last = subject.data() + subject.size();
    const auto [ptr, ec] = std::from_chars(first, last, token);
    if (ec != std::errc() || ptr != last) {
      late_replies_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    MuxCallback done;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = pending_.find(token);
      if (it == pending_.end()) {
        late_replies_.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      done = std::move(it->second.done);
      if (it->second.timer != deadlines_.end()) deadlines_.erase(it->second.timer);
      pending_.erase(it);
    }
    if (m.no_responders) {
      done(MuxOutcome::kNoResponders, nullptr);
    } else {
      done(MuxOutcome::kReply, &m);
    }
  }

  // Sleeps until the earliest deadline (or a new, earlier one), then times out everything due.
  void TimeoutLoop() {
    std::vector<MuxCallback> expired;
    std::unique_lock<std::mutex> lock(mu_);
    while (!stopping_) {
      if (deadlines_.empty()) {
        cv_.wait(lock);
        continue;
      }
      const auto now = SteadyClock::now();
      const auto next = deadlines_.begin()->first;
      if (next > now) {
        cv_.wait_until(lock, next);
        continue;
      }
      while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
        auto it = pending_.find(deadlines_.begin()->second);
        expired.push_back(std::move(it->second.done));
        pending_.erase(it);
        deadlines_.erase(deadlines_.begin());
      }
      lock.unlock();
      for (MuxCallback& done : expired) done(MuxOutcome::kTimeout, nullptr);
      expired.clear();
      lock.lock();
    }
  }

  Bus* const bus_;
  std::string prefix_;  // with the trailing '.'
  std::unique_ptr<Subscription> subscription_;
  std::thread timeout_thread_;
  std::atomic<uint64_t> next_token_{0};
  std::atomic<int64_t> late_replies_{0};

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  absl::flat_hash_map<uint64_t, Pending> pending_;
  Deadlines deadlines_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<RequestMux>> RequestMux::Create(Bus* bus, std::string inbox_prefix) {
  if (bus == nullptr) return absl::InvalidArgumentError("request mux: null bus");
  if (inbox_prefix.empty() || inbox_prefix.back() == '.' ||
      inbox_prefix.find_first_of("*> \t\r\n") != std::string::npos) {
    return absl::InvalidArgumentError(fmt::format(
        "request mux: inbox prefix '{}' must be a subject without wildcards or a trailing '.'",
        inbox_prefix));
  }
  auto mux = std::make_unique<RequestMuxImpl>(bus, std::move(inbox_prefix));
  CHASQUI_RETURN_IF_ERROR(mux->Start());
  return std::unique_ptr<RequestMux>(std::move(mux));
}

absl::StatusOr<std::string> RequestMux::RequestAndWait(std::string_view subject,
                                                       std::string_view data,
                                                       absl::Duration timeout,
                                                       std::string_view who) {
  struct Outcome {
    absl::Mutex mu;
    bool done = false;
    absl::StatusOr<std::string> result = absl::UnknownError("no answer");
  };
  auto out = std::make_shared<Outcome>();
  const std::string subj(subject);
  const std::string service(who);
  CHASQUI_RETURN_IF_ERROR(Request(
      subject, data, timeout, [out, subj, service](MuxOutcome outcome, const BusMessage* reply) {
        absl::StatusOr<std::string> r;
        switch (outcome) {
          case MuxOutcome::kReply:
            r = std::string(reply->data);
            break;
          case MuxOutcome::kTimeout:
            r = absl::DeadlineExceededError(fmt::format("{}: no answer in time", subj));
            break;
          case MuxOutcome::kNoResponders:
            r = absl::UnavailableError(fmt::format("{}: no {} listens", subj, service));
            break;
          case MuxOutcome::kClosed:
            r = absl::CancelledError(fmt::format("{}: client closed", subj));
            break;
        }
        absl::MutexLock lock(&out->mu);
        out->result = std::move(r);
        out->done = true;
      }));
  absl::MutexLock lock(&out->mu);
  out->mu.Await(absl::Condition(&out->done));
  return std::move(out->result);
}

}  // namespace chasqui
